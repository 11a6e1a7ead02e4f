"""Supervised MCP client connections to one upstream server (stdio or Streamable HTTP), of either era.

An `UpstreamConnection` speaks raw JSON-RPC through the SDK's transports
(`mcp.client.stdio.stdio_client`, `mcp.client.streamable_http.streamable_http_client`)
and its `JSONRPCDispatcher`: results and errors come back as the upstream
sent them (no re-validation, no hidden `tools/list`), and the upstream's own
server-to-client requests and notifications are handed raw to the owner's
callbacks.

Era. A connection opened by the gateway itself negotiates the upstream's
era as the SDK's `Client(mode="auto")` does (MCP 2026-07-28, Lifecycle):
`server/discover` at the newest 2026-07-28 version, once more at a version
the server names in a -32022 answer, and the `initialize` handshake on any
other JSON-RPC error. A connection opened for one agent session
(`init_params`) sends that agent's own `initialize` (only handshake-era
upstreams get per-session connections). `request()` then shapes every
request for the negotiated era (`mcpguard.gateway.eras`).

Faults. When the upstream exits or its stream closes, requests in flight
fail with `MCPError(CONNECTION_CLOSED)`, the state becomes `restarting`, and
the supervisor starts it again with exponential backoff (0.5 s doubling to
30 s, reset after 10 s up). A request while a restart after a crash is under
way waits for it (bounded by its timeout); a request while the last start
attempt *failed* (command not found, no answer to the handshake) raises
`UpstreamUnavailable` at once, naming that failure: nothing is sent.
`close()` stops it for good.
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
import mcp_types as types
from mcp.client.session import ClientSession
from mcp.shared.dispatcher import CallOptions, DispatchContext, ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT, UNSUPPORTED_PROTOCOL_VERSION
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_MODERN_VERSION, MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from mcpguard.gateway import eras

log = logging.getLogger(__name__)

OnRequest = Callable[[DispatchContext[Any], str, Mapping[str, Any] | None], Awaitable[dict[str, Any]]]
OnNotify = Callable[[DispatchContext[Any], str, Mapping[str, Any] | None], Awaitable[None]]
OnState = Callable[["UpstreamConnection", str, str], None]

INIT_TIMEOUT_S = 60.0
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0
BACKOFF_RESET_AFTER_S = 10.0
GATEWAY_INFO = types.Implementation(name="mcpguard", version="0.1.0")


class UpstreamUnavailable(MCPError):
    """The upstream is not up and nothing was sent; `.cause` says why (its last failed start, or that it stopped)."""

    def __init__(self, label: str, cause: str) -> None:
        super().__init__(code=-32603, message=f"upstream '{label}' is unavailable: {cause}")
        self.cause = cause


async def _no_request(dctx: DispatchContext[Any], method: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    raise MCPError(code=-32601, message="Method not found", data=method)


async def _no_notify(dctx: DispatchContext[Any], method: str, params: Mapping[str, Any] | None) -> None:
    return None


async def _never_called(*_args: Any) -> Any:  # pragma: no cover - see _negotiation_session
    raise MCPError(code=-32603, message="mcpguard: routed by the dispatcher, not the session")


class Agent:
    """Who a forwarded request speaks for on a 2026-07-28 hop.

    `client_info` and `capabilities` (JSON objects); `log_level`: the level
    a handshake-era agent set with `logging/setLevel`, sent as the
    per-request opt-in a 2026-07-28 upstream reads.
    """

    __slots__ = ("capabilities", "client_info", "log_level")

    def __init__(self, client_info: Mapping[str, Any] | None = None,
                 capabilities: Mapping[str, Any] | None = None, log_level: str | None = None) -> None:
        self.client_info = client_info
        self.capabilities = capabilities
        self.log_level = log_level


class UpstreamConnection:
    """One supervised MCP client connection to the upstream `server` (a `mcpguard.config.ServerConfig`).

    - `init_params`: for a per-session connection, the agent's own
      `initialize` params (the upstream then sees its `clientInfo` and
      capabilities); None: the gateway's own connection, era negotiated.
    - `on_request(dctx, method, params) -> dict` answers the upstream's
      server-to-client requests (sampling, elicitation, roots, ping);
      `on_notify(dctx, method, params)` receives its notifications. Both run
      in the contextvars of the task whose request the message rode on when
      the transport knows it (Streamable HTTP), else the supervisor's.
    - `on_state(conn, state, detail)` is told `starting`, `up`,
      `restarting`, `down`; `on_up(conn)` (a coroutine) runs each time it
      comes up, before `up` is announced.
    - `input_schema(tool)`: the tool's input schema, for `Mcp-Param-*` headers.

    After it is up: `era` (`"modern"` or `"legacy"`), `protocol_version`,
    `server_info`, `capabilities`, `instructions` (the upstream's, as JSON),
    `init_result` (its raw `InitializeResult` or `DiscoverResult`),
    `restarts` (how many times it came back), `last_failure` (why the last
    start failed, or "").
    """

    def __init__(
        self,
        server: Any,
        *,
        init_params: dict[str, Any] | None = None,
        on_request: OnRequest | None = None,
        on_notify: OnNotify | None = None,
        on_state: OnState | None = None,
        on_up: Callable[[UpstreamConnection], Awaitable[None]] | None = None,
        input_schema: Callable[[str], Any] | None = None,
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
        self._input_schema = input_schema
        self._restart = restart
        self.state = "starting"
        self.detail = ""
        self.last_failure = ""
        self.era: str = eras.LEGACY
        self.protocol_version: str | None = None
        self.init_result: dict[str, Any] | None = None
        self.server_info: dict[str, Any] | None = None
        self.capabilities: dict[str, Any] = {}
        self.instructions: str | None = None
        self.restarts = 0
        self._dispatcher: JSONRPCDispatcher[Any] | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._first = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._came_up = False

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
        """True when requests can be sent now."""
        return self.state == "up" and self._dispatcher is not None

    @property
    def connected(self) -> bool:
        """True once the handshake is done, also while `on_up` runs (before `up` is announced)."""
        return self._dispatcher is not None and self._ready.is_set()

    @property
    def modern(self) -> bool:
        """True when the upstream speaks MCP 2026-07-28 (stateless: one connection serves every agent)."""
        return self.era == eras.MODERN

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
            self._came_up = False
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
            # a start that never reached "up" is a failed start: calls fail at once until one succeeds
            self.last_failure = "" if self._came_up else detail
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
        """One connection's life: connect, negotiate, serve until it ends (`_came_up` says whether it got there)."""
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
                from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

                client = await stack.enter_async_context(
                    create_mcp_http_client(headers=dict(self.server.headers or {}))
                )
                read, write = await stack.enter_async_context(
                    streamable_http_client(self.server.url, http_client=client)
                )
            dispatcher: JSONRPCDispatcher[Any] = JSONRPCDispatcher(read, write, on_stream_exception=_stream_exception)
            ended = asyncio.Event()

            async def run_dispatcher(*, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
                try:
                    await dispatcher.run(self._on_request, self._on_notify, task_status=task_status)
                finally:
                    ended.set()

            async with anyio.create_task_group() as tg:
                await tg.start(run_dispatcher)
                with anyio.fail_after(INIT_TIMEOUT_S):
                    await self._negotiate(dispatcher)
                self._dispatcher = dispatcher
                self._ready.set()
                self._came_up = True
                self.last_failure = ""
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

    async def _negotiate(self, dispatcher: JSONRPCDispatcher[Any]) -> None:
        if self.init_params is not None:
            result = await dispatcher.send_raw_request(
                "initialize", self.init_params, {"timeout": INIT_TIMEOUT_S, "cancel_on_abandon": False}
            )
            self._adopt_initialize(result)
            await dispatcher.notify("notifications/initialized", None, {"headers": self._headers("", None)})
            return
        session = _negotiation_session(dispatcher)
        version = LATEST_MODERN_VERSION
        for attempt in range(2):
            try:
                raw = await session.send_discover(version)
            except MCPError as exc:
                mutual = _mutual_modern(exc) if exc.code == UNSUPPORTED_PROTOCOL_VERSION else []
                if mutual and attempt == 0:
                    version = mutual[-1]
                    continue
                try:
                    init = await session.initialize()
                except MCPError as handshake:
                    mutual = _mutual_modern(handshake) if handshake.code == UNSUPPORTED_PROTOCOL_VERSION else []
                    if not mutual or attempt:
                        raise
                    version = mutual[-1]
                    continue
                self._adopt_initialize(init.model_dump(by_alias=True, mode="json", exclude_none=True))
                return
            try:
                discovered = types.DiscoverResult.model_validate(raw)
            except ValidationError:
                discovered = None
            mutual = [v for v in MODERN_PROTOCOL_VERSIONS if discovered and v in discovered.supported_versions]
            if not mutual:  # a discover answer that advertises no 2026-07-28 version is a handshake-era server
                init = await session.initialize()
                self._adopt_initialize(init.model_dump(by_alias=True, mode="json", exclude_none=True))
                return
            self.era, self.protocol_version, self.init_result = eras.MODERN, mutual[-1], raw
            self.capabilities = dict(raw.get("capabilities") or {})
            self.instructions = raw.get("instructions")
            stamp = (raw.get("_meta") or {}).get(types.SERVER_INFO_META_KEY)
            self.server_info = dict(stamp) if isinstance(stamp, Mapping) else None
            return

    def _adopt_initialize(self, result: dict[str, Any]) -> None:
        version = result.get("protocolVersion")
        if version not in HANDSHAKE_PROTOCOL_VERSIONS:
            raise MCPError(code=-32603, message=f"upstream answered initialize with protocol version {version!r}")
        self.era, self.protocol_version, self.init_result = eras.LEGACY, version, result
        self.capabilities = dict(result.get("capabilities") or {})
        self.instructions = result.get("instructions")
        info = result.get("serverInfo")
        self.server_info = dict(info) if isinstance(info, Mapping) else None

    # -- traffic ----------------------------------------------------------------
    def _headers(self, method: str, params: Mapping[str, Any] | None) -> dict[str, str]:
        if self.server.transport == "stdio":
            return {}
        return eras.upstream_headers(method, params, upstream_era=self.era, upstream_version=self.protocol_version,
                                     input_schema=self._input_schema)

    async def _live(self, wait_s: float) -> JSONRPCDispatcher[Any]:
        """The live dispatcher. Waits up to `wait_s` seconds for a first start or a restart after a crash;
        raises `UpstreamUnavailable` at once when the last start attempt failed or it is closed."""
        if self._dispatcher is not None and self._ready.is_set():
            return self._dispatcher
        if self._closing:
            raise UpstreamUnavailable(self.label, "it is stopped")
        if self.last_failure:
            raise UpstreamUnavailable(self.label, f"its last start failed: {self.last_failure}")
        try:
            await asyncio.wait_for(self._ready.wait(), wait_s)
        except TimeoutError:
            raise UpstreamUnavailable(
                self.label, f"it is {self.state}" + (f" ({self.detail})" if self.detail else "")
            ) from None
        assert self._dispatcher is not None
        return self._dispatcher

    async def request(
        self,
        method: str,
        params: Mapping[str, Any] | None,
        *,
        timeout: float | None = None,
        agent: Agent | None = None,
        on_progress: ProgressFnT | None = None,
    ) -> dict[str, Any]:
        """Send one request upstream, shaped for its era, and return its raw result dict.

        - `params`: the agent's params; its `_meta` envelope is replaced for
          the upstream's era (`eras.upstream_params`), with `agent` as the
          sender on a 2026-07-28 hop.
        - `on_progress(progress, total, message)`: the upstream's progress
          for this request. The agent's own `progressToken` is not sent: the
          dispatcher puts one unique on this hop (the request id), so agents
          sharing a connection never see each other's progress.
        - `timeout` (seconds) bounds the wait for the answer; then a
          cancellation goes upstream and `MCPError(REQUEST_TIMEOUT)` is raised.

        Raises `UpstreamUnavailable` when nothing could be sent; `MCPError`
        with the upstream's code, message and data for its JSON-RPC error, or
        `CONNECTION_CLOSED` when it went away with the request in flight.
        Cancelling the caller cancels the upstream request (MCP 2025-06-18,
        Cancellation; on a 2026-07-28 HTTP hop, the POST is closed).
        """
        dispatcher = await self._live(timeout if timeout is not None else INIT_TIMEOUT_S)
        shaped = eras.upstream_params(
            params, upstream_era=self.era, upstream_version=self.protocol_version,
            client_info=agent.client_info if agent else None,
            client_capabilities=agent.capabilities if agent else None,
            log_level=agent.log_level if agent else None,
            drop_progress_token=on_progress is not None,
        )
        opts: CallOptions = {}
        if timeout is not None:
            opts["timeout"] = timeout
        if on_progress is not None:
            opts["on_progress"] = on_progress
        headers = self._headers(method, shaped)
        if headers:
            opts["headers"] = headers
        return await dispatcher.send_raw_request(method, shaped, opts)

    async def notify(self, method: str, params: Mapping[str, Any] | None) -> None:
        """Send a notification upstream; dropped when the upstream is not up."""
        dispatcher = self._dispatcher
        if dispatcher is not None:
            opts: CallOptions = {}
            headers = self._headers(method, params)
            if headers:
                opts["headers"] = headers
            await dispatcher.notify(method, params, opts)


def _negotiation_session(dispatcher: JSONRPCDispatcher[Any]) -> ClientSession:
    """A `ClientSession` over `dispatcher`, used only to probe and shake hands (never entered).

    The dispatcher runs with the connection's own handlers, so the session's
    callbacks are never called; they exist because the session derives the
    capabilities it announces (sampling, elicitation, roots) from which
    callbacks it has, and the gateway relays those requests to its agents.
    """
    return ClientSession(
        dispatcher=dispatcher,
        client_info=GATEWAY_INFO,
        sampling_callback=_never_called,
        elicitation_callback=_never_called,
        list_roots_callback=_never_called,
    )


def _mutual_modern(exc: MCPError) -> list[str]:
    """2026-07-28-era versions both sides speak, from a -32022 error's `data.supported`."""
    try:
        supported = types.UnsupportedProtocolVersionErrorData.model_validate(exc.error.data).supported
    except ValidationError:
        return []
    return [v for v in MODERN_PROTOCOL_VERSIONS if v in supported]


async def _stream_exception(exc: Exception) -> None:
    log.debug("upstream stream error: %s", exc)


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
            return "upstream did not answer the handshake in time"
        return f"upstream error {exc.error.code}: {exc.error.message}"
    if isinstance(exc, TimeoutError):
        return f"upstream did not finish the handshake within {INIT_TIMEOUT_S:g}s"
    if isinstance(exc, FileNotFoundError):
        return f"command not found: {exc.filename or exc}"
    return f"{type(exc).__name__}: {exc}"
