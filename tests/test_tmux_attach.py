"""`mcpguard serve` in one terminal, `mcpguard console --attach` in another (tmux), on the real MLflow stack.

A real agent asks for `transition_model_version_stage` to Production on a version it registered;
the person at the attached console opens the arguments with `e`, changes the stage to Staging,
and approves with ctrl+s. MLflow's own client then reports Staging, the audit names the attached
console as approver, and quitting the console leaves the gateway serving.
"""

from __future__ import annotations

import asyncio
import getpass
import subprocess
import uuid
from pathlib import Path

import httpx2
import pytest

from mcpguard.audit import read_audit
from mcpguard.cli.demo import write_config
from mcpguard.control_http import read_control_file
from mcpguard.stack import free_port
from test_e2e_mlflow import SAMPLE_POLICY, client, register_own_version, stage_of_model, text
from test_tmux_console import MCPGUARD, screen, tmux, until_screen

pytestmark = [pytest.mark.tmux, pytest.mark.e2e]


async def test_a_promotion_edited_and_approved_from_a_console_attached_to_serve(mlflow_stack, tmp_path: Path) -> None:
    port = free_port()
    entry = {k: v for k, v in mlflow_stack.server_config(policy=SAMPLE_POLICY).items() if k != "name"}
    cfg = write_config(tmp_path, {
        "gateway": {"port": port, "audit_log": str(tmp_path / "audit.jsonl"),
                    "control_file": str(tmp_path / "control.json"), "headless_approvals": "deny"},
        "servers": {"mlflow": entry},
    })
    tag = uuid.uuid4().hex[:8]
    serve, console = f"mcpguard-serve-{tag}", f"mcpguard-attach-{tag}"
    tmux("new-session", "-d", "-s", serve, "-x", "120", "-y", "36", "-c", str(tmp_path),
         f"{MCPGUARD} serve --config {cfg}")
    try:
        await until_screen(serve, "serving on", tries=300)
        tmux("new-session", "-d", "-s", console, "-x", "120", "-y", "36", "-c", str(tmp_path),
             f"env -u COLUMNS -u LINES TERM=xterm-256color {MCPGUARD} console --attach --config {cfg}")
        await until_screen(console, "mlflow  up")
        model = f"tmux-attach-{tag}"
        async with client(f"http://127.0.0.1:{port}/mcp/mlflow") as s:
            version = await register_own_version(s.call_tool, mlflow_stack, model)
            asked = {"name": model, "version": version, "stage": "Production", "archive_existing": False}
            call = asyncio.create_task(s.call_tool("transition_model_version_stage", asked))
            shown = await until_screen(console, "approval 1 of 1")
            assert 'stage: "Production"' in shown and model in shown, shown
            await asyncio.sleep(0.7)  # the prompt settles before keys answer it
            tmux("send-keys", "-t", console, "e")
            await until_screen(console, "edit, then approve")
            # as a person does it: down to the stage's line, rub out `Production",`, type the new stage
            tmux("send-keys", "-t", console, "Down", "Down", "Down", "End", *["BSpace"] * len('Production",'))
            for _ in range(100):  # a person looks before typing on
                if "Production" not in screen(console):
                    break
                await asyncio.sleep(0.1)
            tmux("send-keys", "-t", console, "-l", 'Staging",')
            shown = await until_screen(console, '"stage": "Staging",')
            assert "Production" not in shown, shown
            await until_screen(console, "fits the tool's inputSchema")
            tmux("send-keys", "-t", console, "C-s")
            r = await asyncio.wait_for(call, 60)
            assert not r.is_error, text(r)
        assert stage_of_model(mlflow_stack, model, version) == "Staging"
        [approval] = [rec for rec in read_audit(tmp_path / "audit.jsonl") if rec["kind"] == "approval"]
        assert approval["approver"] == f"console:{getpass.getuser()}" and approval["outcome"] == "approved"
        assert approval["approved_arguments"]["stage"] == "Staging"
        tmux("send-keys", "-t", console, "C-q")  # an attached console leaves the gateway running
        for _ in range(100):
            if subprocess.run(["tmux", "has-session", "-t", console], capture_output=True).returncode != 0:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("the attached console did not quit:\n" + screen(console))
        url, token = read_control_file(tmp_path / "control.json")
        async with httpx2.AsyncClient(timeout=10) as http:
            r = await http.get(f"{url}/control/snapshot", headers={"authorization": f"Bearer {token}"})
            assert r.status_code == 200
        tmux("send-keys", "-t", serve, "C-c")
        for _ in range(150):  # serve stops on ctrl+c, and its window with it
            if subprocess.run(["tmux", "has-session", "-t", serve], capture_output=True).returncode != 0:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("serve did not stop on ctrl+c:\n" + screen(serve))
        assert not (tmp_path / "control.json").exists()  # its token went with it
    finally:
        for name in (console, serve):
            subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)
