"""The sessions pane (`S`): every agent session the gateway holds, and the session approvals.

Top: one row per session (server, client name, grant, MCP era, age, calls,
refusals, session approvals). Bottom: the session approvals of the selected
session with their time left. `r` revokes the selected session approval (or,
with the top table focused, all of that session's), `x` ends the selected
session (after a `y` to confirm: its agent must open a new one), escape goes
back. It redraws from the gateway's snapshot each second.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.screen import ModalScreen, Screen
from textual.containers import Vertical
from textual.widgets import DataTable, Footer, Label, Static

from mcpguard.console.keymap import bindings
from mcpguard.console.widgets import fmt_duration
from mcpguard.control import ControlError

if TYPE_CHECKING:
    from mcpguard.console.app import ConsoleApp

REFRESH_S = 1.0


def era(protocol_version: str) -> str:
    """`2026-07-28 stateless` or `2025-11-25 handshake`; MCP versions are dates, so they sort."""
    if not protocol_version:
        return "?"
    return f"{protocol_version} {'stateless' if protocol_version >= '2026-07-28' else 'handshake'}"


class SessionsScreen(Screen[None]):
    """Agent sessions and their session approvals, from `App.snap`."""

    KEY_CONTEXTS = ("sessions",)
    BINDINGS = bindings("sessions")
    app: ConsoleApp

    def compose(self) -> ComposeResult:
        yield Static(id="sessions-title")
        yield DataTable(id="sessions", cursor_type="row", zebra_stripes=True)
        yield Static(id="grants-title")
        yield DataTable(id="grants", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        t = self.query_one("#sessions", DataTable)
        for key, label in (("server", "server"), ("client", "client"), ("approvals", "approved for session"),
                           ("calls", "calls"), ("refused", "refused"), ("age", "open for"), ("era", "MCP"),
                           ("grant", "grant"), ("session", "session id")):
            t.add_column(label, key=key)
        g = self.query_one("#grants", DataTable)
        for key, label in (("tool", "tool"), ("by", "approved by"), ("left", "time left")):
            g.add_column(label, key=key)
        self._redraw()
        self.set_interval(REFRESH_S, self._tick)
        t.focus()

    def _tick(self) -> None:
        self.app._snapshot_soon()
        self._redraw()

    # -- data ------------------------------------------------------------------------
    def _sessions(self) -> list[Any]:
        snap = self.app.snap
        return sorted(snap.sessions, key=lambda s: (s.server, s.opened_at)) if snap is not None else []

    def _approvals_of(self, server: str, session_id: str) -> list[Any]:
        snap = self.app.snap
        if snap is None:
            return []
        now = time.time()
        return [a for a in snap.session_approvals
                if a.server == server and a.session_id == session_id and a.expires_at > now]

    def selected_session(self) -> Any | None:
        t = self.query_one("#sessions", DataTable)
        if not t.row_count:
            return None
        try:
            key = t.coordinate_to_cell_key(t.cursor_coordinate).row_key.value
        except Exception:
            return None
        return next((s for s in self._sessions() if f"{s.server}\0{s.session_id}" == key), None)

    def selected_approval(self) -> Any | None:
        s = self.selected_session()
        g = self.query_one("#grants", DataTable)
        if s is None or not g.row_count:
            return None
        tools = self._approvals_of(s.server, s.session_id)
        row = g.cursor_coordinate.row
        return tools[row] if 0 <= row < len(tools) else None

    # -- drawing ---------------------------------------------------------------------
    def _redraw(self) -> None:
        now = time.time()
        sessions = self._sessions()
        t = self.query_one("#sessions", DataTable)
        keep = self.selected_session()
        t.clear()
        for s in sessions:
            approvals = self._approvals_of(s.server, s.session_id)
            t.add_row(s.server, s.client or "-", ", ".join(a.tool for a in approvals) or "-", str(s.calls),
                      str(s.refused), fmt_duration(now - s.opened_at), era(s.protocol_version), s.grant, s.session_id,
                      key=f"{s.server}\0{s.session_id}")
        if keep is not None:
            with contextlib.suppress(Exception):  # that session closed meanwhile
                t.move_cursor(row=t.get_row_index(f"{keep.server}\0{keep.session_id}"), animate=False)
        title = Text()
        title.append(" sessions ", style="bold reverse")
        title.append(f"  {len(sessions)} open · r revoke approvals · x end session · esc back", style="dim")
        self.query_one("#sessions-title", Static).update(title)
        self._redraw_approvals()

    def _redraw_approvals(self) -> None:
        now = time.time()
        g = self.query_one("#grants", DataTable)
        row = g.cursor_coordinate.row
        g.clear()
        s = self.selected_session()
        approvals = self._approvals_of(s.server, s.session_id) if s is not None else []
        for a in approvals:
            g.add_row(a.tool, a.by, fmt_duration(a.expires_at - now))
        if approvals:
            g.move_cursor(row=min(row, len(approvals) - 1), animate=False)
        head = Text(" session approvals ", style="bold reverse")
        if s is not None:
            head.append(f"  of {s.client or s.grant} on {s.server}: calls of these tools go through without asking",
                        style="dim")
        self.query_one("#grants-title", Static).update(head)

    @on(DataTable.RowHighlighted, "#sessions")
    def _session_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._redraw_approvals()

    # -- commands --------------------------------------------------------------------
    def action_revoke(self) -> None:
        s = self.selected_session()
        if s is None:
            return
        grants = self.query_one("#grants", DataTable)
        one = self.selected_approval() if grants.has_focus else None
        targets = [one] if one is not None else self._approvals_of(s.server, s.session_id)
        if not targets:
            self.notify("this session has no session approvals", severity="warning")
            return
        self.run_worker(self._revoke(targets), group="sessions")

    async def _revoke(self, targets: list[Any]) -> None:
        for a in targets:
            try:
                await self.app.control.revoke(a.server, a.session_id, a.tool, by=self.app.by)
            except ControlError as exc:
                self.notify(exc.message, severity="warning")
                return
        self.notify(f"revoked: {', '.join(a.tool for a in targets)}; the next call asks a person again")
        await self.app.fetch_snapshot()
        self._redraw()

    def action_end_session(self) -> None:
        s = self.selected_session()
        if s is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._end(s), group="sessions")

        self.app.push_screen(ConfirmEndScreen(s), answered)

    async def _end(self, s: Any) -> None:
        try:
            await self.app.control.end_session(s.server, s.session_id, by=self.app.by)
        except ControlError as exc:
            self.notify(exc.message, severity="warning")
            return
        self.notify(f"ended {s.client or s.grant}'s session on {s.server}")
        await self.app.fetch_snapshot()
        self._redraw()

    def action_close(self) -> None:
        self.dismiss(None)


class ConfirmEndScreen(ModalScreen[bool]):
    """`x`: y ends the session (its session approvals go; the agent must open a new one), n keeps it."""

    BINDINGS = bindings("confirm")

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session

    def compose(self) -> ComposeResult:
        s = self.session
        with Vertical(id="confirm-dialog"):
            yield Label(Text.assemble("End the session of ", (s.client or s.grant, "bold"), f" on {s.server}?\n",
                                      ("Its session approvals go with it; the agent must open a new session.", "dim")))
            yield Footer(compact=True)

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
