"""Tune the policy while the agent runs: hot reload, edits, undo.

`PolicyFiles` owns the policy file of every server of a running gateway:
- `watch()` (a coroutine; run it as a task) follows the files with
  `watchfiles.awatch`, debounced, so a person editing in vim sees the change
  applied (or rejected) within a second. A changed file is applied only once
  it has settled (`read_settled`): two reads `settle_s` apart (0.2 s) that
  find the same size, mtime_ns, inode and bytes. A file still being written
  (an editor mid-write, a copy in progress) is therefore never applied half
  written unless the writer pauses longer than `settle_s`; one that keeps
  changing is read as it stands after `settle_max_s` (5 s) and validated
  like any other;
- `reload(server)` reads (once, at once), validates and applies a file; a
  file that fails validation is rejected and the last good policy keeps
  running;
- `edit(server, fn)` applies a text edit from `mcpguard.policy.edit`
  (validated first, written atomically, applied at once) and remembers the
  old text for `undo()`.

A file that cannot be read as text is a rejection like a file that does not
validate: missing (deleted), a folder or a named pipe in its place, no read
permission, a symlink loop, bytes that are not UTF-8. Its error is
`file:1:1: cannot read policy: <reason>` (`mcpguard.policy.read_policy_text`).

Counters live in the gateway's `Counters`, keyed by counter name and scope
key, so no reload or edit loses them. Every outcome is an event
(`PolicyReloaded` with a short diff, `PolicyRejected` with file:line:col
errors) and an audit record (`policy_reloaded`, `policy_rejected`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcpguard.events import PolicyRejected, PolicyReloaded
from mcpguard.policy import (
    PolicyError,
    PolicyIssue,
    decode_policy_text,
    parse_policy,
    read_policy_bytes,
    read_policy_text,
)
from mcpguard.policy.edit import EditError, policy_format, short_diff, write_atomic

log = logging.getLogger(__name__)

DEBOUNCE_MS = 150
SETTLE_S = 0.2
"""Seconds between the two reads that must agree before a changed file is applied."""
SETTLE_MAX_S = 5.0
"""Seconds after which a file that keeps changing is read as it then stands."""


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What one reload or edit did.

    `applied`: the new policy runs now. `errors`: `file:line:col: message`
    strings when it was rejected. `diff`: a unified diff (0 lines of
    context) of the file against the last applied text. `unchanged`: the
    file's text is what already runs (nothing to do).
    """

    server: str
    applied: bool
    diff: str = ""
    errors: tuple[str, ...] = ()
    unchanged: bool = False


class PolicyFiles:
    """The policy files of a gateway's servers, kept in step with what runs.

    `gateway` is a `mcpguard.gateway.Gateway` (it needs `servers[name]`
    with `policy`, `policy_path` and `policy_errors`, `set_policy(name,
    policy)`, `bus`, and optionally `audit` with `record(dict)`).
    `debounce_ms` is watchfiles' debounce (milliseconds); `settle_s` and
    `settle_max_s` (seconds) are `read_settled`'s interval and bound.
    """

    def __init__(self, gateway: Any, *, debounce_ms: int = DEBOUNCE_MS, settle_s: float = SETTLE_S,
                 settle_max_s: float = SETTLE_MAX_S) -> None:
        self.gw = gateway
        self.debounce_ms = debounce_ms
        self.settle_s = settle_s
        self.settle_max_s = settle_max_s
        self._applied: dict[str, str] = {}  # server -> text of the policy that runs
        self._undo: list[tuple[str, str]] = []  # (server, text before the edit)
        for name, handle in gateway.servers.items():
            path = getattr(handle, "policy_path", None)
            if path and handle.policy is not None and not handle.policy_errors:
                try:
                    self._applied[name] = read_policy_text(path)
                except PolicyError:  # changed since the gateway loaded it: the next reload says why
                    pass

    def sync_applied(self) -> None:
        """Take the texts of the policies that run now as the applied ones (the gateway loaded them itself)."""
        for name, handle in self.gw.servers.items():
            source = getattr(getattr(handle, "policy", None), "source", None)
            if source is not None and not handle.policy_errors and name not in self._applied:
                self._applied[name] = source.text

    # -- paths -------------------------------------------------------------
    def path(self, server: str) -> Path | None:
        p = getattr(self.gw.servers[server], "policy_path", None)
        return Path(p) if p else None

    def text(self, server: str) -> str:
        """The file's text as it is on disk now (empty when missing or when there is no file).

        Raises `EditError` when the file is there but cannot be read as text
        (a folder, a pipe, no permission, not UTF-8): an edit over it could
        not be undone, so none is made.
        """
        p = self.path(server)
        if p is None or not p.exists() and not p.is_symlink():
            return ""
        try:
            return read_policy_text(p)
        except PolicyError as exc:
            raise EditError("; ".join(str(i) for i in exc.issues)) from None

    def applied_text(self, server: str) -> str | None:
        """The text of the policy that runs now, or None when none ran yet."""
        return self._applied.get(server)

    # -- validate and apply ------------------------------------------------
    def validate(self, server: str, text: str) -> tuple[Any, tuple[str, ...]]:
        """Parse `text` as `server`'s policy: `(policy, ())` or `(None, errors)`."""
        p = self.path(server)
        try:
            return parse_policy(text, policy_format(p or "policy.toml"), str(p or "policy")), ()
        except PolicyError as exc:
            return None, tuple(str(i) for i in exc.issues)

    def apply_text(self, server: str, text: str, *, source: str = "file", by: str | None = None,
                   label: str | None = None) -> ReloadResult:
        """Validate `text` and, if good, make it `server`'s running policy.

        A rejected text changes nothing that runs: the last good policy keeps
        deciding calls; the server's `policy_errors` and a `PolicyRejected`
        event carry the errors. `by` (who changed it) and `label` (what the
        change was, as a person said it: `echo max +1`) go into the
        `PolicyReloaded` event and the audit record.
        """
        old = self._applied.get(server)
        if old is not None and old == text and not self.gw.servers[server].policy_errors:
            return ReloadResult(server, applied=False, unchanged=True)
        policy, errors = self.validate(server, text)
        path = str(self.path(server) or "")
        if policy is None:
            return self._reject(server, errors)
        diff = short_diff(old or "", text, Path(path).name or "policy")
        self.gw.set_policy(server, policy)
        self.gw.servers[server].policy_errors = []
        self._applied[server] = text
        self.gw.bus.publish(PolicyReloaded(server=server, path=path, diff=diff, source=source, by=by, label=label))
        self._audit({"kind": "policy_reloaded", "server": server, "path": path, "diff": diff, "source": source,
                     "by": by, "label": label})
        return ReloadResult(server, applied=True, diff=diff)

    def _reject(self, server: str, errors: tuple[str, ...]) -> ReloadResult:
        """Keep the running policy; tell the handle, the bus and the audit log why."""
        path = str(self.path(server) or "")
        self.gw.servers[server].policy_errors = list(errors)
        self.gw.bus.publish(PolicyRejected(server=server, path=path, errors=errors))
        self._audit({"kind": "policy_rejected", "server": server, "path": path, "errors": list(errors)})
        return ReloadResult(server, applied=False, errors=errors)

    def reload(self, server: str) -> ReloadResult:
        """Read `server`'s policy file now (one read, no settling) and apply it, or reject it.

        A file that cannot be read as text is rejected with
        `file:1:1: cannot read policy: <reason>`; the last good policy keeps
        running.
        """
        p = self.path(server)
        if p is None:
            return self._reject(server, (f"{server}: no policy file configured; every call is denied",))
        try:
            text = read_policy_text(p)
        except PolicyError as exc:
            return self._reject(server, tuple(str(i) for i in exc.issues))
        return self.apply_text(server, text, source="file")

    async def read_settled(self, server: str) -> str:
        """`server`'s policy text once the file has stopped changing.

        Reads the file (bytes and the `fstat` of what was read), then again
        every `settle_s` seconds until two reads in a row agree on size,
        mtime_ns, inode and bytes; equal bytes parse to the same policy, so
        the text returned is one a writer left in place for `settle_s`. A
        file that keeps changing is taken as the last read found it after
        `settle_max_s` seconds. Sleeps with asyncio, so the gateway and the
        console keep running meanwhile.

        Raises `PolicyError` (`cannot read policy: ...` at 1:1) when the
        settled state is one with no UTF-8 text (missing, a folder, a pipe,
        no permission, not UTF-8); a state that fails only for a moment (an
        editor's delete-then-write) is waited out like any other change.
        """
        p = self.path(server)
        if p is None:
            raise PolicyError([PolicyIssue(server, 1, 1, "no policy file configured; every call is denied")])
        deadline = time.monotonic() + self.settle_max_s
        last = _snapshot(p)
        while True:
            await asyncio.sleep(self.settle_s)
            now = _snapshot(p)
            if now[0] == last[0]:
                break
            last = now
            if time.monotonic() >= deadline:
                log.warning("policy file %s kept changing for %.1f s; reading it as it stands", p,
                            self.settle_max_s)
                break
        _, data, error = last
        if error is not None:
            raise error
        return decode_policy_text(data, p)

    async def reload_settled(self, server: str) -> ReloadResult:
        """`read_settled`, then apply the text, or reject it (also when it cannot be read)."""
        if self.path(server) is None:
            return self.reload(server)
        try:
            text = await self.read_settled(server)
        except PolicyError as exc:
            return self._reject(server, tuple(str(i) for i in exc.issues))
        return self.apply_text(server, text, source="file")

    # -- edits from the console ------------------------------------------
    def edit(self, server: str, fn: Callable[[str, str], str], *, by: str | None = None,
             label: str | None = None) -> ReloadResult:
        """Apply `fn(text, fmt) -> new_text` to the file, validated, written, applied.

        Raises EditError (nothing written) when the edit cannot be made or the
        result does not validate; OSError when the file cannot be written.
        """
        p = self.path(server)
        if p is None:
            raise EditError(f"server {server!r} has no policy file")
        before = self.text(server)
        after = fn(before, policy_format(p))
        if after == before:
            return ReloadResult(server, applied=False, unchanged=True)
        _, errors = self.validate(server, after)
        if errors:
            raise EditError("the edit would make the policy invalid: " + "; ".join(errors))
        write_atomic(p, after)
        self._undo.append((server, before))
        return self.apply_text(server, after, source="console", by=by, label=label)

    def save_text(self, server: str, text: str, *, by: str | None = None) -> ReloadResult:
        """The editor's ctrl+s: validate `text`, write it atomically, apply it.

        A text that fails validation is neither written nor applied.
        """
        p = self.path(server)
        if p is None:
            raise EditError(f"server {server!r} has no policy file")
        _, errors = self.validate(server, text)
        if errors:
            return ReloadResult(server, applied=False, errors=errors)
        before = self.text(server)
        write_atomic(p, text)
        if before != text:
            self._undo.append((server, before))
        return self.apply_text(server, text, source="editor", by=by, label="saved from the editor")

    def can_undo(self) -> bool:
        return bool(self._undo)

    def undo(self, *, by: str | None = None) -> ReloadResult | None:
        """Put back the text from before the last edit (written and applied); None if none."""
        if not self._undo:
            return None
        server, text = self._undo.pop()
        p = self.path(server)
        assert p is not None
        write_atomic(p, text)
        return self.apply_text(server, text, source="undo", by=by, label="undo")

    # -- watching ----------------------------------------------------------
    async def watch(self, stop_event: asyncio.Event | None = None,
                    on_result: Callable[[ReloadResult], Any] | None = None) -> None:
        """Follow every policy file until cancelled (or `stop_event` is set).

        Watches the files' folders (editors that save by rename replace the
        file, which a watch on the file alone would miss), debounced by
        `debounce_ms`. Each changed file is applied once settled
        (`reload_settled`; several files settle at the same time), or
        rejected; `on_result` gets every result that is not `unchanged`. A
        failing reload or callback is logged and never stops the watcher.
        """
        from watchfiles import awatch

        # each file under its own name (its folder resolved) and, when it is a symlink, under
        # its target's: the watch sees the link replaced as well as the target edited
        by_path: dict[Path, str] = {}
        for name in self.gw.servers:
            p = self.path(name)
            if p is not None:
                for key in {_in_resolved_folder(p), _resolved(p)} - {None}:
                    by_path[key] = name
        if not by_path:
            return
        folders = sorted({str(p.parent) for p in by_path})

        def server_of(path: str) -> str | None:
            p = Path(path)
            return by_path.get(p) or by_path.get(_resolved(p))  # type: ignore[arg-type]

        def only_policies(_change: Any, path: str) -> bool:
            return server_of(path) is not None

        async def one(server: str) -> None:
            try:
                result = await self.reload_settled(server)
            except Exception:  # a reload must never kill the watcher
                log.exception("reloading the policy of %s failed", server)
                return
            if on_result is not None and not result.unchanged:
                try:
                    on_result(result)
                except Exception:
                    log.exception("the reload callback failed for %s", server)

        async for changes in awatch(*folders, watch_filter=only_policies, debounce=self.debounce_ms,
                                    step=50, stop_event=stop_event, recursive=False):
            servers = sorted({server for _, p in changes if (server := server_of(p)) is not None})
            await asyncio.gather(*(one(server) for server in servers))

    def _audit(self, record: dict[str, Any]) -> None:
        audit = getattr(self.gw, "audit", None)
        if audit is not None:
            try:
                audit.record(record)
            except Exception:
                log.exception("audit record failed")


def _snapshot(path: Path) -> tuple[Any, bytes, PolicyError | None]:
    """`(key, bytes, error)`: what one read found; equal keys mean the same file state.

    The key is `(size, mtime_ns, inode, device, bytes)` for a readable file,
    or the error's text for an unreadable one.
    """
    try:
        data, st = read_policy_bytes(path)
    except PolicyError as exc:
        return ("error", str(exc)), b"", exc
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, data), data, None


def _in_resolved_folder(path: Path) -> Path:
    """`path` with its folder resolved and its own name kept (a symlink stays itself)."""
    return path.parent.resolve() / path.name


def _resolved(path: Path) -> Path | None:
    """`path.resolve()`, or None for a path that cannot be resolved (a symlink loop)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: Python before 3.13 on a symlink loop
        return None
