"""A handshake-era MCP server for gateway tests, written on the `mcp` 1.x SDK's low-level Server.

The twin of `everything_server.py` for the other era: the same tools,
resources, prompts and completion, but it speaks only the `initialize`
handshake (protocol versions up to 2025-11-25), asks its client with real
server-to-client requests (sampling, elicitation, roots), and sends
`list_changed` and `resources/updated` as session notifications. It runs
from the MLflow environment's Python (`mcpguard.stack`), which has `mcp` 1.x
because `mlflow-mcp` pins `mcp<2`: the same kind of upstream `mlflow-mcp` is.

Run: `python legacy_server.py` (stdio) or `python legacy_server.py --http PORT`
(Streamable HTTP on 127.0.0.1).
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import anyio
import mcp.types as types
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.shared.exceptions import McpError

warnings.simplefilter("ignore")

STATE: dict[str, Any] = {"cancelled": 0, "subscriptions": [], "log_level": None, "mutated": False, "calls": 0,
                         "client": None}

ITEM_SCHEMA = {
    "type": "object",
    "$defs": {"Item": {"type": "object", "properties": {"name": {"type": "string"},
                                                          "qty": {"type": "integer", "minimum": 0}},
                       "required": ["name"]}},
    "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/Item"}}},
    "required": ["items"],
}
OUTPUT_SCHEMA = {"type": "object", "properties": {"count": {"type": "integer"},
                                                  "names": {"type": "array", "items": {"type": "string"}}},
                 "required": ["count", "names"]}
OBJ = {"type": "object"}

server: Server = Server("legacy", version="1.0.0", instructions="A handshake-era server for gateway tests.")


def _tools() -> list[types.Tool]:
    def tool(name: str, description: str, schema: dict[str, Any] = OBJ, **kw: Any) -> types.Tool:
        return types.Tool(name=name, description=description, inputSchema=schema, **kw)

    text = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    return [
        tool("echo", "Echo the text back." + (" (changed)" if STATE["mutated"] else ""), text,
             annotations=types.ToolAnnotations(title="Echo", readOnlyHint=True, openWorldHint=False)),
        tool("count_items", "Count items; structured output.", ITEM_SCHEMA, outputSchema=OUTPUT_SCHEMA,
             annotations=types.ToolAnnotations(readOnlyHint=True)),
        tool("delete_thing", "Delete a thing.", {"type": "object", "properties": {"id": {"type": "string"}}},
             annotations=types.ToolAnnotations(destructiveHint=True, readOnlyHint=False)),
        tool("secret_tool", "A tool a policy may hide."),
        tool("progress", "Report progress steps.", {"type": "object", "properties": {"steps": {"type": "integer"}}}),
        tool("slow", "Sleep, reporting progress; counts cancellations.",
             {"type": "object", "properties": {"seconds": {"type": "number"}}}),
        tool("log", "Send a log message.", {"type": "object", "properties": {"level": {"type": "string"},
                                                                            "message": {"type": "string"}}}),
        tool("sample", "Ask the client's LLM.", {"type": "object", "properties": {"prompt": {"type": "string"}}}),
        tool("elicit", "Ask the user."),
        tool("roots", "List the client's roots."),
        tool("fail_rpc", "Raise a JSON-RPC error."),
        tool("crash", "Exit the process."),
        tool("mutate", "Change echo's description; send tools/list_changed."),
        tool("touch", "Send resources/updated for a uri.", {"type": "object", "properties": {"uri": {"type": "string"}}}),
        tool("status", "Server state."),
    ]


@server.list_tools()
async def list_tools() -> list[types.Tool]:
    return _tools()


def _text(s: str) -> list[types.TextContent]:
    return [types.TextContent(type="text", text=s)]


@server.call_tool(validate_input=False)
async def call_tool(name: str, args: dict[str, Any]) -> Any:
    STATE["calls"] += 1
    ctx = server.request_context
    session = ctx.session
    rid = ctx.request_id
    if STATE["client"] is None and session.client_params is not None:
        STATE["client"] = session.client_params.clientInfo.name
    if name == "echo":
        return _text(str(args.get("text", "")))
    if name == "count_items":
        items = args.get("items", [])
        out = {"count": len(items), "names": [i.get("name", "") for i in items]}
        return types.CallToolResult(content=_text(str(out)), structuredContent=out)
    if name == "delete_thing":
        return _text(f"deleted {args.get('id')}")
    if name == "secret_tool":
        return _text("secret")
    if name == "progress":
        steps = int(args.get("steps", 3))
        token = ctx.meta.progressToken if ctx.meta else None
        for i in range(steps):
            if token is not None:
                await session.send_progress_notification(token, i + 1, steps, f"step {i + 1}", related_request_id=rid)
        return _text(f"did {steps} steps")
    if name == "slow":
        seconds = float(args.get("seconds", 30))
        token = ctx.meta.progressToken if ctx.meta else None
        try:
            if token is not None:
                await session.send_progress_notification(token, 0, seconds, "started", related_request_id=rid)
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            STATE["cancelled"] += 1
            raise
        return _text("slept")
    if name == "log":
        await session.send_log_message(args.get("level", "info"), {"message": args.get("message", "")},
                                       logger="legacy", related_request_id=rid)
        return _text("logged")
    if name == "sample":
        res = await session.create_message(
            [types.SamplingMessage(role="user", content=types.TextContent(type="text", text=str(args.get("prompt", ""))))],
            max_tokens=50, related_request_id=rid)
        return _text(f"sampled: {res.content.text}")
    if name == "elicit":
        res = await session.elicit_form("Your name?", {"type": "object", "properties": {"name": {"type": "string"}}},
                                        related_request_id=rid)
        return _text(f"elicited: {res.action} {res.content}")
    if name == "roots":
        res = await session.send_request(types.ServerRequest(types.ListRootsRequest()), types.ListRootsResult,
                                         metadata=_related(rid))
        return _text("roots: " + ",".join(str(r.uri) for r in res.roots))
    if name == "fail_rpc":  # the 1.x SDK turns a tool's exception into an isError result
        raise McpError(types.ErrorData(code=-32042, message="legacy: custom failure", data={"why": "asked to"}))
    if name == "crash":
        sys.stdout.flush()
        os._exit(3)
    if name == "mutate":
        STATE["mutated"] = True
        await session.send_tool_list_changed()
        return _text("mutated")
    if name == "touch":
        await session.send_resource_updated(str(args.get("uri", "mem://greeting")))  # type: ignore[arg-type]
        return _text("touched")
    if name == "status":
        return _text(repr({k: STATE[k] for k in ("cancelled", "subscriptions", "log_level", "calls", "client")}))
    raise McpError(types.ErrorData(code=types.INVALID_PARAMS, message=f"Unknown tool: {name}"))


def _related(rid: Any) -> Any:
    from mcp.shared.message import ServerMessageMetadata

    return ServerMessageMetadata(related_request_id=rid)


@server.list_resources()
async def list_resources() -> list[types.Resource]:
    return [types.Resource(uri="mem://greeting", name="greeting", mimeType="text/plain")]  # type: ignore[arg-type]


@server.list_resource_templates()
async def list_templates() -> list[types.ResourceTemplate]:
    return [types.ResourceTemplate(uriTemplate="mem://items/{id}", name="item")]


@server.read_resource()
async def read_resource(uri: Any) -> Any:
    from mcp.server.lowlevel.helper_types import ReadResourceContents

    u = str(uri)
    if u == "mem://greeting":
        return [ReadResourceContents(content="hello", mime_type="text/plain")]
    if u.startswith("mem://items/"):
        return [ReadResourceContents(content=f"item {u.rsplit('/', 1)[1]}", mime_type="text/plain")]
    raise McpError(types.ErrorData(code=-32002, message="Resource not found", data={"uri": u}))


@server.subscribe_resource()
async def subscribe(uri: Any) -> None:
    STATE["subscriptions"].append(str(uri))


@server.unsubscribe_resource()
async def unsubscribe(uri: Any) -> None:
    if str(uri) in STATE["subscriptions"]:
        STATE["subscriptions"].remove(str(uri))


@server.list_prompts()
async def list_prompts() -> list[types.Prompt]:
    return [types.Prompt(name="greet", description="Greet someone.",
                         arguments=[types.PromptArgument(name="who", required=True)])]


@server.get_prompt()
async def get_prompt(name: str, arguments: dict[str, str] | None) -> types.GetPromptResult:
    who = (arguments or {}).get("who", "you")
    return types.GetPromptResult(description="A greeting", messages=[
        types.PromptMessage(role="user", content=types.TextContent(type="text", text=f"Hello {who}"))])


@server.completion()
async def complete(ref: Any, argument: types.CompletionArgument, context: Any) -> types.Completion:
    names = [n for n in ("alice", "albert", "bob") if n.startswith(argument.value)]
    return types.Completion(values=names, total=len(names), hasMore=False)


@server.set_logging_level()
async def set_level(level: types.LoggingLevel) -> None:
    STATE["log_level"] = level


NOTIFY = NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True)


async def main_stdio() -> None:
    from mcp.server.stdio import stdio_server

    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options(NOTIFY))


def main_http(port: int) -> None:
    import contextlib

    import uvicorn
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
    from starlette.applications import Starlette
    from starlette.routing import Mount

    orig = server.create_initialization_options
    server.create_initialization_options = lambda *a, **k: orig(NOTIFY)  # type: ignore[method-assign]
    manager = StreamableHTTPSessionManager(app=server)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):  # type: ignore[no-untyped-def]
        async with manager.run():
            yield

    app = Starlette(routes=[Mount("/mcp", app=manager.handle_request)], lifespan=lifespan)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--http":
        main_http(int(sys.argv[2]))
    else:
        anyio.run(main_stdio)
