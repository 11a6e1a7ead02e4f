"""The audit log: JSONL on disk, flushed per record, secrets redacted, never raising."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
from datetime import datetime

import pytest

from mcpguard.approvals import Approvals
from mcpguard.audit import REDACTED, AuditLog, AuditWriteFailed, iso_utc, read_audit, redact
from mcpguard.call import Call
from mcpguard.events import (
    CallCompleted,
    CallDecided,
    CallReceived,
    EventBus,
    PolicyRejected,
    PolicyReloaded,
    ToolChanged,
)


def test_each_record_is_one_line_on_disk_before_record_returns(tmp_path):
    path = tmp_path / "deep" / "er" / "audit.jsonl"
    audit = AuditLog(path, clock=lambda: 1_800_000_000.25)
    audit.record({"kind": "decision", "call_id": "c1", "server": "mlflow", "tool": "get_run",
                  "grant": "local", "arguments": {"run_id": "abc"}, "decision": "allowed", "rule": None})
    # another reader sees it at once, with the log still open
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec == {"kind": "decision", "time": "2027-01-15T08:00:00.250Z", "ts": 1_800_000_000.25,
                   "call_id": "c1", "server": "mlflow", "tool": "get_run", "grant": "local",
                   "arguments": {"run_id": "abc"}, "decision": "allowed"}
    audit.record({"kind": "completion", "call_id": "c1", "duration_ms": 12.5, "is_error": False,
                  "result_size": 321})
    assert [r["kind"] for r in read_audit(path)] == ["decision", "completion"]
    assert audit.records == 2 and audit.errors == 0
    audit.close()
    audit.close()


def test_time_is_iso_utc():
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"
    assert datetime.fromisoformat(iso_utc(1_763_769_344.5)).tzinfo is not None


def test_appends_to_an_existing_log(tmp_path):
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as a:
        a.record({"kind": "decision", "call_id": "1"})
    with AuditLog(path, fsync=True) as a:
        a.record({"kind": "decision", "call_id": "2"})
    assert [r["call_id"] for r in read_audit(path)] == ["1", "2"]


def test_redact_nested_case_insensitive_substring():
    args = {
        "run_id": "r1",
        "api_key": "k",
        "headers": {"Authorization": "Bearer x", "X-Api-Key": "y", "accept": "json"},
        "nested": [{"db_PASSWORD": "p"}, {"ok": 1}],
        "GithubToken": "t",
        "client_secret": "s",
        "passwd": "p",
        "credentials": {"user": "u"},
        "private_key": "-----BEGIN",
        "apikey": "z",
        "privateKey": "k",
    }
    before = json.dumps(args)
    out = redact(args)
    assert out == {
        "run_id": "r1",
        "api_key": REDACTED,
        "headers": {"Authorization": REDACTED, "X-Api-Key": REDACTED, "accept": "json"},
        "nested": [{"db_PASSWORD": REDACTED}, {"ok": 1}],
        "GithubToken": REDACTED,
        "client_secret": REDACTED,
        "passwd": REDACTED,
        "credentials": REDACTED,
        "private_key": REDACTED,
        "apikey": REDACTED,
        "privateKey": REDACTED,
    }
    assert json.dumps(args) == before  # the caller's arguments are untouched
    assert redact({"session_cookie": "c", "key": "k"}, extra_keys=["cookie"]) == {
        "session_cookie": REDACTED, "key": "k"}


def test_records_are_redacted_with_extra_keys(tmp_path):
    path = tmp_path / "a.jsonl"
    args = {"name": "m", "password": "hunter2", "cfg": {"Cookie": "c"}}
    with AuditLog(path, redact_keys=["cookie"]) as audit:
        audit.record({"kind": "decision", "arguments": args})
    text = path.read_text()
    assert "hunter2" not in text and '"c"' not in text
    assert read_audit(path)[0]["arguments"] == {"name": "m", "password": REDACTED, "cfg": {"Cookie": REDACTED}}
    assert args["password"] == "hunter2"


def test_values_json_cannot_hold_are_written_as_strings(tmp_path):
    path = tmp_path / "a.jsonl"
    with AuditLog(path) as audit:
        audit.record({"kind": "completion", "x": math.nan, "y": b"raw", "z": {1, 2} and "set", "w": (1, 2)})
    rec = read_audit(path)[0]
    assert rec["x"] == "nan" and rec["y"] == "b'raw'" and rec["w"] == [1, 2]


def test_a_full_disk_never_raises_and_is_told(caplog):
    bus = EventBus()
    seen = []
    bus.add_listener(seen.append)
    audit = AuditLog("/dev/full", bus=bus)  # every write fails with ENOSPC
    with caplog.at_level(logging.WARNING, logger="mcpguard.audit"):
        for i in range(3):
            audit.record({"kind": "decision", "call_id": str(i)})
    assert (audit.records, audit.errors) == (0, 3)
    assert "No space left" in audit.last_error
    assert [type(e) for e in seen] == [AuditWriteFailed] * 3 and seen[-1].errors == 3
    assert len([r for r in caplog.records if "cannot write" in r.getMessage()]) == 1  # first one only
    audit.close()


def test_an_unwritable_folder_is_counted_then_recovers(tmp_path):
    blocker = tmp_path / "logs"
    blocker.write_text("a file where the folder should be")
    path = blocker / "audit.jsonl"
    audit = AuditLog(path)  # does not raise
    audit.record({"kind": "decision", "call_id": "lost"})
    assert audit.errors == 2 and audit.records == 0
    blocker.unlink()
    audit.record({"kind": "decision", "call_id": "kept"})
    assert [r["call_id"] for r in read_audit(path)] == ["kept"]
    audit.close()


def test_writers_in_threads_never_interleave_lines(tmp_path):
    path = tmp_path / "a.jsonl"
    logs = [AuditLog(path) for _ in range(4)]

    def write(n: int) -> None:
        for i in range(200):
            logs[n].record({"kind": "decision", "call_id": f"{n}-{i}", "arguments": {"pad": "x" * 500}})

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    records = read_audit(path)
    assert sorted(r["call_id"] for r in records) == sorted(f"{n}-{i}" for n in range(4) for i in range(200))
    for a in logs:
        a.close()


def test_read_audit_skips_a_torn_last_line_and_names_a_bad_one(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"kind":"decision"}\n\n{"kind":"compl')
    assert read_audit(path) == [{"kind": "decision"}]
    path.write_text('{"kind":"decision"}\nnot json\n{"kind":"completion"}\n')
    with pytest.raises(ValueError, match=r"a\.jsonl:2: not a JSON audit record"):
        read_audit(path)
    with pytest.raises(FileNotFoundError):
        read_audit(tmp_path / "missing.jsonl")


async def test_attached_to_the_bus_it_records_decisions_and_completions(tmp_path):
    """The core's own events and approvals, through a real bus, make one record per decision and completion."""
    path = tmp_path / "audit.jsonl"
    bus = EventBus()
    audit = AuditLog(path)
    detach = audit.attach(bus)
    approvals = Approvals(bus)
    call = Call(server="mlflow", tool="transition_model_version_stage",
                arguments={"name": "m", "version": "1", "stage": "Production", "token": "s3cr3t"},
                grant="ci", session_id="sess-1", client="claude-code", call_id="c7")
    bus.publish(CallReceived(call_id=call.call_id, server=call.server, tool=call.tool, arguments=call.arguments,
                             grant=call.grant, session_id=call.session_id, client=call.client))
    bus.publish(CallDecided(call_id="c7", server="mlflow", tool=call.tool, action="require_approval",
                            code="approval_required", rule="tools.transition_model_version_stage",
                            message="Stage changes reach production consumers.", risk="high"))
    assert read_audit(path)[-1]["decision"] == "approval_required"  # on disk before anything else happens
    waiter = asyncio.ensure_future(approvals.request(call, timeout_s=30))
    for _ in range(100):
        if approvals.pending():
            break
        await asyncio.sleep(0.01)
    approvals.approve(approvals.pending()[0].id, by="console")
    assert (await waiter).approved
    bus.publish(CallCompleted(call_id="c7", server="mlflow", tool=call.tool, outcome="approved",
                              is_error=False, duration_ms=1234.5678, result_size=88))
    bus.publish(ToolChanged(server="mlflow", tool="get_run", old_fingerprint="aa", new_fingerprint="bb"))
    bus.publish(PolicyReloaded(server="mlflow", path="p.toml", diff="-max = 3\n+max = 5"))  # skipped by default
    detach()
    bus.publish(PolicyRejected(server="mlflow", path="p.toml", errors=("p.toml:1:1: bad",)))

    decision, approval, completion, changed = read_audit(path)
    assert decision["kind"] == "decision" and decision["call_id"] == "c7"
    assert {k: approval.get(k) for k in ("kind", "call_id", "outcome", "approved", "approver", "session")} == {
        "kind": "approval", "call_id": "c7", "outcome": "approved", "approved": True, "approver": "console",
        "session": "sess-1"}
    assert {k: decision[k] for k in ("server", "tool", "grant", "session", "client", "decision", "rule", "risk")} == {
        "server": "mlflow", "tool": "transition_model_version_stage", "grant": "ci", "session": "sess-1",
        "client": "claude-code", "decision": "approval_required", "rule": "tools.transition_model_version_stage",
        "risk": "high"}
    assert decision["arguments"] == {"name": "m", "version": "1", "stage": "Production", "token": REDACTED}
    assert "s3cr3t" not in path.read_text()
    assert decision["time"].endswith("Z") and isinstance(decision["ts"], float)
    assert {k: completion[k] for k in ("kind", "call_id", "decision", "approver", "duration_ms", "is_error",
                                       "result_size", "grant", "session", "client")} == {
        "kind": "completion", "call_id": "c7", "decision": "approved", "approver": "console",
        "duration_ms": 1234.568, "is_error": False, "result_size": 88, "grant": "ci", "session": "sess-1",
        "client": "claude-code"}
    assert changed == {**changed, "kind": "tool_changed", "tool": "get_run", "old_fingerprint": "aa",
                       "new_fingerprint": "bb"}
    audit.close()


def test_record_event_writes_policy_events_when_asked(tmp_path):
    path = tmp_path / "audit.jsonl"
    bus = EventBus()
    with AuditLog(path) as audit:
        audit.attach(bus, policy_events=True)
        bus.publish(PolicyReloaded(server="mlflow", path="p.toml", diff="+x"))
        bus.publish(PolicyRejected(server="mlflow", path="p.toml", errors=("p.toml:3:7: bad window",)))
    kinds = [(r["kind"], r.get("errors")) for r in read_audit(path)]
    assert kinds == [("policy_reloaded", None), ("policy_rejected", ["p.toml:3:7: bad window"])]


# ---- size caps: a value longer than max_value_bytes is kept as size, digest and preview


def _compact(value) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def test_a_huge_argument_and_error_are_capped_with_size_digest_and_preview(tmp_path):
    import hashlib

    path = tmp_path / "a.jsonl"
    blob = "".join(f"{i:08x}" for i in range((7 * 1024 * 1024 // 2) // 8))  # 3.5 MiB of distinct text
    args = {"run_id": "r1", "blob": blob}
    error = "upstream said: " + "é" * 100_000  # 200 KB of UTF-8 in 100,015 characters
    with AuditLog(path) as audit:
        audit.record({"kind": "decision", "call_id": "c1", "server": "mlflow", "tool": "log_artifact",
                      "arguments": args, "decision": "allowed", "message": "ok", "error": error})
    line = path.read_bytes()
    assert len(line) < 2 * 1024  # 3.7 MB given
    rec = read_audit(path)[0]
    whole = _compact(args)
    assert rec["arguments"] == {"_mcpguard_truncated": True, "form": "json", "bytes": len(whole),
                                "sha256": hashlib.sha256(whole).hexdigest(), "preview": whole.decode()[:256]}
    assert rec["arguments"]["bytes"] > 3.5 * 1024 * 1024
    text = error.encode("utf-8")
    assert rec["error"] == {"_mcpguard_truncated": True, "form": "text", "bytes": len(text),
                            "sha256": hashlib.sha256(text).hexdigest(), "preview": error[:256]}
    assert rec["truncated"] == ["/arguments", "/error"] and "redacted" not in rec
    # the rest of the record as given
    assert {k: rec[k] for k in ("kind", "call_id", "server", "tool", "decision", "message")} == {
        "kind": "decision", "call_id": "c1", "server": "mlflow", "tool": "log_artifact", "decision": "allowed",
        "message": "ok"}
    assert args["blob"] is blob  # the caller's value untouched


def test_the_digest_of_a_capped_value_is_over_its_redacted_form(tmp_path):
    import hashlib

    path = tmp_path / "a.jsonl"
    args = {"api_key": "sk-live-123", "rows": [{"id": i, "v": "x" * 40} for i in range(200)]}
    with AuditLog(path, max_value_bytes=4096) as audit:
        audit.record({"kind": "decision", "arguments": args})
    assert "sk-live-123" not in path.read_text()
    rec = read_audit(path)[0]
    assert rec["redacted"] == ["/arguments/api_key"] and rec["truncated"] == ["/arguments"]
    shown = _compact({**args, "api_key": REDACTED})
    assert (rec["arguments"]["bytes"], rec["arguments"]["sha256"]) == (len(shown), hashlib.sha256(shown).hexdigest())


def test_a_value_within_the_cap_is_kept_whole_and_the_cap_is_checked(tmp_path):
    path = tmp_path / "a.jsonl"
    with AuditLog(path, max_value_bytes=4096) as audit:
        audit.record({"kind": "decision", "arguments": {"text": "y" * 4000}})  # 4011 bytes of JSON
        audit.record({"kind": "decision", "arguments": {"text": "y" * 4100}})
    kept, capped = read_audit(path)
    assert kept["arguments"] == {"text": "y" * 4000} and "truncated" not in kept
    assert capped["arguments"]["_mcpguard_truncated"] is True and capped["truncated"] == ["/arguments"]
    for bad in (0, 1023, True, 4096.0):
        with pytest.raises(ValueError, match="max_value_bytes must be a whole number of bytes, 1024 or more"):
            AuditLog(tmp_path / "b.jsonl", max_value_bytes=bad)
    assert not (tmp_path / "b.jsonl").exists()


async def test_a_35_mib_argument_through_the_gateway_makes_a_small_record(tmp_path):
    """The gateway's audit log under its default cap: the call is decided as ever, the log gets a marker."""
    from upstreams.harness import client, everything_server, make_config, running

    audit_path = tmp_path / "audit.jsonl"
    policy = 'version = "1"\ndefault = "allow"\n[tools.delete_thing]\naction = "deny"\n'
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, policy)], audit_log=str(audit_path))
    thing = "z" * (7 * 1024 * 1024 // 2)
    async with running(cfg) as gw, client(gw.url("ev")) as s:
        res = await s.call_tool("delete_thing", {"id": thing})
        assert res.is_error and res.meta["mcpguard/decision"]["code"] == "policy_denied"
    lines = audit_path.read_bytes().splitlines()
    assert lines and max(len(line) for line in lines) < 4 * 1024
    (decision,) = [r for r in read_audit(audit_path) if r["kind"] == "decision"]
    assert decision["truncated"] == ["/arguments"] and decision["decision"] == "policy_denied"
    assert decision["arguments"]["bytes"] == len(_compact({"id": thing}))


# ---- which keys are secret


@pytest.mark.parametrize("key", [
    "passphrase", "Cookie", "Set-Cookie", "session_token", "sessionId", "jwt", "id_jwt", "aws_access_key_id",
    "AWS_SECRET_ACCESS_KEY", "private_key", "client_secret", "refresh_token", "accessToken", "bearer",
    "ssh_key", "pem", "cert_pem", "certPEM", "sentryDSN", "dsn", "db_pwd", "basic_auth", "auth", "otp", "totp",
    "x-csrf", "connection_string", "mnemonic", "seed_phrase", "signing_key", "encryptionKey", "X-Auth-Token",
])
def test_secret_keys_are_redacted(key):
    assert redact({key: "s3cr3t", "name": "n"}) == {key: REDACTED, "name": "n"}


@pytest.mark.parametrize("key", [
    "key", "value", "name", "session", "author", "auth_type", "authority", "pem_path", "jwt_audience",
    "deep_embedding", "stop_empty", "group_embedding", "description", "run_id", "keyword", "otp_length",
    "dsn_name", "passes", "experiment_id", "tag_key",
])
def test_keys_that_only_look_alike_are_kept(key):
    assert redact({key: "v"}) == {key: "v"}


def test_records_say_where_they_were_redacted(tmp_path):
    path = tmp_path / "a.jsonl"
    with AuditLog(path) as audit:
        audit.record({"kind": "decision", "arguments": {
            "headers": {"Authorization": "Bearer x"}, "a/b~c": {"token": 1}, "list": [{"ok": 1}, {"password": 2}]}})
        audit.record({"kind": "decision", "arguments": {"note": REDACTED}})  # an agent that sent the word itself
    first, second = read_audit(path)
    assert first["redacted"] == ["/arguments/headers/Authorization", "/arguments/a~1b~0c/token",
                                 "/arguments/list/1/password"]
    assert second["arguments"] == {"note": REDACTED} and "redacted" not in second
