"""The `CallToolResult`s mcpguard answers with itself, and tool fingerprints.

A denied call is not a JSON-RPC error: the agent gets a `CallToolResult`
with `isError: true`, a text it can act on, and
`_meta["mcpguard/decision"] = {"code", "rule", "message", "retry_after_s"?}`,
`code` one of `mcpguard.codes.Code` (the hint after the message is
`mcpguard.codes.HINTS[code]`).

A hidden tool answers exactly as the SDK servers (mcp 1.x FastMCP, mcp 2.x
MCPServer) answer a tool name they do not know: an `isError` result whose
only content is the text `Unknown tool: NAME`, with no `_meta`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from mcpguard.codes import HINTS, Code

DECISION_META_KEY = "mcpguard/decision"


def denial(code: Code | str, message: str, *, rule: str | None = None, retry_after_s: float | None = None,
           server: str | None = None, tool: str | None = None) -> dict[str, Any]:
    """A `CallToolResult` JSON object for a call mcpguard answered itself.

    `code` is a `Code` (or its string); `message` says why (the policy's own
    `reason`/`on_deny` text when there is one); `retry_after_s` is seconds
    (rate limits). The text reads `mcpguard denied TOOL on SERVER (code): message. hint`
    (`could not complete` instead of `denied` for faults of the upstream).
    """
    code = Code(code)
    hint = HINTS.get(code, "")
    if code == Code.RATE_LIMITED and retry_after_s is not None:
        hint = hint.format(retry=round(retry_after_s, 3))
    elif "{" in hint:
        hint = ""
    where = f" {tool} on {server}" if tool and server else ""
    verb = "could not complete" if code.upstream_fault else "denied"
    text = f"mcpguard {verb}{where} ({code}): {message}".rstrip()
    if hint:
        text = f"{text} {hint}" if text.endswith(".") else f"{text}. {hint}"
    meta: dict[str, Any] = {"code": str(code), "rule": rule, "message": message}
    if retry_after_s is not None:
        meta["retry_after_s"] = round(retry_after_s, 3)
    return {"content": [{"type": "text", "text": text}], "isError": True, "_meta": {DECISION_META_KEY: meta}}


def unknown_tool(name: str) -> dict[str, Any]:
    """What an SDK server answers for a tool it does not have (mcp `ToolManager`: `Unknown tool: NAME`)."""
    return {"content": [{"type": "text", "text": f"Unknown tool: {name}"}], "isError": True}


def fingerprint(tool: dict[str, Any]) -> str:
    """sha256 (hex) of a tool's name, description, inputSchema and annotations, canonical JSON."""
    doc = {
        "name": tool.get("name"),
        "description": tool.get("description"),
        "inputSchema": tool.get("inputSchema"),
        "annotations": tool.get("annotations"),
    }
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()
