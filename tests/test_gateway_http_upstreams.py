"""Streamable HTTP upstreams of both eras, behind one shared connection, with agents of both eras.

The upstreams run as their own processes on 127.0.0.1: the mcp 2.x
everything server (2026-07-28 negotiated) and the mcp 1.x legacy server
(handshake era). Over HTTP an upstream's server-to-client request rides the
response stream of the request it belongs to, so even on a shared
connection each agent gets its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import mcp_types as types
import pytest
from mcp import Client
from upstreams.harness import EVERYTHING, LEGACY, ServerCfg, client, legacy_python, make_config, running

from mcpguard.stack import free_port

POLICY = 'version = "1"\ndefault = "allow"\nhide = ["secret_tool"]\n'


@contextlib.contextmanager
def _http_upstream(era: str, tmp: Path) -> Iterator[str]:
    port = free_port()
    cmd = ([sys.executable, str(EVERYTHING)] if era == "modern" else [legacy_python(), str(LEGACY)])
    log = open(tmp / f"http-{era}.log", "w")
    proc = subprocess.Popen([*cmd, "--http", str(port)], stdout=log, stderr=log)
    try:
        for _ in range(300):  # up to 15 s for the server to listen
            try:
                httpx2.get(f"http://127.0.0.1:{port}/mcp", timeout=1)
                break
            except httpx2.TransportError:
                import time

                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _sampling(tag: str) -> Any:
    async def sampling(ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        await asyncio.sleep(0.3)  # both agents' requests are in flight at once
        return types.CreateMessageResult(role="assistant", model="m",
                                         content=types.TextContent(type="text", text=f"{tag}:{params.messages[0].content.text}"))
    return sampling


@pytest.mark.parametrize("era", ["modern", "legacy"])
async def test_http_upstream_with_agents_of_both_eras(tmp_path: Path, era: str) -> None:
    (tmp_path / "h.toml").write_text(POLICY, encoding="utf-8")
    with _http_upstream(era, tmp_path) as url:
        cfg = make_config(tmp_path, [ServerCfg(name="h", url=url, policy=str(tmp_path / "h.toml"),
                                               upstream_sessions="shared")])
        async with running(cfg) as gw:
            pool = gw.pools["h"]
            assert gw.servers["h"].state == "up" and pool.shared.era == era
            progress: list[str | None] = []

            async def on_progress(p: float, total: float | None, message: str | None) -> None:
                progress.append(message)

            async with client(gw.url("h"), sampling_callback=_sampling("old")) as old, \
                    Client(gw.url("h"), mode="2026-07-28", sampling_callback=_sampling("new")) as new:
                names = {t.name for t in (await old.list_tools()).tools}
                assert "echo" in names and "secret_tool" not in names
                assert {t.name for t in (await new.list_tools()).tools} == names
                assert (await old.call_tool("echo", {"text": "a"})).content[0].text == "a"
                assert (await new.call_tool("echo", {"text": "b"})).content[0].text == "b"
                await new.call_tool("progress", {"steps": 2}, progress_callback=on_progress)
                for _ in range(100):
                    if len(progress) == 2:
                        break
                    await asyncio.sleep(0.02)
                assert progress == ["step 1", "step 2"]
                # each agent's sampling answer goes to that agent, both in flight on the one connection
                a, b = await asyncio.gather(old.call_tool("sample", {"prompt": "x"}),
                                            new.call_tool("sample", {"prompt": "y"}))
                assert a.content[0].text == "sampled: old:x" and b.content[0].text == "sampled: new:y"
            assert pool.processes() == 1


async def test_shared_stdio_sampling_of_two_agents_at_once_is_refused_not_guessed(tmp_path: Path) -> None:
    """On stdio nothing says which agent an upstream request belongs to: with two agents in flight the upstream
    is told so (a JSON-RPC error), and neither agent gets the other's question."""
    from upstreams.harness import legacy_server

    cfg = make_config(tmp_path, [legacy_server("ev", tmp_path, POLICY, upstream_sessions="shared")])
    async with running(cfg) as gw:
        async with client(gw.url("ev"), sampling_callback=_sampling("a")) as a, \
                client(gw.url("ev"), sampling_callback=_sampling("b")) as b:
            slow = asyncio.create_task(b.call_tool("slow", {"seconds": 2}))
            await asyncio.sleep(0.3)
            res = await a.call_tool("sample", {"prompt": "x"})
            assert res.is_error and "cannot tell which one this belongs to" in res.content[0].text
            assert (await slow).content[0].text == "slept"
            # alone in flight, it is delivered
            assert (await a.call_tool("sample", {"prompt": "y"})).content[0].text == "sampled: a:y"
