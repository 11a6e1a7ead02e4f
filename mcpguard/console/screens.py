"""The console's screens: main, policy editor, approval queue dialog, help, quit confirm."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.reactive import reactive
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Input, Label, Static, TextArea, Tree

from mcpguard.console.approving import ApprovalActions, ApprovalPrompt
from mcpguard.console.calltable import CallTable
from mcpguard.console.keymap import CONTEXT_TITLES, KEYS, bindings
from mcpguard.console.widgets import (
    STATE_WORD, DetailPane, GaugePanel, ServerTree, StatusBar,
    fmt_window, theme_color,
)

if TYPE_CHECKING:
    from mcpguard.console.app import ConsoleApp


class MainScreen(ApprovalActions, Screen):
    """Tree, live call table, detail, gauges, approval prompt and status bar.

    While approvals are pending the prompt takes the detail pane's place, so
    the call a person reads is the call a key answers; choosing a pending row
    in the table makes it the prompt's call.
    """

    KEY_CONTEXTS = ("main", "approval", "tune")
    BINDINGS = bindings("approval", "main", "tune")
    app: ConsoleApp

    #: while the table follows new calls, the detail pane shows the newest at most this often
    #: (seconds): under load it would otherwise be laid out again for every batch, most of the
    #: console's cost, and nobody reads a pane that changes ten times a second
    DETAIL_FOLLOW_S = 0.5
    _detail_at = 0.0
    _detail_next: str | None = None
    _detail_timer: Any = None

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        with Horizontal(id="body"):
            with Vertical(id="left"):
                yield ServerTree(id="tree")
                yield GaugePanel(id="gauges")
            with Vertical(id="right"):
                yield Input(placeholder="filter: tool, server, decision or risk words", id="filter")
                yield CallTable(id="calls")
                yield ApprovalPrompt(id="approval")
                yield DetailPane(id="detail")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#tree", ServerTree).border_title = "servers"
        self.query_one("#gauges", GaugePanel).border_title = "counters"
        self.query_one("#calls", CallTable).border_title = "calls"
        self.query_one("#filter", Input).display = False
        self.query_one("#approval", ApprovalPrompt).display = False
        self.query_one("#calls", CallTable).focus()
        self.app.refresh_views()
        self._layout_for(self.size.width)

    def on_resize(self, event: Any) -> None:
        self._layout_for(event.size.width)

    def _layout_for(self, width: int) -> None:
        narrow = width < 110
        self.set_class(narrow, "-narrow")
        self.call_after_refresh(self._fit_table, narrow)

    def _fit_table(self, narrow: bool) -> None:
        table = self.query_one("#calls", CallTable)
        if table.size.width:
            table.fit(narrow, self.app.model)

    # -- data from the app -----------------------------------------------------
    def apply_batch(self, new: list[str], changed: set[str], evicted: list[str]) -> None:
        table = self.query_one("#calls", CallTable)
        table.apply(self.app.model, new, changed, evicted)
        sel = table.selected_call_id()
        if sel is not None and (sel in changed or sel in new) and table.has_focus:
            self._show_call(sel, following=table.following)  # a change the person did not make

    def refresh_pending(self) -> None:
        prompt = self.query_one("#approval", ApprovalPrompt)
        pending = list(self.app.model.pending.values())
        was = prompt.display
        prompt.display = bool(pending)
        self.query_one("#detail", DetailPane).display = not pending
        prompt.show(pending, self.app.clock())
        if was != prompt.display:
            self.refresh_bindings()
            if not pending:  # back to the detail of the selected row
                sel = self.query_one("#calls", CallTable).selected_call_id()
                if sel is not None:
                    self._show_call(sel)

    def prompt(self) -> ApprovalPrompt:
        return self.query_one("#approval", ApprovalPrompt)

    def _stepped(self) -> None:
        """`]`/`[`: the table's cursor goes to the prompt's call too."""
        self.app.refresh_pending()
        p = self.prompt().current(self._pending())
        if p is not None:
            self.query_one("#calls", CallTable).select_call(p.call_id)

    def refresh_status(self) -> None:
        self.query_one("#status", StatusBar).show(**self.app.status_fields())

    def refresh_tree(self) -> None:
        self.query_one("#tree", ServerTree).set_servers(self.app.server_views())

    def refresh_gauges(self) -> None:
        self.query_one("#gauges", GaugePanel).show(list(self.app.model.counters.values()), self.app.clock())

    def show_welcome(self) -> None:
        detail = self.query_one("#detail", DetailPane)
        detail.show_text(self.app.welcome_text())

    # -- selection ----------------------------------------------------------------
    def _show_call(self, call_id: str, *, following: bool = False) -> None:
        """Show `call_id` in the detail pane: at once for a person's choice; while the table
        follows new calls, at once if the pane has not changed for `DETAIL_FOLLOW_S`, else then."""
        if following:
            self._detail_next = call_id
            if self._detail_timer is not None:
                return
            wait = self._detail_at + self.DETAIL_FOLLOW_S - time.monotonic()
            if wait > 0:
                self._detail_timer = self.set_timer(wait, self._detail_due)
                return
        elif self._detail_timer is not None:
            self._detail_timer.stop()
            self._detail_timer = None
        self._detail_next = None
        self._detail_at = time.monotonic()
        rec = self.app.model.calls.get(call_id)
        if rec is not None:
            self.query_one("#detail", DetailPane).show_call(rec)

    def _detail_due(self) -> None:
        self._detail_timer = None
        if self._detail_next is not None:
            self._show_call(self._detail_next, following=True)

    @on(CallTable.Highlighted, "#calls")
    def _row_highlighted(self, event: CallTable.Highlighted) -> None:
        table = self.query_one("#calls", CallTable)
        self._show_call(event.call_id, following=event.arrived)
        rec = self.app.model.calls.get(event.call_id)
        # the person's choice, never the cursor following new rows: a call arriving must not
        # take the prompt from under a key about to be pressed
        if rec is not None and rec.pending and rec.approval_id and table.has_focus and not table.following:
            prompt = self.prompt()
            if prompt.current_id != rec.approval_id:
                prompt.select(rec.approval_id)
                self.app.refresh_pending()

    @on(CallTable.Selected, "#calls")
    def _row_selected(self, event: CallTable.Selected) -> None:
        self.app.open_call(event.call_id)

    def action_open_call(self) -> None:
        sel = self.query_one("#calls", CallTable).selected_call_id()
        if sel is not None:
            self.app.open_call(sel)

    def action_sessions(self) -> None:
        self.app.open_sessions()

    @on(Tree.NodeHighlighted, "#tree")
    def _node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        tree = self.query_one("#tree", ServerTree)
        self.refresh_bindings()
        if not tree.has_focus or not event.node.data:
            return
        data = event.node.data
        detail = self.query_one("#detail", DetailPane)
        if data.get("tool"):
            detail.show_text(self.app.tool_text(data["server"], data["tool"]))
        else:
            detail.show_text(self.app.server_text(data["server"]))

    # -- filter ---------------------------------------------------------------------
    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        if box.value or box.display:
            box.value = ""
            box.display = False
            self._apply_filter("")
            self.query_one("#calls", CallTable).focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self._apply_filter(event.value)

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        if not event.value:
            self.query_one("#filter", Input).display = False
        self.query_one("#calls", CallTable).focus()

    def _apply_filter(self, text: str) -> None:
        table = self.query_one("#calls", CallTable)
        table.set_filter(text, self.app.model)
        self.query_one("#tree", ServerTree).set_filter(text)
        table.border_title = f"calls · filter: {text}" if text else "calls"

    # -- follow ---------------------------------------------------------------------
    def action_follow(self) -> None:
        table = self.query_one("#calls", CallTable)
        table.follow()
        table.focus()

    # -- tune the policy (issue 5) --------------------------------------------------
    MAX_ACTIONS = {"max_up": 1, "max_down": -1, "max_up_ten": 10, "max_down_ten": -10}

    def _selected_tool(self) -> tuple[str, str] | None:
        """(server, tool) of the tree's cursor when the tree has focus."""
        tree = self.query_one("#tree", ServerTree)
        node = tree.cursor_node
        if tree.has_focus and node is not None and node.data and node.data.get("tool"):
            return node.data["server"], node.data["tool"]
        return None

    def _selected_counter(self) -> tuple[str, str] | None:
        """(server, counter) of the selected gauge when the gauge panel has focus."""
        gauges = self.query_one("#gauges", GaugePanel)
        v = gauges.selected if gauges.has_focus else None
        return (v.server, v.counter) if v is not None else None

    @on(GaugePanel.Selected)
    def _gauge_selected(self, event: GaugePanel.Selected) -> None:
        self.refresh_bindings()

    def on_descendant_focus(self, event: Any) -> None:
        self.refresh_bindings()

    def _change_max(self, delta: int) -> None:
        counter = self._selected_counter()
        if counter is not None:
            server, name = counter
            self.app.tune(server, counter=name, max_delta=delta)
            return
        tool = self._selected_tool()
        if tool is not None:
            server, name = tool
            self.app.tune(server, tool=name, max_delta=delta)

    def action_max_up(self) -> None:
        self._change_max(1)

    def action_max_down(self) -> None:
        self._change_max(-1)

    def action_max_up_ten(self) -> None:
        self._change_max(10)

    def action_max_down_ten(self) -> None:
        self._change_max(-10)

    def action_cycle_action(self) -> None:
        sel = self._selected_tool()
        if sel is not None:
            self.app.tune(sel[0], tool=sel[1], action="cycle")

    def action_toggle_hidden(self) -> None:
        sel = self._selected_tool()
        if sel is not None:
            self.app.tune(sel[0], tool=sel[1])

    def action_undo(self) -> None:
        self.app.undo_edit()

    # -- approvals ----------------------------------------------------------------
    APPROVAL_ACTIONS = ("approve", "deny", "deny_reason", "approve_session", "next_approval", "prev_approval",
                        "unfold")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.APPROVAL_ACTIONS:
            return bool(self.app.model.pending)
        if action in ("edit_arguments", "edit_policy"):  # one key: the call's arguments, else the policy
            policy_focus = self.query_one("#tree", ServerTree).has_focus or self.query_one("#gauges", GaugePanel).has_focus
            edits_arguments = bool(self.app.model.pending) and not policy_focus
            return edits_arguments if action == "edit_arguments" else not edits_arguments
        if action in self.MAX_ACTIONS:
            return self._selected_counter() is not None or self._selected_tool() is not None
        if action in ("cycle_action", "toggle_hidden"):
            return self._selected_tool() is not None
        if action == "undo":
            return self.app.can_undo()
        return True

    # -- editor -----------------------------------------------------------------------
    def action_edit_policy(self) -> None:
        tree = self.query_one("#tree", ServerTree)
        server = tool = None
        if tree.cursor_node is not None and tree.cursor_node.data:
            server = tree.cursor_node.data.get("server")
            tool = tree.cursor_node.data.get("tool")
        self.app.open_editor(server, tool)


class ApprovalQueueScreen(ApprovalActions, ModalScreen[None]):
    """The approval queue as a dialog, opened from the policy editor's banner.

    One dialog at a time: it shows the queue ("1 of 3") and closes itself
    when the queue is empty.
    """

    KEY_CONTEXTS = ("approval", "queue")
    BINDINGS = bindings("approval", "queue")
    app: ConsoleApp

    def compose(self) -> ComposeResult:
        with Vertical(id="queue-dialog"):
            yield ApprovalPrompt(id="queue-prompt")
            yield Footer(compact=True)

    def on_mount(self) -> None:
        self.refresh_pending()

    def refresh_pending(self) -> None:
        pending = list(self.app.model.pending.values())
        if not pending:
            self.dismiss(None)
            return
        self.query_one("#queue-prompt", ApprovalPrompt).show(pending, self.app.clock())

    def prompt(self) -> ApprovalPrompt:
        return self.query_one("#queue-prompt", ApprovalPrompt)

    def action_close(self) -> None:
        self.dismiss(None)


class PolicyTextArea(TextArea):
    """A TOML/JSON code editor that marks the line of the first policy error."""

    error_line: reactive[int | None] = reactive(None)  # 0-based

    def get_line(self, line_index: int) -> Text:
        line = super().get_line(line_index)
        if self.error_line is not None and line_index == self.error_line:
            line = line.copy()
            line.stylize(f"underline {theme_color(self, 'error', 'red')}")
            if not line.plain:
                line = Text(" ", style=f"on {theme_color(self, 'error', 'red')}")
        return line

    def watch_error_line(self) -> None:
        self._line_cache.clear() if hasattr(self, "_line_cache") else None
        self.refresh()


class EditorScreen(Screen):
    """The policy file of one server in a TOML (or JSON) editor.

    Validates as you type with `mcpguard.policy.parse_policy` and marks the
    first error's line; `ctrl+s` saves through `PolicyFiles.save_text`
    (written atomically, applied at once); a policy with errors is never
    written nor applied. Pending approvals show as a banner; `ctrl+t` opens
    the queue. When the file changes on disk (another editor), the editor
    shows the new text if it has no unsaved changes; otherwise a banner
    offers `ctrl+r` to load the file or `ctrl+s` to keep (and save) yours.

    While the text differs from the running policy and is valid, a preview
    pane says what it would have decided differently for this server's calls
    the console has seen (`mcpguard.console.preview`); `ctrl+l` asks the same
    of the audit log's calls.
    """

    KEY_CONTEXTS = ("editor",)
    BINDINGS = bindings("editor")
    app: ConsoleApp

    def __init__(self, server: str, path: Path, *, tool: str | None = None) -> None:
        super().__init__()
        self.server = server
        self.path = path
        self.tool = tool  # the editor opens at this tool's table
        self.fmt = "json" if path.suffix.lower() == ".json" else "toml"
        self.issues: list[Any] = []
        self.saved_text = ""
        self.loaded = False
        self._warned_unsaved = False
        self.disk_conflict = False  # the file changed on disk while there were unsaved edits
        self._disk_text: str | None = None
        self._preview_timer: Any = None
        self.preview_text = ""  # what the preview pane says (plain text), for tests and people alike

    def compose(self) -> ComposeResult:
        yield Static(id="editor-title")
        yield Static(id="editor-banner")
        yield Static(id="editor-disk")
        yield PolicyTextArea.code_editor("", language=self.fmt, id="editor", soft_wrap=False)
        yield Static(id="editor-preview")
        yield Static(id="editor-errors")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        area = self.query_one("#editor", PolicyTextArea)
        area.focus()
        try:
            shown = self.path.resolve().relative_to(Path.cwd().resolve())
        except ValueError:
            shown = self.path
        self.query_one("#editor-title", Static).update(
            Text.assemble((" policy ", "bold reverse"), f" {self.server} · {shown}"))
        self.refresh_pending()
        self._show_conflict()
        self.run_worker(self._first_load(), exclusive=True, group="editor-load")

    async def _first_load(self) -> None:
        text = await self._read_disk()
        if text is None:
            text = ""
        self.saved_text = text
        area = self._area()
        area.load_text(text)
        if self.tool:
            line = _line_of_tool(text, self.fmt, self.tool)
            if line is not None:
                area.move_cursor((line, 0))
                area.scroll_cursor_visible(center=True)
        self.loaded = True
        self.validate(text)

    def _area(self) -> PolicyTextArea:
        return self.query_one("#editor", PolicyTextArea)

    async def _read_disk(self) -> str | None:
        """The policy file as it is now on the gateway's disk (`Control.policy_text`), or None."""
        try:
            got = await self.app.control.policy_text(self.server)
        except Exception as exc:  # noqa: BLE001 - the gateway may be gone: keep what the editor has
            self.notify(f"cannot read the policy: {exc}", severity="error")
            return None
        if got.text is None:
            self.notify(f"cannot read {self.path.name}: {got.error}", severity="error")
        return got.text

    def disk_changed(self) -> None:
        """The file may have changed on disk: follow it, or offer to when there are unsaved edits."""
        if self.is_mounted and self.loaded:
            self.run_worker(self._follow_disk(), exclusive=True, group="editor-load")

    async def _follow_disk(self) -> None:
        disk = await self._read_disk()
        if disk is None or disk == self.saved_text:
            return
        area = self._area()
        if area.text == self.saved_text:  # nothing unsaved: show the file as it is now
            self._load(disk)
            self.notify(f"{self.path.name} changed on disk; the editor shows it")
        elif area.text == disk:  # the same as ours
            self.saved_text = disk
            self.validate(disk)
        else:
            self._disk_text = disk
            self.disk_conflict = True
            self._show_conflict()

    def _load(self, text: str) -> None:
        area = self._area()
        cursor = area.cursor_location
        self.saved_text = text
        area.load_text(text)
        try:
            area.move_cursor(cursor)
        except Exception:  # noqa: BLE001 - a shorter text: stay where load put us
            pass
        self.disk_conflict = False
        self._show_conflict()
        self.validate(text)

    def _show_conflict(self) -> None:
        bar = self.query_one("#editor-disk", Static)
        bar.display = self.disk_conflict
        if self.disk_conflict:
            bar.update(Text(" changed on disk · ctrl+r loads it (drops your edits) · ctrl+s keeps yours ",
                            style="bold"))
        self.refresh_bindings()

    def action_reload_from_disk(self) -> None:
        self.run_worker(self._reload_from_disk(), exclusive=True, group="editor-load")

    async def _reload_from_disk(self) -> None:
        disk = await self._read_disk()
        if disk is not None:
            self._load(disk)

    def refresh_pending(self) -> None:
        n = len(self.app.model.pending)
        banner = self.query_one("#editor-banner", Static)
        banner.display = bool(n)
        if n:
            banner.update(Text(f" {n} approval{'s' if n != 1 else ''} pending · ctrl+t opens the queue ",
                               style="bold"))
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "open_approvals":
            return bool(self.app.model.pending)
        if action == "preview_audit":
            return bool(self.app.snap is not None and self.app.snap.gateway.audit_log)
        if action == "reload_from_disk":
            return self.disk_conflict
        return True

    @on(TextArea.Changed, "#editor")
    def _changed(self, event: TextArea.Changed) -> None:
        self.validate(event.text_area.text)

    def validate(self, text: str) -> Any:
        """Parse `text`; show the errors and mark the first one's line. Returns the Policy or None."""
        from mcpguard.policy import PolicyError, parse_policy

        area = self.query_one("#editor", PolicyTextArea)
        out = self.query_one("#editor-errors", Static)
        try:
            policy = parse_policy(text, self.fmt, str(self.path))
        except PolicyError as exc:
            self.issues = list(exc.issues)
            first = self.issues[0]
            area.error_line = max(0, first.line - 1)
            msg = Text()
            for issue in self.issues[:3]:
                msg.append(f"✗ line {issue.line} col {issue.col}: {issue.message}",
                           style=theme_color(self, "error"))
                if issue.hint:
                    msg.append(f" ({issue.hint})", style="dim")
                msg.append("\n")
            if len(self.issues) > 3:
                msg.append(f"… and {len(self.issues) - 3} more\n", style="dim")
            msg.append("not applied: the running policy stays until this one is valid", style="dim")
            out.update(msg)
            out.set_class(True, "-error")
            self._schedule_preview(None)
            return None
        self.issues = []
        area.error_line = None
        dirty = text != self.saved_text
        out.update(Text("✓ valid" + (" · ctrl+s saves and applies" if dirty else " · saved"),
                        style=theme_color(self, "success")))
        out.set_class(False, "-error")
        self._schedule_preview(policy if dirty else None)
        return policy

    # -- preview: what the edited text would have changed -----------------------------
    PREVIEW_DELAY_S = 0.3  # typing does not replay on every key

    def _schedule_preview(self, policy: Any | None) -> None:
        if self._preview_timer is not None:
            self._preview_timer.stop()
            self._preview_timer = None
        pane = self.query_one("#editor-preview", Static)
        if policy is None:
            pane.display = False
            self.preview_text = ""
            return
        self._preview_timer = self.set_timer(self.PREVIEW_DELAY_S, lambda: self._show_preview(policy))

    def _show_preview(self, policy: Any) -> None:
        from mcpguard.console import preview

        calls = preview.recorded_calls(self.app.model.calls.values(), self.server)
        report = preview.preview(calls, policy, self.app.policy_of(self.server))
        self._put_preview(preview.render(report, source="seen by this console", colors=self._colors()))

    def _colors(self) -> dict[str, str]:
        return {"warning": theme_color(self, "warning")}

    def _put_preview(self, text: Text) -> None:
        pane = self.query_one("#editor-preview", Static)
        pane.display = True
        pane.update(text)
        self.preview_text = text.plain

    def action_preview_audit(self) -> None:
        """ctrl+l: the preview over the audit log's calls of this server (read in a thread)."""
        path = self.app.snap.gateway.audit_log if self.app.snap is not None else None
        text = self._area().text
        if not path:
            self.notify("this gateway keeps no audit log ([gateway] audit_log)", severity="warning")
            return
        from mcpguard.policy import PolicyError, parse_policy

        try:
            policy = parse_policy(text, self.fmt, str(self.path))
        except PolicyError:
            self.notify("the policy has errors: fix them to preview it", severity="warning")
            return
        running = self.app.policy_of(self.server)
        self._put_preview(Text(f"preview: reading {path} …", style="dim"))
        self.run_worker(lambda: self._audit_preview(path, policy, running), thread=True, exclusive=True,
                        group="editor-preview")

    def _audit_preview(self, path: str, policy: Any, running: Any) -> None:
        from mcpguard.console import preview
        from mcpguard.whatif import AuditReadError, read_calls

        try:
            got = read_calls(path, server=self.server)
        except (OSError, AuditReadError) as exc:
            self.app.call_from_thread(self.notify, f"cannot read the audit log: {exc}", severity="error")
            return
        report = preview.preview(got.calls, policy, running)
        source = "the audit log" + (f"; {len(got.unreadable)} records unreadable" if got.unreadable else "")
        self.app.call_from_thread(self._put_preview, preview.render(report, source=source, colors=self._colors()))

    def action_save(self) -> None:
        text = self._area().text
        if self.validate(text) is None:
            self.notify("the policy has errors; nothing was written or applied", severity="error")
            return
        self.run_worker(self._save(text), exclusive=True, group="editor-save")

    async def _save(self, text: str) -> None:
        from mcpguard.control import ControlError

        try:
            result = await self.app.save_policy_text(self.server, text)
        except ControlError as exc:  # shown to the person, nothing lost
            self.notify(exc.message, severity="error")
            return
        self.saved_text = text
        self.disk_conflict = False
        self._show_conflict()
        self.validate(text)
        if result.unchanged:
            self.notify(f"saved {self.path.name}; the running policy already says this")

    def action_close(self) -> None:
        text = self._area().text
        if text != self.saved_text and not self._warned_unsaved:
            self._warned_unsaved = True
            self.notify("unsaved changes: ctrl+s saves, esc again discards them", severity="warning")
            return
        self.app.pop_screen()

    def action_open_approvals(self) -> None:
        if self.app.model.pending:
            self.app.push_screen(ApprovalQueueScreen())


class HelpScreen(ModalScreen[None]):
    """Every key of the key table, by context (`?`)."""

    BINDINGS = [Binding("escape,question_mark,q", "close", "Close", id="help.close")]

    def compose(self) -> ComposeResult:
        t = Text()
        for ctx, title in CONTEXT_TITLES.items():
            keys = [k for k in KEYS if k.context == ctx]
            if not keys:
                continue
            t.append(f"{title}\n", style="bold underline")
            for k in keys:
                t.append(f"  {(k.key_display or k.key):<8}", style="bold")
                t.append(f"{k.description}\n")
            t.append("\n")
        t.append("+ is also =; terminals do not report shift, so > and < change a max by ten.\n",
                 style="dim")
        t.append("Tune keys act on the selected tool (tree) or gauge (counters: tab to it).\n\n",
                 style="dim")
        t.append("Tree glyphs  ", style="bold")
        t.append("✓ allowed  ≤ limited  ? needs approval  ✗ denied  - hidden\n")
        t.append("Colors are risk: low, medium, high, critical (see the theme).\n", style="dim")
        t.append("ctrl+p opens the command palette (actions, themes).", style="dim")
        with VerticalScroll(id="help-dialog"):
            yield Static(t)

    def action_close(self) -> None:
        self.dismiss(None)


class ConfirmQuitScreen(ModalScreen[bool]):
    """Quit while approvals are pending? Yes denies them."""

    BINDINGS = [Binding("y", "answer(True)", "Quit and deny", id="quit.yes"),
                Binding("n,escape", "answer(False)", "Stay", id="quit.no")]

    def __init__(self, pending: int) -> None:
        super().__init__()
        self.pending = pending

    def compose(self) -> ComposeResult:
        with Vertical(id="quit-dialog"):
            yield Label(f"{self.pending} approval{'s' if self.pending != 1 else ''} pending. "
                        "Quit and deny them?")
            with Horizontal(id="quit-buttons"):
                yield Button("Quit and deny (y)", variant="error", id="yes")
                yield Button("Stay (n)", id="no")

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


def _line_of_tool(text: str, fmt: str, tool: str) -> int | None:
    """The 0-based line where `tool`'s own table (TOML) or entry (JSON) starts, or None."""
    import re

    pattern = (re.compile(rf'^\s*\[\s*tools\.(?:"{re.escape(tool)}"|{re.escape(tool)})\s*\]') if fmt == "toml"
               else re.compile(rf'^\s*"{re.escape(tool)}"\s*:'))
    for i, line in enumerate(text.splitlines()):
        if pattern.search(line):
            return i
    return None


def tool_detail_text(server: str, tool: str, view: Any, policy: Any) -> Text:
    """The selected tool's risk and policy, for the detail pane."""
    t = Text()
    t.append(f"{server} / ", style="dim")
    t.append(f"{tool}\n", style="bold")
    if view is not None:
        t.append(f"risk {view.risk}" + (f" ({view.risk_kind})" if view.risk_kind else "") + "\n")
        t.append(f"policy {STATE_WORD.get(view.state, view.state)}\n")
    rule = getattr(policy, "tools", {}).get(tool) if policy is not None else None
    if rule is not None:
        if rule.reason:
            t.append(f"reason {rule.reason}\n", style="italic")
        for lim in getattr(policy, "limits_for", lambda _t: ())(tool):  # + - > < change the first
            t.append(f"limit {lim.counter}: {lim.max}{fmt_window(lim.window_s)} per {lim.scope}\n")
        for e in rule.deny_if:
            t.append(f"deny_if {e.path}: {e.on_deny or ''}\n")
        for e in rule.require:
            t.append(f"require {e.path}: {e.on_deny or ''}\n")
    elif policy is not None:
        t.append(f"not listed: default {policy.default}\n", style="dim")
    t.append("\ne edits this server's policy", style="dim")
    return t
