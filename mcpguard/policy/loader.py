"""Load and validate policy files: PolicyLayer JSON v1 as is, or the same document in TOML.

Every error of a file is reported at once, each with file, line, column and a
hint; unknown keys are errors, never ignored. A file that fails
raises `PolicyError` and so never replaces a running policy.

The keys (PolicyLayer's, then ours):

    version = "1"                 required, PolicyLayer JSON v1
    default = "deny"              required: "allow" | "deny", for tools not listed
    description = "..."           optional text
    hide = ["tool", "*"]          tools removed from tools/list; "*" = every tool not listed
    [all_tools]  limits = [...]   limits every call counts against
    [tools.NAME]                  listed with no keys: allowed
      limits = [{counter, window, max, scope}]   scope optional, default "grant"
      require = [{conditions = [{path, op, value}], on_deny}]
      deny_if = [{conditions = [...], on_deny}]
      action, reason, approval_timeout, risk     (mcpguard's)
      mode = "shadow"             (mcpguard's) on a tool, a limit, a deny_if/require entry
    on_tool_change = "warn"       (mcpguard's) "warn" | "deny"
    approval_timeout = "2m"       (mcpguard's) default for require_approval; 120 s
    shadow = true                 (mcpguard's) the whole policy decides without enforcing

Decisions where the format leaves room:
- A counter's name is its identity, so two limits naming one counter must
  agree on window, max and scope, or the file is rejected (a shared counter
  has one gauge and one meaning). A tool may not name the same counter twice,
  nor one that `all_tools.limits` already counts (a call would count twice).
- Rules on a hidden tool never apply: a warning, not an error.
- `mode` is `"enforce"` (the default) or `"shadow"`. A shadow tool rule makes
  its limits and entries shadow too, and `shadow = true` makes every rule
  shadow; each `Limit`/`ConditionEntry`/`ToolRule` carries the mode in force.
  A counter is kept either for enforcing or for shadow limits (two sets of
  counters, so neither uses up the other's budget), so every limit naming one
  counter must also agree on the mode. A `mode = "enforce"` under
  `shadow = true` cannot enforce: a warning.
"""

from __future__ import annotations

import difflib
import errno
import json
import os
import re
import stat
from typing import Any

import tomlkit
from tomlkit.exceptions import ParseError, TOMLKitError

from mcpguard.durations import parse_duration
from mcpguard.policy.conditions import compile_test, split_path, validate_condition
from mcpguard.policy.model import (
    ACTIONS,
    DEFAULT_APPROVAL_TIMEOUT_S,
    DEFAULTS,
    MODES,
    ON_TOOL_CHANGE,
    OPS,
    RISK_LEVELS,
    SCOPES,
    WINDOWS,
    Condition,
    ConditionEntry,
    Limit,
    Policy,
    PolicyError,
    PolicyIssue,
    PolicySource,
    ToolRule,
)
from mcpguard.policy.positions import Path, Positions, json_positions, toml_positions

TOP_KEYS = ("version", "default", "description", "hide", "all_tools", "tools", "on_tool_change", "approval_timeout",
            "shadow")
ALL_TOOLS_KEYS = ("limits",)
TOOL_KEYS = ("action", "reason", "approval_timeout", "risk", "limits", "deny_if", "require", "mode")
LIMIT_KEYS = ("counter", "window", "max", "scope", "mode")
ENTRY_KEYS = ("conditions", "on_deny", "mode")
CONDITION_KEYS = ("path", "op", "value")

_TOMLKIT_SUFFIX = re.compile(r"\s+at line \d+ col \d+$")


def policy_format_of(path: str | os.PathLike[str]) -> str:
    """`json` for a `.json` file, else `toml`."""
    return "json" if str(path).lower().endswith(".json") else "toml"


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read and validate the policy file at `path` (`.json`: PolicyLayer JSON, else TOML).

    Raises `PolicyError` (with every issue, file:line:col) when the file cannot
    be read (see `read_policy_text`), does not parse, or does not validate.
    """
    name = str(path)
    return parse_policy(read_policy_text(path), policy_format_of(name), name)


_FILE_KINDS = {stat.S_IFDIR: "a folder", stat.S_IFIFO: "a named pipe (FIFO)", stat.S_IFSOCK: "a socket",
               stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}


def read_policy_bytes(path: str | os.PathLike[str]) -> tuple[bytes, os.stat_result]:
    """The bytes of the policy file at `path` and the `os.stat_result` of what was read.

    Only a regular file (or a symlink to one) is read. It is opened without
    blocking and checked with `fstat` before any read, so a named pipe in
    its place is refused at once instead of hanging the caller (the gateway
    reads policies in its event loop), and the stat describes the very file
    the bytes came from (`mcpguard.reload` compares them to see a file settle).

    Raises `PolicyError` with one issue at 1:1, `cannot read policy: <reason>`:
    missing, no permission, a folder, a pipe or device, a symlink loop, any
    other OS error.
    """
    name = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _unreadable(name, exc) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = _FILE_KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
            raise PolicyError([PolicyIssue(name, 1, 1, f"cannot read policy: it is {kind}, not a file",
                                           "point the config at a policy file")])
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks), st
    except OSError as exc:
        raise _unreadable(name, exc) from None
    finally:
        os.close(fd)


def decode_policy_text(data: bytes, path: str | os.PathLike[str]) -> str:
    """`data` decoded as UTF-8 (the only encoding a policy file may have).

    Raises `PolicyError` with one issue at 1:1 whose message says where the
    first byte that is not UTF-8 stands (line and column, counted in
    characters of the valid text before it).
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[:exc.start].decode("utf-8", errors="replace")
        line = before.count("\n") + 1
        col = len(before) - (before.rfind("\n") + 1) + 1
        raise PolicyError([PolicyIssue(
            str(path), 1, 1,
            f"cannot read policy: not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line}, column {col})",
            "save the file as UTF-8")]) from None


def read_policy_text(path: str | os.PathLike[str]) -> str:
    """The text of the policy file at `path`: `read_policy_bytes`, then `decode_policy_text`.

    Raises `PolicyError` (one issue at 1:1, `cannot read policy: ...`) for
    every state in which there is no UTF-8 text to read.
    """
    data, _ = read_policy_bytes(path)
    return decode_policy_text(data, path)


def _unreadable(name: str, exc: OSError) -> PolicyError:
    reason = exc.strerror or str(exc)
    hint = {errno.ENOENT: "check the path", errno.EACCES: "check the file's permissions",
            errno.EPERM: "check the file's permissions", errno.ELOOP: "the path is a symlink loop",
            errno.EISDIR: "point the config at a policy file"}.get(exc.errno or 0, "")
    return PolicyError([PolicyIssue(name, 1, 1, f"cannot read policy: {reason}", hint)])


def _toml_syntax_message(text: str, exc: ParseError) -> str:
    """tomlkit's message, except where it misleads: a string left open at the end of its line is
    reported as a control character ("use \\u000a instead"); say what a person must fix."""
    msg = _TOMLKIT_SUFFIX.sub("", str(exc))
    if msg.startswith("Control characters"):
        lines = text.split("\n")
        line = lines[exc.line - 1] if 0 < exc.line <= len(lines) else ""
        ch = line[exc.col] if 0 <= exc.col < len(line) else "\n"
        if ch in "\r\n":
            return "unterminated string: the closing quote is missing before the end of this line"
        return f"a control character (U+{ord(ch):04X}) inside a string: write it as \\u{ord(ch):04x}"
    return msg


def parse_policy(text: str, fmt: str = "toml", path: str = "policy") -> Policy:
    """Parse and validate a policy document's `text`.

    `fmt` is `toml` or `json`; `path` names the file in messages. Returns a
    `Policy` whose `source` keeps the parsed document (a tomlkit document for
    TOML, so edits keep comments and layout). Raises `PolicyError` listing
    every issue (syntax errors stop at the first, as the parsers do).
    """
    if fmt not in ("toml", "json"):
        raise PolicyError([PolicyIssue(path, 1, 1, f'unknown policy format "{fmt}"', "use toml or json")])
    if fmt == "toml":
        try:
            document: Any = tomlkit.parse(text)
        except ParseError as exc:
            msg = _toml_syntax_message(text, exc)
            raise PolicyError(
                [PolicyIssue(path, max(exc.line, 1), exc.col + 1, f"TOML syntax error: {msg}", "see https://toml.io")]
            ) from None
        except (TOMLKitError, ValueError) as exc:
            raise PolicyError([PolicyIssue(path, 1, 1, f"TOML syntax error: {exc}", "see https://toml.io")]) from None
        data = document.unwrap()
        positions = toml_positions(text)
    else:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PolicyError(
                [PolicyIssue(path, exc.lineno, exc.colno, f"JSON syntax error: {exc.msg}", "check commas, quotes and brackets")]
            ) from None
        data = document
        positions = json_positions(text)
    v = _Validator(path, positions, fmt)
    for dup, (line, col) in positions.duplicates:
        v.issues.append(PolicyIssue(path, line, col, f'key "{dup[-1]}" appears twice in {dotted(dup[:-1]) or "the document"}', "keep one; JSON would keep only the last"))
    policy = v.build(data, PolicySource(path=path, fmt=fmt, text=text, document=document))
    if v.issues or policy is None:
        raise PolicyError(sorted(v.issues, key=lambda i: (i.line, i.col)))
    return policy


def dotted(path: Path) -> str:
    """`("tools", "x", "limits", 0, "window")` -> `tools.x.limits[0].window`."""
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            key = p if re.fullmatch(r"[A-Za-z0-9_-]+", p) else json.dumps(p)
            out += f".{key}" if out else key
    return out


def _one_of(value: Any, allowed: tuple[str, ...]) -> str:
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, allowed, n=1, cutoff=0.7)
        if close:
            hint = f'did you mean "{close[0]}"?'
    return hint


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


class _Validator:
    def __init__(self, file: str, positions: Positions, fmt: str):
        self.file = file
        self.pos = positions
        self.fmt = fmt
        self.issues: list[PolicyIssue] = []
        self.warnings: list[PolicyIssue] = []
        self.counters: dict[str, Limit] = {}
        self.shadow_all = False

    def _issue(self, path: Path, message: str, hint: str) -> PolicyIssue:
        line, col = self.pos.locate(path)
        return PolicyIssue(self.file, line, col, message, hint)

    def err(self, path: Path, message: str, hint: str = "") -> None:
        self.issues.append(self._issue(path, message, hint))

    def warn(self, path: Path, message: str, hint: str = "") -> None:
        self.warnings.append(self._issue(path, message, hint))

    def table(self, path: Path, value: Any, keys: tuple[str, ...], what: str) -> dict[str, Any] | None:
        """`value` as a dict, with unknown keys reported; None when it is no table."""
        if not isinstance(value, dict):
            self.err(path, f"{dotted(path) or 'the policy'} must be a table, not {_kind(value)}", what)
            return None
        for k in value:
            if k not in keys:
                close = _one_of(k, keys)
                hint = close or ("allowed keys: " + ", ".join(keys))
                where = f" in {dotted(path)}" if path else ""
                self.err(path + (k,), f'unknown key "{k}"{where}', hint)
        return value

    def string(self, path: Path, value: Any, *, nonempty: bool = True) -> str | None:
        if not isinstance(value, str):
            self.err(path, f"{dotted(path)} must be a string, not {_kind(value)}", f"write {path[-1]} = \"...\"")
            return None
        if nonempty and not value.strip():
            self.err(path, f"{dotted(path)} is empty", "give it a value or remove the key")
            return None
        return value

    def choice(self, path: Path, value: Any, allowed: tuple[str, ...], name: str) -> str | None:
        if not isinstance(value, str) or value not in allowed:
            shown = f'"{value}"' if isinstance(value, str) else repr(value)
            self.err(path, f"{name} {shown} is not one of {', '.join(allowed)}", _one_of(value, allowed))
            return None
        return value

    def duration(self, path: Path, value: Any) -> float | None:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.err(path, f"{dotted(path)}: {exc}", 'write seconds (90) or a duration ("30s", "2m", "1h")')
            return None
        if seconds <= 0:
            self.err(path, f"{dotted(path)} must be more than 0 seconds", 'for example "2m"')
            return None
        return seconds

    def mode(self, path: Path, t: dict[str, Any], inherited: str) -> str:
        """The mode in force for a table with an optional `mode` key, under `inherited`."""
        if "mode" not in t:
            return inherited
        written = self.choice(path + ("mode",), t["mode"], MODES, "mode")
        if written is None:
            return inherited
        if written == "enforce" and self.shadow_all:
            self.warn(path + ("mode",), f'{dotted(path)} has mode = "enforce" but the policy has shadow = true, '
                      "so nothing is enforced", "remove shadow = true to enforce this rule, or remove its mode")
        if written == "enforce" and inherited == "shadow" and not self.shadow_all:
            self.warn(path + ("mode",), f'{dotted(path)} has mode = "enforce" inside a tool rule in shadow mode, '
                      "so it is not enforced", "a shadow tool rule enforces none of its parts")
        return "shadow" if "shadow" in (written, inherited) else "enforce"

    # --- the document ---------------------------------------------------------

    def build(self, data: Any, source: PolicySource) -> Policy | None:
        doc = self.table((), data, TOP_KEYS, "a policy is a table of keys like version, default, tools")
        if doc is None:
            return None
        version = default = None
        if "version" not in doc:
            self.err((), 'missing key "version"', 'add version = "1" (PolicyLayer JSON v1)')
        elif doc["version"] != "1":
            v = doc["version"]
            hint = 'write version = "1" (a string)' if v in (1, 1.0) else 'only "1" is recognised'
            self.err(("version",), f"version {v!r} is not supported", hint)
        else:
            version = "1"
        if "default" not in doc:
            self.err((), 'missing key "default"', 'add default = "deny" (unlisted tools are denied) or "allow"')
        else:
            default = self.choice(("default",), doc["default"], DEFAULTS, "default")
        if "description" in doc:
            self.string(("description",), doc["description"], nonempty=False)
        hide = self.hide(doc.get("hide", []))
        on_tool_change = "warn"
        if "on_tool_change" in doc:
            on_tool_change = self.choice(("on_tool_change",), doc["on_tool_change"], ON_TOOL_CHANGE, "on_tool_change") or "warn"
        approval_timeout_s = DEFAULT_APPROVAL_TIMEOUT_S
        if "approval_timeout" in doc:
            approval_timeout_s = self.duration(("approval_timeout",), doc["approval_timeout"]) or DEFAULT_APPROVAL_TIMEOUT_S
        if "shadow" in doc:
            if isinstance(doc["shadow"], bool):
                self.shadow_all = doc["shadow"]
            else:
                shown = f'"{doc["shadow"]}"' if isinstance(doc["shadow"], str) else repr(doc["shadow"])
                self.err(("shadow",), f"shadow must be true or false, not {shown}",
                         "shadow = true decides every call without enforcing (the call goes through)")
        base_mode = "shadow" if self.shadow_all else "enforce"

        all_limits: tuple[Limit, ...] = ()
        if "all_tools" in doc:
            at = self.table(("all_tools",), doc["all_tools"], ALL_TOOLS_KEYS, "all_tools holds limits = [...]")
            if at is not None and "limits" in at:
                all_limits = self.limits(("all_tools", "limits"), at["limits"], set(), mode=base_mode)
        self.all_tools_counters = {lim.counter: lim for lim in all_limits}

        tools: dict[str, ToolRule] = {}
        if "tools" in doc:
            raw_tools = self.table(("tools",), doc["tools"], tuple(doc["tools"]) if isinstance(doc["tools"], dict) else (), "tools maps tool names to their rules")
            if raw_tools is not None:
                for name, body in raw_tools.items():
                    rule = self.tool(name, body, base_mode)
                    if rule is not None:
                        tools[name] = rule
        hidden_names = {h for h in hide if h != "*"}
        for name, rule in tools.items():
            if name in hidden_names and (rule.limits or rule.deny_if or rule.require or rule.action):
                self.warn(("tools", name), f"{name} is hidden, so its rules never apply", f'remove "{name}" from hide, or its rules')
        if version is None or default is None or self.issues:
            return None
        return Policy(
            version=version,
            default=default,
            hide=hide,
            all_tools_limits=all_limits,
            tools=tools,
            on_tool_change=on_tool_change,
            approval_timeout_s=approval_timeout_s,
            source=source,
            warnings=tuple(self.warnings),
            shadow=self.shadow_all,
        )

    def hide(self, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list):
            self.err(("hide",), f"hide must be a list of tool names, not {_kind(value)}", 'write hide = ["tool_name"]')
            return ()
        out: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                self.err(("hide", i), f"hide[{i}] must be a tool name, not {item!r}", 'a tool name, or "*" for every unlisted tool')
            elif item not in out:
                out.append(item)
        return tuple(out)

    def tool(self, name: str, body: Any, base_mode: str) -> ToolRule | None:
        path: Path = ("tools", name)
        t = self.table(path, body, TOOL_KEYS, f"list a tool with an empty table to allow it: [tools.{name}]")
        if t is None:
            return None
        mode = self.mode(path, t, base_mode)
        action = reason = risk = None
        timeout = None
        if "action" in t:
            action = self.choice(path + ("action",), t["action"], ACTIONS, "action")
        if "reason" in t:
            reason = self.string(path + ("reason",), t["reason"])
        if "risk" in t:
            risk = self.choice(path + ("risk",), t["risk"], RISK_LEVELS, "risk")
        if "approval_timeout" in t:
            timeout = self.duration(path + ("approval_timeout",), t["approval_timeout"])
            if action != "require_approval" and "action" in t and action is not None:
                self.warn(path + ("approval_timeout",), f"approval_timeout of {name} is unused: its action is {action}", 'it applies to action = "require_approval"')
        limits = self.limits(path + ("limits",), t["limits"], set(), tool=name, mode=mode) if "limits" in t else ()
        deny_if = self.entries(path + ("deny_if",), t["deny_if"], mode) if "deny_if" in t else ()
        require = self.entries(path + ("require",), t["require"], mode) if "require" in t else ()
        return ToolRule(
            name=name,
            action=action,
            reason=reason,
            approval_timeout_s=timeout,
            risk=risk,
            limits=limits,
            deny_if=deny_if,
            require=require,
            mode=mode,
        )

    def limits(self, path: Path, value: Any, seen: set[str], tool: str | None = None,
               mode: str = "enforce") -> tuple[Limit, ...]:
        if not isinstance(value, list):
            self.err(path, f"{dotted(path)} must be a list of limits, not {_kind(value)}", f"use [[{dotted(path)}]] tables")
            return ()
        out: list[Limit] = []
        for i, item in enumerate(value):
            lim = self.limit(path + (i,), item, mode)
            if lim is None:
                continue
            p = path + (i,)
            if lim.counter in seen:
                self.err(p + ("counter",), f'counter "{lim.counter}" is named twice in {dotted(path)}', "each call would count twice; keep one")
                continue
            seen.add(lim.counter)
            if tool is not None and lim.counter in self.all_tools_counters:
                first = self.all_tools_counters[lim.counter]
                self.err(p + ("counter",), f'counter "{lim.counter}" is already counted for every tool by {first.path}', "each call would count twice; give this limit its own counter name")
                continue
            first = self.counters.get(lim.counter)
            if first is None:
                self.counters[lim.counter] = lim
            elif first.mode != lim.mode:
                enf, sh = (first, lim) if lim.shadow else (lim, first)
                self.err(
                    p + ("counter",),
                    f'counter "{lim.counter}" is enforced by {enf.path} and shadowed by {sh.path}',
                    "shadow limits count in counters of their own, so that neither uses up the other's budget: "
                    "give the shadow limit its own counter name",
                )
                continue
            elif (first.window, first.max, first.scope) != (lim.window, lim.max, lim.scope):
                self.err(
                    p + ("counter",),
                    f'counter "{lim.counter}" is defined twice differently: {first.path} says {first.describe()}, {lim.path} says {lim.describe()}',
                    "a counter's name is its identity: give both the same window, max and scope, or use another name",
                )
                continue
            out.append(lim)
        return tuple(out)

    def limit(self, path: Path, value: Any, inherited: str = "enforce") -> Limit | None:
        t = self.table(path, value, LIMIT_KEYS, 'a limit is {counter = "name", window = "minute", max = 30, scope = "grant"}')
        if t is None:
            return None
        mode = self.mode(path, t, inherited)
        ok = True
        for key in ("counter", "window", "max"):
            if key not in t:
                hints = {"counter": 'name it: counter = "writes" (tools naming one counter share it)', "window": 'window = "minute" (second, minute, hour, day)', "max": "max = 30 (calls per window)"}
                self.err(path, f'{dotted(path)} is missing "{key}"', hints[key])
                ok = False
        counter = self.string(path + ("counter",), t["counter"]) if "counter" in t else None
        window = self.choice(path + ("window",), t["window"], tuple(WINDOWS), "window") if "window" in t else None
        scope = self.choice(path + ("scope",), t["scope"], SCOPES, "scope") if "scope" in t else "grant"
        mx = t.get("max")
        if "max" in t:
            if isinstance(mx, bool) or not isinstance(mx, (int, float)) or (isinstance(mx, float) and not mx.is_integer()):
                self.err(path + ("max",), f"max must be a whole number of calls, not {mx!r}", "max = 30 means 30 calls per window")
                mx = None
            elif mx < 1:
                self.err(path + ("max",), f"max must be at least 1, not {mx!r}", 'to block the tool, use action = "deny"')
                mx = None
            else:
                mx = int(mx)
        if not ok or counter is None or window is None or scope is None or mx is None:
            return None
        return Limit(counter=counter, window=window, window_s=float(WINDOWS[window]), max=mx, scope=scope,
                     path=dotted(path), mode=mode)

    def entries(self, path: Path, value: Any, inherited: str = "enforce") -> tuple[ConditionEntry, ...]:
        kind = path[-1]
        if not isinstance(value, list):
            self.err(path, f"{dotted(path)} must be a list of entries, not {_kind(value)}", f"use [[{dotted(path)}]] tables with conditions = [...]")
            return ()
        out: list[ConditionEntry] = []
        for i, item in enumerate(value):
            p = path + (i,)
            t = self.table(p, item, ENTRY_KEYS, f'a {kind} entry is {{conditions = [{{path = "args.x", op = "eq", value = 1}}], on_deny = "..."}}')
            if t is None:
                continue
            mode = self.mode(p, t, inherited)
            on_deny = self.string(p + ("on_deny",), t["on_deny"]) if "on_deny" in t else None
            if "conditions" not in t:
                self.err(p, f'{dotted(p)} is missing "conditions"', 'conditions = [{path = "args.x", op = "exists"}]')
                continue
            conds = t["conditions"]
            if not isinstance(conds, list) or not conds:
                self.err(p + ("conditions",), f"{dotted(p)}.conditions must be a non-empty list", 'conditions = [{path = "args.x", op = "exists"}]')
                continue
            built = [self.condition(p + ("conditions", j), c) for j, c in enumerate(conds)]
            if all(c is not None for c in built):
                out.append(ConditionEntry(conditions=tuple(built), on_deny=on_deny, path=dotted(p), mode=mode))  # type: ignore[arg-type]
        return tuple(out)

    def condition(self, path: Path, value: Any) -> Condition | None:
        t = self.table(path, value, CONDITION_KEYS, 'a condition is {path = "args.x", op = "eq", value = ...}')
        if t is None:
            return None
        ok = True
        cpath = op = None
        if "path" not in t:
            self.err(path, f'{dotted(path)} is missing "path"', 'path = "args.NAME", the argument to test')
            ok = False
        else:
            cpath = self.string(path + ("path",), t["path"])
            if cpath is not None:
                try:
                    split_path(cpath)
                except ValueError:
                    hint = f'write "args.{cpath}"' if not cpath.startswith("args") else 'like "args.stage" or "args.tags.team"'
                    self.err(path + ("path",), f'path "{cpath}" must point into the arguments: args.NAME', hint)
                    cpath = None
        if "op" not in t:
            self.err(path, f'{dotted(path)} is missing "op"', "op is one of " + ", ".join(OPS))
            ok = False
        else:
            op = self.choice(path + ("op",), t["op"], OPS, "op")
        if op is not None:
            bad = validate_condition(op, t.get("value"), "value" in t)
            if bad is not None:
                self.err(path + ("value",) if "value" in t else path, bad[0], bad[1])
                op = None
        if not ok or cpath is None or op is None:
            return None
        value = t.get("value")
        if op == "exists" and value is None:
            value = True
        return Condition(path=cpath, op=op, value=value, test=compile_test(cpath, op, value))
