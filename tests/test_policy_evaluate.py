"""evaluate(): design §3's order, codes, messages and rule paths, with real Counters."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcpguard.call import Call
from mcpguard.policy import Decision, load_policy, parse_policy, evaluate
from mcpguard.ratelimit import Counters

ROOT = Path(__file__).resolve().parent.parent
SEED = '{"version":"1","default":"deny","tools":{"set_experiment_tag":{"limits":[{"counter":"set_experiment_tag_rate","window":"minute","max":30,"scope":"grant"}]}}}'


def call(tool: str, args: dict | None = None, grant: str = "agent-a", **kw) -> Call:
    return Call("mlflow", tool, args or {}, grant=grant, **kw)


def forward(decision: Decision, c: Call, counters: Counters, now: float) -> None:
    """What the gateway does with an allowed call: consume its limits."""
    assert decision.action == "allow", decision.message
    assert counters.try_consume(decision.limits, c, now) is None


@pytest.fixture(scope="module")
def mlflow_policy():
    return load_policy(ROOT / "sample_policies" / "mlflow.toml")


def test_seed_document_allows_listed_tool_30_per_minute_per_grant_then_rate_limits():
    policy = parse_policy(SEED, "json", "seed.json")
    counters = Counters("mlflow")
    c = call("set_experiment_tag", {"experiment_id": "1", "key": "k", "value": "v"})
    for i in range(30):
        d = evaluate(c, policy, counters, 100.0 + i)
        assert (d.action, d.code, d.rule) == ("allow", "allowed", "tools.set_experiment_tag")
        forward(d, c, counters, 100.0 + i)
    d = evaluate(c, policy, counters, 130.0)
    assert (d.action, d.code, d.rule) == ("deny", "rate_limited", "tools.set_experiment_tag.limits[0]")
    # the oldest admission (t=100) leaves the minute window at t=160
    assert d.retry_after_s == pytest.approx(30.0)
    assert d.message == "set_experiment_tag is rate-limited: 30 calls per minute per grant; retry after 30.0 s"
    # another grant has its own counter
    other = call("set_experiment_tag", grant="agent-b")
    assert evaluate(other, policy, counters, 130.0).code == "allowed"
    # once the window slides past the first admission, one more call fits
    assert evaluate(c, policy, counters, 160.0).code == "allowed"


def test_seed_document_denies_unlisted_tools_by_default():
    policy = parse_policy(SEED, "json", "seed.json")
    d = evaluate(call("get_run", {"run_id": "x"}), policy, Counters("mlflow"), 0.0)
    assert (d.action, d.code, d.rule) == ("deny", "policy_denied", "default")
    assert "get_run is not allowed by this policy" in d.message


def test_default_allow_lets_unlisted_tools_through():
    policy = parse_policy('version = "1"\ndefault = "allow"\n', "toml", "p.toml")
    d = evaluate(call("anything"), policy, Counters("s"), 0.0)
    assert (d.action, d.code, d.rule) == ("allow", "allowed", "default")


def test_no_policy_denies_every_call():
    d = evaluate(call("get_run"), None, Counters("mlflow"), 0.0)
    assert (d.action, d.code) == ("deny", "no_policy")
    assert "no valid policy" in d.message


def test_hidden_tool_answers_as_unknown_before_any_other_rule(mlflow_policy):
    d = evaluate(call("delete_registered_model", {"name": "m"}), mlflow_policy, Counters("mlflow"), 0.0)
    assert (d.action, d.code, d.rule) == ("deny", "hidden", "hide")
    assert d.message == "Unknown tool: delete_registered_model"
    assert [s.rule for s in d.trace] == ["hide"]


def test_hide_star_hides_only_unlisted_tools():
    policy = parse_policy('version = "1"\ndefault = "allow"\nhide = ["*"]\n[tools.get_run]\n', "toml", "p.toml")
    assert policy.is_hidden("get_experiments") and not policy.is_hidden("get_run")
    assert evaluate(call("get_experiments"), policy, None, 0.0).code == "hidden"
    assert evaluate(call("get_run"), policy, None, 0.0).code == "allowed"


def test_action_deny_gives_the_reason(mlflow_policy):
    d = evaluate(call("delete_run", {"run_id": "abc"}), mlflow_policy, Counters("mlflow"), 0.0)
    assert (d.action, d.code, d.rule) == ("deny", "policy_denied", "tools.delete_run.action")
    assert d.message == ("delete_run is denied by policy. Runs are experiment records; "
                         "tag the run instead (set_run_tag) if it is bad.")


def test_deny_if_names_its_entry_and_beats_approval(mlflow_policy):
    c = call("transition_model_version_stage", {"name": "m", "version": "3", "stage": "archived"})
    d = evaluate(c, mlflow_policy, Counters("mlflow"), 0.0)
    assert (d.action, d.code, d.rule) == ("deny", "policy_denied", "tools.transition_model_version_stage.deny_if[0]")
    assert d.message.endswith("Agents may not archive model versions; ask a person to do it in the MLflow UI.")
    c2 = call("transition_model_version_stage", {"name": "m", "version": "3", "stage": "Production", "archive_existing": True})
    assert evaluate(c2, mlflow_policy, Counters("mlflow"), 0.0).rule == "tools.transition_model_version_stage.deny_if[1]"


def test_require_approval_carries_timeout_reason_and_limits(mlflow_policy):
    c = call("transition_model_version_stage", {"name": "m", "version": "3", "stage": "Production"})
    d = evaluate(c, mlflow_policy, Counters("mlflow"), 0.0)
    assert (d.action, d.code, d.rule) == ("require_approval", "approval_required", "tools.transition_model_version_stage.action")
    assert d.approval_timeout_s == 120.0
    assert "Stage changes reach production consumers." in d.message
    assert [lim.counter for lim in d.limits] == ["promotions", "mlflow_calls"]


def test_limit_check_comes_before_approval_and_shared_counter_spans_tools(mlflow_policy):
    counters = Counters("mlflow")
    alias = call("set_model_alias", {"name": "m", "alias": "champion", "version": "1"})
    for i in range(6):
        d = evaluate(alias, mlflow_policy, counters, float(i))
        assert d.action == "require_approval"
        counters.try_consume(d.limits, alias, float(i))  # approved and forwarded
    stage = call("transition_model_version_stage", {"name": "m", "version": "3", "stage": "Staging"})
    d = evaluate(stage, mlflow_policy, counters, 10.0)
    assert (d.code, d.rule) == ("rate_limited", "tools.transition_model_version_stage.limits[0]")
    assert d.retry_after_s == pytest.approx(60.0 - 10.0)


def test_all_tools_limit_counts_every_call():
    policy = parse_policy(
        'version = "1"\ndefault = "allow"\n[[all_tools.limits]]\ncounter = "all"\nwindow = "second"\nmax = 2\nscope = "session"\n',
        "toml", "p.toml")
    counters = Counters("s")
    for tool in ("a", "b"):
        c = call(tool, session_id="S1")
        forward(evaluate(c, policy, counters, 5.0), c, counters, 5.0)
    d = evaluate(call("c", session_id="S1"), policy, counters, 5.5)
    assert (d.code, d.rule) == ("rate_limited", "all_tools.limits[0]")
    assert "all tools together allow 2 calls per second per session" in d.message
    assert evaluate(call("c", session_id="S2"), policy, counters, 5.5).code == "allowed"


def test_evaluate_never_consumes():
    policy = parse_policy(SEED, "json", "seed.json")
    counters = Counters("mlflow")
    c = call("set_experiment_tag")
    for _ in range(100):
        assert evaluate(c, policy, counters, 1.0).code == "allowed"
    assert all(v.count == 0 for v in counters.snapshot(1.0))


def test_require_denies_when_its_conditions_do_not_hold():
    policy = parse_policy(
        '''version = "1"
default = "deny"
[[tools.register_model.require]]
conditions = [{ path = "args.model_uri", op = "regex", value = "^(runs|models):/" }]
on_deny = "Register models from runs:/ or models:/ URIs only."
''', "toml", "p.toml")
    ok = call("register_model", {"model_name": "m", "model_uri": "runs:/abc/model"})
    bad = call("register_model", {"model_name": "m", "model_uri": "s3://bucket/x"})
    missing = call("register_model", {"model_name": "m"})
    assert evaluate(ok, policy, None, 0.0).code == "allowed"
    for c in (bad, missing):
        d = evaluate(c, policy, None, 0.0)
        assert (d.code, d.rule) == ("policy_denied", "tools.register_model.require[0]")
        assert d.message == "register_model is denied by policy: Register models from runs:/ or models:/ URIs only."


def test_tool_changed_denies_only_under_on_tool_change_deny(mlflow_policy):
    c = call("get_run", {"run_id": "x"})
    d = evaluate(c, mlflow_policy, None, 0.0, tool_changed=True)
    assert (d.action, d.code, d.rule) == ("deny", "tool_changed", "on_tool_change")
    warn = parse_policy('version = "1"\ndefault = "allow"\n', "toml", "p.toml")
    d = evaluate(c, warn, None, 0.0, tool_changed=True)
    assert d.code == "allowed" and any(s.outcome == "warn" for s in d.trace)


def test_trace_lists_every_rule_looked_at(mlflow_policy):
    c = call("transition_model_version_stage", {"name": "m", "version": "3", "stage": "Production"})
    d = evaluate(c, mlflow_policy, Counters("mlflow"), 0.0)
    assert [(s.rule, s.outcome) for s in d.trace] == [
        ("hide", "pass"),
        ("tools.transition_model_version_stage.action", "pass"),
        ("tools.transition_model_version_stage.deny_if[0]", "pass"),
        ("tools.transition_model_version_stage.deny_if[1]", "pass"),
        ("tools.transition_model_version_stage.limits[0]", "pass"),
        ("all_tools.limits[0]", "pass"),
        ("tools.transition_model_version_stage.action", "approval"),
    ]


def test_risk_is_carried_and_meta_names_code_and_rule(mlflow_policy):
    marker = object()
    d = evaluate(call("delete_run"), mlflow_policy, None, 0.0, risk=marker)
    assert d.risk is marker
    assert d.meta() == {"code": "policy_denied", "rule": "tools.delete_run.action", "message": d.message}


@pytest.mark.parametrize(
    ("op", "value", "args", "expected"),
    [
        ("eq", "Archived", {"s": "Archived"}, True),
        ("eq", 1, {"s": True}, False),
        ("neq", "a", {"s": "b"}, True),
        ("neq", "a", {}, False),
        ("in", ["a", "b"], {"s": "b"}, True),
        ("not_in", ["a", "b"], {"s": "c"}, True),
        ("lt", 5, {"s": "3"}, True),
        ("gte", 5, {"s": 5}, True),
        ("gt", 5, {"s": "x"}, False),
        ("lte", "m", {"s": "a"}, True),
        ("regex", "^prod", {"s": "production"}, True),
        ("regex", "^prod", {"s": 3}, False),
        ("contains", "champ", {"s": "champion"}, True),
        ("contains", "x", {"s": ["x", "y"]}, True),
        ("contains", "team", {"s": {"team": 1}}, True),
        ("exists", True, {"s": None}, True),
        ("exists", False, {}, True),
        ("exists", True, {}, False),
    ],
)
def test_condition_ops(op, value, args, expected):
    import json
    cond = {"path": "args.s", "op": op, "value": value}
    doc = {"version": "1", "default": "allow", "tools": {"t": {"deny_if": [{"conditions": [cond]}]}}}
    policy = parse_policy(json.dumps(doc), "json", "p.json")
    d = evaluate(call("t", args), policy, None, 0.0)
    assert (d.code == "policy_denied") is expected


def test_nested_paths_walk_objects_and_lists():
    import json
    doc = {"version": "1", "default": "allow", "tools": {"t": {"deny_if": [
        {"conditions": [{"path": "args.tags.env", "op": "eq", "value": "prod"},
                        {"path": "args.ids.1", "op": "eq", "value": "b"}]}]}}}
    policy = parse_policy(json.dumps(doc), "json", "p.json")
    assert evaluate(call("t", {"tags": {"env": "prod"}, "ids": ["a", "b"]}), policy, None, 0).code == "policy_denied"
    assert evaluate(call("t", {"tags": {"env": "prod"}, "ids": ["a"]}), policy, None, 0).code == "allowed"
    assert evaluate(call("t", {"tags": "prod"}), policy, None, 0).code == "allowed"


# --- the fast path (per-tool plans and kept decisions) decides as the full evaluation does ---

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mcpguard.policy.evaluate import _UNCHECKED, _decide  # noqa: E402

_SAMPLE = load_policy(ROOT / "sample_policies" / "mlflow.toml")
_TOOLS = sorted(set(_SAMPLE.tools) | set(_SAMPLE.hide) | {"unknown_tool"})
_ARGS = st.fixed_dictionaries({}, optional={
    "stage": st.sampled_from(["Staging", "Production", "archived", " Archived ", "None"]),
    "archive_existing": st.booleans(),
    "description": st.sampled_from(["", "  ", "new model", "x"]),
    "name": st.just("m"),
})


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from(_TOOLS), _ARGS, st.sampled_from(["a", "b"]),
                                st.floats(0, 5), st.sampled_from([None, "r1", "r2"]), st.booleans()),
                      min_size=1, max_size=60))
def test_fast_path_equals_full_evaluation(steps):
    counters = Counters("mlflow")
    risks = {None: None, "r1": object(), "r2": object()}
    now = 0.0
    for tool, args, grant, dt, risk_name, use_counters in steps:
        now += dt
        c = Call("mlflow", tool, args, grant=grant)
        cs = counters if use_counters else None
        risk = risks[risk_name]
        fast = evaluate(c, _SAMPLE, cs, now, risk=risk)
        full = _decide(c, _SAMPLE, cs, now, risk, False, _UNCHECKED)
        assert fast == full
        assert fast.risk is risk
        if fast.action == "allow" and cs is not None:
            counters.try_consume(fast.limits, c, now)
