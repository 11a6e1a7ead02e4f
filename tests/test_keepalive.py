"""A call that waits a minute for a person keeps its agent connected, in both MCP eras.

Real parts only: the gateway on 127.0.0.1, a test upstream of the agent's
era (tests/upstreams), real SDK clients and a raw httpx2 client over
Streamable HTTP. Each client gives up after 30 s of silence; the approval
comes through the control interface after 60 s.

What keeps the wait alive:
- with a `progressToken`: the gateway's own progress notifications
  (`CallPipeline._approval` calls `on_wait` every `KEEPALIVE_S` = 5 s;
  `Endpoint._keepalive` sends "waiting for a person's approval, 2m55s left");
- without one: the SDK's SSE keep-alive comments on the response stream,
  every 15 s in both eras (handshake era: `sse_starlette`'s
  `EventSourceResponse`, `DEFAULT_PING_INTERVAL = 15`, which
  `mcp/server/streamable_http.py` uses for each POST's stream; 2026-07-28:
  `_SSE_PING_INTERVAL = 15.0` in `mcp/server/_streamable_http_modern.py`,
  which commits the response to SSE once a handler is silent that long and
  then writes `: ping`). The gateway adds nothing there.

After such a wait, the upstream's own progress for the same request is
shifted past the gateway's, so the agent sees one increasing series (the
spec: the progress value MUST increase with each notification).

The minute-long tests (about 65 s each) are marked e2e.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from upstreams.harness import make_config, running, upstream

from mcpguard.audit import read_audit
from mcpguard.gateway import Gateway
from mcpguard.gateway import pipeline
from mcpguard.gateway.pipeline import KEEPALIVE_S

WAIT_S = 60.0  # how long the person takes
READ_TIMEOUT_S = 30.0  # how long each client waits for a byte (or, with progress, for the next progress)
SSE_PING_S = 15.0  # the SDK's keep-alive interval, both eras (see the module docstring)
TOOL = "delete_thing"
POLICY = f"""
version = "1"
default = "allow"

[tools.{TOOL}]
action = "require_approval"
reason = "a person looks at every delete"
approval_timeout = "3m"
"""
MODES = {"modern": "2026-07-28", "legacy": "legacy"}
WAITING = re.compile(r"^waiting for a person's approval, (?:(\d+)m)?(\d+)s left$")
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
ENVELOPE = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
            "io.modelcontextprotocol/clientCapabilities": {}}


@pytest.fixture(params=["modern", "legacy"])
def era(request: pytest.FixtureRequest) -> str:
    return request.param


def _gateway(era: str, tmp_path: Path) -> Any:
    cfg = make_config(tmp_path, [upstream(era, "ev", tmp_path, POLICY)], audit_log=str(tmp_path / "audit.jsonl"))
    return running(cfg)


async def _approve_after(gw: Gateway, started: float, wait_s: float) -> str:
    """A person: sees the pending call, takes until `started + wait_s`, approves the digest they saw."""
    for _ in range(400):  # bounded: 20 s for the call to reach the queue
        snap = await gw.control.snapshot()
        if snap.pending:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the call never waited for approval")
    [seen] = snap.pending
    assert seen.tool == TOOL and seen.arguments == {"id": "x"}
    await asyncio.sleep(max(0.0, started + wait_s - time.monotonic()))
    done = await gw.control.approve(seen.approval_id, by="console:test", digest=seen.digest)
    assert done.ok, done
    return seen.digest


async def _call_resetting_on_progress(c: Client, name: str, arguments: dict[str, Any], *, idle_s: float,
                                      t0: float) -> tuple[types.CallToolResult, list[tuple[float, float, str]]]:
    """`c.call_tool`, given up after `idle_s` of no progress: a read timeout that resets on progress.

    The SDK has no reset-on-progress: `read_timeout_seconds` (ClientSession.send_request,
    mcp/client/session.py) becomes the dispatcher's `request_clock` (mcp/shared/jsonrpc_dispatcher.py,
    mcp/shared/_request_clock.py), one budget for the whole request that progress does not renew
    (only the SDK's private `waiting_on_a_person`, used by its OAuth flow, pauses it). So the call
    runs with no SDK timeout, inside a cancel scope whose deadline each progress notification moves
    `idle_s` ahead (`progress_callback`, run by the dispatcher for each `notifications/progress`
    whose token is this request's). Returns the result and (seconds since `t0`, progress, message)
    of each progress notification.
    """
    seen: list[tuple[float, float, str]] = []
    with anyio.CancelScope() as scope:
        scope.deadline = anyio.current_time() + idle_s

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append((time.monotonic() - t0, progress, message or ""))
            scope.deadline = anyio.current_time() + idle_s

        result = await c.call_tool(name, arguments, progress_callback=on_progress)
    if scope.cancelled_caught:
        raise TimeoutError(f"no progress for {idle_s:g} s (after {len(seen)} progress notifications: {seen})")
    return result, seen


def _left_s(message: str) -> int:
    m = WAITING.match(message)
    assert m, message
    return int(m.group(1) or 0) * 60 + int(m.group(2))


@pytest.mark.e2e
async def test_progress_keeps_a_30s_read_timeout_alive_through_a_60s_approval(tmp_path: Path, era: str) -> None:
    async with _gateway(era, tmp_path) as gw, \
            httpx2.AsyncClient(timeout=httpx2.Timeout(READ_TIMEOUT_S)) as http, \
            Client(streamable_http_client(gw.url("ev"), http_client=http), mode=MODES[era]) as c:
        t0 = time.monotonic()
        person = asyncio.create_task(_approve_after(gw, t0, WAIT_S))
        try:
            result, progress = await _call_resetting_on_progress(c, TOOL, {"id": "x"}, idle_s=READ_TIMEOUT_S, t0=t0)
        finally:
            if not person.done():
                person.cancel()
        took = time.monotonic() - t0
        digest = await person
    print(f"\n{era}: answered after {took:.1f} s, {len(progress)} progress notifications at "
          f"{[round(t, 1) for t, _, _ in progress]}: {progress[0][2]!r} ... {progress[-1][2]!r}")
    assert not result.is_error and [b.text for b in result.content] == ["deleted x"]
    assert WAIT_S <= took < WAIT_S + 10
    # one progress every KEEPALIVE_S while it waited, counting the 3-minute deadline down
    assert KEEPALIVE_S == 5.0
    assert 10 <= len(progress) <= 12, progress
    times = [t for t, _, _ in progress]
    gaps = [b - a for a, b in zip([0.0, *times], times)]
    assert all(KEEPALIVE_S - 1 <= g <= KEEPALIVE_S + 3 for g in gaps), gaps
    assert [p for _, p, _ in progress] == [float(i) for i in range(len(progress))]  # 0, 1, 2, ...
    left = [_left_s(m) for _, _, m in progress]
    assert 170 <= left[0] <= 176 and all(4 <= a - b <= 6 for a, b in zip(left, left[1:])), left
    done = [r for r in read_audit(tmp_path / "audit.jsonl") if r["kind"] == "completion"]
    assert [(r["decision"], r["approver"], r["digest"]) for r in done] == [("approved", "console:test", digest)]


def _events(raw: bytes) -> tuple[list[dict[str, Any]], list[str]]:
    """An SSE body's JSON-RPC messages and its comment lines (keep-alive pings)."""
    messages, comments = [], []
    for line in raw.decode("utf-8").splitlines():
        if line.startswith(":"):
            comments.append(line)
        elif line.startswith("data:") and line[5:].strip():
            messages.append(json.loads(line[5:]))
    return messages, comments


async def _handshake(http: httpx2.AsyncClient, url: str) -> dict[str, str]:
    """A handshake-era session opened by hand; the headers its requests carry."""
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}
    r = await http.post(url, json=init, headers=HEADERS)
    assert r.status_code == 200, r.text
    h = {**HEADERS, "mcp-session-id": r.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
    r = await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=h)
    assert r.status_code == 202
    return h


@pytest.mark.e2e
async def test_without_a_progress_token_sse_pings_keep_a_30s_read_timeout_alive(tmp_path: Path, era: str) -> None:
    """No progressToken, so no progress: only the SDK's SSE pings (every 15 s) cross the minute, and a raw
    httpx2 client whose reads time out after 30 s still gets its answer."""
    async with _gateway(era, tmp_path) as gw, httpx2.AsyncClient(timeout=httpx2.Timeout(READ_TIMEOUT_S)) as http:
        url = gw.url("ev")
        call: dict[str, Any] = {"name": TOOL, "arguments": {"id": "x"}}
        if era == "legacy":
            headers = await _handshake(http, url)
        else:
            headers = {**HEADERS, "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": TOOL}
            call["_meta"] = ENVELOPE
        body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": call}
        t0 = time.monotonic()
        person = asyncio.create_task(_approve_after(gw, t0, WAIT_S))
        arrivals: list[float] = []
        chunks: list[bytes] = []
        try:
            async with http.stream("POST", url, json=body, headers=headers) as r:
                arrivals.append(time.monotonic() - t0)  # the response's head
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
                async for chunk in r.aiter_raw():
                    arrivals.append(time.monotonic() - t0)
                    chunks.append(chunk)
        finally:
            if not person.done():
                person.cancel()
        took = time.monotonic() - t0
        await person
    messages, pings = _events(b"".join(chunks))
    gaps = [b - a for a, b in zip([0.0, *arrivals], arrivals)]
    print(f"\n{era}: answered after {took:.1f} s, {len(pings)} pings, bytes arrived at "
          f"{[round(t, 1) for t in arrivals]}")
    assert [m.get("id") for m in messages] == [7], messages  # the answer, and no progress at all
    assert messages[0]["result"]["content"] == [{"type": "text", "text": "deleted x"}]
    assert not messages[0]["result"].get("isError")
    assert WAIT_S <= took < WAIT_S + 10
    assert len(pings) >= 3, pings  # at about 15, 30 and 45 s
    assert max(gaps) <= SSE_PING_S + 5 < READ_TIMEOUT_S, gaps


async def test_the_upstreams_progress_goes_on_increasing_after_the_waits(tmp_path: Path, era: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A tool that reports steps 1..3 of 3, approved after a few keepalives: every progress value the agent
    sees is above the one before (MCP, basic/utilities/progress: it MUST increase with each notification).
    The keepalives count 0, 1, ..., n-1; the upstream's progress p of total t arrives as n + p of n + t."""
    monkeypatch.setattr(pipeline, "KEEPALIVE_S", 0.2)
    policy = POLICY.replace(f"[tools.{TOOL}]", "[tools.progress]")
    cfg = make_config(tmp_path, [upstream(era, "ev", tmp_path, policy)])
    seen: list[tuple[float, float | None, str]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message or ""))

    async with running(cfg) as gw, Client(gw.url("ev"), mode=MODES[era]) as c:
        call = asyncio.create_task(c.call_tool("progress", {"steps": 3}, progress_callback=on_progress))
        try:
            for _ in range(200):  # bounded: 10 s for three keepalives
                if len(seen) >= 3:
                    break
                await asyncio.sleep(0.05)
            [pending] = (await gw.control.snapshot()).pending
            assert (await gw.control.approve(pending.approval_id, by="console:test", digest=pending.digest)).ok
            result = await asyncio.wait_for(call, 30)
        finally:
            call.cancel()
        for _ in range(40):  # the last progress callbacks run as their own tasks (bounded: 2 s)
            if sum(m.startswith("step") for _, _, m in seen) == 3:
                break
            await asyncio.sleep(0.05)
    assert [b.text for b in result.content] == ["did 3 steps"]
    values = [p for p, _, _ in seen]
    assert all(b > a for a, b in zip(values, values[1:])), seen
    waits = [p for p, t, m in seen if WAITING.match(m)]
    n = len(waits)
    assert n >= 3 and waits == [float(i) for i in range(n)], seen
    assert seen[n:] == [(n + 1.0, n + 3.0, "step 1"), (n + 2.0, n + 3.0, "step 2"), (n + 3.0, n + 3.0, "step 3")]
