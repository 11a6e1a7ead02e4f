"""Pending approvals: the gateway awaits, anyone resolves, the deadline denies.

Interception is an await in the core, as mitmproxy's intercept is: the
gateway coroutine calls `Approvals.request(...)` and awaits a future with a
deadline; a console (local or attached), a test, or a policy change resolves
it through `approve`, `deny` or `resolve`. A request that no one answers is
denied at its deadline with outcome `timed_out`, never left forever;
`deny_all` at shutdown denies every pending one. The first answer wins: a
later one is refused, and `answered(id)` says who gave the first.

An approval binds to the exact call: its `digest` (`call_digest`: server,
tool, arguments and policy version) is shown and audited, and a person may
approve it with edited arguments (`approve(..., arguments=...)`), which the
gateway then decides again before forwarding.

"Approve for this session" is time-boxed: it lets that tool's calls in that
MCP session through, as approved by whoever granted it, until `expires_at`
(default `DEFAULT_SESSION_TTL_S`, `[gateway] approve_for_session_ttl`), or
until it is revoked (`revoke`) or the session ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mcpguard.call import Call
from mcpguard.events import ApprovalRequested, ApprovalResolved, EventBus, SessionApprovalChanged

DEFAULT_TIMEOUT_S = 120.0
DEFAULT_SESSION_TTL_S = 3600.0
_ANSWERED_KEPT = 1000


def call_digest(server: str, tool: str, arguments: dict[str, Any], policy_version: str | None) -> str:
    """sha256 (hex) of the exact call: server, tool, arguments (canonical JSON) and the policy version."""
    doc = {"server": server, "tool": tool, "arguments": arguments, "policy": policy_version}
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Resolution:
    """How a pending approval ended.

    `outcome`: `approved`, `denied`, `timed_out`, `policy_changed`,
    `cancelled`. `approved` says whether the call goes on (a `policy_changed`
    resolution may let it through). `by` names who answered (`console:alice`,
    `timeout`, `policy`, ...); `reason` is the person's reason for a denial,
    or why the clock or the policy decided. `for_session`: the person
    approved this tool for the rest of this MCP session. `arguments`: the
    arguments the person approved instead of the agent's (None: unchanged).
    """

    outcome: str
    approved: bool
    by: str | None = None
    reason: str | None = None
    for_session: bool = False
    arguments: dict[str, Any] | None = None


@dataclass(slots=True, eq=False)
class PendingApproval:
    """A call held for a person's answer. `created_at` and `deadline` are epoch seconds."""

    id: str
    call: Call
    risk: str | None
    reason: str | None
    created_at: float
    deadline: float
    future: asyncio.Future[Resolution] = field(repr=False)
    digest: str = ""
    rule: str | None = None
    policy_version: str | None = None

    def remaining_s(self, now: float | None = None) -> float:
        """Seconds until the deadline denies this call (never below 0)."""
        return max(0.0, self.deadline - (time.time() if now is None else now))


@dataclass(frozen=True, slots=True)
class SessionApproval:
    """A tool approved for the rest of one MCP session: by whom, when (epoch s), until when (epoch s)."""

    server: str
    session_id: str
    tool: str
    by: str
    granted_at: float
    expires_at: float

    def remaining_s(self, now: float | None = None) -> float:
        return max(0.0, self.expires_at - (time.time() if now is None else now))


class Approvals:
    """The queue of pending approvals, oldest first, and the tools approved for a session.

    `bus` gets an `ApprovalRequested` per request, an `ApprovalResolved` per
    resolution, and a `SessionApprovalChanged` when a session approval is
    granted, revoked or ends. `clock` returns epoch seconds (tests may pass
    their own); `session_ttl_s` bounds "approve for this session" (seconds).
    """

    def __init__(self, bus: EventBus | None = None, clock: Callable[[], float] = time.time, *,
                 session_ttl_s: float = DEFAULT_SESSION_TTL_S) -> None:
        self._bus = bus or EventBus()
        self._clock = clock
        self.session_ttl_s = session_ttl_s
        self._pending: dict[str, PendingApproval] = {}
        self._ids = itertools.count(1)
        self._session: dict[tuple[str, str, str], SessionApproval] = {}  # (session, server, tool)
        self._answered: OrderedDict[str, Resolution] = OrderedDict()

    # -- queries -----------------------------------------------------------
    def pending(self) -> list[PendingApproval]:
        """Pending approvals, oldest first."""
        return list(self._pending.values())

    def get(self, approval_id: str) -> PendingApproval | None:
        return self._pending.get(approval_id)

    def answered(self, approval_id: str) -> Resolution | None:
        """How a recently resolved approval ended (who answered first), or None."""
        return self._answered.get(approval_id)

    def session_approval(self, session_id: str | None, server: str, tool: str) -> SessionApproval | None:
        """The live "approved for this session" of `tool` on `server` in `session_id`, or None (expired: gone)."""
        if session_id is None:
            return None
        key = (session_id, server, tool)
        grant = self._session.get(key)
        if grant is not None and grant.expires_at <= self._clock():
            del self._session[key]
            self._publish_session(grant, granted=False, why="expired")
            return None
        return grant

    def session_allows(self, session_id: str | None, server: str, tool: str) -> bool:
        """True when a person approved `tool` on `server` for this session, and it has not expired."""
        return self.session_approval(session_id, server, tool) is not None

    def session_approver(self, session_id: str | None, server: str, tool: str) -> str | None:
        """Who approved `tool` on `server` for this session, or None when no one did (or it expired)."""
        grant = self.session_approval(session_id, server, tool)
        return grant.by if grant is not None else None

    def session_approvals(self) -> list[SessionApproval]:
        """Every live session approval (expired ones are dropped first)."""
        for key, grant in list(self._session.items()):
            self.session_approval(key[0], key[1], key[2])
        return list(self._session.values())

    def revoke(self, session_id: str, server: str, tool: str, by: str = "console") -> bool:
        """End an "approved for this session" now; False when there was none."""
        grant = self._session.pop((session_id, server, tool), None)
        if grant is None:
            return False
        self._publish_session(grant, granted=False, why=f"revoked by {by}")
        return True

    def forget_session(self, session_id: str) -> None:
        """Drop the session's "approved for this session" grants (the session ended)."""
        for key in [k for k in self._session if k[0] == session_id]:
            self._publish_session(self._session.pop(key), granted=False, why="the session ended")

    # -- the gateway's side --------------------------------------------------
    async def request(
        self,
        call: Call,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        risk: str | None = None,
        reason: str | None = None,
        digest: str = "",
        rule: str | None = None,
        policy_version: str | None = None,
        on_pending: Callable[[PendingApproval], Any] | None = None,
    ) -> Resolution:
        """Hold `call` until someone resolves it or `timeout_s` seconds pass.

        Returns the `Resolution`; at the deadline it is
        `Resolution("timed_out", approved=False, by="timeout")`. If the
        awaiting task is cancelled (the caller cancelled the request), the
        approval is withdrawn with outcome `cancelled` and CancelledError
        propagates. `digest` is the call's `call_digest` under
        `policy_version`, `rule` the rule that asked for approval (both shown
        and audited).
        """
        loop = asyncio.get_running_loop()
        now = self._clock()
        pa = PendingApproval(id=f"a{next(self._ids)}", call=call, risk=risk, reason=reason, created_at=now,
                             deadline=now + max(0.0, timeout_s), future=loop.create_future(), digest=digest,
                             rule=rule, policy_version=policy_version)
        self._pending[pa.id] = pa
        self._bus.publish(ApprovalRequested(
            approval_id=pa.id, call_id=call.call_id, server=call.server, tool=call.tool, arguments=call.arguments,
            grant=call.grant, session_id=call.session_id, client=call.client, risk=risk, reason=reason,
            deadline=pa.deadline, digest=digest, rule=rule))
        if on_pending is not None:
            on_pending(pa)
        try:
            return await asyncio.wait_for(asyncio.shield(pa.future), timeout=max(0.0, timeout_s))
        except TimeoutError:
            self.resolve(pa.id, Resolution("timed_out", approved=False, by="timeout",
                                           reason=f"no answer within {timeout_s:g}s"))
            return pa.future.result()
        except asyncio.CancelledError:
            self.resolve(pa.id, Resolution("cancelled", approved=False, by="caller"))
            raise

    # -- anyone's side ---------------------------------------------------------
    def resolve(self, approval_id: str, resolution: Resolution) -> bool:
        """Resolve a pending approval; False if it is no longer pending (someone answered first)."""
        pa = self._pending.pop(approval_id, None)
        if pa is None or pa.future.done():
            return False
        self._answered[approval_id] = resolution
        while len(self._answered) > _ANSWERED_KEPT:
            self._answered.popitem(last=False)
        grant = None
        if resolution.for_session and resolution.approved and pa.call.session_id:
            now = self._clock()
            grant = SessionApproval(pa.call.server, pa.call.session_id, pa.call.tool, resolution.by or "console",
                                    now, now + self.session_ttl_s)
            self._session[(grant.session_id, grant.server, grant.tool)] = grant
        pa.future.set_result(resolution)
        approved_digest = (call_digest(pa.call.server, pa.call.tool, resolution.arguments, pa.policy_version)
                           if resolution.arguments is not None else None)
        self._bus.publish(ApprovalResolved(
            approval_id=pa.id, call_id=pa.call.call_id, server=pa.call.server, tool=pa.call.tool,
            outcome=resolution.outcome, approved=resolution.approved, by=resolution.by, reason=resolution.reason,
            for_session=resolution.for_session, arguments=resolution.arguments, digest=pa.digest,
            approved_digest=approved_digest))
        if grant is not None:
            self._publish_session(grant, granted=True)
            # the same tool's other calls already waiting in that session go through too:
            # "approve for this session" covers them as it covers the next ones
            for other in [p for p in self._pending.values()
                          if (p.call.session_id, p.call.server, p.call.tool) == (grant.session_id, grant.server,
                                                                                   grant.tool)]:
                self.resolve(other.id, Resolution("approved", True, by=resolution.by,
                                                  reason="approved for this session"))
        return True

    def approve(self, approval_id: str, by: str = "console", *, for_session: bool = False,
                arguments: dict[str, Any] | None = None) -> bool:
        """Let the call through (with `arguments` instead of the agent's, when given); with
        `for_session`, also the calls of that tool in that session that are waiting now and
        those that come later, for `session_ttl_s`."""
        return self.resolve(approval_id, Resolution("approved", True, by=by, for_session=for_session,
                                                    arguments=arguments))

    def deny(self, approval_id: str, by: str = "console", reason: str | None = None) -> bool:
        """Answer the call with an `approval_denied` result; `reason` reaches the agent."""
        return self.resolve(approval_id, Resolution("denied", False, by=by, reason=reason))

    def deny_all(self, by: str = "shutdown", reason: str | None = "mcpguard is stopping") -> int:
        """Deny every pending approval (shutdown, quit); returns how many."""
        ids = list(self._pending)
        return sum(self.deny(i, by=by, reason=reason) for i in ids)

    def _publish_session(self, grant: SessionApproval, *, granted: bool, why: str = "") -> None:
        self._bus.publish(SessionApprovalChanged(server=grant.server, session_id=grant.session_id, tool=grant.tool,
                                                 by=grant.by, expires_at=grant.expires_at, granted=granted,
                                                 why=why))
