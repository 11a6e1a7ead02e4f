"""Rate-limit counters: named sliding-window logs, one set per upstream server.

A policy limit (`mcpguard.policy.Limit`) names a counter, a window
(`second minute hour day`, i.e. `window_s` = 1, 60, 3600, 86400 seconds), a
`max` (calls per window) and a scope (`grant session client server global`).
The counter's *name* is its identity: every limit that names the same counter
(in one tool, in several tools, or in `all_tools.limits`) shares one log of
admission times per scope key.

Semantics (sliding window log): a counter never admits more than `max` calls
in any half-open interval `[t, t + window_s)`. An admission at time `t` stops
counting at `t + window_s`. This holds also when many asyncio callers race:
`try_consume` checks every limit of the call and records the admission with no
`await` in between, so no other coroutine can interleave.

Check and consume are separate steps: the policy's pure
`evaluate` calls `check`; the gateway calls `try_consume` as it forwards the
call (after any approval), and a call whose slot was taken meanwhile is
rate-limited then.

Counters live on this object, keyed by (counter name, scope, scope key), not
by policy object: they survive policy reloads and edits of `max` or `window`.
A new `max` applies to the next call; lowering it below the current count
rate-limits until enough admissions leave the window. `retain` drops counters
that no rule names any more, once their window has passed.

Clock: every `now` is `time.monotonic()` seconds. Time never goes backwards
here: a `now` older than the latest `now` this object has seen (a caller that
read the clock before another one's call) is taken as that latest `now`,
which is when the admission really happens; it never admits more.

Call these methods from the event loop's thread (they are not thread-safe).
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from mcpguard.call import Call
from mcpguard.events import CounterChanged, EventBus

SCOPES = ("grant", "session", "client", "server", "global")


@runtime_checkable
class LimitLike(Protocol):
    """What the counters need of a limit; `mcpguard.policy.Limit` has it.

    - `counter`: the counter's name (its identity).
    - `window`: `second`, `minute`, `hour` or `day` (for messages).
    - `window_s`: the window's length in seconds.
    - `max`: admitted calls per window.
    - `scope`: one of `SCOPES`.
    - `path`: where the limit is in the policy (`tools.x.limits[0]`).
    """

    counter: str
    window: str
    window_s: float
    max: int
    scope: str
    path: str


@dataclass(frozen=True, slots=True)
class RateLimited:
    """A limit that refuses a call now.

    `limit` is the refusing limit; `scope_key` the key it was counted under
    (see `scope_key`); `count` the admissions in its window at `now`; `max`
    the limit's max; `retry_after_s` the seconds until a slot frees (exact
    for this limit at `now`, assuming no other admissions).
    """

    limit: LimitLike
    scope_key: str
    retry_after_s: float
    count: int
    max: int

    @property
    def counter(self) -> str:
        """The refusing counter's name."""
        return self.limit.counter


@dataclass(frozen=True, slots=True)
class CounterView:
    """One counter for gauges (`Counters.snapshot`).

    `count` admissions in the last `window_s` seconds out of `max`;
    `retry_after_s` seconds until a slot frees (0 when not full). `max` and
    `window_s` are those of the latest limit seen for this counter.
    """

    counter: str
    scope: str
    scope_key: str
    count: int
    max: int
    window_s: float
    retry_after_s: float


def scope_key(limit: LimitLike, call: Call) -> str:
    """The key a call is counted under for `limit.scope`.

    `grant` → `call.grant`; `session` → `call.session_id` or `"-"`; `client`
    → `call.client` (`clientInfo.name`) or `"-"`; `server` → `call.server`;
    `global` → `"*"`. Raises ValueError for any other scope.
    """
    scope = limit.scope
    if scope == "grant":
        return call.grant
    if scope == "session":
        return call.session_id or "-"
    if scope == "client":
        return call.client or "-"
    if scope == "server":
        return call.server
    if scope == "global":
        return "*"
    raise ValueError(f"scope {scope!r} is not one of {', '.join(SCOPES)}")


class _Log:
    """Sorted admission times of one (counter, scope, scope key)."""

    __slots__ = ("times", "max", "window_s", "longest_s")

    def __init__(self, max_: int, window_s: float) -> None:
        self.times: deque[float] = deque()
        self.max = max_
        self.window_s = window_s
        self.longest_s = window_s

    def prune(self, now: float) -> None:
        times, longest = self.times, self.longest_s
        while times and times[0] + longest <= now:
            times.popleft()

    def first_in_window(self, now: float, window_s: float) -> int:
        """Index of the first admission still counting in a window of `window_s` at `now`."""
        if window_s >= self.longest_s:
            # the common case (one window per counter): after pruning by the
            # longest window every admission left still counts
            self.prune(now)
            return 0
        return bisect.bisect_right(self.times, now, key=lambda t: t + window_s)

    def count(self, now: float, window_s: float) -> int:
        return len(self.times) - self.first_in_window(now, window_s)

    def retry_after(self, now: float, window_s: float, max_: int) -> float:
        """Seconds until `count < max_` at the earliest (0 if it already is)."""
        first = self.first_in_window(now, window_s)
        count = len(self.times) - first
        if count < max_:
            return 0.0
        if max_ <= 0:
            return float(window_s)  # never admits; say "not within this window"
        # the (count - max_ + 1)-th oldest admission in the window must leave it
        return max(0.0, self.times[first + count - max_] + window_s - now)


class Counters:
    """The rate-limit counters of one upstream server.

    `server` is the server's name (for events); `bus`, if given, gets a
    `mcpguard.events.CounterChanged` for each counter on each admission, and
    one with `count == 0` when `retain` drops a counter; `shadow` marks them
    as a shadow limit's counters.
    """

    def __init__(self, server: str, bus: EventBus | None = None, *, shadow: bool = False) -> None:
        self.server = server
        self.bus = bus
        self.shadow = shadow
        self._logs: dict[tuple[str, str, str], _Log] = {}
        self._now = float("-inf")  # latest `now` seen: time never goes backwards

    def _clock(self, now: float) -> float:
        if now > self._now:
            self._now = now
        return self._now

    # -- internals ---------------------------------------------------------
    def _refusal(self, limits: Sequence[LimitLike], call: Call, now: float,
                 create: bool) -> tuple[RateLimited | None, dict[tuple[str, str, str], _Log]]:
        # every call of the gateway and of a replay comes here (twice: check, then
        # try_consume), so the scope key, the log lookup, pruning and counting are
        # written out here rather than calling scope_key, _Log.prune and _Log.count
        if now > self._now:
            self._now = now
        else:
            now = self._now
        refused: RateLimited | None = None
        seen: dict[tuple[str, str, str], _Log] = {}
        logs = self._logs
        for limit in limits:
            scope = limit.scope
            if scope == "grant":
                skey = call.grant
            elif scope == "session":
                skey = call.session_id or "-"
            else:
                skey = scope_key(limit, call)
            key = (limit.counter, scope, skey)
            log = logs.get(key)
            window_s = float(limit.window_s)
            if log is None:
                if not create:  # a counter never used: empty, so only max <= 0 refuses
                    if limit.max <= 0:
                        r = RateLimited(limit, skey, window_s, 0, limit.max)
                        if refused is None or r.retry_after_s > refused.retry_after_s:
                            refused = r
                    continue
                log = logs[key] = _Log(limit.max, window_s)
            else:
                # the newest limit seen decides what gauges show
                log.max = limit.max
                log.window_s = window_s
                if window_s > log.longest_s:
                    log.longest_s = window_s
            times = log.times
            longest = log.longest_s
            while times and times[0] + longest <= now:
                times.popleft()
            seen[key] = log
            count = len(times) if window_s >= longest else len(times) - log.first_in_window(now, window_s)
            if count >= limit.max:
                r = RateLimited(limit, skey, log.retry_after(now, window_s, limit.max), count, limit.max)
                if refused is None or r.retry_after_s > refused.retry_after_s:
                    refused = r
        return refused, seen

    # -- the policy's and the gateway's side ---------------------------------
    def check(self, limits: Sequence[LimitLike], call: Call, now: float) -> RateLimited | None:
        """Would `call` be admitted by every limit at `now`? Changes no count.

        (It does note `now` as the latest time seen, and the limits' `max` and
        `window_s` for gauges.)

        Returns None when it would, else the refusing limit as `RateLimited`.
        When several limits refuse, the one with the longest `retry_after_s`
        is returned (ties: the first in `limits`), so that an agent waiting
        `retry_after_s` is not refused at once by another full limit.
        Raises ValueError for an unknown scope.
        """
        refused, _ = self._refusal(limits, call, now, create=False)
        return refused

    def try_consume(self, limits: Sequence[LimitLike], call: Call, now: float) -> RateLimited | None:
        """Admit `call` under every limit at `now`, or refuse it; atomic.

        Checks all limits first; if any refuses, nothing is recorded and the
        refusal is returned as in `check`. Otherwise records one admission in
        each distinct counter (a counter named by two limits of the call counts
        the call once, and each limit checks its own window and max against the
        shared log), publishes `CounterChanged` per counter, and returns None.
        There is no `await` inside, so concurrent asyncio callers cannot
        over-admit. Raises ValueError for an unknown scope.
        """
        refused, seen = self._refusal(limits, call, now, create=True)
        if refused is not None:
            return refused
        now = self._now
        for key, log in seen.items():
            log.times.append(now)
            if self.bus is not None:
                self._publish(key, log, now)
        return None

    # -- introspection and upkeep --------------------------------------------
    def snapshot(self, now: float) -> list[CounterView]:
        """Every counter at `now`, sorted by counter name, scope and scope key.

        `count` uses the newest limit's window; `retry_after_s` is the seconds
        until a slot frees under that limit's `max` (0 when not full).
        """
        now = self._clock(now)
        views = []
        for key in sorted(self._logs):
            log = self._logs[key]
            log.prune(now)
            views.append(self._view(key, log, now))
        return views

    def update_limits(self, limits: Iterable[LimitLike]) -> None:
        """Let gauges show a reloaded policy's `max`/`window` at once.

        Existing counters with the limit's name and scope take its `max` and
        `window_s` (the newest limit seen); no count changes. Optional: the
        next `check`/`try_consume` does the same.
        """
        by_name = {(lim.counter, lim.scope): lim for lim in limits}
        for key, log in self._logs.items():
            lim = by_name.get(key[:2])
            if lim is not None:
                log.max = lim.max
                log.window_s = float(lim.window_s)
                log.longest_s = max(log.longest_s, float(lim.window_s))

    def retain(self, names: Iterable[str], now: float) -> list[str]:
        """Drop counters whose name is not in `names` once their window has passed.

        Call after a policy reload with `policy.counter_names()`. A counter
        not named any more is kept while any admission still counts in its
        longest window seen (so removing a rule and adding it back does not
        reset it), then dropped with a `CounterChanged(count=0)` event.
        Returns the dropped counters' names (one per dropped scope key).
        """
        now = self._clock(now)
        keep = set(names)
        dropped = []
        for key in list(self._logs):
            if key[0] in keep:
                continue
            log = self._logs[key]
            log.prune(now)
            if not log.times:
                del self._logs[key]
                dropped.append(key[0])
                if self.bus is not None:
                    self._publish(key, log, now)
        return dropped

    def __len__(self) -> int:
        return len(self._logs)

    def _view(self, key: tuple[str, str, str], log: _Log, t: float) -> CounterView:
        return CounterView(
            counter=key[0], scope=key[1], scope_key=key[2],
            count=log.count(t, log.window_s), max=log.max, window_s=log.window_s,
            retry_after_s=log.retry_after(t, log.window_s, log.max),
        )

    def _publish(self, key: tuple[str, str, str], log: _Log, t: float) -> None:
        v = self._view(key, log, t)
        assert self.bus is not None
        self.bus.publish(CounterChanged(
            server=self.server, counter=v.counter, scope=v.scope, scope_key=v.scope_key,
            count=v.count, max=v.max, window_s=v.window_s, retry_after_s=v.retry_after_s, shadow=self.shadow,
        ))
