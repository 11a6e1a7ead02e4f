"""`mcpguard check` and `mcpguard explain` as a user runs them: the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_policies" / "mlflow.toml"
TOOLS = ROOT / "tests" / "mlflow_tools.json"


def mcpguard(*argv: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="160", NO_COLOR="1", TERM="dumb")
    return subprocess.run([sys.executable, "-m", "mcpguard", *map(str, argv)], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env=env)


def row(out: str, tool: str) -> list[str]:
    """The cells of the table row that starts with `tool`."""
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if cells and cells[0].split("  ")[0] == tool:
            return cells
    raise AssertionError(f"no row for {tool}:\n{out}")


@pytest.mark.parametrize("policy", ["mlflow.toml", "mlflow.json"])
def test_check_sample_policy_prints_one_row_per_tool_and_exits_0(policy):
    res = mcpguard("check", ROOT / "sample_policies" / policy, "--tools", TOOLS)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert row(out, "set_experiment_tag") == ["set_experiment_tag", "allow", "", "30/min", "medium write"]
    assert row(out, "transition_model_version_stage")[:4] == ["transition_model_version_stage", "approval", "within 2m", "6/min [promotions]"]
    assert row(out, "delete_registered_model")[:2] == ["delete_registered_model", "hidden"]
    assert row(out, "delete_run")[1] == "deny"
    assert row(out, "get_run") == ["get_run", "allow", "", "", "low read"]
    assert "every call also counts against: 600/min [mlflow_calls]" in out
    assert "40 tools: 33 allowed, 2 need approval, 3 denied, 2 hidden; 9 counters" in out
    assert f"is valid" in out and "warning" not in out


def test_check_reports_every_error_with_file_line_col_and_exits_1(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('version = "1"\ndefault = "alow"\n[[tools.t.limits]]\ncounter = "c"\nwindow = "minit"\nmax = 0\n')
    res = mcpguard("check", bad)
    assert res.returncode == 1
    lines = res.stderr.splitlines()
    assert lines[:3] == [
        f'{bad}:2:1: error: default "alow" is not one of allow, deny (did you mean "allow"?)',
        f'{bad}:5:1: error: window "minit" is not one of second, minute, hour, day (did you mean "minute"?)',
        f'{bad}:6:1: error: max must be at least 1, not 0 (to block the tool, use action = "deny")',
    ]
    assert "3 errors; the policy was not loaded" in lines[3]
    assert res.stdout == ""


def test_check_syntax_error_exits_1(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": "1",\n "default": "deny"\n "tools": {}}')
    res = mcpguard("check", bad)
    assert res.returncode == 1
    assert res.stderr.startswith(f"{bad}:3:2: error: JSON syntax error: Expecting ',' delimiter")


def test_check_warns_about_unknown_tools_and_unlimited_writes_under_default_allow(tmp_path):
    p = tmp_path / "loose.toml"
    p.write_text('version = "1"\ndefault = "allow"\nhide = ["drop_everything"]\n[tools.get_run]\n[tools.get_rnu]\n'
                 '[[tools.set_run_tag.limits]]\ncounter = "tags"\nwindow = "minute"\nmax = 10\n')
    res = mcpguard("check", p, "--tools", TOOLS)
    assert res.returncode == 0, res.stderr
    warnings = [line for line in res.stdout.splitlines() if ": warning: " in line]
    assert f"{p}:5:1: warning: get_rnu is named by the policy but the server has no such tool" in warnings
    assert f"{p}:3:9: warning: drop_everything is named by the policy but the server has no such tool" in warnings
    unlimited = sorted(w.split("warning: ")[1].split(" is a ")[0] for w in warnings if "left unlimited" in w)
    # every non-read tool of the server except the capped set_run_tag
    writes = sorted(t["name"] for t in json.loads(TOOLS.read_text())["tools"]
                    if not t["annotations"].get("readOnlyHint") and t["name"] != "set_run_tag")
    assert unlimited == writes
    assert row(res.stdout, "get_rnu")[0] == "get_rnu  not on server"
    assert f"({len(writes) + 2} warnings)" in res.stdout


def test_check_unreadable_tools_file_exits_2(tmp_path):
    res = mcpguard("check", SAMPLE, "--tools", tmp_path / "nope.json")
    assert res.returncode == 2
    assert "cannot read" in res.stderr


def test_explain_shows_decision_message_and_trace():
    res = mcpguard("explain", SAMPLE, "transition_model_version_stage", "--args",
                   '{"name": "m", "version": "3", "stage": "Archived"}', "--tools", TOOLS)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "deny  code policy_denied, rule tools.transition_model_version_stage.deny_if[0]" in out
    assert ("the agent reads: transition_model_version_stage is denied by policy: Agents may not archive "
            "model versions; ask a person to do it in the MLflow UI.") in out
    assert row(out, "1") == ["1", "hide", "pass", "transition_model_version_stage is not hidden"]
    assert row(out, "3") == ["3", "tools.transition_model_version_stage.deny_if[0]", "deny",
                             'args.stage regex "(?i)^\\s*archived\\s*$": holds']
    assert "risk: high destructive" in out


def test_explain_approval_and_limits():
    res = mcpguard("explain", SAMPLE, "set_model_alias", "--args", '{"name": "m", "alias": "champion", "version": "2"}',
                   "--grant", "agent-a")
    assert res.returncode == 0, res.stderr
    assert "as grant agent-a: require_approval  code approval_required, rule tools.set_model_alias.action" in res.stdout
    assert "a person must approve within 2m, else it is denied" in res.stdout
    assert "counts against: promotions (6 calls per minute per grant); mlflow_calls (600 calls per minute per grant)" in res.stdout


def test_explain_hidden_and_unlisted_tools():
    hidden = mcpguard("explain", SAMPLE, "delete_experiment")
    assert "code hidden, rule hide" in hidden.stdout and "the agent reads: Unknown tool: delete_experiment" in hidden.stdout
    unlisted = mcpguard("explain", SAMPLE, "brand_new_tool")
    assert "code policy_denied, rule default" in unlisted.stdout


def test_explain_bad_args_exit_2():
    res = mcpguard("explain", SAMPLE, "get_run", "--args", '["not", "an", "object"]')
    assert res.returncode == 2
    assert "--args must be a JSON object" in res.stderr


SHADOW_TRIAL = """\
version = "1"
default = "deny"

[tools.set_model_alias]
action = "require_approval"
mode = "shadow"

[tools.delete_model_version]
[[tools.delete_model_version.deny_if]]
conditions = [{ path = "args.version", op = "lte", value = 2 }]
on_deny = "Old versions stay."
mode = "shadow"
[[tools.delete_model_version.limits]]
counter = "deletes_trial"
window = "hour"
max = 3
mode = "shadow"
"""


def test_explain_marks_shadow_steps_and_says_what_they_would_do(tmp_path):
    p = tmp_path / "trial.toml"
    p.write_text(SHADOW_TRIAL)
    res = mcpguard("explain", p, "delete_model_version", "--args", '{"name": "m", "version": "1"}')
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "delete_model_version" in out and ": allow  code allowed, rule tools.delete_model_version" in out
    assert "shadow: would deny  code policy_denied, rule tools.delete_model_version.deny_if[0]" in out
    assert "the agent would read: delete_model_version is denied by policy: Old versions stay." in out
    assert row(out, "3") == ["3", "tools.delete_model_version.deny_if[0] (shadow)", "would_deny",
                             "args.version lte 2: holds"]
    # a call the shadow rules would refuse counts in no shadow counter
    assert "counts against (shadow)" not in out

    newer = mcpguard("explain", p, "delete_model_version", "--args", '{"name": "m", "version": "7"}')
    assert "shadow: no shadow rule would change this decision" in newer.stdout
    assert "counts against (shadow): deletes_trial (3 calls per hour per grant)" in newer.stdout
    assert row(newer.stdout, "4") == ["4", "tools.delete_model_version.limits[0] (shadow)", "pass",
                                      "shadow counter deletes_trial: under 3 calls per hour per grant"]

    alias = mcpguard("explain", p, "set_model_alias", "--args", '{"name": "m", "alias": "a", "version": "1"}')
    assert ": allow  code allowed, rule tools.set_model_alias.mode" in alias.stdout
    assert "shadow: would require approval  code approval_required, rule tools.set_model_alias.action" in alias.stdout


def test_check_marks_shadow_rules_and_counts_shadow_counters(tmp_path):
    p = tmp_path / "trial.toml"
    p.write_text(SHADOW_TRIAL)
    res = mcpguard("check", p)
    assert res.returncode == 0, res.stderr
    assert row(res.stdout, "set_model_alias")[:3] == ["set_model_alias", "allow", "shadow: approval"]
    assert row(res.stdout, "delete_model_version")[:4] == ["delete_model_version", "allow", "1 deny_if shadow",
                                                           "3/h shadow"]
    assert "2 tools: 2 allowed, 0 need approval, 0 denied, 0 hidden; 0 counters, 1 shadow counters" in res.stdout
