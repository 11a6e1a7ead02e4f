"""The real `mcpguard console` in a real terminal (tmux): keys typed with
send-keys, the screen read with capture-pane, a real SDK client calling
through the gateway it runs. Skipped when tmux is not installed (CI installs it).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from upstreams.harness import EVERYTHING, client

# `dev.py test` installs tmux (as CI runs it); a missing tmux fails here, never skips
pytestmark = [pytest.mark.tmux]

MCPGUARD = Path(sys.executable).parent / "mcpguard"

POLICY = """\
version = "1"
default = "allow"

[tools.echo]
action = "require_approval"
reason = "Echo needs a person."
"""


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True, timeout=10).stdout


def screen(session: str) -> str:
    return tmux("capture-pane", "-p", "-t", session)


async def until_screen(session: str, text: str, tries: int = 150) -> str:
    """The screen once it shows `text` (bounded: `tries` looks 0.2 s apart)."""
    shown = ""
    for _ in range(tries):
        shown = screen(session)
        if text in shown:
            return shown
        await asyncio.sleep(0.2)
    raise AssertionError(f"the screen never showed {text!r}; last screen:\n{shown}")


@pytest.mark.parametrize("size", [(120, 36), (80, 24)])
async def test_console_in_tmux_approves_a_real_call(tmp_path: Path, size: tuple[int, int]) -> None:
    (tmp_path / "ev.toml").write_text(POLICY)
    (tmp_path / "mcpguard.toml").write_text(
        "[gateway]\nport = 0\nurl_file = \"url\"\naudit_log = \"audit.jsonl\"\n\n"
        f"[servers.ev]\ncommand = {str(sys.executable)!r}\nargs = [{str(EVERYTHING)!r}]\npolicy = \"ev.toml\"\n"
    )
    session = f"mcpguard-test-{uuid.uuid4().hex[:8]}"
    w, h = size
    tmux("new-session", "-d", "-s", session, "-x", str(w), "-y", str(h), "-c", str(tmp_path),
         f"env -u COLUMNS -u LINES TERM=xterm-256color {MCPGUARD} console --config mcpguard.toml --theme high-contrast")
    try:
        await until_screen(session, "ev  up")
        url_file = tmp_path / "url"
        for _ in range(100):
            if url_file.exists() and url_file.read_text().strip():
                break
            await asyncio.sleep(0.1)
        url = url_file.read_text().strip() + "/mcp/ev"
        shown = screen(session)
        assert "ev.toml ok" in shown and "0 pending" in shown
        async with client(url) as s:
            call = asyncio.create_task(s.call_tool("echo", {"text": "through tmux"}))
            shown = await until_screen(session, "approval 1 of 1")
            assert "needs a person" in shown and "1 pending" in shown, shown
            tmux("send-keys", "-t", session, "a")
            res = await asyncio.wait_for(call, 30)
            assert not res.is_error and res.content[0].text == "through tmux"
            shown = await until_screen(session, "approved")
            assert "approval 1 of 1" not in shown
        tmux("send-keys", "-t", session, "?")
        await until_screen(session, "Approval queue")
        tmux("send-keys", "-t", session, "Escape")
        tmux("send-keys", "-t", session, "C-q")
        for _ in range(100):  # the app stops the gateway and exits; tmux closes the session
            if subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode != 0:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("mcpguard did not exit on ctrl+q:\n" + screen(session))
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


@pytest.mark.parametrize("size", [(120, 36), (80, 24)])
async def test_in_tmux_the_prompt_edit_screen_reason_call_view_and_sessions_pane(tmp_path: Path,
                                                                                 size: tuple[int, int]) -> None:
    (tmp_path / "ev.toml").write_text(POLICY)
    (tmp_path / "mcpguard.toml").write_text(
        "[gateway]\nport = 0\nurl_file = \"url\"\naudit_log = \"audit.jsonl\"\n\n"
        f"[servers.ev]\ncommand = {str(sys.executable)!r}\nargs = [{str(EVERYTHING)!r}]\npolicy = \"ev.toml\"\n"
    )
    session = f"mcpguard-test-{uuid.uuid4().hex[:8]}"
    w, h = size
    tmux("new-session", "-d", "-s", session, "-x", str(w), "-y", str(h), "-c", str(tmp_path),
         f"env -u COLUMNS -u LINES TERM=xterm-256color {MCPGUARD} console --config mcpguard.toml")
    try:
        await until_screen(session, "ev  up")
        for _ in range(100):
            if (tmp_path / "url").exists() and (tmp_path / "url").read_text().strip():
                break
            await asyncio.sleep(0.1)
        url = (tmp_path / "url").read_text().strip() + "/mcp/ev"
        async with client(url) as s:
            call = asyncio.create_task(s.call_tool("echo", {"text": "promote", "stage": "Production"}))
            shown = await until_screen(session, "approval 1 of 1")
            assert 'stage: "Production"' in shown and 'text: "promote"' in shown, shown
            title = tmux("display-message", "-p", "-t", session, "#{pane_title}").strip()
            assert title == "mcpguard · 1 pending", title
            await asyncio.sleep(0.7)  # the prompt settles before keys answer it
            tmux("send-keys", "-t", session, "e")
            shown = await until_screen(session, "edit, then approve")
            assert "fits the tool's inputSchema" in shown and '"stage": "Production"' in shown, shown
            tmux("send-keys", "-t", session, "Escape")
            await until_screen(session, "approval 1 of 1")
            tmux("send-keys", "-t", session, "D")
            await until_screen(session, "the agent reads your reason")
            tmux("send-keys", "-t", session, "-l", "wait for Monday")
            tmux("send-keys", "-t", session, "Enter")
            res = await asyncio.wait_for(call, 30)
            assert res.is_error and "wait for Monday" in res.content[0].text
            await s.call_tool("count_items", {"items": [{"name": "seen-in-tmux"}]})
            # the tree always lists count_items: wait for its call in the detail pane
            await until_screen(session, "ev / count_items")
            tmux("send-keys", "-t", session, "Enter")  # the newest row, followed: the call view
            await until_screen(session, "arguments: {…}")
            shown = await until_screen(session, "Copy args")
            assert "result: {…}" in shown, shown
            tmux("send-keys", "-t", session, "Escape")
            await until_screen(session, "ev  up")
            tmux("send-keys", "-t", session, "S")
            shown = await until_screen(session, "1 open")
            row = next(line for line in shown.splitlines() if line.startswith(" ev "))
            assert row.split()[:5] == ["ev", "mcp", "-", "2", "1"], row  # two calls, the denied echo refused
            tmux("send-keys", "-t", session, "Escape")
            await until_screen(session, "ev  up")
        tmux("send-keys", "-t", session, "C-q")
        for _ in range(100):
            if subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode != 0:
                break
            await asyncio.sleep(0.2)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
