"""The console's widgets: server/tool tree, call table, detail pane, gauges,
approval prompt and status bar.

Attributes down, messages up (style.md §3): the screen hands each widget its
data (`CallLog`, server views); widgets post messages (`CallTable.FollowChanged`)
and never reach into a sibling.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group
from rich.json import JSON
from rich.padding import Padding
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual._two_way_dict import TwoWayDict
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Region
from textual.containers import VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.renderables.styled import Styled
from textual.strip import Strip
from textual.widgets import DataTable, Static, Tree
from textual.widgets._data_table import default_cell_formatter
from textual.widgets.data_table import RowKey
from textual.widgets.tree import TreeNode

from mcpguard.console.keymap import bindings
from mcpguard.console.model import CallLog, CallRecord, CounterView
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


# -- call table ----------------------------------------------------------------
# (key, label, width); the tool column (width 0) takes what the others leave.
COLUMNS_WIDE = (("time", "time", 8), ("server", "server", 7), ("tool", "tool", 0),
                ("caller", "caller", 0), ("decision", "decision", 9),
                ("latency", "ms", 5), ("result", "result", 7))
COLUMNS_NARROW = (("time", "time", 8), ("tool", "tool", 0), ("decision", "decision", 9),
                  ("latency", "ms", 5), ("result", "result", 7))


class CallTable(DataTable):
    """The live call table; follows the newest call until the person scrolls or selects.

    `following` is True while the newest row is kept in view; `new_count`
    counts rows that arrived since following stopped. Posts `FollowChanged`.
    """

    BINDINGS = bindings("nav")

    following: reactive[bool] = reactive(True)
    new_count: reactive[int] = reactive(0)

    class FollowChanged(Message):
        """Following the newest call started or stopped."""

        def __init__(self, following: bool) -> None:
            super().__init__()
            self.following = following

    def __init__(self, **kw: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kw)
        self.narrow = False
        self._filter = ""
        self._columns_spec = COLUMNS_WIDE
        # Render cache per line that outlives DataTable's own caches (see _render_line):
        # `_versions` counts each row's data changes; rows removed from the top move
        # `_stripe_offset`, so a row keeps its stripe and its cached line.
        self._versions: dict[str, int] = {}
        self._lines: LRUCache[tuple, tuple[Strip, int]] = LRUCache(1024)
        self._stripe_offset = 0
        # DataTable's own caches are keyed by `_update_count`: with the line cache above
        # their old entries are never read again, so keep them small (they held up to
        # 1,000 rendered rows and 10,000 cells, a high-water mark in RSS)
        self._row_render_cache = LRUCache(64)
        self._cell_render_cache = LRUCache(64)
        self._row_renderable_cache = LRUCache(64)
        self._line_cache = LRUCache(64)

    def on_mount(self) -> None:
        self._add_columns()
        self._update_subtitle()

    def _flex_widths(self) -> dict[str, int]:
        """Widths of the flexible columns (width 0).

        The tool's name matters most: it gets room for the longest MCP tool
        names we know (`transition_model_version_stage`, 30) before the caller
        column grows past 6; the caller (also in the detail pane) takes what is
        left up to 14, and the tool any remainder.
        """
        avail = self.size.width - 1  # room for the vertical scrollbar
        spec = self._columns_spec
        fixed = sum(w for _, _, w in spec) + 2 * self.cell_padding * len(spec)
        rest = max(0, avail - fixed)
        flex = [k for k, _, w in spec if not w]
        if flex == ["tool"]:
            return {"tool": max(12, rest)}
        tool = max(12, min(30, rest - 6))
        caller = max(6, min(14, rest - tool))
        return {"tool": max(tool, rest - caller), "caller": caller}

    def _add_columns(self) -> None:
        self._fitted_width = self.size.width
        flex = self._flex_widths()
        for key, label, width in self._columns_spec:
            self.add_column(label, width=width or flex[key], key=key)

    def fit(self, narrow: bool, log: CallLog) -> None:
        """Pick the column set for the width and size the tool column to fill the rest."""
        if narrow == self.narrow and self.columns and self.size.width == getattr(self, "_fitted_width", -1):
            return
        self.narrow = narrow
        self._columns_spec = COLUMNS_NARROW if narrow else COLUMNS_WIDE
        self.clear(columns=True)
        self._add_columns()
        self.rebuild(log)

    # -- follow ---------------------------------------------------------------
    def stop_following(self) -> None:
        if self.following:
            self.following = False

    def follow(self) -> None:
        """Jump to the newest call and keep following."""
        self.new_count = 0
        self.following = True
        if self.row_count:
            self.move_cursor(row=self.row_count - 1, animate=False)
            self.scroll_end(animate=False, immediate=True)

    def watch_following(self, following: bool) -> None:
        self._update_subtitle()
        self.post_message(self.FollowChanged(following))

    def watch_new_count(self) -> None:
        self._update_subtitle()

    def _update_subtitle(self) -> None:
        if self.following:
            self.border_subtitle = "following"
        elif self.new_count:
            self.border_subtitle = f"{self.new_count} new · F follow"
        else:
            self.border_subtitle = "paused · F follow"

    def action_cursor_up(self) -> None:
        self.stop_following()
        super().action_cursor_up()

    def action_cursor_down(self) -> None:
        self.stop_following()
        super().action_cursor_down()

    def action_page_up(self) -> None:
        self.stop_following()
        super().action_page_up()

    def action_page_down(self) -> None:
        self.stop_following()
        super().action_page_down()

    def action_scroll_home(self) -> None:
        self.stop_following()
        super().action_scroll_home()

    def action_scroll_end(self) -> None:
        self.follow()

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self.stop_following()

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        self.stop_following()

    def on_click(self, event: events.Click) -> None:
        self.stop_following()

    def on_resize(self, event: events.Resize) -> None:
        """Keep the newest call in view when the table shrinks (an approval prompt
        opens below it) while following; the cursor alone does not scroll on resize."""
        if self.following and self.row_count:
            self.call_after_refresh(self.scroll_end, animate=False)

    # -- rows -----------------------------------------------------------------
    def set_filter(self, text: str, log: CallLog) -> None:
        self._filter = text.strip().lower()
        self.rebuild(log)

    def visible(self, rec: CallRecord) -> bool:
        f = self._filter
        return not f or all(part in rec.search_text() for part in f.split())

    def _cells(self, rec: CallRecord) -> list[Any]:
        """The row's cells as `Text` (never markup: a caller named `[b]x` shows as typed)."""
        risk_color = theme_color(self, f"risk-{rec.risk}") if rec.risk else ""
        label = rec.decision_label
        if rec.pending:
            decision = Text(" pending ", style=f"bold reverse {theme_color(self, 'pending')}")
        elif rec.denied or label in ("denied", "timed out"):
            decision = Text(label, style=theme_color(self, "error"))
        elif label == "approved":
            decision = Text(label, style=theme_color(self, "success"))
        else:
            decision = Text(label)
        latency = "" if rec.duration_ms is None else f"{rec.duration_ms:.0f}"
        res = rec.result_label
        res_style = {"ok": theme_color(self, "success"), "error": theme_color(self, "error"),
                     "denied": theme_color(self, "error")}.get(res, "")
        cells = {
            "time": Text(fmt_clock(rec.ts)),
            "server": Text(rec.server),
            "tool": Text(rec.tool, style=risk_color),
            "caller": Text(rec.caller),
            "decision": decision,
            "latency": Text(latency, justify="right"),
            "result": Text(res, style=res_style),
        }
        return [cells[key] for key, _, _ in self._columns_spec]

    def clear(self, columns: bool = False) -> CallTable:
        self._versions.clear()
        self._lines.clear()
        self._stripe_offset = 0
        return super().clear(columns)

    def rebuild(self, log: CallLog) -> None:
        """Redraw every row from `log` (filter or layout changed)."""
        self.clear()
        for rec in log.calls.values():
            if self.visible(rec):
                self.add_row(*self._cells(rec), key=rec.call_id)
        self._settle_dimensions()
        if self.following:
            self.follow()

    def apply(self, log: CallLog, new: list[str], changed: set[str], evicted: list[str]) -> None:
        """Apply one batch: remove evicted rows, update changed ones, append new ones.

        One pass per batch: evicted rows go together (one re-index, not one per
        row), a changed row's cells are replaced at once, and only rows that
        changed are rendered again.
        """
        if evicted:
            self._remove_rows(evicted)
        if changed:
            rows, data, versions = self.rows, self._data, self._versions
            keys = [c.key for c in self.ordered_columns]
            updated = False
            for cid in changed:
                if cid in rows:
                    data[RowKey(cid)] = dict(zip(keys, self._cells(log.calls[cid]), strict=True))
                    versions[cid] = versions.get(cid, 0) + 1
                    updated = True
            if updated:
                self._update_count += 1
                self.refresh()
        added = 0
        for cid in new:
            rec = log.calls[cid]
            if self.visible(rec) and cid not in self.rows:
                self.add_row(*self._cells(rec), key=cid)
                added += 1
        # one size per batch: at the cap as many rows leave as come, the size stays
        # and no layout of the screen follows
        self._settle_dimensions()
        if not added:
            return
        if self.following:
            self.move_cursor(row=self.row_count - 1, animate=False)
        else:
            self.new_count += added

    def _settle_dimensions(self) -> None:
        """Size the table now, not on idle: the cursor then scrolls to a new row in
        the same frame (DataTable would paint once, size on idle, paint again, scroll
        after refresh and paint a third time)."""
        if self._require_update_dimensions:
            self._require_update_dimensions = False
            self._new_rows.clear()
            self._update_dimensions(())

    def _remove_rows(self, call_ids: list[str]) -> None:
        """Remove the rows of `call_ids` (the oldest calls, at the top) in O(rows) for the
        whole batch; `DataTable.remove_row` re-indexes every row for each one. A paused
        cursor stays on its call and the view on its rows."""
        drop = [RowKey(cid) for cid in call_ids if cid in self.rows]
        if not drop:
            return
        locations = self._row_locations
        cursor = self.cursor_coordinate
        gone = set(drop)
        above = sum(1 for k in drop if locations.get(k) < cursor.row)
        cursor_gone = locations.get_key(cursor.row) in gone if self.row_count else False
        keep = [k for k in (locations.get_key(i) for i in range(self.row_count)) if k not in gone]
        self._row_locations = TwoWayDict({k: i for i, k in enumerate(keep)})
        for k in drop:
            del self.rows[k]
            del self._data[k]
            self._new_rows.discard(k)
            self._versions.pop(k.value, None)
        if self._updated_cells:
            self._updated_cells = {c for c in self._updated_cells if c.row_key not in gone}
        self._stripe_offset += len(drop)
        self._update_count += 1
        self._require_update_dimensions = True  # settled by `apply` once per batch
        moved = cursor._replace(row=max(0, cursor.row - above))
        if cursor_gone or not self.row_count:
            self.cursor_coordinate = moved  # a new call is under the cursor: say so
        else:
            self.set_reactive(DataTable.cursor_coordinate, moved)  # the same call, one index up
        if not self.following and above:
            self.scroll_y = max(0, self.scroll_y - above)
        self.refresh()

    def selected_call_id(self) -> str | None:
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:
            return None
        return key.value

    # -- rendering (DataTable internals; textual 8) ----------------------------
    def _update_dimensions(self, new_rows: Any) -> None:
        # every column has a fixed width and every row one line: nothing to measure
        super()._update_dimensions(())

    def _get_row_style(self, row_index: int, base_style: Style) -> Style:
        if row_index >= 0:
            row_index += self._stripe_offset
        return super()._get_row_style(row_index, base_style)

    def _render_line(self, y: int, x1: int, x2: int, base_style: Style) -> Strip:
        # DataTable caches lines by `_update_count`: one new row re-rendered every
        # visible line. Here a line is rendered again only when its row's data, stripe,
        # cursor or hover state, the crop or the style changed; a row that only moved
        # (new rows below, old ones gone above) gets its mouse index re-stamped.
        width = self.size.width
        try:
            row_key, line_no = self._get_offsets(y)
        except LookupError:
            return Strip.blank(width, base_style)
        row_index = self._row_locations.get(row_key)
        if row_index is None:  # the header
            return super()._render_line(y, x1, x2, base_style)
        cursor_row = self.cursor_coordinate.row
        hover_row = self.hover_coordinate.row if self._show_hover_cursor else -2
        key = (row_key, line_no, self._versions.get(row_key.value, 0), (row_index + self._stripe_offset) % 2,
               cursor_row == row_index, hover_row == row_index, x1, x2, width, base_style, self.cursor_type,
               self.show_cursor, self._pseudo_class_state)
        hit = self._lines.get(key)
        if hit is None:
            strip = super()._render_line(y, x1, x2, base_style)
        else:
            strip, was = hit
            if was == row_index:
                return strip
            strip = _restamp_row(strip, was, row_index)
        self._lines[key] = (strip, row_index)
        return strip

    def _render_cell(self, row_index: int, column_index: int, base_style: Style, width: int,
                     cursor: bool = False, hover: bool = False) -> list[list[Segment]]:
        if row_index < 0 or column_index < 0:  # header and labels: DataTable's own path
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        row_key = self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        cell = self._data[row_key].get(column_key)
        component_style, post_style = self._get_styles_to_render_cell(
            False, False, False, hover, cursor, self.show_cursor, self._show_hover_cursor,
            self.cursor_foreground_priority == "css", self.cursor_background_priority == "css")
        renderable = Text("") if cell is None else (
            cell if isinstance(cell, Text) else default_cell_formatter(cell, wrap=False, height=1))
        pre_style = base_style + Style.from_meta({"row": row_index, "column": column_index}) + component_style
        if type(renderable) is Text and not renderable.overflow and not renderable.no_wrap \
                and "\n" not in renderable.plain and "\t" not in renderable.plain:
            return [_text_cell(self.app.console, renderable, width, self.cell_padding, pre_style, post_style)]
        options = self.app.console_options.update_dimensions(width, 1).update(no_wrap=True)
        return self.app.console.render_lines(
            Styled(Padding(renderable, (0, self.cell_padding)), pre_style=pre_style, post_style=post_style),
            options)


def _text_cell(console: Any, text: Text, width: int, padding: int, pre: Style, post: Style | None) -> list[Segment]:
    """One line of a one-line `Text` cell, as DataTable renders it (Styled(Padding(text)),
    no wrap, crop) without Rich's generic render pipeline: about 4x cheaper."""
    inner = max(0, width - 2 * padding)
    line = text.copy()
    line.end = ""
    if text.justify == "right":
        line.rstrip()
        line.truncate(inner, overflow="fold")
        line.pad_left(inner - line.cell_len)
    elif text.justify in ("left", "center", "full"):
        return console.render_lines(Styled(Padding(text, (0, padding)), pre_style=pre, post_style=post),
                                    console.options.update_dimensions(width, 1).update(no_wrap=True))[0]
    line.truncate(inner, overflow="fold")
    null = Style.null()
    segments = []
    if padding:
        segments.append(Segment(" " * padding, null))
    segments.extend(Text("\n").join([line]).render(console, end=""))
    fill = inner - line.cell_len
    if fill > 0:
        segments.append(Segment(" " * fill, null))
    if padding:
        segments.append(Segment(" " * padding, null))
    return list(Segment.apply_style(segments, style=pre, post_style=post))


def _restamp_row(strip: Strip, old: int, new: int) -> Strip:
    """`strip` with the mouse metadata `row: old` changed to `row: new`."""
    segments = []
    for seg in strip:
        style = seg.style
        if style is not None and style._meta:
            meta = style.meta
            if meta.get("row") == old:
                meta["row"] = new
                seg = Segment(seg.text, style + Style.from_meta(meta), seg.control)
        segments.append(seg)
    return Strip(segments, strip.cell_length)


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
               id(rec.arguments), self.app.theme)
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
            dec.append(f"  by {rec.approved_by}", style="dim")
        if rec.retry_after_s:
            dec.append(f"  retry after {rec.retry_after_s:.1f}s")
        if rec.duration_ms is not None:
            dec.append(f"  {rec.duration_ms:.0f} ms", style="dim")
        lines.append(dec)
        if rec.message:
            lines.append(Text(rec.message, style="italic"))
        lines.append(Text("arguments", style="bold underline"))
        lines.append(_json(rec.arguments))
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

    Warning color at 80% of `max`, error color at 100%.
    """
    ratio = view.ratio
    color = colors["error"] if ratio >= 1 else colors["warning"] if ratio >= 0.8 else colors["ok"]
    head = Text(no_wrap=True, overflow="ellipsis")
    head.append(view.counter, style="bold")
    head.append(f" {view.scope}:{view.scope_key}", style="dim")
    head.truncate(width, overflow="ellipsis")
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append_text(head)
    t.append("\n")
    tail = f" {view.count}/{view.max}{fmt_window(view.window_s)}"
    frees = view.frees_in(now)
    if frees > 0 and ratio >= 1:
        tail += f" frees {fmt_duration(frees)}"
    bar_w = max(4, width - len(tail))
    filled = min(bar_w, round(bar_w * min(1.0, ratio)))
    t.append("█" * filled, style=color)
    t.append("░" * (bar_w - filled), style="dim")
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
class ApprovalPrompt(Static):
    """The current pending approval of the queue ("1 of 3") with a countdown.

    It holds no state beyond which approval is current (`current_id`); the
    owner calls `show(pending, now)` each second and on every change.
    """

    current_id: str | None = None

    def show(self, pending: list[Any], now: float) -> None:
        """`pending` are `ApprovalRequested` events, oldest first."""
        if not pending:
            self.current_id = None
            self.update("")
            self.border_title = ""
            return
        ids = [p.approval_id for p in pending]
        if self.current_id not in ids:
            self.current_id = ids[0]
        idx = ids.index(self.current_id)
        p = pending[idx]
        left = max(0.0, p.deadline - now)
        self.border_title = f"approval {idx + 1} of {len(pending)}"
        self.border_subtitle = f"denied in {fmt_duration(left)}"
        risk_color = theme_color(self, f"risk-{p.risk}") if p.risk else ""
        width = max(20, self.content_region.width or 80)

        def line() -> Text:
            return Text(no_wrap=True, overflow="ellipsis", end="")

        head = line()
        head.append(p.tool, style=f"bold {risk_color}")
        head.append(f" on {p.server}", style="dim")
        if p.risk:
            head.append("  risk ", style="dim")
            head.append(p.risk, style=f"bold {risk_color}")
        who = line()
        who.append("caller ", style="dim")
        who.append(p.client or p.grant)
        if p.session_id:
            who.append("  session ", style="dim")
            who.append(p.session_id[:12])
        why = line()
        why.append(p.reason or "the policy asks a person for this tool", style="italic")
        args = line()
        args.append("args ", style="dim")
        args.append(json.dumps(p.arguments, ensure_ascii=False, default=str))
        keys = line()
        keys.append(" a ", style="bold reverse")
        keys.append(" approve ")
        keys.append(" d ", style="bold reverse")
        keys.append(" deny ")
        keys.append(" A ", style="bold reverse")
        keys.append(" approve for session")
        if len(pending) > 1:
            keys.append("  ")
            keys.append(" ] ", style="bold reverse")
            keys.append(" next")
        for part in (head, who, why, args, keys):
            part.truncate(width, overflow="ellipsis")
        t = Text("\n").join([head, who, why, args, keys])
        t.no_wrap, t.overflow = True, "ellipsis"
        self.update(t)

    def step(self, pending: list[Any], delta: int) -> None:
        ids = [p.approval_id for p in pending]
        if not ids:
            return
        idx = ids.index(self.current_id) if self.current_id in ids else 0
        self.current_id = ids[(idx + delta) % len(ids)]


# -- status bar ----------------------------------------------------------------
class StatusBar(Static):
    """Listen URL, policy file and its state, calls per minute, denied, pending."""

    def show(self, *, url: str, policy: str, policy_error: str | None, calls_per_min: int,
             denied: int, pending: int, dropped: int = 0) -> None:
        t = Text(no_wrap=True, overflow="ellipsis")
        if (self.size.width or 120) >= 100:
            t.append(" mcpguard ", style="bold reverse")
        else:
            url = url.removeprefix("http://")
        t.append(f" {url} ", style="bold")
        t.append("│ ", style="dim")
        t.append(f"{policy} ")
        if policy_error:
            # keep the counts and pending in view: the error's line comes first, the rest may go
            room = max(16, (self.size.width or 120) - 58)
            err = policy_error if len(policy_error) <= room else policy_error[: room - 1] + "…"
            t.append(f"✗ {err} ", style=f"bold {theme_color(self, 'error')}")
        else:
            t.append("ok ", style=theme_color(self, "success"))
        t.append("│ ", style="dim")
        t.append(f"{calls_per_min}/min ")
        t.append("│ ", style="dim")
        t.append(f"{denied} denied ", style=theme_color(self, "error") if denied else "")
        t.append("│ ", style="dim")
        if pending:
            t.append(f" {pending} pending ", style=f"bold reverse {theme_color(self, 'pending')}")
        else:
            t.append("0 pending")
        if dropped:
            t.append(f" │ {dropped} events dropped", style=theme_color(self, "warning"))
        if t == getattr(self, "_shown", None):
            return
        self._shown = t
        self.update(t, layout=False)  # one line, its height never changes
