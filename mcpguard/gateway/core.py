"""The gateway: downstream Streamable HTTP endpoints, upstream sessions, and the tools/call interception point.

Shape (design §4, issue 3):

- One `mcp` low-level `Server` and one `StreamableHTTPSessionManager` per
  upstream, mounted at `/mcp/<server>` on one uvicorn server bound to
  127.0.0.1. Sessions have ids, responses are SSE streams, and Host/Origin
  are checked against DNS rebinding (MCP 2025-06-18, Streamable HTTP
  §Security) with the SDK's `TransportSecuritySettings`.
- The `Server` has no handlers: one context-tier middleware answers every
  request by forwarding it raw to the upstream (so results and JSON-RPC
  errors reach the agent unchanged, and `$defs`/`outputSchema`/annotations
  are never re-serialized), except `initialize` (the SDK negotiates the
  protocol version; capabilities, serverInfo and instructions are the
  upstream's), `tools/list` (hidden tools removed, fingerprints checked) and
  `tools/call` (the policy pipeline in `_call_tool`).
- Upstream sessions: ONE UPSTREAM SESSION PER DOWNSTREAM SESSION, opened by
  the downstream `initialize` with the agent's own `initialize` params, and
  closed when the downstream session ends. Why: server-to-client requests
  (sampling, elicitation, roots), log messages, `resources/updated`
  subscriptions, `logging/setLevel` and progress tokens are per session in
  MCP, and on stdio nothing on the wire says which downstream caller an
  upstream request belongs to; one upstream per downstream session routes all
  of them without guessing or rewriting. The cost is one upstream process per
  agent session for stdio upstreams. In addition each server has one
  *control* session, opened at `start()`, that feeds `ServerHandle.tools`
  (and fingerprints) for the console before any agent connects and that
  drives `ServerHandle.state`.
- Everything runs in the caller's asyncio loop (the console runs it inside
  Textual's loop): uvicorn's `Server.serve()` is a task with its signal
  handlers off, and there are no threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import itertools
import json
import logging
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcp_types.version import LATEST_HANDSHAKE_VERSION
from mcp.server.context import CallNext, ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.dispatcher import DispatchContext
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

from mcpguard.approvals import Approvals
from mcpguard.call import Call
from mcpguard.events import (
    CallCompleted,
    CallDecided,
    CallReceived,
    EventBus,
    PolicyRejected,
    ToolChanged,
    UpstreamState,
)
from mcpguard.gateway.results import DECISION_META_KEY, denial, fingerprint, unknown_tool
from mcpguard.gateway.upstream import UpstreamConnection, UpstreamUnavailable

log = logging.getLogger(__name__)

DEFAULT_CALL_TIMEOUT_S = 120.0
DEFAULT_APPROVAL_TIMEOUT_S = 120.0
LOCAL_GRANT = "local"
GATEWAY_INFO = {"name": "mcpguard", "version": "0.1.0"}
_LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
_LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]


def _get(obj: Any, *names: str, default: Any = None) -> Any:
    """First present, non-None attribute of `obj` among `names` (config objects are plain records)."""
    for n in names:
        v = getattr(obj, n, None)
        if v is not None:
            return v
    return default


def _listened(bus: EventBus) -> bool:
    """Whether `bus` has any subscriber or listener (the console, the audit log, a test).

    The per-call events (and the result's size, which needs its JSON) are
    built only then; with audit on there is always a listener.
    """
    return bool(getattr(bus, "_subs", True) or getattr(bus, "_listeners", True))


# ---------------------------------------------------------------------------
# per-session state


@dataclass(eq=False)
class _InFlight:
    dctx: DispatchContext[Any]
    progress_token: Any = None


@dataclass(eq=False)
class DownstreamSession:
    """One agent's MCP session on one server endpoint, with its own upstream session."""

    session_id: str | None
    grant: str
    client: str | None
    upstream: UpstreamConnection
    connection: Any = None  # the SDK's server-side Connection (standalone outbound)
    in_flight: dict[int, _InFlight] = field(default_factory=dict)

    def newest(self) -> _InFlight | None:
        for entry in reversed(self.in_flight.values()):
            if entry.dctx.can_send_request:
                return entry
        return None

    def by_token(self, token: Any) -> _InFlight | None:
        for entry in self.in_flight.values():
            if entry.progress_token is not None and entry.progress_token == token:
                return entry
        return None


# ---------------------------------------------------------------------------
# per-server state


class ServerHandle:
    """One upstream server as the gateway runs it.

    - `state`: `starting`, `up`, `restarting`, `down` (its control session).
    - `tools`: the upstream's `tools/list` tools as JSON objects, unfiltered
      (hidden tools included), as last seen.
    - `policy` (a `mcpguard.policy.Policy` or None: every call denied),
      `policy_path`, `policy_errors` (`file:line:col: message` strings, empty
      when the policy loaded).
    - `counters`: this server's `mcpguard.ratelimit.Counters`, kept across
      policy changes.
    - `changed_tools`: names whose definition differs from first sight.
    - `fingerprints`: tool name -> sha256 at first sight.
    - `sessions`: downstream session id -> `DownstreamSession`.
    """

    def __init__(self, name: str, config: Any, bus: EventBus) -> None:
        from mcpguard.ratelimit import Counters

        self.name = name
        self.config = config
        self.state = "starting"
        self.detail = ""
        self.tools: list[dict[str, Any]] = []
        self.policy: Any = None
        policy_path = _get(config, "policy")
        self.policy_path: Path | None = Path(policy_path) if policy_path else None
        self.policy_errors: list[str] = []
        self.counters = Counters(name, bus)
        self.changed_tools: set[str] = set()
        self.fingerprints: dict[str, str] = {}
        self._last_fp: dict[str, str] = {}
        self._announced_fps: dict[str, set[str]] = {}  # changed definitions already published
        self._risk_cache: dict[str, Any] = {}
        self.sessions: dict[str, DownstreamSession] = {}
        self.control: UpstreamConnection | None = None
        self.mcp_server: Server[Any] | None = None
        self.manager: StreamableHTTPSessionManager | None = None
        self.call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S
        self.init_result: dict[str, Any] | None = None

    def tool(self, name: str) -> dict[str, Any] | None:
        """The upstream's definition of tool `name`, or None."""
        for t in self.tools:
            if t.get("name") == name:
                return t
        return None

    def risk(self, tool_name: str) -> Any:
        """`mcpguard.risk.Risk` of a tool: the policy's override, else annotations, else its name."""
        cached = self._risk_cache.get(tool_name)
        if cached is not None:
            return cached
        from mcpguard.risk import classify

        t = self.tool(tool_name) or {}
        override = None
        if self.policy is not None:
            rule = getattr(self.policy, "tools", {}).get(tool_name)
            override = getattr(rule, "risk", None) if rule is not None else None
        r = classify(tool_name, t.get("annotations"), t.get("description"), override)
        self._risk_cache[tool_name] = r
        return r

    def _clear_risk(self) -> None:
        self._risk_cache.clear()


# ---------------------------------------------------------------------------
# the gateway


class Gateway:
    """The embedded MCP proxy. See the module docstring for the shape.

    `Gateway(config, bus=None, interactive=True)`: `config` is a
    `mcpguard.config.Config`. `interactive=False` (headless `serve`) makes a
    call that needs approval wait for its deadline or be denied at once, per
    `[gateway] headless_approvals` (`"deny"` default, or `"wait"`).

    `await start()` loads policies, starts every upstream's control session,
    binds the HTTP server (port 0 picks a free port) and writes
    `gateway.url_file`; `await stop()` denies pending approvals, closes
    sessions and stops upstream processes. Neither raises for a failing
    upstream: its `ServerHandle.state` says `restarting`/`down`.
    """

    def __init__(self, config: Any, bus: EventBus | None = None, interactive: bool = True) -> None:
        self.config = config
        self.bus = bus or EventBus()
        self.approvals = Approvals(self.bus)
        self.interactive = interactive
        gw = _get(config, "gateway")
        self.host: str = _get(gw, "host", default="127.0.0.1")
        self.port: int = int(_get(gw, "port", default=0))
        self.headless_approvals: str = _get(gw, "headless_approvals", default="deny")
        self.default_call_timeout_s: float = float(
            _get(gw, "call_timeout_s", "call_timeout", default=DEFAULT_CALL_TIMEOUT_S)
        )
        self.servers: dict[str, ServerHandle] = {}
        for name, sc in (_get(config, "servers", default={}) or {}).items():
            h = ServerHandle(name, sc, self.bus)
            h.call_timeout_s = float(_get(sc, "call_timeout_s", "call_timeout", default=self.default_call_timeout_s))
            self.servers[name] = h
        self.grants: dict[str, Any] = dict(_get(config, "grants", default={}) or {})
        self.audit: Any = None
        self._ids = itertools.count(1)
        self._run = uuid.uuid4().hex[:6]
        self._uvicorn: Any = None
        self._serve_task: asyncio.Task[None] | None = None
        self._manager_tasks: list[asyncio.Task[None]] = []
        self._manager_stop = asyncio.Event()
        self._closers: set[asyncio.Task[None]] = set()
        self._bound_port: int | None = None
        self._started = False
        self._detach_audit: Any = None

    # -- public API ------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """`http://HOST:PORT` of the downstream endpoint (after `start()`)."""
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self._bound_port if self._bound_port is not None else self.port}"

    def url(self, server: str) -> str:
        """The agent's endpoint for `server`: `http://127.0.0.1:PORT/mcp/NAME`. KeyError if unknown."""
        if server not in self.servers:
            raise KeyError(server)
        return f"{self.base_url}/mcp/{server}"

    def set_policy(self, server: str, policy: Any) -> None:
        """Apply a new, already validated policy to `server` at once.

        Counters are kept (they are keyed by counter name and scope key);
        counters no rule names any more are dropped once their window passed.
        Pending approvals follow the new policy at once (issue 5): a waiting
        call whose tool is now denied is denied (`policy_changed`), one whose
        tool is now allowed is let through; one that still needs approval
        keeps waiting. Approved calls are evaluated again before they are
        forwarded, so a change while a call waits always counts.
        """
        h = self.servers[server]
        h.policy = policy
        h.policy_errors = []
        h._clear_risk()
        if policy is not None:
            with contextlib.suppress(Exception):
                h.counters.retain(policy.counter_names(), time.monotonic())
                # gauges show the new max/window at once, before the next call
                limits = list(policy.all_tools_limits)
                for rule in policy.tools.values():
                    limits += rule.limits
                h.counters.update_limits(limits)
        self._follow_policy(h)

    def _follow_policy(self, h: ServerHandle) -> None:
        from mcpguard.approvals import Resolution
        from mcpguard.policy import evaluate

        now = time.monotonic()
        for pa in self.approvals.pending():
            if pa.call.server != h.name:
                continue
            d = evaluate(pa.call, h.policy, h.counters, now, risk=h.risk(pa.call.tool),
                         tool_changed=pa.call.tool in h.changed_tools)
            if d.action == "deny":
                self.approvals.resolve(pa.id, Resolution("policy_changed", approved=False, by="policy",
                                                         reason=f"the policy changed while the call waited: "
                                                                f"{d.message}"))
            elif d.action == "allow":
                self.approvals.resolve(pa.id, Resolution("policy_changed", approved=True, by="policy",
                                                         reason="the policy changed: the tool no longer "
                                                                "needs approval"))

    def reject_policy(self, server: str, errors: list[str]) -> None:
        """Record that a policy file failed to load: the last good policy keeps running."""
        h = self.servers[server]
        h.policy_errors = list(errors)

    def accept_tool_change(self, server: str, tool: str) -> None:
        """A person reviewed a changed tool: its current definition becomes the reference."""
        h = self.servers[server]
        if tool in h._last_fp:
            h.fingerprints[tool] = h._last_fp[tool]
        h._announced_fps.pop(tool, None)
        h.changed_tools.discard(tool)

    async def start(self) -> None:
        """Load policies, start upstream control sessions, bind the HTTP server, write `url_file`.

        Raises OSError when the listen address cannot be bound.
        """
        if self._started:
            return
        self._started = True
        gw = _get(self.config, "gateway")
        audit_path = _get(gw, "audit_log")
        if audit_path:
            from mcpguard.audit import AuditLog

            self.audit = AuditLog(audit_path, fsync=bool(_get(gw, "audit_fsync", default=False)),
                                  redact_keys=tuple(_get(gw, "redact_keys", default=()) or ()), bus=self.bus)
            # decision and completion records are written by this listener inside
            # publish(), so each is on its way to disk before the agent's answer
            self._detach_audit = self.audit.attach(self.bus, policy_events=False)
        for h in self.servers.values():
            self._load_policy(h)
            self._build_endpoint(h)
        for h in self.servers.values():
            self._manager_tasks.append(asyncio.create_task(self._run_manager(h), name=f"mcp manager {h.name}"))
        try:
            await asyncio.gather(*(self._start_control(h) for h in self.servers.values()))
            await self._start_http()
        except BaseException:
            await self.stop()
            raise
        url_file = _get(gw, "url_file")
        if url_file:
            p = Path(url_file)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(self.base_url + "\n", encoding="utf-8")

    async def stop(self) -> None:
        """Deny pending approvals, close every session, stop upstream processes and the HTTP server."""
        self.approvals.deny_all()
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._serve_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._serve_task), 10)
            except (TimeoutError, Exception):
                self._serve_task.cancel()
        self._manager_stop.set()
        for t in self._manager_tasks:
            try:
                await asyncio.wait_for(asyncio.shield(t), 10)
            except (TimeoutError, Exception):
                t.cancel()
        closes = [s.upstream.close() for h in self.servers.values() for s in list(h.sessions.values())]
        closes += [h.control.close() for h in self.servers.values() if h.control is not None]
        await asyncio.gather(*closes, return_exceptions=True)
        if self._closers:
            await asyncio.gather(*list(self._closers), return_exceptions=True)
        for h in self.servers.values():
            h.sessions.clear()
            self._set_state(h, "down", "stopped")
        if self._detach_audit is not None:
            self._detach_audit()
        if self.audit is not None:
            with contextlib.suppress(Exception):
                self.audit.close()

    # -- start-up pieces -------------------------------------------------------------
    def _load_policy(self, h: ServerHandle) -> None:
        if h.policy_path is None:
            h.policy_errors = [f"{h.name}: no policy file configured; every call is denied"]
            return
        from mcpguard.policy import PolicyError, load_policy

        try:
            self.set_policy(h.name, load_policy(h.policy_path))
        except PolicyError as exc:
            errors = [str(i) for i in getattr(exc, "issues", [])] or [str(exc)]
            h.policy_errors = errors
            self._rejected(h, errors)
        except OSError as exc:
            h.policy_errors = [f"{h.policy_path}:1:1: cannot read policy: {exc.strerror or exc}"]
            self._rejected(h, h.policy_errors)

    def _rejected(self, h: ServerHandle, errors: list[str]) -> None:
        event = PolicyRejected(server=h.name, path=str(h.policy_path), errors=tuple(errors))
        self.bus.publish(event)
        if self.audit is not None:
            self.audit.record_event(event)

    def _build_endpoint(self, h: ServerHandle) -> None:
        server: Server[Any] = Server(f"mcpguard:{h.name}", version="0.1.0")
        server.middleware = [_Proxy(self, h)]
        h.mcp_server = server
        gw = _get(self.config, "gateway")
        origins = list(_LOOPBACK_ORIGINS) + list(_get(gw, "allowed_origins", default=[]) or [])
        hosts = list(_LOOPBACK_HOSTS)
        if self.host not in ("127.0.0.1", "localhost", "::1"):
            hosts.append(f"{self.host}:*")
        h.manager = StreamableHTTPSessionManager(
            app=server,
            json_response=False,
            security_settings=TransportSecuritySettings(
                enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
            ),
        )

    async def _run_manager(self, h: ServerHandle) -> None:
        assert h.manager is not None
        async with h.manager.run():
            await self._manager_stop.wait()

    async def _start_control(self, h: ServerHandle) -> None:
        init = {"protocolVersion": LATEST_HANDSHAKE_VERSION, "capabilities": {}, "clientInfo": GATEWAY_INFO}

        async def on_up(conn: UpstreamConnection) -> None:
            h.init_result = conn.init_result
            await self._refresh_tools(h, conn)

        async def on_notify(dctx: DispatchContext[Any], method: str, params: Mapping[str, Any] | None) -> None:
            if method == "notifications/tools/list_changed" and h.control is not None and h.control.up:
                await self._refresh_tools(h, h.control)

        conn = UpstreamConnection(
            h.config,
            init_params=init,
            on_notify=on_notify,
            on_state=lambda c, s, d: self._set_state(h, s, d),
            on_up=on_up,
            label=h.name,
        )
        h.control = conn
        self.bus.publish(UpstreamState(server=h.name, state="starting"))
        await conn.start()

    async def _refresh_tools(self, h: ServerHandle, conn: UpstreamConnection) -> None:
        tools: list[dict[str, Any]] = []
        cursor = None
        try:
            for _ in range(100):  # bounded pagination
                params = {"cursor": cursor} if cursor else None
                res = await conn.request("tools/list", params, timeout=h.call_timeout_s)
                tools.extend(t for t in res.get("tools", []) if isinstance(t, dict))
                cursor = res.get("nextCursor")
                if not cursor:
                    break
        except MCPError as exc:
            log.info("tools/list of %s failed: %s", h.name, exc)
            return
        self._see_tools(h, tools, complete=True)

    def _see_tools(self, h: ServerHandle, tools: list[dict[str, Any]], *, complete: bool) -> None:
        """Fingerprint tools; a definition that differs from first sight is a ToolChanged event."""
        for t in tools:
            name = t.get("name")
            if not isinstance(name, str):
                continue
            fp = fingerprint(t)
            first = h.fingerprints.get(name)
            if first is None:
                h.fingerprints[name] = fp
            elif fp != first:
                # each upstream session lists its own tools, so sessions may see different
                # definitions: a changed tool stays changed until a person accepts it
                # (accept_tool_change), whatever another session lists later
                announced = h._announced_fps.setdefault(name, set())
                if fp not in announced:
                    announced.add(fp)
                    self.bus.publish(ToolChanged(server=h.name, tool=name, old_fingerprint=first, new_fingerprint=fp))
                h.changed_tools.add(name)
                h._last_fp[name] = fp
        if complete:
            h.tools = list(tools)
        else:
            by_name = {t.get("name"): i for i, t in enumerate(h.tools)}
            for t in tools:
                i = by_name.get(t.get("name"))
                if i is None:
                    h.tools.append(t)
                else:
                    h.tools[i] = t
        h._clear_risk()

    def _set_state(self, h: ServerHandle, state: str, detail: str = "") -> None:
        if h.state == state and h.detail == detail:
            return
        h.state, h.detail = state, detail
        self.bus.publish(UpstreamState(server=h.name, state=state, detail=detail))

    async def _start_http(self) -> None:
        import uvicorn

        class _Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):  # type: ignore[override]
                yield  # the owner (console, serve command) handles signals

        config = uvicorn.Config(
            _App(self), host=self.host, port=self.port, lifespan="off", log_level="warning",
            access_log=False, timeout_graceful_shutdown=2,
        )
        server = _Server(config)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"mcpguard could not listen on {self.host}:{self.port}: "
                                     f"{exc.strerror or exc}") from None
        self._bound_port = sock.getsockname()[1]
        self._uvicorn = server
        self._serve_task = asyncio.create_task(server.serve(sockets=[sock]), name="mcpguard http")
        for _ in range(1000):  # bounded: 10 s
            if server.started or self._serve_task.done():
                break
            await asyncio.sleep(0.01)
        if not server.started:
            raise OSError(f"mcpguard could not start its HTTP server on {self.host}:{self._bound_port}")

    # -- sessions ----------------------------------------------------------------------
    async def _open_session(self, h: ServerHandle, ctx: ServerRequestContext[Any, Any]) -> DownstreamSession:
        params = dict(ctx.params or {})
        connection = getattr(ctx.session, "_connection", None)
        session_id = getattr(connection, "session_id", None)
        request = ctx.request
        grant = LOCAL_GRANT
        if request is not None:
            grant = request.scope.get("mcpguard.grant", LOCAL_GRANT)
        client_info = params.get("clientInfo") if isinstance(params.get("clientInfo"), dict) else {}
        client = client_info.get("name") if isinstance(client_info.get("name"), str) else None
        holder: dict[str, DownstreamSession] = {}

        async def on_request(dctx: DispatchContext[Any], method: str, p: Mapping[str, Any] | None) -> dict[str, Any]:
            return await self._to_client(h, holder["s"], method, p)

        async def on_notify(dctx: DispatchContext[Any], method: str, p: Mapping[str, Any] | None) -> None:
            await self._notify_client(h, holder["s"], method, p)

        label = f"{h.name}#{session_id[:8]}" if session_id else h.name

        def on_state(conn: UpstreamConnection, state: str, detail: str) -> None:
            # a session's own upstream: only its faults and recoveries are news
            # (its normal start and its close when the agent leaves are not)
            if state == "restarting" or (state == "up" and conn.restarts) or (state == "down" and detail != "closed"):
                self.bus.publish(UpstreamState(server=h.name, state=state, detail=f"session {label}: {detail}"))

        up = UpstreamConnection(h.config, init_params=params, on_request=on_request, on_notify=on_notify,
                                on_state=on_state, label=label)
        sess = DownstreamSession(session_id=session_id, grant=grant, client=client, upstream=up, connection=connection)
        holder["s"] = sess
        await up.start()
        if not up.up:
            await up.close()
            raise MCPError(code=-32603, message=f"mcpguard: upstream '{h.name}' is unavailable: {up.detail or up.state}")
        if session_id is not None:
            old = h.sessions.pop(session_id, None)
            if old is not None:
                self._spawn_close(old.upstream)
            h.sessions[session_id] = sess
        if connection is not None:
            connection.state["mcpguard.session"] = sess

            async def cleanup() -> None:
                if session_id is not None and h.sessions.get(session_id) is sess:
                    del h.sessions[session_id]
                    self.approvals.forget_session(session_id)
                self._spawn_close(up)

            connection.exit_stack.push_async_callback(cleanup)
        return sess

    def _spawn_close(self, up: UpstreamConnection) -> None:
        t = asyncio.create_task(up.close())
        self._closers.add(t)
        t.add_done_callback(self._closers.discard)

    async def _to_client(self, h: ServerHandle, sess: DownstreamSession, method: str,
                         params: Mapping[str, Any] | None) -> dict[str, Any]:
        """An upstream's server-to-client request (sampling, elicitation, roots) goes to its agent.

        It rides the newest in-flight request's stream when there is one (on
        stdio nothing says which request it belongs to), else the session's
        standalone GET stream.
        """
        if method == "ping":
            return {}
        entry = sess.newest()
        target = entry.dctx if entry is not None else getattr(sess.connection, "outbound", None)
        if target is None:
            raise MCPError(code=-32603, message="mcpguard: the agent's session is gone")
        return await target.send_raw_request(method, params, {"timeout": h.call_timeout_s})

    async def _notify_client(self, h: ServerHandle, sess: DownstreamSession, method: str,
                             params: Mapping[str, Any] | None) -> None:
        if method == "notifications/cancelled":
            return  # ids differ per hop; the dispatcher already cancelled the request it named
        if method == "notifications/progress":
            token = (params or {}).get("progressToken")
            entry = sess.by_token(token)
            if entry is not None:
                await entry.dctx.notify(method, params)
            return
        if method == "notifications/message":
            entry = sess.newest()
            if entry is not None:
                await entry.dctx.notify(method, params)
                return
        if method == "notifications/tools/list_changed" and h.control is not None and h.control.up:
            asyncio.create_task(self._refresh_tools(h, h.control))
        outbound = getattr(sess.connection, "outbound", None)
        if outbound is not None:
            await outbound.notify(method, params)

    async def _forward(self, h: ServerHandle, sess: DownstreamSession, ctx: ServerRequestContext[Any, Any],
                       params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Send the downstream request upstream, raw; its result or JSON-RPC error comes back unchanged."""
        p = ctx.params if params is None else params
        meta = (p or {}).get("_meta") if isinstance(p, Mapping) else None
        token = meta.get("progressToken") if isinstance(meta, Mapping) else None
        dctx = getattr(ctx.session, "_request_outbound", None)
        key = id(ctx)
        if dctx is not None:
            sess.in_flight[key] = _InFlight(dctx, token)
        try:
            return await sess.upstream.request(ctx.method, p, timeout=h.call_timeout_s)
        finally:
            sess.in_flight.pop(key, None)

    # -- tools/list and tools/call ---------------------------------------------------
    async def _list_tools(self, h: ServerHandle, sess: DownstreamSession,
                          ctx: ServerRequestContext[Any, Any]) -> dict[str, Any]:
        result = await self._forward(h, sess, ctx)
        tools = result.get("tools")
        if isinstance(tools, list):
            self._see_tools(h, [t for t in tools if isinstance(t, dict)],
                            complete=not result.get("nextCursor") and not (ctx.params or {}).get("cursor"))
            policy = h.policy
            if policy is not None and getattr(policy, "hide", None):
                result = dict(result)
                result["tools"] = [t for t in tools if not (isinstance(t, dict) and policy.is_hidden(t.get("name")))]
        return result

    async def _call_tool(self, h: ServerHandle, sess: DownstreamSession, ctx: ServerRequestContext[Any, Any],
                         call_next: CallNext) -> Any:
        params = ctx.params
        if not isinstance(params, Mapping) or not isinstance(params.get("name"), str) or not isinstance(
            params.get("arguments", {}) or {}, dict
        ):
            return await call_next(ctx)  # the SDK answers INVALID_PARAMS
        from mcpguard.policy import evaluate

        name: str = params["name"]
        arguments: dict[str, Any] = params.get("arguments") or {}
        call = Call(server=h.name, tool=name, arguments=arguments, grant=sess.grant,
                    session_id=sess.session_id, client=sess.client, call_id=f"{self._run}-{next(self._ids)}")
        t0 = time.perf_counter()
        bus = self.bus
        if _listened(bus):
            bus.publish(CallReceived(call_id=call.call_id, server=h.name, tool=name, arguments=arguments,
                                     grant=call.grant, session_id=call.session_id, client=call.client))
        risk = h.risk(name)
        policy = h.policy
        decision = evaluate(call, policy, h.counters, time.monotonic(), risk=risk,
                            tool_changed=name in h.changed_tools)
        self._decided(h, call, decision, risk)
        approver: str | None = None
        if decision.action == "deny":
            return self._deny(h, call, decision.code, decision.message, decision.rule, decision.retry_after_s, t0)
        limits = decision.limits
        outcome = "allowed"
        if decision.action == "require_approval" and not self.approvals.session_allows(sess.session_id, h.name, name):
            timeout_s = decision.approval_timeout_s or DEFAULT_APPROVAL_TIMEOUT_S
            if not self.interactive and self.headless_approvals != "wait":
                return self._deny(h, call, "approval_denied",
                                  "this call needs a person's approval and no console is attached "
                                  "(headless_approvals = \"deny\")", decision.rule, None, t0)
            resolution = await self.approvals.request(call, timeout_s=timeout_s, risk=getattr(risk, "level", None),
                                                      reason=decision.message)
            approver = resolution.by
            if not resolution.approved:
                code = {"timed_out": "approval_timeout", "policy_changed": "policy_changed"}.get(
                    resolution.outcome, "approval_denied")
                msg = resolution.reason or ("no answer in time" if code == "approval_timeout" else "denied")
                return self._deny(h, call, code, msg, decision.rule, None, t0, approver=approver)
            # the policy may have changed while the call waited
            decision = evaluate(call, h.policy, h.counters, time.monotonic(), risk=h.risk(name),
                                tool_changed=name in h.changed_tools)
            if decision.action == "deny":
                self._decided(h, call, decision, risk)
                return self._deny(h, call, decision.code, decision.message, decision.rule, decision.retry_after_s,
                                  t0, approver=approver)
            limits = decision.limits
            outcome = "approved"
        if limits:
            refused = h.counters.try_consume(limits, call, time.monotonic())
            if refused is not None:
                lim = refused.limit
                rule = getattr(lim, "path", None)
                msg = (f"counter '{getattr(lim, 'counter', '?')}' allows {refused.max} calls per "
                       f"{getattr(lim, 'window', str(getattr(lim, 'window_s', '')) + 's')} "
                       f"(scope {getattr(lim, 'scope', '?')})")
                return self._deny(h, call, "rate_limited", msg, rule, refused.retry_after_s, t0, approver=approver)
        try:
            result = await self._forward(h, sess, ctx)
        except MCPError as exc:
            code = exc.error.code
            if code == CONNECTION_CLOSED or isinstance(exc, UpstreamUnavailable):
                return self._deny(h, call, "upstream_error",
                                  f"upstream '{h.name}' went away while the call was in flight "
                                  f"({exc.error.message})", None, None, t0, approver=approver)
            if code == REQUEST_TIMEOUT:
                return self._deny(h, call, "upstream_timeout",
                                  f"no answer within {h.call_timeout_s:g}s (call_timeout)", None, None, t0,
                                  approver=approver)
            self._completed(h, call, "upstream_error", True, t0, None, approver,
                            error=f"JSON-RPC error {code}: {exc.error.message}")
            raise
        self._completed(h, call, outcome, bool(result.get("isError")), t0, result, approver)
        return result

    def _decided(self, h: ServerHandle, call: Call, decision: Any, risk: Any) -> None:
        if not _listened(self.bus):
            return
        level = getattr(risk, "level", None)
        self.bus.publish(CallDecided(call_id=call.call_id, server=h.name, tool=call.tool, action=decision.action,
                                     code=decision.code, rule=decision.rule, message=decision.message,
                                     retry_after_s=decision.retry_after_s, risk=level))

    def _deny(self, h: ServerHandle, call: Call, code: str, message: str, rule: str | None,
              retry_after_s: float | None, t0: float, approver: str | None = None) -> dict[str, Any]:
        if code == "hidden":
            result = unknown_tool(call.tool)
        else:
            result = denial(code, message, rule=rule, retry_after_s=retry_after_s, server=h.name, tool=call.tool)
        self._completed(h, call, code, True, t0, result, approver)
        return result

    def _completed(self, h: ServerHandle, call: Call, outcome: str, is_error: bool, t0: float,
                   result: dict[str, Any] | None, approver: str | None, error: str | None = None) -> None:
        if not _listened(self.bus):
            return  # no console, no audit, no subscriber: nothing to build or measure
        duration_ms = (time.perf_counter() - t0) * 1000.0
        size = 0
        if result is not None:
            try:
                size = len(json.dumps(result, separators=(",", ":"), ensure_ascii=False, default=str))
            except (TypeError, ValueError):
                size = 0
        self.bus.publish(CallCompleted(call_id=call.call_id, server=h.name, tool=call.tool, outcome=outcome,
                                       is_error=is_error, duration_ms=duration_ms, result_size=size, result=result,
                                       error=error))


# ---------------------------------------------------------------------------
# the SDK server middleware: every inbound message of one endpoint


class _Proxy:
    """Context-tier middleware of the SDK `Server`: answers every request by forwarding it upstream."""

    def __init__(self, gw: Gateway, h: ServerHandle) -> None:
        self.gw = gw
        self.h = h

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> Any:
        method = ctx.method
        conn = getattr(ctx.session, "_connection", None)
        state = getattr(conn, "state", None)
        sess: DownstreamSession | None = state.get("mcpguard.session") if state is not None else None
        if ctx.request_id is None:  # a notification
            if method in ("notifications/initialized", "notifications/cancelled") or sess is None:
                return await call_next(ctx)
            await sess.upstream.notify(method, ctx.params)
            return None
        if method == "initialize":
            if sess is not None:
                return await call_next(ctx)  # a second initialize: the SDK answers as it does
            sess = await self.gw._open_session(self.h, ctx)
            try:
                result = await call_next(ctx)
            except BaseException:
                self.gw._spawn_close(sess.upstream)
                raise
            up = sess.upstream.init_result or {}
            result = dict(result) if isinstance(result, Mapping) else result
            if isinstance(result, dict):
                if isinstance(up.get("capabilities"), dict):
                    result["capabilities"] = up["capabilities"]
                if isinstance(up.get("serverInfo"), dict):
                    result["serverInfo"] = up["serverInfo"]
                if up.get("instructions") is not None:
                    result["instructions"] = up["instructions"]
                else:
                    result.pop("instructions", None)
            return result
        if sess is None:
            return await call_next(ctx)
        if method == "tools/call":
            return await self.gw._call_tool(self.h, sess, ctx, call_next)
        if method == "tools/list":
            return await self.gw._list_tools(self.h, sess, ctx)
        return await self.gw._forward(self.h, sess, ctx)


# ---------------------------------------------------------------------------
# the ASGI front: routing, grants, session ownership


def _is_loopback(scope: Mapping[str, Any]) -> bool:
    client = scope.get("client")
    if not client:
        return False
    return _loopback_host(client[0])


@functools.lru_cache(maxsize=256)
def _loopback_host(host: str) -> bool:
    """Whether `host` (an address string from the ASGI scope) is loopback; cached, as it is asked per request."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _respond(send: Any, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None,
                   code: int = -32600) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": hdrs + (headers or [])})
    await send({"type": "http.response.body", "body": body})


class _App:
    """ASGI app: `/mcp/<server>` -> that server's session manager, after grant checks.

    Grants (issue 3 item 6): with grants configured, `Authorization: Bearer
    <token>` must match one (`GrantConfig.matches`, constant time), else 401;
    with none, only loopback clients are served, as the grant `local`. A
    session stays bound to the grant that opened it (another grant gets 404,
    as if the session did not exist). Tokens are never logged.
    """

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path: str = scope.get("path", "")
        parts = path.strip("/").split("/")
        if len(parts) != 2 or parts[0] != "mcp" or parts[1] not in self.gw.servers:
            names = ", ".join(f"/mcp/{n}" for n in self.gw.servers)
            await _respond(send, 404, f"no MCP endpoint at {path}; endpoints: {names}")
            return
        h = self.gw.servers[parts[1]]
        grant = self._grant(scope)
        if grant is None:
            if self.gw.grants:
                await _respond(send, 401, "missing or unknown bearer token",
                               [(b"www-authenticate", b'Bearer realm="mcpguard"')])
            else:
                await _respond(send, 403, "mcpguard serves only loopback clients when no grants are configured")
            return
        sid = None
        for k, v in scope.get("headers", []):
            if k == b"mcp-session-id":
                sid = v.decode("latin-1")
                break
        if sid is not None:
            sess = h.sessions.get(sid)
            if sess is not None and sess.grant != grant:
                await _respond(send, 404, "Session not found")
                return
        scope["mcpguard.grant"] = grant
        assert h.manager is not None
        await h.manager.handle_request(scope, receive, send)

    def _grant(self, scope: Mapping[str, Any]) -> str | None:
        grants = self.gw.grants
        if not grants:
            return LOCAL_GRANT if _is_loopback(scope) else None
        auth = None
        for k, v in scope.get("headers", []):
            if k == b"authorization":
                auth = v.decode("latin-1")
                break
        if not auth or not auth[:7].lower() == "bearer ":
            return None
        token = auth[7:].strip()
        found = None
        for name, g in grants.items():
            try:
                ok = g.matches(token)
            except Exception:
                ok = False
            if ok and found is None:
                found = _get(g, "name", default=name)
        return found
