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

Validation is pydantic's: each table is a model in `mcpguard.policy.schema`
(unknown keys forbidden, `Literal` choices, strict types, durations), with
rules across keys and across the document (a condition's value fits its op;
one meaning per counter) that run even when other keys fail. Its errors are
worded here, each placed by `mcpguard.policy.positions`.

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

import errno
import json
import os
import re
import stat
from typing import Any

import tomlkit
from pydantic import ValidationError
from tomlkit.exceptions import ParseError, TOMLKitError

from mcpguard.policy.conditions import compile_test
from mcpguard.policy.model import (
    Condition,
    ConditionEntry,
    Policy,
    PolicyError,
    PolicyIssue,
    PolicySource,
    ToolRule,
)
from mcpguard.policy.positions import Path, Positions, dotted, json_positions, toml_positions
from mcpguard.policy.schema import (
    AllToolsTable,
    ConditionTable,
    EntryTable,
    LimitTable,
    PolicyFile,
    ToolTable,
    mode_in_force,
)
from mcpguard.validation import Explained, did_you_mean, explain, keys_of, kind_of

# the keys each table knows, as its model declares them
TOP_KEYS = tuple(keys_of(PolicyFile))
ALL_TOOLS_KEYS = tuple(keys_of(AllToolsTable))
TOOL_KEYS = tuple(keys_of(ToolTable))
LIMIT_KEYS = tuple(keys_of(LimitTable))
ENTRY_KEYS = tuple(keys_of(EntryTable))
CONDITION_KEYS = tuple(keys_of(ConditionTable))

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
    issues = [PolicyIssue(path, line, col, f'key "{dup[-1]}" appears twice in {dotted(dup[:-1]) or "the document"}',
                          "keep one; JSON would keep only the last") for dup, (line, col) in positions.duplicates]
    try:
        doc = PolicyFile.model_validate(data)
    except ValidationError as exc:
        issues += [_issue(x, path, positions) for x in explain(PolicyFile, exc)]
    if issues:
        raise PolicyError(sorted(issues, key=lambda i: (i.line, i.col)))
    return _policy(doc, PolicySource(path=path, fmt=fmt, text=text, document=document), positions)


# -- problems, worded ---------------------------------------------------------------------------


def _issue(x: Explained, file: str, positions: Positions) -> PolicyIssue:
    """One validation error as a `PolicyIssue` at the position of what it is about."""
    path = dotted(x.loc)
    message = hint = None
    if x.says is not None:
        message = None if x.says.message is None else x.word(x.says.message, path)
        hint = None if x.says.hint is None else x.word(x.says.hint, path)
    if message is None or hint is None:
        usual_message, usual_hint = _usual_words(x, path)
        message = usual_message if message is None else message
        hint = usual_hint if hint is None else hint
    line, col = positions.locate(x.loc)
    return PolicyIssue(file, line, col, message, hint)


def _usual_words(x: Explained, path: str) -> tuple[str, str]:
    """(message, hint) for an error of `x.type` where no `Says` words it."""
    kind, parent = x.type, dotted(x.loc[:-1])
    shown = f'"{x.input}"' if isinstance(x.input, str) else repr(x.input)
    if kind == "missing":
        return (f'{parent} is missing "{x.key}"' if parent else f'missing key "{x.key}"'), ""
    if kind == "extra_forbidden":
        keys = x.known_keys()
        where = f" in {parent}" if parent else ""
        return f'unknown key "{x.key}"{where}', did_you_mean(x.key, keys) or "allowed keys: " + ", ".join(keys)
    if kind in ("model_type", "dict_type"):
        hint = getattr(x.at, "table_hint", "")
        return f"{path or 'the policy'} must be a table, not {kind_of(x.input)}", x.word(hint, path) if hint else ""
    if kind == "literal_error":
        return f"{x.key} {shown} is not one of {', '.join(x.choices)}", did_you_mean(x.input, x.choices)
    if kind == "string_type":
        return f"{path} must be a string, not {kind_of(x.input)}", f'write {x.key} = "..."'
    if kind == "blank":
        return f"{path} is empty", "give it a value or remove the key"
    if kind == "duration":
        return f"{path}: {x.ctx['detail']}", 'write seconds (90) or a duration ("30s", "2m", "1h")'
    if kind == "duration_not_positive":
        return f"{path} must be more than 0 seconds", 'for example "2m"'
    if kind == "bool_type":
        return f"{x.key} must be true or false, not {shown}", ""
    return x.ctx.get("message") or f"{path}: {x.msg}", x.ctx.get("hint", "")


# -- a valid document, as the Policy evaluate reads -------------------------------------------------


def _policy(doc: PolicyFile, source: PolicySource, positions: Positions) -> Policy:
    """The `Policy` of a validated document, with the warnings it raises (see the module docstring)."""
    warnings: list[PolicyIssue] = []
    shadow_all = doc.shadow

    def warn(path: Path, message: str, hint: str) -> None:
        warnings.append(PolicyIssue(source.path, *positions.locate(path), message, hint))

    def mode(path: Path, written: str | None, inherited: str) -> str:
        if written == "enforce" and shadow_all:
            warn(path + ("mode",), f'{dotted(path)} has mode = "enforce" but the policy has shadow = true, '
                 "so nothing is enforced", "remove shadow = true to enforce this rule, or remove its mode")
        elif written == "enforce" and inherited == "shadow":
            warn(path + ("mode",), f'{dotted(path)} has mode = "enforce" inside a tool rule in shadow mode, '
                 "so it is not enforced", "a shadow tool rule enforces none of its parts")
        return mode_in_force(written, inherited)

    def limits(path: Path, tables: Any, inherited: str) -> tuple[Any, ...]:
        if not tables:  # most tools have none: this runs for every tool of the policy
            return ()
        return tuple(lim.to_limit(path + (i,), mode(path + (i,), lim.mode, inherited)) for i, lim in enumerate(tables))

    def entries(path: Path, tables: Any, inherited: str) -> tuple[ConditionEntry, ...]:
        if not tables:
            return ()
        out = []
        for i, e in enumerate(tables):
            p = path + (i,)
            out.append(ConditionEntry(conditions=tuple(_condition(c) for c in e.conditions), on_deny=e.on_deny,
                                      path=dotted(p), mode=mode(p, e.mode, inherited)))
        return tuple(out)

    base = "shadow" if shadow_all else "enforce"
    all_limits = limits(("all_tools", "limits"), doc.all_tools.limits if doc.all_tools else (), base)
    tools: dict[str, ToolRule] = {}
    for name, t in doc.tools.items():
        path: Path = ("tools", name)
        in_force = mode(path, t.mode, base)
        if t.approval_timeout is not None and t.action not in (None, "require_approval"):
            warn(path + ("approval_timeout",), f"approval_timeout of {name} is unused: its action is {t.action}",
                 'it applies to action = "require_approval"')
        tools[name] = ToolRule(
            name=name,
            action=t.action,
            reason=t.reason,
            approval_timeout_s=t.approval_timeout,
            risk=t.risk,
            limits=limits(path + ("limits",), t.limits, in_force),
            deny_if=entries(path + ("deny_if",), t.deny_if, in_force),
            require=entries(path + ("require",), t.require, in_force),
            mode=in_force,
        )
    hide = tuple(dict.fromkeys(doc.hide))
    hidden_names = {h for h in hide if h != "*"}
    for name, rule in tools.items():
        if name in hidden_names and (rule.limits or rule.deny_if or rule.require or rule.action):
            warn(("tools", name), f"{name} is hidden, so its rules never apply", f'remove "{name}" from hide, or its rules')
    return Policy(
        version=doc.version,
        default=doc.default,
        hide=hide,
        all_tools_limits=all_limits,
        tools=tools,
        on_tool_change=doc.on_tool_change,
        approval_timeout_s=doc.approval_timeout,
        source=source,
        warnings=tuple(warnings),
        shadow=shadow_all,
    )


def _condition(c: ConditionTable) -> Condition:
    value = True if c.op == "exists" and c.value is None else c.value
    return Condition(path=c.path, op=c.op, value=value, test=compile_test(c.path, c.op, value))
