"""The vertical slice: an SDK client -> mcpguard (Streamable HTTP) -> a stdio upstream, with a policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from upstreams.harness import client, everything_server, make_config, running

POLICY = """
version = "1"
default = "allow"
hide = ["secret_tool"]

[tools.delete_thing]
action = "deny"
reason = "Deleting things is not for agents."
"""


async def test_list_and_call_through_the_gateway(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, POLICY)])
    async with running(cfg) as gw:
        assert gw.servers["ev"].state == "up"
        assert {t["name"] for t in gw.servers["ev"].tools} >= {"echo", "secret_tool"}
        async with client(gw.url("ev")) as s:
            tools = await s.list_tools()
            names = {t.name for t in tools.tools}
            assert "echo" in names and "secret_tool" not in names
            res = await s.call_tool("echo", {"text": "hello"})
            assert res.content[0].text == "hello" and not res.is_error
            denied = await s.call_tool("delete_thing", {"id": "x"})
            assert denied.is_error
            meta = denied.meta["mcpguard/decision"]
            assert meta["code"] == "policy_denied" and meta["rule"]
            assert "Deleting things is not for agents." in denied.content[0].text
