"""A handshake-era agent: everything that is not a policed tools/call passes through mcpguard, both ways.

Each test runs a real SDK client (`ClientSession`, the `initialize`
handshake, over Streamable HTTP on 127.0.0.1) against a running gateway in
front of each kind of upstream:
- `modern`: tests/upstreams/everything_server.py on the `mcp` 2.x SDK over
  stdio, with which the gateway negotiates MCP 2026-07-28 (sampling,
  elicitation and roots then come back as `InputRequiredResult`s, which the
  gateway turns into server-to-client requests to this agent);
- `legacy-per_session` / `legacy-shared`: tests/upstreams/legacy_server.py
  on the `mcp` 1.x SDK over stdio (handshake era only), with an upstream
  session per agent session, or one shared by all.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError
from pydantic import TypeAdapter
from upstreams.harness import EVERYTHING, LEGACY, client, legacy_python, make_config, running, upstream

from mcpguard.events import ToolChanged

RAW = TypeAdapter(dict[str, Any])

POLICY = """
version = "1"
default = "allow"
hide = ["secret_tool"]
"""


PAIRINGS = [("modern", None), ("legacy", "per_session"), ("legacy", "shared")]


@pytest.fixture(params=PAIRINGS, ids=["modern", "legacy-per_session", "legacy-shared"])
def era(request: pytest.FixtureRequest) -> str:
    return request.param[0]


@pytest.fixture
def cfg(tmp_path: Path, era: str, request: pytest.FixtureRequest):
    sessions = request.node.callspec.params["era"][1]
    return make_config(tmp_path, [upstream(era, "ev", tmp_path, POLICY, upstream_sessions=sessions)])


async def _direct_initialize_and_tools(era: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The upstream's own answers, without mcpguard."""
    params = (StdioServerParameters(command=sys.executable, args=[str(EVERYTHING)]) if era == "modern"
              else StdioServerParameters(command=legacy_python(), args=[str(LEGACY)]))
    async with stdio_client(params) as (r, w), ClientSession(r, w) as s:
        init = await s.initialize()
        tools = await s.send_request(types.ListToolsRequest(), RAW)
        return init.model_dump(by_alias=True, mode="json", exclude_none=True), tools


async def test_initialize_mirrors_upstream_capabilities_and_tools_list_is_intact(cfg, era) -> None:
    direct_init, direct_tools = await _direct_initialize_and_tools(era)
    async with running(cfg) as gw, client(gw.url("ev")) as s:
        init = s.initialize_result
        assert init is not None
        got = init.model_dump(by_alias=True, mode="json", exclude_none=True)
        assert got["capabilities"] == direct_init["capabilities"]
        assert got["serverInfo"] == direct_init["serverInfo"]
        assert got["instructions"] == direct_init["instructions"]
        raw = await s.send_request(types.ListToolsRequest(), RAW)
        want = [t for t in direct_tools["tools"] if t["name"] != "secret_tool"]
        assert raw["tools"] == want  # annotations, outputSchema and $defs byte-for-byte
        count = next(t for t in raw["tools"] if t["name"] == "count_items")
        assert "$defs" in count["inputSchema"] and count["outputSchema"]["required"] == ["count", "names"]
        res = await s.call_tool("count_items", {"items": [{"name": "a", "qty": 1}, {"name": "b"}]})
        assert res.structured_content == {"count": 2, "names": ["a", "b"]}


async def test_progress_reaches_the_caller_with_its_own_token(cfg) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with running(cfg) as gw, client(gw.url("ev")) as s:
        res = await s.call_tool("progress", {"steps": 3}, progress_callback=on_progress)
        assert res.content[0].text == "did 3 steps"
        for _ in range(100):
            if len(seen) == 3:
                break
            await asyncio.sleep(0.02)
        assert [m for _, _, m in seen] == ["step 1", "step 2", "step 3"]
        # the raw token the caller chose comes back unchanged
        raw_seen: list[Any] = []

        async def handler(msg: Any) -> None:
            if isinstance(msg, types.ProgressNotification):
                raw_seen.append(msg.params.progress_token)

        s._message_handler = handler  # observe raw notifications on this session
        await s.send_request(
            types.CallToolRequest(params=types.CallToolRequestParams(
                name="progress", arguments={"steps": 2}, _meta={"progressToken": "caller-token-7"})),
            RAW,
        )
        for _ in range(100):
            if len(raw_seen) == 2:
                break
            await asyncio.sleep(0.02)
        assert raw_seen == ["caller-token-7", "caller-token-7"]


async def test_logging_set_level_and_log_messages(cfg, era) -> None:
    logs: list[types.LoggingMessageNotificationParams] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params)

    async with running(cfg) as gw, client(gw.url("ev"), logging_callback=on_log) as s:
        await s.set_logging_level("debug")
        status = await s.call_tool("status", {})
        # a 2026-07-28 upstream has no session level: the agent's level goes with each request instead
        assert ("'log_level': 'debug'" in status.content[0].text) == (era == "legacy")
        await s.call_tool("log", {"level": "warning", "message": "careful"})
        for _ in range(100):
            if logs:
                break
            await asyncio.sleep(0.02)
        assert logs and logs[0].level == "warning" and logs[0].data == {"message": "careful"}
        assert logs[0].logger == ("everything" if era == "modern" else "legacy")


async def test_resources_templates_subscribe_and_updated(cfg) -> None:
    updates: list[str] = []

    async def handler(msg: Any) -> None:
        if isinstance(msg, types.ResourceUpdatedNotification):
            updates.append(str(msg.params.uri))

    async with running(cfg) as gw, client(gw.url("ev"), message_handler=handler) as s:
        res = await s.list_resources()
        assert [str(r.uri) for r in res.resources] == ["mem://greeting"]
        templates = await s.list_resource_templates()
        assert templates.resource_templates[0].uri_template == "mem://items/{id}"
        read = await s.read_resource("mem://items/42")
        assert read.contents[0].text == "item 42"
        with pytest.raises(MCPError) as err:
            await s.read_resource("mem://nope")
        assert err.value.error.code == -32002 and err.value.error.data == {"uri": "mem://nope"}
        await s.subscribe_resource("mem://greeting")
        status = await s.call_tool("status", {})
        assert "'subscriptions': ['mem://greeting']" in status.content[0].text
        await s.call_tool("touch", {"uri": "mem://greeting"})
        for _ in range(150):
            if updates:
                break
            await asyncio.sleep(0.02)
        assert updates == ["mem://greeting"]
        await s.unsubscribe_resource("mem://greeting")
        status = await s.call_tool("status", {})
        assert "'subscriptions': []" in status.content[0].text


async def test_prompts_and_completion(cfg) -> None:
    async with running(cfg) as gw, client(gw.url("ev")) as s:
        prompts = await s.list_prompts()
        assert prompts.prompts[0].name == "greet"
        got = await s.get_prompt("greet", {"who": "Ada"})
        assert got.messages[0].content.text == "Hello Ada"
        done = await s.complete(types.PromptReference(type="ref/prompt", name="greet"), {"name": "who", "value": "al"})
        assert done.completion.values == ["alice", "albert"]
        await s.send_ping()


async def test_sampling_elicitation_and_roots_reach_the_agent(cfg) -> None:
    async def sampling(ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        text = params.messages[0].content.text
        return types.CreateMessageResult(role="assistant", model="test-llm",
                                         content=types.TextContent(type="text", text=text.upper()))

    async def elicitation(ctx: Any, params: Any) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content={"name": "Ada"})

    async def roots(ctx: Any) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri="file:///work/project", name="project")])

    async with running(cfg) as gw, client(gw.url("ev"), sampling_callback=sampling,
                                          elicitation_callback=elicitation, list_roots_callback=roots) as s:
        res = await s.call_tool("sample", {"prompt": "hi there"})
        assert res.content[0].text == "sampled: HI THERE"
        res = await s.call_tool("elicit", {})
        assert res.content[0].text == "elicited: accept {'name': 'Ada'}"
        res = await s.call_tool("roots", {})
        assert res.content[0].text == "roots: file:///work/project"


async def test_upstream_jsonrpc_error_reaches_the_agent_unchanged(cfg, era) -> None:
    async with running(cfg) as gw, client(gw.url("ev")) as s:
        if era == "legacy":  # the 1.x SDK answers a tool's exception as an isError result, which passes as is
            res = await s.call_tool("fail_rpc", {})
            assert res.is_error and "custom failure" in res.content[0].text and res.meta is None
        else:
            with pytest.raises(MCPError) as err:
                await s.call_tool("fail_rpc", {})
            assert err.value.error.code == -32042
            assert err.value.error.message.endswith(": custom failure")
            assert err.value.error.data == {"why": "asked to"}
        with pytest.raises(MCPError) as err:
            await s.read_resource("mem://nope")
        assert err.value.error.code == -32002 and err.value.error.data == {"uri": "mem://nope"}


async def test_cancel_downstream_cancels_upstream(cfg) -> None:
    started = asyncio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        started.set()

    async with running(cfg) as gw, client(gw.url("ev")) as s:
        task = asyncio.create_task(s.call_tool("slow", {"seconds": 30}, progress_callback=on_progress))
        await asyncio.wait_for(started.wait(), 20)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        text = ""
        for _ in range(100):
            text = (await s.call_tool("status", {})).content[0].text
            if "'cancelled': 1" in text:
                break
            await asyncio.sleep(0.05)
        assert "'cancelled': 1" in text


async def test_list_changed_and_tool_fingerprint_change(cfg) -> None:
    changed: list[str] = []

    async def handler(msg: Any) -> None:
        if isinstance(msg, types.ToolListChangedNotification):
            changed.append("tools")

    async with running(cfg) as gw, client(gw.url("ev"), message_handler=handler) as s:
        sub = gw.bus.subscribe()
        await s.call_tool("mutate", {})
        for _ in range(150):
            if changed:
                break
            await asyncio.sleep(0.02)
        assert changed == ["tools"]
        tools = await s.list_tools()
        echo = next(t for t in tools.tools if t.name == "echo")
        assert echo.description.endswith("(changed)")
        events = []
        while (e := sub.get_nowait()) is not None:
            events.append(e)
        tc = [e for e in events if isinstance(e, ToolChanged)]
        assert [e.tool for e in tc] == ["echo"]
        assert tc[0].old_fingerprint != tc[0].new_fingerprint
        assert "echo" in gw.servers["ev"].changed_tools
