"""The control interface: the one way a front end sees and drives a gateway.

A front end (the console, embedded or attached to `mcpguard serve`; a test;
a script) uses a `Control` and nothing else of the gateway:

- `snapshot()` -> `Snapshot`: the gateway, its servers (state, upstream era,
  tools with risk and policy state, the running policy's text, version and
  errors, counters), pending approvals, agent sessions and the tools
  approved for a session;
- `subscribe()` -> `EventStream`: the gateway's events (`mcpguard.events`), in
  order, bounded (a front end that falls behind gets `EventsDropped`);
- commands, each answering with a `CommandResult` or raising `ControlError`
  with a stable `code`: `approve` (optionally for the session, optionally
  with edited arguments, optionally bound to the digest the person saw),
  `deny` (with a reason), `policy_text`, `save_policy`, `tune` (a limit's
  max, a tool's action, hidden), `undo`, `accept_tool_change`, `revoke` (an
  "approved for this session"), `end_session`.

`LocalControl` serves a `Gateway` in the same process;
`mcpguard.control_http` serves the same interface over HTTP for
`mcpguard console --attach` (`RemoteControl`). The first answer to an
approval wins; a later one gets `ControlError("answered", ...)` naming who
answered first. Every answer carries `by`, which the audit log records.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mcpguard import events as ev

# -- what a front end sees -------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class RiskState(_Model):
    """A tool's risk: `level` low|medium|high|critical, `kind` read|write|destructive|execute,
    `source` policy|annotations|name|default."""

    level: str
    kind: str = ""
    source: str = ""


class ToolState(_Model):
    """One upstream tool: its `risk`, its `state` under the policy (allowed | limited | approval |
    denied | hidden), whether its definition `changed` since first sight, its `input_schema`."""

    name: str
    description: str | None = None
    risk: RiskState
    state: str
    changed: bool = False
    input_schema: dict[str, Any] | None = None


class PolicyState(_Model):
    """The running policy of a server: `text` as applied (None: none runs), `format` toml|json,
    `version` (a digest of the text), `path`, and `errors` of the last file that failed to load."""

    path: str | None = None
    format: str = "toml"
    text: str | None = None
    version: str | None = None
    errors: list[str] = Field(default_factory=list)


class CounterState(_Model):
    """One rate-limit counter: `count` admissions in the window of `window_s` seconds, of `max`;
    `retry_after_s` seconds until a slot frees (0 when not full); `shadow` for a shadow limit's."""

    counter: str
    scope: str
    scope_key: str
    count: int
    max: int
    window_s: float
    retry_after_s: float
    shadow: bool = False


class ServerState(_Model):
    """One `[servers.NAME]`: its agents' `url`, the shared upstream connection's `state` and `detail`,
    the upstream's `era` (legacy | modern) and `protocol_version`, `upstream_sessions`, `max_sessions`,
    `processes` (upstream connections open), `tools`, `policy`, `counters`."""

    name: str
    url: str
    state: str
    detail: str = ""
    era: str = ""
    protocol_version: str | None = None
    upstream_sessions: str = "per_session"
    max_sessions: int = 0
    processes: int = 0
    tools: list[ToolState] = Field(default_factory=list)
    policy: PolicyState = Field(default_factory=PolicyState)
    counters: list[CounterState] = Field(default_factory=list)


class PendingState(_Model):
    """A call waiting for a person: the exact call (`server`, `tool`, `arguments`), who made it, its
    risk, the rule and reason that asked, its `digest`; `created_at` and `deadline` epoch seconds."""

    approval_id: str
    call_id: str
    server: str
    tool: str
    arguments: dict[str, Any]
    grant: str
    session_id: str | None = None
    client: str | None = None
    risk: str | None = None
    reason: str | None = None
    rule: str | None = None
    digest: str = ""
    created_at: float
    deadline: float


class SessionState(_Model):
    """A handshake-era agent session: `client` (`clientInfo.name`), `grant`, `protocol_version`,
    `opened_at` (epoch s), `calls` and `refused` (counts), `upstream` own | shared."""

    server: str
    session_id: str
    client: str | None = None
    grant: str
    protocol_version: str = ""
    opened_at: float
    calls: int = 0
    refused: int = 0
    upstream: str = "shared"


class SessionApprovalState(_Model):
    """A tool approved for the rest of one session, by whom, until `expires_at` (epoch s)."""

    server: str
    session_id: str
    tool: str
    by: str
    granted_at: float
    expires_at: float


class GatewayState(_Model):
    """The gateway itself: `base_url`, `interactive` (a console answers approvals), `headless_approvals`,
    `can_undo` (a policy edit can be undone), `pid`, `audit_log` (its path, or None: none kept)."""

    base_url: str
    interactive: bool = True
    headless_approvals: str = "deny"
    can_undo: bool = False
    pid: int = 0
    audit_log: str | None = None


class Snapshot(_Model):
    """Everything a front end shows, at `taken_at` (epoch seconds)."""

    gateway: GatewayState
    servers: list[ServerState] = Field(default_factory=list)
    pending: list[PendingState] = Field(default_factory=list)
    sessions: list[SessionState] = Field(default_factory=list)
    session_approvals: list[SessionApprovalState] = Field(default_factory=list)
    taken_at: float

    def server(self, name: str) -> ServerState | None:
        """The server called `name`, or None."""
        return next((s for s in self.servers if s.name == name), None)


class PolicyText(_Model):
    """A server's policy file as it is on disk (`text`; None when unreadable, `error` says why) and the
    text that runs (`applied`)."""

    server: str
    path: str | None = None
    format: str = "toml"
    text: str | None = None
    applied: str | None = None
    error: str | None = None


class CommandResult(_Model):
    """A command's answer: what happened, in a sentence a person reads (`message`); for policy changes
    `applied`, the short `diff`, `errors` (file:line:col) and `unchanged`."""

    ok: bool = True
    message: str = ""
    applied: bool = False
    diff: str = ""
    errors: list[str] = Field(default_factory=list)
    unchanged: bool = False


ErrorCode = Literal["answered", "not_found", "changed", "invalid_arguments", "invalid_policy", "cannot_edit",
                    "unavailable", "bad_request", "unauthorized"]


class ControlError(Exception):
    """A command that was refused: `code` (see `ErrorCode`) and a `message` a person can act on."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- events ----------------------------------------------------------------------------


class EventStream:
    """A front end's view of the gateway's events, oldest first.

    `get()` waits for the next one, `get_nowait()` returns None when there
    is none; an `EventsDropped` comes first when some were lost. `close()`
    ends delivery.
    """

    async def get(self) -> ev.Event:  # pragma: no cover - interface
        raise NotImplementedError

    def get_nowait(self) -> ev.Event | None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class _BusStream(EventStream):
    def __init__(self, sub: ev.Subscription) -> None:
        self._sub = sub

    async def get(self) -> ev.Event:
        return await self._sub.get()

    def get_nowait(self) -> ev.Event | None:
        return self._sub.get_nowait()

    def close(self) -> None:
        self._sub.close()


# -- the interface ---------------------------------------------------------------------


class Control:
    """What a front end may ask of a gateway (see the module docstring). Subclasses implement it."""

    async def snapshot(self) -> Snapshot:  # pragma: no cover - interface
        raise NotImplementedError

    def subscribe(self) -> EventStream:  # pragma: no cover - interface
        raise NotImplementedError

    async def approve(self, approval_id: str, *, by: str, for_session: bool = False, digest: str | None = None,
                      arguments: dict[str, Any] | None = None) -> CommandResult:  # pragma: no cover
        raise NotImplementedError

    async def deny(self, approval_id: str, *, by: str, reason: str | None = None,
                   digest: str | None = None) -> CommandResult:  # pragma: no cover
        raise NotImplementedError

    async def policy_text(self, server: str) -> PolicyText:  # pragma: no cover
        raise NotImplementedError

    async def save_policy(self, server: str, text: str, *, by: str) -> CommandResult:  # pragma: no cover
        raise NotImplementedError

    async def tune(self, server: str, *, by: str, tool: str | None = None, counter: str | None = None,
                   max_delta: int | None = None, action: str | None = None,
                   hidden: bool | None = None) -> CommandResult:  # pragma: no cover
        raise NotImplementedError

    async def undo(self, *, by: str) -> CommandResult:  # pragma: no cover
        raise NotImplementedError

    async def accept_tool_change(self, server: str, tool: str, *, by: str) -> CommandResult:  # pragma: no cover
        raise NotImplementedError

    async def revoke(self, server: str, session_id: str, tool: str, *, by: str) -> CommandResult:  # pragma: no cover
        raise NotImplementedError

    async def end_session(self, server: str, session_id: str, *, by: str) -> CommandResult:  # pragma: no cover
        raise NotImplementedError

    async def close(self) -> None:
        """Let go of the gateway (a remote control closes its connection)."""


#: a tool's state in a policy, from `Policy.action_for` (plus `limited` for an allowed tool with a limit)
_STATES = {"allow": "allowed", "deny": "denied", "require_approval": "approval", "hidden": "hidden"}


def tool_state(policy: Any, tool: str) -> str:
    """A tool's state under `policy` (a `mcpguard.policy.Policy` or None): allowed, limited, approval,
    denied or hidden. No policy at all denies every call."""
    if policy is None:
        return "denied"
    state = _STATES.get(policy.action_for(tool), "allowed")
    rule = policy.tools.get(tool)
    if state == "allowed" and rule is not None and rule.limits:
        return "limited"
    return state


def schema_errors(schema: Mapping[str, Any] | None, arguments: Any) -> list[str]:
    """Why `arguments` do not fit a tool's `inputSchema` (JSON Schema, draft as the schema says), or [].

    Each error names where (`stage: 'Archive' is not one of ...`). A schema
    that is not valid JSON Schema is reported as such; None means no schema.
    """
    if schema is None:
        return [] if isinstance(arguments, dict) else ["the arguments must be a JSON object"]
    import jsonschema

    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        validator = cls(schema)
    except jsonschema.SchemaError as exc:
        return [f"the tool's input schema is not valid JSON Schema: {exc.message}"]
    out = []
    for err in sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in err.absolute_path)
        out.append(f"{where}: {err.message}" if where else err.message)
    return out


class LocalControl(Control):
    """The control interface of a `mcpguard.gateway.Gateway` in this process (same event loop)."""

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway

    # -- seeing ---------------------------------------------------------------------
    def subscribe(self, maxsize: int = 10_000) -> EventStream:
        return _BusStream(self.gateway.bus.subscribe(maxsize))

    async def snapshot(self) -> Snapshot:
        return self.snapshot_now()

    def snapshot_now(self) -> Snapshot:
        """`snapshot()`, without awaiting (the same loop as the gateway)."""
        import os

        gw = self.gateway
        now_mono, now = time.monotonic(), time.time()
        servers = []
        for name, h in gw.servers.items():
            pool = gw.pools[name]
            policy = h.policy
            tools = []
            for t in h.tools:
                tname = t.get("name")
                r = h.risk(tname)
                tools.append(ToolState(name=tname, description=t.get("description"),
                                       risk=RiskState(level=r.level, kind=r.kind, source=r.source),
                                       state=tool_state(policy, tname), changed=tname in h.changed_tools,
                                       input_schema=t.get("inputSchema") if isinstance(t.get("inputSchema"), dict)
                                       else None))
            source = getattr(policy, "source", None)
            counters = [CounterState(counter=v.counter, scope=v.scope, scope_key=v.scope_key, count=v.count,
                                     max=v.max, window_s=v.window_s, retry_after_s=v.retry_after_s,
                                     shadow=table.shadow)
                        for table in (h.counters, h.shadow_counters)
                        for v in table.snapshot(now_mono) if v.count > 0]
            servers.append(ServerState(
                name=name, url=gw.url(name), state=h.state, detail=h.detail, era=pool.shared.era,
                protocol_version=pool.shared.protocol_version, upstream_sessions=h.config.upstream_sessions,
                max_sessions=h.config.max_sessions, processes=pool.processes(), tools=tools,
                policy=PolicyState(path=str(h.policy_path) if h.policy_path else None,
                                   format=getattr(source, "fmt", "toml") or "toml",
                                   text=getattr(source, "text", None), version=h.policy_version,
                                   errors=list(h.policy_errors)),
                counters=counters))
        pending = [PendingState(approval_id=p.id, call_id=p.call.call_id, server=p.call.server, tool=p.call.tool,
                                arguments=p.call.arguments, grant=p.call.grant, session_id=p.call.session_id,
                                client=p.call.client, risk=p.risk, reason=p.reason, rule=p.rule, digest=p.digest,
                                created_at=p.created_at, deadline=p.deadline)
                   for p in gw.approvals.pending()]
        sessions = [SessionState(server=name, session_id=s.session_id, client=s.client, grant=s.grant,
                                 protocol_version=s.protocol_version, opened_at=s.opened_at, calls=s.calls,
                                 refused=s.refused, upstream="own" if s.upstream is not None else "shared")
                    for name in gw.servers for s in gw.sessions(name)]
        grants = [SessionApprovalState(server=g.server, session_id=g.session_id, tool=g.tool, by=g.by,
                                       granted_at=g.granted_at, expires_at=g.expires_at)
                  for g in gw.approvals.session_approvals()]
        state = GatewayState(base_url=gw.base_url, interactive=gw.interactive,
                             headless_approvals=gw.headless_approvals, can_undo=gw.files.can_undo(),
                             pid=os.getpid(),
                             audit_log=str(gw.config.gateway.audit_log) if gw.config.gateway.audit_log else None)
        return Snapshot(gateway=state, servers=servers, pending=pending, sessions=sessions,
                        session_approvals=grants, taken_at=now)

    # -- approvals ------------------------------------------------------------------
    def _pending(self, approval_id: str, digest: str | None) -> Any:
        approvals = self.gateway.approvals
        pa = approvals.get(approval_id)
        if pa is None:
            first = approvals.answered(approval_id)
            if first is not None:
                raise ControlError("answered", f"already answered by {first.by or 'someone'}: {first.outcome}")
            raise ControlError("not_found", f"no pending approval {approval_id}")
        if digest is not None and digest != pa.digest:
            raise ControlError("changed", "this is not the call you saw (its digest differs); look again")
        return pa

    async def approve(self, approval_id: str, *, by: str, for_session: bool = False, digest: str | None = None,
                      arguments: dict[str, Any] | None = None) -> CommandResult:
        pa = self._pending(approval_id, digest)
        note = ""
        if arguments is not None:
            h = self.gateway.servers[pa.call.server]
            errors = schema_errors(h.input_schema(pa.call.tool), arguments)
            if errors:
                raise ControlError("invalid_arguments", "; ".join(errors[:5]))
            if arguments == pa.call.arguments:
                arguments = None
        if for_session and pa.call.session_id is None:
            for_session = False
            note = " (this agent has no MCP session, so only this call)"
        if not self.gateway.approvals.approve(approval_id, by=by, for_session=for_session, arguments=arguments):
            self._pending(approval_id, None)  # raises: someone answered in between
        what = "approved with edited arguments" if arguments is not None else "approved"
        if for_session:
            what += f" for this session ({pa.call.tool}, {_ttl(self.gateway.approvals.session_ttl_s)})"
        return CommandResult(message=f"{pa.call.tool}: {what}{note}")

    async def deny(self, approval_id: str, *, by: str, reason: str | None = None,
                   digest: str | None = None) -> CommandResult:
        pa = self._pending(approval_id, digest)
        if not self.gateway.approvals.deny(approval_id, by=by, reason=reason or None):
            self._pending(approval_id, None)
        return CommandResult(message=f"{pa.call.tool}: denied" + (f" ({reason})" if reason else ""))

    async def revoke(self, server: str, session_id: str, tool: str, *, by: str) -> CommandResult:
        if not self.gateway.approvals.revoke(session_id, server, tool, by=by):
            raise ControlError("not_found", f"{tool} is not approved for session {session_id[:8]}")
        return CommandResult(message=f"{tool}: no longer approved for session {session_id[:8]}")

    async def end_session(self, server: str, session_id: str, *, by: str) -> CommandResult:
        pool = self._pool(server)
        if not pool.end_session(session_id, why=f"ended by {by}"):
            raise ControlError("not_found", f"no session {session_id[:8]} on {server}")
        for pa in self.gateway.approvals.pending():
            if pa.call.session_id == session_id:
                self.gateway.approvals.deny(pa.id, by=by, reason="a person ended the agent's session")
        return CommandResult(message=f"session {session_id[:8]} on {server} ended")

    def _pool(self, server: str) -> Any:
        pool = self.gateway.pools.get(server)
        if pool is None:
            raise ControlError("not_found", f"no server {server!r}")
        return pool

    # -- the policy -----------------------------------------------------------------
    async def policy_text(self, server: str) -> PolicyText:
        self._pool(server)
        files = self.gateway.files
        path = files.path(server)
        try:
            text: str | None = files.text(server)
            error = None
        except Exception as exc:  # unreadable: say so, keep the running text
            text, error = None, str(exc)
        fmt = "json" if path is not None and str(path).lower().endswith(".json") else "toml"
        return PolicyText(server=server, path=str(path) if path else None, format=fmt, text=text,
                          applied=files.applied_text(server), error=error)

    async def save_policy(self, server: str, text: str, *, by: str) -> CommandResult:
        from mcpguard.policy.edit import EditError

        self._pool(server)
        try:
            result = self.gateway.files.save_text(server, text, by=by)
        except (EditError, OSError) as exc:
            raise ControlError("cannot_edit", f"not saved: {exc}") from None
        if result.errors:
            raise ControlError("invalid_policy", "; ".join(result.errors[:3]))
        return _edit_result(result, "saved and applied")

    async def tune(self, server: str, *, by: str, tool: str | None = None, counter: str | None = None,
                   max_delta: int | None = None, action: str | None = None,
                   hidden: bool | None = None) -> CommandResult:
        from functools import partial

        from mcpguard.policy.edit import EditError, next_action, set_action, set_hidden, set_max

        h = self.gateway.servers.get(server)
        if h is None:
            raise ControlError("not_found", f"no server {server!r}")
        policy = h.policy
        if max_delta is not None:
            if counter is None and tool is not None and policy is not None:
                rule = policy.tools.get(tool)
                shared = policy.limits_for(tool)
                if (rule is None or not rule.limits) and shared:
                    counter, tool = shared[0].counter, None  # the tool counts against all_tools.limits
            label = f"{counter or tool} max {max_delta:+d}"
            fn = partial(set_max, counter=counter, delta=max_delta) if counter else partial(set_max, tool=tool,
                                                                                          delta=max_delta)
        elif action is not None and tool is not None:
            rule = policy.tools.get(tool) if policy is not None else None
            current = (rule.action or "allow") if rule is not None else (policy.default if policy else "deny")
            new = next_action(current) if action == "cycle" else action
            label = f"{tool}: {current} → {new}"
            fn = lambda text, fmt: set_action(text, fmt, tool, new)  # noqa: E731
        elif tool is not None:
            hide = hidden if hidden is not None else not (policy is not None and policy.is_hidden(tool))
            label = f"{tool}: {'hidden' if hide else 'shown'}"
            fn = lambda text, fmt: set_hidden(text, fmt, tool, hide)  # noqa: E731
        else:
            raise ControlError("bad_request", "tune needs a tool or a counter, and what to change")
        try:
            result = self.gateway.files.edit(server, fn, by=by, label=label)
        except (EditError, OSError) as exc:
            raise ControlError("cannot_edit", f"{label}: not changed: {exc}") from None
        if result.unchanged:
            return CommandResult(message=f"{label}: the policy already says so", unchanged=True)
        return _edit_result(result, label)

    async def undo(self, *, by: str) -> CommandResult:
        files = self.gateway.files
        if not files.can_undo():
            raise ControlError("not_found", "nothing to undo")
        try:
            result = files.undo(by=by)
        except OSError as exc:
            raise ControlError("cannot_edit", f"undo failed: {exc}") from None
        if result is None:
            raise ControlError("not_found", "nothing to undo")
        return _edit_result(result, "undone")

    async def accept_tool_change(self, server: str, tool: str, *, by: str) -> CommandResult:
        h = self.gateway.servers.get(server)
        if h is None or tool not in h.changed_tools:
            raise ControlError("not_found", f"{tool} on {server} has no changed definition to accept")
        self.gateway.accept_tool_change(server, tool)
        return CommandResult(message=f"{tool}: its new definition is accepted")


def _edit_result(result: Any, label: str) -> CommandResult:
    return CommandResult(message=label, applied=bool(result.applied), diff=result.diff or "",
                         errors=list(result.errors), unchanged=bool(result.unchanged))


def _ttl(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)} h"
    if seconds >= 60:
        return f"{int(round(seconds / 60))} min"
    return f"{seconds:g} s"


async def drain(stream: EventStream, limit: int = 20_000) -> list[ev.Event]:
    """Up to `limit` events waiting in `stream` now, without waiting (a front end's batch)."""
    out = []
    while len(out) < limit:
        e = stream.get_nowait()
        if e is None:
            break
        out.append(e)
    await asyncio.sleep(0)
    return out
