"""Consoles attached to a running `mcpguard serve`: several at once, the first answer wins, the link comes back.

Real parts: `mcpguard serve` as its own process on a free port, in front of
the everything server (stdio); consoles (Textual Pilot) attached with the
control file the gateway wrote; a real SDK agent over Streamable HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from upstreams.harness import EVERYTHING, client

from mcpguard.audit import read_audit
from mcpguard.console import ConsoleApp
from mcpguard.control import ControlError
from mcpguard.control_http import RemoteControl, read_control_file
from mcpguard.stack import free_port
from test_console_pilot import until

ROOT = Path(__file__).resolve().parents[1]
POLICY = """\
version = "1"
default = "allow"

[tools.echo]
action = "require_approval"
approval_timeout = "60s"
"""
SIZE = (120, 36)


def _config(tmp: Path, port: int, host: str = "127.0.0.1") -> Path:
    (tmp / "ev.toml").write_text(POLICY, encoding="utf-8")
    cfg = tmp / "mcpguard.toml"
    cfg.write_text(
        f'[gateway]\nhost = "{host}"\nport = {port}\naudit_log = "audit.jsonl"\nurl_file = "url"\n'
        f'control_file = "control.json"\ncontrol_token_env = "MCPGUARD_TEST_CONTROL"\n'
        f'headless_approvals = "deny"\n\n'
        f'[servers.ev]\ncommand = {sys.executable!r}\nargs = [{str(EVERYTHING)!r}]\npolicy = "ev.toml"\n'
        f'stderr_log = "ev.stderr.log"\n', encoding="utf-8")
    return cfg


@contextlib.contextmanager
def serving(cfg: Path, token: str = "tok-control-1") -> Iterator[subprocess.Popen[bytes]]:
    log = open(cfg.parent / "serve.log", "ab")
    (cfg.parent / "control.json").unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "mcpguard", "serve", "--config", str(cfg)],
                            stdout=log, stderr=log, env={**os.environ, "MCPGUARD_TEST_CONTROL": token,
                                                         "PYTHONPATH": str(ROOT)})
    try:
        for _ in range(600):  # the gateway writes its control file once it serves
            if (cfg.parent / "control.json").exists() or proc.poll() is not None:
                break
            import time

            time.sleep(0.05)
        assert proc.poll() is None, (cfg.parent / "serve.log").read_text()
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        log.close()


def _console(cfg: Path, by: str) -> ConsoleApp:
    url, token = read_control_file(cfg.parent / "control.json")
    return ConsoleApp(RemoteControl(url, token), owner=False, theme_name="dark", by=by)


async def test_two_consoles_see_one_approval_and_the_first_answer_wins(tmp_path: Path) -> None:
    port = free_port()
    cfg = _config(tmp_path, port)
    with serving(cfg):
        one, two = _console(cfg, "console:alice"), _console(cfg, "console:bob")
        async with one.run_test(size=SIZE) as p1, two.run_test(size=SIZE) as p2:
            await until(p1, lambda: one.started and two.started, "both attached")
            async with client(f"http://127.0.0.1:{port}/mcp/ev") as agent:
                call = asyncio.create_task(agent.call_tool("echo", {"text": "once"}))
                await until(p1, lambda: len(one.model.pending) == 1 and len(two.model.pending) == 1,
                            "the approval in both consoles")
                (aid,) = list(two.model.pending)
                await p1.press("a")
                res = await asyncio.wait_for(call, 30)
                assert not res.is_error and res.content[0].text == "once"
                await until(p2, lambda: not two.model.pending, "the approval gone from the other console")
                with pytest.raises(ControlError) as err:
                    await two.control.approve(aid, by="console:bob")
                assert err.value.code == "answered" and "console:alice" in err.value.message
                status = (await agent.call_tool("status", {})).content[0].text
                assert "'calls': 2" in status  # echo reached the upstream once, then status
    approvals = [r for r in read_audit(tmp_path / "audit.jsonl") if r["kind"] == "approval"]
    assert [(r["approver"], r["outcome"]) for r in approvals] == [("console:alice", "approved")]


async def test_an_attached_console_is_what_lets_headless_approvals_wait(tmp_path: Path) -> None:
    port = free_port()
    cfg = _config(tmp_path, port)
    with serving(cfg):
        async with client(f"http://127.0.0.1:{port}/mcp/ev") as agent:
            res = await agent.call_tool("echo", {"text": "nobody"})  # headless_approvals = "deny", no console
            assert res.is_error and res.meta["mcpguard/decision"]["code"] == "approval_denied"
            one = _console(cfg, "console:alice")
            async with one.run_test(size=SIZE) as p1:
                await until(p1, lambda: one.started, "attached")
                call = asyncio.create_task(agent.call_tool("echo", {"text": "somebody"}))
                await until(p1, lambda: bool(one.model.pending), "pending in the console")
                await p1.press("d")
                res = await asyncio.wait_for(call, 30)
                assert res.meta["mcpguard/decision"]["code"] == "approval_denied"


async def test_the_console_shows_the_gateway_gone_keeps_what_it_saw_and_comes_back(tmp_path: Path) -> None:
    port = free_port()
    cfg = _config(tmp_path, port)
    with serving(cfg) as proc:
        one = _console(cfg, "console:alice")
        async with one.run_test(size=SIZE) as p1:
            await until(p1, lambda: one.started, "attached")
            async with client(f"http://127.0.0.1:{port}/mcp/ev") as agent:
                call = asyncio.create_task(agent.call_tool("echo", {"text": "x"}))
                await until(p1, lambda: bool(one.model.pending), "pending")
                await p1.press("a")
                await asyncio.wait_for(call, 30)
            await until(p1, lambda: len(one.model.calls) == 1, "the call in the table")
            proc.kill()
            proc.wait(10)
            await until(p1, lambda: (one.link or "").startswith("disconnected"), "shown disconnected")
            assert len(one.model.calls) == 1  # kept
            from test_console_pilot import text_of

            assert "disconnected" in text_of(one.main.query_one("#status"))
            with serving(cfg):
                await until(p1, lambda: one.link is None, "connected again", tries=600)
                async with client(f"http://127.0.0.1:{port}/mcp/ev") as agent:
                    call = asyncio.create_task(agent.call_tool("echo", {"text": "after"}))
                    await until(p1, lambda: bool(one.model.pending), "the new gateway's approval")
                    await p1.press("a")
                    assert (await asyncio.wait_for(call, 30)).content[0].text == "after"


def _non_loopback_address() -> str:
    """An IPv4 address of this host that is not loopback (the route's source address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the source address
        addr = s.getsockname()[0]
    assert not addr.startswith("127."), "this host has no non-loopback IPv4 address"
    return addr


async def test_a_wrong_or_missing_control_token_is_refused(tmp_path: Path) -> None:
    port = free_port()
    cfg = _config(tmp_path, port, host="0.0.0.0")
    addr = _non_loopback_address()
    with serving(cfg, token="the-right-token"):
        async with httpx2.AsyncClient(timeout=10) as http:
            for base in (f"http://{addr}:{port}", f"http://127.0.0.1:{port}"):
                r = await http.get(f"{base}/control/snapshot")
                assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
                r = await http.get(f"{base}/control/snapshot", headers={"authorization": "Bearer wrong"})
                assert r.status_code == 401 and "wrong" not in r.text
                r = await http.post(f"{base}/control/undo", json={"by": "x"})
                assert r.status_code == 401
            r = await http.get(f"http://{addr}:{port}/control/snapshot",
                               headers={"authorization": "Bearer the-right-token"})
            assert r.status_code == 200 and r.json()["servers"][0]["name"] == "ev"
    assert "the-right-token" not in (tmp_path / "serve.log").read_text()
    assert "the-right-token" not in (tmp_path / "audit.jsonl").read_text()


async def test_a_console_attached_after_the_agent_started_still_shows_its_first_calls(tmp_path: Path) -> None:
    port = free_port()
    cfg = _config(tmp_path, port)
    with serving(cfg):
        async with client(f"http://127.0.0.1:{port}/mcp/ev") as agent:
            await agent.call_tool("count_items", {"items": [{"name": "early"}]})
            await agent.call_tool("delete_thing", {"id": "x"})
        one = _console(cfg, "console:late")
        async with one.run_test(size=SIZE) as p1:
            await until(p1, lambda: one.started and len(one.model.calls) == 2, "the earlier calls in the table")
            assert [r.tool for r in one.model.calls.values()] == ["count_items", "delete_thing"]
            assert all(r.done for r in one.model.calls.values())


async def _read_events(http: httpx2.AsyncClient, base: str, token: str, *, until_type: str,
                       last_id: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(id, event) pairs from the control event stream up to the batch with the first event of `until_type`
    (bounded: 20 s); each event's id is its number, worked out from its batch's id."""
    got: list[tuple[str, dict[str, Any]]] = []
    headers = {"authorization": f"Bearer {token}", **({"last-event-id": last_id} if last_id else {})}

    async def read() -> None:
        async with http.stream("GET", f"{base}/control/events", headers=headers) as r:
            assert r.status_code == 200
            async for sse in httpx2.EventSource(r):
                if sse.event == "events" and sse.data:
                    batch = sse.json()  # a JSON array; the message's id is its last event's number
                    boot, _, last = sse.id.partition("-")
                    for i, event in enumerate(batch):
                        got.append((f"{boot}-{int(last) - len(batch) + 1 + i}" if sse.id else "", event))
                    if any(e["type"] == until_type for e in batch):
                        return

    await asyncio.wait_for(read(), 20)
    return got


async def test_the_event_stream_resumes_after_the_last_event_id_a_front_end_saw(tmp_path: Path) -> None:
    port = free_port()
    cfg = _config(tmp_path, port)
    with serving(cfg):
        base, token = read_control_file(tmp_path / "control.json")
        async with httpx2.AsyncClient(timeout=30) as http, client(f"http://127.0.0.1:{port}/mcp/ev") as agent:
            await agent.call_tool("count_items", {"items": []})
            first = await _read_events(http, base, token, until_type="CallCompleted")
            assert first[0][0].endswith("-1") and [e["tool"] for _, e in first if e["type"] == "CallReceived"] \
                == ["count_items"]
            await agent.call_tool("delete_thing", {"id": "while away"})  # the front end is away
            again = await _read_events(http, base, token, until_type="CallCompleted", last_id=first[-1][0])
            assert again[0][1]["type"] == "CallReceived" and again[0][1]["tool"] == "delete_thing"
            assert not {i for i, _ in again} & {i for i, _ in first}  # nothing twice
            other_boot = await _read_events(http, base, token, until_type="CallCompleted", last_id="0000-3")
            assert other_boot[0][0].endswith("-1")  # an id of another gateway run: from the start
