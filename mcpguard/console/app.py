"""`ConsoleApp`: the Textual console around an embedded `Gateway`.

The app runs the gateway in Textual's own event loop, listens to its
`EventBus` through one bounded subscription, and calls only the core API
(`gateway.approvals.approve/deny`, `mcpguard.reload.PolicyFiles`). Events are drained
and folded into a `CallLog` on a timer (`FLUSH_INTERVAL_S`, 0.1 s), so a burst
of calls costs at most ten repaints a second (style.md §5).

Policy changes (issue 5) have one path: the app owns one
`PolicyFiles(gateway)`; a worker runs its `watch()` (an external editor's
save is applied or rejected within a second), the tune keys go through
`PolicyFiles.edit`, the editor's ctrl+s through `PolicyFiles.save_text`, `u`
through `PolicyFiles.undo`. Every outcome reaches the screen as a bus event
(`PolicyReloaded` with its diff, `PolicyRejected` with file:line:col), shown
as a notification, in the status bar and the tree.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import App, SystemCommand
from textual.css.query import NoMatches
from textual.screen import Screen

from mcpguard.console.keymap import bindings, keys_for
from mcpguard.console.model import CallLog
from mcpguard.console.screens import (
    ApprovalQueueScreen, ConfirmQuitScreen, EditorScreen, HelpScreen, MainScreen, tool_detail_text,
)
from mcpguard.console.themes import DEFAULT_THEME, load_themes, resolve_theme_name
from mcpguard.console.widgets import ServerView, ToolView

FLUSH_INTERVAL_S = 0.1
TICK_INTERVAL_S = 1.0
MAX_EVENTS_PER_FLUSH = 20_000
_GC_FROZEN = False

_STATE = {"allow": "allowed", "deny": "denied", "require_approval": "approval", "hidden": "hidden"}


def tool_state(policy: Any, tool: str) -> str:
    """A tool's policy state for the tree: allowed, limited, approval, denied or hidden.

    No policy at all denies every call (design §3).
    """
    if policy is None:
        return "denied"
    state = _STATE.get(policy.action_for(tool), "allowed")
    rule = policy.tools.get(tool)
    if state == "allowed" and rule is not None and rule.limits:
        return "limited"
    return state


def diff_text(diff: str, max_lines: int = 4) -> str:
    """The changed lines of a unified diff (no headers), at most `max_lines`."""
    lines = [ln for ln in diff.splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    if len(lines) > max_lines:
        lines = lines[:max_lines] + [f"… {len(lines) - max_lines} more lines"]
    return "\n".join(lines)


def short_error(issue: str) -> str:
    """`/path/ev.toml:8:1: message (hint)` -> `ev.toml line 8: message (hint)`."""
    parts = issue.split(":", 3)
    if len(parts) == 4 and parts[1].strip().isdigit():
        return f"{Path(parts[0]).name} line {parts[1].strip()}: {parts[3].strip()}"
    return issue


class ConsoleApp(App[int]):
    """The mcpguard console.

    - `gateway`: a `mcpguard.gateway.Gateway` (not yet started when
      `start_gateway` is True, the default; the app starts it on mount and
      stops it on quit).
    - `theme_name`: a theme from `themes/*.toml` (`dark`, `light`,
      `high-contrast` or a full name); unknown names fall back to the default.
    - `max_rows`: calls kept in the table (older ones are in the audit log).
    - `clock`: epoch seconds; tests pass a frozen clock for snapshots.
    - `workers`: coroutine functions `fn(app)` run as workers once the
      gateway is up (the demo's scripted agent).
    - `connect_hint`: how an agent connects (text, or a function returning it once
      the gateway is up); shown before the first call and on the server's detail.
    """

    CSS_PATH = "app.tcss"
    TITLE = "mcpguard"
    BINDINGS = bindings("app")
    ENABLE_COMMAND_PALETTE = True

    def __init__(
        self,
        gateway: Any,
        *,
        theme_name: str | None = None,
        max_rows: int = 2000,
        clock: Callable[[], float] = time.time,
        start_gateway: bool = True,
        workers: Iterable[Callable[[ConsoleApp], Awaitable[Any]]] = (),
        connect_hint: str | Callable[[], str] | None = None,
        keymap: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.gateway = gateway
        self.model = CallLog(max_rows)
        self.clock = clock
        self.start_gateway = start_gateway
        self._background = list(workers)
        self.connect_hint = connect_hint
        self._theme_request = theme_name
        self._keymap = keymap or {}
        self._sub = gateway.bus.subscribe()
        self.main: MainScreen | None = None
        self._stopping = False
        self.theme_errors: list[str] = []
        self.started = False
        self.view_errors = 0  # refreshes skipped because widgets were mounting or torn down
        self._tree_sig: tuple = ()
        self.files: Any = None  # mcpguard.reload.PolicyFiles, once the gateway is up
        self._watch_stop: asyncio.Event | None = None
        self._edit_labels: dict[str, deque[str]] = defaultdict(deque)
        self._bands: frozenset = frozenset()
        self._figures: tuple = ()

    # -- life cycle -----------------------------------------------------------------
    async def on_mount(self) -> None:
        themes, self.theme_errors = load_themes()
        for t in themes:
            self.register_theme(t)
        names = list(self.available_themes)
        chosen = resolve_theme_name(self._theme_request or DEFAULT_THEME, names) or \
            resolve_theme_name(DEFAULT_THEME, names)
        if self._theme_request and resolve_theme_name(self._theme_request, names) is None:
            self.notify(f"unknown theme {self._theme_request!r}; themes: "
                        + ", ".join(t.name for t in themes), severity="warning")
        if chosen:
            self.theme = chosen
        if self._keymap:
            self.set_keymap(self._keymap)
        self.theme_changed_signal.subscribe(self, lambda _t: self.refresh_views())
        self.main = MainScreen()
        await self.push_screen(self.main)
        self.set_interval(FLUSH_INTERVAL_S, self.flush_events)
        self.set_interval(TICK_INTERVAL_S, self.tick)
        if self.start_gateway:
            self.run_worker(self._start_gateway(), name="gateway-start", exclusive=True, group="gateway")
        else:
            self._after_start()

    async def _start_gateway(self) -> None:
        try:
            await self.gateway.start()
        except Exception as exc:  # noqa: BLE001 - shown to the person
            self.exit(1, message=f"mcpguard: the gateway did not start: {exc}")
            return
        self._after_start()

    def _after_start(self) -> None:
        self.started = True
        # Everything loaded so far (Textual, the SDK, the gateway, the screen) lives as
        # long as the app: take it out of the cyclic GC's full passes, which otherwise
        # walk it all every few seconds under load (a 100-160 ms stall of the one loop
        # the gateway and the screen share; bench/bench_console.py)
        global _GC_FROZEN
        if not _GC_FROZEN:  # once per process (tests start many apps in one)
            _GC_FROZEN = True
            gc.collect()
            gc.freeze()
        self.files = getattr(self.gateway, "files", None)
        self.refresh_views()
        for fn in self._background:
            self.run_worker(fn(self), group="background", exit_on_error=False)

    async def shutdown(self, deny_pending: bool = True) -> None:
        """Deny pending approvals, stop the gateway (bounded wait), exit."""
        if self._stopping:
            return
        self._stopping = True
        if self._watch_stop is not None:
            self._watch_stop.set()
        if deny_pending:
            self.gateway.approvals.deny_all(by="console", reason="the console quit")
        self.workers.cancel_group(self, "background")
        if self.start_gateway and self.started:
            try:
                await asyncio.wait_for(self.gateway.stop(), timeout=15)
            except Exception:  # noqa: BLE001 - quitting anyway
                pass
        self._sub.close()
        self.exit(0)

    async def action_quit(self) -> None:
        n = len(self.gateway.approvals.pending())
        if not n:
            await self.shutdown()
            return

        async def answered(yes: bool | None) -> None:
            if yes:
                await self.shutdown()

        self.push_screen(ConfirmQuitScreen(n), answered)

    def _disk_changed(self, server: str) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, EditorScreen) and screen.server == server:
                screen.disk_changed()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    # -- events ---------------------------------------------------------------------
    def flush_events(self) -> None:
        """Drain the subscription and redraw what changed (runs every FLUSH_INTERVAL_S)."""
        try:
            self._flush_events()
        except NoMatches as exc:  # widgets mounting or torn down (quit): a view never breaks the console
            self.view_errors += 1
            self.log.warning(f"flush skipped: {exc}")

    def _flush_events(self) -> None:
        batch = []
        while len(batch) < MAX_EVENTS_PER_FLUSH:
            e = self._sub.get_nowait()
            if e is None:
                break
            batch.append(e)
        if not batch or self.main is None or not self.main.is_mounted:
            return
        pending_before = len(self.model.pending)
        log = self.model
        log.evicted.clear()
        new, changed = log.apply(batch)
        evicted = list(log.evicted)
        log.evicted.clear()
        self.main.apply_batch(new, changed, evicted)
        kinds = {type(e).__name__ for e in batch}
        self._notify_policy_events(batch)
        for e in batch:  # the gateway follows the files; an open editor follows what it saw
            if type(e).__name__ in ("PolicyReloaded", "PolicyRejected") and getattr(e, "source", "file") == "file":
                self._disk_changed(e.server)
        if kinds & {"PolicyReloaded"}:
            self._sync_counter_limits({e.server for e in batch if type(e).__name__ == "PolicyReloaded"})
        if kinds & {"PolicyReloaded", "PolicyRejected", "UpstreamState", "ToolChanged"}:
            self.main.refresh_tree()
        # gauges and the status bar repaint on the 1 s tick; a batch redraws them at
        # once only when what a person must see at once changed: a gauge appeared,
        # went or changed color, or a denial / pending / policy figure moved
        bands = self._gauge_bands()
        if "PolicyReloaded" in kinds or bands != self._bands:
            self._bands = bands
            self.main.refresh_gauges()
        if kinds & {"ApprovalRequested", "ApprovalResolved"} or pending_before != len(log.pending):
            self.refresh_pending()
        figures = (log.denied_total, len(log.pending), log.dropped_events, self._tree_sig)
        if figures != self._figures or kinds & {"PolicyReloaded", "PolicyRejected", "UpstreamState"}:
            self._figures = figures
            self.main.refresh_status()

    def _gauge_bands(self) -> frozenset:
        """Each live counter with its color band (0 ok, 1 warning at 80%, 2 error at 100%)."""
        return frozenset((k, 2 if v.ratio >= 1 else 1 if v.ratio >= 0.8 else 0)
                         for k, v in self.model.counters.items())

    def refresh_pending(self) -> None:
        if self.main is not None:
            self.main.refresh_pending()
        for screen in self.screen_stack:
            if isinstance(screen, (EditorScreen, ApprovalQueueScreen)):
                screen.refresh_pending()

    def tick(self) -> None:
        """Once a second: countdowns, gauges, calls per minute."""
        try:
            self._tick()
        except NoMatches as exc:  # widgets mounting or torn down (quit)
            self.view_errors += 1
            self.log.warning(f"tick skipped: {exc}")

    def _tick(self) -> None:
        if self.main is None or not self.main.is_mounted:
            return
        self.main.refresh_gauges()
        self.main.refresh_status()
        if self.model.pending:
            self.refresh_pending()
        sig = self._servers_signature()
        if sig != self._tree_sig:
            self.main.refresh_tree()

    def _servers_signature(self) -> tuple:
        """What the tree shows, cheaply: tools, states, policies and errors per server."""
        return tuple(
            (name, getattr(h, "state", None), len(getattr(h, "tools", ()) or ()), id(getattr(h, "policy", None)),
             len(getattr(h, "changed_tools", ()) or ()), len(getattr(h, "policy_errors", ()) or ()))
            for name, h in self._handles().items())

    def refresh_views(self) -> None:
        if self.main is None or not self.main.is_mounted:
            return
        self.main.refresh_tree()
        self.main.refresh_gauges()
        self.main.refresh_status()
        self.main.refresh_pending()
        table = self.main.query_one("#calls")
        table.rebuild(self.model)  # type: ignore[attr-defined]
        if not self.model.calls:
            self.main.show_welcome()

    # -- what the screens show ------------------------------------------------------
    def _handles(self) -> dict[str, Any]:
        return dict(getattr(self.gateway, "servers", {}) or {})

    def listen_url(self) -> str:
        handles = self._handles()
        if not self.started:
            return "starting…"
        if len(handles) == 1:
            try:
                return self.gateway.url(next(iter(handles)))
            except Exception:  # noqa: BLE001
                pass
        return str(getattr(self.gateway, "base_url", ""))

    def server_views(self) -> list[ServerView]:
        self._tree_sig = self._servers_signature()
        views = []
        for name, h in self._handles().items():
            policy = getattr(h, "policy", None)
            changed = set(getattr(h, "changed_tools", ()) or ()) | {
                t for s, t in self.model.changed_tools if s == name}
            tools = []
            for tool in getattr(h, "tools", None) or []:
                tname = tool.get("name", "?") if isinstance(tool, dict) else str(tool)
                try:
                    r = h.risk(tname)
                    level, kind = r.level, r.kind
                except Exception:  # noqa: BLE001
                    level, kind = "medium", ""
                tools.append(ToolView(tname, level, kind, tool_state(policy, tname), tname in changed))
            errors = list(getattr(h, "policy_errors", ()) or ()) or list(self.model.policy_errors.get(name, ()))
            views.append(ServerView(name, str(getattr(h, "state", "starting")), tools,
                                    str(getattr(h, "policy_path", "") or ""),
                                    str(errors[0]) if errors else None))
        return views

    def status_fields(self) -> dict[str, Any]:
        views = self.server_views()
        policy = ", ".join(Path(v.policy_path).name for v in views if v.policy_path) or "no policy"
        err = next((v.policy_error for v in views if v.policy_error), None)
        if err:
            # `file:line:col: message` -> `line L: message`
            parts = err.split(":", 3)
            if len(parts) == 4 and parts[1].strip().isdigit():
                err = f"line {parts[1].strip()}: {parts[3].strip()}"
        return {
            "url": self.listen_url(),
            "policy": policy,
            "policy_error": err,
            "calls_per_min": self.model.calls_per_minute(self.clock()),
            "denied": self.model.denied_total,
            "pending": len(self.model.pending),
            "dropped": self.model.dropped_events,
        }

    def welcome_text(self) -> Text:
        t = Text()
        t.append("No calls yet.\n", style="bold")
        hint = self.hint_text()
        if hint:
            t.append(hint)
        elif self.started:
            t.append("Point an MCP client (Streamable HTTP) at:\n")
            for name in self._handles():
                try:
                    t.append(f"  {self.gateway.url(name)}\n", style="bold")
                except Exception:  # noqa: BLE001
                    pass
        t.append("\n? keys · / filter · e edit policy · ctrl+p palette", style="dim")
        return t

    def hint_text(self) -> str:
        """The connect hint, or '' before the gateway is up / when there is none."""
        if not self.connect_hint or not self.started:
            return ""
        return self.connect_hint() if callable(self.connect_hint) else self.connect_hint

    def tool_text(self, server: str, tool: str) -> Text:
        h = self._handles().get(server)
        view = next((t for v in self.server_views() if v.name == server for t in v.tools if t.name == tool), None)
        return tool_detail_text(server, tool, view, getattr(h, "policy", None))

    def server_text(self, server: str) -> Text:
        v = next((v for v in self.server_views() if v.name == server), None)
        t = Text()
        t.append(f"{server}\n", style="bold")
        if v is not None:
            t.append(f"state {v.state} · {len(v.tools)} tools\n")
            t.append(f"policy {v.policy_path or '(none: every call is denied)'}\n")
            if v.policy_error:
                t.append(f"{v.policy_error}\n", style="bold red")
        try:
            t.append(f"endpoint {self.gateway.url(server)}\n")
        except Exception:  # noqa: BLE001
            pass
        if self.hint_text():
            t.append("\n" + self.hint_text())
        t.append("\ne edits this server's policy", style="dim")
        return t

    # -- actions the screens ask for ------------------------------------------------
    def answer(self, approval_id: str | None, how: str) -> None:
        """Approve, deny or approve for session one pending approval (core API)."""
        if approval_id is None:
            return
        approvals = self.gateway.approvals
        if how == "approve":
            ok = approvals.approve(approval_id, by="console")
        elif how == "approve_session":
            ok = approvals.approve(approval_id, by="console", for_session=True)
        else:
            ok = approvals.deny(approval_id, by="console")
        if not ok:
            self.notify("that approval is no longer pending", severity="warning")
        self.flush_events()

    def open_editor(self, server: str | None) -> None:
        handles = self._handles()
        if not handles:
            self.notify("no server configured", severity="warning")
            return
        name = server if server in handles else next(iter(handles))
        path = getattr(handles[name], "policy_path", None)
        if not path:
            self.notify(f"server {name} has no policy file in mcpguard.toml", severity="warning")
            return
        self.push_screen(EditorScreen(name, Path(path)))

    # -- policy edits (issue 5) -----------------------------------------------------
    def edit_policy(self, server: str, label: str, fn: Callable[[str, str], str]) -> bool:
        """Apply one text edit (`mcpguard.policy.edit`) to `server`'s policy file
        through `PolicyFiles.edit`: validated, written atomically with comments
        kept, applied at once. The notification with the diff follows from the
        `PolicyReloaded` event; an `EditError` or `OSError` is an error
        notification and nothing is written. Returns True when applied."""
        from mcpguard.policy.edit import EditError

        if self.files is None:
            self.notify("the gateway is not up yet", severity="warning")
            return False
        try:
            result = self.files.edit(server, fn)
        except (EditError, OSError) as exc:
            self.notify(str(exc), title=f"{label}: not changed", severity="error", timeout=8)
            return False
        if not result.applied:
            if result.unchanged:
                self.notify(f"{label}: the policy already says so")
            return False
        self._edit_labels[server].append(label)  # names the PolicyReloaded just published
        self.flush_events()
        return True

    def undo_edit(self) -> None:
        """Put back the policy text from before the last edit (`u`)."""
        if self.files is None or not self.files.can_undo():
            self.notify("nothing to undo", severity="warning")
            return
        try:
            result = self.files.undo()
        except OSError as exc:
            self.notify(f"undo failed: {exc}", severity="error")
            return
        if result is not None and result.applied:
            self._edit_labels[result.server].append("undo")
        self.flush_events()

    def save_policy_text(self, server: str, text: str) -> Any:
        """The editor's ctrl+s: `PolicyFiles.save_text` (validated, written
        atomically, applied). Returns the `ReloadResult`; raises EditError or
        OSError (nothing lost: the editor keeps the text)."""
        result = self.files.save_text(server, text)
        if result.applied:
            self._edit_labels[server].append("saved from the editor")
        self.flush_events()
        self.refresh_views()
        return result

    def _notify_policy_events(self, batch: list[Any]) -> None:
        for e in batch:
            kind = type(e).__name__
            if kind == "PolicyReloaded":
                labels = self._edit_labels.get(e.server)
                label = labels.popleft() if labels and e.source != "file" else None
                name = Path(e.path).name or e.server
                title = (f"{name}: {label}" if label else
                         f"{name} changed on disk: applied" if e.source == "file" else f"{name}: applied")
                self.notify(diff_text(e.diff) or "no change in the rules", title=title, timeout=4)
            elif kind == "PolicyRejected":
                first = short_error(e.errors[0]) if e.errors else "invalid policy"
                more = f" (+{len(e.errors) - 1} more)" if len(e.errors) > 1 else ""
                self.notify(f"{first}{more}\nthe previous policy keeps running",
                            title=f"{Path(e.path).name or e.server} rejected", severity="error", timeout=10)
            elif kind == "ApprovalResolved" and e.outcome == "policy_changed":
                what = "let through" if e.approved else "denied"
                self.notify(f"{e.tool} on {e.server}: the policy changed while it waited; {what}",
                            title="approval resolved by the policy",
                            severity="information" if e.approved else "warning", timeout=8)

    def _sync_counter_limits(self, servers: set[str]) -> None:
        """Let the gauges show a reloaded policy's `max` at once (counts are kept)."""
        now_mono = time.monotonic()
        for name in servers:
            h = self._handles().get(name)
            counters = getattr(h, "counters", None)
            policy = getattr(h, "policy", None)
            if counters is None or policy is None:
                continue
            limits = list(policy.all_tools_limits)
            for rule in policy.tools.values():
                limits += list(rule.limits)
            try:
                counters.update_limits(limits)
                views = counters.snapshot(now_mono)
            except Exception:  # noqa: BLE001 - gauges are a view; never break the console
                continue
            self.model.sync_counters(name, views, self.clock())

    # -- command palette ------------------------------------------------------------
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for ctx in getattr(screen, "KEY_CONTEXTS", ()):
            for k in keys_for(ctx):
                if screen.check_action(k.action, ()) is False:
                    continue
                yield SystemCommand(k.description, f"{k.key_display or k.key} · {ctx}",
                                    lambda s=screen, a=k.action: s.run_action(a))
        yield SystemCommand("Keys", "? · every key by context", self.action_help)
