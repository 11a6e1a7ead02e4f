"""The console driven by its keys (Textual Pilot) in front of the real gateway.

Real parts: `mcpguard.gateway.Gateway` on 127.0.0.1 (free port) in front of
the SDK-written everything server over stdio, real SDK clients over
Streamable HTTP. Waits are bounded loops on what the screen shows, never
timed assertions.
"""

from __future__ import annotations

import asyncio
import html
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mcpguard.console import ConsoleApp
from mcpguard.console.screens import ApprovalQueueScreen, ConfirmQuitScreen, EditorScreen, HelpScreen
from mcpguard.gateway import Gateway
from upstreams.harness import client, everything_server, make_config

POLICY = """\
version = "1"
default = "allow"
hide = ["secret_tool"]

[tools.echo]
action = "require_approval"
approval_timeout = "60s"
reason = "Echo needs a person."

[tools.progress]
action = "require_approval"
approval_timeout = "1s"

[tools.delete_thing]
action = "deny"
reason = "Deleting things is not for agents."

[tools.count_items]
[[tools.count_items.limits]]
counter = "count_rate"
window = "minute"
max = 2
scope = "grant"
"""

SIZE = (120, 36)


async def until(pilot: Any, cond: Callable[[], bool], what: str, tries: int = 400) -> None:
    """Let the app run until `cond()` holds (bounded: `tries` pauses of 50 ms)."""
    for _ in range(tries):
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"gave up waiting for: {what}")


def text_of(widget: Any) -> str:
    """What a Static shows, as plain text (Rich renderables rendered 200 columns wide)."""
    from rich.console import Console

    from textual.widgets import Static

    console = Console(width=200, record=True, file=io.StringIO(), color_system=None)
    parts = [widget] if isinstance(widget, Static) else list(widget.query(Static))  # a container: its Statics
    for part in parts:
        console.print(part.content)
    return console.export_text()


_SVG_TEXT = re.compile(r'<text class="[^"]*" x="([0-9.]+)" y="[0-9.]+" textLength="[0-9.]+" '
                       r'clip-path="url\(#terminal-(?:\d+-)?line-(\d+)\)">([^<]*)</text>')


def screen_lines(app: Any) -> list[str]:
    """The terminal as a person sees it now: one string per line, every widget composited.

    Read from `App.export_screenshot()` (Rich's SVG of the screen, 12.2 px per cell).
    """
    width, height = app.size
    grid = [[" "] * width for _ in range(height)]
    for x, line, text in _SVG_TEXT.findall(app.export_screenshot()):
        col, row = round(float(x) / 12.2), int(line)
        for i, ch in enumerate(html.unescape(text).replace("\xa0", " ")):
            if row < height and col + i < width:
                grid[row][col + i] = ch
    return ["".join(r) for r in grid]


def table_lines(app: Any) -> list[str]:
    """The call table's lines as shown on screen (its region of `screen_lines`), header first."""
    table = app.main.query_one("#calls")
    r = table.content_region
    return [line[r.x:r.right] for line in screen_lines(app)[r.y:r.bottom]]


def make_app(tmp_path: Path, policy: str = POLICY) -> ConsoleApp:
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, policy)],
                      url_file=str(tmp_path / "url"))
    return ConsoleApp.embedded(Gateway(cfg), theme_name="dark")


def decision_cell(app: ConsoleApp, call_id: str) -> str:
    """What the call's row shows in the decision column."""
    table = app.main.query_one("#calls")
    return table.cell_text(call_id, "decision")


async def started(pilot: Any, app: ConsoleApp) -> None:
    await until(pilot, lambda: app.started and app.control.gateway.servers["ev"].state == "up", "gateway up")


async def test_a_approves_and_the_client_gets_the_upstream_result(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app)
        async with client(app.control.gateway.url("ev")) as s:
            call = asyncio.create_task(s.call_tool("echo", {"text": "hello"}))
            await until(pilot, lambda: len(app.model.pending) == 1, "approval prompt")
            prompt = app.main.query_one("#approval")
            assert prompt.display and "approval 1 of 1" in str(prompt.border_title)
            assert "echo" in text_of(prompt)
            cid = next(iter(app.model.calls))
            assert "pending" in decision_cell(app, cid)
            assert "1 pending" in text_of(app.main.query_one("#status"))
            await pilot.press("a")
            res = await asyncio.wait_for(call, 30)
            assert not res.is_error and res.content[0].text == "hello"
            await until(pilot, lambda: decision_cell(app, cid) == "approved", "row shows approved")
            assert not app.main.query_one("#approval").display
        await pilot.press("ctrl+q")


async def test_d_denies_and_the_client_gets_a_denial(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app)
        async with client(app.control.gateway.url("ev")) as s:
            call = asyncio.create_task(s.call_tool("echo", {"text": "no"}))
            await until(pilot, lambda: len(app.model.pending) == 1, "approval prompt")
            await pilot.press("d")
            res = await asyncio.wait_for(call, 30)
            assert res.is_error
            assert res.meta["mcpguard/decision"]["code"] == "approval_denied"
            cid = next(iter(app.model.calls))
            await until(pilot, lambda: decision_cell(app, cid) == "denied", "row shows denied")


async def test_the_deadline_denies_and_the_prompt_goes_away(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app)
        async with client(app.control.gateway.url("ev")) as s:
            call = asyncio.create_task(s.call_tool("progress", {"steps": 1}))
            await until(pilot, lambda: len(app.model.pending) == 1, "approval prompt")
            res = await asyncio.wait_for(call, 30)
            assert res.is_error and res.meta["mcpguard/decision"]["code"] == "approval_timeout"
            await until(pilot, lambda: not app.model.pending and not app.main.query_one("#approval").display,
                        "prompt gone")
            cid = next(iter(app.model.calls))
            assert decision_cell(app, cid) == "timed out"


async def test_queue_of_three_and_A_approves_the_tool_for_the_session(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app)
        async with client(app.control.gateway.url("ev")) as s:
            calls = [asyncio.create_task(s.call_tool("echo", {"text": f"t{i}"})) for i in range(3)]
            await until(pilot, lambda: len(app.model.pending) == 3, "three pending")
            prompt = app.main.query_one("#approval")
            assert "approval 1 of 3" in str(prompt.border_title)
            first = prompt.current_id
            await pilot.press("right_square_bracket")
            assert "approval 2 of 3" in str(prompt.border_title) and prompt.current_id != first
            await pilot.press("left_square_bracket")
            assert prompt.current_id == first
            await pilot.press("A")  # approve echo for this session: its waiting calls go through too
            results = await asyncio.wait_for(asyncio.gather(*calls), 30)
            assert sorted(r.content[0].text for r in results) == ["t0", "t1", "t2"]
            # the same session's next echo needs no prompt
            again = await asyncio.wait_for(s.call_tool("echo", {"text": "again"}), 30)
            assert again.content[0].text == "again"
            assert not app.model.pending


async def test_table_rows_decisions_filter_and_tree(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app)
        async with client(app.control.gateway.url("ev")) as s:
            await s.call_tool("delete_thing", {"id": "x"})
            for _ in range(3):
                await s.call_tool("count_items", {"items": []})
        table = app.main.query_one("#calls")
        await until(pilot, lambda: table.row_count == 4 and app.model.denied_total == 2, "4 rows")
        decisions = [table.cell_text(k, "decision") for k in app.model.calls]
        assert decisions == ["deny", "allow", "allow", "limited"]
        status = text_of(app.main.query_one("#status"))
        assert "2 denied" in status and app.control.gateway.url("ev") in status
        # the gauge of count_rate is full
        gauges = text_of(app.main.query_one("#gauges-body"))
        assert "count_rate" in gauges and "2/2/min" in gauges
        # filter by tool, then by decision
        await pilot.press("slash")
        await pilot.press(*"count")
        assert table.row_count == 3
        tree = app.main.query_one("#tree")
        leaves = [n.data["tool"] for n in tree.root.children[0].children]
        assert leaves == ["count_items"]
        await pilot.press("ctrl+a", "ctrl+k", *"limited", "enter")
        assert table.row_count == 1
        await pilot.press("escape")  # clears the filter
        assert table.row_count == 4
        tree_tools = {n.data["tool"] for n in tree.root.children[0].children}
        assert {"echo", "secret_tool", "delete_thing"} <= tree_tools


async def test_follow_stops_when_the_person_moves_and_F_resumes(tmp_path: Path) -> None:
    app = make_app(tmp_path, 'version = "1"\ndefault = "allow"\n')
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app)
        table = app.main.query_one("#calls")
        async with client(app.control.gateway.url("ev")) as s:
            for i in range(3):
                await s.call_tool("echo", {"text": str(i)})
            await until(pilot, lambda: table.row_count == 3, "3 rows")
            assert table.following and table.cursor_row == 2
            await pilot.press("k")  # vim up: the person moved
            assert not table.following and table.cursor_row == 1
            for i in range(2):
                await s.call_tool("echo", {"text": str(i)})
            await until(pilot, lambda: table.row_count == 5, "5 rows")
            assert table.cursor_row == 1 and "2 new" in str(table.border_subtitle)
            await pilot.press("F")
            assert table.following and table.cursor_row == 4 and table.border_subtitle == "following"
            # the detail pane shows the selected call's arguments and result
            detail = text_of(app.main.query_one("#detail-body"))
            assert "echo" in detail and '"text"' in detail


async def test_keys_and_the_mouse_move_the_cursor_and_end_and_F_follow_again(tmp_path: Path) -> None:
    """j k g G, arrows, page up/down, home/end, a click and the wheel, on a table longer than the screen."""
    from textual import events

    app = make_app(tmp_path, 'version = "1"\ndefault = "allow"\n')
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app)
        table = app.main.query_one("#calls")
        async with client(app.control.gateway.url("ev")) as s:
            for i in range(30):
                await s.call_tool("echo", {"text": f"n{i}"})
        await until(pilot, lambda: table.row_count == 30, "30 rows")

        def on_screen() -> list[str]:
            return [line for line in table_lines(app)[1:] if "echo" in line]

        def detail() -> str:
            return text_of(app.main.query_one("#detail-body"))

        shown = len(on_screen())
        assert 5 < shown < 30 and table.following and table.cursor_row == 29
        # following, the detail pane catches up with the newest call within DETAIL_FOLLOW_S
        await until(pilot, lambda: '"n29"' in detail(), "the newest call in the detail pane")
        await pilot.press("g")
        assert table.cursor_row == 0 and not table.following and table.border_subtitle == "paused · F follow"
        assert int(table.scroll_y) == 0 and '"n0"' in detail()  # the first rows are on screen
        await pilot.press("j", "down")
        assert table.cursor_row == 2
        await pilot.press("pagedown")
        assert table.cursor_row == 2 + shown - 1
        await pilot.press("k", "up")
        assert table.cursor_row == shown - 1
        await pilot.press("G")
        assert table.following and table.cursor_row == 29 and '"n29"' in detail()
        await pilot.press("up")
        assert not table.following and table.cursor_row == 28
        await pilot.press("end")
        assert table.following and table.cursor_row == 29
        await pilot.press("home")
        assert table.cursor_row == 0
        await pilot.press("pageup")
        assert table.cursor_row == 0
        await pilot.press("F")
        assert table.following and table.border_subtitle == "following"
        # a click on the second row on screen (the border and the header above it)
        top = 30 - shown
        await pilot.click("#calls", offset=(12, 3))
        await pilot.pause()
        assert table.cursor_row == top + 1 and not table.following and f'"n{top + 1}"' in detail()
        # a second click on the row under the cursor chooses it
        chosen: list[str] = []
        post = table.post_message
        table.post_message = lambda m: (chosen.append(m.call_id) if isinstance(m, type(table).Selected)
                                        else None) or post(m)
        await pilot.click("#calls", offset=(12, 3))
        await pilot.pause()
        table.post_message = post
        assert chosen == [table.call_ids()[top + 1]]
        if app.screen is not app.main:  # the screen opened what was chosen (a call view): back
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is app.main, "back on the main screen")
        # select_call (the approval queue's ] and [) puts the cursor on a call and stops following
        await pilot.press("F")
        assert table.select_call(table.call_ids()[3]) and table.cursor_row == 3 and not table.following
        await pilot.pause()
        assert '"n3"' in detail() and int(table.scroll_y) <= 3
        assert not table.select_call("no-such-call")
        await pilot.press("F")
        # the wheel scrolls the view up and stops following
        table.post_message(events.MouseScrollUp(table, 12, 4, 0, -1, 0, False, False, False))
        await pilot.pause()
        assert not table.following and int(table.scroll_y) < top and len(on_screen()) == shown


async def test_help_palette_theme_and_quit(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = text_of(app.screen.query_one("Static"))
        assert "Approve" in text and "Save & apply" in text and "Filter" in text
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        commands = [c.title for c in app.get_system_commands(app.screen)]
        assert {"Filter", "Follow", "Edit", "Theme", "Keys"} <= set(commands)
        assert "Approve" not in commands  # nothing pending
        app.theme = "mcpguard-light"
        await pilot.pause()
        assert app.theme_variables["risk-critical"] == "#d70057"
        await pilot.press("ctrl+q")
    assert app.return_code == 0


async def test_the_palette_picks_ansi_light_and_the_console_keeps_drawing_in_its_colors(tmp_path: Path) -> None:
    """ctrl+p, Theme, ansi-light: the terminal's own colors, which Rich spells differently from Textual."""
    from textual.command import CommandPalette

    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app)
        async with client(app.control.gateway.url("ev")) as s:
            await s.call_tool("delete_thing", {"id": "x"})
            await s.call_tool("status", {})
        table = app.main.query_one("#calls")
        await until(pilot, lambda: table.row_count == 2, "2 rows")

        def hits() -> int:
            return app.screen.query_one("CommandList").option_count if isinstance(app.screen, CommandPalette) else 0

        await pilot.press("ctrl+p")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette), "the palette")
        await pilot.press(*"theme")
        await until(pilot, lambda: hits() > 0, "commands found")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette) and hits() > 5, "the themes")
        await pilot.press(*"ansi-light")
        await until(pilot, lambda: hits() > 0, "ansi-light found")
        await pilot.press("enter")
        await until(pilot, lambda: app.theme == "ansi-light" and not isinstance(app.screen, CommandPalette),
                    "ansi-light applied")
        await pilot.pause()
        lines = screen_lines(app)  # drawing the screen is where a color Rich cannot parse raised
        assert any("delete_thing" in line and "deny" in line for line in lines)
        assert app.return_code is None  # still running
        colors = {level: app.theme_variables[f"risk-{level}"] for level in ("low", "medium", "high", "critical")}
        assert len(set(colors.values())) == 4, colors


async def test_ctrl_q_with_pending_asks_and_denies(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app)
        async with client(app.control.gateway.url("ev")) as s:
            call = asyncio.create_task(s.call_tool("echo", {"text": "x"}))
            await until(pilot, lambda: len(app.model.pending) == 1, "pending")
            await pilot.press("ctrl+q")
            assert isinstance(app.screen, ConfirmQuitScreen)
            await pilot.press("n")
            assert not isinstance(app.screen, ConfirmQuitScreen) and len(app.control.gateway.approvals.pending()) == 1
            await pilot.press("ctrl+q")
            await pilot.press("y")
            res = await asyncio.wait_for(call, 30)
            assert res.is_error and res.meta["mcpguard/decision"]["code"] == "approval_denied"


async def test_editor_validates_marks_the_line_and_ctrl_s_applies(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    path = tmp_path / "ev.toml"
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app)
        await pilot.press("e")
        assert isinstance(app.screen, EditorScreen)
        area = app.screen.query_one("#editor")
        assert area.text == path.read_text()
        # break it: an unknown action on line 6
        area.replace('action = "maybe"', (5, 0), (5, 27))
        await pilot.pause()
        assert area.error_line == 5
        errors = text_of(app.screen.query_one("#editor-errors"))
        assert "line 6" in errors and "not applied" in errors
        await pilot.press("ctrl+s")
        assert path.read_text() == POLICY  # nothing written
        assert app.control.gateway.servers["ev"].policy.action_for("echo") == "require_approval"
        # fix it differently: echo is now denied
        area.replace('action = "deny"', (5, 0), (5, 16))
        await pilot.pause()
        assert area.error_line is None
        await pilot.press("ctrl+s")
        await until(pilot, lambda: 'echo]\naction = "deny"' in path.read_text(), "file written")
        assert app.control.gateway.servers["ev"].policy.action_for("echo") == "deny"
        async with client(app.control.gateway.url("ev")) as s:
            res = await s.call_tool("echo", {"text": "x"})
            assert res.is_error and res.meta["mcpguard/decision"]["code"] == "policy_denied"
        await pilot.press("escape")
        assert not isinstance(app.screen, EditorScreen)
        tree = app.main.query_one("#tree")
        echo = next(n for n in tree.root.children[0].children if n.data["tool"] == "echo")
        assert str(echo.label).startswith("✗ ")


async def test_editor_never_steals_keys_and_ctrl_t_opens_the_queue(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app)
        await pilot.press("e")
        area = app.screen.query_one("#editor")
        async with client(app.control.gateway.url("ev")) as s:
            call = asyncio.create_task(s.call_tool("echo", {"text": "typed"}))
            await until(pilot, lambda: len(app.model.pending) == 1, "pending")
            banner = app.screen.query_one("#editor-banner")
            assert banner.display and "1 approval pending" in text_of(banner)
            area.move_cursor((0, 0))
            await pilot.press("a", "d")  # typed into the editor, not answered
            assert area.text.startswith("ad") and len(app.control.gateway.approvals.pending()) == 1
            await pilot.press("ctrl+t")
            assert isinstance(app.screen, ApprovalQueueScreen)
            await pilot.press("a")
            res = await asyncio.wait_for(call, 30)
            assert res.content[0].text == "typed"
            await until(pilot, lambda: isinstance(app.screen, EditorScreen), "queue closes when empty")


async def test_the_table_keeps_the_newest_max_rows_even_when_evicted_calls_finish_late(tmp_path: Path) -> None:
    """max_rows=3: five calls wait for approval, so the two oldest leave the table while
    pending; approving all five (their completions arrive after eviction) must not bring
    them back nor push the newer ones out; then four quick calls: the newest three, last."""
    policy = ('version = "1"\ndefault = "allow"\n\n[tools.echo]\naction = "require_approval"\n'
              'approval_timeout = "60s"\n')
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, policy)], url_file=str(tmp_path / "url"))
    app = ConsoleApp.embedded(Gateway(cfg), theme_name="dark", max_rows=3)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app)
        table = app.main.query_one("#calls")

        def shown() -> list[Any]:
            return [app.model.calls[cid].arguments for cid in table.call_ids()]

        async with client(app.control.gateway.url("ev")) as s:
            calls = []
            for i in range(5):  # one at a time, so they arrive in order
                calls.append(asyncio.create_task(s.call_tool("echo", {"text": f"t{i}"})))
                await until(pilot, lambda n=i + 1: len(app.model.pending) == n, f"{i + 1} pending")
            await until(pilot, lambda: table.row_count == 3, "3 rows")
            assert shown() == [{"text": "t2"}, {"text": "t3"}, {"text": "t4"}]
            prompt = app.main.query_one("#approval")
            for n in range(5, 0, -1):  # a person reads each call before answering it
                await until(pilot, lambda: not prompt.settling(), "the prompt settled")
                await pilot.press("a")
                await until(pilot, lambda n=n: len(app.model.pending) == n - 1, f"{n - 1} pending")
            results = await asyncio.wait_for(asyncio.gather(*calls), 30)
            assert [r.is_error for r in results] == [False] * 5
            await until(pilot, lambda: all(app.model.calls[c].done for c in app.model.calls)
                        and "waiting" not in {table.cell_text(c, "result") for c in app.model.calls},
                        "the three rows completed")
            assert table.row_count == 3 and len(app.model.calls) == 3
            assert shown() == [{"text": "t2"}, {"text": "t3"}, {"text": "t4"}]
            assert [table.cell_text(c, "decision") for c in app.model.calls] == ["approved"] * 3
            for i in range(4):
                await s.call_tool("count_items", {"items": [{"name": f"n{i}"}]})
        newest = [{"items": [{"name": f"n{i}"}]} for i in (1, 2, 3)]
        await until(pilot, lambda: shown() == newest, "the newest 3")
        assert table.row_count == 3 and table.following and table.cursor_row == 2


async def test_a_prompt_opening_under_a_full_table_keeps_the_newest_call_in_view(tmp_path: Path) -> None:
    """At 80x24 the prompt takes the table's room: the waiting call's row must still be on screen, and
    stay there while the panes around the table change (the terminal shrinks, the filter box opens)."""
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot, app)
        table = app.main.query_one("#calls")

        def newest_on_screen() -> bool:
            lines = table_lines(app)
            return any("pending" in line and "echo" in line for line in lines[1:])

        async with client(app.control.gateway.url("ev")) as s:
            for i in range(12):
                await s.call_tool("status", {})
            call = asyncio.create_task(s.call_tool("echo", {"text": "wait"}))
            await until(pilot, lambda: len(app.model.pending) == 1 and app.main.query_one("#approval").display,
                        "approval prompt")
            await until(pilot, newest_on_screen, "the waiting call's row on screen")
            assert table.following and table.border_subtitle == "following"
            assert table.cursor_row == table.row_count - 1
            for size in ((80, 20), (80, 18), (100, 22), (80, 24)):
                await pilot.resize_terminal(*size)
                await pilot.pause()
                assert newest_on_screen(), (size, "\n".join(table_lines(app)))
            await pilot.press("slash")  # the filter box takes a line above the table
            await pilot.pause()
            assert app.main.query_one("#filter").display and newest_on_screen()
            await pilot.press("escape")
            await pilot.press("a")
            assert not (await asyncio.wait_for(call, 30)).is_error


async def test_the_denied_filter_shows_what_the_status_bar_counts_and_the_other_words_keep_working(
        tmp_path: Path) -> None:
    """`N denied` in the status bar and the `/denied` filter mean the same calls: every refused one
    (`Code.refused`: denied by the policy, rate limited, hidden, the upstream failed)."""
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app)
        table = app.main.query_one("#calls")
        async with client(app.control.gateway.url("ev")) as s:
            await s.call_tool("delete_thing", {"id": "x"})  # policy_denied
            for _ in range(3):
                await s.call_tool("count_items", {"items": []})  # the third is rate_limited
            await s.call_tool("secret_tool", {})  # hidden
            with pytest.raises(Exception):  # noqa: B017 - the upstream's JSON-RPC error, re-raised
                await s.call_tool("fail_rpc", {})  # upstream_error
            await s.call_tool("status", {})
            call = asyncio.create_task(s.call_tool("echo", {"text": "ask"}))
            await until(pilot, lambda: table.row_count == 8 and app.model.denied_total == 4
                        and len(app.model.pending) == 1, "8 rows, 4 denied, 1 pending")
            status = text_of(app.main.query_one("#status"))
            assert "4 denied" in status

            async def rows_for(word: str) -> list[str]:
                await pilot.press("ctrl+a", "ctrl+k", *word)
                return [line for line in table_lines(app)[1:] if line.strip()]

            await pilot.press("slash")
            denied = await rows_for("denied")
            assert len(denied) == 4 == table.row_count
            assert {line.split()[1] for line in denied} == {"delete_thing", "count_items", "secret_tool", "fail_rpc"}
            assert len(await rows_for("limited")) == 1 and len(await rows_for("rate_limited")) == 1
            assert len(await rows_for("hidden")) == 1
            errors = await rows_for("error")
            assert len(errors) == 1 and "fail_rpc" in errors[0]
            assert len(await rows_for("pending")) == 1
            await pilot.press("enter")  # back to the table: `a` answers the prompt
            await pilot.press("a")
            assert not (await asyncio.wait_for(call, 30)).is_error
            await until(pilot, lambda: "approved" in {table.cell_text(c, "decision") for c in table.call_ids()},
                        "approved")
            await pilot.press("slash")
            approved = await rows_for("approved")
            assert len(approved) == 1 and "echo" in approved[0]


async def test_a_snapshot_that_lands_while_the_screen_is_torn_down_draws_nothing_and_breaks_nothing(
        tmp_path: Path) -> None:
    """Quitting while a snapshot is on its way: the main screen's widgets are going, the snapshot's redraw
    is skipped (counted), and the console neither crashes nor raises out of its worker."""
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app)
        await app.main.query_one("#tree").remove()  # as in a teardown: the screen is mounted, its tree gone
        before = app.view_errors
        await app.fetch_snapshot()
        assert app.view_errors == before + 1
        await pilot.press("ctrl+q")
    assert app.return_code == 0
