"""CallLog, the console's fold of bus events: row cap, denials, pending, counters; the table's name folds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mcpguard import events as ev
from mcpguard.console.model import CallLog


def received(i: int) -> ev.CallReceived:
    return ev.CallReceived(call_id=f"c{i}", server="s", tool="t", arguments={}, grant="local",
                           session_id=None, client=None, ts=1000.0 + i)


def test_keeps_only_the_newest_max_rows_and_reports_evictions() -> None:
    log = CallLog(max_rows=3)
    new, _ = log.apply([received(i) for i in range(5)])
    assert list(log.calls) == ["c2", "c3", "c4"]
    assert new == ["c2", "c3", "c4"] and log.evicted == ["c0", "c1"]
    # a completion updates its row and counts the denial; the cap still holds
    log.apply([ev.CallCompleted(call_id="c4", server="s", tool="t", outcome="rate_limited",
                                is_error=True, duration_ms=1.0)])
    assert log.denied_total == 1 and log.calls["c4"].decision_label == "…"
    assert len(log.calls) == 3


def test_pending_counters_and_labels() -> None:
    log = CallLog()
    log.apply([received(1),
               ev.CallDecided(call_id="c1", server="s", tool="t", action="require_approval",
                              code="approval_required", rule="tools.t.action", message=""),
               ev.ApprovalRequested(approval_id="a1", call_id="c1", server="s", tool="t", arguments={},
                                    grant="local", session_id=None, client=None, risk="high", reason=None,
                                    deadline=2000.0),
               ev.CounterChanged(server="s", counter="w", scope="grant", scope_key="local", count=4, max=5,
                                 window_s=60, retry_after_s=0, ts=1000.0)])
    rec = log.calls["c1"]
    assert rec.decision_label == "pending" and rec.result_label == "waiting" and list(log.pending) == ["a1"]
    assert log.counters[("s", "w", "local", False)].ratio == 0.8
    _, changed = log.apply([ev.ApprovalResolved(approval_id="a1", call_id="c1", server="s", tool="t",
                                                outcome="timed_out", approved=False, by="timeout")])
    assert changed == {"c1"} and not log.pending and rec.decision_label == "timed out"
    log.apply([ev.CounterChanged(server="s", counter="w", scope="grant", scope_key="local", count=0, max=5,
                                 window_s=60, retry_after_s=0)])
    assert not log.counters


def test_denied_means_code_refused_for_the_count_and_the_filter_alike() -> None:
    """The status bar's `N denied` counts what the `/denied` filter finds: every `Code.refused` outcome."""
    from mcpguard.codes import Code

    log = CallLog()
    outcomes = [c for c in Code if c is not Code.APPROVAL_REQUIRED]
    events = []
    for i, code in enumerate(outcomes):
        events += [received(i),
                   ev.CallDecided(call_id=f"c{i}", server="s", tool="t",
                                  action="allow" if not code.refused or code.upstream_fault else "deny",
                                  code=code if code.refused and not code.upstream_fault else "allowed",
                                  rule=None, message=""),
                   ev.CallCompleted(call_id=f"c{i}", server="s", tool="t", outcome=code,
                                    is_error=code.refused, duration_ms=1.0)]
    log.apply(events)
    found = {rec.outcome for rec in log.calls.values() if "denied" in rec.search_text()}
    assert found == {c for c in outcomes if c.refused}
    assert log.denied_total == len(found) == sum(1 for c in Code if c.refused)
    words = {rec.outcome: rec.search_text() for rec in log.calls.values()}
    assert "limited" in words[Code.RATE_LIMITED] and "rate_limited" in words[Code.RATE_LIMITED]
    assert "hidden" in words[Code.HIDDEN] and "error" in words[Code.UPSTREAM_ERROR]
    assert "approved" in words[Code.APPROVED] and "denied" not in words[Code.ALLOWED]


@settings(max_examples=300, deadline=None)
@given(st.sets(st.text(alphabet="abcdefgh_", min_size=1, max_size=40), min_size=1, max_size=30),
       st.integers(min_value=4, max_value=30))
def test_folded_names_fit_and_never_look_alike(names: set[str], width: int) -> None:
    from rich.cells import cell_len

    from mcpguard.console.calltable import distinct_folds

    shown = distinct_folds(names, width)
    assert set(shown) == names
    assert len(set(shown.values())) == len(names)
    for name, text in shown.items():
        assert cell_len(text) <= width
        assert text == name if cell_len(name) <= width else "…" in text


def test_folds_tell_the_lookalike_mlflow_tools_apart() -> None:
    from mcpguard.console.calltable import distinct_folds, fold

    names = {"get_model_version", "get_model_versions", "get_model_version_by_alias"}
    assert fold("get_model_versions", 12) == "get_mo…sions"
    shown = distinct_folds(names, 12)
    assert len(set(shown.values())) == 3 and all(len(s) <= 12 for s in shown.values())
    # two names that differ only in the middle still differ
    mid = distinct_folds({"alpha_x_omega_stage_one", "alpha_y_omega_stage_one"}, 12)
    assert len(set(mid.values())) == 2
