"""OpenTelemetry: what a collector receives from a real gateway, through the real OTLP/HTTP exporters.

The collector is tests/otlp_receiver.py on 127.0.0.1 (it decodes the
protobuf the exporters send); the agent is the SDK's `mcp.Client` in
2026-07-28 mode; the upstream is tests/upstreams/everything_server.py,
whose `meta` tool answers with the `_meta` it received, so the test sees
the `traceparent` the gateway passed upstream.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from opentelemetry import context, propagate
from otlp_receiver import OtlpReceiver
from upstreams.harness import EVERYTHING, everything_server, make_config, running

POLICY = """
version = "1"
default = "allow"

[tools.delete_thing]
action = "deny"
reason = "Things stay."

[tools.meta]
action = "require_approval"
reason = "Shows what the server received."
"""

#: W3C trace contexts the agent puts in `_meta` (trace ids the test can recognise)
AGENT_TRACES = {tool: f"00-{n * 32}-{n * 16}-01" for tool, n in (("echo", "a"), ("delete_thing", "b"),
                                                                  ("meta", "c"))}


async def _traced_call(c: Client, tool: str, args: dict[str, Any]) -> Any:
    """Call `tool` as an agent inside the trace `AGENT_TRACES[tool]`: the SDK client's dispatcher writes
    that context into the request's `params._meta.traceparent` (MCP SEP-414)."""
    token = context.attach(propagate.extract({"traceparent": AGENT_TRACES[tool]}))
    try:
        return await c.call_tool(tool, args)
    finally:
        context.detach(token)


async def _wait_for(pred: Any, seconds: float = 15.0) -> bool:
    for _ in range(int(seconds / 0.05)):
        if pred():
            return True
        await asyncio.sleep(0.05)
    return pred()


async def test_tools_call_spans_and_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")  # ms: the pending gauge is seen while it waits
    with OtlpReceiver() as collector:
        cfg = make_config(tmp_path, [everything_server("ev", tmp_path, POLICY, upstream_sessions="shared")],
                          telemetry={"otlp_endpoint": collector.url, "service_name": "mcpguard-test"})
        assert cfg.telemetry.enabled
        async with running(cfg) as gw, Client(gw.url("ev"), mode="2026-07-28") as c:

            def pending_seen() -> bool:
                return any(v == 1 for _, v in collector.metric_points("mcpguard.approvals.pending"))

            async def approve_when_waiting() -> None:
                for _ in range(300):
                    if gw.approvals.pending() and pending_seen():
                        gw.approvals.approve(gw.approvals.pending()[0].id)
                        return
                    await asyncio.sleep(0.05)

            res = await _traced_call(c, "echo", {"text": "hi"})
            assert res.content[0].text == "hi"
            res = await _traced_call(c, "delete_thing", {"id": "1"})
            assert res.is_error and res.meta["mcpguard/decision"]["code"] == "policy_denied"
            approver = asyncio.create_task(approve_when_waiting())
            res = await asyncio.wait_for(_traced_call(c, "meta", {}), 30)
            await approver
            upstream_meta = json.loads(res.content[0].text)
        # gateway stopped: the exporters have flushed
        spans = collector.spans()
        assert await _wait_for(lambda: collector.metric_points("mcpguard.decisions"))

    server = {s.attributes["gen_ai.tool.name"]: s for s in spans
              if s.kind == "SERVER" and s.name.startswith("tools/call ")}
    assert set(server) == {"echo", "delete_thing", "meta"}
    for tool, span in server.items():
        assert span.name == f"tools/call {tool}"
        assert span.attributes["mcp.method.name"] == "tools/call"
        assert span.attributes["gen_ai.operation.name"] == "execute_tool"
        assert span.attributes["mcp.protocol.version"] == "2026-07-28"
        assert span.attributes["mcpguard.server"] == "ev"
        assert span.resource["service.name"] == "mcpguard-test"
        # the agent's trace, taken from params._meta.traceparent
        assert span.trace_id == AGENT_TRACES[tool].split("-")[1]
        agent_send = next(s for s in spans if s.span_id == span.parent_span_id)
        assert agent_send.kind == "CLIENT" and agent_send.parent_span_id == AGENT_TRACES[tool].split("-")[2]

    allowed, denied, approved = server["echo"], server["delete_thing"], server["meta"]
    assert (allowed.attributes["mcpguard.decision"], allowed.attributes["mcpguard.code"]) == ("allowed", "allowed")
    assert allowed.status == "UNSET" and "mcpguard.approver" not in allowed.attributes
    assert denied.attributes["mcpguard.decision"] == denied.attributes["mcpguard.code"] == "policy_denied"
    assert denied.attributes["mcpguard.rule"] == "tools.delete_thing.action"
    assert denied.status == "ERROR" and denied.attributes["error.type"] == "tool_error"
    assert approved.attributes["mcpguard.decision"] == "approved"
    assert approved.attributes["mcpguard.code"] == "approval_required"
    assert approved.attributes["mcpguard.rule"] == "tools.meta.action"
    assert approved.attributes["mcpguard.approver"] == "console"
    assert approved.attributes["mcpguard.approval_wait_ms"] > 0

    # the gateway's own request upstream: a CLIENT child of the server span, and the upstream got its context
    for tool in ("echo", "meta"):
        send = [s for s in spans if s.parent_span_id == server[tool].span_id and s.kind == "CLIENT"]
        assert [s.name for s in send] == [f"MCP send tools/call {tool}"]
    up_trace, up_parent = upstream_meta["traceparent"].split("-")[1:3]
    assert up_trace == AGENT_TRACES["meta"].split("-")[1]
    assert up_parent == next(s.span_id for s in spans if s.parent_span_id == approved.span_id and s.kind == "CLIENT")
    # the denied call never left the gateway
    assert not [s for s in spans if s.parent_span_id == denied.span_id]

    decisions = {(a["mcpguard.decision"], a["gen_ai.tool.name"]): v
                 for a, v in collector.metric_points("mcpguard.decisions") if a["mcpguard.server"] == "ev"}
    assert decisions == {("allowed", "echo"): 1, ("policy_denied", "delete_thing"): 1, ("approved", "meta"): 1}
    durations = {a["gen_ai.tool.name"]: v for a, v in collector.metric_points("mcpguard.call.duration")}
    assert {tool: count for tool, (count, _) in durations.items()} == {"echo": 1, "delete_thing": 1, "meta": 1}
    assert durations["meta"][1] >= approved.attributes["mcpguard.approval_wait_ms"]  # ms, the wait included
    pending = [v for a, v in collector.metric_points("mcpguard.approvals.pending") if a["gen_ai.tool.name"] == "meta"]
    assert 1 in pending and pending[-1] == 0


def _serve_config(tmp_path: Path) -> Path:
    policy = tmp_path / "ev.toml"
    policy.write_text(POLICY, encoding="utf-8")
    cfg = tmp_path / "mcpguard.toml"
    cfg.write_text(f"""
[gateway]
port = 0
audit_log = ""
url_file = ""

[servers.ev]
command = {json.dumps(sys.executable)}
args = [{json.dumps(str(EVERYTHING))}]
policy = "ev.toml"
upstream_sessions = "shared"
""", encoding="utf-8")
    return cfg


async def _serve_and_call(cfg: Path, env: dict[str, str]) -> None:
    """`mcpguard serve` in its own process with `env`; an agent makes an allowed and a denied call; SIGINT."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mcpguard", "serve", "--config", str(cfg), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env={**os.environ, **env})
    try:
        url = None
        for _ in range(20):
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            if line.strip().startswith("ev: "):
                url = line.split()[1]
                break
        assert url is not None
        async with Client(url, mode="2026-07-28") as c:
            assert (await c.call_tool("echo", {"text": "x"})).content[0].text == "x"
            assert (await c.call_tool("delete_thing", {"id": "2"})).is_error
    finally:
        proc.send_signal(signal.SIGINT)
        out = (await asyncio.wait_for(proc.communicate(), 30))[0].decode()
    assert proc.returncode == 0, out


async def test_otel_environment_alone_turns_it_on_and_sdk_disabled_off(tmp_path: Path) -> None:
    """With no [telemetry] section, the standard OTEL_* variables decide: OTEL_EXPORTER_OTLP_ENDPOINT turns
    spans on (OTEL_SERVICE_NAME names the service); OTEL_SDK_DISABLED=true, same endpoint, sends nothing."""
    cfg = _serve_config(tmp_path)
    with OtlpReceiver() as collector:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_SERVICE_NAME": "from-env"}
        await _serve_and_call(cfg, env)
        spans = [s for s in collector.spans() if s.kind == "SERVER" and s.name.startswith("tools/call ")]
        assert sorted(s.name for s in spans) == ["tools/call delete_thing", "tools/call echo"]
        assert {s.resource["service.name"] for s in spans} == {"from-env"}
        assert {s.attributes["mcpguard.decision"] for s in spans} == {"allowed", "policy_denied"}
    with OtlpReceiver() as collector:
        await _serve_and_call(cfg, {**env, "OTEL_SDK_DISABLED": "true"})
        await asyncio.sleep(0.5)
        assert collector.requests == 0 and collector.spans() == []


async def test_telemetry_off_no_span_middleware_no_listener(tmp_path: Path) -> None:
    """Off (the default), in this process too: no span middleware on the endpoint, nothing on the bus, and a
    traceparent the agent sent is passed upstream as it came (no gateway span was made in between). The one
    listener left is the gateway's recent-event log, which a console attaching later replays."""
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, upstream_sessions="shared")])  # allow all
    assert not cfg.telemetry.enabled
    async with running(cfg) as gw:
        from mcp.server._otel import OpenTelemetryMiddleware

        assert not any(isinstance(m, OpenTelemetryMiddleware) for m in gw.endpoints["ev"].server.middleware)
        assert gw.telemetry is None and gw.bus.listened
        gw.event_log.close()
        assert not gw.bus.listened  # telemetry added no listener of its own
        tp = "00-" + "d" * 32 + "-" + "e" * 16 + "-01"
        async with httpx2.AsyncClient(timeout=30) as http:
            meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientCapabilities": {}, "traceparent": tp}
            headers = {"accept": "application/json, text/event-stream", "content-type": "application/json",
                       "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "echo"}
            r = await http.post(gw.url("ev"), headers=headers, json={
                "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": "plain"}, "_meta": meta}})
            assert r.json()["result"]["content"][0]["text"] == "plain"
            r = await http.post(gw.url("ev"), headers={**headers, "mcp-name": "meta"}, json={
                "jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "meta", "_meta": meta}})
            received = json.loads(_result_text(r))
    assert received["traceparent"] == tp


def _result_text(r: httpx2.Response) -> str:
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in r.text.splitlines() if line.startswith("data:")]
        return json.loads(data[-1])["result"]["content"][0]["text"]
    return r.json()["result"]["content"][0]["text"]


async def test_telemetry_without_the_sdk_is_a_plain_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """[telemetry] on, the SDK missing (as after `pip install mcpguard` without the otel extra): start() says
    what to install instead of failing deep in an import."""
    from mcpguard.gateway import Gateway
    from mcpguard.telemetry import TelemetryUnavailable

    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # an import of it raises ImportError
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path)], telemetry={"otlp_endpoint": "http://127.0.0.1:9"})
    gw = Gateway(cfg)
    with pytest.raises(TelemetryUnavailable, match=r"pip install 'mcpguard\[otel\]'"):
        await gw.start()
    await gw.stop()
