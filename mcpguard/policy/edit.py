"""Edits of a policy file's text that keep everything a person wrote.

Each edit takes the file's text and returns the new text; nothing here
touches the disk (see `write_atomic`). TOML goes through tomlkit, so
comments, key order, blank lines and layout survive every edit; JSON (a
PolicyLayer document) is written back as JSON with its key order and its
indent. The caller validates the new text before it writes or applies it.

The edits are the console's keys: `set_max` (`+`/`-`),
`set_action` (`t` cycles allow → require_approval → deny), `set_hidden`
(`h`). `EditError` says why an edit cannot be made (no such limit, a hide
entry of `"*"` that an unhide cannot undo, a file that does not parse).
"""

from __future__ import annotations

import difflib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError

ACTIONS = ("allow", "require_approval", "deny")


class EditError(ValueError):
    """An edit that cannot be made; the message says why, for a notification."""


def policy_format(path: str | os.PathLike[str]) -> str:
    """`"json"` for a `.json` file, else `"toml"`."""
    return "json" if str(path).lower().endswith(".json") else "toml"


# -- documents ---------------------------------------------------------------

def _load(text: str, fmt: str) -> Any:
    try:
        if fmt == "json":
            doc = json.loads(text) if text.strip() else {}
        else:
            doc = tomlkit.parse(text)
    except (json.JSONDecodeError, TOMLKitError) as exc:
        raise EditError(f"the policy does not parse, fix it first: {exc}") from exc
    if not isinstance(doc, dict):
        raise EditError("the policy is not a table/object at the top level")
    return doc


def _json_indent(text: str) -> int | str:
    for line in text.splitlines()[1:]:
        stripped = line.lstrip(" \t")
        if stripped and len(stripped) != len(line):
            ws = line[: len(line) - len(stripped)]
            return "\t" if ws.startswith("\t") else len(ws)
    return 2


def _dump(doc: Any, fmt: str, original: str) -> str:
    if fmt == "json":
        out = json.dumps(doc, indent=_json_indent(original), ensure_ascii=False)
        return out + ("\n" if original.endswith("\n") or not original else "")
    return tomlkit.dumps(doc)


def _edit(text: str, fmt: str, fn: Callable[[Any], None]) -> str:
    doc = _load(text, fmt)
    fn(doc)
    return _dump(doc, fmt, text)


def _is_toml(doc: Any) -> bool:
    return isinstance(doc, tomlkit.TOMLDocument)


def _tools(doc: Any, create: bool) -> Any:
    tools = doc.get("tools")
    if tools is None:
        if not create:
            return {}
        # a super table: its entries are written `[tools.NAME]`, as people write them
        doc["tools"] = tomlkit.table(is_super_table=True) if _is_toml(doc) else {}
        tools = doc["tools"]
    return tools


def _tool_entry(doc: Any, tool: str, create: bool) -> Any:
    tools = _tools(doc, create)
    entry = tools.get(tool)
    if entry is None and create:
        entry = tomlkit.table() if _is_toml(doc) else {}
        tools[tool] = entry
        entry = tools[tool]
    return entry


# -- the edits ---------------------------------------------------------------

def set_max(text: str, fmt: str, *, tool: str | None = None, counter: str | None = None,
            delta: int | None = None, value: int | None = None) -> str:
    """Change the `max` (calls per window) of a limit.

    With `counter`, every limit naming that counter (in `tools.*.limits`
    and `all_tools.limits`) changes, since the name is the counter's
    identity. With only `tool`, that tool's first limit changes, and with
    it every other limit sharing its counter (a shared counter defined
    two ways is a policy the loader refuses). Give either `delta` (added,
    the result never below 1) or `value`. Raises EditError when no such
    limit exists.
    """
    if (delta is None) == (value is None):
        raise ValueError("give exactly one of delta or value")

    def apply(doc: Any) -> None:
        name = counter
        if not name:
            first = _tool_limits(doc, tool)[:1]
            name = first[0].get("counter") if first and isinstance(first[0].get("counter"), str) else None
            targets = _limits_named(doc, name) if name else first
        else:
            targets = _limits_named(doc, name)
        if not targets:
            what = f"counter {counter!r}" if counter else f"tool {tool!r}"
            raise EditError(f"no limit to change: {what} has no limits in this policy")
        for lim in targets:
            old = lim.get("max")
            if not isinstance(old, int) or isinstance(old, bool):
                old = 1
            lim["max"] = max(1, old + delta) if delta is not None else max(1, int(value))  # type: ignore[arg-type]

    return _edit(text, fmt, apply)


def _tool_limits(doc: Any, tool: str | None) -> list[Any]:
    entry = _tool_entry(doc, tool or "", create=False) if tool else None
    limits = entry.get("limits") if isinstance(entry, dict) else None
    return list(limits) if isinstance(limits, list) else []


def _limits_named(doc: Any, counter: str) -> list[Any]:
    found = []
    groups = []
    all_tools = doc.get("all_tools")
    if isinstance(all_tools, dict):
        groups.append(all_tools.get("limits"))
    for entry in _tools(doc, create=False).values():
        if isinstance(entry, dict):
            groups.append(entry.get("limits"))
    for limits in groups:
        if isinstance(limits, list):
            found += [lim for lim in limits if isinstance(lim, dict) and lim.get("counter") == counter]
    return found


def set_action(text: str, fmt: str, tool: str, action: str) -> str:
    """Set `tools.<tool>.action` to `allow`, `require_approval` or `deny`.

    Creates the tool's entry when the policy does not list it yet.
    """
    if action not in ACTIONS:
        raise EditError(f"action {action!r} is not one of {', '.join(ACTIONS)}")

    def apply(doc: Any) -> None:
        _tool_entry(doc, tool, create=True)["action"] = action

    return _edit(text, fmt, apply)


def next_action(current: str | None) -> str:
    """The action after `current` in the cycle allow → require_approval → deny → allow."""
    cur = current if current in ACTIONS else "allow"
    return ACTIONS[(ACTIONS.index(cur) + 1) % len(ACTIONS)]


def set_hidden(text: str, fmt: str, tool: str, hidden: bool) -> str:
    """Add `tool` to, or remove it from, the top-level `hide` list.

    Raises EditError when unhiding a tool that is hidden only by `"*"`.
    """

    def apply(doc: Any) -> None:
        hide = doc.get("hide")
        if hide is None:
            if not hidden:
                return
            doc["hide"] = tomlkit.array() if _is_toml(doc) else []
            hide = doc["hide"]
        if not isinstance(hide, list):
            raise EditError("`hide` is not a list; fix it first")
        if hidden:
            if tool not in hide:
                hide.append(tool)
        else:
            if tool in hide:
                hide.remove(tool)
            elif "*" in hide:
                raise EditError(f"{tool!r} is hidden by \"*\" in hide; list it under [tools] or remove \"*\"")

    return _edit(text, fmt, apply)


# -- writing and showing -----------------------------------------------------

def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Replace `path`'s content with `text` atomically: a temporary file in the
    same folder, flushed and fsynced, then renamed over it (POSIX rename is
    atomic), so a reader or a crash sees the old file or the new one, never
    half of one. The file's permission bits are kept. Raises OSError.
    """
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.chmod(tmp, p.stat().st_mode & 0o7777)
        except FileNotFoundError:
            pass
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(p.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def short_diff(old: str, new: str, name: str = "policy", context: int = 0) -> str:
    """A unified diff of two texts with `context` lines around each change ("" when equal)."""
    lines = difflib.unified_diff(old.splitlines(), new.splitlines(), f"a/{name}", f"b/{name}",
                                 n=context, lineterm="")
    return "\n".join(lines)
