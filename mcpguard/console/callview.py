"""The full-screen view of one call (`enter` on a row of the call table).

The call's arguments and its result as a tree that folds (Textual's `Tree`:
enter or space opens and closes a node), the full value of the highlighted
node below it, wrapped; text content that is itself JSON (as many MCP
servers return, `mlflow-mcp` among them) is shown parsed too. `/` searches
keys and values (`n` / `N` go to the next / previous match), `y` copies the
arguments and `Y` the result as JSON to the clipboard (OSC 52, through
`App.copy_to_clipboard`), escape goes back.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Input, Static, Tree
from textual.widgets.tree import TreeNode

from mcpguard.console.approving import visible_json
from mcpguard.console.keymap import bindings
from mcpguard.console.model import CallRecord
from mcpguard.console.widgets import fmt_clock

if TYPE_CHECKING:
    from mcpguard.console.app import ConsoleApp

#: nodes built at most per call: a huge result stays responsive (the rest is said, and `y`/`Y` copy all)
MAX_NODES = 5000
#: a label shows this much of a string; the pane below shows all of it
LABEL_CHARS = 120


def _label(key: str | None, value: Any) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    if key is not None:
        t.append(key, style="bold")
        t.append(": ")
    if isinstance(value, dict):
        t.append(f"{{…}} {len(value)} key{'s' if len(value) != 1 else ''}", style="dim")
    elif isinstance(value, list):
        t.append(f"[…] {len(value)} item{'s' if len(value) != 1 else ''}", style="dim")
    else:
        shown = visible_json(value)
        if len(shown) > LABEL_CHARS:
            shown = shown[:LABEL_CHARS] + f"… ({len(shown)} chars)"
        t.append(shown)
    return t


def _parsed_text(value: Any) -> Any | None:
    """A content item's `text` that is a JSON object or array, parsed; else None."""
    if not isinstance(value, str) or not value.lstrip().startswith(("{", "[")):
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    return parsed if isinstance(parsed, (dict, list)) else None


class CallScreen(Screen[None]):
    """One call in full: summary, a foldable tree of its arguments and result, the value under the cursor."""

    KEY_CONTEXTS = ("callview",)
    BINDINGS = bindings("callview")
    app: ConsoleApp

    def __init__(self, rec: CallRecord) -> None:
        super().__init__()
        self.rec = rec
        self._built = 0
        self._matches: list[TreeNode] = []
        self._match_at = -1

    def compose(self) -> ComposeResult:
        yield Static(id="callview-title")
        yield Tree("call", id="callview-tree")
        with VerticalScroll(id="callview-value"):
            yield Static(id="callview-value-text")
        yield Input(placeholder="search keys and values (enter: go; n / N: next / previous)", id="callview-search")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._title()
        tree = self.query_one("#callview-tree", Tree)
        tree.show_root = False
        tree.guide_depth = 2
        r = self.rec
        self._add(tree.root, "arguments", r.arguments, expand=True)
        if r.forwarded_arguments is not None:
            self._add(tree.root, "arguments sent upstream (edited by a person)", r.forwarded_arguments, expand=True)
        if r.error:
            self._add(tree.root, "error", r.error, expand=True)
        if r.result is not None:
            self._add(tree.root, "result (isError)" if r.is_error else "result", r.result, expand=True)
        elif not r.done:
            tree.root.add_leaf(Text("result: not yet (the call is in flight)", style="dim"))
        if self._built >= MAX_NODES:
            tree.root.add_leaf(Text(f"… more than {MAX_NODES} values: y / Y copy them all", style="bold"))
        self.query_one("#callview-search", Input).display = False
        tree.focus()
        tree.move_cursor(tree.root.children[0] if tree.root.children else None)

    def _title(self) -> None:
        r = self.rec
        t = Text()
        t.append(f" call {r.call_id} ", style="bold reverse")
        t.append(f" {r.server} / ")
        t.append(r.tool, style="bold")
        t.append(f"   {fmt_clock(r.ts)}   caller {r.caller or '-'}", style="dim")
        if r.session_id:
            t.append(f"   session {r.session_id}", style="dim")
        t.append("\n decision ", style="dim")
        t.append(r.decision_label, style="bold")
        if r.code and r.code != r.decision_label:
            t.append(f" ({r.code})")
        if r.rule:
            t.append(f"  rule {r.rule}", style="dim")
        if r.approved_by:
            t.append(f"  by {r.approved_by}", style="dim")
        if r.duration_ms is not None:
            t.append(f"  {r.duration_ms:.0f} ms", style="dim")
        if r.deny_reason:
            t.append(f"\n reason given: {r.deny_reason}", style="italic")
        elif r.message:
            t.append(f"\n {r.message}", style="italic")
        self.query_one("#callview-title", Static).update(t)

    def _add(self, parent: TreeNode, key: str | None, value: Any, *, expand: bool = False, depth: int = 0) -> None:
        """Add `value` under `parent`; the first two levels open, small lists below them too."""
        if self._built >= MAX_NODES:
            return
        self._built += 1
        data = {"key": key, "value": value}
        if isinstance(value, dict) and value:
            node = parent.add(_label(key, value), data=data, expand=expand)
            for k, v in value.items():
                self._add(node, str(k), v, expand=depth < 1, depth=depth + 1)
                if k == "text" and (parsed := _parsed_text(v)) is not None:
                    self._add(node, "text, parsed as JSON", parsed, expand=True, depth=depth + 1)
        elif isinstance(value, list) and value:
            node = parent.add(_label(key, value), data=data, expand=expand)
            for i, v in enumerate(value):
                self._add(node, f"[{i}]", v, expand=depth < 1 and len(value) <= 5, depth=depth + 1)
        else:
            parent.add_leaf(_label(key, value), data=data)

    @on(Tree.NodeHighlighted, "#callview-tree")
    def _highlighted(self, event: Tree.NodeHighlighted) -> None:
        data = event.node.data
        box = self.query_one("#callview-value-text", Static)
        if not data:  # the hidden root, or a note
            box.update("")
            return
        value = data.get("value")
        text = visible_json(value, indent=2) if isinstance(value, (dict, list)) else (
            value if isinstance(value, str) else visible_json(value))
        box.update(Text(text if len(text) <= 200_000 else text[:200_000] + "\n… (y / Y copy it all)"))
        self.query_one("#callview-value", VerticalScroll).scroll_home(animate=False)

    # -- search ----------------------------------------------------------------------
    def action_search(self) -> None:
        box = self.query_one("#callview-search", Input)
        box.display = True
        box.focus()

    @on(Input.Submitted, "#callview-search")
    def _search(self, event: Input.Submitted) -> None:
        needle = event.value.strip().lower()
        tree = self.query_one("#callview-tree", Tree)
        self._matches = [n for n in self._walk(tree.root) if needle and needle in self._haystack(n)]
        self._match_at = -1
        self.query_one("#callview-search", Input).display = False
        tree.focus()
        if not self._matches:
            self.notify(f"no match for {event.value!r}", severity="warning")
            return
        self._goto(+1)

    def _walk(self, node: TreeNode) -> list[TreeNode]:
        out = []
        for child in node.children:
            out.append(child)
            out.extend(self._walk(child))
        return out

    @staticmethod
    def _haystack(node: TreeNode) -> str:
        data = node.data or {}
        value = data.get("value")
        scalar = "" if isinstance(value, (dict, list)) else (value if isinstance(value, str) else json.dumps(value))
        return f"{data.get('key') or ''} {scalar}".lower()

    def _goto(self, delta: int) -> None:
        if not self._matches:
            return
        self._match_at = (self._match_at + delta) % len(self._matches)
        node = self._matches[self._match_at]
        parent = node.parent
        while parent is not None:
            parent.expand()
            parent = parent.parent
        tree = self.query_one("#callview-tree", Tree)
        tree.last_line  # noqa: B018 - lays the expanded lines out now, so the node has its line
        tree.move_cursor(node)
        self.notify(f"match {self._match_at + 1} of {len(self._matches)}", timeout=2)

    def action_next_match(self) -> None:
        self._goto(+1)

    def action_prev_match(self) -> None:
        self._goto(-1)

    # -- copy ------------------------------------------------------------------------
    def _copy(self, what: str, value: Any) -> None:
        if value is None:
            self.notify(f"this call has no {what} yet", severity="warning")
            return
        text = json.dumps(value, ensure_ascii=False, indent=2, default=str)
        self.app.copy_to_clipboard(text)
        self.notify(f"copied the {what} ({len(text.encode())} bytes of JSON) to the clipboard")

    def action_copy_arguments(self) -> None:
        r = self.rec
        self._copy("arguments", r.forwarded_arguments if r.forwarded_arguments is not None else r.arguments)

    def action_copy_result(self) -> None:
        self._copy("result", self.rec.result)

    def action_close(self) -> None:
        box = self.query_one("#callview-search", Input)
        if box.has_focus:
            box.display = False
            self.query_one("#callview-tree", Tree).focus()
            return
        self.dismiss(None)
