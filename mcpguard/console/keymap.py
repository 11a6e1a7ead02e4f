"""The one key table of the console.

Every key is declared once here, with the context it works in, its action,
help text and a stable id (`Binding(..., id=...)`). Screens take their
`BINDINGS` from `bindings(context)`, the footer shows them, the `?` help
screen lists `KEYS`, and the command palette offers every action of the
current screen from the same table, so the three always agree. A user can
remap any key by id (`App.set_keymap({"approval.approve": "y"})`, or
`[console.keys]` in mcpguard.toml).

Contexts: `app` (everywhere), `main` (the main screen), `approval` (the
approval queue, on the main screen and in the queue dialog), `tune` (edits of
the policy on the selected tool in the tree or the selected counter gauge),
`editor` (the policy editor), `reason` and `editargs` (denying with a reason,
editing a call's arguments before approving), `nav` (vim keys on lists and
tables).

`e` is two keys: with an approval pending (and the tree or gauges not in
focus) it edits the call's arguments; otherwise it opens the policy editor.

`+` needs shift on most keyboards, so `=` does the same; terminals do not
report shift on `+`/`-`, so "by ten" is `>` / `<` (shift+. and shift+, on a
US layout), next to them.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding


@dataclass(frozen=True, slots=True)
class Key:
    """One key: `key` in Textual's key names; `action` is the action method without `action_`."""

    context: str
    key: str
    action: str
    description: str
    id: str
    show: bool = True
    key_display: str | None = None
    priority: bool = False
    group: str | None = None  # keys of one group share one footer label (`+ - Max`)


KEYS: tuple[Key, ...] = (
    Key("app", "ctrl+q", "quit", "Quit", "app.quit", priority=True, key_display="^q"),
    Key("app", "question_mark", "help", "Keys", "app.help", key_display="?"),
    Key("main", "slash", "filter", "Filter", "main.filter", key_display="/"),
    Key("main", "escape", "clear_filter", "Clear filter", "main.clear_filter", show=False),
    Key("main", "F", "follow", "Follow", "main.follow"),
    Key("main", "e", "edit_policy", "Edit", "main.edit_policy"),
    Key("main", "enter", "open_call", "Open call", "main.open_call", show=False, key_display="⏎"),
    Key("main", "S", "sessions", "Sessions", "main.sessions"),
    # the prompt draws its own line of approval keys; the footer would repeat them and overflow at 80 columns
    Key("approval", "a", "approve", "Approve", "approval.approve", show=False),
    Key("approval", "d", "deny", "Deny", "approval.deny", show=False),
    Key("approval", "D", "deny_reason", "Deny with reason", "approval.deny_reason", show=False),
    Key("approval", "e", "edit_arguments", "Edit args", "approval.edit", show=False),
    Key("approval", "A", "approve_session", "Session", "approval.approve_session", show=False),
    Key("approval", "z", "unfold", "Unfold long values", "approval.unfold", show=False),
    Key("approval", "right_square_bracket", "next_approval", "Next approval", "approval.next",
        show=False, key_display="]"),
    Key("approval", "left_square_bracket", "prev_approval", "Previous approval", "approval.prev",
        show=False, key_display="["),
    Key("tune", "plus,equals_sign", "max_up", "Max +1", "tune.max_up", key_display="+", group="Max"),
    Key("tune", "minus", "max_down", "Max -1", "tune.max_down", key_display="-", group="Max"),
    Key("tune", "greater_than_sign", "max_up_ten", "Max +10", "tune.max_up_ten", show=False, key_display=">"),
    Key("tune", "less_than_sign", "max_down_ten", "Max -10", "tune.max_down_ten", show=False, key_display="<"),
    Key("tune", "t", "cycle_action", "Action", "tune.action"),
    Key("tune", "h", "toggle_hidden", "Hide", "tune.hide"),
    Key("tune", "u", "undo", "Undo", "tune.undo"),
    Key("editor", "ctrl+s", "save", "Save & apply", "editor.save", priority=True, key_display="^s"),
    Key("editor", "ctrl+r", "reload_from_disk", "Load file", "editor.reload", priority=True, key_display="^r"),
    Key("editor", "escape", "close", "Back", "editor.close", priority=True),
    Key("editor", "ctrl+t", "open_approvals", "Approvals", "editor.approvals", priority=True, key_display="^t"),
    Key("editor", "ctrl+l", "preview_audit", "Preview on audit log", "editor.preview_audit", priority=True,
        key_display="^l"),
    Key("queue", "escape", "close", "Close", "queue.close"),
    Key("reason", "escape", "close", "Back", "reason.close", priority=True),
    Key("callview", "slash", "search", "Search", "callview.search", key_display="/"),
    Key("callview", "n", "next_match", "Next match", "callview.next", show=False),
    Key("callview", "N", "prev_match", "Previous match", "callview.prev", show=False),
    Key("callview", "y", "copy_arguments", "Copy args", "callview.copy_arguments"),
    Key("callview", "Y", "copy_result", "Copy result", "callview.copy_result"),
    Key("callview", "escape", "close", "Back", "callview.close", priority=True),
    Key("sessions", "r", "revoke", "Revoke", "sessions.revoke"),
    Key("sessions", "x", "end_session", "End session", "sessions.end"),
    Key("sessions", "escape", "close", "Back", "sessions.close"),
    Key("confirm", "y", "answer(True)", "Yes", "confirm.yes"),
    Key("confirm", "n,escape", "answer(False)", "No", "confirm.no"),
    Key("editargs", "ctrl+s", "save", "Approve with these", "editargs.save", priority=True, key_display="^s"),
    Key("editargs", "ctrl+r", "original", "Agent's arguments", "editargs.original", priority=True,
        key_display="^r"),
    Key("editargs", "escape", "close", "Back", "editargs.close", priority=True),
    Key("nav", "j", "cursor_down", "Down", "nav.down", show=False),
    Key("nav", "k", "cursor_up", "Up", "nav.up", show=False),
    Key("nav", "g", "scroll_home", "First", "nav.first", show=False),
    Key("nav", "G", "scroll_end", "Last", "nav.last", show=False),
)

CONTEXT_TITLES = {
    "app": "Everywhere",
    "main": "Main screen",
    "approval": "Approval queue",
    "tune": "Tune the policy (selected tool or gauge)",
    "editor": "Policy editor",
    "queue": "Approval dialog",
    "reason": "Deny with a reason",
    "callview": "One call, full screen",
    "sessions": "Agent sessions",
    "confirm": "Confirm",
    "editargs": "Edit the arguments, then approve",
    "nav": "Lists and tables",
}


_GROUPS: dict[str, Binding.Group] = {}


def _group(name: str | None) -> Binding.Group | None:
    if name is None:
        return None
    return _GROUPS.setdefault(name, Binding.Group(name))


def bindings(*contexts: str) -> list[Binding]:
    """Textual `Binding`s for the keys of `contexts`, in table order."""
    return [
        Binding(k.key, k.action, k.description, show=k.show, key_display=k.key_display,
                priority=k.priority, id=k.id, group=_group(k.group))
        for k in KEYS if k.context in contexts
    ]


def keys_for(context: str) -> list[Key]:
    """The keys of one context, in table order."""
    return [k for k in KEYS if k.context == context]
