"""The audit log: append-only JSON Lines, one record per decision and completion.

Who called what, what was decided and why. Each record is one line of JSON,
written with a single `write(2)` on a file opened with `O_APPEND` (so lines
from several writers never interleave) before `record` returns, so it is on
its way to disk before the agent gets its answer; with `fsync=True` it is
also forced to the device.

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
- `redacted`, `truncated`: where the record's values were changed (below).

Secrets. A value is replaced by the string `"[redacted]"`, at any depth of
the record, when its key looks like it names a secret. The key is folded to
lower case letters and digits (`X-Api-Key` -> `xapikey`), then matched two
ways:

- anywhere in the folded key, one of `SECRET_KEYS`: `token secret password
  passwd passphrase api_key apikey authorization credential private_key
  access_key cookie bearer ssh_key signing_key encryption_key session_id
  connection_string csrf xsrf mnemonic seed_phrase` (and the
  `[gateway] redact_keys` of mcpguard.toml, matched the same way). So
  `GithubToken`, `client_secret`, `refresh_token`, `access_token`,
  `session_token`, `aws_access_key_id`, `aws_secret_access_key`,
  `db_password`, `Set-Cookie`, `privateKey` are redacted, and so, knowingly,
  are harmless keys that contain a fragment: `max_tokens`, `token_count`,
  `tokenizer` (a lost number is cheaper than a leaked secret);
- as the key's last word only (words split at `_`, `-`, `.`, spaces and
  camelCase), one of `SECRET_LAST_WORDS`: `pem jwt otp totp dsn pwd auth`.
  These are too short to match anywhere: `cert_pem`, `id_jwt`, `sentryDSN`,
  `db_pwd`, `basic_auth` are redacted; `pem_path`, `jwt_audience`,
  `auth_type`, `author`, `deep_embedding` are not.

The key `key` alone is not a secret (MLflow's `set_tag(key=...)`), nor is
`session` (the record's own MCP session id). Secrets inside free text are
not detected.

Size. A value of the record (any top-level field: `arguments`, `error`,
`message`, `diff`, ...) whose encoding is longer than `max_value_bytes`
(`[gateway] audit_max_value_bytes`, default 64 KiB) is replaced by a marker,
so a 3.5 MiB argument costs the log a few hundred bytes and a record holds
at most about `max_value_bytes` per field:

    {"_mcpguard_truncated": true, "form": "json", "bytes": 3670035,
     "sha256": "<64 hex digits>", "preview": "<the first 256 characters>"}

`form` says what `bytes`, `sha256` and `preview` are about: `"text"` for a
string value (its UTF-8 bytes, its first characters), `"json"` for any other
value (the UTF-8 bytes of its compact JSON encoding,
`json.dumps(value, ensure_ascii=False, separators=(",", ":"))` with keys in
the order received, after redaction, i.e. exactly the bytes the record
would have held). The digest is over the redacted value, so it never
confirms a guess at a secret.

Recognising changed values from the record alone: `redacted` lists the JSON
Pointers (RFC 6901) of every value replaced by `"[redacted]"`
(`["/arguments/api_key", "/arguments/headers/Authorization"]`), including
those inside a value that was then truncated (a replay tool needs them to
recompute the digest); `truncated` lists the pointers of the values replaced
by the marker (`["/arguments"]`). A record with neither field has every
value as received, so an argument that really is the string `"[redacted]"`
is told apart from a redacted one.

Disk errors never reach the caller: `record` counts them in `errors`, keeps
the message in `last_error`, logs a warning on the `mcpguard.audit` logger
(the first failure, then every 100th), publishes an `AuditWriteFailed` event
on the bus if one was given, and tries to reopen the file on the next record.
"""

from __future__ import annotations

import functools
import hashlib
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
    ApprovalRequested,
    ApprovalResolved,
    CallCompleted,
    CallDecided,
    CallReceived,
    Event,
    EventBus,
    MalformedRequest,
    PolicyRejected,
    PolicyReloaded,
    SessionApprovalChanged,
    ToolChanged,
)

log = logging.getLogger("mcpguard.audit")

REDACTED = "[redacted]"
SECRET_KEYS = ("token", "secret", "password", "passwd", "passphrase", "api_key", "apikey", "authorization",
               "credential", "private_key", "access_key", "cookie", "bearer", "ssh_key", "signing_key",
               "encryption_key", "session_id", "connection_string", "csrf", "xsrf", "mnemonic", "seed_phrase")
"""Fragments that make a key secret wherever they stand in it (compared folded: lower case, alphanumerics)."""
SECRET_LAST_WORDS = ("pem", "jwt", "otp", "totp", "dsn", "pwd", "auth")
"""Words that make a key secret only as its last word (too short to match inside other words)."""

DEFAULT_MAX_VALUE_BYTES = 64 * 1024
"""Bytes a record's value may take before it is replaced by the truncation marker."""
MIN_MAX_VALUE_BYTES = 1024
"""The smallest cap accepted: below it the marker itself would be most of the record."""
PREVIEW_CHARS = 256
"""Characters of a truncated value kept in the marker's `preview`."""
TRUNCATED = "_mcpguard_truncated"
KINDS = ("decision", "approval", "completion", "policy_reloaded", "policy_rejected", "tool_changed", "malformed",
         "session_approval")

_MAX_PENDING_CALLS = 10_000


@dataclass(frozen=True, slots=True)
class AuditWriteFailed(Event):
    """The audit log could not write a record; `errors` counts failures so far."""

    path: str
    error: str
    errors: int


_NOT_ALNUM = re.compile(r"[^a-z0-9]")
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_LAST_WORDS = frozenset(SECRET_LAST_WORDS)


def _key_pattern(extra: Iterable[str] = ()) -> re.Pattern[str]:
    """Matches a key folded by `_fold` (lower case, only letters and digits)."""
    words = {_fold(w) for w in (*SECRET_KEYS, *extra)} - {""}
    return re.compile("|".join(re.escape(w) for w in sorted(words)))


def _fold(key: str) -> str:
    return _NOT_ALNUM.sub("", key.lower())


def _last_word(key: str) -> str:
    words = _WORD.findall(key)
    return words[-1].lower() if words else ""


def is_secret_key(key: str, extra_keys: Iterable[str] = ()) -> bool:
    """True when a value under `key` is redacted (see the module docstring for what matches)."""
    pattern = _key_pattern(extra_keys) if extra_keys else _DEFAULT_PATTERN
    return _is_secret(key, pattern)


def _is_secret(key: Any, pattern: re.Pattern[str]) -> bool:
    if not isinstance(key, str):
        return False
    # records repeat the same few dozen keys, so short ones are remembered; a long key
    # (an agent's) is not kept alive by the cache
    return _is_secret_cached(key, pattern) if len(key) <= 64 else _is_secret_str(key, pattern)


def _is_secret_str(key: str, pattern: re.Pattern[str]) -> bool:
    return bool(pattern.search(_fold(key))) or _last_word(key) in _LAST_WORDS


_is_secret_cached = functools.lru_cache(maxsize=4096)(_is_secret_str)


_DEFAULT_PATTERN = _key_pattern()


def redact(obj: Any, extra_keys: Iterable[str] = (), *, _pattern: re.Pattern[str] | None = None) -> Any:
    """A copy of `obj` with the values under secret-looking keys replaced by `"[redacted]"`.

    Walks dicts, lists and tuples at any depth (tuples become lists). Which
    keys are secret: `SECRET_KEYS` and `extra_keys` anywhere in the key, and
    `SECRET_LAST_WORDS` as its last word, compared in lower case with
    everything but letters and digits removed (`X-Api-Key`, `apiKey`,
    `api_key` all match `api_key`); the module docstring has the whole rule.
    Non-finite floats become strings (JSON has no NaN). Never mutates `obj`.
    """
    pattern = _pattern or (_key_pattern(extra_keys) if extra_keys else _DEFAULT_PATTERN)
    return _redact(obj, pattern, "", None)


def _redact(obj: Any, pattern: re.Pattern[str], where: str, found: list[str] | None) -> Any:
    """`redact`, also appending to `found` the JSON Pointer of each value it replaced."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            here = f"{where}/{_pointer_token(k)}" if found is not None else ""
            if _is_secret(k, pattern):
                out[k] = REDACTED
                if found is not None:
                    found.append(here)
            else:
                out[k] = _redact(v, pattern, here, found)
        return out
    if isinstance(obj, (list, tuple)):
        return [_redact(v, pattern, f"{where}/{i}" if found is not None else "", found) for i, v in enumerate(obj)]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def _pointer_token(key: Any) -> str:
    """One RFC 6901 reference token: `~` as `~0`, `/` as `~1`."""
    return str(key).replace("~", "~0").replace("/", "~1")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))


def truncation_marker(value: Any) -> dict[str, Any]:
    """The marker that stands for `value` in a record when `value` is too long (module docstring).

    Returns `{"_mcpguard_truncated": True, "form": "text" | "json", "bytes": N,
    "sha256": hex, "preview": str}`: `bytes` and `sha256` over the UTF-8 of a
    string itself (`text`) or of any other value's compact JSON (`json`); a
    lone surrogate, which UTF-8 cannot hold, counts as its `\\uXXXX` escape,
    as the record writes it.
    """
    form, text = ("text", value) if isinstance(value, str) else ("json", _dumps(value))
    data = text.encode("utf-8", errors="backslashreplace")
    return {TRUNCATED: True, "form": form, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "preview": text[:PREVIEW_CHARS]}


def iso_utc(ts: float) -> str:
    """`2026-11-21T23:55:44.123Z` for epoch seconds `ts`."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditLog:
    """An append-only JSONL audit log at `path` (parent folders are created).

    - `fsync`: also `os.fsync` after each record (slower; survives power loss).
    - `redact_keys`: extra secret key fragments on top of `SECRET_KEYS`
      (matched anywhere in a key, like them).
    - `max_value_bytes`: the most bytes one value of a record may take
      before it is replaced by the truncation marker (default 64 KiB; at
      least `MIN_MAX_VALUE_BYTES`, else `ValueError`).
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
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        bus: EventBus | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(max_value_bytes, bool) or not isinstance(max_value_bytes, int) or \
                max_value_bytes < MIN_MAX_VALUE_BYTES:
            raise ValueError(f"max_value_bytes must be a whole number of bytes, {MIN_MAX_VALUE_BYTES} or more, "
                             f"not {max_value_bytes!r}")
        self.max_value_bytes = max_value_bytes
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
        secrets and replaces values longer than `max_value_bytes` by the
        truncation marker (see the module docstring; `redacted` and
        `truncated` say where) without touching `event`, writes values JSON
        cannot hold as strings. Returns None; never raises on a disk error
        (see the module docstring). Records after `close()` reopen the file.
        """
        try:
            ts = event.get("ts")
            if not isinstance(ts, (int, float)):
                ts = self.clock()
            head = {"kind": event.get("kind"), "time": event.get("time") or iso_utc(ts), "ts": ts}
            redacted: list[str] = []
            body = _redact({k: v for k, v in event.items() if k not in head and v is not None},
                           self._pattern, "", redacted)
            if redacted:
                body["redacted"] = redacted
            data = (_dumps({**head, **body}) + "\n").encode("utf-8", errors="backslashreplace")
            if len(data) > self.max_value_bytes:  # only then can one value be too long: look at each
                truncated = []
                for key, value in body.items():
                    if len(_dumps(value).encode("utf-8", errors="backslashreplace")) > self.max_value_bytes:
                        body[key] = truncation_marker(value)
                        truncated.append(f"/{_pointer_token(key)}")
                if truncated:
                    body["truncated"] = truncated
                    data = (_dumps({**head, **body}) + "\n").encode("utf-8", errors="backslashreplace")
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

        `CallReceived`, `ApprovalRequested` and `ApprovalResolved` are
        remembered (arguments and caller; the approval's digest; approver and
        reason) and fill the `decision` record of `CallDecided` and the
        `completion` record of `CallCompleted`; `approval` records what a
        person was asked and answered (`digest`, `approver`, `reason`, and
        for an edit `approved_arguments` with their `approved_digest`);
        `PolicyReloaded`, `PolicyRejected`, `ToolChanged`, `MalformedRequest`
        and `SessionApprovalChanged` give their own kinds. Other events are
        ignored.
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
                "retry_after_s": event.retry_after_s, "risk": event.risk, "would": event.would,
                "would_code": event.would_code, "would_rule": event.would_rule, "would_message": event.would_message,
                "would_retry_after_s": event.would_retry_after_s, "approver": event.approver,
            })
        elif isinstance(event, ApprovalRequested):
            self._calls.setdefault(event.call_id, {})["digest"] = event.digest
        elif isinstance(event, ApprovalResolved):
            who = self._calls.setdefault(event.call_id, {})
            who["approver"] = event.by
            record: dict[str, Any] = {
                "kind": "approval", "ts": ts, "call_id": event.call_id, "server": event.server, "tool": event.tool,
                "session": who.get("session"), "approval_id": event.approval_id, "outcome": event.outcome,
                "approved": event.approved, "approver": event.by, "reason": event.reason,
                "for_session": event.for_session or None, "digest": event.digest or who.get("digest"),
                "approved_arguments": event.arguments, "approved_digest": event.approved_digest,
            }
            self.record(record)
        elif isinstance(event, CallCompleted):
            who = self._calls.pop(event.call_id, {})
            self.record({
                "kind": "completion", "ts": ts, "call_id": event.call_id, "server": event.server,
                "tool": event.tool, "grant": who.get("grant"), "session": who.get("session"),
                "client": who.get("client"), "decision": event.outcome,
                "approver": event.approver or who.get("approver"), "digest": who.get("digest"),
                "arguments": event.arguments,
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
        elif isinstance(event, SessionApprovalChanged):
            self.record({"kind": "session_approval", "ts": ts, "server": event.server, "session": event.session_id,
                         "tool": event.tool, "approver": event.by, "granted": event.granted,
                         "expires_at": iso_utc(event.expires_at), "message": event.why or None})
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
