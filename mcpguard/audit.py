"""The audit log: append-only JSON Lines, one record per decision and completion.

Issue 3 item 9: who called what, what was decided and why. Each record is
one line of JSON, written with a single `write(2)` on a file opened with
`O_APPEND` (so lines from several writers never interleave) before `record`
returns, so it is on its way to disk before the agent gets its answer; with
`fsync=True` it is also forced to the device.

Record fields (absent ones are omitted):

- `kind`: `decision`, `completion`, `policy_reloaded`, `policy_rejected`,
  `tool_changed`, `malformed` (a request refused unread, e.g. a `tools/call`
  sent as a notification: `method`, `tool`, `arguments`, `grant`,
  `session`, `message`), others as given.
- `time` (ISO-8601 UTC, milliseconds, `Z`) and `ts` (epoch seconds).
- calls: `call_id`, `server`, `tool`, `grant`, `session`, `client`,
  `arguments` (secrets redacted), `decision` (the decision or outcome code:
  `allowed`, `policy_denied`, `rate_limited`, `approved`, ...), `action`,
  `rule` (the deciding rule's path), `message`, `retry_after_s`, `risk`,
  `approver` (who approved or denied), `duration_ms`, `is_error`,
  `result_size` (bytes of the result's JSON), `error`.
- policy: `server`, `path`, `diff` or `errors`, `source`.
- tools: `server`, `tool`, `old_fingerprint`, `new_fingerprint`.

Secrets: values under keys matching `token secret password passwd api_key
apikey authorization credential private_key` (case-insensitive, anywhere in
the key, ignoring `_`, `-` and the like: `X-Api-Key`, `apiKey`, `db_password`,
also `max_tokens`) are replaced by
`"[redacted]"`, at any depth of the record. Secrets inside free text are not
detected.

Disk errors never reach the caller: `record` counts them in `errors`, keeps
the message in `last_error`, logs a warning on the `mcpguard.audit` logger
(the first failure, then every 100th), publishes an `AuditWriteFailed` event
on the bus if one was given, and tries to reopen the file on the next record.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mcpguard.events import (
    ApprovalResolved,
    CallCompleted,
    CallDecided,
    CallReceived,
    Event,
    EventBus,
    MalformedRequest,
    PolicyRejected,
    PolicyReloaded,
    ToolChanged,
)

log = logging.getLogger("mcpguard.audit")

REDACTED = "[redacted]"
SECRET_KEYS = ("token", "secret", "password", "passwd", "api_key", "apikey", "authorization",
               "credential", "private_key")
KINDS = ("decision", "completion", "policy_reloaded", "policy_rejected", "tool_changed", "malformed")

_MAX_PENDING_CALLS = 10_000


@dataclass(frozen=True, slots=True)
class AuditWriteFailed(Event):
    """The audit log could not write a record; `errors` counts failures so far."""

    path: str
    error: str
    errors: int


_NOT_ALNUM = re.compile(r"[^a-z0-9]")


def _key_pattern(extra: Iterable[str] = ()) -> re.Pattern[str]:
    """Matches a key folded by `_fold` (lower case, only letters and digits)."""
    words = {_fold(w) for w in (*SECRET_KEYS, *extra)} - {""}
    return re.compile("|".join(re.escape(w) for w in sorted(words)))


def _fold(key: str) -> str:
    return _NOT_ALNUM.sub("", key.lower())


_DEFAULT_PATTERN = _key_pattern()


def redact(obj: Any, extra_keys: Iterable[str] = (), *, _pattern: re.Pattern[str] | None = None) -> Any:
    """A copy of `obj` with the values under secret-looking keys replaced by `"[redacted]"`.

    Walks dicts, lists and tuples at any depth (tuples become lists). A key
    is secret when it contains one of `SECRET_KEYS` or of `extra_keys`,
    compared in lower case with everything but letters and digits removed
    (`X-Api-Key`, `apiKey`, `api_key` all match `api_key`). Non-finite floats become strings (JSON has no NaN).
    Never mutates `obj`.
    """
    pattern = _pattern or (_key_pattern(extra_keys) if extra_keys else _DEFAULT_PATTERN)
    if isinstance(obj, dict):
        return {k: (REDACTED if isinstance(k, str) and pattern.search(_fold(k)) else redact(v, _pattern=pattern))
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact(v, _pattern=pattern) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def iso_utc(ts: float) -> str:
    """`2026-11-21T23:55:44.123Z` for epoch seconds `ts`."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditLog:
    """An append-only JSONL audit log at `path` (parent folders are created).

    - `fsync`: also `os.fsync` after each record (slower; survives power loss).
    - `redact_keys`: extra secret key fragments on top of `SECRET_KEYS`.
    - `bus`: where `AuditWriteFailed` is published on a disk error.
    - `clock`: epoch seconds for records without `ts` (tests pass their own).

    Counters: `records` written, `errors` failed. Construction never raises
    on a disk error either (it is counted; the next record retries).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: bool = False,
        redact_keys: Iterable[str] = (),
        bus: EventBus | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.bus = bus
        self.clock = clock
        self.records = 0
        self.errors = 0
        self.last_error: str | None = None
        self._pattern = _key_pattern(redact_keys)
        self._fd: int | None = None
        self._calls: dict[str, dict[str, Any]] = {}  # call_id -> who/what, from CallReceived
        try:
            self._open()
        except OSError as exc:
            self._failed(exc)

    # -- writing -------------------------------------------------------------
    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                               0o600)
        return self._fd

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self._fd is not None:  # reopen on the next record (the file may have moved)
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
        if self.errors == 1 or self.errors % 100 == 0:
            log.warning("audit log %s: cannot write (%d failed so far): %s", self.path, self.errors,
                        self.last_error)
        if self.bus is not None:
            self.bus.publish(AuditWriteFailed(path=str(self.path), error=self.last_error, errors=self.errors))

    def record(self, event: dict[str, Any]) -> None:
        """Append one record (a JSON object) and flush it before returning.

        Adds `time` and `ts` when absent (`ts` from `clock`), redacts
        secrets (see module docstring) without touching `event`, writes
        values JSON cannot hold as strings. Returns None; never raises on a
        disk error (see the module docstring). Records after `close()` reopen
        the file.
        """
        try:
            ts = event.get("ts")
            if not isinstance(ts, (int, float)):
                ts = self.clock()
            head = {"kind": event.get("kind"), "time": event.get("time") or iso_utc(ts), "ts": ts}
            body = redact({k: v for k, v in event.items() if k not in head and v is not None},
                          _pattern=self._pattern)
            line = json.dumps({**head, **body}, ensure_ascii=False, default=str, separators=(",", ":"))
            data = (line + "\n").encode("utf-8")
        except Exception as exc:  # a value that cannot be serialised: still never raise
            self._failed(exc)
            return
        try:
            fd = self._open()
            written = os.write(fd, data)
            while written < len(data):  # short writes happen on full disks and pipes
                written += os.write(fd, data[written:])
            if self.fsync:
                os.fsync(fd)
        except OSError as exc:
            self._failed(exc)
            return
        self.records += 1

    def close(self) -> None:
        """Close the file (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError as exc:
                self._failed(exc)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- from events ---------------------------------------------------------
    def record_event(self, event: Event) -> None:
        """Write the audit record an event stands for (none for some).

        `CallReceived` and `ApprovalResolved` are remembered (arguments and
        caller; approver) and fill the `decision` record of `CallDecided` and
        the `completion` record of `CallCompleted`; `PolicyReloaded`,
        `PolicyRejected` and `ToolChanged` give their own kinds. Other events
        are ignored.
        """
        ts = event.ts
        if isinstance(event, CallReceived):
            if len(self._calls) >= _MAX_PENDING_CALLS:  # a call that never completed
                self._calls.pop(next(iter(self._calls)))
            self._calls[event.call_id] = {"grant": event.grant, "session": event.session_id,
                                          "client": event.client, "arguments": event.arguments}
        elif isinstance(event, CallDecided):
            who = self._calls.get(event.call_id, {})
            self.record({
                "kind": "decision", "ts": ts, "call_id": event.call_id, "server": event.server,
                "tool": event.tool, "grant": who.get("grant"), "session": who.get("session"),
                "client": who.get("client"), "arguments": who.get("arguments"), "decision": event.code,
                "action": event.action, "rule": event.rule, "message": event.message,
                "retry_after_s": event.retry_after_s, "risk": event.risk,
            })
        elif isinstance(event, ApprovalResolved):
            self._calls.setdefault(event.call_id, {})["approver"] = event.by
        elif isinstance(event, CallCompleted):
            who = self._calls.pop(event.call_id, {})
            self.record({
                "kind": "completion", "ts": ts, "call_id": event.call_id, "server": event.server,
                "tool": event.tool, "grant": who.get("grant"), "session": who.get("session"),
                "client": who.get("client"), "decision": event.outcome,
                "approver": event.approver or who.get("approver"),
                "duration_ms": round(event.duration_ms, 3), "is_error": event.is_error,
                "result_size": event.result_size, "error": event.error,
            })
        elif isinstance(event, PolicyReloaded):
            self.record({"kind": "policy_reloaded", "ts": ts, "server": event.server, "path": event.path,
                         "diff": event.diff, "source": event.source})
        elif isinstance(event, PolicyRejected):
            self.record({"kind": "policy_rejected", "ts": ts, "server": event.server, "path": event.path,
                         "errors": list(event.errors)})
        elif isinstance(event, MalformedRequest):
            self.record({"kind": "malformed", "ts": ts, "server": event.server, "method": event.method,
                         "tool": event.tool, "arguments": event.arguments, "grant": event.grant,
                         "session": event.session_id, "decision": event.code, "message": event.reason})
        elif isinstance(event, ToolChanged):
            self.record({"kind": "tool_changed", "ts": ts, "server": event.server, "tool": event.tool,
                         "old_fingerprint": event.old_fingerprint, "new_fingerprint": event.new_fingerprint})

    def attach(self, bus: EventBus, *, policy_events: bool = False) -> Callable[[], None]:
        """Audit `bus`'s events as they are published (a sync listener); returns the detach function.

        Listeners run inside `publish`, so a record is written before the
        publisher goes on: publish `CallDecided`/`CallCompleted` before
        answering the agent. `policy_events=False` skips `PolicyReloaded`
        and `PolicyRejected` (`mcpguard.reload` records those itself).
        """
        skip: tuple[type, ...] = () if policy_events else (PolicyReloaded, PolicyRejected)

        def listener(event: Event) -> None:
            if not isinstance(event, skip):
                self.record_event(event)

        return bus.add_listener(listener)


def read_audit(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record of the audit log at `path`, oldest first.

    Blank lines are skipped, and so is a torn last line (no newline, not
    JSON: a write cut short by a crash). Raises FileNotFoundError when the
    file is missing, ValueError naming `path:line` for any other bad line.
    """
    p = Path(path)
    text = p.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines):  # torn last line
                break
            raise ValueError(f"{p}:{i}: not a JSON audit record ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{p}:{i}: not a JSON object")
        out.append(rec)
    return out
