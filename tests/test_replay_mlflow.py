"""`mcpguard replay` end to end on the real stack.

Real `mcp` 2.x calls go through the gateway to the real `mlflow-mcp` 0.4.1 in
front of the session's real MLflow tracking server, under
`sample_policies/mlflow.toml`, with the audit log on. Then the real CLI decides
that audit log again under the sample policy with two edits, a tag limit
lowered below what the session did and a `deny_if` on one run's id, and names
exactly the calls that would change.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import mcp_types as types
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from mcpguard.config import Config
from mcpguard.gateway import Gateway

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_policies" / "mlflow.toml"
TAG_LIMIT = 'counter = "set_registered_model_tag_rate"\nwindow = "minute"\nmax = 20\n'


@contextlib.asynccontextmanager
async def session(mlflow_stack, tmp_path: Path) -> AsyncIterator[ClientSession]:
    """A real SDK client of the gateway in front of the real mlflow-mcp, audit on."""
    entry = mlflow_stack.server_config(policy=SAMPLE, stderr_log=tmp_path / "mlflow-mcp.stderr.log")
    cfg = Config.from_dict(
        {"gateway": {"port": 0, "audit_log": str(tmp_path / "audit.jsonl")}, "servers": {"mlflow": entry}},
        base_dir=tmp_path,
    )
    gw = Gateway(cfg)
    await gw.start()
    try:
        assert gw.servers["mlflow"].state == "up", gw.servers["mlflow"].detail
        async with httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=120)) as http:
            async with streamable_http_client(gw.url("mlflow"), http_client=http) as (read, write):
                info = types.Implementation(name="e2e-replay", version="1")
                async with ClientSession(read, write, client_info=info) as s:
                    await s.initialize()
                    yield s
    finally:
        await gw.stop()


async def test_replay_of_real_mlflow_calls_names_the_calls_an_edit_would_change(mlflow_stack, tmp_path):
    seeded = mlflow_stack.seeded
    model = seeded["model_name"]
    first, second = seeded["run_ids"][0], seeded["run_ids"][1]
    async with session(mlflow_stack, tmp_path) as s:
        r = await s.call_tool("get_experiment_by_name", {"name": seeded["experiment_name"]})
        assert not r.is_error
        for run_id in (first, second):
            assert not (await s.call_tool("get_run", {"run_id": run_id})).is_error
        for i in range(3):
            r = await s.call_tool("set_registered_model_tag", {"name": model, "key": f"e2e_replay_{i}", "value": "x"})
            assert not r.is_error
        hidden = await s.call_tool("delete_registered_model", {"name": model})
        assert hidden.is_error
    audit = tmp_path / "audit.jsonl"

    assert SAMPLE.read_text().count(TAG_LIMIT) == 1 and SAMPLE.read_text().count("get_run = {}\n") == 1
    edited = SAMPLE.read_text().replace(TAG_LIMIT, TAG_LIMIT.replace("max = 20", "max = 2")).replace(
        "get_run = {}\n",
        f'get_run = {{ deny_if = [{{ conditions = [{{ path = "args.run_id", op = "eq", value = "{second}" }}], '
        'on_deny = "That run is under review." }] }\n')
    new = tmp_path / "edited.toml"
    new.write_text(edited)
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", TERM="dumb")

    def replay(policy: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mcpguard", "replay", str(audit), "--policy", str(policy), *extra],
                              capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)

    same = replay(SAMPLE)
    assert same.returncode == 0, same.stdout + same.stderr
    assert ": 7 calls, 0 would change" in same.stdout.splitlines()[0]

    res = replay(new, "--json")
    assert res.returncode == 1, res.stderr
    doc = json.loads(res.stdout)
    assert (doc["server"], doc["calls"], doc["changed"], doc["unknown"], doc["unreadable"]) == ("mlflow", 7, 2, 0, 0)
    got = [(c["tool"], c["arguments"], c["change"], c["old"]["code"], c["new"]["code"], c["new"]["rule"])
           for c in doc["changes"]]
    assert got == [
        ("get_run", {"run_id": second}, "allow_to_deny", "allowed", "policy_denied", "tools.get_run.deny_if[0]"),
        ("set_registered_model_tag", {"name": model, "key": "e2e_replay_2", "value": "x"}, "newly_rate_limited",
         "allowed", "rate_limited", "tools.set_registered_model_tag.limits[0]"),
    ]
    assert doc["changes"][0]["new"]["message"] == "get_run is denied by policy: That run is under review."
    assert doc["changes"][1]["client"] == "e2e-replay"

    table = replay(new)
    assert table.returncode == 1
    assert "allow → deny: 1, deny → allow: 0, newly rate-limited: 1, newly needing approval: 0" in table.stdout
