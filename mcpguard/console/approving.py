"""Answering approvals: the prompt that shows the pending call, and the screens that answer it.

- `ApprovalPrompt`: the current pending call of the queue ("1 of 3") in
  full: tool, server, risk and where the risk came from, every argument
  (pretty-printed and wrapped, scrollable, long strings folded until `z`),
  the policy's reason and rule, caller, session, the approval's digest.
- `ApprovalActions`: the keys of the `approval` context (`a`, `d`, `D`,
  `e`, `A`, `]`, `[`, `z`) for any screen that shows an `ApprovalPrompt`.
- `DenyReasonScreen`: `D`, a reason typed for the agent to read.
- `EditArgumentsScreen`: `e`, the arguments as JSON in an editor, checked
  as you type against the tool's `inputSchema` (`control.schema_errors`,
  jsonschema); ctrl+s approves the call with the edited arguments.

Every answer carries the digest of the call the person saw
(`approvals.call_digest`), so an answer never lands on a call other than
the one on screen.
"""

from __future__ import annotations

import json
import time
import unicodedata
from typing import TYPE_CHECKING, Any

from rich.highlighter import JSONHighlighter
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Input, Label, Static, TextArea

from mcpguard.console.keymap import bindings
from mcpguard.console.widgets import fmt_duration, theme_color

if TYPE_CHECKING:
    from mcpguard.console.app import ConsoleApp

#: strings longer than this (characters) are folded in the prompt until `z`
FOLD_AT = 240
#: how much of a folded string stays in view
FOLD_KEEP = 160
#: seconds after the prompt switched to another call by itself (an answer elsewhere, a
#: new call) during which answer keys are ignored: the key was meant for the call before
SETTLE_S = 0.6

_HIGHLIGHT = JSONHighlighter()


def visible_json(value: Any, *, indent: int | None = None) -> str:
    """`value` as JSON a person can trust on screen: control, format (bidi overrides,
    zero-width) and unassigned characters escaped as `\\uXXXX`, so text cannot hide or
    reorder itself."""
    text = json.dumps(value, ensure_ascii=False, indent=indent, default=str)
    if text.isascii():
        return text
    out = []
    for ch in text:
        if ch != "\n" and unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            out.append("".join(f"\\u{u:04x}" for u in _utf16(ch)))
        else:
            out.append(ch)
    return "".join(out)


def _utf16(ch: str) -> list[int]:
    b = ch.encode("utf-16-be", "surrogatepass")
    return [int.from_bytes(b[i:i + 2], "big") for i in range(0, len(b), 2)]


def fold(value: Any, folded: list[int]) -> Any:
    """`value` with every string longer than `FOLD_AT` cut to `FOLD_KEEP` characters and a
    marker saying how much is hidden; appends each hidden length to `folded`."""
    if isinstance(value, str):
        if len(value) > FOLD_AT:
            folded.append(len(value) - FOLD_KEEP)
            return f"{value[:FOLD_KEEP]}… ⟨{len(value) - FOLD_KEEP} more characters folded⟩"
        return value
    if isinstance(value, dict):
        return {k: fold(v, folded) for k, v in value.items()}
    if isinstance(value, list):
        return [fold(v, folded) for v in value]
    return value


def render_arguments(arguments: dict[str, Any] | None, *, unfold: bool) -> tuple[Text, int]:
    """The arguments as `key: value` lines (nested values pretty-printed JSON, indented),
    wrapped by the widget; returns the text and how many strings are folded."""
    if not arguments:
        return Text("(no arguments)", style="dim"), 0
    folded: list[int] = []
    shown = arguments if unfold else fold(arguments, folded)
    t = Text()
    for i, (key, value) in enumerate(shown.items()):
        if i:
            t.append("\n")
        t.append(visible_json(key)[1:-1], style="bold")
        t.append(": ")
        if isinstance(value, (dict, list)) and value:
            body = visible_json(value, indent=2).replace("\n", "\n  ")
        else:
            body = visible_json(value)
        t.append_text(_HIGHLIGHT(Text(body)))
    return t, len(folded)


def _ids(pending: list[Any]) -> list[str]:
    return [p.approval_id for p in pending]


class ApprovalPrompt(Vertical):
    """The current pending approval of the queue ("1 of 3"), with a countdown.

    It holds which approval is current (`current_id`, the one an answer
    goes to) and whether long strings are unfolded; the owner calls
    `show(pending, now)` each second and on every change, with
    `ApprovalRequested` events or `PendingState`s, oldest first.
    `settling()` is True for `SETTLE_S` seconds after the current call
    changed by itself (not by `select` or `step`).
    """

    current_id: str | None = None

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._unfolded: set[str] = set()
        self._shown: tuple | None = None
        self._switched_at = 0.0
        self._first_shown: dict[str, float] = {}
        self._last: tuple[list[Any], float] | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="approval-body"):
            yield Static(classes="approval-text")
        yield Static(classes="approval-keys")

    # -- which call ----------------------------------------------------------------
    def current(self, pending: list[Any]) -> Any | None:
        """The pending approval an answer goes to (None: nothing pending)."""
        return next((p for p in pending if p.approval_id == self.current_id), None)

    def select(self, approval_id: str) -> None:
        """The person chose this approval (a row of the table): it becomes current at once."""
        self.current_id = approval_id

    def step(self, pending: list[Any], delta: int) -> None:
        ids = _ids(pending)
        if not ids:
            return
        idx = ids.index(self.current_id) if self.current_id in ids else 0
        self.current_id = ids[(idx + delta) % len(ids)]

    def settling(self) -> bool:
        return time.monotonic() - self._switched_at < SETTLE_S

    def toggle_unfold(self) -> None:
        if self.current_id is None:
            return
        self._unfolded ^= {self.current_id}
        self._shown = None

    # -- drawing -------------------------------------------------------------------
    def show(self, pending: list[Any], now: float) -> None:
        self._last = (pending, now) if pending else None
        if not pending:
            self.current_id = None
            self._shown = None
            self.border_title = ""
            self.border_subtitle = ""
            return
        ids = _ids(pending)
        if self.current_id not in ids:
            if self.current_id is not None:  # answered elsewhere or gone: the next one slides in
                self._switched_at = time.monotonic()
            self.current_id = ids[0]
        self._unfolded &= set(ids)
        idx = ids.index(self.current_id)
        p = pending[idx]
        left = max(0.0, p.deadline - now)
        self.border_title = f"approval {idx + 1} of {len(pending)}"
        self.border_subtitle = f"denied in {fmt_duration(left)}"
        width = self.content_region.width or 80
        sig = (p.approval_id, p.approval_id in self._unfolded, len(pending) > 1, width, self.app.theme)
        if sig == self._shown:
            return
        self._shown = sig
        self.query_one(".approval-text", Static).update(self._body(p))
        self.query_one(".approval-keys", Static).update(self._keys(len(pending) > 1, width))
        self.query_one(".approval-body", VerticalScroll).scroll_home(animate=False)

    def on_resize(self) -> None:
        """Draw again for the width the prompt has now: a first `show` may come before its layout,
        and the keys line picks its labels (and the session id its length) by width."""
        if self._last is not None:
            self.show(*self._last)

    def _body(self, p: Any) -> Text:
        risk_color = theme_color(self, f"risk-{p.risk}") if p.risk else ""
        t = Text()
        t.append(p.tool, style=f"bold {risk_color}")
        t.append(" on ", style="dim")
        t.append(p.server, style="bold")
        if p.risk:
            t.append("   risk ", style="dim")
            t.append(p.risk, style=f"bold {risk_color}")
            source = self._risk_source(p.server, p.tool)
            if source:
                t.append(f" ({source})", style="dim")
        # The arguments come right after the tool: they are what is being approved, and on a
        # small terminal (80x24) the prompt has about nine lines before it scrolls.
        args, folded = render_arguments(p.arguments, unfold=p.approval_id in self._unfolded)
        t.append("\n")
        t.append("arguments", style="bold underline")
        if folded:
            t.append(f"  {folded} long value{'s' if folded > 1 else ''} folded: z shows all",
                     style=f"bold {theme_color(self, 'warning')}")
        elif p.approval_id in self._unfolded:
            t.append("  unfolded: z folds", style="dim")
        t.append("\n")
        t.append_text(args)
        t.append("\n")
        t.append(p.reason or "the policy asks a person for this tool", style="italic")
        if getattr(p, "rule", None):
            t.append(f"  ({p.rule})", style="dim")
        t.append("\ncaller ", style="dim")
        t.append(p.client or p.grant)
        if p.client and p.grant:
            t.append("  grant ", style="dim")
            t.append(p.grant)
        if p.session_id:
            t.append("  session ", style="dim")
            # whole where it fits; the sessions pane (S) always has it whole
            narrow = (self.content_region.width or 80) < 100 and len(p.session_id) > 12
            t.append(p.session_id[:12] + "…" if narrow else p.session_id)
        if getattr(p, "digest", ""):
            t.append("  digest ", style="dim")
            t.append(p.digest.removeprefix("sha256:")[:12])
        return t

    def _risk_source(self, server: str, tool: str) -> str:
        describe = getattr(self.app, "risk_source", None)
        return describe(server, tool) if describe is not None else ""

    def _keys(self, several: bool, width: int) -> Text:
        full = [("a", "approve"), ("d", "deny"), ("D", "deny with reason"), ("e", "edit"),
                ("A", "for session")] + ([("]", "next")] if several else [])
        short = [("a", "ok"), ("d", "deny"), ("D", "why"), ("e", "edit"), ("A", "session")] + (
            [("]", "next")] if several else [])
        tiny = [("a", "ok"), ("d", "no"), ("D", "why"), ("e", "edit"), ("A", "sess")] + (
            [("]", "next")] if several else [])
        for keys, gap in ((full, "  "), (short, "  "), (tiny, " ")):
            t = Text(no_wrap=True, overflow="ellipsis")
            for k, label in keys:
                t.append(f" {k} ", style="bold reverse")
                t.append(f" {label}{gap}")
            if t.cell_len <= width:
                return t
        return t


class ApprovalActions:
    """The `approval` keys for a screen with an `ApprovalPrompt` (found by `prompt()`)."""

    app: ConsoleApp

    def prompt(self) -> ApprovalPrompt:  # pragma: no cover - each screen says which
        raise NotImplementedError

    def _pending(self) -> list[Any]:
        return list(self.app.model.pending.values())

    def _target(self) -> Any | None:
        """The approval on screen, unless it just switched under the person's fingers."""
        prompt = self.prompt()
        if prompt.settling():
            self.app.notify("the prompt just changed to another call: look again, then answer",
                            severity="warning", timeout=4)
            return None
        return prompt.current(self._pending())

    def action_approve(self) -> None:
        p = self._target()
        if p is not None:
            self.app.answer(p.approval_id, "approve", digest=p.digest or None)

    def action_approve_session(self) -> None:
        p = self._target()
        if p is not None:
            self.app.answer(p.approval_id, "approve_session", digest=p.digest or None)

    def action_deny(self) -> None:
        p = self._target()
        if p is not None:
            self.app.answer(p.approval_id, "deny", digest=p.digest or None)

    def action_deny_reason(self) -> None:
        p = self._target()
        if p is None:
            return

        def answered(reason: str | None) -> None:
            if reason is not None:
                self.app.answer(p.approval_id, "deny", reason=reason or None, digest=p.digest or None)

        self.app.push_screen(DenyReasonScreen(p), answered)

    def action_edit_arguments(self) -> None:
        p = self._target()
        if p is not None:
            self.app.push_screen(EditArgumentsScreen(p))

    def action_next_approval(self) -> None:
        self.prompt().step(self._pending(), +1)
        self._stepped()

    def action_prev_approval(self) -> None:
        self.prompt().step(self._pending(), -1)
        self._stepped()

    def _stepped(self) -> None:
        self.app.refresh_pending()

    def action_unfold(self) -> None:
        self.prompt().toggle_unfold()
        self.app.refresh_pending()


class DenyReasonScreen(ModalScreen[str | None]):
    """`D`: type why; enter denies with that reason (the agent reads it), escape goes back."""

    KEY_CONTEXTS = ("reason",)
    BINDINGS = bindings("reason")
    app: ConsoleApp

    def __init__(self, pending: Any) -> None:
        super().__init__()
        self.pending = pending

    def compose(self) -> ComposeResult:
        with Vertical(id="reason-dialog"):
            yield Label(Text.assemble("Deny ", (self.pending.tool, "bold"), " on ", self.pending.server,
                                      " — the agent reads your reason:"))
            yield Input(placeholder="why (enter denies; escape goes back)", id="reason-input", max_length=500)
            yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#reason-input", Input).focus()

    @on(Input.Submitted, "#reason-input")
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())

    def action_close(self) -> None:
        self.dismiss(None)

    def refresh_pending(self) -> None:
        if self.pending.approval_id not in self.app.model.pending:
            self.app.notify(f"{self.pending.tool}: answered or timed out before your reason was sent",
                            severity="warning")
            self.dismiss(None)


class EditArgumentsScreen(Screen[None]):
    """`e`: the pending call's arguments as JSON, checked as you type against the tool's
    `inputSchema`; ctrl+s approves the call with them, escape goes back without answering.

    The countdown stays on screen: the approval is still denied at its deadline.
    """

    KEY_CONTEXTS = ("editargs",)
    BINDINGS = bindings("editargs")
    app: ConsoleApp

    def __init__(self, pending: Any) -> None:
        super().__init__()
        self.pending = pending
        self.original = visible_json(pending.arguments, indent=2)
        self.errors: list[str] = []

    def compose(self) -> ComposeResult:
        yield Static(id="editargs-title")
        yield TextArea(self.original, language="json", id="editargs", soft_wrap=True, show_line_numbers=True,
                       tab_behavior="indent")
        yield Static(id="editargs-errors")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._title()
        self._check()
        self.query_one("#editargs", TextArea).focus()

    def _schema(self) -> dict[str, Any] | None:
        return self.app.input_schema(self.pending.server, self.pending.tool)

    def _title(self) -> None:
        p = self.pending
        t = Text()
        t.append(" edit, then approve ", style="bold reverse")
        t.append(f" {p.tool}", style="bold")
        t.append(f" on {p.server}", style="dim")
        t.append(f"   denied in {fmt_duration(max(0.0, p.deadline - self.app.clock()))}",
                 style=theme_color(self, "warning"))
        self.query_one("#editargs-title", Static).update(t)

    def parsed(self) -> tuple[dict[str, Any] | None, list[str]]:
        """The edited arguments and why they cannot be sent ([] when they can)."""
        from mcpguard.control import schema_errors

        text = self.query_one("#editargs", TextArea).text
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            return None, [f"line {exc.lineno}, column {exc.colno}: {exc.msg}"]
        if not isinstance(value, dict):
            return None, ["the arguments must be a JSON object"]
        return value, schema_errors(self._schema(), value)

    @on(TextArea.Changed, "#editargs")
    def _changed(self, event: TextArea.Changed) -> None:
        self._check()

    def _check(self) -> None:
        _, self.errors = self.parsed()
        box = self.query_one("#editargs-errors", Static)
        box.set_class(bool(self.errors), "-error")
        if self.errors:
            box.update(Text("\n".join(f"✗ {e}" for e in self.errors[:5]), style="bold"))
        elif self._schema() is None:
            box.update(Text("✓ valid JSON (the tool publishes no inputSchema) · ctrl+s approves with these"))
        else:
            box.update(Text("✓ fits the tool's inputSchema · ctrl+s approves with these arguments"))

    def action_save(self) -> None:
        value, errors = self.parsed()
        if errors or value is None:
            self.app.notify("not sent: " + "; ".join(errors[:2]), severity="error", timeout=6)
            return
        if self.pending.approval_id not in self.app.model.pending:
            self.app.notify(f"{self.pending.tool}: answered or timed out meanwhile; nothing sent", severity="warning")
            self.dismiss(None)
            return
        edited = None if value == self.pending.arguments else value
        self.app.answer(self.pending.approval_id, "approve", arguments=edited, digest=self.pending.digest or None)
        self.dismiss(None)

    def action_original(self) -> None:
        self.query_one("#editargs", TextArea).text = self.original

    def action_close(self) -> None:
        self.dismiss(None)

    def refresh_pending(self) -> None:
        if self.pending.approval_id not in self.app.model.pending:
            self.app.notify(f"{self.pending.tool}: answered or timed out while you edited; nothing sent",
                            severity="warning", timeout=8)
            self.dismiss(None)
            return
        self._title()
