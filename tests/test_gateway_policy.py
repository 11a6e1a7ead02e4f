"""The tools/call interception point: decisions, rate limits, approvals, hidden and changed tools, events."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import mcp_types as types
from pydantic import TypeAdapter
from mcpguard.audit import read_audit
from upstreams.harness import client, everything_server, make_config, running

from mcpguard.events import (
    ApprovalRequested,
    ApprovalResolved,
    CallCompleted,
    CallDecided,
    CallReceived,
    CounterChanged,
)
from mcpguard.policy import parse_policy

RAW = TypeAdapter(dict[str, Any])

POLICY = """
version = "1"
default = "deny"
hide = ["secret_tool"]
on_tool_change = "deny"

[tools.echo]
[[tools.echo.limits]]
counter = "echo_rate"
window = "minute"
max = 3
scope = "session"

[tools.status]
[tools.mutate]

[tools.delete_thing]
action = "require_approval"
approval_timeout = "1s"
reason = "Deletes are reviewed by a person."

[[tools.delete_thing.deny_if]]
conditions = [{ path = "args.id", op = "eq", value = "prod" }]
on_deny = "Agents may not delete prod."
"""


def _meta(res: types.CallToolResult) -> dict[str, Any]:
    assert res.meta is not None
    return res.meta["mcpguard/decision"]


async def _wait_pending(gw, n: int = 1):
    for _ in range(500):
        pending = gw.approvals.pending()
        if len(pending) >= n:
            return pending
        await asyncio.sleep(0.01)
    raise AssertionError("no pending approval")


async def test_rate_limit_then_rate_limited_with_retry_after(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, POLICY)])
    async with running(cfg) as gw, client(gw.url("ev")) as s:
        sub = gw.bus.subscribe()
        for i in range(3):
            res = await s.call_tool("echo", {"text": str(i)})
            assert not res.is_error and res.content[0].text == str(i)
        res = await s.call_tool("echo", {"text": "4th"})
        assert res.is_error
        meta = _meta(res)
        assert meta["code"] == "rate_limited" and meta["rule"] == "tools.echo.limits[0]"
        assert 0 < meta["retry_after_s"] <= 60
        assert "Retry after" in res.content[0].text
        events = []
        while (e := sub.get_nowait()) is not None:
            events.append(e)
        kinds = [type(e).__name__ for e in events if not isinstance(e, CounterChanged)]
        assert kinds[:3] == ["CallReceived", "CallDecided", "CallCompleted"]
        assert sum(isinstance(e, CounterChanged) for e in events) == 3
        done = [e for e in events if isinstance(e, CallCompleted)]
        assert [e.outcome for e in done] == ["allowed"] * 3 + ["rate_limited"]
        # a second session has its own counter (scope = "session")
        async with client(gw.url("ev")) as s2:
            res = await s2.call_tool("echo", {"text": "other session"})
            assert not res.is_error


async def test_default_deny_and_hidden_tool_is_unknown(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, POLICY)])
    async with running(cfg) as gw, client(gw.url("ev")) as s:
        res = await s.call_tool("progress", {"steps": 1})
        assert res.is_error and _meta(res)["code"] == "policy_denied" and _meta(res)["rule"] == "default"
        hidden = await s.send_request(
            types.CallToolRequest(params=types.CallToolRequestParams(name="secret_tool", arguments={})), RAW)
        unknown = await s.send_request(
            types.CallToolRequest(params=types.CallToolRequestParams(name="no_such_tool", arguments={})), RAW)
        assert hidden == {"content": [{"type": "text", "text": "Unknown tool: secret_tool"}], "isError": True}
        assert unknown["content"][0]["text"] == "Unknown tool: no_such_tool" or unknown.get("isError")


async def test_approval_approved_denied_timed_out_and_for_session(tmp_path: Path) -> None:
    policy = POLICY.replace('approval_timeout = "1s"', 'approval_timeout = "30s"')
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, policy)])
    async with running(cfg) as gw, client(gw.url("ev")) as s:
        sub = gw.bus.subscribe()
        # approved
        task = asyncio.create_task(s.call_tool("delete_thing", {"id": "a"}))
        (pa,) = await _wait_pending(gw)
        assert pa.call.tool == "delete_thing" and pa.call.arguments == {"id": "a"}
        assert "Deletes are reviewed by a person." in pa.reason
        gw.approvals.approve(pa.id)
        res = await asyncio.wait_for(task, 20)
        assert not res.is_error and res.content[0].text == "deleted a"
        # denied
        task = asyncio.create_task(s.call_tool("delete_thing", {"id": "b"}))
        (pa,) = await _wait_pending(gw)
        gw.approvals.deny(pa.id, reason="not today")
        res = await asyncio.wait_for(task, 20)
        assert res.is_error and _meta(res)["code"] == "approval_denied" and "not today" in res.content[0].text
        # approved for this session: the next call goes through without asking
        task = asyncio.create_task(s.call_tool("delete_thing", {"id": "c"}))
        (pa,) = await _wait_pending(gw)
        gw.approvals.approve(pa.id, for_session=True)
        assert not (await asyncio.wait_for(task, 20)).is_error
        res = await s.call_tool("delete_thing", {"id": "d"})
        assert not res.is_error and gw.approvals.pending() == []
        # deny_if still wins over the session approval
        res = await s.call_tool("delete_thing", {"id": "prod"})
        assert _meta(res)["code"] == "policy_denied" and "Agents may not delete prod." in res.content[0].text
        events = []
        while (e := sub.get_nowait()) is not None:
            events.append(e)
        assert sum(isinstance(e, ApprovalRequested) for e in events) == 3
        assert [e.outcome for e in events if isinstance(e, ApprovalResolved)] == ["approved", "denied", "approved"]


async def test_approval_timeout_denies(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, POLICY)])
    async with running(cfg) as gw, client(gw.url("ev")) as s:
        res = await s.call_tool("delete_thing", {"id": "a"})
        assert res.is_error and _meta(res)["code"] == "approval_timeout"


async def test_policy_change_while_waiting_is_re_evaluated(tmp_path: Path) -> None:
    policy = POLICY.replace('approval_timeout = "1s"', 'approval_timeout = "30s"')
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, policy)])
    async with running(cfg) as gw, client(gw.url("ev")) as s:
        task = asyncio.create_task(s.call_tool("delete_thing", {"id": "a"}))
        (pa,) = await _wait_pending(gw)
        gw.set_policy("ev", parse_policy(policy.replace('action = "require_approval"', 'action = "deny"')))
        assert not gw.approvals.approve(pa.id)  # the policy change already denied it
        res = await asyncio.wait_for(task, 20)
        assert res.is_error and _meta(res)["code"] == "policy_changed"


async def test_headless_denies_approval_at_once(tmp_path: Path) -> None:
    policy = POLICY.replace('approval_timeout = "1s"', 'approval_timeout = "1h"')
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, policy)], headless_approvals="deny")
    async with running(cfg, interactive=False) as gw, client(gw.url("ev")) as s:
        res = await s.call_tool("delete_thing", {"id": "a"})
        assert res.is_error and _meta(res)["code"] == "approval_denied"
        assert "no console" in res.content[0].text


async def test_stop_denies_pending_approvals(tmp_path: Path) -> None:
    policy = POLICY.replace('approval_timeout = "1s"', 'approval_timeout = "1h"')
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, policy)])
    async with running(cfg) as gw:
        sub = gw.bus.subscribe()
        async with client(gw.url("ev")) as s:
            task = asyncio.create_task(s.call_tool("delete_thing", {"id": "a"}))
            await _wait_pending(gw)
            assert gw.approvals.deny_all() == 1  # what stop() does first
            res = await asyncio.wait_for(task, 20)
            assert _meta(res)["code"] == "approval_denied"
        events = []
        while (e := sub.get_nowait()) is not None:
            events.append(e)
        assert any(isinstance(e, ApprovalResolved) and e.by == "shutdown" for e in events)


async def test_changed_tool_is_denied_when_on_tool_change_is_deny(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, POLICY)])
    async with running(cfg) as gw, client(gw.url("ev")) as s:
        original_echo = next(dict(t) for t in gw.servers["ev"].tools if t["name"] == "echo")
        assert not (await s.call_tool("echo", {"text": "before"})).is_error
        await s.call_tool("mutate", {})
        await s.list_tools()  # the agent sees the new definition
        for _ in range(200):
            if "echo" in gw.servers["ev"].changed_tools:
                break
            await asyncio.sleep(0.02)
        assert "echo" in gw.servers["ev"].changed_tools
        # another upstream session still lists the first definition:
        # that must not clear the mark, only a person's review does
        h = gw.servers["ev"]
        h.see_tools([original_echo], complete=False)
        assert "echo" in h.changed_tools
        res = await s.call_tool("echo", {"text": "after"})
        assert res.is_error and _meta(res)["code"] == "tool_changed"
        gw.accept_tool_change("ev", "echo")
        assert not (await s.call_tool("echo", {"text": "reviewed"})).is_error


async def test_no_policy_denies_every_call(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, policy_text=None)])
    async with running(cfg) as gw, client(gw.url("ev")) as s:
        assert gw.servers["ev"].policy is None and gw.servers["ev"].policy_errors
        res = await s.call_tool("echo", {"text": "x"})
        assert res.is_error and _meta(res)["code"] == "no_policy"


async def test_bad_policy_file_reports_file_line_col(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, 'version = "1"\ndefault = "maybe"\n')])
    async with running(cfg) as gw:
        errs = gw.servers["ev"].policy_errors
        assert errs and errs[0].startswith(str(tmp_path / "ev.toml") + ":2:")


async def test_call_events_carry_who_called(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, POLICY)])
    async with running(cfg) as gw, client(gw.url("ev")) as s:
        sub = gw.bus.subscribe()
        await s.call_tool("status", {})
        got = []
        while (e := sub.get_nowait()) is not None:
            got.append(e)
        rec = next(e for e in got if isinstance(e, CallReceived))
        dec = next(e for e in got if isinstance(e, CallDecided))
        assert rec.grant == "local" and rec.session_id and rec.client == "mcp"
        assert dec.call_id == rec.call_id and dec.action == "allow" and dec.risk


async def test_shadow_rules_let_the_call_through_and_say_what_they_would_have_done(tmp_path: Path) -> None:
    policy = """
version = "1"
default = "allow"

[tools.delete_thing]
action = "deny"
mode = "shadow"
reason = "Things stay."

[tools.echo]
[[tools.echo.limits]]
counter = "echo_shadow"
window = "minute"
max = 1
mode = "shadow"
"""
    audit = tmp_path / "audit.jsonl"
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, policy)], audit_log=str(audit))
    async with running(cfg) as gw, client(gw.url("ev")) as s:
        res = await s.call_tool("delete_thing", {"id": "x"})
        assert not res.is_error and res.content[0].text == "deleted x"  # not enforced
        for i in range(3):
            assert not (await s.call_tool("echo", {"text": str(i)})).is_error
        shadow = {v.counter: v.count for v in gw.servers["ev"].shadow_counters.snapshot(time.monotonic())}
        enforced = {v.counter for v in gw.servers["ev"].counters.snapshot(time.monotonic())}
        assert shadow == {"echo_shadow": 1} and "echo_shadow" not in enforced
    decisions = [r for r in read_audit(audit) if r["kind"] == "decision"]
    assert decisions[0]["decision"] == "allowed" and decisions[0]["would"] == "would_deny"
    assert decisions[0]["would_rule"] == "tools.delete_thing.action" and "Things stay." in decisions[0]["would_message"]
    assert [d.get("would") for d in decisions[1:]] == [None, "would_rate_limit", "would_rate_limit"]
