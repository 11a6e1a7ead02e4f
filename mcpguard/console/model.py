"""What the console knows, built from bus events; no widgets here.

`CallLog` folds `mcpguard.events` into one `CallRecord` per `tools/call`,
keeps the newest `max_rows`, counts calls per minute, denials and pending
approvals, and holds the latest view of every rate-limit counter. The
screen applies a batch of events, then redraws only what changed.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mcpguard import events as ev
from mcpguard.codes import Code, code_of

#: decision codes as the table shows them (at most 9 columns wide)
SHORT_CODES: dict[Code, str] = {Code.POLICY_DENIED: "deny", Code.RATE_LIMITED: "limited", Code.HIDDEN: "hidden",
                                Code.NO_POLICY: "no policy", Code.TOOL_CHANGED: "changed",
                                Code.APPROVAL_REQUIRED: "pending"}

#: The word the `/` filter matches on every refused call (`Code.refused`), as the status bar counts them.
DENIED_WORD = "denied"


#: the table's decision of a call a shadow rule would have refused: the glyphs of the tree's states
SHADOW_LABELS = {"would_deny": "would ✗", "would_rate_limit": "would ≤", "would_require_approval": "would ?"}


@dataclass(slots=True)
class CallRecord:
    """One `tools/call` as the console shows it. Times are epoch seconds."""

    call_id: str
    ts: float
    server: str
    tool: str
    arguments: dict[str, Any] = field(default_factory=dict)
    caller: str = ""
    session_id: str | None = None
    action: str | None = None        # allow | deny | require_approval
    code: str | None = None          # decision code, then the final outcome
    rule: str | None = None
    message: str = ""
    risk: str | None = None
    retry_after_s: float | None = None
    approval_id: str | None = None
    pending: bool = False
    approval_outcome: str | None = None
    approval_approved: bool | None = None  # for `policy_changed`: let through or denied
    approved_by: str | None = None
    outcome: str | None = None
    done: bool = False
    is_error: bool = False
    duration_ms: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    forwarded_arguments: dict[str, Any] | None = None  # what went upstream when a person edited them
    deny_reason: str | None = None                     # a person's reason for a denial
    grant: str = ""
    client: str | None = None
    decided_code: str | None = None   # the policy's decision code (`code` becomes the final outcome)
    would: str | None = None          # a shadow rule: would_deny, would_rate_limit, would_require_approval
    would_code: str | None = None
    would_rule: str | None = None
    would_message: str | None = None

    @property
    def decision_label(self) -> str:
        """Short decision text for the table: `allow`, `rate_limited`, `pending`, `approved`, ...;
        for a call a shadow rule would have refused or sent for approval, `would ✗`, `would ≤`,
        `would ?` (it went through: the result says how it went)."""
        if self.pending:
            return "pending"
        if self.would and self.action == "allow" and self.approval_outcome is None:
            return SHADOW_LABELS.get(self.would, self.would)
        if self.approval_outcome == "policy_changed":  # the policy changed while it waited
            return "policy ✓" if self.approval_approved else "policy ✗"
        if self.approval_outcome:
            return {"approved": "approved", "denied": "denied", "timed_out": "timed out",
                    "session": "session ✓"}.get(self.approval_outcome, self.approval_outcome)
        if self.action is None:
            return "…"
        if self.action == "allow":
            return "allow"
        return SHORT_CODES.get(self.code or "", self.code or self.action)

    @property
    def denied(self) -> bool:
        """True when the call did not get the upstream's answer: its outcome is `Code.refused`.

        Before the outcome is known: a deny decision, or an approval denied, timed
        out or withdrawn by a policy change. An outcome that is no `Code` (a newer
        gateway's) counts as not denied.
        """
        if self.outcome is not None:
            code = code_of(self.outcome)
            return code is not None and code.refused
        return self.action == "deny" or self.approval_outcome in ("denied", "timed_out") or (
            self.approval_outcome == "policy_changed" and self.approval_approved is False)

    @property
    def result_label(self) -> str:
        """`ok`, `error`, `denied`, `waiting` or `…`."""
        if not self.done:
            return "waiting" if self.pending else "…"
        code = code_of(self.outcome)
        if code is not None and code.upstream_fault:
            return "error"  # it reached (or was meant for) the upstream, which failed
        if self.denied:
            return "denied"
        return "error" if self.is_error else "ok"

    def search_text(self) -> str:
        """What `/` matches against (lower case): tool, server, caller, risk, the decision and result
        as the table shows them, the decision and outcome codes, `denied` for every refused call, and
        `shadow` with the shadow outcome (`would_deny`, ...) for a call a shadow rule would have refused."""
        return " ".join(filter(None, (self.tool, self.server, self.caller, self.risk, self.decision_label,
                                      self.result_label, self.code, self.outcome,
                                      DENIED_WORD if self.denied else None,
                                      f"shadow {self.would} {self.would_code}" if self.would else None))).lower()


@dataclass(slots=True)
class CounterView:
    """The latest view of one counter (from `CounterChanged`)."""

    server: str
    counter: str
    scope: str
    scope_key: str
    count: int
    max: int
    window_s: float
    retry_after_s: float
    seen_at: float  # epoch seconds when this view was taken
    shadow: bool = False  # a shadow limit's: it counts, it never refuses

    @property
    def key(self) -> tuple[str, str, str, bool]:
        return (self.server, self.counter, self.scope_key, self.shadow)

    def frees_in(self, now: float) -> float:
        """Seconds until a slot frees, counted down from when the view was taken."""
        return max(0.0, self.retry_after_s - (now - self.seen_at))

    @property
    def ratio(self) -> float:
        return self.count / self.max if self.max else 1.0


class CallLog:
    """The newest `max_rows` calls, counters, and the status-bar figures."""

    def __init__(self, max_rows: int = 2000) -> None:
        self.max_rows = max(1, max_rows)
        self.calls: OrderedDict[str, CallRecord] = OrderedDict()
        self.counters: dict[tuple[str, str, str], CounterView] = {}
        self.pending: OrderedDict[str, ev.ApprovalRequested] = OrderedDict()
        self.denied_total = 0
        self.dropped_events = 0
        self.evicted: list[str] = []
        # ids evicted lately: their late events (decided, completed) must not bring a
        # row back, or the rows of newer calls go in their place (bounded, oldest out)
        self._gone: dict[str, None] = {}
        self._gone_max = max(10_000, 4 * self.max_rows)
        self._late: list[str] = []
        self._recent: deque[float] = deque()
        self.policy_errors: dict[str, tuple[str, ...]] = {}
        self.upstream_state: dict[str, str] = {}
        self.changed_tools: set[tuple[str, str]] = set()
        #: server -> the names of its tools (the snapshot's `tools/list`); the table sizes its columns on them
        self.tools: dict[str, tuple[str, ...]] = {}
        #: bumped whenever `tools` changes, so a view sized on it knows to size again
        self.tools_version = 0

    def sync_tools(self, server: str, names: Iterable[str]) -> None:
        """Record the names of `server`'s tools (from a snapshot); `tools_version` moves only on a change."""
        names = tuple(names)
        if self.tools.get(server) != names:
            self.tools[server] = names
            self.tools_version += 1

    def sync_counters(self, server: str, views: Iterable[Any], now: float) -> None:
        """Replace `server`'s counters with `views` (`mcpguard.ratelimit.CounterView`s
        from `Counters.snapshot`, e.g. after a reload changed a `max`);
        `now` is epoch seconds, when the views were taken. Empty counters go."""
        for key in [k for k in self.counters if k[0] == server]:
            del self.counters[key]
        for v in views:
            if v.count > 0:
                shadow = bool(getattr(v, "shadow", False))
                self.counters[(server, v.counter, v.scope_key, shadow)] = CounterView(
                    server, v.counter, v.scope, v.scope_key, v.count, v.max, v.window_s,
                    v.retry_after_s, seen_at=now, shadow=shadow)

    def sync_pending(self, pending: Iterable[Any], taken_at: float) -> None:
        """Reconcile the pending approvals with a snapshot's (`PendingState`s, taken at `taken_at`, epoch
        seconds): add what the events did not bring (a console that attached late), drop what the snapshot
        no longer has although it was asked before it (answered meanwhile, its event lost)."""
        snap = {p.approval_id: p for p in pending}
        for aid, p in snap.items():
            self.pending.setdefault(aid, p)
        for aid in [a for a, p in self.pending.items() if a not in snap
                    and getattr(p, "ts", getattr(p, "created_at", 0.0)) < taken_at]:
            del self.pending[aid]

    def calls_per_minute(self, now: float | None = None) -> int:
        """Calls received in the last 60 seconds."""
        now = time.time() if now is None else now
        while self._recent and self._recent[0] < now - 60:
            self._recent.popleft()
        return len(self._recent)

    def _record(self, call_id: str, e: Any) -> CallRecord | None:
        """The call's record; a call we saw no CallReceived for (its event was
        dropped) gets one, shown as new; an evicted call gets None."""
        rec = self.calls.get(call_id)
        if rec is None:
            if call_id in self._gone:
                return None
            rec = CallRecord(call_id=call_id, ts=e.ts, server=e.server, tool=e.tool)
            self._add(rec)
            self._late.append(call_id)
        return rec

    def _add(self, rec: CallRecord) -> None:
        """Append `rec`; evict the oldest beyond `max_rows` (O(1) each)."""
        self.calls[rec.call_id] = rec
        while len(self.calls) > self.max_rows:
            old, _ = self.calls.popitem(last=False)
            self.evicted.append(old)
            self._gone[old] = None
            if len(self._gone) > self._gone_max:
                del self._gone[next(iter(self._gone))]

    def apply(self, events: Iterable[ev.Event]) -> tuple[list[str], set[str]]:
        """Fold a batch of events in; returns (new call ids in order, changed call ids).

        Ids evicted to keep `max_rows` are appended to `self.evicted`; late
        events of an evicted call change nothing (a denial is still counted).
        A call first seen by a later event (its `CallReceived` was dropped) is
        new, after the batch's received calls.
        """
        new: list[str] = []
        changed: set[str] = set()
        self._late.clear()
        for e in events:
            if isinstance(e, ev.CallReceived):
                rec = CallRecord(call_id=e.call_id, ts=e.ts, server=e.server, tool=e.tool,
                                 arguments=e.arguments, caller=e.client or e.grant,
                                 session_id=e.session_id, grant=e.grant, client=e.client)
                self._add(rec)
                self._recent.append(e.ts)
                new.append(e.call_id)
            elif isinstance(e, ev.CallDecided):
                rec = self._record(e.call_id, e)
                if rec is None:
                    continue
                rec.action, rec.code, rec.rule, rec.message = e.action, e.code, e.rule, e.message
                rec.decided_code = e.code
                rec.would, rec.would_code, rec.would_rule = e.would, e.would_code, e.would_rule
                rec.would_message = e.would_message
                rec.retry_after_s = e.retry_after_s
                rec.risk = e.risk or rec.risk
                if e.approver:  # let through by a session approval, no one asked
                    rec.approval_outcome, rec.approved_by = "session", e.approver
                changed.add(e.call_id)
            elif isinstance(e, ev.ApprovalRequested):
                self.pending[e.approval_id] = e
                rec = self._record(e.call_id, e)
                if rec is None:
                    continue
                rec.approval_id, rec.pending = e.approval_id, True
                rec.risk = e.risk or rec.risk
                if not rec.arguments:
                    rec.arguments = e.arguments
                changed.add(e.call_id)
            elif isinstance(e, ev.ApprovalResolved):
                self.pending.pop(e.approval_id, None)
                rec = self.calls.get(e.call_id)
                if rec is not None:
                    rec.pending = False
                    rec.approval_outcome = e.outcome
                    rec.approval_approved = e.approved
                    if e.reason and e.outcome == "policy_changed":
                        rec.message = e.reason
                    elif e.reason and e.outcome == "denied":
                        rec.deny_reason = e.reason
                    rec.approved_by = e.by
                    changed.add(e.call_id)
            elif isinstance(e, ev.CallCompleted):
                rec = self._record(e.call_id, e)
                if rec is None:  # evicted before it completed: counted, no row
                    code = code_of(e.outcome)
                    if code is not None and code.refused:
                        self.denied_total += 1
                    continue
                rec.pending = False
                rec.done, rec.outcome, rec.is_error = True, e.outcome, e.is_error
                rec.duration_ms, rec.result, rec.error = e.duration_ms, e.result, e.error
                rec.approved_by = rec.approved_by or e.approver
                if e.arguments is not None:  # a person changed them before approving
                    rec.forwarded_arguments = e.arguments
                if rec.denied:
                    self.denied_total += 1
                changed.add(e.call_id)
            elif isinstance(e, ev.CounterChanged):
                key = (e.server, e.counter, e.scope_key, e.shadow)
                if e.count <= 0:
                    self.counters.pop(key, None)
                else:
                    self.counters[key] = CounterView(e.server, e.counter, e.scope, e.scope_key,
                                                     e.count, e.max, e.window_s, e.retry_after_s,
                                                     seen_at=e.ts, shadow=e.shadow)
            elif isinstance(e, ev.PolicyRejected):
                self.policy_errors[e.server] = e.errors
            elif isinstance(e, ev.PolicyReloaded):
                self.policy_errors.pop(e.server, None)
            elif isinstance(e, ev.UpstreamState):
                self.upstream_state[e.server] = e.state
            elif isinstance(e, ev.ToolChanged):
                self.changed_tools.add((e.server, e.tool))
            elif isinstance(e, ev.EventsDropped):
                self.dropped_events += e.count
        if self._late:
            new.extend(self._late)
            self._late.clear()
        changed.difference_update(new)
        live = self.calls.keys()
        return [c for c in new if c in live], {c for c in changed if c in live}
