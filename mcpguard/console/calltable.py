"""The live call table: one line per `tools/call`, the newest last, drawn on Textual's Line API.

`CallTable` is a `ScrollView` that draws each line itself (`render_line`
returns a `Strip`): a fixed header line, then the rows in view. Nothing in it
reaches into Textual's private parts, so a Textual upgrade that keeps its
public API keeps the table.

What it shows comes from the screen (attributes down): `rebuild(model)`,
`apply(model, new, changed, evicted)` per batch of events, `set_filter`,
`fit`, `select_call`. What it says goes up as messages:
`CallTable.Highlighted(call_id)` when the call under the cursor changes,
`CallTable.Selected(call_id)` when a click lands on the row already under
the cursor, `CallTable.FollowChanged` when following starts or stops.

Following: while `following` the newest row is in view and under the
cursor, whatever the panes around the table do to its height (the view is
anchored at the bottom when it is drawn, not only when a resize event
arrives); a key, a click or the wheel stops it, then new rows are counted
("N new"); `follow()` (`F`, `G`, `end`) takes it up again.

Speed: a line is rendered once per (row data version, stripe, cursor,
hover, column layout, styles) and kept in an LRU cache, so a new row at the
bottom re-renders one line, not the screen; rows evicted from the top leave
in O(evicted) and keep their stripe.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from mcpguard.console.keymap import bindings
from mcpguard.console.model import CallLog, CallRecord
from mcpguard.console.themes import theme_color

ELLIPSIS = "…"
LEAD = 1  # blank cells at the left edge of every line
SEP = 1  # blank cells between two columns
TOOL_MIN = 8  # below this a tool name is no longer readable, folded or not
CALLER_MIN = 6  # a caller column narrower than this is dropped (the detail pane shows the caller)
SERVER_MAX = 14


@dataclass(frozen=True, slots=True)
class Column:
    """One column as drawn: `key` (`time server tool caller decision latency result`), header `label`,
    `width` in terminal cells, `right` when its values are right-aligned."""

    key: str
    label: str
    width: int
    right: bool = False


#: The columns whose width never changes: (key, label, width, right-aligned).
FIXED_COLUMNS = {
    "time": ("time", 8, False),       # HH:MM:SS
    "decision": ("decision", 9, False),  # "timed out", "no policy", " pending "
    "latency": ("ms", 5, True),       # up to 9999 ms, then "12.3s", "123s", "17m"
    "result": ("result", 7, False),   # "waiting"
}
ORDER = ("time", "server", "tool", "caller", "decision", "latency", "result")


def plan_columns(width: int, *, narrow: bool, servers: int, server_need: int, tool_need: int,
                 caller_need: int) -> tuple[Column, ...]:
    """The columns for a table `width` cells wide (the line, without the scrollbar).

    The server column is there only with more than one server (`servers`),
    `server_need` wide (at most `SERVER_MAX`). The tool column gets what the
    longest name needs (`tool_need`) first; the caller (not when `narrow`)
    gets what is left, at least `CALLER_MIN`, or the column is dropped and
    the tool takes the room. Leftover room goes to the caller, else the tool.
    Needs are in cells and at least the header's label.
    """
    fixed = sum(w for _, w, _ in FIXED_COLUMNS.values())
    keys = ["time", "tool", "decision", "latency", "result"]
    room = width - LEAD - fixed - SEP * (len(keys) - 1)
    widths: dict[str, int] = {}
    if servers > 1:
        server_w = max(len("server"), min(server_need, SERVER_MAX))
        server_w = max(4, min(server_w, room - SEP - TOOL_MIN))
        widths["server"] = server_w
        room -= server_w + SEP
    tool_w = max(len("tool"), min(tool_need, room))
    if not narrow and room - tool_w - SEP >= CALLER_MIN:
        widths["caller"] = room - tool_w - SEP
    else:
        tool_w = room
    widths["tool"] = max(TOOL_MIN, tool_w)
    labels = {"server": "server", "tool": "tool", "caller": "caller"}
    cols = []
    for key in ORDER:
        if key in FIXED_COLUMNS:
            label, w, right = FIXED_COLUMNS[key]
            cols.append(Column(key, label, w, right))
        elif key in widths:
            cols.append(Column(key, labels[key], widths[key]))
    return tuple(cols)


# -- folding names ------------------------------------------------------------------
def _head(text: str, cells: int) -> str:
    """The longest start of `text` at most `cells` wide."""
    if text.isascii():
        return text[:cells]
    out, used = [], 0
    for ch in text:
        w = cell_len(ch)
        if used + w > cells:
            break
        out.append(ch)
        used += w
    return "".join(out)


def _tail(text: str, cells: int) -> str:
    """The longest end of `text` at most `cells` wide."""
    if cells <= 0:
        return ""
    if text.isascii():
        return text[-cells:]
    return _head(text[::-1], cells)[::-1]


def fold(text: str, width: int, head: int | None = None) -> str:
    """`text` in at most `width` cells: whole when it fits, else its start and end around `…`.

    `head` is how many cells of the start to keep (default: half, rounded up);
    the end gets the rest. `get_model_versions` in 12 cells is `get_mo…sions`.
    """
    if cell_len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    room = width - 1
    h = (room + 1) // 2 if head is None else max(0, min(room, head))
    return _head(text, h) + ELLIPSIS + _tail(text, room - h)


def _fold_candidates(text: str, width: int) -> Iterator[str]:
    """The ways to show `text` in `width` cells, best first: the middle folded at the balanced
    split, then splits further from it (more head, more tail), then the start and end with a
    window of the middle between two `…` (so two names that differ only mid-way still differ),
    then a fold marked `#2`, `#3`, ... (never exhausted: every name gets one of its own)."""
    room = width - 1
    mid = (room + 1) // 2
    for d in itertools.chain([0], itertools.chain.from_iterable((d, -d) for d in range(1, room + 1))):
        h = mid + d
        if 1 <= h <= room - 1 or (room <= 1 and h == room):
            yield fold(text, width, h)
    if width >= 5 and text.isascii():
        inner = width - 2
        for h in range(1, inner):
            t = max(1, (inner - h) // 2)
            m = inner - h - t
            if m < 1:
                continue
            for start in range(h, len(text) - t - m + 1):
                yield text[:h] + ELLIPSIS + text[start:start + m] + ELLIPSIS + text[len(text) - t:]
    for k in itertools.count(2):
        mark = f"#{k}"
        yield fold(text, max(1, width - len(mark))) + mark


def distinct_folds(names: set[str] | frozenset[str], width: int, taken: dict[str, str] | None = None) -> dict[str, str]:
    """How each of `names` shows in `width` cells, no two alike: name -> shown text.

    A name that fits shows whole; a longer one takes the first of its folds
    (`_fold_candidates`) that no other name shows. `taken` (name -> shown) are
    folds already on screen, kept as they are; the new names fold around them.
    Deterministic: names are folded in sorted order.
    """
    out = dict(taken or {})
    used = set(out.values())
    fresh = [n for n in names if n not in out]
    for n in fresh:
        if cell_len(n) <= width:
            out[n] = n
            used.add(n)
    for n in sorted(x for x in fresh if x not in out):
        out[n] = next(c for c in _fold_candidates(n, width) if c not in used)
        used.add(out[n])
    return out


def _printable(text: str) -> str:
    """`text` with every character a terminal would act on (controls, escapes) shown as `?`."""
    return text if text.isprintable() else "".join(ch if ch.isprintable() else "?" for ch in text)


def fmt_latency(ms: float | None) -> str:
    """A call's duration in at most 5 cells: `41`, `9999`, `12.3s`, `123s`, `17m`, `3h`; '' when unknown."""
    if ms is None:
        return ""
    if ms < 9999.5:
        return f"{ms:.0f}"
    s = ms / 1000
    if s < 99.95:
        return f"{s:.1f}s"
    if s < 999.5:
        return f"{s:.0f}s"
    if s < 60 * 999.5:
        return f"{s / 60:.0f}m"
    return f"{min(s / 3600, 9999):.0f}h"


def _fit(text: str, width: int, right: bool = False) -> str:
    """`text` padded (or cut) to exactly `width` cells."""
    n = cell_len(text)
    if n > width:
        text = _head(text, width)
        n = cell_len(text)
    pad = " " * (width - n)
    return pad + text if right else text + pad


# -- the widget -----------------------------------------------------------------------
class CallTable(ScrollView, can_focus=True):
    """The live call table; follows the newest call until the person moves, then counts new ones.

    `following` is True while the newest row is kept in view and under the
    cursor; `new_count` counts rows that arrived since following stopped; the
    border subtitle says which (`following`, `3 new · F follow`, `paused · F follow`).
    Posts `Highlighted`, `Selected` and `FollowChanged`. Keys: `nav` of the key table
    (`j k g G`) and arrows, page up/down, home/end.
    """

    BINDINGS = bindings("nav") + [
        Binding("up", "cursor_up", "Up", show=False),
        Binding("down", "cursor_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home,ctrl+home", "scroll_home", "First", show=False),
        Binding("end,ctrl+end", "scroll_end", "Last", show=False),
    ]

    COMPONENT_CLASSES = {"calltable--header", "calltable--cursor", "calltable--even-row", "calltable--hover"}

    DEFAULT_CSS = """
    CallTable {
        min-height: 4;  /* with its border: the header and the newest row, whatever else takes room */
        background: $surface;
        color: $foreground;
        overflow-x: hidden;
        overflow-y: auto;
        scrollbar-gutter: stable;
        scrollbar-size-vertical: 1;
        &:focus {
            background-tint: $foreground 5%;
            & > .calltable--cursor {
                background: $block-cursor-background;
                color: $block-cursor-foreground;
                text-style: $block-cursor-text-style;
            }
            & > .calltable--header { background-tint: $foreground 5%; }
        }
        &:dark > .calltable--even-row { background: $surface-darken-1 40%; }
        & > .calltable--header { text-style: bold; background: $panel; color: $foreground; }
        &:ansi > .calltable--header { background: ansi_bright_blue; color: ansi_default; }
        & > .calltable--even-row { background: $surface-lighten-1 50%; }
        & > .calltable--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        & > .calltable--hover { background: $block-hover-background; }
    }
    """

    following: reactive[bool] = reactive(True)
    new_count: reactive[int] = reactive(0)

    class FollowChanged(Message):
        """Following the newest call started or stopped (`following`)."""

        def __init__(self, table: CallTable, following: bool) -> None:
            super().__init__()
            self.table = table
            self.following = following

        @property
        def control(self) -> CallTable:
            return self.table

    class Selected(Message):
        """The person chose `call_id`'s row: a click on the row already under the cursor."""

        def __init__(self, table: CallTable, call_id: str) -> None:
            super().__init__()
            self.table = table
            self.call_id = call_id

        @property
        def control(self) -> CallTable:
            return self.table

    class Highlighted(Message):
        """The call under the cursor is now `call_id` (a row moved under it, or it moved).

        `arrived`: the cursor went to a new call because the table follows and it came in
        (nobody moved it)."""

        def __init__(self, table: CallTable, call_id: str, arrived: bool = False) -> None:
            super().__init__()
            self.table = table
            self.call_id = call_id
            self.arrived = arrived

        @property
        def control(self) -> CallTable:
            return self.table

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.narrow = False
        self._model: CallLog | None = None
        self._filter = ""
        # rows: call ids in order; the first `_head` entries have left (evicted), so
        # removing from the top costs O(removed); `_pos` maps a call id to its index in `_rows`
        self._rows: list[str] = []
        self._head = 0
        self._pos: dict[str, int] = {}
        self._removed = 0  # rows gone from the top since the last rebuild: a row keeps its stripe
        self._versions: dict[str, int] = {}
        self._cursor = 0
        self._hover = -1
        self._highlighted: str | None = None
        self._arriving = False  # set while a followed table moves its cursor to a call that came in
        # the column layout and the folds it needs
        self._columns: tuple[Column, ...] = ()
        self._fitted: tuple = ()
        self._tools_seen: set[str] = set()
        self._callers_seen: set[str] = set()
        self._servers_seen: set[str] = set()
        self._tool_folds: dict[str, str] = {}
        self._caller_folds: dict[str, str] = {}
        self._layout_gen = 0
        # styles: the theme's cell colors and the component styles of this frame
        self._palette: dict[str, Style] = {}
        self._palette_key: object = None
        self._palette_gen = 0
        self._frame_key: object = None
        self._frame: dict[str, Style] = {}
        self._styles_gen = 0
        self._lines: LRUCache[tuple, Strip] = LRUCache(1024)
        self._frame_top = 0

    # -- what the screen reads --------------------------------------------------------
    @property
    def row_count(self) -> int:
        """Rows in the table (calls kept that pass the filter)."""
        return len(self._rows) - self._head

    @property
    def cursor_row(self) -> int:
        """The row under the cursor, 0 = the oldest shown (0 when the table is empty)."""
        return self._cursor

    @property
    def columns(self) -> tuple[Column, ...]:
        """The columns as drawn now."""
        return self._columns

    def call_ids(self) -> list[str]:
        """The call ids of the rows, oldest first."""
        return self._rows[self._head:]

    def selected_call_id(self) -> str | None:
        """The call under the cursor, or None when the table is empty."""
        return self._rows[self._head + self._cursor] if self.row_count else None

    def select_call(self, call_id: str) -> bool:
        """Put the cursor on `call_id`'s row (in view) and stop following; False when it has no row
        (filtered out or evicted)."""
        i = self._pos.get(call_id)
        if i is None:
            return False
        self.stop_following()
        self._move_cursor(i - self._head)
        return True

    def cell_text(self, call_id: str, key: str) -> str:
        """What the row of `call_id` shows in column `key` (`tool`, `decision`, ...), without padding.

        Raises KeyError when the call has no row or the column is not shown.
        """
        if call_id not in self._pos or self._model is None:
            raise KeyError(call_id)
        cells = dict(zip((c.key for c in self._columns), self._cells(self._model.calls[call_id]), strict=True))
        return cells[key][0].strip()

    def visible(self, rec: CallRecord) -> bool:
        """True when `rec` passes the filter (every word of it is in `rec.search_text()`)."""
        f = self._filter
        return not f or all(part in rec.search_text() for part in f.split())

    # -- rows ---------------------------------------------------------------------------
    def set_filter(self, text: str, model: CallLog) -> None:
        """Show only the calls whose search text has every word of `text`; redraws from `model`."""
        self._filter = text.strip().lower()
        self.rebuild(model)

    def rebuild(self, model: CallLog) -> None:
        """Redraw every row from `model` (the filter, the layout or the theme changed).

        The cursor stays on its call when that call is still shown; a followed
        table follows on.
        """
        self._model = model
        keep = self.selected_call_id()
        self._rows = [cid for cid, rec in model.calls.items() if self.visible(rec)]
        self._head = 0
        self._pos = {cid: i for i, cid in enumerate(self._rows)}
        self._removed = 0
        self._versions.clear()
        self._lines.clear()
        self._palette_key = None  # the theme may have changed: read its colors again
        self._hover = -1
        self._relayout(model, force=True)
        self._update_virtual_size()
        if self.following:
            self.follow()
        else:
            row = self._pos.get(keep, self._cursor) if keep is not None else self._cursor
            self._move_cursor(row)
        self.refresh()

    def apply(self, model: CallLog, new: list[str], changed: set[str], evicted: list[str]) -> None:
        """One batch from `CallLog.apply`: rows of `evicted` calls leave, `changed` ones are drawn
        again, `new` ones (that pass the filter) are appended. Work is O(batch), not O(rows)."""
        self._model = model
        moved = False
        if evicted:
            moved = self._remove(evicted)
        calls = model.calls
        if changed:
            top, shown = self._top(), self._body_height()
            for cid in changed:
                i = self._pos.get(cid)
                if i is None:
                    continue
                self._versions[cid] = self._versions.get(cid, 0) + 1
                row = i - self._head
                if not moved and top <= row < top + shown:
                    self.refresh(Region(0, 1 + row - top, self.size.width, 1))
        added = 0
        for cid in new:
            rec = calls.get(cid)
            if rec is None or cid in self._pos or not self.visible(rec):
                continue
            self._pos[cid] = len(self._rows)
            self._rows.append(cid)
            self._note_names(rec)
            added += 1
        # names seen since the last full scan are kept to size the columns; a stream of
        # ever new names (an agent calling made-up tools) must not grow them without end
        known = sum(map(len, model.tools.values()))
        rescan = len(self._tools_seen) + len(self._callers_seen) > 2 * self.row_count + known + 256
        relaid = self._relayout(model, force=rescan)
        if not (added or moved or relaid):
            return
        self._update_virtual_size()
        if self.following:
            self._arriving = True
            try:
                self._move_cursor(self.row_count - 1, scroll=False)
            finally:
                self._arriving = False
            self._pin_bottom()
        elif added:
            self.new_count += added
        self.refresh()

    def _remove(self, call_ids: list[str]) -> bool:
        """Drop the rows of `call_ids` (the oldest calls: the top rows); True when any was shown.

        A paused view stays on the same rows and the cursor on its call; when the
        cursor's own call left, the call now under it is highlighted.
        """
        gone = [cid for cid in call_ids if cid in self._pos]
        if not gone:
            return False
        at_top = all(self._pos[cid] - self._head < len(gone) for cid in gone)
        cursor_call = self.selected_call_id()
        if at_top:
            for cid in gone:
                del self._pos[cid]
                self._versions.pop(cid, None)
            self._head += len(gone)
            if self._head > 1024 and self._head * 2 > len(self._rows):  # compact now and then
                self._rows = self._rows[self._head:]
                self._head = 0
                self._pos = {cid: i for i, cid in enumerate(self._rows)}
        else:  # not the top rows (a model that evicts otherwise): rebuild the index
            drop = set(gone)
            self._rows = [cid for cid in self._rows[self._head:] if cid not in drop]
            self._head = 0
            self._pos = {cid: i for i, cid in enumerate(self._rows)}
            for cid in gone:
                self._versions.pop(cid, None)
        self._removed += len(gone)
        if not self.following:
            self.scroll_to(y=max(0, self.scroll_y - len(gone)), animate=False)
        if cursor_call in self._pos:
            self._cursor = self._pos[cursor_call] - self._head
        else:
            self._move_cursor(min(self._cursor, max(0, self.row_count - 1)), scroll=False)
        self._cursor = max(0, min(self._cursor, self.row_count - 1))
        self._announce()
        return True

    # -- layout ---------------------------------------------------------------------------
    def fit(self, narrow: bool, model: CallLog) -> None:
        """Pick the columns for the table's width (`narrow`: no caller column) and redraw from `model`."""
        self._model = model
        if narrow != self.narrow:
            self.narrow = narrow
            self._fitted = ()
        if self._relayout(model):
            self.refresh()

    def _content_width(self) -> int:
        return self.scrollable_content_region.width

    def _note_names(self, rec: CallRecord) -> None:
        self._tools_seen.add(_printable(rec.tool))
        self._servers_seen.add(_printable(rec.server))
        if rec.caller:
            self._callers_seen.add(_printable(rec.caller))

    def _relayout(self, model: CallLog, force: bool = False) -> bool:
        """Size the columns and fold the names for the width and the names known; True when it changed.

        Tool names come from every server's `tools/list` and the rows; callers
        from the rows (names as drawn: `_printable`). Only a change in width,
        servers or the longest name lays the columns out again; a name seen for
        the first time is folded around the folds already shown.
        """
        if force or not self._fitted:
            self._tools_seen = {_printable(t) for names in model.tools.values() for t in names}
            self._servers_seen = {_printable(s) for s in model.tools}
            self._callers_seen = set()
            for cid in self._rows[self._head:]:
                self._note_names(model.calls[cid])
            force = True
        elif self._fitted[-1] != model.tools_version:
            self._tools_seen.update(_printable(t) for names in model.tools.values() for t in names)
            self._servers_seen.update(_printable(s) for s in model.tools)
        width = self._content_width()
        tools, callers = self._tools_seen, self._callers_seen
        tool_need = max(map(cell_len, tools), default=0)
        caller_need = max(map(cell_len, callers), default=0)
        server_need = max(map(cell_len, self._servers_seen), default=0)
        key = (width, self.narrow, len(self._servers_seen), server_need, tool_need, caller_need, model.tools_version)
        if not force and key[:-1] == self._fitted[:-1]:
            self._fitted = key
            if len(self._tool_folds) != len(tools) or len(self._caller_folds) != len(callers):
                # names seen for the first time, no longer than the longest: fold them around the
                # folds on screen, which stay as they are (their new rows are new lines)
                widths = {c.key: c.width for c in self._columns}
                self._tool_folds = distinct_folds(tools, widths.get("tool", 0), self._tool_folds)
                self._caller_folds = distinct_folds(callers, widths.get("caller", 0), self._caller_folds)
            return False
        self._fitted = key
        self._columns = plan_columns(width, narrow=self.narrow, servers=len(self._servers_seen),
                                     server_need=server_need, tool_need=tool_need, caller_need=caller_need)
        widths = {c.key: c.width for c in self._columns}
        self._tool_folds = distinct_folds(tools, widths.get("tool", 0))
        self._caller_folds = distinct_folds(callers, widths.get("caller", 0))
        self._layout_gen += 1
        self._update_virtual_size()
        return True

    def _update_virtual_size(self) -> None:
        size = Size(self._content_width(), self.row_count + 1)  # + the header line
        if self.virtual_size != size:
            self.virtual_size = size

    def on_resize(self, event: events.Resize) -> None:
        """A new width lays the columns out again; a followed table keeps its newest row in view."""
        if self._model is not None and self._relayout(self._model):
            self.refresh()
        if self.following:
            self._pin_bottom()

    # -- follow -------------------------------------------------------------------------
    def _body_height(self) -> int:
        """Rows that fit under the header."""
        return max(0, self.scrollable_content_region.height - 1)

    def _top(self) -> int:
        """The row drawn first under the header: the last page when following, else where scrolled to."""
        n, shown = self.row_count, self._body_height()
        if self.following:
            return max(0, n - shown)
        return max(0, min(int(self.scroll_y), max(0, n - shown)))

    def _pin_bottom(self) -> None:
        """Put the scroll position (and so the scrollbar) where a followed table is drawn."""
        target = max(0, self.row_count - self._body_height())
        if int(self.scroll_y) != target:
            self.scroll_to(y=target, animate=False, force=True)

    def stop_following(self) -> None:
        """Stop following; the view stays where it is drawn now."""
        if self.following:
            self.scroll_to(y=self._top(), animate=False, force=True)
            self.following = False

    def follow(self) -> None:
        """Jump to the newest call and keep following."""
        self.new_count = 0
        self.following = True
        if self.row_count:
            self._move_cursor(self.row_count - 1, scroll=False)
        self._pin_bottom()
        self.refresh()

    def watch_following(self, following: bool) -> None:
        self._update_subtitle()
        self.post_message(self.FollowChanged(self, following))

    def watch_new_count(self) -> None:
        self._update_subtitle()

    def on_mount(self) -> None:
        self._update_subtitle()

    def _update_subtitle(self) -> None:
        if self.following:
            self.border_subtitle = "following"
        elif self.new_count:
            self.border_subtitle = f"{self.new_count} new · F follow"
        else:
            self.border_subtitle = "paused · F follow"

    # -- cursor -------------------------------------------------------------------------
    def _announce(self) -> None:
        """Post `Highlighted` when the call under the cursor is another than last said."""
        cid = self.selected_call_id()
        if cid is not None and cid != self._highlighted:
            self._highlighted = cid
            self.post_message(self.Highlighted(self, cid, arrived=self._arriving))

    def _move_cursor(self, row: int, scroll: bool = True) -> None:
        row = max(0, min(row, self.row_count - 1)) if self.row_count else 0
        if row != self._cursor:
            self._refresh_row(self._cursor)
            self._cursor = row
            self._refresh_row(row)
        if scroll:
            self._scroll_to_row(row)
        self._announce()

    def _refresh_row(self, row: int) -> None:
        y = 1 + row - self._top()
        if 1 <= y <= self._body_height():
            self.refresh(Region(0, y, self.size.width, 1))

    def _scroll_to_row(self, row: int) -> None:
        top, shown = self._top(), self._body_height()
        if row < top:
            self.scroll_to(y=row, animate=False, force=True)
        elif shown and row >= top + shown:
            self.scroll_to(y=row - shown + 1, animate=False, force=True)

    def _moved_by_person(self) -> None:
        self.stop_following()
        if self._hover >= 0:
            self._refresh_row(self._hover)
            self._hover = -1

    def action_cursor_up(self) -> None:
        self._moved_by_person()
        self._move_cursor(self._cursor - 1)

    def action_cursor_down(self) -> None:
        self._moved_by_person()
        self._move_cursor(self._cursor + 1)

    def action_page_up(self) -> None:
        self._moved_by_person()
        self._move_cursor(self._cursor - max(1, self._body_height() - 1))

    def action_page_down(self) -> None:
        self._moved_by_person()
        self._move_cursor(self._cursor + max(1, self._body_height() - 1))

    def action_scroll_home(self) -> None:
        """The first (oldest) row."""
        self._moved_by_person()
        self._move_cursor(0)

    def action_scroll_end(self) -> None:
        """The newest row, and follow."""
        self.follow()

    # -- mouse ----------------------------------------------------------------------------
    def _row_at(self, event: events.MouseEvent) -> int | None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y < 1:
            return None
        row = self._top() + offset.y - 1
        return row if row < self.row_count else None

    def on_click(self, event: events.Click) -> None:
        """A click on a row puts the cursor on it (and stops following); a click on the row under
        the cursor selects it (`Selected`)."""
        row = self._row_at(event)
        if row is None:
            return
        again = row == self._cursor and self.row_count > 0
        self.stop_following()
        self._move_cursor(row)
        if again:
            self.post_message(self.Selected(self, self._rows[self._head + row]))

    def on_mouse_move(self, event: events.MouseMove) -> None:
        row = self._row_at(event)
        row = -1 if row is None else row
        if row != self._hover:
            self._refresh_row(self._hover)
            self._hover = row
            self._refresh_row(row)

    def on_leave(self, event: events.Leave) -> None:
        if self._hover >= 0:
            self._refresh_row(self._hover)
            self._hover = -1

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        if self.max_scroll_y > 0:
            self.stop_following()

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        if self.max_scroll_y > 0:
            self.stop_following()

    def on_scroll_to(self, message: Message) -> None:
        """The scrollbar was dragged: the person scrolls."""
        self.stop_following()

    def on_scroll_up(self, message: Message) -> None:
        self.stop_following()

    def on_scroll_down(self, message: Message) -> None:
        self.stop_following()

    # -- drawing --------------------------------------------------------------------------
    def _fg(self, name: str, extra: str = "") -> Style:
        color = theme_color(self, name)
        return Style.parse(f"{extra} {color}".strip()) if (color or extra) else Style.null()

    def _cell_styles(self) -> dict[str, Style]:
        """The cells' colors from the current theme (read again when the theme changes)."""
        key = self.app.theme
        if key != self._palette_key:
            self._palette_key = key
            self._palette = {
                **{f"risk-{r}": self._fg(f"risk-{r}") for r in ("low", "medium", "high", "critical")},
                "pending": self._fg("pending", "bold reverse"),
                "error": self._fg("error"),
                "success": self._fg("success"),
                "": Style.null(),
            }
            self._palette_gen += 1
        return self._palette

    def render_lines(self, crop: Region) -> list[Strip]:
        """Take this frame's styles (focus, theme) once, then draw the lines (`render_line`)."""
        self._cell_styles()
        key = (self.get_pseudo_class_state(), self.app.theme, self._palette_gen)
        if key != self._frame_key:
            self._frame_key = key
            base = self.rich_style
            self._frame = {
                "base": base,
                "header": base + self.get_component_rich_style("calltable--header"),
                "even": base + self.get_component_rich_style("calltable--even-row"),
                "cursor": self.get_component_rich_style("calltable--cursor"),
                "hover": self.get_component_rich_style("calltable--hover"),
            }
            self._styles_gen += 1
        self._frame_top = self._top()  # one scroll position for every line of this frame
        return super().render_lines(crop)

    def _cells(self, rec: CallRecord) -> list[tuple[str, str]]:
        """The row's cells as (text exactly the column's width, palette key)."""
        out = []
        for col in self._columns:
            key = col.key
            style = ""
            if key == "time":
                text = time.strftime("%H:%M:%S", time.localtime(rec.ts))
            elif key == "server":
                text = fold(_printable(rec.server), col.width)
            elif key == "tool":
                name = _printable(rec.tool)
                text = self._tool_folds.get(name) or fold(name, col.width)
                style = f"risk-{rec.risk}" if rec.risk else ""
            elif key == "caller":
                name = _printable(rec.caller)
                text = self._caller_folds.get(name) or fold(name, col.width)
            elif key == "decision":
                label = rec.decision_label
                if rec.pending:
                    text, style = " pending ", "pending"
                else:
                    text = label
                    if rec.denied or label in ("denied", "timed out"):
                        style = "error"
                    elif label == "approved":
                        style = "success"
            elif key == "latency":
                text = fmt_latency(rec.duration_ms)
            else:
                text = rec.result_label
                style = {"ok": "success", "error": "error", "denied": "error"}.get(text, "")
            out.append((_fit(text, col.width, col.right), style))
        return out

    def _draw(self, cells: list[tuple[str, Style]], width: int, row_style: Style, post: Style | None) -> Strip:
        segments = [Segment(" " * LEAD)]
        used = LEAD
        for i, (text, style) in enumerate(cells):
            if i:
                segments.append(Segment(" " * SEP))
                used += SEP
            segments.append(Segment(text, style))
            used += cell_len(text) if not text.isascii() else len(text)
        if used < width:
            segments.append(Segment(" " * (width - used)))
        strip = Strip(Segment.apply_style(segments, row_style, post), max(used, width))
        return strip.crop(0, width) if used > width else strip

    def render_line(self, y: int) -> Strip:
        """Line `y` of the view: 0 the header, then the rows from the top one drawn (`_top`)."""
        width = self.size.width
        frame = self._frame or {"base": self.rich_style, "header": self.rich_style, "even": self.rich_style,
                                "cursor": Style.null(), "hover": Style.null()}
        if y == 0:
            key = ("header", self._layout_gen, self._styles_gen, width)
            strip = self._lines.get(key)
            if strip is None:
                cells = [(_fit(c.label, c.width, c.right), Style.null()) for c in self._columns]
                strip = self._draw(cells, width, frame["header"], None)
                self._lines[key] = strip
            return strip
        row = self._frame_top + y - 1
        if row >= self.row_count or self._model is None:
            return Strip.blank(width, frame["base"])
        cid = self._rows[self._head + row]
        stripe = (self._removed + row) & 1
        cursor = row == self._cursor
        hover = row == self._hover
        key = (cid, self._versions.get(cid, 0), stripe, cursor, hover, self._layout_gen, self._styles_gen, width)
        strip = self._lines.get(key)
        if strip is None:
            rec = self._model.calls.get(cid)
            if rec is None:
                return Strip.blank(width, frame["base"])
            palette = self._palette
            cells = [(text, palette.get(style, Style.null())) for text, style in self._cells(rec)]
            row_style = frame["even"] if stripe == 0 else frame["base"]
            post = None
            if hover:
                row_style = row_style + frame["hover"]
            if cursor:
                row_style = row_style + frame["cursor"]
                # the cursor's text color wins over the cells' own, as in Textual's DataTable
                post = Style.from_color(frame["cursor"].color) if frame["cursor"].color else None
            strip = self._draw(cells, width, row_style, post)
            self._lines[key] = strip
        return strip
