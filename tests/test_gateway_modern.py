"""A 2026-07-28 agent (no initialize, no session, each POST alone) through mcpguard, in front of both upstream eras.

The agent is the SDK's own `mcp.Client` pinned to `mode="2026-07-28"` (and
`mode="auto"`, which discovers) over Streamable HTTP on 127.0.0.1; the
upstreams are tests/upstreams/everything_server.py (mcp 2.x, negotiated to
2026-07-28) and tests/upstreams/legacy_server.py (mcp 1.x, handshake only),
both over stdio.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from upstreams.harness import make_config, running, upstream

from mcpguard.audit import read_audit

POLICY = """
version = "1"
default = "allow"
hide = ["secret_tool"]

[tools.delete_thing]
action = "deny"
reason = "Things stay."

[tools.echo]
[[tools.echo.limits]]
counter = "echo_rate"
window = "minute"
max = 3
"""


@pytest.fixture(params=["modern", "legacy"])
def era(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def cfg(tmp_path: Path, era: str):
    return make_config(tmp_path, [upstream(era, "ev", tmp_path, POLICY, upstream_sessions="shared")],
                       audit_log=str(tmp_path / "audit.jsonl"))


async def _sampling(ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    return types.CreateMessageResult(role="assistant", model="test-llm",
                                     content=types.TextContent(type="text", text=params.messages[0].content.text.upper()))


async def _elicitation(ctx: Any, params: Any) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"name": "Ada"})


async def _roots(ctx: Any) -> types.ListRootsResult:
    return types.ListRootsResult(roots=[types.Root(uri="file:///work/project", name="project")])


def _client(url: str, mode: str = "2026-07-28", **kw: Any) -> Client:
    return Client(url, mode=mode, sampling_callback=_sampling, elicitation_callback=_elicitation,
                  list_roots_callback=_roots, **kw)


async def test_discover_tools_and_policy(cfg, era) -> None:
    async with running(cfg) as gw, _client(gw.url("ev"), mode="auto") as c:
        assert c.protocol_version == "2026-07-28"  # auto: the gateway answers server/discover
        assert c.server_info is not None and c.server_info.name == ("everything" if era == "modern" else "legacy")
        assert c.instructions is not None and "gateway tests" in c.instructions
        tools = await c.list_tools()
        names = {t.name for t in tools.tools}
        assert "echo" in names and "secret_tool" not in names  # hidden
        count = next(t for t in tools.tools if t.name == "count_items")
        assert "$defs" in count.input_schema and count.output_schema["required"] == ["count", "names"]
        res = await c.call_tool("count_items", {"items": [{"name": "a"}, {"name": "b", "qty": 2}]})
        assert res.structured_content == {"count": 2, "names": ["a", "b"]}
        res = await c.call_tool("delete_thing", {"id": "x"})
        assert res.is_error and res.meta["mcpguard/decision"]["code"] == "policy_denied"
        assert "Things stay." in res.content[0].text
        res = await c.call_tool("secret_tool", {})
        assert res.is_error and res.content[0].text == "Unknown tool: secret_tool"
        for i in range(3):
            assert (await c.call_tool("echo", {"text": str(i)})).content[0].text == str(i)
        res = await c.call_tool("echo", {"text": "4th"})
        meta = res.meta["mcpguard/decision"]
        assert res.is_error and meta["code"] == "rate_limited" and meta["retry_after_s"] > 0


async def test_resources_prompts_completion(cfg) -> None:
    async with running(cfg) as gw, _client(gw.url("ev")) as c:
        res = await c.list_resources()
        assert [str(r.uri) for r in res.resources] == ["mem://greeting"]
        assert res.ttl_ms == 0 and res.cache_scope == "private"  # the caching fields, filled
        templates = await c.list_resource_templates()
        assert templates.resource_templates[0].uri_template == "mem://items/{id}"
        read = await c.read_resource("mem://items/42")
        assert read.contents[0].text == "item 42"
        with pytest.raises(MCPError) as err:
            await c.read_resource("mem://nope")
        assert err.value.error.code == -32002 and err.value.error.data == {"uri": "mem://nope"}
        prompts = await c.list_prompts()
        assert prompts.prompts[0].name == "greet"
        got = await c.get_prompt("greet", {"who": "Ada"})
        assert got.messages[0].content.text == "Hello Ada"
        done = await c.complete(types.PromptReference(type="ref/prompt", name="greet"), {"name": "who", "value": "al"})
        assert done.completion.values == ["alice", "albert"]


async def test_progress_and_cancellation(cfg) -> None:
    seen: list[str | None] = []
    started = asyncio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(message)
        started.set()

    async with running(cfg) as gw, _client(gw.url("ev")) as c:
        res = await c.call_tool("progress", {"steps": 3}, progress_callback=on_progress)
        assert res.content[0].text == "did 3 steps"
        for _ in range(100):
            if len(seen) == 3:
                break
            await asyncio.sleep(0.02)
        assert seen == ["step 1", "step 2", "step 3"]
        started.clear()
        task = asyncio.create_task(c.call_tool("slow", {"seconds": 30}, progress_callback=on_progress))
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
        assert "'cancelled': 1" in text  # the upstream was told


async def test_input_required_rounds_reach_the_agent(cfg, era) -> None:
    """Sampling, elicitation and roots: a 2026-07-28 upstream's InputRequiredResult passes through with its
    requestState untouched; a handshake-era upstream's server-to-client requests become such rounds."""
    async with running(cfg) as gw, _client(gw.url("ev")) as c:
        res = await c.call_tool("sample", {"prompt": "hi there"})
        assert res.content[0].text == "sampled: HI THERE"
        res = await c.call_tool("elicit", {})
        assert res.content[0].text == "elicited: accept {'name': 'Ada'}"
        res = await c.call_tool("roots", {})
        assert res.content[0].text == "roots: file:///work/project"
        if era == "modern":
            status = (await c.call_tool("status", {})).content[0].text
            # each retry carried exactly the requestState the upstream minted
            assert "'states': ['sample-state-1', 'elicit-state-3', 'roots-state-5']" in status
    # one decision per call, though the agent sent each twice
    decisions = [r for r in read_audit(cfg.gateway.audit_log) if r["kind"] == "decision"]
    assert [r["tool"] for r in decisions][:3] == ["sample", "elicit", "roots"]
    completions = [r for r in read_audit(cfg.gateway.audit_log) if r["kind"] == "completion"]
    assert [r["tool"] for r in completions][:3] == ["sample", "elicit", "roots"]


async def test_listen_for_list_changed_and_resource_updates(cfg, era) -> None:
    async with running(cfg) as gw, _client(gw.url("ev")) as c:
        got: list[Any] = []
        async with c.listen(tools_list_changed=True, resource_subscriptions=["mem://greeting"]) as sub:

            async def collect() -> None:
                async for event in sub:
                    got.append(event)
                    if len(got) == 2:
                        return

            task = asyncio.create_task(collect())
            await c.call_tool("touch", {"uri": "mem://greeting"})
            await c.call_tool("mutate", {})
            await asyncio.wait_for(task, 20)
        kinds = sorted(type(e).__name__ for e in got)
        assert kinds == ["ResourceUpdated", "ToolsListChanged"]
        tools = await c.list_tools()
        assert next(t for t in tools.tools if t.name == "echo").description.endswith("(changed)")
        assert "echo" in gw.servers["ev"].changed_tools


async def test_routing_headers_are_checked(cfg) -> None:
    """Mcp-Method must match the body (MCP 2026-07-28, Streamable HTTP): the SDK rejects a mismatch."""
    async with running(cfg) as gw, httpx2.AsyncClient(timeout=30) as http:
        meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
                "io.modelcontextprotocol/clientCapabilities": {}}
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": "x"}, "_meta": meta}}
        headers = {"accept": "application/json, text/event-stream", "content-type": "application/json",
                   "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/list", "mcp-name": "echo"}
        r = await http.post(gw.url("ev"), json=body, headers=headers)
        assert r.status_code == 400 and r.json()["error"]["code"] == types.HEADER_MISMATCH
        assert "mcp-method" in r.json()["error"]["message"]
        r = await http.post(gw.url("ev"), json=body, headers={**headers, "mcp-name": "count_items",
                                                                "mcp-method": "tools/call"})
        assert r.status_code == 400 and r.json()["error"]["code"] == types.HEADER_MISMATCH
        r = await http.post(gw.url("ev"), json=body, headers={**headers, "mcp-method": "tools/call"})
        assert r.status_code == 200
        assert r.json()["result"]["content"][0]["text"] == "x"


async def test_same_decisions_and_audit_in_either_era(tmp_path: Path, era: str) -> None:
    """The same calls from a handshake-era and a 2026-07-28 agent are decided and audited alike."""
    from upstreams.harness import client

    records: dict[str, list[dict[str, Any]]] = {}
    for mode in ("legacy", "2026-07-28"):
        d = tmp_path / mode
        d.mkdir()
        cfg = make_config(d, [upstream(era, "ev", d, POLICY, upstream_sessions="shared")],
                          audit_log=str(d / "audit.jsonl"))
        async with running(cfg) as gw:
            calls = [("echo", {"text": "a", "password": "pw"}), ("delete_thing", {"id": "1"}),
                     ("secret_tool", {}), ("echo", {"text": "b"}), ("echo", {"text": "c"}), ("echo", {"text": "d"})]
            if mode == "legacy":
                async with client(gw.url("ev")) as s:
                    for name, args in calls:
                        await s.call_tool(name, args)
            else:
                async with _client(gw.url("ev")) as c:
                    for name, args in calls:
                        await c.call_tool(name, args)
        keep = ("kind", "tool", "decision", "rule", "message", "arguments", "grant", "is_error")
        records[mode] = [{k: re.sub(r"retry after [0-9.]+ s", "retry after N s", v) if k == "message" else v
                          for k, v in r.items() if k in keep}
                         for r in read_audit(d / "audit.jsonl") if r["kind"] in ("decision", "completion")]
    assert records["legacy"] == records["2026-07-28"]
    decisions = [r["decision"] for r in records["legacy"] if r["kind"] == "decision"]
    assert decisions == ["allowed", "policy_denied", "hidden", "allowed", "allowed", "rate_limited"]
    assert json.dumps(records["legacy"]).count("[redacted]") == 1
