"""Shadow rules (mcpguard's extension): `mode = "shadow"` on a tool rule, a limit, a
deny_if/require entry, and `shadow = true` on a policy. Parsing and validation in
TOML and PolicyLayer JSON, then evaluate() with real Counters: the call goes
through, and the decision says what the shadow rules would have done."""

from __future__ import annotations

import json
from textwrap import dedent

import pytest

from mcpguard.call import Call
from mcpguard.policy import Decision, PolicyError, evaluate, parse_policy
from mcpguard.ratelimit import Counters

HEAD = 'version = "1"\ndefault = "deny"\n'

SHADOWED = """
version = "1"
default = "deny"

[tools.echo]
[[tools.echo.limits]]
counter = "echo_rate"
window = "minute"
max = 5

[[tools.echo.limits]]
counter = "echo_trial"
window = "minute"
max = 2
mode = "shadow"

[[tools.echo.deny_if]]
conditions = [{ path = "args.text", op = "eq", value = "prod" }]
on_deny = "Not on prod."
mode = "shadow"

[[tools.echo.require]]
conditions = [{ path = "args.text", op = "exists" }]
mode = "enforce"

[tools.delete_thing]
action = "deny"
reason = "Deletes are for people."
mode = "shadow"

[tools.stage]
action = "require_approval"
approval_timeout = "30s"
mode = "shadow"
"""

SHADOWED_JSON = {
    "version": "1",
    "default": "deny",
    "tools": {
        "echo": {
            "limits": [
                {"counter": "echo_rate", "window": "minute", "max": 5},
                {"counter": "echo_trial", "window": "minute", "max": 2, "mode": "shadow"},
            ],
            "deny_if": [{"conditions": [{"path": "args.text", "op": "eq", "value": "prod"}],
                         "on_deny": "Not on prod.", "mode": "shadow"}],
            "require": [{"conditions": [{"path": "args.text", "op": "exists"}], "mode": "enforce"}],
        },
        "delete_thing": {"action": "deny", "reason": "Deletes are for people.", "mode": "shadow"},
        "stage": {"action": "require_approval", "approval_timeout": "30s", "mode": "shadow"},
    },
}


def load(text: str, fmt: str = "toml"):
    return parse_policy(dedent(text).lstrip("\n"), fmt, f"p.{fmt}")


def errors(text: str, fmt: str = "toml") -> list[str]:
    with pytest.raises(PolicyError) as info:
        load(text, fmt)
    return [str(i) for i in info.value.issues]


def call(tool: str, args: dict | None = None, grant: str = "agent-a") -> Call:
    return Call("ev", tool, args if args is not None else {}, grant=grant)


def forward(d: Decision, c: Call, counters: Counters, shadow: Counters, now: float) -> None:
    """What the gateway does with a call it forwards: consume both kinds of limits."""
    assert d.action == "allow", d.message
    assert counters.try_consume(d.limits, c, now) is None
    assert shadow.try_consume(d.shadow_limits, c, now) is None


# --- parsing and validation ---------------------------------------------------


def test_toml_and_policylayer_json_load_to_the_same_shadow_policy():
    toml = load(SHADOWED)
    js = load(json.dumps(SHADOWED_JSON, indent=2), "json")
    assert toml == js
    echo = toml.tools["echo"]
    assert [(lim.counter, lim.mode) for lim in echo.limits] == [("echo_rate", "enforce"), ("echo_trial", "shadow")]
    assert echo.deny_if[0].mode == "shadow" and echo.require[0].mode == "enforce" and echo.mode == "enforce"
    assert toml.tools["delete_thing"].mode == "shadow"
    assert toml.counter_names() == {"echo_rate"} and toml.shadow_counter_names() == {"echo_trial"}
    assert [lim.counter for lim in toml.limits_for("echo")] == ["echo_rate"]
    assert [lim.counter for lim in toml.shadow_limits_for("echo")] == ["echo_trial"]
    assert toml.warnings == ()


def test_mode_enforce_is_the_default_and_plain_policies_have_no_shadow():
    p = load(HEAD + '[tools.t]\n[[tools.t.limits]]\ncounter = "c"\nwindow = "hour"\nmax = 3\n')
    assert p.tools["t"].mode == "enforce" and p.tools["t"].limits[0].mode == "enforce"
    assert not p.shadow and not p.has_shadow and p.shadow_counter_names() == frozenset()


def test_a_shadow_tool_rule_makes_its_limits_and_entries_shadow():
    p = load(HEAD + '[tools.t]\nmode = "shadow"\n[[tools.t.limits]]\ncounter = "c"\nwindow = "hour"\nmax = 3\n'
             '[[tools.t.deny_if]]\nconditions = [{ path = "args.x", op = "exists" }]\n')
    rule = p.tools["t"]
    assert rule.limits[0].mode == "shadow" and rule.deny_if[0].mode == "shadow"
    assert p.limits_for("t") == () and p.shadow_counter_names() == {"c"}
    assert p.action_for("t") == "allow"


def test_shadow_true_puts_every_rule_and_all_tools_limits_in_shadow():
    p = load('version = "1"\ndefault = "deny"\nshadow = true\nhide = ["h"]\n'
             '[[all_tools.limits]]\ncounter = "all"\nwindow = "minute"\nmax = 100\nscope = "global"\n'
             '[tools.t]\naction = "deny"\n')
    assert p.shadow and p.has_shadow
    assert p.counter_names() == frozenset() and p.shadow_counter_names() == {"all"}
    assert p.tools["t"].mode == "shadow"
    # a shadow policy removes nothing from tools/list and enforces no action
    assert not p.is_hidden("h") and p.hides("h")
    assert p.action_for("h") == "allow" and p.action_for("t") == "allow" and p.action_for("unlisted") == "allow"
    assert (p.shadow_action_for("h"), p.shadow_action_for("t"), p.shadow_action_for("unlisted")) == ("hidden", "deny", "deny")


def test_unknown_mode_value_is_an_error_with_line_col_and_hint():
    assert errors(HEAD + '[tools.t]\nmode = "shadw"\n') == [
        'p.toml:4:1: mode "shadw" is not one of enforce, shadow (did you mean "shadow"?)']


def test_unknown_mode_in_a_limit_and_an_entry_in_json_has_its_position():
    doc = {"version": "1", "default": "deny", "tools": {"t": {
        "limits": [{"counter": "c", "window": "hour", "max": 3, "mode": "dry-run"}],
        "deny_if": [{"conditions": [{"path": "args.x", "op": "exists"}], "mode": True}]}}}
    found = errors(json.dumps(doc, indent=2), "json")
    assert found == [
        "p.json:11:11: mode \"dry-run\" is not one of enforce, shadow",
        "p.json:22:11: mode True is not one of enforce, shadow",
    ]


def test_shadow_must_be_a_boolean():
    assert errors(HEAD + 'shadow = "yes"\n') == [
        'p.toml:3:1: shadow must be true or false, not "yes" '
        "(shadow = true decides every call without enforcing (the call goes through))"]


def test_mode_on_a_condition_is_an_unknown_key():
    found = errors(HEAD + '[[tools.t.deny_if]]\nconditions = [{ path = "args.x", op = "exists", mode = "shadow" }]\n')
    assert found == ['p.toml:4:49: unknown key "mode" in tools.t.deny_if[0].conditions[0] (allowed keys: path, op, value)']


def test_one_counter_cannot_be_both_enforced_and_shadowed():
    found = errors(HEAD + '[[tools.a.limits]]\ncounter = "writes"\nwindow = "minute"\nmax = 5\n'
                   '[[tools.b.limits]]\ncounter = "writes"\nwindow = "minute"\nmax = 5\nmode = "shadow"\n')
    assert found == [
        'p.toml:8:1: counter "writes" is enforced by tools.a.limits[0] and shadowed by tools.b.limits[0] '
        "(shadow limits count in counters of their own, so that neither uses up the other's budget: "
        "give the shadow limit its own counter name)"]


def test_mode_enforce_under_shadow_true_is_a_warning():
    p = load(HEAD + 'shadow = true\n[tools.t]\nmode = "enforce"\n')
    assert [str(w) for w in p.warnings] == [
        'p.toml:5:1: tools.t has mode = "enforce" but the policy has shadow = true, so nothing is enforced '
        "(remove shadow = true to enforce this rule, or remove its mode)"]
    assert p.tools["t"].mode == "shadow"


# --- evaluate -----------------------------------------------------------------


def test_shadow_limit_reports_would_rate_limit_and_never_uses_the_enforcing_budget():
    p = load(SHADOWED)
    counters, shadow = Counters("ev"), Counters("ev")
    seen = []
    for i in range(6):
        c = call("echo", {"text": f"t{i}"})
        d = evaluate(c, p, counters, 100.0 + i, shadow_counters=shadow)
        seen.append((d.action, d.code, d.would))
        if d.action == "allow":
            forward(d, c, counters, shadow, 100.0 + i)
    assert seen == [
        ("allow", "allowed", None),
        ("allow", "allowed", None),
        ("allow", "allowed", "would_rate_limit"),  # the shadow max is 2: the call still goes
        ("allow", "allowed", "would_rate_limit"),
        ("allow", "allowed", "would_rate_limit"),
        ("deny", "rate_limited", None),            # the enforcing max is 5
    ]
    assert d.rule == "tools.echo.limits[0]"
    views = {v.counter: v.count for v in counters.snapshot(106.0)}
    shadow_views = {v.counter: v.count for v in shadow.snapshot(106.0)}
    # a call the shadow limit refused is not counted in it; the enforcing counter never sees it
    assert views == {"echo_rate": 5} and shadow_views == {"echo_trial": 2}


def test_would_rate_limit_names_the_shadow_limit_and_its_retry_after():
    p = load(SHADOWED)
    counters, shadow = Counters("ev"), Counters("ev")
    for t in (10.0, 20.0):
        c = call("echo", {"text": "x"})
        forward(evaluate(c, p, counters, t, shadow_counters=shadow), c, counters, shadow, t)
    d = evaluate(call("echo", {"text": "x"}), p, counters, 30.0, shadow_counters=shadow)
    assert (d.action, d.would, d.would_code, d.would_rule) == ("allow", "would_rate_limit", "rate_limited", "tools.echo.limits[1]")
    assert d.shadow.retry_after_s == pytest.approx(40.0)
    assert d.would_message == "echo is rate-limited: 2 calls per minute per grant; retry after 40.0 s"
    assert d.shadow_limits == ()  # refused in the shadow world: nothing to count there
    assert [lim.counter for lim in d.limits] == ["echo_rate"]
    assert d.shadow_fields() == {"would": "would_rate_limit", "would_code": "rate_limited",
                                 "would_rule": "tools.echo.limits[1]", "would_message": d.would_message,
                                 "would_retry_after_s": 40.0}


def test_shadow_deny_if_lets_the_call_through_and_says_it_would_deny():
    p = load(SHADOWED)
    d = evaluate(call("echo", {"text": "prod"}), p, Counters("ev"), 0.0, shadow_counters=Counters("ev"))
    assert (d.action, d.code, d.rule) == ("allow", "allowed", "tools.echo")
    assert (d.would, d.would_code, d.would_rule) == ("would_deny", "policy_denied", "tools.echo.deny_if[0]")
    assert d.would_message == "echo is denied by policy: Not on prod."
    assert d.shadow_limits == ()
    steps = [(s.rule, s.outcome, s.shadow) for s in d.trace]
    assert steps == [
        ("hide", "pass", False),
        ("tools.echo", "pass", False),
        ("tools.echo.deny_if[0]", "would_deny", True),
        ("tools.echo.require[0]", "pass", False),   # enforcing rules after it still decide
        ("tools.echo.limits[0]", "pass", False),
        ("tools.echo", "allow", False),
    ]


def test_enforcing_rule_after_a_shadow_denial_still_denies_and_clears_would():
    p = load(SHADOWED)
    d = evaluate(call("echo", {}), p, Counters("ev"), 0.0)  # no text: the enforcing require fails
    assert (d.action, d.code, d.rule, d.would) == ("deny", "policy_denied", "tools.echo.require[0]", None)


def test_shadow_tool_rule_with_action_deny_allows_and_reports_would_deny():
    p = load(SHADOWED)
    d = evaluate(call("delete_thing", {"id": "x"}), p, Counters("ev"), 0.0)
    assert (d.action, d.code, d.rule) == ("allow", "allowed", "tools.delete_thing.mode")
    assert (d.would, d.would_rule, d.would_message) == (
        "would_deny", "tools.delete_thing.action", "delete_thing is denied by policy. Deletes are for people.")
    assert str(d.trace[1]) == 'tools.delete_thing.action (shadow): would_deny — action = "deny": Deletes are for people.'


def test_shadow_require_approval_lets_the_call_through_without_asking():
    p = load(SHADOWED)
    d = evaluate(call("stage", {}), p, Counters("ev"), 0.0)
    assert (d.action, d.code, d.approval_timeout_s) == ("allow", "allowed", None)
    assert (d.would, d.would_code, d.would_rule) == ("would_require_approval", "approval_required", "tools.stage.action")


def test_shadow_policy_lets_hidden_and_unlisted_tools_through():
    p = load('version = "1"\ndefault = "deny"\nshadow = true\nhide = ["secret"]\n[tools.echo]\n')
    hidden = evaluate(call("secret"), p, Counters("ev"), 0.0)
    assert (hidden.action, hidden.rule, hidden.would, hidden.would_code) == ("allow", "shadow", "would_deny", "hidden")
    assert hidden.would_message == "Unknown tool: secret"
    unlisted = evaluate(call("other"), p, Counters("ev"), 0.0)
    assert (unlisted.action, unlisted.would, unlisted.would_code, unlisted.would_rule) == (
        "allow", "would_deny", "policy_denied", "default")
    listed = evaluate(call("echo"), p, Counters("ev"), 0.0)
    assert (listed.action, listed.would) == ("allow", None)
    changed = evaluate(call("echo"), load('version = "1"\ndefault = "allow"\nshadow = true\non_tool_change = "deny"\n'),
                       Counters("ev"), 0.0, tool_changed=True)
    assert (changed.action, changed.would_code, changed.would_rule) == ("allow", "tool_changed", "on_tool_change")


def test_without_shadow_counters_shadow_limits_are_listed_but_not_checked():
    p = load(SHADOWED)
    d = evaluate(call("echo", {"text": "x"}), p, None, 0.0)
    assert d.would is None and [lim.counter for lim in d.shadow_limits] == ["echo_trial"]
    assert "(counters not checked)" in d.trace[-2].detail and d.trace[-2].shadow


def test_a_policy_without_shadow_rules_decides_exactly_as_before():
    plain = load(SHADOWED.replace('mode = "shadow"\n', ""))
    d = evaluate(call("delete_thing"), plain, Counters("ev"), 0.0)
    assert (d.action, d.rule, d.would, d.shadow_limits) == ("deny", "tools.delete_thing.action", None, ())
    assert d.shadow_fields() == {}
