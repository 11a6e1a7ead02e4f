"""The gateway's HTTP front: routing to each server's endpoint, and the HTTP server that a local process cannot exhaust.

`GatewayApp` (ASGI) serves `/mcp/NAME` for each server (and `/mcp` when
there is only one: clients such as MCP Inspector rewrite every path to it),
behind grants or the loopback check (`mcpguard.gateway.auth`). Around each
server's session manager it adds two things the SDK leaves to its host:
- a request that would open a session past `max_sessions` gets HTTP 503 with
  a JSON-RPC error that says which server, its cap, and how to raise it (the
  SDK refuses it with a bare "Too many open sessions");
- a 2026-07-28 POST the SDK acknowledged as a notification (202) although it
  names a request method (a `tools/call` without an id) is recorded as
  `malformed`. The SDK never hands it to a handler, so it never reaches the
  upstream; only the record is added here.

`HttpServer` runs uvicorn in the caller's event loop on a socket it binds
itself (a port in use is an `OSError`, not uvicorn's `SystemExit`), with:
- TCP_NODELAY on every connection (asyncio sets it only for sockets it made
  with the TCP protocol number; without it each response waits ~40 ms for
  the client's delayed ACK);
- a read deadline: a connection must send a whole request within
  `request_read_timeout_s` of connecting or of its previous response, else
  it is closed (uvicorn arms no timer before a connection's first response,
  so a half-sent request would hold its socket for ever);
- the open-file soft limit raised to the hard limit, and asyncio's "accept()
  out of system resource" error logged once per interval with a count,
  rather than once per attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from mcp_types import methods as spec
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mcpguard.gateway.auth import json_error

log = logging.getLogger(__name__)

ACCEPT_ERROR_INTERVAL_S = 10.0


class GatewayApp:
    """ASGI app: `/mcp/NAME` (and `/mcp` for a single server) -> that server's endpoint.

    `endpoints`: server name -> an object with `manager` (its
    `StreamableHTTPSessionManager`), `handle.config.max_sessions`, and
    `malformed_post(scope, body, reason)` for the record of a refused message.
    """

    def __init__(self, endpoints: Mapping[str, Any]) -> None:
        self.endpoints = dict(endpoints)
        self._names = ", ".join(f"/mcp/{n}" for n in self.endpoints)

    def _endpoint(self, path: str) -> Any:
        parts = [p for p in path.split("/") if p]
        if parts == ["mcp"] and len(self.endpoints) == 1:
            return next(iter(self.endpoints.values()))
        if len(parts) == 2 and parts[0] == "mcp":
            return self.endpoints.get(parts[1])
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        ep = self._endpoint(scope.get("path", ""))
        if ep is None:
            await json_error(send, 404, f"no MCP endpoint at {scope.get('path', '')}; endpoints: {self._names}")
            return
        sid = _header(scope, b"mcp-session-id")
        if sid is not None and ep.pool.ended and (why := ep.pool.ended.get(sid.decode("latin-1"))) is not None:
            await json_error(send, 404, f"Session not found: {why}; open a new session")
            return
        modern_post = scope.get("method") == "POST" and _header(scope, b"mcp-protocol-version") in _MODERN
        body: list[bytes] = []
        if modern_post:
            receive = _recording(receive, body)
        status: list[int] = []
        await ep.manager.handle_request(scope, receive, _session_cap_message(send, ep, status))
        if modern_post and status and status[0] == 202:
            _check_notification(ep, scope, b"".join(body))


_MODERN = {v.encode() for v in MODERN_PROTOCOL_VERSIONS}


def _header(scope: Scope, name: bytes) -> bytes | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return v
    return None


def _recording(receive: Receive, into: list[bytes]) -> Receive:
    async def wrapped() -> Message:
        message = await receive()
        if message.get("type") == "http.request":
            into.append(message.get("body", b""))
        return message

    return wrapped


def _session_cap_message(send: Send, ep: Any, status: list[int]) -> Send:
    """`send`, with the SDK's 503 for a session past the cap replaced by one that says what to do."""
    state = {"replacing": False}
    name = ep.handle.name
    cap = ep.handle.config.max_sessions

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
            if message["status"] == 503:
                state["replacing"] = True
                log.warning("server %s refused a new agent session: %d sessions are open", name, cap)
                await json_error(send, 503, f"mcpguard: server '{name}' already has {cap} open agent sessions "
                                            f"(max_sessions = {cap}). Close idle sessions, wait for them to time "
                                            f"out (session_idle_timeout), or raise max_sessions under "
                                            f"[servers.{name}] in mcpguard.toml.",
                                 headers=[(b"retry-after", b"5")], code=-32603)
                return
        if state["replacing"]:
            return
        await send(message)

    return wrapped


def _check_notification(ep: Any, scope: Scope, body: bytes) -> None:
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError):
        return
    if not isinstance(decoded, dict):
        return
    method = decoded.get("method")
    if isinstance(method, str) and method not in spec.SPEC_CLIENT_NOTIFICATION_METHODS:
        ep.malformed_post(scope, decoded, "a request sent as a notification (no id) is never forwarded")


class ControlFront:
    """ASGI app: `/control/...` to the control endpoint (its own token guard), everything else to `mcp`."""

    def __init__(self, mcp: ASGIApp, control: ASGIApp) -> None:
        self.mcp = mcp
        self.control = control

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path == "/control" or path.startswith("/control/"):
            await self.control(scope, receive, send)
        else:
            await self.mcp(scope, receive, send)


# ---------------------------------------------------------------------------
# the HTTP server


class _ReadDeadline(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for receiving each whole request (see the module docstring).

    Armed when the connection is made and after each response; disarmed
    once a request has fully arrived. When it fires with no request under
    way, the connection is closed.
    """

    read_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.read_timeout_s, self._expire)

    def _disarm(self) -> None:
        deadline = getattr(self, "_deadline", None)
        if deadline is not None:
            deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


class HttpServer:
    """uvicorn serving `app` on `host:port` in the running event loop (port 0: any free port).

    `await start()` binds (raising `OSError` with a clear message when it
    cannot) and returns once uvicorn serves; `port` is then the bound port.
    `await stop()` ends it (connections get up to 2 s to finish).
    """

    def __init__(self, app: ASGIApp, host: str, port: int, *, read_timeout_s: float) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.read_timeout_s = read_timeout_s
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None
        self._restore_handler: Callable[[], None] | None = None

    async def start(self) -> None:
        import uvicorn

        raise_open_file_limit()
        protocol = type("ReadDeadline", (_ReadDeadline,), {"read_timeout_s": self.read_timeout_s})

        class _Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):  # type: ignore[override]
                yield  # the owner (console, serve command) handles signals

        config = uvicorn.Config(
            self.app, host=self.host, port=self.port, lifespan="off", log_level="warning", access_log=False,
            timeout_graceful_shutdown=2, http=protocol, timeout_keep_alive=int(max(1, min(5, self.read_timeout_s))),
        )
        server = _Server(config)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(1024)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"mcpguard could not listen on {self.host}:{self.port}: "
                                     f"{exc.strerror or exc}") from None
        self.port = sock.getsockname()[1]
        self._restore_handler = throttle_accept_errors(asyncio.get_running_loop())
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name="mcpguard http")
        for _ in range(1000):  # bounded: 10 s
            if server.started or self._task.done():
                break
            await asyncio.sleep(0.01)
        if not server.started:
            raise OSError(f"mcpguard could not start its HTTP server on {self.host}:{self.port}")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 10)
            except (TimeoutError, Exception):
                self._task.cancel()
        if self._restore_handler is not None:
            self._restore_handler()
            self._restore_handler = None


def raise_open_file_limit() -> tuple[int, int]:
    """Raise this process's open-file soft limit to its hard limit; returns (soft, hard) after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft, hard


def throttle_accept_errors(loop: asyncio.AbstractEventLoop, interval_s: float = ACCEPT_ERROR_INTERVAL_S
                           ) -> Callable[[], None]:
    """Log asyncio's accept() resource errors once per `interval_s` seconds, with how many were folded.

    Everything else goes to the loop's previous handler. Returns the
    function that puts that handler back.
    """
    previous = loop.get_exception_handler()
    state = {"last": 0.0, "folded": 0}

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            now = time.monotonic()
            if now - state["last"] < interval_s:
                state["folded"] += 1
                return
            folded, state["folded"], state["last"] = state["folded"], 0, now
            exc = context.get("exception")
            log.error("mcpguard cannot accept connections: %s%s", exc or "out of system resources",
                      f" ({folded} more since the last report)" if folded else "")
            return
        if previous is not None:
            previous(lp, context)
        else:
            lp.default_exception_handler(context)

    loop.set_exception_handler(handler)

    def restore() -> None:
        if loop.get_exception_handler() is handler:
            loop.set_exception_handler(previous)

    return restore
