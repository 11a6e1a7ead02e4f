"""SVG snapshots of the console (pytest-textual-snapshot): fixed size, theme and clock.

The console's control interface here is a stand-in with the real parts the
console reads: a real `EventBus` and `Approvals`, a real `Snapshot` built
from the real sample policy and mlflow-mcp's real `tools/list`
(tests/mlflow_tools.json) classified by `mcpguard.risk.classify`. Events are
real event objects with fixed times, so the pictures do not depend on the
clock, ports or latencies (the Pilot tests drive the real gateway).
Update with `pytest tests/test_console_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

import json
import os
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from rich.color import Color as RichColor
from test_console_pilot import screen_lines, table_lines
from textual.color import Color
from textual.geometry import Region
from textual.theme import BUILTIN_THEMES

from mcpguard.approvals import Approvals
from mcpguard.call import Call
from mcpguard.console import ConsoleApp
from mcpguard.console.themes import MIN_RISK_DISTANCE, color_distance, load_themes
from mcpguard.events import CallCompleted, CallDecided, CallReceived, CounterChanged, EventBus
from mcpguard.control import (
    Control, GatewayState, PolicyState, PolicyText, RiskState, ServerState, Snapshot, ToolState, _BusStream, tool_state,
)
from mcpguard.policy import parse_policy
from mcpguard.risk import classify

ROOT = Path(__file__).resolve().parents[1]
TOOLS = json.loads((ROOT / "tests" / "mlflow_tools.json").read_text())
TOOLS = TOOLS["tools"] if isinstance(TOOLS, dict) else TOOLS
T0 = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC
SIZE = (120, 36)


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _risk(tool: str) -> Any:
    t = next(x for x in TOOLS if x["name"] == tool)
    return classify(tool, t.get("annotations"), t.get("description"))


class StandInControl(Control):
    """The control interface of a gateway that is not there: a fixed snapshot, a real bus and approvals."""

    def __init__(self, policy_path: Path, tools: list[str] | None = None) -> None:
        self.bus = EventBus()
        self.approvals = Approvals(self.bus, clock=lambda: T0 + 30)
        self.policy_path = policy_path
        self.tools = [t for t in TOOLS if tools is None or t["name"] in tools]

    def snapshot_now(self) -> Snapshot:
        text = self.policy_path.read_text()
        policy = parse_policy(text, "toml", str(self.policy_path))
        tools = [ToolState(name=t["name"], risk=RiskState(level=_risk(t["name"]).level, kind=_risk(t["name"]).kind),
                           state=tool_state(policy, t["name"])) for t in self.tools]
        server = ServerState(name="mlflow", url="http://127.0.0.1:8765/mcp/mlflow", state="up", tools=tools,
                             policy=PolicyState(path=str(self.policy_path), text=text, version="v1"))
        return Snapshot(gateway=GatewayState(base_url="http://127.0.0.1:8765"), servers=[server], taken_at=T0)

    async def snapshot(self) -> Snapshot:
        return self.snapshot_now()

    def subscribe(self) -> Any:
        return _BusStream(self.bus.subscribe())

    async def policy_text(self, server: str) -> PolicyText:
        return PolicyText(server=server, path=str(self.policy_path), text=self.policy_path.read_text())


def make_app(tmp_path: Path, policy_text: str | None = None, *, theme: str = "dark",
             tools: list[str] | None = None) -> ConsoleApp:
    path = tmp_path / "mlflow.toml"
    path.write_text(policy_text or (ROOT / "sample_policies" / "mlflow.toml").read_text())
    return ConsoleApp(StandInControl(path, tools), theme_name=theme, clock=lambda: T0 + 40, owner=False)


CALLS = [
    ("search_experiments", {"max_results": 5}, "allow", "allowed", None, 41.0, False),
    ("get_runs", {"experiment_id": "1"}, "allow", "allowed", None, 63.0, False),
    ("set_registered_model_tag", {"name": "mcpguard-demo-model", "key": "k", "value": "v"},
     "allow", "allowed", "tools.set_registered_model_tag", 88.0, False),
    ("set_registered_model_tag", {"name": "mcpguard-demo-model", "key": "k", "value": "v2"},
     "deny", "rate_limited", "tools.set_registered_model_tag.limits[0]", 0.4, True),
    ("delete_model_version", {"name": "mcpguard-demo-model", "version": "3"},
     "deny", "policy_denied", "tools.delete_model_version", 0.3, True),
]


def publish_calls(app: ConsoleApp, calls: list[tuple] = CALLS, client: str = "demo-agent",
                  counters: bool = True) -> None:
    bus = app.control.bus
    for i, (tool, args, action, code, rule, ms, err) in enumerate(calls):
        cid = f"demo-{i + 1}"
        ts = T0 + i * 2
        bus.publish(CallReceived(call_id=cid, server="mlflow", tool=tool, arguments=args, grant="local",
                                 session_id="s1", client=client, ts=ts))
        risk = _risk(tool).level
        bus.publish(CallDecided(call_id=cid, server="mlflow", tool=tool, action=action, code=code, rule=rule,
                                message="" if action == "allow" else f"{tool}: {code}", risk=risk, ts=ts))
        result = {"content": [{"type": "text", "text": "{\"ok\": true}"}], "isError": err}
        bus.publish(CallCompleted(call_id=cid, server="mlflow", tool=tool, outcome=code, is_error=err,
                                  duration_ms=ms, result=result, ts=ts + 0.1))
    if not counters:
        return
    bus.publish(CounterChanged(server="mlflow", counter="set_registered_model_tag_rate", scope="grant",
                               scope_key="local", count=20, max=20, window_s=60, retry_after_s=31, ts=T0 + 40))
    bus.publish(CounterChanged(server="mlflow", counter="mlflow_calls", scope="grant", scope_key="local",
                               count=17, max=20, window_s=60, retry_after_s=0, ts=T0 + 40))


async def _settle(pilot: Any) -> None:
    pilot.app.flush_events()
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()


def test_main_screen_with_calls(snap_compare: Any, tmp_path: Path) -> None:
    app = make_app(tmp_path)

    async def run_before(pilot: Any) -> None:
        publish_calls(app)
        await _settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_approval_prompt_queue(snap_compare: Any, tmp_path: Path) -> None:
    app = make_app(tmp_path)

    async def run_before(pilot: Any) -> None:
        publish_calls(app)
        bus = app.control.bus
        for n, version in enumerate(("2", "3")):
            cid = f"appr-{n}"
            args = {"name": "mcpguard-demo-model", "version": version, "stage": "Production"}
            bus.publish(CallReceived(call_id=cid, server="mlflow", tool="transition_model_version_stage",
                                     arguments=args, grant="local", session_id="s1", client="demo-agent",
                                     ts=T0 + 30))
            pilot.app.run_worker(app.control.approvals.request(
                Call("mlflow", "transition_model_version_stage", args, session_id="s1", client="demo-agent",
                     call_id=cid),
                timeout_s=120, risk="high", reason="Stage changes reach production consumers."))
        await pilot.pause()
        await _settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


BROKEN = """\
version = "1"
default = "deny"

[tools.get_run]

[tools.transition_model_version_stage]
action = "ask_someone"
"""


def test_editor_shows_the_error_line(snap_compare: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the title shows the policy path relative to the current folder
    app = make_app(tmp_path)

    async def run_before(pilot: Any) -> None:
        await pilot.press("e")
        area = app.screen.query_one("#editor")
        area.cursor_blink = False
        area.load_text(BROKEN)
        await pilot.pause()
        area.move_cursor((6, 0))
        await _settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_main_screen_at_80x24(snap_compare: Any, tmp_path: Path) -> None:
    app = make_app(tmp_path)

    async def run_before(pilot: Any) -> None:
        publish_calls(app, client="mcpguard-demo-agent")
        await _settle(pilot)

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


# -- columns: whole tool names first, never two tools alike -------------------------------
LOOKALIKES = ["get_model_version", "get_model_versions", "get_model_version_by_alias",
              "transition_model_version_stage", "get_experiment_metrics", "get_experiment_params",
              "set_registered_model_tag", "delete_registered_model"]


@pytest.mark.parametrize("size", [(80, 24), (120, 36)])
async def test_tool_names_are_whole_or_folded_apart_and_the_caller_and_url_stay_readable(
        tmp_path: Path, size: tuple[int, int]) -> None:
    app = make_app(tmp_path)
    calls = [(tool, {}, "allow", "allowed", None, 10.0, False) for tool in LOOKALIKES]
    async with app.run_test(size=size) as pilot:
        publish_calls(app, calls, client="mcpguard-demo-agent")
        await _settle(pilot)
        table = app.main.query_one("#calls")
        rows = table_lines(app)[1:]
        shown = {}
        for cid, tool in zip(table.call_ids(), LOOKALIKES, strict=True):
            text = table.cell_text(cid, "tool")
            assert any(f" {text} " in row for row in rows), (text, rows)  # what the cell says is on screen
            if text != tool:  # folded: its start and end, around one …
                head, tail = text.split("…")
                assert tool.startswith(head) and tool.endswith(tail) and len(head) >= 3 and len(tail) >= 3, text
            shown[tool] = text
        assert len(set(shown.values())) == len(LOOKALIKES), shown  # no two tools alike
        status = screen_lines(app)[0]
        assert "http://127.0.0.1:8765/mcp/mlflow" in status and "0 pending" in status and "0 denied" in status
        if size[0] >= 110:
            assert shown == {t: t for t in LOOKALIKES}  # room for every tool's whole name
            caller = table.cell_text(table.call_ids()[0], "caller")
            assert len(caller) >= 16 and caller.startswith("mcpguard") and caller.endswith("agent"), caller
            assert "server" not in table_lines(app)[0]  # one server: no server column


# -- themes: every one the console offers keeps four risk colors apart --------------------
OWN_THEMES = sorted(t.name for t in load_themes((files("mcpguard.themes"),))[0])
THEMES = OWN_THEMES + sorted(BUILTIN_THEMES)
ONE_PER_RISK = {"low": "get_run", "medium": "set_run_tag", "high": "set_model_alias",
                "critical": "delete_model_version"}
RISK_CALLS = [
    ("get_run", {"run_id": "r1"}, "allow", "allowed", None, 12.0, False),
    ("set_run_tag", {"run_id": "r1", "key": "k", "value": "v"}, "allow", "allowed", None, 30.0, False),
    ("set_model_alias", {"name": "m", "alias": "champion", "version": "3"}, "allow", "approved", None, 9000.0,
     False),
    ("delete_model_version", {"name": "m", "version": "3"}, "deny", "policy_denied", "tools.delete_model_version",
     0.3, True),
    ("set_run_tag", {"run_id": "r1", "key": "k", "value": "w"}, "deny", "rate_limited", "tools.set_run_tag.limits[0]",
     0.2, True),
]


def _fg(widget: Any, name: str) -> RichColor:
    """The color `name` is drawn in by `widget` (its first segment holding the name)."""
    width, height = widget.outer_size
    for strip in widget.render_lines(Region(0, 0, width, height)):
        for seg in strip:
            if name in seg.text and seg.style is not None and seg.style.color is not None:
                return seg.style.color
    raise AssertionError(f"{name} is not drawn in a color of its own")


async def test_the_theme_list_is_what_the_console_offers(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 15)):
        assert sorted(app.available_themes) == sorted(THEMES)


@pytest.mark.parametrize("theme", THEMES)
def test_every_theme_keeps_four_risk_colors_apart(snap_compare: Any, tmp_path: Path, theme: str) -> None:
    app = make_app(tmp_path, theme=theme, tools=list(ONE_PER_RISK.values()))

    async def run_before(pilot: Any) -> None:
        publish_calls(app, RISK_CALLS, counters=False)  # the gauges' wrap is not what this picture is about
        await _settle(pilot)
        assert app.theme == theme
        tree, table = app.main.query_one("#tree"), app.main.query_one("#calls")
        colors = {risk: _fg(tree, tool) for risk, tool in ONE_PER_RISK.items()}
        if app.current_theme.ansi:  # the terminal's own colors: four different ones
            assert len({c.number for c in colors.values()}) == 4, colors
        else:
            rgb = {risk: Color(*c.get_truecolor()) for risk, c in colors.items()}
            for a, b in [(a, b) for a in rgb for b in rgb if a < b]:
                assert color_distance(rgb[a], rgb[b]) >= MIN_RISK_DISTANCE, (theme, a, b, rgb[a].hex, rgb[b].hex)
        # the table draws each tool in the color the tree gives its risk (the cursor row excepted)
        lines = table_lines(app)
        assert any("delete_model_version" in line and "deny" in line for line in lines)
        for risk in ("low", "high", "critical"):
            assert _fg(table, ONE_PER_RISK[risk]) == colors[risk], risk

    assert snap_compare(app, terminal_size=(100, 15), run_before=run_before)
