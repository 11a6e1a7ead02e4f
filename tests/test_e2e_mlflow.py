"""The real stack through mcpguard (issue 3, "The real stack, in tests").

A real MLflow tracking server (the session's `mlflow_stack`), the real
`mlflow-mcp` 0.4.1 as a stdio upstream, `sample_policies/mlflow.toml`, the
gateway on 127.0.0.1, and real `mcp` 2.x clients over Streamable HTTP. What
MLflow holds afterwards is checked with MLflow's own client.

The shared tracking server is seeded once; each test changes only what it
names (its own tag keys, model version 3's stage), so the order does not matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import mcp_types as types
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from mcpguard.agent import run_agent
from mcpguard.audit import read_audit
from mcpguard.config import Config
from mcpguard.gateway import Gateway

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_POLICY = ROOT / "sample_policies" / "mlflow.toml"
DECISION = "mcpguard/decision"


@contextlib.asynccontextmanager
async def gateway(mlflow_stack, tmp_path: Path, **server: object) -> AsyncIterator[Gateway]:
    """mcpguard in front of the real mlflow-mcp, under the sample policy, audit on (`server`: more server keys)."""
    entry = {**mlflow_stack.server_config(policy=SAMPLE_POLICY, stderr_log=tmp_path / "mlflow-mcp.stderr.log"),
             **server}
    cfg = Config.from_dict(
        {"gateway": {"port": 0, "audit_log": str(tmp_path / "audit.jsonl")}, "servers": {"mlflow": entry}},
        base_dir=tmp_path,
    )
    gw = Gateway(cfg)
    await gw.start()
    try:
        assert gw.servers["mlflow"].state == "up", gw.servers["mlflow"].detail
        yield gw
    finally:
        await gw.stop()


@contextlib.asynccontextmanager
async def client(url: str) -> AsyncIterator[ClientSession]:
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=120)) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write, client_info=types.Implementation(name="e2e", version="1")) as s:
                await s.initialize()
                yield s


def text(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


def audit(tmp_path: Path) -> list[dict]:
    return read_audit(tmp_path / "audit.jsonl")


def audited_calls(tmp_path: Path) -> dict[str, str]:
    """call_id -> decision code, from the audit log's `decision` records (mcpguard.audit's format)."""
    return {r["call_id"]: r["decision"] for r in audit(tmp_path) if r.get("kind") == "decision"}


async def wait_for_pending(gw: Gateway, tool: str, timeout_s: float = 60.0):
    """The pending approval for `tool`, polling the core (bounded)."""
    for _ in range(int(timeout_s / 0.05)):
        for p in gw.approvals.pending():
            if p.call.tool == tool:
                return p
        await asyncio.sleep(0.05)
    raise AssertionError(f"no pending approval for {tool} after {timeout_s} s")


def stage_of(mlflow_stack, version: str) -> str:
    model = mlflow_stack.seeded["model_name"]
    return mlflow_stack.python(
        f"from mlflow import MlflowClient; print(MlflowClient().get_model_version({model!r}, {version!r}).current_stage)"
    ).strip()


async def test_reads_pass_and_hidden_tools_are_unknown(mlflow_stack, tmp_path):
    seeded = mlflow_stack.seeded
    async with gateway(mlflow_stack, tmp_path) as gw, client(gw.url("mlflow")) as s:
        names = {t.name for t in (await s.list_tools()).tools}
        assert len(names) == 38
        assert "delete_registered_model" not in names and "delete_experiment" not in names
        assert {"get_run", "transition_model_version_stage", "delete_model_version"} <= names

        r = await s.call_tool("get_experiment_by_name", {"name": seeded["experiment_name"]})
        assert not r.is_error and seeded["experiment_id"] in text(r)
        r = await s.call_tool("get_run", {"run_id": seeded["run_ids"][0]})
        assert not r.is_error and "val_accuracy" in text(r)

        hidden = await s.call_tool("delete_registered_model", {"name": seeded["model_name"]})
        assert hidden.is_error and text(hidden) == "Unknown tool: delete_registered_model"
        assert not (hidden.meta or {}).get(DECISION)

    still = mlflow_stack.python(
        f"from mlflow import MlflowClient; print(MlflowClient().get_registered_model({seeded['model_name']!r}).name)"
    )
    assert still.strip() == seeded["model_name"]
    codes = sorted(audited_calls(tmp_path).values())
    assert codes == ["allowed", "allowed", "hidden"]


async def test_a_2026_07_28_agent_on_a_shared_mlflow_mcp(mlflow_stack, tmp_path):
    """mlflow-mcp speaks only the handshake era; a 2026-07-28 agent reaches it through the shared session,
    and an approval works the same way."""
    from mcp import Client

    seeded = mlflow_stack.seeded
    model = seeded["model_name"]
    async with gateway(mlflow_stack, tmp_path, upstream_sessions="shared") as gw:
        assert gw.pools["mlflow"].shared.era == "legacy"
        async with Client(gw.url("mlflow"), mode="auto") as c:
            assert c.protocol_version == "2026-07-28" and c.server_info.name == "mlflow"
            names = {t.name for t in (await c.list_tools()).tools}
            assert len(names) == 38 and "delete_registered_model" not in names
            r = await c.call_tool("get_run", {"run_id": seeded["run_ids"][0]})
            assert not r.is_error and "val_accuracy" in text(r)
            call = asyncio.create_task(c.call_tool("set_model_alias", {"name": model, "alias": "e2e-modern",
                                                                       "version": "2"}))
            pending = await wait_for_pending(gw, "set_model_alias")
            assert pending.call.session_id is None and pending.call.client == "mcp"
            gw.approvals.approve(pending.id, by="e2e")
            r = await asyncio.wait_for(call, 60)
            assert not r.is_error, text(r)
        assert gw.pools["mlflow"].processes() == 1
    alias = mlflow_stack.python(
        f"from mlflow import MlflowClient; print(MlflowClient().get_model_version_by_alias({model!r}, 'e2e-modern').version)"
    )
    assert alias.strip() == "2"


async def test_a_new_agent_session_on_a_shared_server_is_ready_at_once(mlflow_stack, tmp_path):
    async with gateway(mlflow_stack, tmp_path, upstream_sessions="shared") as gw:
        took = []
        for _ in range(5):
            t0 = time.perf_counter()
            async with client(gw.url("mlflow")) as s:
                took.append(time.perf_counter() - t0)
                assert not (await s.call_tool("get_experiment_by_name",
                                              {"name": mlflow_stack.seeded["experiment_name"]})).is_error
        assert gw.pools["mlflow"].processes() == 1
        assert max(took) < 1.0, took  # no mlflow-mcp to start (bench/README.md has the figures)


async def test_capped_write_passes_max_times_then_is_rate_limited(mlflow_stack, tmp_path):
    model = mlflow_stack.seeded["model_name"]
    cap = 20  # [tools.set_registered_model_tag] max = 20 per minute in the sample policy
    async with gateway(mlflow_stack, tmp_path) as gw, client(gw.url("mlflow")) as s:
        for i in range(cap):
            r = await s.call_tool("set_registered_model_tag", {"name": model, "key": f"e2e_cap_{i}", "value": "x"})
            assert not r.is_error, text(r)
        over = await s.call_tool("set_registered_model_tag", {"name": model, "key": "e2e_cap_over", "value": "x"})
        assert over.is_error
        decision = over.meta[DECISION]
        assert decision["code"] == "rate_limited"
        assert 0 < decision["retry_after_s"] <= 60
        assert "set_registered_model_tag" in (decision["rule"] or "")
        assert "Retry after" in text(over)
        view = {c.counter: c for c in gw.servers["mlflow"].counters.snapshot(time.monotonic())}
        assert view["set_registered_model_tag_rate"].count == cap

    tags = json.loads(
        mlflow_stack.python(
            f"import json; from mlflow import MlflowClient; print(json.dumps(MlflowClient().get_registered_model({model!r}).tags))"
        )
    )
    assert {k for k in tags if k.startswith("e2e_cap_")} == {f"e2e_cap_{i}" for i in range(cap)}
    codes = list(audited_calls(tmp_path).values())
    assert codes.count("allowed") == cap and codes.count("rate_limited") == 1


async def test_stage_transition_waits_for_approval(mlflow_stack, tmp_path):
    model = mlflow_stack.seeded["model_name"]
    assert stage_of(mlflow_stack, "3") == "None"
    args = {"name": model, "version": "3", "stage": "Staging", "archive_existing": False}
    # per_session: this agent gets an mlflow-mcp of its own
    async with gateway(mlflow_stack, tmp_path, upstream_sessions="per_session") as gw, client(gw.url("mlflow")) as s:
        assert gw.pools["mlflow"].processes() == 2
        # denied by a person: MLflow unchanged
        call = asyncio.create_task(s.call_tool("transition_model_version_stage", {**args, "stage": "Production"}))
        pending = await wait_for_pending(gw, "transition_model_version_stage")
        assert not call.done()
        assert pending.call.arguments["stage"] == "Production"
        assert gw.approvals.deny(pending.id)
        r = await asyncio.wait_for(call, 30)
        assert r.is_error and r.meta[DECISION]["code"] == "approval_denied"
        assert stage_of(mlflow_stack, "3") == "None"

        # approved through the core: MLflow's own client sees the new stage
        call = asyncio.create_task(s.call_tool("transition_model_version_stage", args))
        pending = await wait_for_pending(gw, "transition_model_version_stage")
        assert pending.call.arguments == args
        assert not call.done()
        assert gw.approvals.approve(pending.id)
        r = await asyncio.wait_for(call, 30)
        assert not r.is_error, text(r)
        assert gw.approvals.pending() == []
    assert stage_of(mlflow_stack, "3") == "Staging"
    assert list(audited_calls(tmp_path).values()) == ["approval_required", "approval_required"]
    done = [(r["decision"], r.get("approver"), r["is_error"]) for r in audit(tmp_path) if r["kind"] == "completion"]
    assert done == [("approval_denied", "console", True), ("approved", "console", False)]


async def test_archiving_is_denied_before_anyone_is_asked(mlflow_stack, tmp_path):
    model = mlflow_stack.seeded["model_name"]
    before = stage_of(mlflow_stack, "1")
    async with gateway(mlflow_stack, tmp_path) as gw, client(gw.url("mlflow")) as s:
        r = await s.call_tool(
            "transition_model_version_stage", {"name": model, "version": "1", "stage": "archived"}
        )
        assert r.is_error and r.meta[DECISION]["code"] == "policy_denied"
        assert "archive" in text(r)
        assert gw.approvals.pending() == []
    assert stage_of(mlflow_stack, "1") == before


async def test_delete_is_denied_and_mlflow_is_unchanged(mlflow_stack, tmp_path):
    model = mlflow_stack.seeded["model_name"]
    count = (
        "from mlflow import MlflowClient; "
        f"print(len(MlflowClient().search_model_versions(\"name='{model}'\")))"
    )
    before = mlflow_stack.python(count).strip()
    async with gateway(mlflow_stack, tmp_path) as gw, client(gw.url("mlflow")) as s:
        r = await s.call_tool("delete_model_version", {"name": model, "version": "2"})
        assert r.is_error
        decision = r.meta[DECISION]
        assert decision["code"] == "policy_denied"
        assert decision["rule"].startswith("tools.delete_model_version")
        assert "delete_model_version" in text(r)
    assert before == "3"
    assert mlflow_stack.python(count).strip() == before
    assert list(audited_calls(tmp_path).values()) == ["policy_denied"]


async def test_scripted_agent_plays_a_loop_through_mcpguard(mlflow_stack, tmp_path):
    steps = []
    async with gateway(mlflow_stack, tmp_path) as gw:

        async def approver() -> None:  # a person pressing `a` on every prompt
            for _ in range(2400):
                for p in gw.approvals.pending():
                    gw.approvals.approve(p.id)
                await asyncio.sleep(0.05)

        person = asyncio.create_task(approver())
        try:
            stats = await asyncio.wait_for(
                run_agent(gw.url("mlflow"), loops=1, pace_s=0, on_step=steps.append), 120
            )
        finally:
            person.cancel()
    by_tool = {}
    for st in steps:
        by_tool.setdefault(st.tool, []).append(st.outcome)
    assert stats.loops == 1
    assert by_tool["tools/list"] == ["ok"]
    assert by_tool["get_model_versions"] == ["ok"]
    assert by_tool["set_model_alias"] == ["ok"]  # approved
    assert by_tool["transition_model_version_stage"] == ["ok"]  # approved
    assert by_tool["set_registered_model_tag"] == ["ok"] * 20 + ["rate_limited"] * 2
    assert by_tool["delete_model_version"] == ["policy_denied"]
    assert by_tool["delete_registered_model"] == ["unknown_tool"]
    limited = [st for st in steps if st.outcome == "rate_limited"]
    assert all(st.retry_after_s and st.retry_after_s > 0 for st in limited)
    # every call the agent made is in the audit log, with its decision
    tool_calls = [st for st in steps if st.tool != "tools/list"]
    assert len(audited_calls(tmp_path)) == len(tool_calls)


async def test_the_demo_loop_keeps_asking_a_person_loop_after_loop(mlflow_stack, tmp_path):
    """The sample policy's promotion cap limits asking, not answering: three loops back to
    back (six promotions in well under a minute) each reach the person."""
    steps = []
    asked = []
    async with gateway(mlflow_stack, tmp_path) as gw:

        async def approver() -> None:
            for _ in range(2400):
                for p in gw.approvals.pending():
                    asked.append(p.call.tool)
                    gw.approvals.approve(p.id)
                await asyncio.sleep(0.05)

        person = asyncio.create_task(approver())
        try:
            await asyncio.wait_for(run_agent(gw.url("mlflow"), loops=3, pace_s=0, burst=2, on_step=steps.append), 180)
        finally:
            person.cancel()
    outcomes = {t: [st.outcome for st in steps if st.tool == t] for t in ("set_model_alias", "transition_model_version_stage")}
    assert outcomes == {"set_model_alias": ["ok"] * 3, "transition_model_version_stage": ["ok"] * 3}
    assert sorted(asked) == ["set_model_alias"] * 3 + ["transition_model_version_stage"] * 3


async def test_agent_cancelled_while_waiting_for_approval_leaves_nothing_pending(mlflow_stack, tmp_path):
    steps = []
    async with gateway(mlflow_stack, tmp_path) as gw:
        agent = asyncio.create_task(run_agent(gw.url("mlflow"), loops=1, pace_s=0, on_step=steps.append))
        pending = await wait_for_pending(gw, "set_model_alias")
        assert pending.call.arguments["alias"] == "challenger"
        agent.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(agent, 30)
        for _ in range(200):  # the gateway withdraws the approval once the session is gone (bounded: 10 s)
            if not gw.approvals.pending():
                break
            await asyncio.sleep(0.05)
        assert gw.approvals.pending() == []
    assert [st.tool for st in steps][-1] == "set_experiment_tag"  # the alias call never completed


async def test_agent_reports_a_refused_connection_and_keeps_its_bound():
    from mcpguard.stack import free_port

    steps = []
    url = f"http://127.0.0.1:{free_port()}/mcp/mlflow"  # nothing listens there
    stats = await asyncio.wait_for(run_agent(url, loops=2, pace_s=0, on_step=steps.append), 60)
    assert [st.outcome for st in steps] == ["connection_error", "connection_error"]
    assert "Connect" in steps[0].text or "connect" in steps[0].text
    assert stats.loops == 0 and stats.steps == 2


async def test_agent_goes_on_when_every_call_fails_and_raises_its_callbacks_error(tmp_path):
    """Against an MCP server that has none of MLflow's tools (bench/echo_server.py on
    Streamable HTTP), every call is an unknown tool: the agent reports each and finishes
    its loop; an exception in `on_step` is the caller's and comes out of run_agent."""
    import subprocess

    import httpx

    from mcpguard.stack import free_port

    port = free_port()
    echo = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "echo_server.py"), "--http", str(port)],
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        for _ in range(200):  # bounded: 20 s
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
        steps = []
        stats = await asyncio.wait_for(run_agent(url, loops=1, pace_s=0, burst=3, on_step=steps.append), 60)
        assert stats.loops == 1
        assert steps[0].tool == "tools/list" and steps[0].outcome == "ok" and steps[0].data == ["echo"]
        assert {st.outcome for st in steps[1:]} == {"unknown_tool"}
        assert [st.tool for st in steps if st.phase == "burst"] == ["set_registered_model_tag"] * 3

        def broken(step):
            raise KeyError("a bug in the caller")

        with pytest.raises(KeyError, match="a bug in the caller"):
            await asyncio.wait_for(run_agent(url, loops=1, pace_s=0, on_step=broken), 60)
    finally:
        echo.terminate()
        echo.wait(10)
