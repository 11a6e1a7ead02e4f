"""The downstream HTTP surface: grants, Host/Origin checks, malformed requests, and `mcpguard serve`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest
from upstreams.harness import EVERYTHING, client, everything_server, make_config, running

ROOT = Path(__file__).resolve().parent.parent
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}


def _messages(resp: httpx2.Response) -> list[dict[str, Any]]:
    """JSON-RPC messages of a response, SSE or JSON."""
    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        return [json.loads(line[5:]) for line in resp.text.splitlines() if line.startswith("data:") and line[5:].strip()]
    return [resp.json()]


async def _session(http: httpx2.AsyncClient, url: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    h = {**HEADERS, **(headers or {})}
    r = await http.post(url, json=INIT, headers=h)
    assert r.status_code == 200, r.text
    sid = r.headers["mcp-session-id"]
    h = {**h, "mcp-session-id": sid, "mcp-protocol-version": "2025-06-18"}
    r = await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=h)
    assert r.status_code == 202
    return h


async def test_malformed_requests_get_jsonrpc_errors(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path)])
    async with running(cfg) as gw, httpx2.AsyncClient(timeout=30) as http:
        url = gw.url("ev")
        h = await _session(http, url)
        r = await http.post(url, content=b"{not json", headers=h)
        assert r.status_code == 400 and _messages(r)[0]["error"]["code"] == -32700
        r = await http.post(url, json={"hello": "world"}, headers=h)
        assert r.status_code == 400 and _messages(r)[0]["error"]["code"] in (-32600, -32602)
        r = await http.post(url, json={"jsonrpc": "2.0", "id": 5, "method": "no/such_method"}, headers=h)
        (msg,) = _messages(r)
        assert msg["id"] == 5 and msg["error"]["code"] == -32601
        r = await http.post(url, json={"jsonrpc": "2.0", "id": 6, "method": "tools/call"}, headers=h)
        (msg,) = _messages(r)
        assert msg["id"] == 6 and msg["error"]["code"] == -32602
        r = await http.post(url, json={"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                                       "params": {"name": 42}}, headers=h)
        assert _messages(r)[0]["error"]["code"] == -32602
        r = await http.post(url, json={"jsonrpc": "2.0", "id": 8, "method": "resources/read", "params": {}},
                            headers=h)
        assert _messages(r)[0]["error"]["code"] == -32602
        # still serving
        r = await http.post(url, json={"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                                       "params": {"name": "echo", "arguments": {"text": "alive"}}}, headers=h)
        assert _messages(r)[-1]["result"]["content"][0]["text"] == "alive"
        r = await http.post(gw.base_url + "/mcp/nope", json=INIT, headers=HEADERS)
        assert r.status_code == 404 and "/mcp/ev" in r.text


async def test_host_and_origin_are_checked(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path)], allowed_origins=["https://app.example"])
    async with running(cfg) as gw, httpx2.AsyncClient(timeout=30) as http:
        url = gw.url("ev")
        r = await http.post(url, json=INIT, headers={**HEADERS, "origin": "http://evil.example"})
        assert r.status_code == 403
        r = await http.post(url, json=INIT, headers={**HEADERS, "host": "evil.example:80"})
        assert r.status_code in (400, 421)
        r = await http.post(url, json=INIT, headers={**HEADERS, "origin": "https://app.example"})
        assert r.status_code == 200
        r = await http.post(url, json=INIT, headers={**HEADERS, "origin": "http://localhost:3000"})
        assert r.status_code == 200


async def test_grants_bearer_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCPGUARD_TEST_TOKEN", "tok-ci-123")
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path)],
                      grants={"ci": {"token_env": "MCPGUARD_TEST_TOKEN"},
                              "dev": {"token_sha256": hashlib.sha256(b"tok-dev").hexdigest()}})
    async with running(cfg) as gw, httpx2.AsyncClient(timeout=30) as http:
        url = gw.url("ev")
        r = await http.post(url, json=INIT, headers=HEADERS)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        r = await http.post(url, json=INIT, headers={**HEADERS, "authorization": "Bearer wrong"})
        assert r.status_code == 401 and "wrong" not in r.text
        sub = gw.bus.subscribe()
        async with client(url, headers={"authorization": "Bearer tok-ci-123"}) as s:
            assert not (await s.call_tool("echo", {"text": "ci"})).is_error
        async with client(url, headers={"authorization": "Bearer tok-dev"}) as s:
            assert not (await s.call_tool("echo", {"text": "dev"})).is_error
        grants = []
        while (e := sub.get_nowait()) is not None:
            if type(e).__name__ == "CallReceived":
                grants.append(e.grant)
        assert grants == ["ci", "dev"]
        # a session opened by one grant is not usable with another token
        h = await _session(http, url, {"authorization": "Bearer tok-ci-123"})
        r = await http.post(url, json={"jsonrpc": "2.0", "id": 3, "method": "tools/list"},
                            headers={**h, "authorization": "Bearer tok-dev"})
        assert r.status_code == 404


async def test_serve_subprocess(tmp_path: Path) -> None:
    (tmp_path / "ev.toml").write_text('version = "1"\ndefault = "allow"\n'
                                      '[tools.delete_thing]\naction = "require_approval"\n', encoding="utf-8")
    (tmp_path / "mcpguard.toml").write_text(
        f"""
[gateway]
port = 0
url_file = "url.txt"
audit_log = "audit.jsonl"
headless_approvals = "deny"

[servers.ev]
command = {json.dumps(sys.executable)}
args = [{json.dumps(str(EVERYTHING))}]
policy = "ev.toml"

[grants.ci]
token_env = "MCPGUARD_SERVE_TEST_TOKEN"
""", encoding="utf-8")
    env = {**os.environ, "MCPGUARD_SERVE_TEST_TOKEN": "serve-token", "PYTHONPATH": str(ROOT)}
    out = open(tmp_path / "serve.out", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "mcpguard", "serve", "--config", str(tmp_path / "mcpguard.toml")],
                            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        url_file = tmp_path / "url.txt"
        for _ in range(600):  # up to 30 s
            if url_file.exists() and url_file.read_text().strip() or proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        assert proc.poll() is None, (tmp_path / "serve.out").read_text()
        base = url_file.read_text().strip()
        printed = (tmp_path / "serve.out").read_text()
        assert f"ev: {base}/mcp/ev" in printed
        async with client(f"{base}/mcp/ev", headers={"authorization": "Bearer serve-token"}) as s:
            assert (await s.call_tool("echo", {"text": "served"})).content[0].text == "served"
            res = await s.call_tool("delete_thing", {"id": "1"})
            assert res.is_error and res.meta["mcpguard/decision"]["code"] == "approval_denied"
            # the policy file is watched: a person denies echo, the running server obeys
            (tmp_path / "ev.toml").write_text('version = "1"\ndefault = "allow"\n[tools.echo]\naction = "deny"\n')
            for polls in range(1, 101):  # up to 5 s
                res = await s.call_tool("echo", {"text": "again"})
                if res.is_error:
                    break
                await asyncio.sleep(0.05)
            assert res.meta["mcpguard/decision"]["code"] == "policy_denied"
            # a typo is rejected with its line; the last good policy keeps running
            (tmp_path / "ev.toml").write_text('version = "1"\ndefault = "allow"\n[tools.echo]\naction = "dney"\n')
            for _ in range(100):
                if "rejected" in (tmp_path / "serve.out").read_text():
                    break
                await asyncio.sleep(0.05)
            assert "ev.toml:4:" in (tmp_path / "serve.out").read_text()
            res = await s.call_tool("echo", {"text": "still"})
            assert res.meta["mcpguard/decision"]["code"] == "policy_denied"
        with pytest.raises(Exception):
            async with client(f"{base}/mcp/ev") as s:
                pass
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert "stopping" in (tmp_path / "serve.out").read_text()
        audit = (tmp_path / "audit.jsonl").read_text()
        assert audit.count('"kind":"completion"') == 2 + polls + 1
        assert audit.count('"kind":"policy_reloaded"') == 1 and audit.count('"kind":"policy_rejected"') == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        out.close()


async def test_serve_bad_config_exits_2(tmp_path: Path) -> None:
    (tmp_path / "mcpguard.toml").write_text("[gateway]\nport = 'x'\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "mcpguard", "serve", "--config", str(tmp_path / "mcpguard.toml")],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2 and "mcpguard.toml:2" in proc.stderr



async def test_port_in_use_is_a_clear_error_and_leaves_nothing_running(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = make_config(tmp_path, [everything_server("ev", tmp_path)], port=port)
        from mcpguard.gateway import Gateway

        gw = Gateway(cfg)
        with pytest.raises(OSError, match=str(port)):
            await gw.start()
        assert gw.servers["ev"].state == "down"
        assert not gw.pools["ev"].shared.up and gw.pools["ev"].shared.state == "down"


async def test_a_single_server_also_answers_at_mcp_as_inspector_asks_and_two_servers_say_where(
        tmp_path: Path) -> None:
    from mcp import Client

    cfg = make_config(tmp_path, [everything_server("ev", tmp_path)])
    async with running(cfg) as gw:
        async with client(gw.base_url + "/mcp") as s:  # the handshake era
            assert (await s.call_tool("echo", {"text": "at /mcp"})).content[0].text == "at /mcp"
        async with Client(gw.base_url + "/mcp", mode="2026-07-28") as c:
            assert (await c.call_tool("echo", {"text": "stateless"})).content[0].text == "stateless"
    two = make_config(tmp_path / "two", [everything_server("a", tmp_path), everything_server("b", tmp_path)])
    async with running(two) as gw, httpx2.AsyncClient(timeout=30) as http:
        r = await http.post(gw.base_url + "/mcp", json=INIT, headers=HEADERS)
        assert r.status_code == 404 and "/mcp/a" in r.text and "/mcp/b" in r.text
