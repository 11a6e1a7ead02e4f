"""Answering approvals in the console as a person would, with Pilot, in front of the real gateway.

Real parts: `Gateway` on 127.0.0.1 in front of the SDK-written everything server
over stdio, real SDK clients over Streamable HTTP, the audit log on disk. The
prompt shows the exact call and the key answers that call; `D` denies with a
reason the agent reads; `e` edits the arguments, checked against the tool's
inputSchema, and approves the edited call; `A` is a session approval the table,
the audit and the sessions pane all show; `enter` opens one call full screen.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from mcpguard.console import ConsoleApp
from mcpguard.console.approving import EditArgumentsScreen
from mcpguard.console.callview import CallScreen
from mcpguard.console.sessions import SessionsScreen
from mcpguard.gateway import Gateway
from test_console_pilot import decision_cell, started, text_of, until
from upstreams.harness import client, everything_server, make_config

POLICY = """\
version = "1"
default = "allow"

[tools.echo]
action = "require_approval"
approval_timeout = "60s"
reason = "Echo needs a person."
"""

LONG = "x" * 900 + "THE-END"


def test_the_json_and_toml_editors_highlight_without_crashing_the_process() -> None:
    """A tree-sitter that corrupts memory on JSON kills the console outright (a segfault, no
    traceback), so this runs in its own process: the editor of a JSON policy and of a call's
    arguments, then the TOML one."""
    code = ("from textual.widgets import TextArea\n"
            "for lang in ('json', 'toml', 'json'):\n"
            "    TextArea('{\"stage\": \"Staging\"}', language=lang)\n"
            "print('ok')\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout.strip()) == (0, "ok"), run.stderr[-2000:]


def make_app(tmp_path: Path, **kw: Any) -> ConsoleApp:
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, POLICY)], audit_log=str(tmp_path / "audit.jsonl"))
    return ConsoleApp.embedded(Gateway(cfg), theme_name="dark", **kw)


def audited(tmp_path: Path, kind: str) -> list[dict[str, Any]]:
    """The audit log's records of one kind (`decision`, `approval`, `completion`, ...)."""
    path = tmp_path / "audit.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in map(json.loads, lines) if r.get("kind") == kind]


def prompt_text(app: ConsoleApp) -> str:
    return text_of(app.main.query_one("#approval"))


def screen_lines(app: ConsoleApp) -> list[str]:
    """The screen as a person sees it: the text rows of `App.export_screenshot()` (an SVG), top to bottom."""
    import html
    import re
    from collections import defaultdict

    rows: dict[float, list[tuple[float, str]]] = defaultdict(list)
    for m in re.finditer(r'<text[^>]*x="([\d.]+)" y="([\d.]+)"[^>]*>(.*?)</text>', app.export_screenshot(), re.S):
        rows[float(m.group(2))].append((float(m.group(1)), html.unescape(re.sub(r"<[^>]+>", "", m.group(3)))))
    return ["".join(t for _, t in sorted(r)).replace("\xa0", " ") for _, r in sorted(rows.items())]


async def settled(pilot: Any, app: ConsoleApp) -> None:
    prompt = app.main.query_one("#approval")
    await until(pilot, lambda: prompt.display and not prompt.settling(), "the prompt settled")


async def test_the_prompt_shows_the_whole_call_at_80x24_and_z_unfolds_long_values(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot, app)
        async with client(app.control.gateway.url("ev")) as s:
            args = {"text": LONG, "stage": "Production", "archive_existing": False, "nested": {"a": [1, 2]}}
            call = asyncio.create_task(s.call_tool("echo", args))
            await until(pilot, lambda: len(app.model.pending) == 1, "the prompt")
            await settled(pilot, app)
            p = next(iter(app.model.pending.values()))
            shown = prompt_text(app)
            for part in ("echo", "on ev", "risk", "caller", p.session_id[:12], p.digest.removeprefix("sha256:")[:12],
                         "Echo needs a person.", 'stage: "Production"', "archive_existing: false", '"a": [',
                         "1 long value folded: z shows all"):
                assert part in shown, (part, shown)
            assert "THE-END" not in shown
            # on the screen, before any scrolling: every argument (the stage being approved), the keys
            parts = ('stage: "Production"', "archive_existing: false", "text:", "A  session")
            await until(pilot, lambda: all(part in "\n".join(screen_lines(app)) for part in parts),
                        "every argument and the A key on the 80x24 screen")
            assert not app.main.query_one("#detail").display  # the prompt is the detail of the pending call
            await pilot.press("z")
            await until(pilot, lambda: "THE-END" in prompt_text(app), "unfolded")
            await pilot.press("a")
            res = await asyncio.wait_for(call, 30)
            assert res.content[0].text == LONG
        await pilot.press("ctrl+q")


async def test_the_pending_row_a_person_selects_is_the_one_the_prompt_shows_and_a_answers(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(120, 36)) as pilot:
        await started(pilot, app)
        async with client(app.control.gateway.url("ev")) as s:
            first = asyncio.create_task(s.call_tool("echo", {"text": "first"}))
            await until(pilot, lambda: len(app.model.pending) == 1, "one pending")
            second = asyncio.create_task(s.call_tool("echo", {"text": "second"}))
            await until(pilot, lambda: len(app.model.pending) == 2, "two pending")
            await settled(pilot, app)
            assert 'text: "first"' in prompt_text(app)  # the oldest first
            table = app.main.query_one("#calls")
            table.focus()
            await pilot.press("G")  # the newest row: the second call
            await pilot.press("k", "j")  # the person moves onto it
            await until(pilot, lambda: 'text: "second"' in prompt_text(app), "the prompt follows the selection")
            assert "approval 2 of 2" in str(app.main.query_one("#approval").border_title)
            await pilot.press("left_square_bracket")  # [ : the previous one, and the table's cursor with it
            await until(pilot, lambda: 'text: "first"' in prompt_text(app), "[ goes back to the first")
            assert app.model.calls[table.selected_call_id()].arguments == {"text": "first"}
            await settled(pilot, app)
            await pilot.press("right_square_bracket")
            await until(pilot, lambda: 'text: "second"' in prompt_text(app), "] goes on to the second")
            await settled(pilot, app)
            await pilot.press("a")
            res = await asyncio.wait_for(second, 30)
            assert res.content[0].text == "second"
            assert not first.done() and len(app.model.pending) == 1
            await until(pilot, lambda: 'text: "first"' in prompt_text(app), "the first is left")
            await settled(pilot, app)
            await pilot.press("]")  # one approval: ] stays on it, and the table's cursor goes to its row
            assert table.selected_call_id() == next(iter(app.model.pending.values())).call_id
            await pilot.press("d")
            assert (await asyncio.wait_for(first, 30)).is_error
        await pilot.press("ctrl+q")


async def test_keys_are_ignored_a_moment_when_the_prompt_switches_calls_by_itself(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(120, 36)) as pilot:
        await started(pilot, app)
        async with client(app.control.gateway.url("ev")) as s:
            one = asyncio.create_task(s.call_tool("echo", {"text": "one"}))
            await until(pilot, lambda: len(app.model.pending) == 1, "one pending")
            two = asyncio.create_task(s.call_tool("echo", {"text": "two"}))
            await until(pilot, lambda: len(app.model.pending) == 2, "two pending")
            await settled(pilot, app)
            first = next(iter(app.model.pending.values()))
            await app.control.approve(first.approval_id, by="console:someone-else")  # another window answered
            await until(pilot, lambda: 'text: "two"' in prompt_text(app), "the second slid in")
            await pilot.press("a")  # meant for "one", which is gone
            await pilot.pause(0.2)
            assert len(app.model.pending) == 1 and not two.done()
            await settled(pilot, app)
            await pilot.press("a")
            assert (await asyncio.wait_for(two, 30)).content[0].text == "two"
            assert (await asyncio.wait_for(one, 30)).content[0].text == "one"
        await pilot.press("ctrl+q")


async def test_D_denies_with_a_typed_reason_the_agent_reads(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot, app)
        async with client(app.control.gateway.url("ev")) as s:
            call = asyncio.create_task(s.call_tool("echo", {"text": "ship it"}))
            await until(pilot, lambda: len(app.model.pending) == 1, "the prompt")
            await settled(pilot, app)
            await pilot.press("D")
            await until(pilot, lambda: app.screen.query("#reason-input"), "the reason box")
            await pilot.press(*"not before the review")
            await pilot.press("enter")
            res = await asyncio.wait_for(call, 30)
            assert res.is_error and "not before the review" in res.content[0].text
            assert "not before the review" in json.dumps(res.meta)
        await until(pilot, lambda: audited(tmp_path, "approval"), "the answer audited")
        assert audited(tmp_path, "approval")[-1]["reason"] == "not before the review"
        await pilot.press("ctrl+q")


async def test_e_edits_the_arguments_checked_against_the_input_schema_and_approves_the_edited_call(
        tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(120, 36)) as pilot:
        await started(pilot, app)
        async with client(app.control.gateway.url("ev")) as s:
            call = asyncio.create_task(s.call_tool("echo", {"text": "Production"}))
            await until(pilot, lambda: len(app.model.pending) == 1, "the prompt")
            await settled(pilot, app)
            await pilot.press("e")
            await until(pilot, lambda: isinstance(app.screen, EditArgumentsScreen), "the edit screen")
            screen = app.screen
            area = screen.query_one("#editargs")
            errors = screen.query_one("#editargs-errors")
            assert json.loads(area.text) == {"text": "Production"}
            area.text = '{"text": '  # half typed
            await until(pilot, lambda: "line 1" in text_of(errors), "a JSON error with its place")
            area.text = '{"text": 5}'
            await until(pilot, lambda: "5 is not of type 'string'" in text_of(errors), "the schema's error")
            await pilot.press("ctrl+s")  # refused: nothing is sent
            await pilot.pause(0.2)
            assert isinstance(app.screen, EditArgumentsScreen) and not call.done()
            await pilot.press("ctrl+r")  # back to what the agent sent
            assert json.loads(area.text) == {"text": "Production"}
            area.text = '{"text": "Staging"}'
            await until(pilot, lambda: "fits the tool's inputSchema" in text_of(errors), "valid")
            await pilot.press("ctrl+s")
            res = await asyncio.wait_for(call, 30)
            assert not res.is_error and res.content[0].text == "Staging"
            assert res.meta and "arguments_changed" in json.dumps(res.meta)
        await until(pilot, lambda: audited(tmp_path, "approval"), "the answer audited")
        answer = audited(tmp_path, "approval")[-1]
        assert answer["approved_arguments"] == {"text": "Staging"} and answer["digest"] != answer["approved_digest"]
        await pilot.press("ctrl+q")


async def test_A_approves_for_the_session_and_later_calls_say_so_in_the_table_and_the_audit(tmp_path: Path) -> None:
    app = make_app(tmp_path, by="console:tester")
    async with app.run_test(size=(120, 36)) as pilot:
        await started(pilot, app)
        async with client(app.control.gateway.url("ev")) as s:
            first = asyncio.create_task(s.call_tool("echo", {"text": "a"}))
            await until(pilot, lambda: len(app.model.pending) == 1, "the prompt")
            await settled(pilot, app)
            await pilot.press("A")
            await asyncio.wait_for(first, 30)
            res = await s.call_tool("echo", {"text": "b"})  # no prompt this time
            assert res.content[0].text == "b"
            await until(pilot, lambda: len(app.model.calls) == 2, "the second call's row")
            later = list(app.model.calls)[-1]
            await until(pilot, lambda: decision_cell(app, later) == "session ✓", "the row says session-approved")
            assert app.model.calls[later].approved_by == "console:tester"
        await until(pilot, lambda: len(audited(tmp_path, "completion")) >= 2, "both calls audited")
        rec = audited(tmp_path, "completion")[-1]
        assert rec["decision"] == "approved" and rec["approver"] == "console:tester"
        assert audited(tmp_path, "decision")[-1]["approver"] == "console:tester"  # let through by that approval
        await pilot.press("ctrl+q")


async def test_S_lists_the_session_r_revokes_its_approval_and_x_ends_it(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(120, 36)) as pilot:
        await started(pilot, app)
        async with client(app.control.gateway.url("ev")) as s:
            first = asyncio.create_task(s.call_tool("echo", {"text": "a"}))
            await until(pilot, lambda: len(app.model.pending) == 1, "the prompt")
            await settled(pilot, app)
            await pilot.press("A")
            await asyncio.wait_for(first, 30)
            app.main.query_one("#calls").focus()
            await pilot.press("S")
            await until(pilot, lambda: isinstance(app.screen, SessionsScreen), "the sessions pane")
            screen = app.screen
            table = screen.query_one("#sessions")
            await until(pilot, lambda: table.row_count == 1 and "echo" in str(table.get_row_at(0)), "the session")
            row = [str(c) for c in table.get_row_at(0)]
            assert row[0] == "ev" and row[2] == "echo" and ("stateless" in row[6] or "handshake" in row[6]), row
            grants = screen.query_one("#grants")
            assert grants.row_count == 1 and str(grants.get_row_at(0)[0]) == "echo"
            await pilot.press("r")
            await until(pilot, lambda: grants.row_count == 0, "revoked")
            await pilot.press("escape")
            again = asyncio.create_task(s.call_tool("echo", {"text": "asks again"}))
            await until(pilot, lambda: len(app.model.pending) == 1, "a person is asked again")
            await settled(pilot, app)
            await pilot.press("a")
            await asyncio.wait_for(again, 30)
            await pilot.press("S")
            await until(pilot, lambda: isinstance(app.screen, SessionsScreen), "the sessions pane again")
            await pilot.press("x")
            await pilot.press("y")
            await until(pilot, lambda: app.screen.query_one("#sessions").row_count == 0, "the session ended")
        await pilot.press("escape", "ctrl+q")


async def test_enter_opens_the_call_full_screen_search_finds_a_value_and_y_copies_the_arguments(
        tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot, app)
        async with client(app.control.gateway.url("ev")) as s:
            items = [{"name": f"item-{i}"} for i in range(8)]
            await s.call_tool("count_items", {"items": items})
        table = app.main.query_one("#calls")
        await until(pilot, lambda: table.row_count == 1 and app.model.calls[table.selected_call_id()].done, "the row")
        table.focus()
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, CallScreen), "the call view")
        tree = app.screen.query_one("#callview-tree")
        labels = [str(n.label) for n in tree.root.children]
        assert labels[0].startswith("arguments") and labels[-1].startswith("result")
        await pilot.press("slash", *"item-6", "enter")
        await until(pilot, lambda: tree.cursor_node is not None and "item-6" in str(tree.cursor_node.label), "the first match")
        assert text_of(app.screen.query_one("#callview-value-text")).strip() == "item-6"  # the value, whole
        await pilot.press("n")  # the next match: inside the result's text
        await until(pilot, lambda: "names" in str(tree.cursor_node.label) or "text" in str(tree.cursor_node.label),
                    "the second match")
        await pilot.press("N")  # back to the previous match
        await until(pilot, lambda: "item-6" in str(tree.cursor_node.label), "N: the first match again")
        await pilot.press("y")
        assert json.loads(app.clipboard) == {"items": items}
        await pilot.press("Y")
        assert json.loads(app.clipboard)["structuredContent"]["count"] == 8
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.main, "back")
        await pilot.press("ctrl+q")


async def test_an_approval_rings_the_bell_and_the_terminal_title_counts_pending(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    rings = []
    app.bell = lambda: rings.append(1)  # headless: the real bell writes nothing to count
    async with app.run_test(size=(120, 36)) as pilot:
        await started(pilot, app)
        async with client(app.control.gateway.url("ev")) as s:
            call = asyncio.create_task(s.call_tool("echo", {"text": "x"}))
            await until(pilot, lambda: len(app.model.pending) == 1, "the prompt")
            assert rings == [1] and app.title == "mcpguard · 1 pending"
            await settled(pilot, app)
            await pilot.press("a")
            await asyncio.wait_for(call, 30)
            await until(pilot, lambda: app.title == "mcpguard", "the title without pending")
        await pilot.press("ctrl+q")
    (tmp_path / "quiet").mkdir()
    quiet = make_app(tmp_path / "quiet", bell=False)
    quiet.bell = lambda: rings.append(2)
    async with quiet.run_test(size=(120, 36)) as pilot:
        await started(pilot, quiet)
        async with client(quiet.control.gateway.url("ev")) as s:
            call = asyncio.create_task(s.call_tool("echo", {"text": "x"}))
            await until(pilot, lambda: len(quiet.model.pending) == 1, "the prompt")
            await quiet.control.deny(next(iter(quiet.model.pending)), by="t")
            await asyncio.wait_for(call, 30)
        assert rings == [1]
        await pilot.press("ctrl+q")
