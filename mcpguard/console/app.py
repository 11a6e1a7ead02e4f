"""`ConsoleApp`: the Textual console, driving a gateway through its control interface only.

The app sees and drives the gateway through a `mcpguard.control.Control`
and nothing else: a `LocalControl` for a gateway in this process, a
`RemoteControl` for one it attached to (`mcpguard console --attach`). It
keeps the latest `Snapshot` (taken when the gateway's events say what it
shows changed, and every few seconds), folds the event stream into a
`CallLog` on a timer (`FLUSH_INTERVAL_S`, 0.1 s), so a burst of calls costs
at most ten repaints a second (two under load, `BUSY_FLUSH_S`; an
approval still shows at the next 0.1 s), and answers approvals, tunes and saves the
policy through the control's commands. Every policy change arrives as an
event (`PolicyReloaded` with its diff and label, `PolicyRejected` with
file:line:col), shown as a notification, in the status bar and the tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import getpass
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import App, SystemCommand
from textual.css.query import NoMatches
from textual.screen import Screen

from mcpguard.console.approving import DenyReasonScreen, EditArgumentsScreen
from mcpguard.console.keymap import bindings, keys_for
from mcpguard.console.model import CallLog
from mcpguard.console.screens import (
    ApprovalQueueScreen, ConfirmQuitScreen, EditorScreen, HelpScreen, MainScreen, tool_detail_text,
)
from mcpguard.console.themes import DEFAULT_THEME, load_themes, resolve_theme_name, risk_variables
from mcpguard.console.widgets import ServerView, ToolView
from mcpguard.control import Control, ControlError, Snapshot

FLUSH_INTERVAL_S = 0.1
#: under load (a flush that brought at least BUSY_CALLS new calls) the table repaints at most
#: every BUSY_FLUSH_S seconds: at 100+ calls/s nobody reads rows ten times a second, and the
#: console's frames would take CPU the gateway and its agents need; approvals, answers and a lost
#: link still show at the next 0.1 s flush
BUSY_FLUSH_S = 0.5
BUSY_CALLS = 10
_URGENT = frozenset({"ApprovalRequested", "ApprovalResolved", "ControlLink", "PolicyReloaded", "PolicyRejected"})
TICK_INTERVAL_S = 1.0
SNAPSHOT_EVERY_S = 5.0
MAX_EVENTS_PER_FLUSH = 20_000
_GC_FROZEN = False
#: events after which what the snapshot shows (tools, policies, sessions, states) is stale
_STALE = frozenset({"PolicyReloaded", "PolicyRejected", "UpstreamState", "ToolChanged", "SessionOpened",
                    "SessionClosed", "SessionApprovalChanged"})


def diff_text(diff: str, max_lines: int = 4) -> str:
    """The changed lines of a unified diff (no headers), at most `max_lines`."""
    lines = [ln for ln in diff.splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    if len(lines) > max_lines:
        lines = lines[:max_lines] + [f"… {len(lines) - max_lines} more lines"]
    return "\n".join(lines)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "someone"


def short_error(issue: str) -> str:
    """`/path/ev.toml:8:1: message (hint)` -> `ev.toml line 8: message (hint)`."""
    parts = issue.split(":", 3)
    if len(parts) == 4 and parts[1].strip().isdigit():
        return f"{Path(parts[0]).name} line {parts[1].strip()}: {parts[3].strip()}"
    return issue


class ConsoleApp(App[int]):
    """The mcpguard console.

    - `control`: the gateway's `mcpguard.control.Control`.
    - `start` / `stop`: coroutines that start and stop the gateway, when the
      console owns it (embedded: `ConsoleApp.embedded`); quitting then asks
      first when approvals are pending and denies them. An attached console
      (`owner=False`) leaves the gateway running when it quits.
    - `theme_name`: a theme from `themes/*.toml` (`dark`, `light`,
      `high-contrast` or a full name); unknown names fall back to the default.
    - `max_rows`: calls kept in the table (older ones are in the audit log).
    - `clock`: epoch seconds; tests pass a frozen clock for snapshots.
    - `workers`: coroutine functions `fn(app)` run as workers once the
      gateway is up (the demo's scripted agent).
    - `connect_hint`: how an agent connects (text, or a function returning it once
      the gateway is up); shown before the first call and on the server's detail.
    - `by`: who this console's answers say they come from (audited).
    - `bell`: ring the terminal's bell when an approval arrives, so a person in
      another window notices; the terminal's title carries the pending count
      either way.
    """

    CSS_PATH = "app.tcss"
    TITLE = "mcpguard"
    BINDINGS = bindings("app")
    ENABLE_COMMAND_PALETTE = True

    def __init__(
        self,
        control: Control,
        *,
        theme_name: str | None = None,
        max_rows: int = 2000,
        clock: Callable[[], float] = time.time,
        start: Callable[[], Awaitable[None]] | None = None,
        stop: Callable[[], Awaitable[None]] | None = None,
        owner: bool = True,
        workers: Iterable[Callable[[ConsoleApp], Awaitable[Any]]] = (),
        connect_hint: str | Callable[[], str] | None = None,
        keymap: dict[str, str] | None = None,
        by: str | None = None,
        bell: bool = True,
    ) -> None:
        super().__init__()
        self.ring_bell = bell
        self.last_preview = ""  # the last tune's preview summary (its toast's text)
        self._title_shown: str | None = None
        self.control = control
        self.model = CallLog(max_rows)
        self.clock = clock
        self._start, self._stop = start, stop
        self.owner = owner
        self._background = list(workers)
        self.connect_hint = connect_hint
        self._theme_request = theme_name
        self._keymap = keymap or {}
        self.by = by or f"console:{_user()}"
        self._sub = control.subscribe()
        self.snap: Snapshot | None = None
        self._policies: dict[str, tuple[str | None, Any]] = {}  # server -> (version, Policy)
        self._snap_stale = True
        self._snap_at = 0.0
        self.main: MainScreen | None = None
        self._stopping = False
        self.theme_errors: list[str] = []
        self.started = False
        self.view_errors = 0  # refreshes skipped because widgets were mounting or torn down
        self._tree_sig: tuple = ()
        self._bands: frozenset = frozenset()
        self._held: list[Any] = []      # events drained but not yet painted (under load)
        self._busy = False              # the last flush brought BUSY_CALLS or more new calls
        self._flushed_at = 0.0
        self._figures: tuple = ()
        #: the link to the gateway: None when fine, else what the status bar says ("disconnected: ...")
        self.link: str | None = None

    @classmethod
    def embedded(cls, gateway: Any, *, start_gateway: bool = True, **kw: Any) -> ConsoleApp:
        """A console that owns `gateway` (a `mcpguard.gateway.Gateway` in this process): it starts it on
        mount (unless `start_gateway` is False: already running) and stops it on quit."""
        from mcpguard.control import LocalControl

        async def stop() -> None:
            await asyncio.wait_for(gateway.stop(), timeout=15)

        return cls(LocalControl(gateway), start=gateway.start if start_gateway else None,
                   stop=stop if start_gateway else None, owner=True, **kw)

    def get_theme_variable_defaults(self) -> dict[str, str]:
        """The risk, gauge and pending colors for whichever theme is current (`themes.risk_variables`):
        a theme that defines them (the `themes/*.toml` files) overrides these, and every other theme the
        palette offers (Textual's own) gets them from its own palette."""
        return {**super().get_theme_variable_defaults(), **risk_variables(self.current_theme)}

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
        self.run_worker(self._start_gateway(), name="gateway-start", exclusive=True, group="gateway")

    async def _start_gateway(self) -> None:
        if self._start is not None:
            try:
                await self._start()
            except Exception as exc:  # noqa: BLE001 - shown to the person
                self.exit(1, message=f"mcpguard: the gateway did not start: {exc}")
                return
        await self.fetch_snapshot()
        if self.snap is not None:
            self._after_start()
        else:  # an attached gateway that is not there (yet): the event stream says when it is
            self.link = "connecting…"
            self.flush_events()

    def _after_start(self) -> None:
        self.started = True
        # Everything loaded so far (Textual, the SDK, the gateway, the screen) lives as
        # long as the app: take it out of the cyclic GC's full passes, which otherwise
        # walk it all every few seconds under load (a 100-160 ms stall of the loop;
        # bench/bench_console.py)
        global _GC_FROZEN
        if not _GC_FROZEN:  # once per process (tests start many apps in one)
            _GC_FROZEN = True
            gc.collect()
            gc.freeze()
        self.refresh_views()
        for fn in self._background:
            self.run_worker(fn(self), group="background", exit_on_error=False)

    async def shutdown(self, deny_pending: bool = True) -> None:
        """Deny pending approvals (when this console owns the gateway), stop it (bounded wait), exit."""
        if self._stopping:
            return
        self._stopping = True
        if deny_pending and self.owner and self.snap is not None:
            for p in list(self.model.pending.values()):
                try:
                    await self.control.deny(p.approval_id, by=self.by, reason="the console quit")
                except ControlError:
                    pass
        self.workers.cancel_group(self, "background")
        if self._stop is not None and self.started:
            try:
                await self._stop()
            except Exception:  # noqa: BLE001 - quitting anyway
                pass
        self._sub.close()
        with contextlib.suppress(Exception):
            await self.control.close()
        self.exit(0)

    async def action_quit(self) -> None:
        n = len(self.model.pending)
        if not n or not self.owner:
            await self.shutdown()
            return

        async def answered(yes: bool | None) -> None:
            if yes:
                await self.shutdown()

        self.push_screen(ConfirmQuitScreen(n), answered)

    # -- the snapshot -------------------------------------------------------------------
    async def fetch_snapshot(self) -> None:
        """Take a new snapshot of the gateway (local: at once; remote: one request) and redraw."""
        now_fn = getattr(self.control, "snapshot_now", None)
        try:
            snap = now_fn() if now_fn is not None else await self.control.snapshot()
        except Exception as exc:  # noqa: BLE001 - an attached gateway may be gone: keep what we saw
            self.log.warning(f"snapshot failed: {exc}")
            return
        self._set_snapshot(snap)

    def _set_snapshot(self, snap: Snapshot) -> None:
        self.snap = snap
        self._snap_stale = False
        self._snap_at = time.monotonic()
        for s in snap.servers:
            self.model.sync_counters(s.name, s.counters, self.clock())
            self.model.sync_tools(s.name, (t.name for t in s.tools))
        self.model.sync_pending(snap.pending, snap.taken_at)
        if self.main is not None and self.main.is_mounted:
            try:
                self.main.refresh_tree()
                self.main.refresh_gauges()
                self.main.refresh_status()
                self.refresh_pending()
            except NoMatches as exc:  # a snapshot that lands while the console quits: nothing to draw
                self.view_errors += 1
                self.log.warning(f"snapshot view skipped: {exc}")

    def _snapshot_soon(self) -> None:
        """Take a snapshot now for a local gateway, or soon (one at a time) for an attached one."""
        if getattr(self.control, "snapshot_now", None) is not None:
            self._set_snapshot(self.control.snapshot_now())  # type: ignore[attr-defined]
        else:
            self._snap_stale = True
            # the method, not a coroutine: an exclusive worker replaced before it ran
            # would leave a coroutine nobody awaits
            self.run_worker(self.fetch_snapshot, name="snapshot", exclusive=True, group="snapshot")

    def policy_of(self, server: str) -> Any:
        """The running policy of `server` as a `mcpguard.policy.Policy` (parsed from the snapshot's text,
        once per version), or None when none runs."""
        s = self.snap.server(server) if self.snap is not None else None
        if s is None or s.policy.text is None:
            return None
        cached = self._policies.get(server)
        if cached is not None and cached[0] == s.policy.version:
            return cached[1]
        from mcpguard.policy import PolicyError, parse_policy

        try:
            policy = parse_policy(s.policy.text, s.policy.format, s.policy.path or f"{server}.{s.policy.format}")
        except PolicyError:
            policy = None
        self._policies[server] = (s.policy.version, policy)
        return policy

    def can_undo(self) -> bool:
        return bool(self.snap is not None and self.snap.gateway.can_undo)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def _disk_changed(self, server: str) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, EditorScreen) and screen.server == server:
                screen.disk_changed()

    # -- events ---------------------------------------------------------------------
    def flush_events(self) -> None:
        """Drain the subscription and redraw what changed (runs every FLUSH_INTERVAL_S)."""
        try:
            self._flush_events()
        except NoMatches as exc:  # widgets mounting or torn down (quit): a view never breaks the console
            self.view_errors += 1
            self.log.warning(f"flush skipped: {exc}")

    def _flush_events(self) -> None:
        batch, self._held = self._held, []
        while len(batch) < MAX_EVENTS_PER_FLUSH:
            e = self._sub.get_nowait()
            if e is None:
                break
            batch.append(e)
        if not batch or self.main is None or not self.main.is_mounted:
            self._held = batch
            return
        now = time.monotonic()
        if (self._busy and now - self._flushed_at < BUSY_FLUSH_S and len(batch) < MAX_EVENTS_PER_FLUSH
                and not any(type(e).__name__ in _URGENT for e in batch)):
            self._held = batch  # painted again once BUSY_FLUSH_S has passed
            return
        self._flushed_at = now
        pending_before = len(self.model.pending)
        log = self.model
        log.evicted.clear()
        new, changed = log.apply(batch)
        self._busy = len(new) >= BUSY_CALLS
        evicted = list(log.evicted)
        log.evicted.clear()
        self.main.apply_batch(new, changed, evicted)
        kinds = {type(e).__name__ for e in batch}
        if "ControlLink" in kinds:
            self._link_changed([e for e in batch if type(e).__name__ == "ControlLink"][-1])
        self._notify_policy_events(batch)
        for e in batch:  # the gateway follows the files; an open editor follows what it saw
            if type(e).__name__ in ("PolicyReloaded", "PolicyRejected") and getattr(e, "source", "file") == "file":
                self._disk_changed(e.server)
        if kinds & _STALE:
            self._snapshot_soon()
        # gauges and the status bar repaint on the 1 s tick; a batch redraws them at
        # once only when what a person must see at once changed: a gauge appeared,
        # went or changed color, or a denial / pending / policy figure moved
        bands = self._gauge_bands()
        if "PolicyReloaded" in kinds or bands != self._bands:
            self._bands = bands
            self.main.refresh_gauges()
        if kinds & {"ApprovalRequested", "ApprovalResolved"} or pending_before != len(log.pending):
            self.refresh_pending()
            if len(log.pending) > pending_before and self.ring_bell:
                self.bell()
        figures = (log.denied_total, len(log.pending), log.dropped_events, self._tree_sig, self.link)
        if figures != self._figures or kinds & {"PolicyReloaded", "PolicyRejected", "UpstreamState"}:
            self._figures = figures
            self.main.refresh_status()

    def _link_changed(self, e: Any) -> None:
        """The attached gateway went away (keep what we saw, say so) or came back (take a new snapshot)."""
        if e.state == "connected":
            self.link = None
            self.run_worker(self._reconnected, name="reconnect", exclusive=True, group="snapshot")
        else:
            self.link = f"disconnected: {e.detail}" if e.detail else "disconnected"
        if self.main is not None and self.main.is_mounted:
            self.main.refresh_status()

    async def _reconnected(self) -> None:
        await self.fetch_snapshot()
        if self.snap is not None and not self.started:
            self._after_start()

    def _gauge_bands(self) -> frozenset:
        """Each live counter with its color band (0 ok, 1 warning at 80%, 2 error at 100%)."""
        return frozenset((k, 2 if v.ratio >= 1 else 1 if v.ratio >= 0.8 else 0)
                         for k, v in self.model.counters.items())

    def refresh_pending(self) -> None:
        if self.main is not None:
            self.main.refresh_pending()
        for screen in self.screen_stack:
            if isinstance(screen, (EditorScreen, ApprovalQueueScreen, DenyReasonScreen, EditArgumentsScreen)):
                screen.refresh_pending()
        self._set_terminal_title(len(self.model.pending))

    def _set_terminal_title(self, pending: int) -> None:
        title = f"mcpguard · {pending} pending" if pending else "mcpguard"
        if title == self._title_shown:
            return
        self._title_shown = title
        self.title = title
        # Textual has no public call for the terminal's window title (App.title is the
        # header's): write OSC 2 the way App.bell writes BEL, through the driver
        driver = getattr(self, "_driver", None)
        if driver is not None and not self.is_headless:
            driver.write(f"\x1b]2;{title}\x07")

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
        if self.started and (self._snap_stale or time.monotonic() - self._snap_at >= SNAPSHOT_EVERY_S):
            self._snapshot_soon()
        self.main.refresh_gauges()
        self.main.refresh_status()
        if self.model.pending:
            self.refresh_pending()

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
    def listen_url(self) -> str:
        if not self.started or self.snap is None:
            return "starting…"
        if len(self.snap.servers) == 1:
            return self.snap.servers[0].url
        return self.snap.gateway.base_url

    def server_url(self, server: str) -> str | None:
        s = self.snap.server(server) if self.snap is not None else None
        return s.url if s is not None else None

    def server_views(self) -> list[ServerView]:
        views = []
        for s in (self.snap.servers if self.snap is not None else []):
            changed = {t.name for t in s.tools if t.changed} | {t for srv, t in self.model.changed_tools
                                                                  if srv == s.name}
            tools = [ToolView(t.name, t.risk.level, t.risk.kind, t.state, t.name in changed) for t in s.tools]
            errors = list(s.policy.errors) or list(self.model.policy_errors.get(s.name, ()))
            state = self.model.upstream_state.get(s.name, s.state) if self._snap_stale else s.state
            views.append(ServerView(s.name, state, tools, s.policy.path or "", str(errors[0]) if errors else None))
        self._tree_sig = tuple((v.name, v.state, len(v.tools), v.policy_error) for v in views)
        return views

    def status_fields(self) -> dict[str, Any]:
        views = self.server_views()
        policy = ", ".join(Path(v.policy_path).name for v in views if v.policy_path) or ("no policy" if self.started else "")
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
            "link": self.link,
        }

    def welcome_text(self) -> Text:
        t = Text()
        t.append("No calls yet.\n", style="bold")
        hint = self.hint_text()
        if hint:
            t.append(hint)
        elif self.started and self.snap is not None:
            t.append("Point an MCP client (Streamable HTTP) at:\n")
            for s in self.snap.servers:
                t.append(f"  {s.url}\n", style="bold")
        t.append("\n? keys · / filter · e edit policy · ctrl+p palette", style="dim")
        return t

    def hint_text(self) -> str:
        """The connect hint, or '' before the gateway is up / when there is none."""
        if not self.connect_hint or not self.started:
            return ""
        return self.connect_hint() if callable(self.connect_hint) else self.connect_hint

    def risk_source(self, server: str, tool: str) -> str:
        """`write, from ToolAnnotations`: the tool's risk kind and what decided it, for the prompt."""
        s = self.snap.server(server) if self.snap is not None else None
        t = next((t for t in s.tools if t.name == tool), None) if s is not None else None
        if t is None or not t.risk.kind:
            return ""
        source = {"policy": "the policy's risk", "annotations": "ToolAnnotations", "name": "the tool's name",
                  "default": "no hints: assumed"}.get(t.risk.source, t.risk.source)
        return f"{t.risk.kind}, from {source}" if source else t.risk.kind

    def input_schema(self, server: str, tool: str) -> dict[str, Any] | None:
        """The tool's `inputSchema` as its server listed it, or None."""
        s = self.snap.server(server) if self.snap is not None else None
        t = next((t for t in s.tools if t.name == tool), None) if s is not None else None
        return t.input_schema if t is not None else None

    def open_call(self, call_id: str) -> None:
        """The full-screen view of one call (`enter` on a row)."""
        from mcpguard.console.callview import CallScreen

        rec = self.model.calls.get(call_id)
        if rec is not None:
            self.push_screen(CallScreen(rec))

    def open_sessions(self) -> None:
        """The sessions pane (`S`): agent sessions, their session approvals; revoke or end."""
        from mcpguard.console.sessions import SessionsScreen

        self._snapshot_soon()
        self.push_screen(SessionsScreen())

    def tool_text(self, server: str, tool: str) -> Text:
        view = next((t for v in self.server_views() if v.name == server for t in v.tools if t.name == tool), None)
        return tool_detail_text(server, tool, view, self.policy_of(server))

    def server_text(self, server: str) -> Text:
        v = next((v for v in self.server_views() if v.name == server), None)
        t = Text()
        t.append(f"{server}\n", style="bold")
        if v is not None:
            t.append(f"state {v.state} · {len(v.tools)} tools\n")
            t.append(f"policy {v.policy_path or '(none: every call is denied)'}\n")
            if v.policy_error:
                t.append(f"{v.policy_error}\n", style="bold red")
        url = self.server_url(server)
        if url:
            t.append(f"endpoint {url}\n")
        if self.hint_text():
            t.append("\n" + self.hint_text())
        t.append("\ne edits this server's policy", style="dim")
        return t

    # -- actions the screens ask for ------------------------------------------------
    def answer(self, approval_id: str | None, how: str, *, reason: str | None = None,
               arguments: dict[str, Any] | None = None, digest: str | None = None) -> None:
        """Approve (`approve`, `approve_session`, `approve_edited`) or deny one pending approval."""
        if approval_id is None:
            return
        self.run_worker(self._answer(approval_id, how, reason, arguments, digest), group="answers")

    async def _answer(self, approval_id: str, how: str, reason: str | None, arguments: dict[str, Any] | None,
                      digest: str | None) -> None:
        try:
            if how == "deny":
                result = await self.control.deny(approval_id, by=self.by, reason=reason, digest=digest)
            else:
                result = await self.control.approve(approval_id, by=self.by, for_session=how == "approve_session",
                                                    arguments=arguments, digest=digest)
        except ControlError as exc:
            self.notify(exc.message, severity="warning", timeout=6)
            return
        if "only this call" in result.message:
            self.notify(result.message, timeout=6)
        self.flush_events()

    def open_editor(self, server: str | None, tool: str | None = None) -> None:
        servers = self.snap.servers if self.snap is not None else []
        if not self.started:
            self.notify("the gateway is not up yet", severity="warning")
            return
        if not servers:
            self.notify("no server configured", severity="warning")
            return
        s = next((x for x in servers if x.name == server), servers[0])
        if not s.policy.path:
            self.notify(f"server {s.name} has no policy file in mcpguard.toml", severity="warning")
            return
        self.push_screen(EditorScreen(s.name, Path(s.policy.path), tool=tool))

    # -- policy edits ------------------------------------------------------------------
    def tune(self, server: str, **change: Any) -> None:
        """One edit of `server`'s policy (`Control.tune`: a max, an action, hidden): validated, written
        atomically with comments kept, applied at once. The notification with the diff follows from the
        `PolicyReloaded` event; a refusal is an error notification and nothing is written."""
        if not self.started:
            self.notify("the gateway is not up yet", severity="warning")
            return
        self.run_worker(self._tune(server, change), group="edits")

    async def _tune(self, server: str, change: dict[str, Any]) -> None:
        before = self.policy_of(server)
        try:
            result = await self.control.tune(server, by=self.by, **change)
        except ControlError as exc:
            self.notify(exc.message, title="not changed", severity="error", timeout=8)
            return
        if result.unchanged:
            self.notify(result.message)
        self.flush_events()
        if not result.unchanged:
            await self._preview_toast(server, before)

    async def _preview_toast(self, server: str, before: Any) -> None:
        """After `+`/`-`/`t`/`h`: what the new policy would have decided differently for the calls this
        console saw (`mcpguard.console.preview`), in a toast of its own."""
        from mcpguard.console import preview
        from mcpguard.policy import PolicyError, parse_policy

        try:
            got = await self.control.policy_text(server)
            after = parse_policy(got.applied or got.text or "", got.format, got.path or f"{server}.{got.format}")
        except (ControlError, PolicyError):
            return
        calls = preview.recorded_calls(self.model.calls.values(), server)
        report = preview.preview(calls, after, before)
        self.last_preview = preview.summary(report, source="seen by this console")
        self.notify(self.last_preview, title="what it would have changed",
                    severity="warning" if report.changed else "information", timeout=8)

    def undo_edit(self) -> None:
        """Put back the policy text from before the last edit (`u`)."""
        self.run_worker(self._undo(), group="edits")

    async def _undo(self) -> None:
        try:
            await self.control.undo(by=self.by)
        except ControlError as exc:
            self.notify(exc.message, severity="warning")
        self.flush_events()

    async def save_policy_text(self, server: str, text: str) -> Any:
        """The editor's ctrl+s: `Control.save_policy` (validated, written atomically, applied). Returns the
        `CommandResult`; raises `ControlError` (nothing lost: the editor keeps the text)."""
        result = await self.control.save_policy(server, text, by=self.by)
        self.flush_events()
        return result

    def _notify_policy_events(self, batch: list[Any]) -> None:
        for e in batch:
            kind = type(e).__name__
            if kind == "PolicyReloaded":
                label = e.label if e.source != "file" else None
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
