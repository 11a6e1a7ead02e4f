"""Tune the policy from the console while a real agent runs (issue 5).

Real parts: `mcpguard.gateway.Gateway` on 127.0.0.1 (free port) in front of
the SDK-written everything server over stdio, real SDK clients over
Streamable HTTP, the console's own `PolicyFiles` watcher on the real file.
The policy changes through the console's keys and through external writes
of the file, as a person in vim would. Waits are bounded loops on what the
screen, the file or the client shows, never timed assertions.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from test_console_pilot import started, text_of, until
from upstreams.harness import client, everything_server, make_config

from mcpguard.console import ConsoleApp
from mcpguard.console.screens import EditorScreen
from mcpguard.gateway import Gateway

POLICY = """\
# tuned while the agent runs
version = "1"
default = "allow"

[tools.echo]   # the capped write
[[tools.echo.limits]]
counter = "echo_rate"   # per session
window = "hour"         # long enough that nothing frees during the test
max = 2
scope = "session"

[tools.count_items]
action = "require_approval"
approval_timeout = "60s"
"""

SIZE = (120, 36)


def make_app(tmp_path: Path, policy: str = POLICY) -> tuple[ConsoleApp, Path]:
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, policy)])
    return ConsoleApp.embedded(Gateway(cfg), theme_name="dark"), tmp_path / "ev.toml"


def notes(app: ConsoleApp) -> list[str]:
    """Every notification shown so far, as `title: message`."""
    return [f"{n.title}: {n.message}" for n in app._notifications]


async def watching(pilot: Any, app: ConsoleApp) -> None:
    await started(pilot, app)
    await until(pilot, lambda: app.started, "gateway up")
    await asyncio.sleep(0.3)  # the gateway's watcher is up
    await pilot.pause(0.5)  # let watchfiles set up its watch before a test writes the file


def select_tool(app: ConsoleApp, tool: str) -> None:
    tree = app.main.query_one("#tree")
    tree.focus()
    node = next(n for n in tree.root.children[0].children if n.data["tool"] == tool)
    tree.last_line  # noqa: B018 - a tree rebuilt by a snapshot just now has no lines yet: build them
    tree.move_cursor(node, animate=False)


async def choose_tool(pilot: Any, app: ConsoleApp, tool: str) -> None:
    """Select `tool` in the tree as a person would before a key, and wait until it is selected
    (a snapshot arriving in between rebuilds the tree; the cursor stays, a node taken before may not)."""
    tree = app.main.query_one("#tree")
    for _ in range(100):
        select_tool(app, tool)
        await pilot.pause(0.05)
        node = tree.cursor_node
        if tree.has_focus and node is not None and node.data and node.data.get("tool") == tool:
            return
    raise AssertionError(f"could not select {tool} in the tree")


def echo_max(app: ConsoleApp) -> int:
    return app.control.gateway.servers["ev"].policy.tools["echo"].limits[0].max


class Agent:
    """A real client calling the capped tool in a loop until stopped (bounded)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.results: list[tuple[bool, str | None]] = []  # (admitted, denial code)
        self.stop = False

    @property
    def admitted(self) -> int:
        return sum(ok for ok, _ in self.results)

    def limited_since_admitted(self) -> int:
        n = 0
        for ok, _ in reversed(self.results):
            if ok:
                break
            n += 1
        return n

    async def run(self) -> None:
        deadline = time.monotonic() + 120
        for i in range(3000):
            if self.stop or time.monotonic() > deadline:
                return
            res = await self.session.call_tool("echo", {"text": str(i)})
            code = None if not res.is_error else res.meta["mcpguard/decision"]["code"]
            self.results.append((not res.is_error, code))
            await asyncio.sleep(0.01)


async def capped_at(pilot: Any, agent: Agent, n: int) -> None:
    """The loop has reached `n` admitted calls and is being rate-limited."""
    await until(pilot, lambda: agent.admitted >= n and agent.limited_since_admitted() >= 3,
                f"{n} admitted, then rate-limited", tries=600)
    assert agent.admitted == n, agent.admitted


async def test_a_looping_agent_gets_exactly_the_max_in_force_through_keys_and_external_writes(
        tmp_path: Path) -> None:
    app, path = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await watching(pilot, app)
        async with client(app.control.gateway.url("ev")) as s:
            agent = Agent(s)
            loop = asyncio.create_task(agent.run())
            try:
                await capped_at(pilot, agent, 2)
                # `+` on the tool in the tree: its first limit's max 2 -> 3
                select_tool(app, "echo")
                await pilot.press("plus")
                assert "max = 3" in path.read_text() and echo_max(app) == 3
                await capped_at(pilot, agent, 3)
                # `>` adds ten: 13
                await pilot.press("greater_than_sign")
                assert echo_max(app) == 13
                await capped_at(pilot, agent, 13)
                # a person edits the file in another editor: 15
                path.write_text(path.read_text().replace("max = 13", "max = 15"))
                await until(pilot, lambda: echo_max(app) == 15, "external write applied")
                await capped_at(pilot, agent, 15)
                assert any("changed on disk" in n and "+max = 15" in n for n in notes(app)), notes(app)
                # `-` on the selected gauge lowers the counter below its count: nothing more admitted
                app.main.query_one("#gauges").focus()
                await pilot.pause()
                assert app.main.query_one("#gauges").selected.counter == "echo_rate"
                await pilot.press("minus", "minus")
                assert echo_max(app) == 13 and "max = 13" in path.read_text()
                n_before = len(agent.results)
                await until(pilot, lambda: len(agent.results) >= n_before + 5, "more calls")
                assert agent.admitted == 15
            finally:
                agent.stop = True
                await asyncio.wait_for(loop, 30)
        # no call lost or counted twice: every call answered, one row each, the
        # counter holds exactly the admitted calls, every refusal is a rate limit
        assert all(code == "rate_limited" for ok, code in agent.results if not ok)
        table = app.main.query_one("#calls")
        await until(pilot, lambda: table.row_count == len(agent.results), "one row per call")
        snap = app.control.gateway.servers["ev"].counters.snapshot(time.monotonic())
        assert [(v.counter, v.count, v.max) for v in snap] == [("echo_rate", 15, 13)]
        await until(pilot, lambda: "15/13/h" in text_of(app.main.query_one("#gauges-body")), "gauge 15/13")
        # the file's comments and layout survive every edit
        text = path.read_text()
        assert text == POLICY.replace("max = 2", "max = 13")
        assert "echo_rate max -1" in "\n".join(notes(app))


async def test_a_broken_external_edit_keeps_the_last_policy_and_the_status_bar_names_the_line(
        tmp_path: Path) -> None:
    app, path = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await watching(pilot, app)
        status = app.main.query_one("#status")
        assert "ev.toml ok" in text_of(status)
        path.write_text(POLICY.replace('window = "hour"', 'window = "fortnight"'))
        await until(pilot, lambda: "✗ line 8" in text_of(status), "status bar shows the error line")
        assert any("rejected" in n and "ev.toml line 8" in n and "previous policy keeps running" in n
                   for n in notes(app)), notes(app)
        tree = app.main.query_one("#tree")
        assert "policy error" in str(tree.root.children[0].label)
        # the previous policy (max 2) still decides
        async with client(app.control.gateway.url("ev")) as s:
            got = [not (await s.call_tool("echo", {"text": "x"})).is_error for _ in range(3)]
        assert got == [True, True, False]
        # fixed in the other editor: ok again
        path.write_text(POLICY.replace("max = 2", "max = 4"))
        await until(pilot, lambda: "ev.toml ok" in text_of(status), "status ok again")
        assert echo_max(app) == 4


async def test_t_h_u_edit_the_file_and_the_next_call_obeys_and_t_resolves_a_pending_approval(
        tmp_path: Path) -> None:
    app, path = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await watching(pilot, app)
        select_tool(app, "echo")
        await pilot.press("t")  # allow -> require_approval
        assert '[tools.echo]   # the capped write\naction = "require_approval"' in path.read_text()
        async with client(app.control.gateway.url("ev")) as s:
            call = asyncio.create_task(s.call_tool("echo", {"text": "wait"}))
            await until(pilot, lambda: len(app.model.pending) == 1, "approval prompt")
            select_tool(app, "echo")
            await pilot.press("t")  # require_approval -> deny: the waiting call is denied
            res = await asyncio.wait_for(call, 30)
            assert res.is_error and res.meta["mcpguard/decision"]["code"] == "policy_changed"
            assert 'action = "deny"' in path.read_text()
            cid = next(iter(app.model.calls))
            table = app.main.query_one("#calls")
            await until(pilot, lambda: table.cell_text(cid, "decision") == "policy ✗", "row says so")
            assert any("the policy changed while it waited; denied" in n for n in notes(app)), notes(app)
            res = await s.call_tool("echo", {"text": "next"})
            assert res.meta["mcpguard/decision"]["code"] == "policy_denied"
            # h hides it: gone from tools/list, unknown when called
            await pilot.press("h")
            assert 'hide = ["echo"]' in path.read_text()
            assert "echo" not in [t.name for t in (await s.list_tools()).tools]
            res = await s.call_tool("echo", {"text": "hidden"})
            assert res.is_error
            # u puts the file back as it was before `h`, then before the second `t`
            await pilot.press("u")
            assert "hide" not in path.read_text()
            assert "echo" in [t.name for t in (await s.list_tools()).tools]
            await pilot.press("u")
            assert 'action = "require_approval"' in path.read_text()
            # a pending approval let through by a change (`t`... deny -> allow is two steps; use u)
            call = asyncio.create_task(s.call_tool("echo", {"text": "through"}))
            await until(pilot, lambda: len(app.model.pending) == 1, "approval prompt again")
            await pilot.press("u")  # back to the original file: echo allowed
            res = await asyncio.wait_for(call, 30)
            assert not res.is_error and res.content[0].text == "through"
            assert path.read_text() == POLICY
            assert any("the policy changed while it waited; let through" in n for n in notes(app))
            assert not app.control.gateway.files.can_undo()
            await pilot.press("u")  # nothing left: the key is disabled, the file unchanged
            assert path.read_text() == POLICY
        # an edit that cannot be made is an error notification, nothing written
        select_tool(app, "delete_thing")
        await pilot.press("plus")
        assert path.read_text() == POLICY
        assert any("not changed" in n and "no limits" in n for n in notes(app)), notes(app)


async def test_tune_keys_never_fire_while_typing_in_the_filter(tmp_path: Path) -> None:
    app, path = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await watching(pilot, app)
        select_tool(app, "echo")
        await pilot.press("slash", "plus", "minus", "t", "h", "u", "greater_than_sign")
        assert app.main.query_one("#filter").value == "+-thu>"
        assert path.read_text() == POLICY and not app.control.gateway.files.can_undo()


async def test_editor_follows_the_file_and_offers_to_reload_when_it_has_unsaved_edits(tmp_path: Path) -> None:
    app, path = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await watching(pilot, app)
        await pilot.press("e")
        assert isinstance(app.screen, EditorScreen)
        editor = app.screen
        area = editor.query_one("#editor")
        disk_bar = editor.query_one("#editor-disk")
        # no unsaved edits: the editor shows the new text
        v2 = POLICY.replace("max = 2", "max = 5")
        path.write_text(v2)
        await until(pilot, lambda: area.text == v2, "editor shows the file")
        assert not disk_bar.display and echo_max(app) == 5
        # typing: the tune keys are text here
        area.move_cursor((0, 0))
        await pilot.press("plus", "t", "u")
        assert area.text.startswith("+tu") and path.read_text() == v2
        # unsaved edits and a change on disk: a banner offers ctrl+r, keeps the text
        v3 = POLICY.replace("max = 2", "max = 7")
        path.write_text(v3)
        await until(pilot, lambda: disk_bar.display, "reload offer")
        assert "ctrl+r loads it" in text_of(disk_bar) and area.text.startswith("+tu")
        assert echo_max(app) == 7
        await pilot.press("ctrl+r")
        assert area.text == v3 and not disk_bar.display
        # the other choice: keep yours, ctrl+s saves it over the file and applies it
        area.replace("max = 8", (8, 0), (8, 7))
        path.write_text(POLICY.replace("max = 2", "max = 9"))
        await until(pilot, lambda: disk_bar.display, "reload offer again")
        await pilot.press("ctrl+s")
        assert path.read_text() == POLICY.replace("max = 2", "max = 8")
        assert echo_max(app) == 8 and not disk_bar.display
        await until(pilot, lambda: any("saved from the editor" in n for n in notes(app)), "saved notice")


PREVIEWED = """\
version = "1"
default = "allow"

[tools.echo]
[[tools.echo.limits]]
counter = "echo_rate"
window = "hour"
max = 10
scope = "grant"
"""


async def test_the_editor_previews_what_an_edit_would_have_changed_before_it_is_saved(tmp_path: Path) -> None:
    app, path = make_app(tmp_path, PREVIEWED)
    async with app.run_test(size=SIZE) as pilot:
        await watching(pilot, app)
        async with client(app.control.gateway.url("ev")) as s:
            for i in range(4):
                assert not (await s.call_tool("echo", {"text": f"e{i}"})).is_error
            await s.call_tool("count_items", {"items": []})
        await until(pilot, lambda: len(app.model.calls) == 5 and all(r.done for r in app.model.calls.values()),
                    "five calls seen")
        select_tool(app, "echo")
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, EditorScreen) and app.screen.loaded, "the editor")
        editor = app.screen
        area = editor.query_one("#editor")
        area.text = area.text.replace("max = 10", "max = 2")  # below what the agent did
        await until(pilot, lambda: "would change" in editor.preview_text, "the preview")
        assert "of the last 5 calls (seen by this console), 2 would change: newly rate-limited 2" in \
            editor.preview_text, editor.preview_text
        assert "echo  allowed → rate_limited  tools.echo.limits[0]" in editor.preview_text
        assert "max = 10" in path.read_text()  # nothing saved yet
        area.text = area.text.replace('[tools.echo]', '[tools.echo]\naction = "deny"')
        await until(pilot, lambda: "allow → deny 4" in editor.preview_text, "the preview follows the text")
        area.text = area.text.replace('action = "deny"', 'action = "deny"\n[tools.broken')  # invalid: no preview
        await until(pilot, lambda: editor.preview_text == "", "no preview of a broken policy")
        await pilot.press("ctrl+l")  # the audit log: none kept in this test
        await pilot.press("escape", "escape")


async def test_minus_on_a_tool_toasts_what_the_lower_max_would_have_changed(tmp_path: Path) -> None:
    app, path = make_app(tmp_path, PREVIEWED.replace("max = 10", "max = 4"))
    async with app.run_test(size=SIZE) as pilot:
        await watching(pilot, app)
        async with client(app.control.gateway.url("ev")) as s:
            for i in range(4):
                assert not (await s.call_tool("echo", {"text": f"e{i}"})).is_error
        await until(pilot, lambda: len(app.model.calls) == 4 and all(r.done for r in app.model.calls.values()),
                    "four calls seen")
        await choose_tool(pilot, app, "echo")
        await pilot.press("minus")
        await until(pilot, lambda: "max = 3" in path.read_text() and app.last_preview, "the tune and its preview")
        assert app.last_preview == ("of the last 4 calls (seen by this console), 1 would change: "
                                    "newly rate-limited 1"), app.last_preview
        assert any(n.startswith("what it would have changed:") for n in notes(app)), notes(app)


async def test_ctrl_l_previews_the_edit_on_the_audit_logs_calls(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, PREVIEWED)], audit_log=str(tmp_path / "audit.jsonl"))
    app = ConsoleApp.embedded(Gateway(cfg), theme_name="dark")
    async with app.run_test(size=SIZE) as pilot:
        await watching(pilot, app)
        async with client(app.control.gateway.url("ev")) as s:
            for i in range(3):
                await s.call_tool("echo", {"text": f"e{i}"})
        await until(pilot, lambda: len(app.model.calls) == 3 and all(r.done for r in app.model.calls.values()),
                    "three calls")
        app.model.calls.clear()  # the console forgot them (a restart): the audit log has them
        select_tool(app, "echo")
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, EditorScreen) and app.screen.loaded, "the editor")
        editor = app.screen
        area = editor.query_one("#editor")
        area.text = area.text.replace("max = 10", "max = 1")
        await until(pilot, lambda: "of the last 0 calls" in editor.preview_text, "nothing seen by the console")
        await pilot.press("ctrl+l")
        await until(pilot, lambda: "(the audit log)" in editor.preview_text, "the audit log's preview")
        assert "of the last 3 calls (the audit log), 2 would change: newly rate-limited 2" in editor.preview_text
        await pilot.press("escape", "escape")
