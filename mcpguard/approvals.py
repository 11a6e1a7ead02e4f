"""Pending approvals: the gateway awaits, anyone resolves, the deadline denies.

Interception is an await in the core, as mitmproxy's intercept is: the
gateway coroutine calls `Approvals.request(...)` and awaits a future with a
deadline; the console, a test, or a policy change resolves it through
`approve`, `deny` or `resolve`. A request that no one answers is denied at
its deadline with outcome `timed_out`, never left forever; `deny_all` at
shutdown denies every pending one.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mcpguard.call import Call
from mcpguard.events import ApprovalRequested, ApprovalResolved, EventBus

DEFAULT_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class Resolution:
    """How a pending approval ended.

    `outcome`: `approved`, `denied`, `timed_out`, `policy_changed`,
    `cancelled`. `approved` says whether the call goes on (a `policy_changed`
    resolution may let it through). `for_session`: the person approved this
    tool for the rest of this MCP session.
    """

    outcome: str
    approved: bool
    by: str | None = None
    reason: str | None = None
    for_session: bool = False


@dataclass(slots=True, eq=False)
class PendingApproval:
    """A call held for a person's answer. `deadline` is epoch seconds."""

    id: str
    call: Call
    risk: str | None
    reason: str | None
    created_at: float
    deadline: float
    future: asyncio.Future[Resolution] = field(repr=False)

    def remaining_s(self, now: float | None = None) -> float:
        """Seconds until the deadline denies this call (never below 0)."""
        return max(0.0, self.deadline - (time.time() if now is None else now))


class Approvals:
    """The queue of pending approvals, oldest first.

    `bus` gets an `ApprovalRequested` per request and an `ApprovalResolved`
    per resolution. `clock` returns epoch seconds (tests may pass their own).
    """

    def __init__(self, bus: EventBus | None = None, clock: Callable[[], float] = time.time) -> None:
        self._bus = bus or EventBus()
        self._clock = clock
        self._pending: dict[str, PendingApproval] = {}
        self._ids = itertools.count(1)
        # (session_id, server, tool) approved "for this session" -> who approved it
        self._session_grants: dict[tuple[str, str, str], str | None] = {}

    # -- queries -----------------------------------------------------------
    def pending(self) -> list[PendingApproval]:
        """Pending approvals, oldest first."""
        return list(self._pending.values())

    def get(self, approval_id: str) -> PendingApproval | None:
        return self._pending.get(approval_id)

    def session_allows(self, session_id: str | None, server: str, tool: str) -> bool:
        """True when a person approved `tool` on `server` for this session."""
        return session_id is not None and (session_id, server, tool) in self._session_grants

    def session_approver(self, session_id: str | None, server: str, tool: str) -> str | None:
        """Who approved `tool` on `server` for this session (`console`, ...), or None when no one did."""
        if session_id is None:
            return None
        return self._session_grants.get((session_id, server, tool))

    def forget_session(self, session_id: str) -> None:
        """Drop the session's "approved for this session" grants (session ended)."""
        self._session_grants = {g: by for g, by in self._session_grants.items() if g[0] != session_id}

    # -- the gateway's side --------------------------------------------------
    async def request(
        self,
        call: Call,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        risk: str | None = None,
        reason: str | None = None,
        on_pending: Callable[[PendingApproval], Any] | None = None,
    ) -> Resolution:
        """Hold `call` until someone resolves it or `timeout_s` seconds pass.

        Returns the `Resolution`; at the deadline it is
        `Resolution("timed_out", approved=False, by="timeout")`. If the
        awaiting task is cancelled (the caller cancelled the request), the
        approval is withdrawn with outcome `cancelled` and CancelledError
        propagates.
        """
        loop = asyncio.get_running_loop()
        now = self._clock()
        pa = PendingApproval(
            id=f"a{next(self._ids)}",
            call=call,
            risk=risk,
            reason=reason,
            created_at=now,
            deadline=now + max(0.0, timeout_s),
            future=loop.create_future(),
        )
        self._pending[pa.id] = pa
        self._bus.publish(
            ApprovalRequested(
                approval_id=pa.id,
                call_id=call.call_id,
                server=call.server,
                tool=call.tool,
                arguments=call.arguments,
                grant=call.grant,
                session_id=call.session_id,
                client=call.client,
                risk=risk,
                reason=reason,
                deadline=pa.deadline,
            )
        )
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
        """Resolve a pending approval; False if it is no longer pending."""
        pa = self._pending.pop(approval_id, None)
        if pa is None or pa.future.done():
            return False
        grant = None
        if resolution.for_session and resolution.approved and pa.call.session_id:
            grant = (pa.call.session_id, pa.call.server, pa.call.tool)
            self._session_grants[grant] = resolution.by or "console"
        pa.future.set_result(resolution)
        self._bus.publish(
            ApprovalResolved(
                approval_id=pa.id,
                call_id=pa.call.call_id,
                server=pa.call.server,
                tool=pa.call.tool,
                outcome=resolution.outcome,
                approved=resolution.approved,
                by=resolution.by,
                reason=resolution.reason,
                for_session=resolution.for_session,
            )
        )
        if grant is not None:
            # the same tool's other calls already waiting in that session go through too:
            # "approve for this session" covers them as it covers the next ones
            for other in [p for p in self._pending.values()
                          if (p.call.session_id, p.call.server, p.call.tool) == grant]:
                self.resolve(other.id, Resolution("approved", True, by=resolution.by,
                                                  reason="approved for this session"))
        return True

    def approve(self, approval_id: str, by: str = "console", *, for_session: bool = False) -> bool:
        """Let the call through; with `for_session`, also the calls of that tool in that
        session that are waiting now and those that come later."""
        return self.resolve(approval_id, Resolution("approved", True, by=by, for_session=for_session))

    def deny(self, approval_id: str, by: str = "console", reason: str | None = None) -> bool:
        """Answer the call with an `approval_denied` result."""
        return self.resolve(approval_id, Resolution("denied", False, by=by, reason=reason))

    def deny_all(self, by: str = "shutdown", reason: str | None = "mcpguard is stopping") -> int:
        """Deny every pending approval (shutdown, quit); returns how many."""
        ids = list(self._pending)
        return sum(self.deny(i, by=by, reason=reason) for i in ids)
