"""The call pipeline on its own: evaluate → approval → evaluate again → consume → forward → outcome, without HTTP.

`forward` here is a stand-in for the upstream (the pipeline's one link to
it); the policy, counters, approvals and events are the real ones. The same
behaviour through real HTTP and real upstreams is in test_gateway_policy.py
and test_gateway_modern.py.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

from mcpguard.approvals import Approvals
from mcpguard.codes import Code
from mcpguard.config import Config
from mcpguard.events import CallCompleted, CallDecided, EventBus
from mcpguard.gateway.pipeline import CallPipeline
from mcpguard.gateway.server import ServerHandle
from mcpguard.gateway.upstream import UpstreamUnavailable
from mcpguard.policy import parse_policy

POLICY = """
version = "1"
default = "deny"

[tools.read]

[tools.write]
[[tools.write.limits]]
counter = "writes"
window = "minute"
max = 2

[tools.promote]
action = "require_approval"
approval_timeout = "1s"
[[tools.promote.limits]]
counter = "promotions"
window = "hour"
max = 2
"""


def _pipeline(tmp_path: Path, *, interactive: bool = True, headless: str = "deny",
              policy: str = POLICY) -> tuple[CallPipeline, EventBus]:
    cfg = Config.from_dict({"servers": {"s": {"command": "unused"}}}, base_dir=tmp_path)
    bus = EventBus()
    h = ServerHandle(cfg.servers["s"], bus)
    h.apply_policy(parse_policy(policy, "toml", "policy.toml"))
    return CallPipeline(h, Approvals(bus), bus, interactive=interactive, headless_approvals=headless), bus


def _ok(text: str = "done"):
    sent: list[int] = []

    async def forward(call: Any) -> dict[str, Any]:
        sent.append(1)
        return {"content": [{"type": "text", "text": text}], "isError": False}

    return forward, sent


def _code(result: dict[str, Any]) -> str | None:
    return (result.get("_meta") or {}).get("mcpguard/decision", {}).get("code")


def _events(sub: Any) -> list[Any]:
    out = []
    while (e := sub.get_nowait()) is not None:
        out.append(e)
    return out


async def test_allowed_calls_are_forwarded_and_counted_denied_ones_never(tmp_path: Path) -> None:
    p, bus = _pipeline(tmp_path)
    sub = bus.subscribe()
    forward, sent = _ok()
    call = lambda tool: p.new_call(tool, {}, grant="g", session_id=None, client=None)  # noqa: E731
    assert (await p.run(call("read"), forward))["content"][0]["text"] == "done"
    assert _code(await p.run(call("unlisted"), forward)) == Code.POLICY_DENIED
    assert _code(await p.run(call("write"), forward)) is None
    assert _code(await p.run(call("write"), forward)) is None
    third = await p.run(call("write"), forward)
    assert _code(third) == Code.RATE_LIMITED and third["_meta"]["mcpguard/decision"]["retry_after_s"] > 0
    assert len(sent) == 3
    outcomes = [e.outcome for e in _events(sub) if isinstance(e, CallCompleted)]
    assert outcomes == ["allowed", "policy_denied", "allowed", "allowed", "rate_limited"]


async def test_a_slot_taken_while_a_call_waited_for_approval_is_rate_limited(tmp_path: Path) -> None:
    """Approved calls are decided again before they go: the limit may have filled while they waited."""
    p, bus = _pipeline(tmp_path)
    sub = bus.subscribe()
    forward, sent = _ok()
    first = asyncio.create_task(p.run(p.new_call("promote", {}, grant="g", session_id=None, client=None), forward))
    second = asyncio.create_task(p.run(p.new_call("promote", {}, grant="g", session_id=None, client=None), forward))
    for _ in range(100):
        if len(p.approvals.pending()) == 2:
            break
        await asyncio.sleep(0.01)
    a, b = p.approvals.pending()
    p.approvals.approve(a.id, by="alice")
    assert _code(await first) is None
    # the first took one of two promotions; another admission takes the other while the second waits
    assert p.handle.counters.try_consume(p.handle.policy.limits_for("promote"), b.call, time.monotonic()) is None
    p.approvals.approve(b.id, by="alice")
    late = await second
    assert _code(late) == Code.RATE_LIMITED and len(sent) == 1
    decided = [e for e in _events(sub) if isinstance(e, CallDecided) and e.code == "rate_limited"]
    assert decided and decided[-1].message.startswith("promote is rate-limited:")
    assert decided[-1].message in late["content"][0]["text"]


async def test_approval_outcomes(tmp_path: Path) -> None:
    p, bus = _pipeline(tmp_path)
    sub = bus.subscribe()
    forward, sent = _ok()

    async def answer(how: str) -> dict[str, Any]:
        task = asyncio.create_task(p.run(p.new_call("promote", {"v": how}, grant="g", session_id="s1",
                                                    client=None), forward))
        for _ in range(100):
            if p.approvals.pending():
                break
            await asyncio.sleep(0.01)
        (pa,) = p.approvals.pending()
        if how == "deny":
            p.approvals.deny(pa.id, by="bob", reason="not today")
        elif how == "session":
            p.approvals.approve(pa.id, by="carol", for_session=True)
        return await task

    denied = await answer("deny")
    assert _code(denied) == Code.APPROVAL_DENIED and "not today" in denied["content"][0]["text"]
    assert _code(await answer("session")) is None
    # approved for this session: the next one goes through at once, approved by carol
    again = await p.run(p.new_call("promote", {}, grant="g", session_id="s1", client=None), forward)
    assert _code(again) is None and not p.approvals.pending()
    # the limit (2 an hour) is checked before anyone is asked
    assert _code(await p.run(p.new_call("promote", {}, grant="g", session_id="s1", client=None),
                             forward)) == Code.RATE_LIMITED
    done = [e for e in _events(sub) if isinstance(e, CallCompleted)]
    assert [(e.outcome, e.approver) for e in done] == [("approval_denied", "bob"), ("approved", "carol"),
                                                       ("approved", "carol"), ("rate_limited", None)]
    # the deadline denies
    p2, _ = _pipeline(tmp_path)
    timed = await p2.run(p2.new_call("promote", {}, grant="g", session_id=None, client=None), forward)
    assert _code(timed) == Code.APPROVAL_TIMEOUT and len(sent) == 2


async def test_headless_deny_and_a_policy_change_while_waiting(tmp_path: Path) -> None:
    forward, sent = _ok()
    headless, _ = _pipeline(tmp_path, interactive=False)
    res = await headless.run(headless.new_call("promote", {}, grant="g", session_id=None, client=None), forward)
    assert _code(res) == Code.APPROVAL_DENIED and "no console is attached" in res["content"][0]["text"]
    p, _ = _pipeline(tmp_path)
    task = asyncio.create_task(p.run(p.new_call("promote", {}, grant="g", session_id=None, client=None), forward))
    for _ in range(100):
        if p.approvals.pending():
            break
        await asyncio.sleep(0.01)
    p.handle.apply_policy(parse_policy(POLICY.replace('action = "require_approval"', 'action = "deny"'),
                                       "toml", "policy.toml"))
    p.follow_policy()
    res = await task
    assert _code(res) == Code.POLICY_CHANGED and not sent


@pytest.mark.parametrize(("fault", "code"), [
    (UpstreamUnavailable("s", "its last start failed: command not found: x"), Code.UPSTREAM_UNAVAILABLE),
    (MCPError(code=CONNECTION_CLOSED, message="Connection closed"), Code.UPSTREAM_ERROR),
    (MCPError(code=REQUEST_TIMEOUT, message="timed out"), Code.UPSTREAM_TIMEOUT),
])
async def test_upstream_faults_become_codes(tmp_path: Path, fault: Exception, code: Code) -> None:
    p, bus = _pipeline(tmp_path)
    sub = bus.subscribe()

    async def forward(call: Any) -> dict[str, Any]:
        raise fault

    res = await p.run(p.new_call("read", {}, grant="g", session_id=None, client=None), forward)
    assert _code(res) == code and res["isError"]
    if code == Code.UPSTREAM_UNAVAILABLE:
        assert "nothing was sent" in res["content"][0]["text"] and "command not found" in res["content"][0]["text"]
    assert [e.outcome for e in _events(sub) if isinstance(e, CallCompleted)] == [code]


async def test_an_upstream_jsonrpc_error_is_recorded_and_passed_on(tmp_path: Path) -> None:
    p, bus = _pipeline(tmp_path)
    sub = bus.subscribe()

    async def forward(call: Any) -> dict[str, Any]:
        raise MCPError(code=-32042, message="custom", data={"why": 1})

    with pytest.raises(MCPError) as err:
        await p.run(p.new_call("read", {}, grant="g", session_id=None, client=None), forward)
    assert err.value.error.code == -32042
    (done,) = [e for e in _events(sub) if isinstance(e, CallCompleted)]
    assert done.outcome == "upstream_error" and done.error == "JSON-RPC error -32042: custom"
