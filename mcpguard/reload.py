"""Tune the policy while the agent runs: hot reload, edits, undo (issue 5).

`PolicyFiles` owns the policy file of every server of a running gateway:
- `watch()` (a coroutine; run it as a task) follows the files with
  `watchfiles.awatch`, debounced, so a person editing in vim sees the change
  applied (or rejected) within a second;
- `reload(server)` reads, validates and applies a file; a file that fails
  validation is rejected and the last good policy keeps running;
- `edit(server, fn)` applies a text edit from `mcpguard.policy.edit`
  (validated first, written atomically, applied at once) and remembers the
  old text for `undo()`.

Counters live in the gateway's `Counters`, keyed by counter name and scope
key, so no reload or edit loses them. Every outcome is an event
(`PolicyReloaded` with a short diff, `PolicyRejected` with file:line:col
errors) and an audit record (`policy_reloaded`, `policy_rejected`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcpguard.events import PolicyRejected, PolicyReloaded
from mcpguard.policy import PolicyError, parse_policy
from mcpguard.policy.edit import EditError, policy_format, short_diff, write_atomic

log = logging.getLogger(__name__)

DEBOUNCE_MS = 150


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
    with `policy_path` and `policy_errors`, `set_policy(name, policy)`,
    `bus`, and optionally `audit` with `record(dict)`).
    """

    def __init__(self, gateway: Any, *, debounce_ms: int = DEBOUNCE_MS) -> None:
        self.gw = gateway
        self.debounce_ms = debounce_ms
        self._applied: dict[str, str] = {}  # server -> text of the policy that runs
        self._undo: list[tuple[str, str]] = []  # (server, text before the edit)
        for name, handle in gateway.servers.items():
            path = getattr(handle, "policy_path", None)
            if path and Path(path).exists() and handle.policy is not None and not handle.policy_errors:
                self._applied[name] = Path(path).read_text(encoding="utf-8")

    # -- paths -------------------------------------------------------------
    def path(self, server: str) -> Path | None:
        p = getattr(self.gw.servers[server], "policy_path", None)
        return Path(p) if p else None

    def text(self, server: str) -> str:
        """The file's text as it is on disk now (empty when missing)."""
        p = self.path(server)
        try:
            return p.read_text(encoding="utf-8") if p else ""
        except FileNotFoundError:
            return ""

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

    def apply_text(self, server: str, text: str, *, source: str = "file") -> ReloadResult:
        """Validate `text` and, if good, make it `server`'s running policy.

        A rejected text changes nothing that runs: the last good policy keeps
        deciding calls; the server's `policy_errors` and a `PolicyRejected`
        event carry the errors.
        """
        old = self._applied.get(server)
        if old is not None and old == text and not self.gw.servers[server].policy_errors:
            return ReloadResult(server, applied=False, unchanged=True)
        policy, errors = self.validate(server, text)
        path = str(self.path(server) or "")
        if policy is None:
            self.gw.servers[server].policy_errors = list(errors)
            self.gw.bus.publish(PolicyRejected(server=server, path=path, errors=errors))
            self._audit({"kind": "policy_rejected", "server": server, "path": path, "errors": list(errors)})
            return ReloadResult(server, applied=False, errors=errors)
        diff = short_diff(old or "", text, Path(path).name or "policy")
        self.gw.set_policy(server, policy)
        self.gw.servers[server].policy_errors = []
        self._applied[server] = text
        self.gw.bus.publish(PolicyReloaded(server=server, path=path, diff=diff, source=source))
        self._audit({"kind": "policy_reloaded", "server": server, "path": path, "diff": diff, "source": source})
        return ReloadResult(server, applied=True, diff=diff)

    def reload(self, server: str) -> ReloadResult:
        """Read `server`'s policy file and apply it (or reject it)."""
        return self.apply_text(server, self.text(server), source="file")

    # -- edits from the console ------------------------------------------
    def edit(self, server: str, fn: Callable[[str, str], str]) -> ReloadResult:
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
        return self.apply_text(server, after, source="console")

    def save_text(self, server: str, text: str) -> ReloadResult:
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
        return self.apply_text(server, text, source="editor")

    def can_undo(self) -> bool:
        return bool(self._undo)

    def undo(self) -> ReloadResult | None:
        """Put back the text from before the last edit (written and applied); None if none."""
        if not self._undo:
            return None
        server, text = self._undo.pop()
        p = self.path(server)
        assert p is not None
        write_atomic(p, text)
        return self.apply_text(server, text, source="undo")

    # -- watching ----------------------------------------------------------
    async def watch(self, stop_event: asyncio.Event | None = None,
                    on_result: Callable[[ReloadResult], Any] | None = None) -> None:
        """Follow every policy file until cancelled (or `stop_event` is set).

        Watches the files' folders (editors that save by rename replace the
        file, which a watch on the file alone would miss), debounced by
        `debounce_ms`. Each change is reloaded; `on_result` gets the result.
        """
        from watchfiles import awatch

        by_path: dict[Path, str] = {}
        for name in self.gw.servers:
            p = self.path(name)
            if p is not None:
                by_path[p.resolve()] = name
        if not by_path:
            return
        folders = sorted({str(p.parent) for p in by_path})

        def only_policies(_change: Any, path: str) -> bool:
            return Path(path).resolve() in by_path

        async for changes in awatch(*folders, watch_filter=only_policies, debounce=self.debounce_ms,
                                    step=50, stop_event=stop_event, recursive=False):
            for server in sorted({by_path[Path(p).resolve()] for _, p in changes}):
                try:
                    result = self.reload(server)
                except Exception:  # a reload must never kill the watcher
                    log.exception("reloading the policy of %s failed", server)
                    continue
                if on_result is not None and not result.unchanged:
                    on_result(result)

    def _audit(self, record: dict[str, Any]) -> None:
        audit = getattr(self.gw, "audit", None)
        if audit is not None:
            try:
                audit.record(record)
            except Exception:
                log.exception("audit record failed")
