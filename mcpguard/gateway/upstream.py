"""Supervised MCP client connections to one upstream server (stdio or Streamable HTTP).

An `UpstreamConnection` speaks raw JSON-RPC through the SDK's transports
(`mcp.client.stdio.stdio_client`, `mcp.client.streamable_http.streamable_http_client`)
and its `JSONRPCDispatcher`, never through `ClientSession`: results and
errors come back as the upstream sent them (no re-validation, no hidden
`tools/list`), and the upstream's own server-to-client requests and
notifications are handed raw to the owner's callbacks.

When the upstream exits or its stream closes, requests in flight fail with
`MCPError(CONNECTION_CLOSED)`, the connection state becomes `restarting`, and
the supervisor starts it again with exponential backoff (0.5 s doubling to
30 s, reset after 10 s up). `close()` stops it for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
from mcp.shared.dispatcher import CallOptions, DispatchContext
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

log = logging.getLogger(__name__)

OnRequest = Callable[[DispatchContext[Any], str, Mapping[str, Any] | None], Awaitable[dict[str, Any]]]
OnNotify = Callable[[DispatchContext[Any], str, Mapping[str, Any] | None], Awaitable[None]]
OnState = Callable[["UpstreamConnection", str, str], None]

INIT_TIMEOUT_S = 60.0
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0
BACKOFF_RESET_AFTER_S = 10.0
MCP_PROTOCOL_VERSION_HEADER = "mcp-protocol-version"


class UpstreamUnavailable(MCPError):
    """The upstream is not up (starting, restarting or down) within the wait allowed."""


async def _no_request(dctx: DispatchContext[Any], method: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    raise MCPError(code=-32601, message="Method not found", data=method)


async def _no_notify(dctx: DispatchContext[Any], method: str, params: Mapping[str, Any] | None) -> None:
    return None


class UpstreamConnection:
    """One supervised MCP client connection to the upstream described by `server` (a `ServerConfig`).

    - `init_params`: the `initialize` params sent upstream (a downstream
      client's own, so the upstream sees its `clientInfo` and capabilities).
    - `on_request(dctx, method, params) -> dict` answers the upstream's
      server-to-client requests (sampling, elicitation, roots, ping);
      `on_notify(dctx, method, params)` receives its notifications.
    - `on_state(conn, state, detail)` is told `starting`, `up`, `restarting`,
      `down`; `on_up(conn)` (a coroutine) runs each time it comes up.
    - `state`, `init_result` (the upstream's `InitializeResult` as JSON),
      `restarts` (how many times it came back).
    """

    def __init__(
        self,
        server: Any,
        *,
        init_params: dict[str, Any],
        on_request: OnRequest | None = None,
        on_notify: OnNotify | None = None,
        on_state: OnState | None = None,
        on_up: Callable[[UpstreamConnection], Awaitable[None]] | None = None,
        label: str = "",
        restart: bool = True,
    ) -> None:
        self.server = server
        self.label = label or server.name
        self.init_params = init_params
        self._on_request = on_request or _no_request
        self._on_notify = on_notify or _no_notify
        self._on_state = on_state
        self._on_up = on_up
        self._restart = restart
        self.state = "starting"
        self.detail = ""
        self.init_result: dict[str, Any] | None = None
        self.protocol_version: str | None = None
        self.restarts = 0
        self._dispatcher: JSONRPCDispatcher[Any] | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._first = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    # -- lifecycle ------------------------------------------------------------
    async def start(self, wait_s: float = INIT_TIMEOUT_S) -> None:
        """Start the supervisor; return once the first attempt is up or has failed (bounded by `wait_s`)."""
        self._task = asyncio.create_task(self._supervise(), name=f"upstream {self.label}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first.wait(), wait_s)

    async def close(self) -> None:
        """Stop the connection (and its process) for good; requests in flight fail."""
        self._closing = True
        self._stop.set()
        task = self._task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), 15)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self._set_state("down", "closed")

    @property
    def up(self) -> bool:
        return self.state == "up" and self._dispatcher is not None

    def _set_state(self, state: str, detail: str = "") -> None:
        if state == self.state and detail == self.detail:
            return
        self.state, self.detail = state, detail
        if self._on_state is not None:
            try:
                self._on_state(self, state, detail)
            except Exception:
                log.exception("upstream state listener raised")

    async def _supervise(self) -> None:
        backoff = BACKOFF_START_S
        while not self._closing:
            started = time.monotonic()
            detail = "connection closed"
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # noqa: BLE001 - a failing upstream must not kill the gateway
                detail = _describe(exc)
                log.info("upstream %s failed: %s", self.label, detail)
            finally:
                self._ready.clear()
                self._dispatcher = None
                self._first.set()
            if self._closing:
                break
            if not self._restart:
                self._set_state("down", detail)
                return
            if time.monotonic() - started > BACKOFF_RESET_AFTER_S:
                backoff = BACKOFF_START_S
            self._set_state("restarting", f"{detail}; restarting in {backoff:g}s")
            try:
                await asyncio.wait_for(self._stop.wait(), backoff)
            except TimeoutError:
                pass
            backoff = min(backoff * 2, BACKOFF_MAX_S)
            if not self._closing:
                self.restarts += 1

    async def _run_once(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            if self.server.transport == "stdio":
                from mcp.client.stdio import StdioServerParameters, stdio_client

                errlog = stack.enter_context(_open_errlog(self.server.stderr_log))
                env = {str(k): str(v) for k, v in (self.server.env or {}).items()}
                params = StdioServerParameters(
                    command=self.server.command,
                    args=list(self.server.args or []),
                    env=env or None,
                    cwd=self.server.cwd,
                )
                read, write = await stack.enter_async_context(stdio_client(params, errlog=errlog))
            else:
                from mcp.client.streamable_http import streamable_http_client
                from mcp.shared._httpx_utils import create_mcp_http_client

                client = await stack.enter_async_context(
                    create_mcp_http_client(headers=dict(self.server.headers or {}))
                )
                read, write = await stack.enter_async_context(
                    streamable_http_client(self.server.url, http_client=client)
                )
            dispatcher: JSONRPCDispatcher[Any] = JSONRPCDispatcher(read, write)
            ended = asyncio.Event()

            async def run_dispatcher(*, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
                try:
                    await dispatcher.run(self._on_request, self._on_notify, task_status=task_status)
                finally:
                    ended.set()

            async with anyio.create_task_group() as tg:
                await tg.start(run_dispatcher)
                result = await dispatcher.send_raw_request(
                    "initialize", self.init_params, {"timeout": INIT_TIMEOUT_S, "cancel_on_abandon": False}
                )
                self.init_result = result
                self.protocol_version = result.get("protocolVersion")
                await dispatcher.notify("notifications/initialized", None, self._opts())
                self._dispatcher = dispatcher
                self._ready.set()
                if self._on_up is not None:
                    # before "up" is announced, so listeners see e.g. the tools list filled
                    try:
                        await self._on_up(self)
                    except Exception:
                        log.exception("on_up of upstream %s raised", self.label)
                self._set_state("up", "")
                self._first.set()
                stop_task = asyncio.ensure_future(self._stop.wait())
                end_task = asyncio.ensure_future(ended.wait())
                try:
                    await asyncio.wait({stop_task, end_task}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop_task.cancel()
                    end_task.cancel()
                    self._ready.clear()
                    self._dispatcher = None
                    tg.cancel_scope.cancel()

    # -- traffic ----------------------------------------------------------------
    def _opts(self, timeout: float | None = None) -> CallOptions:
        opts: CallOptions = {}
        if timeout is not None:
            opts["timeout"] = timeout
        if self.server.transport != "stdio" and self.protocol_version:
            opts["headers"] = {MCP_PROTOCOL_VERSION_HEADER: self.protocol_version}
        return opts

    async def wait_up(self, wait_s: float) -> JSONRPCDispatcher[Any]:
        """The live dispatcher, waiting up to `wait_s` seconds for a (re)start.

        Raises `UpstreamUnavailable` (code -32603) when it is not up in time.
        """
        if self._dispatcher is not None and self._ready.is_set():
            return self._dispatcher
        if self._closing:
            raise UpstreamUnavailable(code=-32603, message=f"upstream '{self.label}' is stopped")
        try:
            await asyncio.wait_for(self._ready.wait(), wait_s)
        except TimeoutError:
            raise UpstreamUnavailable(
                code=-32603,
                message=f"upstream '{self.label}' is {self.state}" + (f" ({self.detail})" if self.detail else ""),
            ) from None
        assert self._dispatcher is not None
        return self._dispatcher

    async def request(
        self, method: str, params: Mapping[str, Any] | None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Send one request upstream and return its raw result dict.

        `timeout` (seconds) bounds the wait for the answer; then a
        `notifications/cancelled` goes upstream and `MCPError(REQUEST_TIMEOUT)`
        is raised. An upstream JSON-RPC error raises `MCPError` with its code,
        message and data unchanged; a closed connection raises
        `MCPError(CONNECTION_CLOSED)`. Cancelling the caller cancels the
        upstream request (MCP 2025-06-18, Cancellation).
        """
        dispatcher = await self.wait_up(timeout if timeout is not None else INIT_TIMEOUT_S)
        return await dispatcher.send_raw_request(method, params, self._opts(timeout))

    async def notify(self, method: str, params: Mapping[str, Any] | None) -> None:
        """Send a notification upstream; dropped when the upstream is not up."""
        dispatcher = self._dispatcher
        if dispatcher is not None:
            await dispatcher.notify(method, params, self._opts())


@contextlib.contextmanager
def _open_errlog(path: str | os.PathLike[str] | None):  # type: ignore[no-untyped-def]
    """The upstream's stderr: appended to `path`, else discarded; never the terminal."""
    if path:
        p = os.fspath(path)
        parent = os.path.dirname(p)
        if parent:
            os.makedirs(parent, exist_ok=True)
        f = open(p, "a", encoding="utf-8")  # noqa: SIM115
    else:
        f = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
    try:
        yield f
    finally:
        f.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions]
        if inner:
            return _describe(inner[0])
    if isinstance(exc, MCPError):
        if exc.error.code == CONNECTION_CLOSED:
            return "upstream closed the connection"
        if exc.error.code == REQUEST_TIMEOUT:
            return "upstream did not answer initialize in time"
        return f"upstream error {exc.error.code}: {exc.error.message}"
    if isinstance(exc, FileNotFoundError):
        return f"command not found: {exc.filename or exc}"
    return f"{type(exc).__name__}: {exc}"
