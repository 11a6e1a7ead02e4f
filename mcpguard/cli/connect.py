"""`mcpguard connect URL [--token-env VAR]`: a stdio MCP server that forwards to a gateway endpoint.

For clients that can only start a command (Claude Desktop's `mcpServers`
entries take `command` and `args`): the client runs `mcpguard connect
http://127.0.0.1:8765/mcp/mlflow`, speaks MCP over this process's stdin and
stdout, and every JSON-RPC message goes to the gateway over Streamable HTTP
as it was sent; whatever the gateway answers (results, errors, progress,
log messages, `list_changed`, its sampling, elicitation and roots requests)
comes back unchanged. Both eras pass: a 2026-07-28 client (each request
carries its own `_meta` envelope) and a handshake-era one (`initialize`,
then an `Mcp-Session-Id` the SDK's HTTP transport keeps).

Built from the `mcp` SDK's own pieces: `mcp.server.stdio.stdio_server` reads
and writes newline-delimited JSON-RPC (MCP 2025-06-18 and 2026-07-28, stdio
transport), `mcp.client.streamable_http.streamable_http_client` posts each
message and reads JSON or SSE answers (session id, GET stream,
Last-Event-ID resumption, 2026-07-28 cancellation by closing the POST).
No session layer sits between them, so nothing is re-validated or reshaped.
What is ours:

- the HTTP headers a message carries on the wire but not over stdio: for a
  2026-07-28 request `MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name` and the
  `Mcp-Param-*` its tool's input schema declares (MCP 2026-07-28, Streamable
  HTTP: the server checks them against the body), from the tool schemas seen
  in `tools/list` answers; after a handshake, `MCP-Protocol-Version` with
  the negotiated version (MCP 2025-06-18, Streamable HTTP);
- `Authorization: Bearer <token>` from `$VAR` with `--token-env VAR`; the
  token is never printed or logged;
- a gateway that cannot be reached (down, refusing, timing out) answers each
  request with a JSON-RPC error naming the URL and the cause, instead of the
  SDK transport's failure ending the whole connection; an HTTP error the
  gateway sends without a JSON-RPC body (401 for a bad token) becomes a
  JSON-RPC error with its status and text;
- a line that is not JSON-RPC gets a parse error with id null (JSON-RPC 2.0
  §5.1), and the connection goes on.

stdout is the protocol: diagnostics go to stderr only. Exit codes: 0 when
the client closes stdin, 2 for bad arguments (no URL, `$VAR` not set).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2
from mcp.client.streamable_http import streamable_http_client
from mcp.server.stdio import stdio_server
from mcp.shared._httpx_utils import MCP_DEFAULT_SSE_READ_TIMEOUT, MCP_DEFAULT_TIMEOUT
from mcp.shared.jsonrpc_dispatcher import cancelled_request_id_from_params
from mcp.shared.message import ClientMessageMetadata, SessionMessage
from mcp_types import (
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    PARSE_ERROR,
    PROTOCOL_VERSION_META_KEY,
    ErrorData,
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
)
from pydantic import ValidationError

from mcpguard.gateway import eras

PROG = "mcpguard connect"
#: seconds the answers to requests still in flight are awaited after the client closed stdin
DRAIN_S = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`URL` (a gateway endpoint, `http://127.0.0.1:8765/mcp/NAME`), `--token-env VAR`."""
    parser.add_argument("url", help="the gateway endpoint, e.g. http://127.0.0.1:8765/mcp/mlflow")
    parser.add_argument("--token-env", metavar="VAR", default=None,
                        help="send Authorization: Bearer <the value of $VAR> (a grant's token)")


def run(args: argparse.Namespace) -> int:
    """Forward stdin/stdout to `args.url` until the client closes stdin; returns the exit code."""
    parts = urlsplit(args.url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        print(f"{PROG}: {args.url!r} is not an http:// or https:// URL", file=sys.stderr)
        return 2
    token = None
    if args.token_env is not None:
        token = os.environ.get(args.token_env)
        if not token:
            print(f"{PROG}: environment variable {args.token_env} is not set (or empty)", file=sys.stderr)
            return 2
    try:
        anyio.run(forward_stdio, args.url, token)
    except KeyboardInterrupt:
        return 130
    return 0


class _Reachable(httpx2.AsyncBaseTransport):
    """An httpx2 transport that answers for a gateway it cannot reach, or that refuses without JSON-RPC.

    The SDK's Streamable HTTP transport lets a connection error escape its
    task group, which would end every request of the stdio client at once
    (and this process with a traceback). Here a transport error becomes an
    HTTP 502 whose body is a JSON-RPC error naming `url` and the cause, and a
    4xx/5xx answer to a POST whose body is no JSON-RPC error (the 401 of a
    wrong token) becomes one with its status and text:
    the SDK transport reads such bodies as the request's own error (it puts
    the request's id in), so each request fails alone and the next one tries
    again.
    """

    def __init__(self, url: str, inner: httpx2.AsyncBaseTransport | None = None) -> None:
        self.url = url
        self.inner = inner or httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            response = await self.inner.handle_async_request(request)
        except httpx2.TransportError as exc:
            cause = _cause(exc)
            return _error_response(502, CONNECTION_CLOSED,
                                   f"{PROG}: cannot reach the gateway at {self.url}: {cause}",
                                   {"url": self.url, "cause": cause}, request)
        if response.status_code < 400 or request.method != "POST":
            return response
        content = await response.aread()
        await response.aclose()
        if _is_jsonrpc_error(content):
            # the gateway's own JSON-RPC error: passed on as it came
            return httpx2.Response(response.status_code, content=content, request=request,
                                  headers={"content-type": response.headers.get("content-type", "application/json")})
        body = content[:500].decode("utf-8", "replace").strip()
        text = f"{PROG}: the gateway at {self.url} answered HTTP {response.status_code}"
        return _error_response(response.status_code, INTERNAL_ERROR, f"{text}: {body}" if body else text,
                               {"url": self.url, "status": response.status_code}, request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _cause(exc: BaseException) -> str:
    """The innermost OS error's text ("[Errno 111] Connect call failed ...") when the chain has one."""
    text = str(exc) or type(exc).__name__
    seen: BaseException | None = exc
    for _ in range(10):  # a chain is short; a cycle must not loop
        seen = seen.__cause__ or seen.__context__ if seen is not None else None
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno is not None:
            return f"{text} ({seen})"
    return text


def _is_jsonrpc_error(content: bytes) -> bool:
    try:
        body = json.loads(content)
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("jsonrpc") == "2.0" and isinstance(body.get("error"), dict)


def _error_response(status: int, code: int, message: str, data: Any, request: httpx2.Request) -> httpx2.Response:
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message, "data": data}}
    return httpx2.Response(status, headers={"content-type": "application/json"},
                           content=json.dumps(body).encode("utf-8"), request=request)


class _Wire:
    """What the bridge learns from the traffic to put the HTTP headers on each message.

    `version`: the handshake's negotiated protocol version (from the
    `initialize` answer); `schemas`: each tool's input schema from
    `tools/list` answers (for `Mcp-Param-*`); `pending`: the method of each
    request in flight, by id.
    """

    def __init__(self) -> None:
        self.version: str | None = None
        self.schemas: dict[str, Any] = {}
        self.pending: dict[Any, str] = {}

    def headers_for(self, message: Any) -> dict[str, str]:
        if isinstance(message, (JSONRPCRequest, JSONRPCNotification)):
            params = message.params if isinstance(message.params, Mapping) else None
            meta = params.get("_meta") if params is not None else None
            version = meta.get(PROTOCOL_VERSION_META_KEY) if isinstance(meta, Mapping) else None
            if isinstance(version, str) and eras.era_of(version) == eras.MODERN:
                return eras.upstream_headers(message.method, params, upstream_era=eras.MODERN,
                                             upstream_version=version, input_schema=self.schemas.get)
            if message.method == "initialize":
                return {}
        return eras.upstream_headers("", None, upstream_era=eras.LEGACY, upstream_version=self.version)

    def sent(self, message: Any) -> None:
        if isinstance(message, JSONRPCRequest):
            self.pending[message.id] = message.method
        elif isinstance(message, JSONRPCNotification) and message.method == "notifications/cancelled":
            # a cancelled request may never be answered (2026-07-28: its POST is closed), so none is awaited
            self.pending.pop(cancelled_request_id_from_params(message.params), None)

    def answered(self, message: Any) -> None:
        if not isinstance(message, (JSONRPCResponse, JSONRPCError)):
            return
        method = self.pending.pop(message.id, None)
        if not isinstance(message, JSONRPCResponse) or not isinstance(message.result, Mapping):
            return
        if method == "initialize" and isinstance(message.result.get("protocolVersion"), str):
            self.version = message.result["protocolVersion"]
        elif method == "tools/list" and isinstance(message.result.get("tools"), list):
            for tool in message.result["tools"]:
                if isinstance(tool, Mapping) and isinstance(tool.get("name"), str):
                    self.schemas[tool["name"]] = tool.get("inputSchema")


async def forward_stdio(url: str, token: str | None = None, *, stdin: Any = None, stdout: Any = None) -> None:
    """Forward MCP between this process's stdin/stdout (or the given async text files) and `url`.

    Returns when the client closes stdin. `token`: sent as `Authorization:
    Bearer <token>`. Raises nothing for an unreachable gateway: each request
    is answered with a JSON-RPC error instead (see the module docstring).
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = httpx2.Timeout(MCP_DEFAULT_TIMEOUT, read=MCP_DEFAULT_SSE_READ_TIMEOUT)
    wire = _Wire()
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout, transport=_Reachable(url)) as http,
        stdio_server(stdin, stdout) as (agent_read, agent_write),
        streamable_http_client(url, http_client=http) as (gateway_read, gateway_write),
    ):

        async def to_agent() -> None:
            async for item in gateway_read:
                if isinstance(item, Exception):
                    print(f"{PROG}: {url}: {item}", file=sys.stderr, flush=True)
                    continue
                wire.answered(item.message)
                await agent_write.send(SessionMessage(item.message))

        async with anyio.create_task_group() as tg:
            tg.start_soon(to_agent)
            async for item in agent_read:
                if isinstance(item, Exception):
                    await agent_write.send(SessionMessage(JSONRPCError(jsonrpc="2.0", id=None,
                                                                       error=_unreadable(item))))
                    continue
                message = item.message
                wire.sent(message)
                await gateway_write.send(SessionMessage(message, metadata=ClientMessageMetadata(
                    headers=wire.headers_for(message) or None)))
            # the client closed stdin: nothing more will be asked, but what it asked is still answered
            # (`echo REQUEST | mcpguard connect URL`), for as long as a client waits for an exit
            with anyio.move_on_after(DRAIN_S):
                while wire.pending:
                    await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
        # stdio_server's writer ends only when its stream is closed
        await agent_write.aclose()


def _unreadable(exc: Exception) -> ErrorData:
    """The error for a line `stdio_server` could not read: not JSON at all is a parse error, JSON that is
    no JSON-RPC message an invalid request (JSON-RPC 2.0 §5.1)."""
    errors = exc.errors() if isinstance(exc, ValidationError) else []
    if not errors or any(e.get("type") == "json_invalid" for e in errors):
        detail = next((str(e.get("msg")) for e in errors), type(exc).__name__)
        return ErrorData(code=PARSE_ERROR, message=f"{PROG}: the line is not JSON ({detail})")
    return ErrorData(code=INVALID_REQUEST, message=f"{PROG}: the line is JSON but no JSON-RPC 2.0 request, "
                                                   "notification or response")
