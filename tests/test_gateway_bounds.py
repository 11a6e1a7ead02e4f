"""What a local process cannot do to the gateway: open unbounded sessions, hold half-sent requests,
slip a tools/call past the policy as a notification; and an upstream that is down answers at once."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import socket
import sys
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
from upstreams.harness import LEGACY, ServerCfg, client, legacy_server, make_config, running, upstream

from mcpguard.audit import read_audit
from mcpguard.gateway.http import raise_open_file_limit, throttle_accept_errors

HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
POLICY = 'version = "1"\ndefault = "allow"\n\n[tools.delete_thing]\naction = "deny"\n'
ENVELOPE = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
            "io.modelcontextprotocol/clientCapabilities": {}}


def _init(name: str = "raw") -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": name, "version": "0"}}}


def _messages(resp: httpx2.Response) -> list[dict[str, Any]]:
    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        return [json.loads(line[5:]) for line in resp.text.splitlines() if line.startswith("data:") and line[5:].strip()]
    return [resp.json()]


async def _open(http: httpx2.AsyncClient, url: str, name: str = "raw") -> httpx2.Response:
    """Open a handshake-era session and never close it."""
    return await http.post(url, json=_init(name), headers=HEADERS)


def _children_running(script: Path) -> int:
    """Processes of ours whose command line runs `script` (real OS processes, read from /proc)."""
    me, n = os.getpid(), 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == me and any(str(script).encode() == c for c in cmd):
            n += 1
    return n


async def test_per_session_sessions_are_capped_and_the_one_past_the_cap_is_told_why(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, [legacy_server("ev", tmp_path, POLICY, upstream_sessions="per_session",
                                               max_sessions=3)])
    async with running(cfg) as gw, httpx2.AsyncClient(timeout=60) as http:
        url = gw.url("ev")
        for i in range(3):
            r = await _open(http, url, f"agent{i}")
            assert r.status_code == 200, r.text
        assert _children_running(LEGACY) == 1 + 3  # the shared connection and one per session
        r = await _open(http, url, "one-too-many")
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        msg = r.json()["error"]["message"]
        assert "'ev' already has 3 open agent sessions" in msg and "max_sessions under [servers.ev]" in msg
        for _ in range(5):  # never more processes than the cap, however often it is asked
            assert (await _open(http, url)).status_code == 503
        assert _children_running(LEGACY) == 4 and gw.pools["ev"].processes() == 4
    assert _children_running(LEGACY) == 0


async def test_per_session_agents_never_share_an_upstream_session(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, [legacy_server("ev", tmp_path, POLICY)])  # per_session is the default
    async with running(cfg) as gw:
        async with client(gw.url("ev"), client_info=_info("alice")) as a, \
                client(gw.url("ev"), client_info=_info("bob")) as b:
            await a.call_tool("echo", {"text": "1"})
            await a.call_tool("echo", {"text": "2"})
            sa = (await a.call_tool("status", {})).content[0].text
            sb = (await b.call_tool("status", {})).content[0].text
            assert "'client': 'alice'" in sa and "'calls': 3" in sa
            assert "'client': 'bob'" in sb and "'calls': 1" in sb
            assert gw.pools["ev"].processes() == 3


async def test_shared_sessions_start_no_process_per_agent(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, [legacy_server("ev", tmp_path, POLICY, upstream_sessions="shared")])
    async with running(cfg) as gw, httpx2.AsyncClient(timeout=60) as http:
        for i in range(20):
            assert (await _open(http, gw.url("ev"), f"agent{i}")).status_code == 200
        async with client(gw.url("ev"), client_info=_info("alice")) as a:
            t0 = time.perf_counter()
            async with client(gw.url("ev"), client_info=_info("bob")) as b:
                ready = time.perf_counter() - t0
                assert "'calls': 1" in (await a.call_tool("status", {})).content[0].text
                assert "'calls': 2" in (await b.call_tool("status", {})).content[0].text
        assert _children_running(LEGACY) == 1 and gw.pools["ev"].processes() == 1
        assert ready < 2.0  # no process to start (bench/ has the figure)


def _info(name: str) -> Any:
    import mcp_types as types

    return types.Implementation(name=name, version="1")


async def test_idle_sessions_are_closed(tmp_path: Path) -> None:
    # 4 s: long enough that the two sessions are not idle yet when the third asks on a busy machine
    cfg = make_config(tmp_path, [legacy_server("ev", tmp_path, POLICY, max_sessions=2)], session_idle_timeout_s=4)
    async with running(cfg) as gw, httpx2.AsyncClient(timeout=60) as http:
        for _ in range(2):
            assert (await _open(http, gw.url("ev"))).status_code == 200
        assert (await _open(http, gw.url("ev"))).status_code == 503
        for _ in range(200):  # the SDK reaps idle sessions; their upstream processes go with them
            if not gw.pools["ev"].sessions and _children_running(LEGACY) == 1:
                break
            await asyncio.sleep(0.1)
        assert not gw.pools["ev"].sessions and _children_running(LEGACY) == 1
        assert (await _open(http, gw.url("ev"))).status_code == 200


@pytest.mark.parametrize("era", ["modern", "legacy"])
async def test_a_tools_call_sent_as_a_notification_is_never_forwarded(tmp_path: Path, era: str) -> None:
    audit = tmp_path / "audit.jsonl"
    cfg = make_config(tmp_path, [upstream(era, "ev", tmp_path, POLICY, upstream_sessions="shared")],
                      audit_log=str(audit))
    async with running(cfg) as gw, httpx2.AsyncClient(timeout=30) as http:
        url = gw.url("ev")
        # a handshake-era session: no id, then an object as id
        r = await _open(http, url)
        h = {**HEADERS, "mcp-session-id": r.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
        assert (await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                                headers=h)).status_code == 202
        call = {"name": "delete_thing", "arguments": {"id": "all"}}
        r = await http.post(url, json={"jsonrpc": "2.0", "method": "tools/call", "params": call}, headers=h)
        assert r.status_code == 202
        r = await http.post(url, json={"jsonrpc": "2.0", "id": {"x": 1}, "method": "tools/call", "params": call},
                            headers=h)
        assert r.status_code in (202, 400)
        # a 2026-07-28 POST with no id
        mh = {**HEADERS, "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "delete_thing"}
        r = await http.post(url, json={"jsonrpc": "2.0", "method": "tools/call",
                                       "params": {**call, "_meta": ENVELOPE}}, headers=mh)
        assert r.status_code == 202
        # the upstream counts every tools/call it is sent: only the status call itself arrived
        r = await http.post(url, json={"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                                       "params": {"name": "status", "arguments": {}}}, headers=h)
        assert "'calls': 1" in _messages(r)[-1]["result"]["content"][0]["text"]
    malformed = [rec for rec in read_audit(audit) if rec["kind"] == "malformed"]
    assert len(malformed) >= 2 and all(rec["decision"] == "malformed" for rec in malformed)
    assert {rec["tool"] for rec in malformed} == {"delete_thing"}
    assert malformed[0]["arguments"] == {"id": "all"}
    assert not [rec for rec in read_audit(audit) if rec["kind"] == "decision" and rec["tool"] == "delete_thing"]


async def test_half_sent_and_idle_connections_are_closed(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, [legacy_server("ev", tmp_path, POLICY, upstream_sessions="shared")],
                      request_read_timeout_s=1)
    async with running(cfg) as gw:
        port = int(gw.base_url.rsplit(":", 1)[1])
        loop = asyncio.get_running_loop()
        socks = []
        for i in range(60):
            s = socket.socket()
            s.setblocking(False)
            await loop.sock_connect(s, ("127.0.0.1", port))
            if i % 3 == 0:
                await loop.sock_sendall(s, b"POST /mcp/ev HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")  # head cut
            elif i % 3 == 1:
                await loop.sock_sendall(s, b"POST /mcp/ev HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: "
                                           b"application/json\r\nContent-Length: 100\r\n\r\n{\"jsonrpc\"")  # body cut
            socks.append(s)  # the rest send nothing at all
        t0 = time.monotonic()
        closed = 0
        for s in socks:
            try:
                data = await asyncio.wait_for(loop.sock_recv(s, 1024), 10)
            except (TimeoutError, ConnectionError):
                data = None
            closed += data == b""
            s.close()
        assert closed == 60 and time.monotonic() - t0 < 5
        async with client(gw.url("ev")) as s:  # still serving
            assert (await s.call_tool("echo", {"text": "ok"})).content[0].text == "ok"


async def test_an_upstream_that_is_down_answers_at_once(tmp_path: Path) -> None:
    from mcp import Client

    dead = ServerCfg(name="dead", command=sys.executable, args=["-c", "import sys; sys.exit('no database')"],
                     policy=str(tmp_path / "p.toml"), stderr_log=str(tmp_path / "dead.log"))
    (tmp_path / "p.toml").write_text(POLICY, encoding="utf-8")
    cfg = make_config(tmp_path, [dead], audit_log=str(tmp_path / "audit.jsonl"))
    async with running(cfg) as gw, Client(gw.url("dead"), mode="2026-07-28") as c:
        t0 = time.perf_counter()
        res = await c.call_tool("echo", {"text": "x"})
        took = time.perf_counter() - t0
        meta = res.meta["mcpguard/decision"]
        assert res.is_error and meta["code"] == "upstream_unavailable" and took < 1.0
        assert "nothing was sent" in meta["message"] and "last start failed" in meta["message"]
        assert "closed the connection" in meta["message"] or "handshake" in meta["message"]


async def test_open_file_limit_is_raised_and_accept_errors_are_folded(caplog: pytest.LogCaptureFixture) -> None:
    soft, hard = raise_open_file_limit()
    assert soft == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert hard == resource.RLIM_INFINITY or soft == hard
    loop = asyncio.get_running_loop()
    restore = throttle_accept_errors(loop, interval_s=60)
    try:
        with caplog.at_level(logging.ERROR, logger="mcpguard.gateway.http"):
            for _ in range(1000):
                loop.call_exception_handler({"message": "socket.accept() out of system resource",
                                             "exception": OSError(24, "Too many open files")})
        reports = [r for r in caplog.records if "cannot accept connections" in r.getMessage()]
        assert len(reports) == 1 and "Too many open files" in reports[0].getMessage()
    finally:
        restore()
