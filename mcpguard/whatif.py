"""What would change: recorded `tools/call`s decided again under another policy.

`mcpguard replay` and the console's policy editor ask the same question: had
this policy been running, which of these calls would have been decided
differently? The audit log's `decision` records hold what a replay needs (time,
server, tool, grant, session, client, arguments unless redacted, the decision
and its rule), so:

- `read_calls(path)` reads an audit log into `RecordedCall`s, oldest first,
  and lists every record it could not read (`Unreadable`, with its line)
  instead of skipping it;
- `what_would_change(calls, new_policy, old_policy=None, since=None)` decides
  each call again under `new_policy`, with rate-limit counters replayed in
  recorded order on the recorded clock (epoch `ts`), and returns a `Report`:
  how many calls, how many would change and how, each changed call with its
  old and new decision and the new trace, and the calls that cannot be
  decided again because their decision depends on arguments the log does not
  hold.

Replay rules:

- The clock is each record's `ts` (epoch seconds); windows slide on it, and
  scopes use the recorded `grant`, `session` and `client` as they were. Calls
  are replayed in `ts` order (stable, so concurrent calls keep log order).
- A call counts against the new policy's limits when the new policy lets it
  through: `allow`, or `require_approval` taken as approved unless the log
  shows a person denied it or let it time out (the recording cannot say what
  a person would have answered to a question never asked, so it counts as
  the call that goes: the stricter reading for the limits of later calls).
  Shadow limits count in their own counters, as in the gateway.
- The old decision is the recorded one (a call refused as it was forwarded,
  `rate_limited` in its completion, counts as `rate_limited`), or, with
  `old_policy`, that policy's decision replayed the same way (the console
  compares its policy with an edit of it on the same calls).
- A call recorded as `tool_changed` is replayed with its tool marked changed;
  the log does not record when a person accepts a change, so other calls are
  replayed as unchanged.
- Arguments the log does not hold are never guessed. mcpguard.audit lists
  in a record's `redacted` and `truncated` (JSON Pointers) the values it
  replaced by `"[redacted]"` or by its truncation marker
  (`{"_mcpguard_truncated": true, ...}`, which may stand for the whole
  `arguments`); those are unknown, and, as the writer promises, every other
  value is as received (an argument that is the string `"[redacted]"` is
  that string). A record without `arguments` has them all unknown, and so
  has one whose `arguments` is the marker itself. A call whose decision reads an unknown
  value (a `deny_if`/`require` condition on it, up to the rule that decided;
  `exists` reads only its presence, which is known) is reported in
  `Report.unknown` with the path and why, and counts against limits only if
  it went through in the recording.

Changes (`CHANGES`), by the old and new decision codes:
`allow_to_deny` (allowed or sent for approval before, now denied by a rule),
`deny_to_allow`, `newly_rate_limited`, `newly_requires_approval`,
`no_longer_requires_approval`, `deny_reason_changed` (denied both times, with
another code: `policy_denied` and `hidden`, say). A call whose code is the same
is unchanged, even if another rule of the same kind decided it.

Pure: no clock, no network; `read_calls` is the only function that reads a
file. Never imports textual or rich. Speed: bench/bench_replay.py.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pydantic_core

from mcpguard.audit import KINDS, REDACTED, TRUNCATED, iso_utc
from mcpguard.policy import Decision, Policy, TraceStep, evaluate
from mcpguard.policy.conditions import split_path
from mcpguard.policy.model import Condition, ConditionEntry
from mcpguard.ratelimit import Counters

CHANGES: tuple[str, ...] = (
    "allow_to_deny",
    "deny_to_allow",
    "newly_rate_limited",
    "newly_requires_approval",
    "no_longer_requires_approval",
    "deny_reason_changed",
)
"""The kinds of change, in the order reports list them."""

CHANGE_TEXT: dict[str, str] = {
    "allow_to_deny": "allow → deny",
    "deny_to_allow": "deny → allow",
    "newly_rate_limited": "newly rate-limited",
    "newly_requires_approval": "newly needing approval",
    "no_longer_requires_approval": "no longer needing approval",
    "deny_reason_changed": "denied for another reason",
}

DECISION_CODES: dict[str, str] = {
    "allowed": "allow",
    "approval_required": "require_approval",
    "policy_denied": "deny",
    "rate_limited": "deny",
    "hidden": "deny",
    "no_policy": "deny",
    "tool_changed": "deny",
}
"""The decision codes a `decision` record holds, with their action."""

_NOT_GONE = frozenset({"approval_denied", "approval_timeout", "policy_changed", "cancelled"})
_WENT = frozenset({"allowed", "approved"})
_KINDS = frozenset(KINDS)
_WHOLE = {"absent": "not recorded", "redacted": "redacted", "truncated": "truncated"}  # held -> why


class RecordedCall(NamedTuple):
    """One `tools/call` as the audit log's `decision` record holds it.

    It has `mcpguard.call.Call`'s attributes (`server`, `tool`, `arguments`,
    `grant`, `session_id`, `client`, `call_id`), so it is decided as the call
    itself. Then:

    - `ts`: when it was decided, epoch seconds (the replay's clock).
    - `decision`: the recorded decision code (`allowed`, `policy_denied`, ...).
    - `action`, `rule`, `message`: the recorded action, deciding rule, text (or None).
    - `outcome`: the completion's code when it differs from `decision`
      (`approved`, `approval_denied`, `approval_timeout`, `rate_limited` when
      refused as it was forwarded, `upstream_error`, ...); None otherwise, or
      when no completion was read.
    - `line`: its line in the audit file (1-based; 0 when not read from a file).
    - `held`: how much of `arguments` the log holds: `whole`; `marked` (some
      values were redacted or truncated); or none of it: `absent` (no
      `arguments`), `redacted`, `truncated` (replaced whole; `arguments` is
      then `{}`).
    - `time`: the record's ISO-8601 `time`, or None.
    - `changed`: for `marked`, the record's own account of what it changed
      inside `arguments` (its `redacted` and `truncated` lists): JSON Pointer
      relative to `arguments` (`/api_key`, `/headers/Authorization`) ->
      `redacted` or `truncated`; None otherwise.
    """

    server: str
    tool: str
    arguments: dict[str, Any]
    grant: str
    session_id: str | None
    client: str | None
    call_id: str
    ts: float
    decision: str
    action: str | None = None
    rule: str | None = None
    message: str | None = None
    outcome: str | None = None
    line: int = 0
    held: str = "whole"
    time: str | None = None
    changed: dict[str, str] | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any], line: int = 0) -> RecordedCall:
        """A `RecordedCall` from one `decision` record (a parsed JSON object).

        Raises `RecordError` naming what is missing or of the wrong type
        (`ts` a number, `server`, `tool`, `decision` strings, `arguments` an
        object, `grant`, `session`, `client`, `call_id` strings when present,
        `redacted` and `truncated` lists of JSON Pointers when present).
        """
        return _decision(record, line)


class RecordError(ValueError):
    """A record that is not of the shape a replay reads; the message says why."""


class AuditReadError(OSError):
    """The audit log cannot be read at all (missing, unreadable); the message names the file."""


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A line of the audit log that could not be read: `line` (1-based) and `reason`."""

    line: int
    reason: str


@dataclass(slots=True)
class AuditCalls:
    """What `read_calls` found in an audit log.

    - `path`: the file.
    - `calls`: every `decision` record as a `RecordedCall`, in `ts` order
      (after `server`, when given, only that server's).
    - `unreadable`: the lines that could not be read, in file order.
    - `records`: records read (every kind); `other`: records of the kinds a
      replay does not use (`policy_reloaded`, `policy_rejected`, `tool_changed`).
    - `servers`: server name -> calls recorded for it (before the `server` filter).
    - `decided_again`: `decision` records for a call already decided (a call
      decided again after its approval); the first decision is the one kept.
    """

    path: str
    calls: list[RecordedCall] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)
    records: int = 0
    other: int = 0
    servers: dict[str, int] = field(default_factory=dict)
    decided_again: int = 0


class UnknownArg(NamedTuple):
    """An argument a decision reads and the log does not hold: `path` (`args.api_key`),
    `reason` (`redacted`, `truncated`, `not recorded`), `rule` (the deny_if/require
    entry reading it), `shadow` (that entry is in shadow mode)."""

    path: str
    reason: str
    rule: str
    shadow: bool


@dataclass(frozen=True, slots=True)
class Verdict:
    """A decision in short: `action` (`allow`, `deny`, `require_approval`), `code`, `rule`, `message`."""

    action: str
    code: str
    rule: str | None
    message: str | None


@dataclass(frozen=True, slots=True)
class Change:
    """One call whose decision would change, or cannot be known.

    - `call`: the `RecordedCall`.
    - `old`: the recorded `Verdict` (or the old policy's).
    - `new`: the new policy's `Decision` (its `trace` is what `mcpguard explain`
      prints); for an unknown call, the decision with the values as the log
      holds them, which is not to be trusted.
    - `change`: one of `CHANGES`, or `unknown`.
    - `unknown`: for `unknown`, the `UnknownArg`s the decision depends on.
    """

    call: RecordedCall
    old: Verdict
    new: Decision
    change: str
    unknown: tuple[UnknownArg, ...] = ()

    @property
    def step(self) -> TraceStep | None:
        """The step of the new trace that decided (its last one)."""
        return self.new.trace[-1] if self.new.trace else None


@dataclass(slots=True)
class Report:
    """What `what_would_change` found.

    - `server`: the server the calls were made to (None when there were none).
    - `calls`: calls decided again (those at or after `since`).
    - `changes`: the calls that would change, in time order (`Change`).
    - `unknown`: the calls whose new decision depends on arguments the log does
      not hold (`Change` with `change == "unknown"`), in time order.
    - `counts`: every kind of `CHANGES` -> how many calls (0 included).
    - `would`: for the new policy's shadow rules, `would_deny`,
      `would_rate_limit`, `would_require_approval` -> calls they would have
      refused or sent for approval (a shadow rule reading an argument the log
      does not hold counts under `unknown`).
    - `warmup`: calls before `since` replayed only to fill the counters.
    """

    server: str | None
    calls: int = 0
    changes: list[Change] = field(default_factory=list)
    unknown: list[Change] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHANGES, 0))
    would: dict[str, int] = field(default_factory=dict)
    warmup: int = 0

    @property
    def changed(self) -> int:
        """Calls that would change (`len(changes)`)."""
        return len(self.changes)


# --- reading the audit log ----------------------------------------------------------


def read_calls(path: str | os.PathLike[str], *, server: str | None = None) -> AuditCalls:
    """The recorded calls of the audit log at `path` (JSON Lines, mcpguard.audit's records).

    Every line is read; a line that is not a JSON object, a record of an
    unknown kind or of the wrong shape, and a torn last line (a write cut
    short) are listed in `unreadable` with their line and why, never skipped
    silently. `server`, when given, keeps only that server's calls. Raises
    `AuditReadError` when the file is missing or cannot be read.
    """
    name = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise AuditReadError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise AuditReadError(f"{name}: is a folder, not an audit log") from None
    except OSError as exc:
        raise AuditReadError(f"{name}: cannot read: {exc.strerror or exc}") from None
    # the records kept form no reference cycles, and a log holds many of them: the
    # cyclic collector would walk the growing heap again and again for nothing
    paused = gc.isenabled()
    gc.disable()
    try:
        return _read(name, data, server)
    finally:
        if paused:
            gc.enable()


def _read(name: str, data: bytes, server: str | None) -> AuditCalls:
    out = AuditCalls(path=name)
    lines = data.split(b"\n")
    last = len(lines)
    calls = out.calls
    bad = out.unreadable
    servers = out.servers
    index: dict[str, int] = {}  # call_id -> position in calls
    early: dict[str, str] = {}  # call_id -> completion code, for a completion read before its decision
    records = other = 0
    loads = pydantic_core.from_json
    completion = _completion_fields().validator.validate_json
    for i, raw in enumerate(lines, 1):
        if not raw or raw.isspace():
            continue
        try:
            if raw.startswith(_COMPLETION_HEAD):
                # the whole line is still parsed and checked; only the fields a replay
                # reads are built
                rec = completion(raw)
            else:
                rec = loads(raw, cache_strings=True)  # tool, grant, codes repeat on every line
        except ValueError as exc:
            why = _json_error(exc)
            if why is None:
                bad.append(Unreadable(i, "completion record: needs call_id and decision strings"))
            elif i == last:
                bad.append(Unreadable(i, f"torn last line (no newline, not JSON: {why}): a write cut short"))
            else:
                bad.append(Unreadable(i, f"not a JSON audit record ({why})"))
            continue
        if type(rec) is not dict:
            bad.append(Unreadable(i, f"not a JSON object but {_kind(rec)}"))
            continue
        records += 1
        kind = rec.get("kind")
        if kind == "decision":
            try:
                rc = _decision(rec, i)
            except RecordError as exc:
                bad.append(Unreadable(i, f"decision record: {exc}"))
                continue
            servers[rc.server] = servers.get(rc.server, 0) + 1
            if server is not None and rc.server != server:
                continue
            cid = rc.call_id
            if cid:
                if cid in index:
                    out.decided_again += 1
                    continue
                index[cid] = len(calls)
                if early and cid in early and early[cid] != rc.decision:
                    rc = rc._replace(outcome=early.pop(cid))
            calls.append(rc)
        elif kind == "completion":
            cid = rec.get("call_id")
            code = rec.get("decision")
            if type(cid) is not str or type(code) is not str:
                bad.append(Unreadable(i, "completion record: needs call_id and decision strings"))
                continue
            at = index.get(cid)
            if at is None:
                early[cid] = code
            elif code != calls[at].decision:
                calls[at] = calls[at]._replace(outcome=code)
        elif kind in _KINDS:
            other += 1
        elif kind is None:
            bad.append(Unreadable(i, 'record without "kind"'))
        else:
            shown = f'"{kind}"' if isinstance(kind, str) else repr(kind)
            bad.append(Unreadable(i, f"unknown record kind {shown} (known: {', '.join(KINDS)})"))
    out.records, out.other = records, other
    if any(calls[k].ts < calls[k - 1].ts for k in range(1, len(calls))):
        calls.sort(key=_ts)
    return out


_COMPLETION_HEAD = b'{"kind":"completion",'
_completion_adapter: Any = None


def _completion_fields() -> Any:
    """A pydantic TypeAdapter that reads a completion line's `kind`, `call_id` and
    `decision` (strings) and checks the rest of the line is JSON, building nothing else."""
    global _completion_adapter
    if _completion_adapter is None:
        from pydantic import ConfigDict, TypeAdapter
        from typing_extensions import TypedDict

        class Completion(TypedDict, total=False):
            __pydantic_config__ = ConfigDict(extra="ignore")  # type: ignore[misc]
            kind: str
            call_id: str
            decision: str

        _completion_adapter = TypeAdapter(Completion)
    return _completion_adapter


def _json_error(exc: ValueError) -> str | None:
    """The parser's words for a line that is not JSON; None when it is JSON of the wrong types."""
    errors = getattr(exc, "errors", None)
    if errors is None:  # pydantic_core.from_json
        return str(exc)
    for e in errors():
        if e.get("type") == "json_invalid":
            return str(e.get("msg", "")).removeprefix("Invalid JSON: ")
    return None


def _ts(rc: RecordedCall) -> float:
    return rc.ts


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


_STR_OR_NONE = (str, type(None))


def _decision(rec: dict[str, Any], line: int) -> RecordedCall:
    get = rec.get
    ts = get("ts")
    server = get("server")
    tool = get("tool")
    code = get("decision")
    grant = get("grant", "local")
    session = get("session")
    client = get("client")
    call_id = get("call_id", "")
    if not ((type(ts) is float or type(ts) is int) and type(server) is str and type(tool) is str
            and type(code) is str and isinstance(grant, _STR_OR_NONE) and isinstance(session, _STR_OR_NONE)
            and isinstance(client, _STR_OR_NONE) and isinstance(call_id, _STR_OR_NONE)):
        raise RecordError(_shape_error(rec))
    action = get("action")
    if action is None:
        action = DECISION_CODES.get(code)
        if action is None:
            raise RecordError(f'unknown decision "{code}" and no "action"')
    elif action not in _ACTIONS:
        raise RecordError(f'"action" must be allow, deny or require_approval, not {action!r}')
    args = get("arguments")
    changed = None
    listed = get("redacted")
    cut = get("truncated")
    if listed is not None or cut is not None:  # the record says what it changed
        changed = _changes(listed, "redacted", _changes(cut, "truncated", {}))
    if type(args) is dict:
        if args.get(TRUNCATED) is True or (changed is not None and "" in changed):
            held, args, changed = "truncated", {}, None
        elif changed:
            held = "marked"
        else:  # nothing listed: every value is as received
            held, changed = "whole", None
    elif args is None:
        held, args, changed = "absent", {}, None
    elif args == REDACTED:
        held, args, changed = "redacted", {}, None
    else:
        raise RecordError(f'"arguments" must be an object, not {_kind(args)}')
    rule = get("rule")
    message = get("message")
    time = get("time")
    # tuple.__new__ directly: NamedTuple's own __new__ binds 16 arguments by name per record
    return _new_tuple(RecordedCall, (server, tool, args, grant or "local", session, client, call_id or "", float(ts),
                                     code, action, rule if type(rule) is str else None,
                                     message if type(message) is str else None, None, line, held,
                                     time if type(time) is str else None, changed))


def _changes(pointers: Any, why: str, into: dict[str, str]) -> dict[str, str]:
    """`into` plus the pointers under `/arguments` of a record's `redacted` or
    `truncated` list, relative to `arguments` (`""` for `arguments` itself)."""
    if pointers is None:
        return into
    if type(pointers) is not list or any(type(p) is not str for p in pointers):
        raise RecordError(f'"{why}" must be a list of JSON Pointers')
    for p in pointers:
        if p == "/arguments" or p.startswith("/arguments/"):
            into.setdefault(p[len("/arguments"):], why)
    return into


_ACTIONS = frozenset({"allow", "deny", "require_approval"})
_new_tuple = tuple.__new__


def _shape_error(rec: dict[str, Any]) -> str:
    """Why a decision record is not of the shape a replay reads (the first thing wrong)."""
    ts = rec.get("ts")
    if "ts" not in rec:
        return 'missing "ts"'
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        return '"ts" must be epoch seconds (a number)'
    for key in ("server", "tool", "decision"):
        if key not in rec:
            return f'missing "{key}"'
        if type(rec[key]) is not str:
            return f'"{key}" must be a string'
    for key in ("grant", "session", "client", "call_id"):
        if not isinstance(rec.get(key), _STR_OR_NONE):
            return f'"{key}" must be a string'
    return "not a decision record"  # pragma: no cover - every failing test above names one


# --- what the log does not hold ------------------------------------------------------


def _pointer(parts: tuple[str, ...]) -> str:
    """The JSON Pointer of `args.a.b` inside `arguments`: `/a/b` (RFC 6901 escapes)."""
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def _condition_truth(cond: Condition, parts: tuple[str, ...], rc: RecordedCall) -> tuple[bool | None, str]:
    """Whether `cond` holds for the recorded arguments: True, False, or None (and why)
    when it reads a value the log does not hold."""
    whole = _WHOLE.get(rc.held)
    if whole is not None:
        return None, whole
    changed = rc.changed or {}
    cur: Any = rc.arguments
    for n, p in enumerate(parts):
        why = changed.get(_pointer(parts[:n])) if n else None
        if why is not None:
            return None, why
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list) and p.isdigit() and int(p) < len(cur):
            cur = cur[int(p)]
        else:
            return cond.test(rc.arguments), ""  # absent, as recorded: known
    if cond.op != "exists":  # presence is known even when the value is not
        here = _pointer(parts)
        for ptr, why in changed.items():
            if ptr == here or ptr.startswith(here + "/"):
                return None, why
    return cond.test(rc.arguments), ""


class _Entries:
    """The deny_if/require entries of a policy by path, with their conditions' parsed paths."""

    def __init__(self, policy: Policy):
        self.by_path: dict[str, ConditionEntry] = {}
        self.parts: dict[str, tuple[str, ...]] = {}
        for rule in policy.tools.values():
            for entry in rule.deny_if + rule.require:
                self.by_path[entry.path] = entry
                for c in entry.conditions:
                    self.parts.setdefault(c.path, split_path(c.path))

    def unknowns(self, decision: Decision, rc: RecordedCall) -> list[UnknownArg]:
        """What the decision read up to its deciding step and the log does not hold.

        Empty when the call was denied by an entry whose conditions the log holds:
        any entry before it that might have matched denies with the same code."""
        out: list[UnknownArg] = []
        for step in decision.trace:
            entry = self.by_path.get(step.rule)
            if entry is None:
                continue
            missing = self._missing(entry, rc, step.shadow)
            if not missing and step.rule == decision.rule and decision.action == "deny":
                return []
            out.extend(missing)
        return out

    def _missing(self, entry: ConditionEntry, rc: RecordedCall, shadow: bool) -> list[UnknownArg]:
        missing: list[UnknownArg] = []
        for c in entry.conditions:
            truth, why = _condition_truth(c, self.parts[c.path], rc)
            if truth is False:
                return []  # the entry does not match, whatever the rest holds
            if truth is None:
                missing.append(UnknownArg(c.path, why, entry.path, shadow))
        return missing


# --- deciding again --------------------------------------------------------------------


def _old_verdict(rc: RecordedCall) -> Verdict:
    if rc.outcome == "rate_limited" and rc.decision != "rate_limited":
        return Verdict("deny", "rate_limited", None, "refused as it was forwarded (its limit filled meanwhile)")
    return Verdict(rc.action or DECISION_CODES.get(rc.decision, "deny"), rc.decision, rc.rule, rc.message)


def _class(code: str, action: str) -> str:
    if code == "rate_limited":
        return "rate_limited"
    if action == "allow":
        return "allow"
    if action == "require_approval":
        return "approval"
    return "deny"


def classify(old: Verdict, new_code: str, new_action: str) -> str | None:
    """The kind of change (one of `CHANGES`) from `old` to a new decision's code and
    action, or None when the code is the same."""
    if old.code == new_code:
        return None
    was = _class(old.code, old.action)
    now = _class(new_code, new_action)
    if now == "rate_limited":
        return "newly_rate_limited"
    if now == "deny":
        return "allow_to_deny" if was in ("allow", "approval") else "deny_reason_changed"
    if now == "approval":
        return "newly_requires_approval" if was != "approval" else None
    if was == "approval":
        return "no_longer_requires_approval"
    return "deny_to_allow" if was in ("deny", "rate_limited") else None


def _went(rc: RecordedCall) -> bool:
    """Whether the call went upstream in the recording."""
    if rc.outcome is not None:
        return rc.outcome in _WENT
    return rc.decision == "allowed"


def longest_window_s(*policies: Policy | None) -> float:
    """The longest window (seconds) of any limit, enforcing or shadow, of `policies` (0 if none)."""
    longest = 0.0
    for p in policies:
        if p is None:
            continue
        lims = list(p.all_tools_limits)
        for rule in p.tools.values():
            lims.extend(rule.limits)
        for lim in lims:
            longest = max(longest, lim.window_s)
    return longest


class _Side:
    """One policy replayed over the calls: its counters, enforcing and shadow."""

    __slots__ = ("policy", "counters", "shadow", "entries")

    def __init__(self, policy: Policy, server: str):
        self.policy = policy
        self.counters = Counters(server)
        self.shadow = Counters(server)
        self.entries = _Entries(policy)

    def decide(self, rc: RecordedCall) -> tuple[Decision, list[UnknownArg] | None]:
        """Decide `rc` at its `ts`, count it if it goes, and say what it read that the log
        lacks (None when the log holds all its arguments)."""
        ts = rc.ts
        d = evaluate(rc, self.policy, self.counters, ts,  # type: ignore[arg-type]  # a Call-shaped record
                     tool_changed=rc.decision == "tool_changed", shadow_counters=self.shadow)
        unknown = None
        if rc.held != "whole":
            unknown = self.entries.unknowns(d, rc) or None
            if unknown is not None and any(not u.shadow for u in unknown):
                # the recording says whether it went; the new decision cannot
                if _went(rc):
                    self._consume(self.policy.limits_for(rc.tool), self.policy.shadow_limits_for(rc.tool), rc, ts)
                return d, unknown
        if d.action == "allow" or (d.action == "require_approval" and rc.outcome not in _NOT_GONE):
            if d.limits:
                self.counters.try_consume(d.limits, rc, ts)  # type: ignore[arg-type]
            if d.shadow_limits:
                self.shadow.try_consume(d.shadow_limits, rc, ts)  # type: ignore[arg-type]
        return d, unknown

    def _consume(self, limits: tuple[Any, ...], shadow_limits: tuple[Any, ...], rc: RecordedCall, ts: float) -> None:
        if limits:
            self.counters.try_consume(limits, rc, ts)  # type: ignore[arg-type]
        if shadow_limits:
            self.shadow.try_consume(shadow_limits, rc, ts)  # type: ignore[arg-type]


def what_would_change(
    calls: Iterable[RecordedCall],
    new_policy: Policy,
    *,
    old_policy: Policy | None = None,
    server: str | None = None,
    since: float | None = None,
) -> Report:
    """Decide recorded `calls` again under `new_policy` and report what would change.

    - `calls`: `RecordedCall`s of one server (`read_calls(...).calls`, or built
      with `RecordedCall.from_record` / the constructor); replayed in `ts` order.
    - `old_policy`: when given, the old decisions are that policy's, replayed
      the same way over the same calls, instead of the recorded ones.
    - `server`: keep only that server's calls.
    - `since`: epoch seconds; earlier calls are replayed only to fill the
      counters (those within the longest window before `since`) and are not
      reported.

    Returns a `Report`. Raises ValueError when the calls are to more than one
    server (a policy belongs to one server). Pure: the counters are its own.
    """
    todo: Sequence[RecordedCall] = [c for c in calls if c.server == server] if server is not None else (
        calls if isinstance(calls, list) else list(calls))
    names = {c.server for c in todo}
    if len(names) > 1:
        raise ValueError(f"calls to {len(names)} servers ({', '.join(sorted(names))}): a policy belongs to one; "
                         "pass server=")
    if any(todo[k].ts < todo[k - 1].ts for k in range(1, len(todo))):
        todo = sorted(todo, key=_ts)
    report = Report(server=next(iter(names)) if names else None)
    if not todo:
        return report
    srv = todo[0].server
    new = _Side(new_policy, srv)
    old = _Side(old_policy, srv) if old_policy is not None else None
    warm_from = since - longest_window_s(new_policy, old_policy) if since is not None else None
    counts = report.counts
    would = report.would
    changes = report.changes
    unknown_calls = report.unknown
    n = 0
    decide = new.decide
    for rc in todo:
        if since is not None and rc.ts < since:
            if rc.ts >= warm_from:  # type: ignore[operator]
                decide(rc)
                if old is not None:
                    old.decide(rc)
                report.warmup += 1
            continue
        n += 1
        d, unknown = decide(rc)
        if old is not None:
            od, old_unknown = old.decide(rc)
            if old_unknown:
                unknown = (unknown or []) + [u for u in old_unknown if u not in (unknown or ())]
            if od.code == d.code and unknown is None and d.shadow is None:
                continue  # the common case: the same decision, nothing to build
            before = Verdict(od.action, od.code, od.rule, od.message)
        else:
            if unknown is None and d.shadow is None and d.code == (
                    "rate_limited" if rc.outcome == "rate_limited" else rc.decision):
                continue
            before = _old_verdict(rc)
        if unknown is not None and any(u.shadow for u in unknown):
            would["unknown"] = would.get("unknown", 0) + 1
        elif d.shadow is not None:
            would[d.shadow.would] = would.get(d.shadow.would, 0) + 1
        if unknown is not None and any(not u.shadow for u in unknown):
            unknown_calls.append(Change(rc, before, d, "unknown", tuple(unknown)))
            continue
        kind = classify(before, d.code, d.action)
        if kind is not None:
            counts[kind] += 1
            changes.append(Change(rc, before, d, kind))
    report.calls = n
    return report


def change_to_json(ch: Change) -> dict[str, Any]:
    """One `Change` as a JSON object: the call (line, call_id, time, ts, tool, grant,
    session, client, arguments), `old` and `new` ({action, code, rule, message}),
    `change`, the new `trace` ([{rule, outcome, detail, shadow}]), and for an
    unknown call `unknown` ([{path, reason, rule, shadow}])."""
    rc = ch.call
    d = ch.new
    out: dict[str, Any] = {
        "line": rc.line, "call_id": rc.call_id, "time": rc.time or iso_utc(rc.ts), "ts": rc.ts,
        "tool": rc.tool, "grant": rc.grant, "session": rc.session_id, "client": rc.client,
        "arguments": rc.arguments if rc.held not in _WHOLE else None,
        "change": ch.change,
        "old": {"action": ch.old.action, "code": ch.old.code, "rule": ch.old.rule, "message": ch.old.message},
        "new": {"action": d.action, "code": d.code, "rule": d.rule, "message": d.message},
        "trace": [{"rule": s.rule, "outcome": s.outcome, "detail": s.detail, "shadow": s.shadow} for s in d.trace],
    }
    if ch.unknown:  # decided on values the log does not hold: not to be trusted
        del out["new"], out["trace"]
        out["unknown"] = [u._asdict() for u in ch.unknown]
    elif d.shadow is not None:
        out["new"].update(d.shadow_fields())
    return out


def report_to_json(report: Report) -> dict[str, Any]:
    """The `Report` as one JSON document: `server`, `calls`, `changed`, `unknown`
    (count), `counts` (every kind of `CHANGES`), `would`, `warmup`, `changes` and
    `unknown_calls` (lists of `change_to_json` objects)."""
    return {
        "server": report.server,
        "calls": report.calls,
        "changed": report.changed,
        "unknown": len(report.unknown),
        "counts": dict(report.counts),
        "would": dict(report.would),
        "warmup": report.warmup,
        "changes": [change_to_json(c) for c in report.changes],
        "unknown_calls": [change_to_json(c) for c in report.unknown],
    }
