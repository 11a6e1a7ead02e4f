"""Rate-limit counters: the sliding-window invariant, scopes, sharing, reloads."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcpguard.call import Call
from mcpguard.events import CounterChanged, EventBus
from mcpguard.ratelimit import CounterView, Counters, LimitLike, RateLimited, scope_key

WINDOWS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}


@dataclass(frozen=True)
class Lim:
    """Stands in for mcpguard.policy.Limit (same fields)."""

    counter: str
    window_s: float
    max: int
    scope: str = "grant"
    window: str = "minute"
    path: str = "tools.t.limits[0]"


def lim(counter="c", window="minute", max=3, scope="grant", path="tools.t.limits[0]"):
    return Lim(counter=counter, window_s=WINDOWS[window], max=max, scope=scope, window=window, path=path)


CALL = Call(server="mlflow", tool="set_experiment_tag", grant="ci", session_id="s1", client="claude")


def assert_invariant(admitted: list[float], max_: int, window_s: float) -> None:
    """No half-open interval [t, t + window_s) holds more than max_ admissions."""
    ts = sorted(admitted)
    for i in range(len(ts) - max_):
        assert ts[i] + window_s <= ts[i + max_], (ts[i], ts[i + max_], max_, window_s)


def reference(times: list[float], max_: int, window_s: float) -> list[bool]:
    """The greedy sliding-window log, naively: admit iff fewer than max_ count at t."""
    kept: list[float] = []
    out = []
    for t in times:
        ok = sum(1 for a in kept if a + window_s > t) < max_
        if ok:
            kept.append(t)
        out.append(ok)
    return out


def test_limit_protocol_is_satisfied_by_a_plain_object():
    assert isinstance(lim(), LimitLike)


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.floats(min_value=0, max_value=5, allow_nan=False), min_size=1, max_size=80),
    max_=st.integers(min_value=1, max_value=6),
    window_s=st.floats(min_value=0.25, max_value=20, allow_nan=False),
    start=st.floats(min_value=0, max_value=1e6, allow_nan=False),
)
def test_never_more_than_max_in_any_window_and_no_needless_refusal(gaps, max_, window_s, start):
    counters = Counters("mlflow")
    limit = Lim("c", window_s, max_)
    times, t = [], start
    for g in gaps:
        t += g
        times.append(t)
    got = [counters.try_consume([limit], CALL, now) is None for now in times]
    assert_invariant([now for now, ok in zip(times, got) if ok], max_, window_s)
    # and it refuses only what a sliding window log must refuse
    assert got == reference(times, max_, window_s)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(min_value=2, max_value=60),
    max_=st.integers(min_value=1, max_value=5),
    window_s=st.sampled_from([1.0, 2.5, 60.0]),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_concurrent_asyncio_callers_never_over_admit(n, max_, window_s, seed):
    """Callers check, yield to each other, then consume; the clock moves as they run."""
    rng = random.Random(seed)
    counters = Counters("mlflow")
    limit = Lim("c", window_s, max_)
    clock = [0.0]
    admitted: list[float] = []

    async def caller(i: int) -> None:
        for _ in range(rng.randint(0, 3)):
            await asyncio.sleep(0)
            clock[0] += rng.choice([0.0, 0.0, 0.1, 0.7, 1.3])
        counters.check([limit], CALL, clock[0])  # the policy's look, then an await
        await asyncio.sleep(0)
        now = clock[0]
        if counters.try_consume([limit], CALL, now) is None:
            admitted.append(now)

    async def main() -> None:
        await asyncio.gather(*(caller(i) for i in range(n)))

    asyncio.run(main())
    assert_invariant(admitted, max_, window_s)
    assert 1 <= len(admitted) <= n


async def test_racing_callers_on_the_real_clock_get_exactly_max():
    counters = Counters("mlflow")
    limit = lim(max=50, window="hour")
    checked_ok = 0

    async def caller() -> bool:
        nonlocal checked_ok
        if counters.check([limit], CALL, time.monotonic()) is None:
            checked_ok += 1
        await asyncio.sleep(0)  # e.g. an approval or a log write in between
        return counters.try_consume([limit], CALL, time.monotonic()) is None

    results = await asyncio.gather(*(caller() for _ in range(200)))
    assert checked_ok == 200  # every check ran before any consume...
    assert sum(results) == 50  # ...yet consume admits exactly max


def test_retry_after_is_exact():
    counters = Counters("mlflow")
    limit = lim(max=2, window="minute")
    assert counters.try_consume([limit], CALL, 100.0) is None
    assert counters.try_consume([limit], CALL, 110.0) is None
    r = counters.check([limit], CALL, 120.0)
    assert isinstance(r, RateLimited)
    assert (r.retry_after_s, r.count, r.max, r.scope_key, r.counter) == (40.0, 2, 2, "ci", "c")
    assert r.limit is limit
    # after exactly retry_after_s the oldest admission has left the window
    assert counters.check([limit], CALL, 159.5) is not None
    assert counters.check([limit], CALL, 160.0) is None
    assert counters.try_consume([limit], CALL, 160.0) is None
    # full again: the next slot frees when the admission at 110 leaves
    assert counters.try_consume([limit], CALL, 161.0).retry_after_s == 9.0


def test_refusal_records_nothing_in_any_limit():
    counters = Counters("mlflow")
    per_tool = lim("per_tool", max=5)
    shared = lim("all_writes", max=1, path="all_tools.limits[0]")
    assert counters.try_consume([per_tool, shared], CALL, 0.0) is None
    r = counters.try_consume([per_tool, shared], CALL, 1.0)
    assert r is not None and r.limit is shared
    views = {v.counter: v.count for v in counters.snapshot(1.0)}
    assert views == {"per_tool": 1, "all_writes": 1}


def test_when_several_limits_refuse_the_longest_wait_is_reported():
    counters = Counters("mlflow")
    fast = lim("fast", window="second", max=1)
    slow = lim("slow", window="hour", max=1)
    assert counters.try_consume([fast, slow], CALL, 0.0) is None
    r = counters.check([fast, slow], CALL, 0.5)
    assert r.limit is slow and r.retry_after_s == 3599.5


def test_limits_naming_one_counter_share_it():
    counters = Counters("mlflow")
    a = Call(server="mlflow", tool="set_run_tag", grant="ci")
    b = Call(server="mlflow", tool="set_experiment_tag", grant="ci")
    la = lim("tags", max=3, path="tools.set_run_tag.limits[0]")
    lb = lim("tags", max=3, path="tools.set_experiment_tag.limits[0]")
    assert counters.try_consume([la], a, 0.0) is None
    assert counters.try_consume([la], a, 1.0) is None
    assert counters.try_consume([lb], b, 2.0) is None
    r = counters.try_consume([lb], b, 3.0)
    assert r is not None and r.count == 3 and r.limit.path == "tools.set_experiment_tag.limits[0]"
    assert [(v.counter, v.count) for v in counters.snapshot(3.0)] == [("tags", 3)]


def test_a_call_counts_once_in_a_counter_its_limits_name_twice():
    counters = Counters("mlflow")
    minute = lim("writes", window="minute", max=2)
    hour = lim("writes", window="hour", max=3)
    assert counters.try_consume([minute, hour], CALL, 0.0) is None
    assert counters.try_consume([minute, hour], CALL, 1.0) is None
    r = counters.check([minute, hour], CALL, 2.0)
    assert r.limit is minute and r.count == 2
    # a minute later the minute limit is free, the hour limit has room for one
    assert counters.try_consume([minute, hour], CALL, 61.0) is None
    r = counters.check([minute, hour], CALL, 62.0)
    assert r.limit is hour and r.count == 3 and r.retry_after_s == 3600.0 - 62.0


@pytest.mark.parametrize(
    ("scope", "other", "shares"),
    [
        ("grant", Call(server="mlflow", tool="t", grant="other", session_id="s1", client="claude"), False),
        ("grant", Call(server="mlflow", tool="t", grant="ci", session_id="s2", client="cursor"), True),
        ("session", Call(server="mlflow", tool="t", grant="ci", session_id="s2", client="claude"), False),
        ("session", Call(server="mlflow", tool="t", grant="other", session_id="s1", client="x"), True),
        ("client", Call(server="mlflow", tool="t", grant="ci", session_id="s1", client="cursor"), False),
        ("client", Call(server="mlflow", tool="t", grant="other", session_id="s9", client="claude"), True),
        ("server", Call(server="mlflow", tool="t", grant="other", session_id="s9", client="x"), True),
        ("global", Call(server="mlflow", tool="t", grant="other", session_id="s9", client="x"), True),
    ],
)
def test_scopes_isolate_and_share(scope, other, shares):
    counters = Counters("mlflow")
    limit = lim(max=1, scope=scope)
    assert counters.try_consume([limit], CALL, 0.0) is None
    assert (counters.try_consume([limit], other, 1.0) is not None) is shares


def test_scope_keys():
    anon = Call(server="mlflow", tool="t")
    assert scope_key(lim(scope="grant"), anon) == "local"
    assert scope_key(lim(scope="session"), anon) == "-"
    assert scope_key(lim(scope="client"), anon) == "-"
    assert scope_key(lim(scope="server"), anon) == "mlflow"
    assert scope_key(lim(scope="global"), anon) == "*"
    assert scope_key(lim(scope="session"), CALL) == "s1"
    assert scope_key(lim(scope="client"), CALL) == "claude"
    with pytest.raises(ValueError, match="not one of grant, session"):
        scope_key(lim(scope="planet"), anon)


def test_max_change_keeps_counts():
    counters = Counters("mlflow")
    for t in range(4):
        assert counters.try_consume([lim(max=5)], CALL, float(t)) is None
    # a reload lowers max below the count: refused until the window frees
    r = counters.try_consume([lim(max=3)], CALL, 10.0)
    assert r is not None and r.count == 4 and r.max == 3
    assert r.retry_after_s == 1.0 + 60.0 - 10.0  # two of four must leave: the one at t=1
    # raising it admits again, on top of the same count
    assert counters.try_consume([lim(max=10)], CALL, 11.0) is None
    (view,) = counters.snapshot(11.0)
    assert (view.count, view.max) == (5, 10)


def test_update_limits_shows_a_reloaded_max_before_the_next_call():
    counters = Counters("mlflow")
    counters.try_consume([lim(max=5)], CALL, 0.0)
    counters.update_limits([lim(max=1), lim("unrelated", max=9)])
    (view,) = counters.snapshot(1.0)
    assert (view.count, view.max, view.retry_after_s) == (1, 1, 59.0)


def test_snapshot_views():
    counters = Counters("mlflow")
    counters.try_consume([lim("b", max=2, scope="global")], CALL, 0.0)
    counters.try_consume([lim("a", max=1, window="second")], CALL, 0.0)
    assert counters.snapshot(0.5) == [
        CounterView("a", "grant", "ci", 1, 1, 1.0, 0.5),
        CounterView("b", "global", "*", 1, 2, 60.0, 0.0),
    ]
    # a window passes: the count goes back to 0 but the gauge stays
    assert counters.snapshot(61.0) == [
        CounterView("a", "grant", "ci", 0, 1, 1.0, 0.0),
        CounterView("b", "global", "*", 0, 2, 60.0, 0.0),
    ]


def test_retain_drops_unnamed_counters_only_after_their_window():
    bus = EventBus()
    seen: list[CounterChanged] = []
    bus.add_listener(seen.append)
    counters = Counters("mlflow", bus)
    counters.try_consume([lim("old", max=5)], CALL, 0.0)
    counters.try_consume([lim("old", max=5)], CALL, 30.0)
    counters.try_consume([lim("kept", max=5)], CALL, 0.0)
    assert counters.retain(["kept"], 89.0) == []  # the admission at 30 still counts
    assert {v.counter for v in counters.snapshot(89.0)} == {"old", "kept"}
    # a rule naming it again in the meantime keeps its count
    assert counters.check([lim("old", max=1)], CALL, 89.0).count == 1
    seen.clear()
    assert counters.retain(["kept"], 90.0) == ["old"]
    assert [v.counter for v in counters.snapshot(1000.0)] == ["kept"]
    assert [(e.counter, e.count) for e in seen] == [("old", 0)]
    # back from scratch
    assert counters.check([lim("old", max=1)], CALL, 91.0) is None


def test_counter_changed_is_published_on_each_admission():
    bus = EventBus()
    seen = []
    bus.add_listener(seen.append)
    counters = Counters("mlflow", bus)
    limits = [lim("w", max=2), lim("g", max=9, scope="global")]
    counters.try_consume(limits, CALL, 5.0)
    counters.try_consume(limits, CALL, 6.0)
    counters.try_consume(limits, CALL, 7.0)  # refused: no event
    assert all(isinstance(e, CounterChanged) for e in seen)
    assert [(e.server, e.counter, e.scope, e.scope_key, e.count, e.max, e.window_s, e.retry_after_s)
            for e in seen] == [
        ("mlflow", "w", "grant", "ci", 1, 2, 60.0, 0.0),
        ("mlflow", "g", "global", "*", 1, 9, 60.0, 0.0),
        ("mlflow", "w", "grant", "ci", 2, 2, 60.0, 59.0),
        ("mlflow", "g", "global", "*", 2, 9, 60.0, 0.0),
    ]


def test_a_stale_now_never_admits_more():
    counters = Counters("mlflow")
    limit = lim(max=1, window="second")
    assert counters.try_consume([limit], CALL, 10.0) is None
    # a caller that read the clock before the admission above
    r = counters.try_consume([limit], CALL, 9.5)
    assert r is not None and r.retry_after_s == 1.0
    # another caller looked at 11.0 (the slot is free then); a late caller
    # with a clock read at 10.5 is admitted as of 11.0, so its admission
    # counts until 12.0, not 11.5
    assert counters.check([limit], CALL, 11.0) is None
    assert counters.try_consume([limit], CALL, 10.5) is None
    assert counters.check([limit], CALL, 11.6).retry_after_s == pytest.approx(0.4)


def test_old_admissions_are_pruned():
    counters = Counters("mlflow")
    limit = lim(max=1000, window="second")
    for i in range(5000):
        counters.try_consume([limit], CALL, i * 0.01)
    log = next(iter(counters._logs.values()))
    assert len(log.times) <= 101


def test_zero_max_never_admits():
    counters = Counters("mlflow")
    r = counters.try_consume([lim(max=0)], CALL, 0.0)
    assert r is not None and r.max == 0 and r.retry_after_s == 60.0


def test_the_seed_policy_with_the_real_policy_engine():
    """PolicyLayer's seed document: 30 set_experiment_tag calls a minute per grant, the 31st rate-limited."""
    from mcpguard.policy import evaluate, parse_policy

    seed = ('{"version":"1","default":"deny","tools":{"set_experiment_tag":{"limits":[{"counter":'
            '"set_experiment_tag_rate","window":"minute","max":30,"scope":"grant"}]}}}')
    policy = parse_policy(seed, "json", "seed.json")
    counters = Counters("mlflow")
    call = Call(server="mlflow", tool="set_experiment_tag", grant="ci")
    for i in range(30):
        d = evaluate(call, policy, counters, 1000.0 + i)
        assert d.action == "allow", d
        assert isinstance(d.limits[0], LimitLike)
        assert counters.try_consume(d.limits, call, 1000.0 + i) is None
    d = evaluate(call, policy, counters, 1030.0)
    assert (d.action, d.code, d.retry_after_s) == ("deny", "rate_limited", 30.0)
    # another grant has its own counter
    assert evaluate(Call(server="mlflow", tool="set_experiment_tag", grant="other"), policy, counters,
                    1030.0).action == "allow"
    # a reload that drops the limit keeps the counter until its window has passed
    bare = parse_policy('{"version":"1","default":"allow"}', "json", "bare.json")
    assert counters.retain(bare.counter_names(), 1060.0) == []
    assert counters.retain(bare.counter_names(), 1090.0) == ["set_experiment_tag_rate"]
