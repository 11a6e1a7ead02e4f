"""Where things are drawn: nothing a person must read is covered (Pilot, in front of the real gateway)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcpguard.console.screens import EditorScreen
from test_console_pilot import make_app, started, until


@pytest.mark.parametrize("size", [(120, 36), (80, 24)])
async def test_notifications_cover_neither_the_detail_pane_nor_the_editors_error_line(
        tmp_path: Path, size: tuple[int, int]) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=size, notifications=True) as pilot:
        await started(pilot, app)
        for i in range(3):
            app.notify(f"a long notification number {i} that takes a few lines to say what it says", timeout=30)
        await pilot.pause(0.3)
        toasts = [t.region for t in app.screen.query("Toast")]
        assert toasts, "no toast drawn"
        detail = app.main.query_one("#detail").region
        assert not any(t.overlaps(detail) for t in toasts), (toasts, detail)
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, EditorScreen), "the editor")
        editor = app.screen
        area = editor.query_one("#editor")
        area.text = area.text + "\n[tools.broken\n"
        await pilot.pause(0.5)
        app.notify("another notification while editing", timeout=30)
        await pilot.pause(0.3)
        errors = editor.query_one("#editor-errors").region
        assert errors.height and not any(t.region.overlaps(errors) for t in editor.query("Toast"))
        await pilot.press("escape")


SHADOW = """\
version = "1"
default = "allow"

[tools.delete_thing]
action = "deny"
reason = "Deleting is for people."
mode = "shadow"

[tools.count_items]
[[tools.count_items.limits]]
counter = "count_trial"
window = "minute"
max = 2
scope = "grant"
mode = "shadow"
"""


async def test_a_shadow_rule_lets_the_call_through_and_the_console_says_what_it_would_have_done(
        tmp_path: Path) -> None:
    from test_console_pilot import text_of
    from upstreams.harness import client

    app = make_app(tmp_path, SHADOW)
    async with app.run_test(size=(120, 36)) as pilot:
        await started(pilot, app)
        async with client(app.control.gateway.url("ev")) as s:
            res = await s.call_tool("delete_thing", {"id": "x"})
            assert not res.is_error and res.content[0].text == "deleted x"  # not enforced
            for _ in range(3):
                assert not (await s.call_tool("count_items", {"items": []})).is_error
        table = app.main.query_one("#calls")
        await until(pilot, lambda: table.row_count == 4 and all(r.done for r in app.model.calls.values()), "4 rows")
        cells = [table.cell_text(c, "decision") for c in app.model.calls]
        assert cells == ["would ✗", "allow", "allow", "would ≤"]
        results = [table.cell_text(c, "result") for c in app.model.calls]
        assert results == ["ok"] * 4
        gauges = text_of(app.main.query_one("#gauges"))
        assert "count_trial shadow" in gauges and "▒" in gauges and "would limit" in gauges, gauges
        await pilot.press("slash", *"would")
        await until(pilot, lambda: table.row_count == 2, "the filter keeps the shadow outcomes")
        await pilot.press("enter")
        table.focus()
        await pilot.press("k")  # the first of the two: the delete
        await until(pilot, lambda: "shadow would deny (policy_denied)" in text_of(app.main.query_one("#detail")),
                    "the detail names the shadow outcome")
        assert "it went through" in text_of(app.main.query_one("#detail"))
        await pilot.press("ctrl+q")
