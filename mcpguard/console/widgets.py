"""The console's widgets: server/tool tree, detail pane, gauges and status
bar (the call table is `mcpguard.console.calltable`, the approval prompt
`mcpguard.console.approving`).

Attributes down, messages up: the screen hands each widget its data (call
records, server views); widgets post messages (`GaugePanel.Selected`) and
never reach into a sibling.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group
from rich.json import JSON
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Region
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Static, Tree
from textual.widgets.tree import TreeNode

from mcpguard.console.keymap import bindings
from mcpguard.console.model import CallRecord, CounterView
from mcpguard.console.themes import theme_color

RISK_LEVELS = ("low", "medium", "high", "critical")
STATE_GLYPH = {"allowed": "✓", "limited": "≤", "approval": "?", "denied": "✗", "hidden": "-"}
STATE_WORD = {"allowed": "allowed", "limited": "limited", "approval": "needs approval",
              "denied": "denied", "hidden": "hidden"}


def fmt_clock(ts: float) -> str:
    """Epoch seconds as local `HH:MM:SS`."""
    return time.strftime("%H:%M:%S", time.localtime(ts))


def fmt_duration(seconds: float) -> str:
    """`45s`, `1m05s`, `2h03m`: a compact, non-negative duration."""
    s = max(0, int(seconds + 0.999))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def fmt_window(window_s: float) -> str:
    return {1: "/s", 60: "/min", 3600: "/h", 86400: "/day"}.get(int(window_s), f"/{fmt_duration(window_s)}")


# -- tree ----------------------------------------------------------------------
@dataclass(slots=True)
class ToolView:
    """One tool in the tree: its risk level and policy state."""

    name: str
    risk: str = "medium"
    risk_kind: str = ""
    state: str = "allowed"   # allowed | limited | approval | denied | hidden
    changed: bool = False


@dataclass(slots=True)
class ServerView:
    """One upstream in the tree."""

    name: str
    state: str = "starting"
    tools: list[ToolView] = field(default_factory=list)
    policy_path: str = ""
    policy_error: str | None = None


class ServerTree(Tree[dict]):
    """Servers and their tools, colored by risk, each with its policy state."""

    BINDINGS = bindings("nav")

    def __init__(self, **kw: Any) -> None:
        super().__init__("servers", **kw)
        self.show_root = False
        self.guide_depth = 2
        self._servers: list[ServerView] = []
        self._filter = ""

    def set_servers(self, servers: list[ServerView]) -> None:
        self._servers = servers
        self._rebuild()

    def set_filter(self, text: str) -> None:
        self._filter = text.strip().lower()
        self._rebuild()

    def _matches(self, server: ServerView, tool: ToolView) -> bool:
        f = self._filter
        if not f:
            return True
        hay = f"{server.name} {tool.name} {tool.risk} {tool.state} {STATE_WORD[tool.state]}".lower()
        return all(part in hay for part in f.split())

    def _server_label(self, s: ServerView) -> Text:
        color = {"up": "success", "starting": "warning", "restarting": "warning",
                 "down": "error"}.get(s.state, "warning")
        label = Text.assemble((s.name, "bold"), "  ", (s.state, theme_color(self, color)))
        if any(t.changed for t in s.tools):
            label.append("  tools changed", style=theme_color(self, "warning"))
        if s.policy_error:
            label.append("  policy error", style=theme_color(self, "error"))
        return label

    def _tool_label(self, t: ToolView) -> Text:
        color = theme_color(self, f"risk-{t.risk}")
        label = Text.assemble((STATE_GLYPH.get(t.state, "?") + " ", color), (t.name, color))
        if t.state == "hidden":
            label.stylize("dim strike")
        if t.changed:
            label.append(" !", style=theme_color(self, "warning"))
        return label

    def _rebuild(self) -> None:
        expanded = {n.data["server"] for n in self.root.children
                    if n.data and not n.data.get("tool") and not n.is_expanded} if self.root.children else set()
        cursor = self.cursor_node.data if self.cursor_node is not None else None
        self.clear()
        target: TreeNode | None = None
        for s in self._servers:
            tools = [t for t in s.tools if self._matches(s, t)]
            node = self.root.add(self._server_label(s), data={"server": s.name},
                                 expand=s.name not in expanded)
            for t in tools:
                leaf = node.add_leaf(self._tool_label(t), data={"server": s.name, "tool": t.name})
                if cursor and cursor.get("tool") == t.name and cursor.get("server") == s.name:
                    target = leaf
            if cursor and not cursor.get("tool") and cursor.get("server") == s.name:
                target = node
        if target is not None:
            # a node learns its line when the tree lines are built; build them now so
            # the cursor stays on the same tool through a refresh (a tune key, a reload)
            self._tree_lines  # noqa: B018
            self.move_cursor(target, animate=False)

    def tool_view(self, server: str, tool: str) -> ToolView | None:
        for s in self._servers:
            if s.name == server:
                return next((t for t in s.tools if t.name == tool), None)
        return None

    def server_view(self, server: str) -> ServerView | None:
        return next((s for s in self._servers if s.name == server), None)


# -- detail pane -------------------------------------------------------------
def _json(data: Any) -> JSON | Text:
    try:
        return JSON(json.dumps(data, ensure_ascii=False, default=str), indent=2)
    except Exception:
        return Text(repr(data))


class DetailPane(VerticalScroll):
    """The selected call (arguments and result as highlighted JSON, decision and rule),
    or the selected tool's policy, or how to connect an agent."""

    can_focus = True

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._body = Static(id="detail-body")
        self._showing: tuple | None = None

    def compose(self):  # type: ignore[override]
        yield self._body

    def show_text(self, text: Text | str) -> None:
        self._showing = None
        self.border_title = "details"
        self._body.update(text)

    def show_call(self, rec: CallRecord) -> None:
        """Show `rec`; nothing is redrawn when it is the call shown and unchanged."""
        sig = (rec.call_id, rec.decision_label, rec.result_label, rec.code, rec.rule, rec.outcome,
               rec.message, rec.approved_by, rec.duration_ms, rec.risk, id(rec.result), rec.error,
               id(rec.arguments), id(rec.forwarded_arguments), rec.deny_reason, rec.would, self.app.theme)
        if sig == self._showing:
            return
        self._showing = sig
        self.border_title = f"call {rec.call_id}"
        head = Text()
        head.append(f"{rec.server} / ", style="dim")
        head.append(rec.tool, style=f"bold {theme_color(self, f'risk-{rec.risk}') if rec.risk else ''}")
        head.append(f"   {fmt_clock(rec.ts)}   caller {rec.caller or '-'}", style="dim")
        if rec.risk:
            head.append(f"   risk {rec.risk}")
        lines = [head]
        dec = Text("decision ", style="dim")
        dec.append(rec.decision_label, style="bold")
        if rec.code and rec.code != rec.decision_label:
            dec.append(f" ({rec.code})")
        if rec.rule:
            dec.append("  rule ", style="dim")
            dec.append(rec.rule)
        if rec.outcome and rec.outcome not in (rec.code, rec.decision_label):
            dec.append("  outcome ", style="dim")
            dec.append(rec.outcome)
        if rec.approved_by:
            how = "approved for this session by" if rec.approval_outcome == "session" else "by"
            dec.append(f"  {how} {rec.approved_by}", style="dim")
        if rec.retry_after_s:
            dec.append(f"  retry after {rec.retry_after_s:.1f}s")
        if rec.duration_ms is not None:
            dec.append(f"  {rec.duration_ms:.0f} ms", style="dim")
        lines.append(dec)
        if rec.would:
            shadow = Text("shadow ", style=f"bold {theme_color(self, 'warning')}")
            shadow.append(rec.would.replace("_", " "))
            if rec.would_code:
                shadow.append(f" ({rec.would_code})")
            if rec.would_rule:
                shadow.append(f"  rule {rec.would_rule}", style="dim")
            if rec.would_message:
                shadow.append(f"\n{rec.would_message}", style="italic")
            shadow.append("\nit went through: a shadow rule decides without enforcing", style="dim")
            lines.append(shadow)
        if rec.deny_reason:
            lines.append(Text(f"reason given: {rec.deny_reason}", style="italic"))
        elif rec.message:
            lines.append(Text(rec.message, style="italic"))
        lines.append(Text("arguments", style="bold underline"))
        lines.append(_json(rec.arguments))
        if rec.forwarded_arguments is not None:
            lines.append(Text("arguments sent upstream (edited by a person)", style="bold underline"))
            lines.append(_json(rec.forwarded_arguments))
        if rec.error:
            lines.append(Text("error", style="bold underline"))
            lines.append(Text(rec.error, style=theme_color(self, "error")))
        if rec.result is not None:
            lines.append(Text("result" + ("  (isError)" if rec.is_error else ""), style="bold underline"))
            lines.append(_json(rec.result))
        self._body.update(Group(*lines))


# -- gauges --------------------------------------------------------------------
def render_gauge(view: CounterView, now: float, width: int, colors: dict[str, str]) -> Text:
    """Two lines: `counter  scope_key` and a bar `█████░░ 24/30 /min  frees 12s`.

    Warning color at 80% of `max`, error color at 100%. A shadow limit's
    counter (it never refuses) is drawn as such: `shadow` in its head, a
    hatched bar `▒▒▒···`, never the error color, and `would limit` when full.
    """
    ratio = view.ratio
    if view.shadow:
        color = colors["warning"] if ratio >= 0.8 else colors["ok"]
    else:
        color = colors["error"] if ratio >= 1 else colors["warning"] if ratio >= 0.8 else colors["ok"]
    head = Text(no_wrap=True, overflow="ellipsis")
    head.append(view.counter, style="bold")
    if view.shadow:
        head.append(" shadow", style="italic")
    head.append(f" {view.scope}:{view.scope_key}", style="dim")
    head.truncate(width, overflow="ellipsis")
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append_text(head)
    t.append("\n")
    tail = f" {view.count}/{view.max}{fmt_window(view.window_s)}"
    frees = view.frees_in(now)
    if view.shadow and ratio >= 1:
        tail += " would limit"
    elif frees > 0 and ratio >= 1:
        tail += f" frees {fmt_duration(frees)}"
    bar_w = max(4, width - len(tail))
    filled = min(bar_w, round(bar_w * min(1.0, ratio)))
    full, empty = ("▒", "·") if view.shadow else ("█", "░")
    t.append(full * filled, style=color)
    t.append(empty * (bar_w - filled), style="dim")
    t.append(tail, style=color if ratio >= 0.8 else "")
    return t


class GaugePanel(VerticalScroll):
    """One gauge per live counter: name, scope key, count of max, window, time until a slot frees.

    Focusable: up/down (j/k) or a click select a gauge, so the tune keys
    (`+`/`-`) know which counter they change; the selected gauge is marked
    while the panel has focus. Posts `Selected` when the selection moves.
    """

    can_focus = True
    BINDINGS = bindings("nav") + [
        Binding("up", "cursor_up", "Up", show=False),
        Binding("down", "cursor_down", "Down", show=False),
    ]

    class Selected(Message):
        """The selected gauge changed (`counter` is None when there is none)."""

        def __init__(self, server: str | None, counter: str | None) -> None:
            super().__init__()
            self.server = server
            self.counter = counter

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._body = Static(id="gauges-body")
        self._views: list[CounterView] = []
        self._selected: tuple[str, str, str] | None = None
        self._now = 0.0
        self._shown: Text | None = None
        self._shown_n = -1

    def compose(self):  # type: ignore[override]
        yield self._body

    @property
    def selected(self) -> CounterView | None:
        """The selected gauge's counter, or None when there are no live counters."""
        if not self._views:
            return None
        return next((v for v in self._views if v.key == self._selected), self._views[0])

    def show(self, counters: list[CounterView], now: float) -> None:
        self._views = sorted(counters, key=lambda c: (c.server, c.counter, c.scope_key))
        self._now = now
        self._render_gauges()

    def _render_gauges(self) -> None:
        if not self._views:
            self._set_body(Text("no live counters", style="dim"), 0)
            return
        colors = {"ok": theme_color(self, "gauge-ok"), "warning": theme_color(self, "warning"),
                  "error": theme_color(self, "error")}
        width = max(12, self.scrollable_content_region.width or 30)
        sel = self.selected if self.has_focus else None
        parts = []
        for c in self._views:
            g = render_gauge(c, self._now, width, colors)
            if sel is not None and c.key == sel.key:
                g.stylize("reverse", 0, len(g.plain.split("\n", 1)[0]))
            parts.append(g)
        self._set_body(Text("\n").join(parts), len(parts))

    def _set_body(self, text: Text, n: int) -> None:
        """Update the body only when its text changed; lay out only when its height did."""
        if text == self._shown:
            return
        self._body.update(text, layout=n != self._shown_n)
        self._shown, self._shown_n = text, n

    def _move(self, delta: int) -> None:
        if not self._views:
            return
        cur = self.selected
        idx = self._views.index(cur) if cur in self._views else 0
        idx = max(0, min(len(self._views) - 1, idx + delta))
        self._select(idx)

    def _select(self, idx: int) -> None:
        v = self._views[idx]
        self._selected = v.key
        self._render_gauges()
        self.scroll_to_region(Region(0, 2 * idx, 1, 2), animate=False)
        self.post_message(self.Selected(v.server, v.counter))

    def action_cursor_down(self) -> None:
        self._move(+1)

    def action_cursor_up(self) -> None:
        self._move(-1)

    def action_scroll_home(self) -> None:
        if self._views:
            self._select(0)

    def action_scroll_end(self) -> None:
        if self._views:
            self._select(len(self._views) - 1)

    def on_click(self, event: events.Click) -> None:
        y = event.screen_y - self.content_region.y + int(self.scroll_y)
        if self._views and 0 <= y // 2 < len(self._views):
            self._select(y // 2)

    def on_focus(self) -> None:
        self._render_gauges()
        if self._views:
            v = self.selected
            self.post_message(self.Selected(v.server, v.counter))

    def on_blur(self) -> None:
        self._render_gauges()


# -- approval prompt -----------------------------------------------------------
# -- status bar ----------------------------------------------------------------
class StatusBar(Static):
    """Pending, denied, calls per minute, the link to the gateway, listen URL, policy file and its state.

    What a person must always see comes first and is never cut: pending
    approvals, denials, the rate, and a lost link to the gateway; the URL is
    shown whole when it fits; a policy error gets the room that is left.
    """

    def show(self, *, url: str, policy: str, policy_error: str | None, calls_per_min: int,
             denied: int, pending: int, dropped: int = 0, link: str | None = None) -> None:
        width = self.size.width or 120
        t = Text(no_wrap=True, overflow="ellipsis")
        if width >= 100:
            t.append(" mcpguard ", style="bold reverse")
            t.append(" ")
        if pending:
            t.append(f" {pending} pending ", style=f"bold reverse {theme_color(self, 'pending')}")
        else:
            t.append("0 pending")
        t.append(" │ ", style="dim")
        t.append(f"{denied} denied", style=theme_color(self, "error") if denied else "")
        t.append(" │ ", style="dim")
        t.append(f"{calls_per_min}/min")
        if link:
            t.append(" │ ", style="dim")
            t.append(f" {link} ", style=f"bold reverse {theme_color(self, 'error')}")
        if dropped:
            t.append(f" │ {dropped} events dropped", style=theme_color(self, "warning"))
        t.append(" │ ", style="dim")
        if t.cell_len + len(url) + 3 <= width or width >= 100:
            t.append(url, style="bold")
            if policy:
                t.append(" │ ", style="dim")
        if not policy:  # not started yet: nothing to say about a policy
            pass
        elif policy_error:
            t.append(f"{policy} ")
            room = max(12, width - t.cell_len - 3)
            err = policy_error if len(policy_error) <= room else policy_error[: room - 1] + "…"
            t.append(f"✗ {err}", style=f"bold {theme_color(self, 'error')}")
        else:
            t.append(f"{policy} ")
            t.append("ok", style=theme_color(self, "success"))
        if t == getattr(self, "_shown", None):
            return
        self._shown = t
        self.update(t, layout=False)  # one line, its height never changes
