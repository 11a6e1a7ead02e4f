"""`mcpguard connect URL`: stdio clients of both eras reach a real gateway through it.

The client is the SDK's own: `mcp.client.stdio.stdio_client` + `ClientSession`
(the handshake: `initialize`, then a session the gateway keeps) and
`mcp.Client(StdioServerParameters(...), mode="2026-07-28")` (no handshake,
each request carries its envelope). It starts `python -m mcpguard connect
URL` as its server process, as Claude Desktop would start `mcpguard connect`;
the gateway runs in this test's loop in front of the real upstreams of
tests/upstreams (over stdio), all on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp import Client
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError
from upstreams.harness import make_config, running, upstream

from mcpguard.audit import read_audit
from mcpguard.stack import free_port

POLICY = """
version = "1"
default = "allow"

[tools.delete_thing]
action = "deny"
reason = "Things stay."
"""

TOKEN = "connect-test-token-5b8e0c"


def _connect(url: str, *extra: str, env: dict[str, str] | None = None) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "mcpguard", "connect", url, *extra], env=env)


async def _sampling(ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    return types.CreateMessageResult(role="assistant", model="test-llm",
                                     content=types.TextContent(type="text", text=params.messages[0].content.text.upper()))


def _progress_sink() -> tuple[list[str | None], Any]:
    seen: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(message)

    return seen, on_progress


async def _wait_for(pred: Any, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if pred():
            return
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("era", ["modern", "legacy"])
async def test_handshake_client_through_connect(tmp_path: Path, era: str) -> None:
    """initialize, tools/list, an allowed and a denied call, progress and sampling (a server-to-client
    request on the session's stream, or the gateway's InputRequiredResult rounds for a 2026-07-28 upstream)."""
    cfg = make_config(tmp_path, [upstream(era, "ev", tmp_path, POLICY, upstream_sessions="shared")],
                      audit_log=str(tmp_path / "audit.jsonl"))
    errlog = (tmp_path / "connect.stderr").open("w+")
    async with running(cfg) as gw:
        async with stdio_client(_connect(gw.url("ev")), errlog=errlog) as (read, write):
            async with ClientSession(read, write, sampling_callback=_sampling) as s:
                init = await asyncio.wait_for(s.initialize(), 30)
                assert init.server_info.name == ("everything" if era == "modern" else "legacy")
                assert init.instructions is not None and "gateway tests" in init.instructions
                names = {t.name for t in (await s.list_tools()).tools}
                assert {"echo", "delete_thing", "sample"} <= names
                res = await s.call_tool("echo", {"text": "through stdio"})
                assert not res.is_error and res.content[0].text == "through stdio"
                res = await s.call_tool("delete_thing", {"id": "7"})
                assert res.is_error and res.meta["mcpguard/decision"]["code"] == "policy_denied"
                assert "Things stay." in res.content[0].text
                seen, on_progress = _progress_sink()
                res = await s.call_tool("progress", {"steps": 3}, progress_callback=on_progress)
                assert res.content[0].text == "did 3 steps"
                await _wait_for(lambda: len(seen) == 3)
                assert seen == ["step 1", "step 2", "step 3"]
                res = await s.call_tool("sample", {"prompt": "hi there"})
                assert res.content[0].text == "sampled: HI THERE"
        # the client closed stdin: connect ended its gateway session (HTTP DELETE) on the way out
        await _wait_for(lambda: not gw.sessions("ev"))
        assert gw.sessions("ev") == []
    records = [r for r in read_audit(cfg.gateway.audit_log) if r["kind"] == "decision"]
    assert [(r["tool"], r["decision"]) for r in records] == [
        ("echo", "allowed"), ("delete_thing", "policy_denied"), ("progress", "allowed"), ("sample", "allowed")]
    errlog.seek(0)
    assert "Traceback" not in errlog.read()


@pytest.mark.parametrize("era", ["modern", "legacy"])
async def test_modern_client_through_connect_with_a_token(tmp_path: Path, era: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A 2026-07-28 stdio client (no handshake) with `--token-env`: the gateway sees grant `ci`, the
    token is on no output, and sampling arrives as InputRequiredResult rounds the SDK client answers."""
    monkeypatch.setenv("MCPGUARD_CONNECT_TEST_TOKEN", TOKEN)
    cfg = make_config(tmp_path, [upstream(era, "ev", tmp_path, POLICY, upstream_sessions="shared")],
                      audit_log=str(tmp_path / "audit.jsonl"),
                      grants={"ci": {"token_env": "MCPGUARD_CONNECT_TEST_TOKEN"}})
    async with running(cfg) as gw:
        params = _connect(gw.url("ev"), "--token-env", "MCPGUARD_CONNECT_TEST_TOKEN",
                          env={"MCPGUARD_CONNECT_TEST_TOKEN": TOKEN})
        async with Client(params, mode="2026-07-28", sampling_callback=_sampling) as c:
            assert "echo" in {t.name for t in (await c.list_tools()).tools}
            res = await c.call_tool("echo", {"text": "modern"})
            assert not res.is_error and res.content[0].text == "modern"
            res = await c.call_tool("delete_thing", {"id": "8"})
            assert res.is_error and res.meta["mcpguard/decision"]["code"] == "policy_denied"
            seen, on_progress = _progress_sink()
            res = await c.call_tool("progress", {"steps": 2}, progress_callback=on_progress)
            assert res.content[0].text == "did 2 steps"
            await _wait_for(lambda: len(seen) == 2)
            assert seen == ["step 1", "step 2"]
            res = await c.call_tool("sample", {"prompt": "round trip"})
            assert res.content[0].text == "sampled: ROUND TRIP"
            # cancelling: the client's notifications/cancelled ends the request's POST (2026-07-28 cancels by
            # closing the stream), and the gateway cancels the upstream call
            started = asyncio.Event()

            async def on_start(progress: float, total: float | None, message: str | None) -> None:
                started.set()

            task = asyncio.create_task(c.call_tool("slow", {"seconds": 30}, progress_callback=on_start))
            await asyncio.wait_for(started.wait(), 20)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            text = ""
            for _ in range(100):
                text = (await c.call_tool("status", {})).content[0].text
                if "'cancelled': 1" in text:
                    break
                await asyncio.sleep(0.05)
            assert "'cancelled': 1" in text
    records = [r for r in read_audit(cfg.gateway.audit_log) if r["kind"] == "decision"]
    assert [(r["tool"], r["decision"], r["grant"]) for r in records][:4] == [
        ("echo", "allowed", "ci"), ("delete_thing", "policy_denied", "ci"), ("progress", "allowed", "ci"),
        ("sample", "allowed", "ci")]
    assert TOKEN not in (tmp_path / "audit.jsonl").read_text()


async def test_wrong_token_is_a_clean_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCPGUARD_CONNECT_TEST_TOKEN", TOKEN)
    cfg = make_config(tmp_path, [upstream("modern", "ev", tmp_path, POLICY)],
                      grants={"ci": {"token_env": "MCPGUARD_CONNECT_TEST_TOKEN"}})
    errlog = (tmp_path / "connect.stderr").open("w+")
    async with running(cfg) as gw:
        params = _connect(gw.url("ev"), "--token-env", "WRONG_TOKEN", env={"WRONG_TOKEN": "not-the-token"})
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as s:
            with pytest.raises(MCPError) as err:
                await asyncio.wait_for(s.initialize(), 30)
    assert "HTTP 401" in err.value.error.message and gw.url("ev") in err.value.error.message
    errlog.seek(0)
    assert "not-the-token" not in errlog.read()


async def test_gateway_down_answers_each_request_with_an_error(tmp_path: Path) -> None:
    """Nothing listens at the URL: every request gets a JSON-RPC error naming the URL and the cause, at once,
    in both eras, and the process keeps serving (a later request gets its own error)."""
    url = f"http://127.0.0.1:{free_port()}/mcp/ev"
    errlog = (tmp_path / "connect.stderr").open("w+")
    async with stdio_client(_connect(url), errlog=errlog) as (read, write), ClientSession(read, write) as s:
        for _ in range(2):
            with pytest.raises(MCPError) as err:
                await asyncio.wait_for(s.initialize(), 20)
            assert url in err.value.error.message and "cannot reach the gateway" in err.value.error.message
            assert err.value.error.data["url"] == url and err.value.error.data["cause"]
    async with asyncio.timeout(20), Client(_connect(url), mode="2026-07-28") as c:
        for _ in range(2):
            with pytest.raises(MCPError) as err:
                await c.call_tool("echo", {"text": "x"})
            assert url in err.value.error.message and "Connect call failed" in err.value.error.message
    errlog.seek(0)
    assert "Traceback" not in errlog.read()


async def test_lines_that_are_not_json_rpc_get_errors(tmp_path: Path) -> None:
    """Raw stdio: a line that is not JSON gets -32700, JSON that is no message -32600 (both with id null);
    stdout holds nothing but JSON-RPC; the connection goes on."""
    import json

    cfg = make_config(tmp_path, [upstream("modern", "ev", tmp_path, POLICY)])
    async with running(cfg) as gw:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mcpguard", "connect", gw.url("ev"), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientCapabilities": {}}
            call = {"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"text": "after"}, "_meta": meta}}
            proc.stdin.write(b"{not json\n" + b'{"hello": 1}\n' + json.dumps(call).encode() + b"\n")
            await proc.stdin.drain()
            lines = [json.loads(await asyncio.wait_for(proc.stdout.readline(), 20)) for _ in range(3)]
        finally:
            proc.stdin.close()
            await asyncio.wait_for(proc.wait(), 20)
    assert [(m.get("id"), m.get("error", {}).get("code")) for m in lines[:2]] == [(None, -32700), (None, -32600)]
    assert lines[2]["id"] == 5 and lines[2]["result"]["content"][0]["text"] == "after"
    assert proc.returncode == 0
