"""The gateway: every server's endpoint, upstream connections and call pipeline, on one HTTP server.

For each `[servers.NAME]` of the `Config`:
- a `ServerHandle` (policy, counters, tools, state),
- an `UpstreamPool` (its upstream connections, era negotiated; agent sessions),
- a `CallPipeline` (the one place its `tools/call`s are decided),
- an `Endpoint` (the SDK `Server` and session manager at `/mcp/NAME`, both
  MCP eras at one URL),
all served by one `HttpServer` on 127.0.0.1 (by default) behind grants or
the loopback check. Everything runs in the caller's asyncio loop.
See `docs/internals.md` for the pairings of agent and upstream eras.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from mcp.server.transport_security import TransportSecuritySettings

from mcpguard.approvals import Approvals
from mcpguard.config import Config
from mcpguard.events import EventBus, PolicyRejected, UpstreamState
from mcpguard.gateway.auth import LoopbackOnly, with_grants
from mcpguard.gateway.http import ControlFront
from mcpguard.gateway.endpoint import Endpoint
from mcpguard.gateway.http import GatewayApp, HttpServer
from mcpguard.gateway.pipeline import CallPipeline
from mcpguard.gateway.server import ServerHandle
from mcpguard.gateway.sessions import AgentSession, UpstreamPool

log = logging.getLogger(__name__)

_LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
_LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]


class Gateway:
    """The embedded MCP proxy.

    `Gateway(config, bus=None, interactive=True)`: `config` is a
    `mcpguard.config.Config` (from `load_config` or `Config.from_dict`).
    `interactive=False` (headless `serve`): while no console is attached
    (`attached`, counted on the control endpoint's event streams), a call
    that needs approval is denied at once or waits for its deadline, per
    `[gateway] headless_approvals` (`"deny"` default, or `"wait"`: a person
    can attach and answer within the timeout).

    The control endpoint (`/control`, `mcpguard.control_http`) serves
    `control` (a `LocalControl`) to attached consoles, guarded by
    `control_token` (from `[gateway] control_token_env`, else new at each
    start), and `start()` writes its URL and token to `[gateway]
    control_file` (0600).

    `await start()` loads policies, starts every server's shared upstream
    connection, binds the HTTP server (port 0 picks a free port) and writes
    `gateway.url_file`; `await stop()` denies pending approvals, closes
    sessions and stops upstream processes. Neither raises for a failing
    upstream: its `ServerHandle.state` says `restarting`/`down`. `start()`
    raises `OSError` when the listen address cannot be bound, and
    `mcpguard.telemetry.TelemetryUnavailable` when `[telemetry]` is on but
    the OpenTelemetry SDK is not installed. With telemetry on
    (`config.telemetry.enabled`), `telemetry` is the running
    `mcpguard.telemetry.Telemetry` (spans, metrics; flushed by `stop()`).

    `servers[name]` is the `ServerHandle`; `pools[name]` its `UpstreamPool`;
    `pipelines[name]` its `CallPipeline`; `files` the `PolicyFiles` every
    policy change goes through (with `watch_policies`, the default, the
    files are followed while it runs: an edit on disk is applied or rejected
    within a second).
    """

    def __init__(self, config: Config, bus: EventBus | None = None, interactive: bool = True, *,
                 watch_policies: bool = True) -> None:
        self.config = config
        self.bus = bus or EventBus()
        self.approvals = Approvals(self.bus, session_ttl_s=config.gateway.approve_for_session_ttl_s)
        self.interactive = interactive
        gw = config.gateway
        self.host = gw.host
        self.port = gw.port
        self.headless_approvals = gw.headless_approvals
        self.grants = dict(config.grants)
        self.audit: Any = None
        self.telemetry: Any = None  # a mcpguard.telemetry.Telemetry while running, when [telemetry] is on
        self.servers: dict[str, ServerHandle] = {}
        self.pools: dict[str, UpstreamPool] = {}
        self.pipelines: dict[str, CallPipeline] = {}
        self.endpoints: dict[str, Endpoint] = {}
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=[*_LOOPBACK_HOSTS, *([f"{self.host}:*"] if not gw.loopback else [])],
            allowed_origins=[*_LOOPBACK_ORIGINS, *gw.allowed_origins],
        )
        self.attached = 0
        for name, sc in config.servers.items():
            h = ServerHandle(sc, self.bus)
            pool = UpstreamPool(h, on_session_closed=self._session_closed)
            pipeline = CallPipeline(h, self.approvals, self.bus, interactive=self._someone_answers,
                                    headless_approvals=gw.headless_approvals)
            self.servers[name], self.pools[name], self.pipelines[name] = h, pool, pipeline
            self.endpoints[name] = Endpoint(h, pool, pipeline, self.bus, security,
                                            telemetry=config.telemetry.enabled)
        import secrets

        from mcpguard.control import LocalControl
        from mcpguard.control_http import control_app

        self.control = LocalControl(self)
        self.control_token = gw.control_token or secrets.token_urlsafe(32)
        app: Any = GatewayApp(self.endpoints)
        app = with_grants(app, self.grants) if self.grants else LoopbackOnly(app)
        app = ControlFront(app, control_app(self.control, self.control_token, on_attach=self._attach))
        self._http = HttpServer(app, self.host, self.port, read_timeout_s=gw.request_read_timeout_s)
        from mcpguard.reload import PolicyFiles

        self.files = PolicyFiles(self)
        self._watch_policies = watch_policies
        self._watch_stop = asyncio.Event()
        self._watch_task: asyncio.Task[None] | None = None
        self._manager_tasks: list[asyncio.Task[None]] = []
        self._manager_stop = asyncio.Event()
        self._started = False
        self._bound_port: int | None = None
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

        Counters are kept (keyed by counter name and scope key). Pending
        approvals follow the new policy at once (`CallPipeline.follow_policy`);
        approved calls are evaluated again before they are forwarded.
        """
        self.servers[server].apply_policy(policy)
        self.pipelines[server].follow_policy()

    def reject_policy(self, server: str, errors: list[str]) -> None:
        """Record that a policy file failed to load: the last good policy keeps running."""
        self.servers[server].policy_errors = list(errors)

    def accept_tool_change(self, server: str, tool: str) -> None:
        """A person reviewed a changed tool: its current definition becomes the reference."""
        self.servers[server].accept_tool_change(tool)

    def sessions(self, server: str) -> list[AgentSession]:
        """The handshake-era agent sessions open on `server` now."""
        return list(self.pools[server].sessions.values())

    async def start(self) -> None:
        """Load policies, start upstream connections, bind the HTTP server, write `url_file`.

        Raises OSError when the listen address cannot be bound.
        """
        if self._started:
            return
        self._started = True
        if self.config.telemetry.enabled:
            from mcpguard.telemetry import Telemetry  # imported only when on: no cost when off

            self.telemetry = Telemetry(self.config.telemetry, self.bus)
            self.telemetry.start()  # TelemetryUnavailable when the SDK is not installed
        gw = self.config.gateway
        if gw.audit_log:
            from mcpguard.audit import AuditLog

            self.audit = AuditLog(gw.audit_log, fsync=gw.audit_fsync, redact_keys=gw.redact_keys, bus=self.bus,
                                  max_value_bytes=gw.audit_max_value_bytes)
            # decision and completion records are written by this listener inside
            # publish(), so each is on its way to disk before the agent's answer
            self._detach_audit = self.audit.attach(self.bus, policy_events=False)
        for h in self.servers.values():
            self._load_policy(h)
        for name, ep in self.endpoints.items():
            self._manager_tasks.append(asyncio.create_task(self._run_manager(ep), name=f"mcp manager {name}"))
        try:
            for h in self.servers.values():
                self.bus.publish(UpstreamState(server=h.name, state="starting"))
            await asyncio.gather(*(pool.start() for pool in self.pools.values()))
            await self._http.start()
        except BaseException:
            await self.stop()
            raise
        self._bound_port = self._http.port
        self.files.sync_applied()
        if self._watch_policies:
            self._watch_task = asyncio.create_task(self.files.watch(self._watch_stop), name="mcpguard policy watch")
        if gw.url_file:
            p = Path(gw.url_file)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(self.base_url + "\n", encoding="utf-8")
        if gw.control_file:
            from mcpguard.control_http import write_control_file

            write_control_file(gw.control_file, self.base_url, self.control_token)

    async def stop(self) -> None:
        """Deny pending approvals, close every session, stop upstream processes and the HTTP server;
        remove the control file when it is still this gateway's (it holds the token)."""
        self._remove_control_file()
        self._watch_stop.set()
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(BaseException):
                await self._watch_task
        self.approvals.deny_all()
        await self._http.stop()
        self._manager_stop.set()
        for t in self._manager_tasks:
            try:
                await asyncio.wait_for(asyncio.shield(t), 10)
            except (TimeoutError, Exception):
                t.cancel()
        await asyncio.gather(*(pool.close() for pool in self.pools.values()), return_exceptions=True)
        for h in self.servers.values():
            h.set_state("down", "stopped")
        if self.telemetry is not None:
            # exports what is buffered: blocking HTTP for up to the exporter's timeout, so off the loop
            await asyncio.to_thread(self.telemetry.shutdown)
            self.telemetry = None
        if self._detach_audit is not None:
            self._detach_audit()
            self._detach_audit = None
        if self.audit is not None:
            with contextlib.suppress(Exception):
                self.audit.close()

    # -- pieces ------------------------------------------------------------------
    def _remove_control_file(self) -> None:
        path = self.config.gateway.control_file
        if not path or not self._bound_port:
            return
        from mcpguard.control_http import read_control_file

        with contextlib.suppress(OSError, ValueError):
            if read_control_file(path)[1] == self.control_token:  # not another gateway's, started since
                Path(path).unlink()

    def _someone_answers(self) -> bool:
        return self.interactive or self.attached > 0

    def _attach(self, delta: int) -> None:
        self.attached = max(0, self.attached + delta)

    def _session_closed(self, sess: AgentSession) -> None:
        self.approvals.forget_session(sess.session_id)

    def _load_policy(self, h: ServerHandle) -> None:
        if h.policy_path is None:
            h.policy_errors = [f"{h.name}: no policy file configured; every call is denied"]
            return
        from mcpguard.policy import PolicyError, load_policy

        try:
            self.set_policy(h.name, load_policy(h.policy_path))
        except PolicyError as exc:  # also every state that leaves no text to read (missing, a folder, not UTF-8)
            h.policy_errors = [str(i) for i in exc.issues] or [str(exc)]
            self._rejected(h, h.policy_errors)

    def _rejected(self, h: ServerHandle, errors: list[str]) -> None:
        event = PolicyRejected(server=h.name, path=str(h.policy_path), errors=tuple(errors))
        self.bus.publish(event)
        if self.audit is not None:
            self.audit.record_event(event)

    async def _run_manager(self, ep: Endpoint) -> None:
        async with ep.manager.run():
            await self._manager_stop.wait()
