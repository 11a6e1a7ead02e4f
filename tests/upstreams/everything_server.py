"""A feature-rich MCP server for gateway tests, written on the mcp SDK's low-level Server.

It uses every MCP feature the gateway must forward: tools with
`outputSchema` and `$defs`, progress, logging, resources (list, read,
templates, subscribe/unsubscribe, `resources/updated`), prompts, completion,
sampling, elicitation, roots, `list_changed`, a slow tool for cancellation,
a tool that hangs, a tool that raises a JSON-RPC error, a tool that makes
the process exit, and `meta`, which answers with the `_meta` it received
(what the gateway passed on: `traceparent`, the envelope).

It serves both MCP eras, as the SDK does (the client's first request picks
one): on a 2026-07-28 connection `sample`, `elicit` and `roots` answer with
an `InputRequiredResult` (their `requestState` is checked on the retry),
change events go to `subscriptions/listen` streams, and every result carries
`resultType`.

Run: `python everything_server.py` (stdio) or
`python everything_server.py --http PORT` (Streamable HTTP on 127.0.0.1).
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import anyio
import mcp_types as types
from mcp.server.caching import CacheHint
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ResourceUpdated, ToolsListChanged
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

warnings.simplefilter("ignore")

STATE: dict[str, Any] = {
    "cancelled": 0,
    "subscriptions": [],
    "log_level": None,
    "mutated": False,
    "calls": 0,
    "states": [],
    "by_tool": {},  # tools/call requests that reached this server, by tool name
}
BUS = InMemorySubscriptionBus()

ITEM_SCHEMA = {
    "type": "object",
    "$defs": {
        "Item": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "qty": {"type": "integer", "minimum": 0}},
            "required": ["name"],
        }
    },
    "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/Item"}}},
    "required": ["items"],
}

OUTPUT_SCHEMA = {
    "type": "object",
    "properties": {"count": {"type": "integer"}, "names": {"type": "array", "items": {"type": "string"}}},
    "required": ["count", "names"],
}


def _tools() -> list[dict[str, Any]]:
    obj = {"type": "object"}
    tools = [
        {
            "name": "echo",
            "description": "Echo the text back." + (" (changed)" if STATE["mutated"] else ""),
            "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
            "annotations": {"title": "Echo", "readOnlyHint": True, "openWorldHint": False},
        },
        {
            "name": "count_items",
            "description": "Count items; structured output.",
            "inputSchema": ITEM_SCHEMA,
            "outputSchema": OUTPUT_SCHEMA,
            "annotations": {"readOnlyHint": True},
        },
        {"name": "delete_thing", "description": "Delete a thing.",
         "inputSchema": {"type": "object", "properties": {"id": {"type": "string"}}},
         "annotations": {"destructiveHint": True, "readOnlyHint": False}},
        {"name": "secret_tool", "description": "A tool a policy may hide.", "inputSchema": obj},
        {"name": "progress", "description": "Report progress steps.",
         "inputSchema": {"type": "object", "properties": {"steps": {"type": "integer"}}}},
        {"name": "slow", "description": "Sleep, reporting progress; counts cancellations.",
         "inputSchema": {"type": "object", "properties": {"seconds": {"type": "number"}}}},
        {"name": "log", "description": "Send a log message.",
         "inputSchema": {"type": "object", "properties": {"level": {"type": "string"}, "message": {"type": "string"}}}},
        {"name": "sample", "description": "Ask the client's LLM.",
         "inputSchema": {"type": "object", "properties": {"prompt": {"type": "string"}}}},
        {"name": "elicit", "description": "Ask the user.", "inputSchema": obj},
        {"name": "roots", "description": "List the client's roots.", "inputSchema": obj},
        {"name": "fail_rpc", "description": "Raise a JSON-RPC error.", "inputSchema": obj},
        {"name": "crash", "description": "Exit the process.", "inputSchema": obj},
        {"name": "mutate", "description": "Change echo's description; send tools/list_changed.", "inputSchema": obj},
        {"name": "touch", "description": "Send resources/updated for a uri.",
         "inputSchema": {"type": "object", "properties": {"uri": {"type": "string"}}}},
        {"name": "status", "description": "Server state.", "inputSchema": obj},
        {"name": "meta", "description": "The request's _meta as this server received it, as JSON.",
         "inputSchema": obj},
    ]
    return tools


def _text(s: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": s}], "resultType": "complete"}


def _modern(ctx) -> bool:
    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


def _ask(name: str, request: Any, params: types.CallToolRequestParams) -> Any:
    """2026-07-28: ask the client through an InputRequiredResult; on its retry, the response (state checked)."""
    want = f"{name}-state-{STATE['calls']}"
    responses = params.input_responses or {}
    if "q" not in responses:
        return types.InputRequiredResult(input_requests={"q": request}, request_state=want), None
    STATE["states"].append(params.request_state)
    return None, responses["q"]


async def list_tools(ctx, params) -> dict[str, Any]:
    return {"tools": _tools(), "resultType": "complete"}


async def call_tool(ctx, params: types.CallToolRequestParams) -> Any:
    result = await _call_tool(ctx, params)
    if isinstance(result, dict):
        result.setdefault("resultType", "complete")
    return result


async def _call_tool(ctx, params: types.CallToolRequestParams) -> Any:
    STATE["calls"] += 1
    args = params.arguments or {}
    name = params.name
    STATE["by_tool"][name] = STATE["by_tool"].get(name, 0) + 1
    related = ServerMessageMetadata(related_request_id=ctx.request_id)
    if name == "echo":
        return _text(str(args.get("text", "")))
    if name == "count_items":
        items = args.get("items", [])
        names = [i.get("name", "") for i in items]
        out = {"count": len(items), "names": names}
        return {"content": [{"type": "text", "text": str(out)}], "structuredContent": out}
    if name == "delete_thing":
        return _text(f"deleted {args.get('id')}")
    if name == "secret_tool":
        return _text("secret")
    if name == "progress":
        steps = int(args.get("steps", 3))
        for i in range(steps):
            await ctx.session.report_progress(i + 1, steps, f"step {i + 1}")
        return _text(f"did {steps} steps")
    if name == "slow":
        seconds = float(args.get("seconds", 30))
        try:
            await ctx.session.report_progress(0, seconds, "started")
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            STATE["cancelled"] += 1
            raise
        return _text("slept")
    if name == "log":
        await ctx.session.send_log_message(
            args.get("level", "info"), {"message": args.get("message", "")}, logger="everything",
            related_request_id=ctx.request_id)
        return _text("logged")
    if name == "sample":
        req = types.CreateMessageRequest(params=types.CreateMessageRequestParams(
            messages=[types.SamplingMessage(role="user", content=types.TextContent(
                type="text", text=str(args.get("prompt", ""))))],
            max_tokens=50))
        if _modern(ctx):
            ask, got = _ask(name, req, params)
            if ask is not None:
                return ask
            res = types.CreateMessageResult.model_validate(got)
        else:
            res = await ctx.session.send_request(req, types.CreateMessageResult, metadata=related)
        return _text(f"sampled: {res.content.text}")
    if name == "elicit":
        req = types.ElicitRequest(params=types.ElicitRequestFormParams(
            message="Your name?",
            requested_schema={"type": "object", "properties": {"name": {"type": "string"}}}))
        if _modern(ctx):
            ask, got = _ask(name, req, params)
            if ask is not None:
                return ask
            res = types.ElicitResult.model_validate(got)
        else:
            res = await ctx.session.send_request(req, types.ElicitResult, metadata=related)
        return _text(f"elicited: {res.action} {res.content}")
    if name == "roots":
        req = types.ListRootsRequest()
        if _modern(ctx):
            ask, got = _ask(name, req, params)
            if ask is not None:
                return ask
            res = types.ListRootsResult.model_validate(got)
        else:
            res = await ctx.session.send_request(req, types.ListRootsResult, metadata=related)
        return _text("roots: " + ",".join(str(r.uri) for r in res.roots))
    if name == "fail_rpc":
        raise MCPError(code=-32042, message="everything: custom failure", data={"why": "asked to"})
    if name == "crash":
        sys.stdout.flush()
        os._exit(3)
    if name == "mutate":
        STATE["mutated"] = True
        if _modern(ctx):
            await BUS.publish(ToolsListChanged())
        else:
            await ctx.session.send_tool_list_changed()
        return _text("mutated")
    if name == "touch":
        uri = str(args.get("uri", "mem://greeting"))
        if _modern(ctx):
            await BUS.publish(ResourceUpdated(uri=uri))
        else:
            await ctx.session.send_resource_updated(uri)
        return _text("touched")
    if name == "status":
        return _text(repr({k: STATE[k] for k in ("cancelled", "subscriptions", "log_level", "calls", "states",
                                                 "by_tool")}))
    if name == "meta":
        import json

        return _text(json.dumps(dict(ctx.meta or {}), default=str))
    raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {name}")


async def list_resources(ctx, params) -> dict[str, Any]:
    return {"resources": [{"uri": "mem://greeting", "name": "greeting", "mimeType": "text/plain"}],
            "resultType": "complete"}


async def list_templates(ctx, params) -> dict[str, Any]:
    return {"resourceTemplates": [{"uriTemplate": "mem://items/{id}", "name": "item"}], "resultType": "complete"}


async def read_resource(ctx, params: types.ReadResourceRequestParams) -> dict[str, Any]:
    uri = str(params.uri)
    if uri == "mem://greeting":
        return {"contents": [{"uri": uri, "mimeType": "text/plain", "text": "hello"}], "resultType": "complete"}
    if uri.startswith("mem://items/"):
        return {"contents": [{"uri": uri, "text": f"item {uri.rsplit('/', 1)[1]}"}], "resultType": "complete"}
    raise MCPError(code=-32002, message="Resource not found", data={"uri": uri})


async def subscribe(ctx, params: types.SubscribeRequestParams) -> dict[str, Any]:
    STATE["subscriptions"].append(str(params.uri))
    return {}


async def unsubscribe(ctx, params: types.UnsubscribeRequestParams) -> dict[str, Any]:
    if str(params.uri) in STATE["subscriptions"]:
        STATE["subscriptions"].remove(str(params.uri))
    return {}


LISTEN = ListenHandler(BUS)


async def listen(ctx, params: types.SubscriptionsListenRequestParams) -> Any:
    uris = list(params.notifications.resource_subscriptions or [])
    STATE["subscriptions"].extend(uris)
    try:
        return await LISTEN(ctx, params)
    finally:
        for uri in uris:
            STATE["subscriptions"].remove(uri)


async def list_prompts(ctx, params) -> dict[str, Any]:
    return {"prompts": [{"name": "greet", "description": "Greet someone.",
                         "arguments": [{"name": "who", "required": True}]}], "resultType": "complete"}


async def get_prompt(ctx, params: types.GetPromptRequestParams) -> dict[str, Any]:
    who = (params.arguments or {}).get("who", "you")
    return {"description": "A greeting", "messages": [{"role": "user", "content": {"type": "text", "text": f"Hello {who}"}}],
            "resultType": "complete"}


async def complete(ctx, params: types.CompleteRequestParams) -> dict[str, Any]:
    value = params.argument.value
    names = [n for n in ("alice", "albert", "bob") if n.startswith(value)]
    return {"completion": {"values": names, "total": len(names), "hasMore": False}, "resultType": "complete"}


async def set_level(ctx, params: types.SetLevelRequestParams) -> dict[str, Any]:
    STATE["log_level"] = params.level
    return {}


def build() -> Server:
    hints = {m: CacheHint(ttl_ms=0, scope="private") for m in (
        "tools/list", "resources/list", "resources/templates/list", "resources/read", "prompts/list")}
    return Server(
        "everything",
        version="1.0.0",
        instructions="A server for gateway tests.",
        cache_hints=hints,
        on_subscriptions_listen=listen,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_templates,
        on_read_resource=read_resource,
        on_subscribe_resource=subscribe,
        on_unsubscribe_resource=unsubscribe,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
        on_completion=complete,
        on_set_logging_level=set_level,
    )


NOTIFY = NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True)


async def main_stdio() -> None:
    from mcp.server.stdio import stdio_server

    server = build()
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options(NOTIFY))


def main_http(port: int) -> None:
    import uvicorn

    server = build()
    app = server.streamable_http_app()
    orig = server.create_initialization_options
    server.create_initialization_options = lambda *a, **k: orig(NOTIFY)  # type: ignore[method-assign]
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--http":
        main_http(int(sys.argv[2]))
    else:
        anyio.run(main_stdio)
