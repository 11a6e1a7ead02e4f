"""`mcpguard replay` on a session recorded through the real gateway.

Once per module, real `mcp` SDK clients (two sessions) call the everything
server through the gateway under RECORDED, with the audit log on: reads, an
echo burst, approvals a person approves and denies, a deny_if denial, a
default denial, a hidden tool, a secret argument the log redacts. Then the real
CLI (`python -m mcpguard replay`, a subprocess) decides that audit file again
under edited policies, and the tests assert the exact calls that would change,
the counts and the exit codes; bad inputs are copies of that file, broken.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from upstreams.harness import client, everything_server, make_config, running

from mcpguard.audit import KINDS, read_audit
from mcpguard.policy import parse_policy
from mcpguard.whatif import RecordedCall, read_calls, what_would_change

ROOT = Path(__file__).resolve().parent.parent

RECORDED = """\
version = "1"
default = "deny"
hide = ["secret_tool"]

[tools.echo]
[[tools.echo.limits]]
counter = "echo_rate"
window = "minute"
max = 20
scope = "session"

[tools.status]

[tools.delete_thing]
action = "require_approval"
approval_timeout = "30s"

[[tools.delete_thing.deny_if]]
conditions = [{ path = "args.id", op = "eq", value = "prod" }]
on_deny = "Agents may not delete prod."
"""

# what session A, then session B, call, in order, and what the person answers
SESSION_A: list[tuple[str, dict[str, Any], str | None]] = [
    ("echo", {"text": "a1"}, None),
    ("echo", {"text": "a2"}, None),
    ("echo", {"text": "a3"}, None),
    ("echo", {"text": "a4"}, None),
    ("echo", {"text": "a5"}, None),
    ("echo", {"text": "a6"}, None),
    ("status", {}, None),
    ("delete_thing", {"id": "x1"}, "approve"),
    ("delete_thing", {"id": "prod"}, None),
    ("delete_thing", {"id": "x2"}, "deny"),
    ("delete_thing", {"id": "x3"}, "approve"),
    ("progress", {"steps": 1}, None),
    ("secret_tool", {}, None),
    ("echo", {"text": "with key", "api_key": "sk-live-123"}, None),
]
SESSION_B: list[tuple[str, dict[str, Any], str | None]] = [
    ("echo", {"text": "b1"}, None),
    ("echo", {"text": "b2"}, None),
]
RECORDED_CODES = (["allowed"] * 7 + ["approval_required", "policy_denied", "approval_required", "approval_required",
                                     "policy_denied", "hidden", "allowed"] + ["allowed"] * 2)


async def _call(gw, s, tool: str, args: dict[str, Any], answer: str | None) -> types.CallToolResult:
    task = asyncio.create_task(s.call_tool(tool, args))
    if answer is not None:
        for _ in range(500):
            pending = gw.approvals.pending()
            if pending:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError(f"{tool} never waited for approval")
        (pa,) = pending
        if answer == "approve":
            gw.approvals.approve(pa.id)
        else:
            gw.approvals.deny(pa.id, reason="not now")
    return await asyncio.wait_for(task, 30)


async def _record(tmp: Path) -> Path:
    audit = tmp / "audit.jsonl"
    cfg = make_config(tmp, [everything_server("ev", tmp, RECORDED)], audit_log=str(audit))
    async with running(cfg) as gw:
        async with client(gw.url("ev")) as a:
            for tool, args, answer in SESSION_A:
                await _call(gw, a, tool, args, answer)
        async with client(gw.url("ev")) as b:
            for tool, args, answer in SESSION_B:
                await _call(gw, b, tool, args, answer)
    return audit


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The audit log of the recorded session (read only: tests copy it to change it)."""
    tmp = tmp_path_factory.mktemp("recorded")
    audit = asyncio.run(_record(tmp))
    decisions = [r for r in read_audit(audit) if r["kind"] == "decision"]
    assert [r["decision"] for r in decisions] == RECORDED_CODES, [r["decision"] for r in decisions]
    return audit


def replay(audit: Path, policy_text: str | None, *extra: str, tmp: Path, suffix: str = ".toml",
           policy_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, with `policy_text` written to a file."""
    if policy_path is None:
        policy_path = tmp / f"new{suffix}"
        policy_path.write_text(policy_text or "", encoding="utf-8")
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", TERM="dumb")
    return subprocess.run([sys.executable, "-m", "mcpguard", "replay", str(audit), "--policy", str(policy_path),
                           *extra], capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)


def as_json(res: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    return json.loads(res.stdout)


def changed(doc: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(tool, text or id argument, change, old code, new code) of each changed call."""
    out = []
    for ch in doc["changes"]:
        args = ch["arguments"] or {}
        out.append((ch["tool"], str(args.get("text", args.get("id", ""))), ch["change"], ch["old"]["code"],
                    ch["new"]["code"]))
    return out


# --- the replay's answers -----------------------------------------------------------


def test_the_same_policy_changes_nothing_and_exits_0(recorded, tmp_path):
    res = replay(recorded, RECORDED, tmp=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    lines = res.stdout.splitlines()
    assert lines[0] == f"{recorded} (server ev) under {tmp_path / 'new.toml'}: 16 calls, 0 would change"
    assert lines[1] == ("  allow → deny: 0, deny → allow: 0, newly rate-limited: 0, newly needing approval: 0")
    doc = as_json(replay(recorded, RECORDED, "--json", tmp=tmp_path))
    assert (doc["calls"], doc["changed"], doc["unknown"], doc["unreadable"], doc["exit"]) == (16, 0, 0, 0, 0)


def test_a_limit_lowered_below_the_recorded_rate_rate_limits_exactly_the_calls_over_it(recorded, tmp_path):
    lowered = RECORDED.replace("max = 20", "max = 4")
    res = replay(recorded, lowered, "--json", tmp=tmp_path)
    assert res.returncode == 1, res.stderr
    doc = as_json(res)
    # session A's 5th, 6th and 7th echo; session B has its own counter (scope = "session")
    assert changed(doc) == [
        ("echo", "a5", "newly_rate_limited", "allowed", "rate_limited"),
        ("echo", "a6", "newly_rate_limited", "allowed", "rate_limited"),
        ("echo", "with key", "newly_rate_limited", "allowed", "rate_limited"),
    ]
    assert doc["counts"] == {"allow_to_deny": 0, "deny_to_allow": 0, "newly_rate_limited": 3,
                             "newly_requires_approval": 0, "no_longer_requires_approval": 0,
                             "deny_reason_changed": 0}
    first = doc["changes"][0]
    assert first["new"]["rule"] == "tools.echo.limits[0]"
    assert first["trace"][-1]["detail"].startswith("counter echo_rate [") and first["trace"][-1]["detail"].endswith(
        "] at 4/4 per minute")
    assert first["line"] > 0 and first["time"].endswith("Z")

    table = replay(recorded, lowered, tmp=tmp_path)
    assert table.returncode == 1
    out = table.stdout
    assert ": 16 calls, 3 would change" in out.splitlines()[0]
    assert "newly rate-limited: 3" in out
    rows = [line for line in out.splitlines() if "newly rate-limited" in line and "│" in line]
    assert len(rows) == 3 and all("allowed" in r and "rate_limited" in r and "tools.echo.limits[0]" in r for r in rows)


def test_global_scope_counts_both_sessions_together(recorded, tmp_path):
    shared = RECORDED.replace("max = 20", "max = 6").replace('scope = "session"', 'scope = "global"')
    doc = as_json(replay(recorded, shared, "--json", tmp=tmp_path))
    assert changed(doc) == [
        ("echo", "with key", "newly_rate_limited", "allowed", "rate_limited"),
        ("echo", "b1", "newly_rate_limited", "allowed", "rate_limited"),
        ("echo", "b2", "newly_rate_limited", "allowed", "rate_limited"),
    ]


def test_a_deny_if_added_on_an_argument_denies_exactly_the_matching_calls(recorded, tmp_path):
    added = RECORDED.replace("[tools.status]", """\
[[tools.echo.deny_if]]
conditions = [{ path = "args.text", op = "regex", value = "^b" }]
on_deny = "Session B may not echo."

[tools.status]""")
    res = replay(recorded, added, "--json", tmp=tmp_path)
    assert res.returncode == 1, res.stderr
    doc = as_json(res)
    assert changed(doc) == [
        ("echo", "b1", "allow_to_deny", "allowed", "policy_denied"),
        ("echo", "b2", "allow_to_deny", "allowed", "policy_denied"),
    ]
    ch = doc["changes"][0]
    assert ch["new"]["rule"] == "tools.echo.deny_if[0]"
    assert ch["new"]["message"] == "echo is denied by policy: Session B may not echo."
    assert ch["trace"][-1] == {"rule": "tools.echo.deny_if[0]", "outcome": "deny",
                               "detail": 'args.text regex "^b": holds', "shadow": False}


def test_default_allow_lets_denied_calls_through_but_hidden_stays_hidden(recorded, tmp_path):
    doc = as_json(replay(recorded, RECORDED.replace('default = "deny"', 'default = "allow"'), "--json", tmp=tmp_path))
    assert changed(doc) == [("progress", "", "deny_to_allow", "policy_denied", "allowed")]


def test_removing_a_tool_and_asking_for_approval_elsewhere(recorded, tmp_path):
    edited = RECORDED.replace("[tools.status]\n", "").replace(
        '[tools.echo]\n', '[tools.echo]\naction = "require_approval"\n')
    doc = as_json(replay(recorded, edited, "--json", tmp=tmp_path))
    echoes = [c for c in changed(doc) if c[0] == "echo"]
    assert len(echoes) == 9 and {c[2:] for c in echoes} == {("newly_requires_approval", "allowed", "approval_required")}
    assert [c for c in changed(doc) if c[0] != "echo"] == [("status", "", "allow_to_deny", "allowed", "policy_denied")]
    assert doc["counts"]["newly_requires_approval"] == 9 and doc["counts"]["allow_to_deny"] == 1


def test_approvals_a_person_denied_do_not_count_against_a_new_limit(recorded, tmp_path):
    def capped(n: int) -> str:
        return RECORDED.replace('approval_timeout = "30s"\n', 'approval_timeout = "30s"\n'
                                f'[[tools.delete_thing.limits]]\ncounter = "deletes"\nwindow = "hour"\nmax = {n}\n')

    # x1 (approved) takes the only slot; prod is denied by its deny_if; x2 and x3 would be refused at once
    assert changed(as_json(replay(recorded, capped(1), "--json", tmp=tmp_path))) == [
        ("delete_thing", "x2", "newly_rate_limited", "approval_required", "rate_limited"),
        ("delete_thing", "x3", "newly_rate_limited", "approval_required", "rate_limited"),
    ]
    # with 2 slots, x2 (which the person denied, so it never went) leaves the second one to x3
    assert changed(as_json(replay(recorded, capped(2), "--json", tmp=tmp_path))) == []


def test_shadow_rules_change_no_outcome_and_the_report_counts_what_they_would_do(recorded, tmp_path):
    trial = RECORDED.replace("[tools.status]", """\
[[tools.echo.limits]]
counter = "echo_trial"
window = "minute"
max = 4
scope = "session"
mode = "shadow"

[[tools.echo.deny_if]]
conditions = [{ path = "args.text", op = "regex", value = "^b" }]
mode = "shadow"

[tools.status]""")
    res = replay(recorded, trial, "--json", tmp=tmp_path)
    assert res.returncode == 0, res.stderr
    doc = as_json(res)
    # a5, a6 and the keyed echo would be rate-limited in session A; b1, b2 would be denied
    assert (doc["changed"], doc["would"]) == (0, {"would_rate_limit": 3, "would_deny": 2})
    table = replay(recorded, trial, tmp=tmp_path)
    assert "the new policy's shadow rules: would deny: 2, would rate limit: 3" in table.stdout


def test_policylayer_json_policy_replays_like_its_toml(recorded, tmp_path):
    doc = {"version": "1", "default": "deny", "hide": ["secret_tool"],
           "tools": {"echo": {"limits": [{"counter": "echo_rate", "window": "minute", "max": 4, "scope": "session"}]},
                     "status": {},
                     "delete_thing": {"action": "require_approval", "approval_timeout": "30s",
                                      "deny_if": [{"conditions": [{"path": "args.id", "op": "eq", "value": "prod"}],
                                                   "on_deny": "Agents may not delete prod."}]}}}
    res = replay(recorded, json.dumps(doc), "--json", tmp=tmp_path, suffix=".json")
    assert res.returncode == 1, res.stderr
    assert [c[1] for c in changed(as_json(res))] == ["a5", "a6", "with key"]


# --- what the log does not hold -----------------------------------------------------------


def test_the_log_redacted_the_secret_argument(recorded):
    (rec,) = [r for r in read_audit(recorded) if r["kind"] == "decision" and r["arguments"].get("api_key")]
    assert rec["arguments"] == {"text": "with key", "api_key": "[redacted]"}
    assert rec["redacted"] == ["/arguments/api_key"]


def test_a_rule_on_a_redacted_argument_is_reported_never_guessed(recorded, tmp_path):
    on_secret = RECORDED.replace("[tools.status]", """\
[[tools.echo.deny_if]]
conditions = [{ path = "args.api_key", op = "regex", value = "^sk-live-" }]
on_deny = "No live keys."

[tools.status]""")
    res = replay(recorded, on_secret, "--json", tmp=tmp_path)
    assert res.returncode == 1, res.stderr  # something may change
    doc = as_json(res)
    assert (doc["changed"], doc["unknown"]) == (0, 1)
    (u,) = doc["unknown_calls"]
    assert (u["tool"], u["change"], u["old"]["code"]) == ("echo", "unknown", "allowed")
    assert u["unknown"] == [{"path": "args.api_key", "reason": "redacted", "rule": "tools.echo.deny_if[0]",
                             "shadow": False}]
    assert "new" not in u and "trace" not in u
    table = replay(recorded, on_secret, tmp=tmp_path)
    assert "1 call cannot be decided again: the decision depends on arguments the audit log does not hold" in table.stdout
    assert "args.api_key (redacted in the log), read by tools.echo.deny_if[0]" in table.stdout


def test_presence_of_a_redacted_argument_is_known(recorded, tmp_path):
    exists = RECORDED.replace("[tools.status]", """\
[[tools.echo.deny_if]]
conditions = [{ path = "args.api_key", op = "exists" }]

[tools.status]""")
    doc = as_json(replay(recorded, exists, "--json", tmp=tmp_path))
    assert (doc["unknown"], changed(doc)) == (0, [("echo", "with key", "allow_to_deny", "allowed", "policy_denied")])


async def _record_capped(tmp: Path) -> Path:
    """A session whose audit log caps each value at 1 KiB (the smallest cap the writer takes)."""
    audit = tmp / "audit.jsonl"
    cfg = make_config(tmp, [everything_server("ev", tmp, RECORDED)], audit_log=str(audit), audit_max_value_bytes=1024)
    async with running(cfg) as gw, client(gw.url("ev")) as s:
        for args in ({"text": "short"}, {"text": "long " + "x" * 3000}, {"text": "[redacted]"}):
            assert not (await s.call_tool("echo", args)).is_error
    return audit


def test_truncated_arguments_are_reported_as_such_and_a_literal_redacted_string_is_known(tmp_path):
    audit = asyncio.run(_record_capped(tmp_path))
    short, long_, literal = [r for r in read_audit(audit) if r["kind"] == "decision"]
    assert long_["truncated"] == ["/arguments"] and long_["arguments"]["_mcpguard_truncated"] is True
    # the writer lists what it changed, so this argument really is the string "[redacted]"
    assert literal["arguments"] == {"text": "[redacted]"} and "redacted" not in literal

    on_text = RECORDED.replace("[tools.status]", """\
[[tools.echo.deny_if]]
conditions = [{ path = "args.text", op = "eq", value = "[redacted]" }]

[tools.status]""")
    res = replay(audit, on_text, "--json", tmp=tmp_path)
    assert res.returncode == 1, res.stderr
    doc = as_json(res)
    assert changed(doc) == [("echo", "[redacted]", "allow_to_deny", "allowed", "policy_denied")]
    (u,) = doc["unknown_calls"]
    assert (u["arguments"], u["unknown"]) == (None, [{"path": "args.text", "reason": "truncated",
                                                      "rule": "tools.echo.deny_if[0]", "shadow": False}])
    # a rule that reads no argument decides the truncated call all the same
    doc2 = as_json(replay(audit, RECORDED.replace("max = 20", "max = 1"), "--json", tmp=tmp_path))
    assert doc2["unknown"] == 0 and [c[1] for c in changed(doc2)] == ["", "[redacted]"]  # long (not held), literal


def test_a_record_without_arguments_is_not_guessed(recorded, tmp_path):
    audit = tmp_path / "audit.jsonl"
    out = []
    for line in recorded.read_text().splitlines():
        rec = json.loads(line)
        if rec["kind"] == "decision" and rec["arguments"].get("text") == "b2":
            del rec["arguments"]
        out.append(json.dumps(rec))
    audit.write_text("\n".join(out) + "\n")
    on_text = RECORDED.replace("[tools.status]", """\
[[tools.echo.deny_if]]
conditions = [{ path = "args.text", op = "eq", value = "forbidden" }]

[tools.status]""")
    doc = as_json(replay(audit, on_text, "--json", tmp=tmp_path))
    assert [(u["arguments"], u["unknown"][0]["reason"]) for u in doc["unknown_calls"]] == [(None, "not recorded")]


# --- bad input -----------------------------------------------------------------------


def test_torn_last_line_and_unknown_records_are_listed_with_their_lines_and_exit_2(recorded, tmp_path):
    audit = tmp_path / "audit.jsonl"
    shutil.copy(recorded, audit)
    n = len(recorded.read_text().splitlines())
    with audit.open("a") as f:
        f.write('{"kind":"mystery","ts":1}\n')
        f.write('{"kind":"decision","ts":"yesterday","server":"ev","tool":"echo","decision":"allowed"}\n')
        f.write('["not", "a", "record"]\n')
        f.write('{"kind":"completion","ts":17,"call_id":5,"decision":"allowed"}\n')
        f.write('{"kind":"decision","ts":17')  # a write cut short
    res = replay(audit, RECORDED.replace("max = 20", "max = 4"), tmp=tmp_path)
    assert res.returncode == 2
    errs = res.stderr.splitlines()
    assert errs[:4] == [
        f'{audit}:{n + 1}: cannot read: unknown record kind "mystery" (known: {", ".join(KINDS)})',
        f'{audit}:{n + 2}: cannot read: decision record: "ts" must be epoch seconds (a number)',
        f"{audit}:{n + 3}: cannot read: not a JSON object but a list",
        f"{audit}:{n + 4}: cannot read: completion record: needs call_id and decision strings",
    ]
    assert errs[4].startswith(f"{audit}:{n + 5}: cannot read: torn last line (no newline, not JSON: EOF while parsing")
    assert errs[4].endswith("): a write cut short") and len(errs) == 5
    # the readable calls are still replayed, and the count of the others is printed
    assert "16 calls, 3 would change" in res.stdout
    assert "5 records could not be read (listed on stderr with their lines); the others were replayed" in res.stdout
    doc = as_json(replay(audit, RECORDED, "--json", tmp=tmp_path))
    assert (doc["calls"], doc["unreadable"], doc["exit"]) == (16, 5, 2)
    assert [u["line"] for u in doc["unreadable_records"]] == [n + 1, n + 2, n + 3, n + 4, n + 5]


def test_a_policy_with_errors_exits_2_with_file_line_col(recorded, tmp_path):
    res = replay(recorded, RECORDED.replace('window = "minute"', 'window = "minit"').replace(
        'action = "require_approval"', 'action = "require_approval"\nmode = "dry"'), tmp=tmp_path)
    assert res.returncode == 2
    p = tmp_path / "new.toml"
    assert res.stderr.splitlines() == [
        f'{p}:8:1: error: window "minit" is not one of second, minute, hour, day (did you mean "minute"?)',
        f'{p}:16:1: error: mode "dry" is not one of enforce, shadow',
        f"mcpguard replay: {p}: 2 errors; nothing was replayed",
    ]
    assert res.stdout == ""


def test_missing_files_and_bad_since_exit_2(recorded, tmp_path):
    res = replay(tmp_path / "nope.jsonl", RECORDED, tmp=tmp_path)
    assert (res.returncode, res.stderr.strip()) == (2, f"mcpguard replay: {tmp_path / 'nope.jsonl'}: no such file")
    res = replay(recorded, None, tmp=tmp_path, policy_path=tmp_path / "missing.toml")
    assert res.returncode == 2 and f"{tmp_path / 'missing.toml'}:1:1: error: cannot read policy" in res.stderr
    res = replay(recorded, RECORDED, "--since", "last tuesday", tmp=tmp_path)
    assert res.returncode == 2 and "--since 'last tuesday' is neither a duration" in res.stderr
    res = replay(recorded, RECORDED, "--server", "other", tmp=tmp_path)
    assert res.returncode == 2 and "has no calls to server 'other' (it has: ev)" in res.stderr


def test_since_reports_only_recent_calls_but_earlier_ones_fill_the_counters(recorded, tmp_path):
    ts = {c.arguments.get("text"): c.ts for c in read_calls(recorded).calls}
    # from between a5 and a6 on: the 6th call of session A and everything after it
    cut = (ts["a5"] + ts["a6"]) / 2
    since = datetime.fromtimestamp(cut, timezone.utc).isoformat()
    doc = as_json(replay(recorded, RECORDED.replace("max = 20", "max = 4"), "--json", "--since", since, tmp=tmp_path))
    assert doc["calls"] == 11 and doc["warmup"] == 5
    assert [c[1] for c in changed(doc)] == ["a6", "with key"]  # a5 is before --since, but still counted
    assert as_json(replay(recorded, RECORDED, "--json", "--since", "1h", tmp=tmp_path))["calls"] == 16


def test_several_servers_need_server(recorded, tmp_path):
    audit = tmp_path / "audit.jsonl"
    text = recorded.read_text()
    audit.write_text(text + text.replace('"server":"ev"', '"server":"other"'))
    res = replay(audit, RECORDED, tmp=tmp_path)
    assert res.returncode == 2
    assert "has calls to 2 servers: ev (16 calls), other (16 calls); a policy belongs to one" in res.stderr
    ok = as_json(replay(audit, RECORDED.replace("max = 20", "max = 4"), "--server", "other", "--json", tmp=tmp_path))
    assert (ok["server"], ok["calls"], ok["changed"]) == ("other", 16, 3)


# --- the core, for the console's preview -----------------------------------------------------------


def test_what_would_change_compares_two_policies_on_the_same_calls(recorded):
    calls = read_calls(recorded).calls
    current = parse_policy(RECORDED, "toml", "current.toml")
    edit = parse_policy(RECORDED.replace("max = 20", "max = 5"), "toml", "edit.toml")
    report = what_would_change(calls[-6:], edit, old_policy=current)
    # the last 6 calls hold only one echo of session A: nothing is over 5 there
    assert (report.calls, report.changed) == (6, 0)
    report = what_would_change(calls, edit, old_policy=current)
    assert [(c.call.arguments.get("text"), c.change) for c in report.changes] == [
        ("a6", "newly_rate_limited"), ("with key", "newly_rate_limited")]
    assert report.changes[0].old.code == "allowed" and report.changes[0].step.outcome == "deny"


def test_recorded_call_from_a_record_dict_and_its_errors():
    rc = RecordedCall.from_record({"kind": "decision", "ts": 10, "server": "ev", "tool": "echo",
                                   "decision": "allowed", "arguments": {"token": "[redacted]"}})
    # a record that lists nothing it changed holds every value as received
    assert (rc.grant, rc.session_id, rc.held, rc.changed, rc.action, rc.ts) == (
        "local", None, "whole", None, "allow", 10.0)
    listed = RecordedCall.from_record({"kind": "decision", "ts": 10, "server": "ev", "tool": "echo",
                                       "decision": "allowed", "arguments": {"token": "[redacted]", "a/b": 1},
                                       "redacted": ["/arguments/token", "/arguments/a~1b"]})
    assert (listed.held, listed.changed) == ("marked", {"/token": "redacted", "/a~1b": "redacted"})
    with pytest.raises(ValueError, match='"redacted" must be a list of JSON Pointers'):
        RecordedCall.from_record({"kind": "decision", "ts": 10, "server": "ev", "tool": "t", "decision": "allowed",
                                  "redacted": "/arguments/token"})
    with pytest.raises(ValueError, match='missing "tool"'):
        RecordedCall.from_record({"kind": "decision", "ts": 10, "server": "ev", "decision": "allowed"})
    with pytest.raises(ValueError, match='unknown decision "maybe" and no "action"'):
        RecordedCall.from_record({"kind": "decision", "ts": 10, "server": "ev", "tool": "t", "decision": "maybe"})


def test_completions_join_their_decision_in_any_order_and_a_second_decision_is_counted(recorded, tmp_path):
    lines = recorded.read_text().splitlines()
    found = read_calls(recorded)
    outcomes = {c.arguments.get("id"): c.outcome for c in found.calls if c.tool == "delete_thing"}
    assert outcomes == {"x1": "approved", "prod": None, "x2": "approval_denied", "x3": "approved"}
    others = sum(1 for line in lines if '"kind":"approval"' in line or '"kind":"session_approval"' in line)
    assert others == 3  # a person's answers: x1 and x3 approved, x2 denied
    assert (found.records, found.other, found.decided_again, found.unreadable) == (len(lines), others, 0, [])
    # the completion of x2 first, and its decision written twice
    (dec,) = [i for i, line in enumerate(lines) if '"kind":"decision"' in line and '"id":"x2"' in line]
    (done,) = [i for i, line in enumerate(lines) if '"kind":"completion"' in line
               and json.loads(line)["call_id"] == json.loads(lines[dec])["call_id"]]
    moved = [lines[done]] + [line for i, line in enumerate(lines) if i != done] + [lines[dec]]
    audit = tmp_path / "audit.jsonl"
    audit.write_text("\n".join(moved) + "\n")
    again = read_calls(audit)
    assert {c.arguments.get("id"): c.outcome for c in again.calls if c.tool == "delete_thing"} == outcomes
    assert (len(again.calls), again.decided_again) == (16, 1)
