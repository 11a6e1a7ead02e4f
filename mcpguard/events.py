"""Typed events and a bounded fan-out bus.

The core publishes; listeners (the console, tests, a future remote console)
subscribe. Publishing never blocks and never awaits: each subscriber has a
bounded queue, and a subscriber that falls behind loses the newest events and
is told how many with an `EventsDropped` before its next event. A slow
listener therefore never slows the proxy.

All times are wall-clock seconds since the epoch (`time.time()`); durations
are in milliseconds where the name says `_ms`, else seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any


def _now() -> float:
    return time.time()


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event; `ts` is when it happened (epoch seconds)."""

    ts: float = field(default_factory=_now, kw_only=True)


@dataclass(frozen=True, slots=True)
class CallReceived(Event):
    """A `tools/call` arrived from an agent, before any decision."""

    call_id: str
    server: str
    tool: str
    arguments: dict[str, Any]
    grant: str
    session_id: str | None
    client: str | None


@dataclass(frozen=True, slots=True)
class CallDecided(Event):
    """The policy decided a call.

    `action` is `allow`, `deny` or `require_approval`; `code` is the stable
    decision code (`allowed`, `policy_denied`, `rate_limited`, `hidden`,
    `approval_required`, `no_policy`, `tool_changed`); `rule` is the deciding
    rule's path (`tools.delete_run.deny_if[0]`) or None.

    What shadow rules would have done (`mcpguard.policy.Decision.shadow_fields()`,
    all None when nothing): `would` (`would_deny`, `would_rate_limit`,
    `would_require_approval`), `would_code` (the code the call would have got),
    `would_rule` (the shadow rule's path), `would_message` (what the agent
    would have read), `would_retry_after_s` (seconds, for `would_rate_limit`).
    `approver`: for `require_approval`, who approved this tool for the
    session when such an approval lets the call through without asking.
    """

    call_id: str
    server: str
    tool: str
    action: str
    code: str
    rule: str | None
    message: str
    retry_after_s: float | None = None
    risk: str | None = None
    would: str | None = None
    would_code: str | None = None
    would_rule: str | None = None
    would_message: str | None = None
    would_retry_after_s: float | None = None
    approver: str | None = None  # require_approval let through by a session approval: who gave it


@dataclass(frozen=True, slots=True)
class ApprovalRequested(Event):
    """A call waits for a person; `deadline` is epoch seconds, then it is denied.

    `digest` binds the approval to the exact call (`approvals.call_digest`:
    server, tool, arguments, policy version); `rule` asked for it.
    """

    approval_id: str
    call_id: str
    server: str
    tool: str
    arguments: dict[str, Any]
    grant: str
    session_id: str | None
    client: str | None
    risk: str | None
    reason: str | None
    deadline: float
    digest: str = ""
    rule: str | None = None


@dataclass(frozen=True, slots=True)
class ApprovalResolved(Event):
    """A pending approval ended.

    `outcome`: `approved`, `denied`, `timed_out`, `policy_changed` (denied or
    let through by a policy change; see `approved`), `cancelled` (the caller
    went away). `by` names who resolved it (`console`, `timeout`, `policy`,
    `shutdown`, ...). `for_session` is true for "approve this tool for this
    session"; `arguments` are the ones a person approved instead of the
    agent's (None: unchanged); `reason` is a person's reason for a denial;
    `digest` the call's digest as asked, `approved_digest` that of the
    edited call a person approved instead.
    """

    approval_id: str
    call_id: str
    server: str
    tool: str
    outcome: str
    approved: bool
    by: str | None = None
    reason: str | None = None
    for_session: bool = False
    arguments: dict[str, Any] | None = None
    digest: str = ""
    approved_digest: str | None = None


@dataclass(frozen=True, slots=True)
class SessionApprovalChanged(Event):
    """A tool approved for the rest of an MCP session (`granted`), or that approval ended.

    `expires_at` is epoch seconds; `why` says how it ended (`expired`,
    `revoked by ...`, `the session ended`).
    """

    server: str
    session_id: str
    tool: str
    by: str
    expires_at: float
    granted: bool
    why: str = ""


@dataclass(frozen=True, slots=True)
class SessionOpened(Event):
    """A handshake-era agent session opened on a server (`protocol_version` as negotiated)."""

    server: str
    session_id: str
    grant: str
    client: str | None
    protocol_version: str


@dataclass(frozen=True, slots=True)
class SessionClosed(Event):
    """An agent session ended (the agent closed it, it went idle, or a person ended it)."""

    server: str
    session_id: str
    why: str = ""


@dataclass(frozen=True, slots=True)
class CallCompleted(Event):
    """A call got its answer (forwarded result, or mcpguard's own denial).

    `outcome` is the final code: `allowed`, `approved`, or a denial code
    (`policy_denied`, `rate_limited`, `approval_denied`, `approval_timeout`,
    `policy_changed`, `hidden`, `upstream_error`, `upstream_timeout`).
    `result` is the `CallToolResult` as a JSON object, or None. `approver`
    names who let it through or refused it while it waited (`console`,
    `policy`, `timeout`, ...), also when a tool was approved for the
    session earlier; None when no one was asked.
    """

    call_id: str
    server: str
    tool: str
    outcome: str
    is_error: bool
    duration_ms: float
    result_size: int = 0
    result: dict[str, Any] | None = None
    error: str | None = None
    approver: str | None = None
    arguments: dict[str, Any] | None = None  # the arguments forwarded, when a person changed them


@dataclass(frozen=True, slots=True)
class CounterChanged(Event):
    """A rate-limit counter admitted a call (or was dropped: `count == 0`); `shadow` for a
    shadow limit's counter (`mode = "shadow"`: it counts, it never refuses)."""

    server: str
    counter: str
    scope: str
    scope_key: str
    count: int
    max: int
    window_s: float
    retry_after_s: float
    shadow: bool = False


@dataclass(frozen=True, slots=True)
class PolicyReloaded(Event):
    """A new policy was validated and applied; `diff` is a short unified diff.

    `source`: `file` (changed on disk), `console` (a tune key), `editor`,
    `undo`; `by` who changed it, `label` the change as a person said it.
    """

    server: str
    path: str
    diff: str = ""
    source: str = "file"
    by: str | None = None
    label: str | None = None


@dataclass(frozen=True, slots=True)
class PolicyRejected(Event):
    """A policy file failed to load; the last good policy keeps running.

    `errors` are `file:line:col: message` strings.
    """

    server: str
    path: str
    errors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UpstreamState(Event):
    """An upstream server's state: `starting`, `up`, `restarting`, `down`."""

    server: str
    state: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ToolChanged(Event):
    """A tool's definition (description, schema, annotations) changed since first sight."""

    server: str
    tool: str
    old_fingerprint: str
    new_fingerprint: str


@dataclass(frozen=True, slots=True)
class MalformedRequest(Event):
    """A message the gateway refused before any decision, e.g. a request method sent as a notification.

    It is never forwarded. `method` as sent; `tool` and `arguments` when it
    was a `tools/call`; `code` is `malformed`.
    """

    server: str
    method: str
    reason: str
    grant: str
    session_id: str | None = None
    tool: str | None = None
    arguments: dict[str, Any] | None = None
    code: str = "malformed"


@dataclass(frozen=True, slots=True)
class EventsDropped(Event):
    """Delivered to a subscriber that fell behind: `count` events were lost."""

    count: int


class Subscription:
    """One listener's bounded queue; iterate it with `async for`.

    Created by `EventBus.subscribe`; `close()` (or leaving an `async with`)
    stops delivery.
    """

    def __init__(self, bus: EventBus, maxsize: int) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=maxsize)
        self.dropped = 0
        self._pending_drop = 0

    def _offer(self, event: Event) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            self._pending_drop += 1

    async def get(self) -> Event:
        """The next event; an `EventsDropped` first if any were lost since the last call."""
        if self._pending_drop:
            n, self._pending_drop = self._pending_drop, 0
            return EventsDropped(count=n)
        return await self._queue.get()

    def get_nowait(self) -> Event | None:
        """The next event, or None when the queue is empty."""
        if self._pending_drop:
            n, self._pending_drop = self._pending_drop, 0
            return EventsDropped(count=n)
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def close(self) -> None:
        self._bus._subs.discard(self)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Event]:
        while True:
            yield await self.get()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """Fan-out of events to bounded subscriber queues and to sync listeners.

    `publish` must be called from the event loop's thread. Sync listeners
    (`add_listener`) run inline and must be cheap; an exception in one is
    swallowed and counted in `listener_errors`, never raised into the proxy.
    """

    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        self._listeners: list[Callable[[Event], None]] = []
        self.listener_errors = 0

    @property
    def listened(self) -> bool:
        """True when anyone subscribes or listens (events are then worth building)."""
        return bool(self._subs or self._listeners)

    def subscribe(self, maxsize: int = 10_000) -> Subscription:
        """A new subscription holding at most `maxsize` undelivered events."""
        sub = Subscription(self, maxsize)
        self._subs.add(sub)
        return sub

    def add_listener(self, fn: Callable[[Event], None]) -> Callable[[], None]:
        """Call `fn(event)` for every event; returns a function that removes it."""
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn) if fn in self._listeners else None

    def publish(self, event: Event) -> None:
        """Deliver `event` to every subscriber and listener; never blocks."""
        for sub in tuple(self._subs):
            sub._offer(event)
        for fn in tuple(self._listeners):
            try:
                fn(event)
            except Exception:  # a listener's bug must not break the proxy
                self.listener_errors += 1
