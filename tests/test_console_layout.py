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
