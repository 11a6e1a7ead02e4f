"""Upstream faults (issue 3 item 10), the audit trail (item 9), and a Streamable HTTP upstream."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import httpx2
from upstreams.harness import EVERYTHING, ServerCfg, client, everything_server, make_config, running

from mcpguard.audit import read_audit
from mcpguard.events import UpstreamState

SLOW = """
version = "1"
default = "allow"
"""


async def test_upstream_exit_fails_the_call_and_restarts(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path), everything_server("other", tmp_path)])
    async with running(cfg) as gw:
        sub = gw.bus.subscribe()
        async with client(gw.url("ev")) as s, client(gw.url("other")) as s2:
            res = await s.call_tool("crash", {})
            assert res.is_error
            meta = res.meta["mcpguard/decision"]
            assert meta["code"] == "upstream_error"
            assert "went away" in res.content[0].text
            # the other server never noticed
            assert (await s2.call_tool("echo", {"text": "still here"})).content[0].text == "still here"
            # the same agent session works again once its upstream is restarted
            res = await s.call_tool("echo", {"text": "back"})
            assert not res.is_error and res.content[0].text == "back"
        states = []
        while (e := sub.get_nowait()) is not None:
            if isinstance(e, UpstreamState):
                states.append((e.server, e.state))
        assert ("ev", "restarting") in states and states.index(("ev", "restarting")) < states.index(("ev", "up"))
        assert all(server == "ev" for server, _ in states)


async def test_hanging_upstream_hits_call_timeout(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, SLOW, call_timeout_s=1.0)])
    async with running(cfg) as gw, client(gw.url("ev")) as s:
        res = await s.call_tool("slow", {"seconds": 60})
        assert res.is_error and res.meta["mcpguard/decision"]["code"] == "upstream_timeout"
        assert "call_timeout" in res.content[0].text
        # the upstream was told: it cancelled the call
        text = ""
        for _ in range(100):
            text = (await s.call_tool("status", {})).content[0].text
            if "'cancelled': 1" in text:
                break
            await asyncio.sleep(0.05)
        assert "'cancelled': 1" in text


async def test_missing_command_is_down_not_a_crash(tmp_path: Path) -> None:
    bad = ServerCfg(name="bad", command=str(tmp_path / "no-such-binary"), policy=None,
                    stderr_log=str(tmp_path / "bad.log"))
    cfg = make_config(tmp_path, [bad, everything_server("ev", tmp_path)])
    async with running(cfg) as gw:
        assert gw.servers["bad"].state == "restarting"
        assert "no-such-binary" in gw.servers["bad"].detail
        async with client(gw.url("ev")) as s:
            assert not (await s.call_tool("echo", {"text": "ok"})).is_error


async def test_audit_log_holds_decision_and_completion_records(tmp_path: Path) -> None:
    policy = SLOW + '\n[tools.delete_thing]\naction = "deny"\n'
    audit = tmp_path / "audit.jsonl"
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, policy)], audit_log=str(audit))
    async with running(cfg) as gw, client(gw.url("ev")) as s:
        await s.call_tool("echo", {"text": "hi", "api_key": "sk-123"})
        records = read_audit(audit)  # flushed before the agent got its answer
        assert [r["kind"] for r in records] == ["decision", "completion"]
        d, c = records
        assert d["tool"] == "echo" and d["decision"] == "allowed" and d["grant"] == "local"
        assert d["arguments"] == {"text": "hi", "api_key": "[redacted]"}
        assert c["call_id"] == d["call_id"] and c["is_error"] is False and c["result_size"] > 0
        await s.call_tool("delete_thing", {"id": "x"})
        records = read_audit(audit)
        assert [r["decision"] for r in records[2:]] == ["policy_denied", "policy_denied"]
        assert records[2]["rule"] == "tools.delete_thing.action"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_streamable_http_upstream(tmp_path: Path) -> None:
    port = _free_port()
    log = open(tmp_path / "http-upstream.log", "w")
    proc = subprocess.Popen([sys.executable, str(EVERYTHING), "--http", str(port)], stdout=log, stderr=log)
    try:
        async with httpx2.AsyncClient() as http:
            for _ in range(200):  # up to 10 s for the server to listen
                try:
                    await http.get(f"http://127.0.0.1:{port}/mcp")
                    break
                except httpx2.TransportError:
                    await asyncio.sleep(0.05)
        policy = tmp_path / "h.toml"
        policy.write_text(SLOW + 'hide = ["secret_tool"]\n', encoding="utf-8")
        up = ServerCfg(name="h", url=f"http://127.0.0.1:{port}/mcp", policy=str(policy))
        cfg = make_config(tmp_path, [up])
        async with running(cfg) as gw, client(gw.url("h")) as s:
            assert gw.servers["h"].state == "up"
            names = {t.name for t in (await s.list_tools()).tools}
            assert "echo" in names and "secret_tool" not in names
            assert (await s.call_tool("echo", {"text": "over http"})).content[0].text == "over http"
            seen = []

            async def on_progress(p: float, total: float | None, message: str | None) -> None:
                seen.append(message)

            await s.call_tool("progress", {"steps": 2}, progress_callback=on_progress)
            for _ in range(100):
                if len(seen) == 2:
                    break
                await asyncio.sleep(0.02)
            assert seen == ["step 1", "step 2"]
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


async def test_the_configured_audit_cap_applies(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, SLOW)], audit_log=str(audit),
                      audit_max_value_bytes=1024)
    async with running(cfg) as gw, client(gw.url("ev")) as s:
        big = "x" * 5000
        assert (await s.call_tool("echo", {"text": big})).content[0].text == big  # the agent gets it all
    (decision,) = [r for r in read_audit(audit) if r["kind"] == "decision"]
    assert decision["arguments"]["_mcpguard_truncated"] is True and decision["arguments"]["bytes"] > 5000
    assert len(audit.read_text().splitlines()[0]) < 2500
