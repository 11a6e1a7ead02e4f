"""`mcpguard demo` as a new user runs it, in a real terminal (tmux) on the real MLflow stack:
the policy it runs is named on screen with its state, edits to it survive a restart and are
said to, and `--reset-policy` starts again from the sample. The gateway runs as the console's
child process, so quitting must leave nothing listening."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path

import httpx2
import pytest

from mcpguard.cli.demo import SAMPLE_POLICY
from mcpguard.control_http import read_control_file
from test_tmux_console import MCPGUARD, screen, tmux, until_screen

pytestmark = [pytest.mark.tmux, pytest.mark.e2e]


async def run_demo(data: Path, *extra: str, expect: str) -> str:
    """Start the demo (no scripted agent) at 80x24, wait until the server is up and `expect`
    is on screen, quit with ctrl+q; returns the screen it showed."""
    session = f"mcpguard-demo-{uuid.uuid4().hex[:8]}"
    tmux("new-session", "-d", "-s", session, "-x", "80", "-y", "24",
         f"env -u COLUMNS -u LINES TERM=xterm-256color {MCPGUARD} demo --port 0 --no-agent --data-dir {data} {' '.join(extra)}")
    try:
        await until_screen(session, "mlflow  up", tries=600)
        shown = await until_screen(session, expect)
        url, token = read_control_file(data / "control.json")
        async with httpx2.AsyncClient() as http:  # the gateway (the console's child) answers a second front end
            r = await http.get(url + "/control/snapshot", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200 and [s["name"] for s in r.json()["servers"]] == ["mlflow"]
        tmux("send-keys", "-t", session, "C-q")
        for _ in range(150):
            if subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode != 0:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("the demo did not exit on ctrl+q:\n" + screen(session))
        async with httpx2.AsyncClient() as http:  # and is gone with it, its token with it
            with pytest.raises(httpx2.ConnectError):
                await http.get(url + "/control/snapshot", timeout=2)
        assert not (data / "control.json").exists()
        return shown
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


async def test_the_demo_names_its_policy_says_when_it_was_edited_and_resets_it(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    policy = data / "mlflow.toml"
    sample = SAMPLE_POLICY.read_text(encoding="utf-8")

    shown = await run_demo(data, expect="policy (the sample, as shipped)")
    assert "mlflow.toml" in shown
    assert policy.read_text(encoding="utf-8") == sample

    policy.write_text(sample.replace("max = 600", "max = 500"), encoding="utf-8")  # a person's sed
    await run_demo(data, expect="policy (edited since it was copied")
    assert "max = 500" in policy.read_text(encoding="utf-8")  # the edit survived the restart

    await run_demo(data, "--reset-policy", expect="policy (the sample, as shipped)")
    assert policy.read_text(encoding="utf-8") == sample
