"""Pending approvals: awaited by the gateway, resolved by anyone, denied at the deadline."""

from __future__ import annotations

import asyncio

import pytest

from mcpguard.approvals import Approvals
from mcpguard.call import Call
from mcpguard.events import ApprovalRequested, ApprovalResolved, EventBus

CALL = Call("mlflow", "transition_model_version_stage", {"name": "m", "version": "1", "stage": "Production"},
            session_id="s1", call_id="c1")


async def _pending(approvals: Approvals, n: int = 1) -> None:
    for _ in range(200):
        if len(approvals.pending()) >= n:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("approval never became pending")


async def test_approve_lets_the_waiting_call_through_and_publishes_both_events():
    bus = EventBus()
    sub = bus.subscribe()
    approvals = Approvals(bus)
    task = asyncio.create_task(approvals.request(CALL, timeout_s=30, risk="high", reason="stage change"))
    await _pending(approvals)
    pa = approvals.pending()[0]
    assert pa.call.tool == "transition_model_version_stage" and 29 < pa.remaining_s() <= 30
    assert approvals.approve(pa.id, by="console")
    res = await task
    assert res.approved and res.outcome == "approved" and res.by == "console"
    assert approvals.pending() == []
    req, done = await sub.get(), await sub.get()
    assert isinstance(req, ApprovalRequested) and req.reason == "stage change" and req.call_id == "c1"
    assert isinstance(done, ApprovalResolved) and done.approved and done.approval_id == pa.id


async def test_deny_and_second_resolution_is_refused():
    approvals = Approvals()
    task = asyncio.create_task(approvals.request(CALL, timeout_s=30))
    await _pending(approvals)
    aid = approvals.pending()[0].id
    assert approvals.deny(aid, reason="not tonight")
    assert not approvals.approve(aid)  # already resolved: nothing changes
    res = await task
    assert not res.approved and res.outcome == "denied" and res.reason == "not tonight"


async def test_no_answer_is_denied_at_the_deadline():
    approvals = Approvals()
    res = await approvals.request(CALL, timeout_s=0.05)
    assert res.outcome == "timed_out" and not res.approved and res.by == "timeout"
    assert approvals.pending() == []


async def test_approve_for_session_covers_later_calls_of_that_tool_in_that_session_only():
    approvals = Approvals()
    task = asyncio.create_task(approvals.request(CALL, timeout_s=30))
    await _pending(approvals)
    approvals.approve(approvals.pending()[0].id, for_session=True)
    await task
    assert approvals.session_allows("s1", "mlflow", "transition_model_version_stage")
    assert not approvals.session_allows("s2", "mlflow", "transition_model_version_stage")
    assert not approvals.session_allows("s1", "mlflow", "delete_run")
    approvals.forget_session("s1")
    assert not approvals.session_allows("s1", "mlflow", "transition_model_version_stage")


async def test_cancelled_caller_withdraws_its_approval():
    bus = EventBus()
    sub = bus.subscribe()
    approvals = Approvals(bus)
    task = asyncio.create_task(approvals.request(CALL, timeout_s=30))
    await _pending(approvals)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert approvals.pending() == []
    await sub.get()
    resolved = await sub.get()
    assert isinstance(resolved, ApprovalResolved) and resolved.outcome == "cancelled"


async def test_deny_all_denies_every_pending_call_in_order():
    approvals = Approvals()
    tasks = [asyncio.create_task(approvals.request(CALL, timeout_s=30)) for _ in range(3)]
    await _pending(approvals, 3)
    ids = [p.id for p in approvals.pending()]
    assert ids == sorted(ids, key=lambda i: int(i[1:]))  # oldest first
    assert approvals.deny_all() == 3
    results = await asyncio.gather(*tasks)
    assert all(r.outcome == "denied" and r.by == "shutdown" for r in results)


async def test_approve_for_session_lets_the_same_tools_waiting_calls_through_too():
    approvals = Approvals()
    other_session = Call("mlflow", CALL.tool, {}, session_id="s2", call_id="c9")
    other_tool = Call("mlflow", "delete_run", {}, session_id="s1", call_id="c8")
    tasks = [asyncio.create_task(approvals.request(c, timeout_s=30))
             for c in (CALL, CALL, other_session, other_tool)]
    await _pending(approvals, 4)
    approvals.approve(approvals.pending()[0].id, for_session=True)
    first, second = await asyncio.gather(tasks[0], tasks[1])
    assert first.approved and second.approved and second.reason == "approved for this session"
    assert [p.call.call_id for p in approvals.pending()] == ["c9", "c8"]  # other session, other tool
    approvals.deny_all()
    await asyncio.gather(*tasks[2:])
