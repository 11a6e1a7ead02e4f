"""Who may call the gateway: grants through the SDK's bearer auth, loopback callers when there are none.

With grants configured (`[grants.NAME]`), every request must carry
`Authorization: Bearer <token>`; the SDK's `BearerAuthBackend` asks
`GrantVerifier` for the token, and the SDK's `RequireAuthMiddleware` answers
401 (`WWW-Authenticate: Bearer`) when no grant matched. The grant's name is
the `client_id` of the `AccessToken`, so the SDK's session manager binds each
session to the grant that opened it (another grant's request for that
session is answered as if the session did not exist). Tokens are compared as
SHA-256 digests in constant time (`GrantConfig.matches`) and never kept,
logged or repeated: the `AccessToken` carries the grant's name, not the token.

With no grants, only loopback callers are served, as the grant `local`.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from collections.abc import Mapping
from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend, RequireAuthMiddleware
from mcp.server.auth.provider import AccessToken
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from mcpguard.config import GrantConfig

SCOPE = "mcp"


class GrantVerifier:
    """The SDK's `TokenVerifier` over mcpguard's grants: a token is valid when one grant's digest matches it."""

    def __init__(self, grants: Mapping[str, GrantConfig]) -> None:
        self._grants = dict(grants)

    async def verify_token(self, token: str) -> AccessToken | None:
        """An `AccessToken` whose `client_id` is the matching grant's name, or None.

        Every grant is compared (constant time each), so the time taken does
        not say which grant, if any, came close.
        """
        found: str | None = None
        for name, grant in self._grants.items():
            if grant.matches(token) and found is None:
                found = name
        if found is None:
            return None
        return AccessToken(token=f"grant:{found}", client_id=found, scopes=[SCOPE])


def with_grants(app: ASGIApp, grants: Mapping[str, GrantConfig]) -> ASGIApp:
    """`app` behind the SDK's bearer auth over `grants` (see the module docstring)."""
    required = RequireAuthMiddleware(app, [SCOPE])
    return AuthenticationMiddleware(required, backend=BearerAuthBackend(GrantVerifier(grants)))


class LoopbackOnly:
    """ASGI guard for a gateway with no grants: callers that are not loopback get 403."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] == "http" and not (client and is_loopback(client[0])):
            await json_error(send, 403, "mcpguard serves only loopback clients when no grants are configured")
            return
        await self.app(scope, receive, send)


@functools.lru_cache(maxsize=256)
def is_loopback(host: str) -> bool:
    """Whether `host` (an address from the ASGI scope) is a loopback address; cached, as it is asked per request."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def json_error(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None,
                     code: int = -32600) -> None:
    """An HTTP error whose body is a JSON-RPC error without id (MCP 2025-06-18, Streamable HTTP)."""
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}).encode()
    hdrs: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json"),
                                       (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": hdrs + (headers or [])})
    await send({"type": "http.response.body", "body": body})
