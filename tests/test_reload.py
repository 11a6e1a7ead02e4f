"""Tune the policy while the agent runs: external edits, console edits, undo; counters kept.

A real SDK client calls through a real gateway to the everything server while
the test changes the policy file under it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from upstreams.harness import client, everything_server, make_config, running

from mcpguard.events import PolicyRejected, PolicyReloaded
from mcpguard.policy.edit import EditError, set_action, set_max
from mcpguard.reload import PolicyFiles

POLICY = """\
# the echo cap, tuned while the agent runs
version = "1"
default = "deny"

[tools.echo]   # the capped write
[[tools.echo.limits]]
counter = "echo_rate"   # per session
window = "minute"
max = 3
scope = "session"

[tools.status]
"""


async def _next(sub, kind, timeout=5.0):
    async def loop():
        while True:
            e = await sub.get()
            if isinstance(e, kind):
                return e
    return await asyncio.wait_for(loop(), timeout)


async def _admitted(session, n: int) -> list[bool]:
    out = []
    for i in range(n):
        res = await session.call_tool("echo", {"text": str(i)})
        out.append(not res.is_error)
    return out


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    return tmp_path / "ev.toml"


async def test_external_write_applies_within_a_second_and_keeps_counters(tmp_path, policy_path):
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, POLICY)])
    async with running(cfg, watch_policies=False) as gw, client(gw.url("ev")) as s:
        files = PolicyFiles(gw)
        sub = gw.bus.subscribe()
        watcher = asyncio.create_task(files.watch())
        try:
            await asyncio.sleep(0.3)  # the watcher is up
            assert await _admitted(s, 4) == [True, True, True, False]
            # a person raises the cap in their editor: the 3 admitted calls still count
            policy_path.write_text(POLICY.replace("max = 3", "max = 5"))
            ev = await _next(sub, PolicyReloaded, timeout=3)
            assert "-max = 3" in ev.diff and "+max = 5" in ev.diff
            assert await _admitted(s, 3) == [True, True, False]
            # a typo is rejected: the last good policy (max 5) keeps enforcing
            policy_path.write_text(POLICY.replace('window = "minute"', 'window = "minit"'))
            rej = await _next(sub, PolicyRejected, timeout=3)
            assert any(":8:" in e and "minit" in e for e in rej.errors), rej.errors
            assert gw.servers["ev"].policy_errors
            assert await _admitted(s, 1) == [False]
            assert gw.servers["ev"].policy.tools["echo"].limits[0].max == 5
            # lowering the cap below the count rate-limits until the window frees
            policy_path.write_text(POLICY.replace("max = 3", "max = 2"))
            await _next(sub, PolicyReloaded, timeout=3)
            assert gw.servers["ev"].policy_errors == []
            assert await _admitted(s, 1) == [False]
            view = [v for v in gw.servers["ev"].counters.snapshot(__import__("time").monotonic())
                    if v.counter == "echo_rate"]
            assert [v.count for v in view] == [5]  # no call lost or counted twice
        finally:
            watcher.cancel()


async def test_console_edits_write_the_file_keep_comments_and_undo(tmp_path, policy_path):
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, POLICY)])
    async with running(cfg, watch_policies=False) as gw, client(gw.url("ev")) as s:
        files = PolicyFiles(gw)
        assert await _admitted(s, 4) == [True, True, True, False]
        res = files.edit("ev", lambda t, f: set_max(t, f, counter="echo_rate", delta=+1))
        assert res.applied and "+max = 4" in res.diff
        text = policy_path.read_text()
        assert "# the echo cap, tuned while the agent runs" in text and "# per session" in text
        assert await _admitted(s, 2) == [True, False]
        files.edit("ev", lambda t, f: set_action(t, f, "echo", "deny"))
        denied = await s.call_tool("echo", {"text": "x"})
        assert denied.is_error and denied.meta["mcpguard/decision"]["code"] == "policy_denied"
        files.undo()
        assert 'action = "deny"' not in policy_path.read_text()
        files.undo()
        assert policy_path.read_text() == POLICY
        assert gw.servers["ev"].policy.tools["echo"].limits[0].max == 3


async def test_an_edit_that_would_break_the_policy_is_refused_and_nothing_is_written(tmp_path, policy_path):
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, POLICY)])
    async with running(cfg, watch_policies=False) as gw:
        files = PolicyFiles(gw)
        with pytest.raises(EditError, match="invalid"):
            files.edit("ev", lambda t, f: t.replace('scope = "session"', 'scope = "planet"'))
        assert policy_path.read_text() == POLICY
        res = files.save_text("ev", POLICY + "\n[tools.oops\n")
        assert not res.applied and res.errors and policy_path.read_text() == POLICY


APPROVAL_POLICY = """\
version = "1"
default = "deny"

[tools.status]
action = "require_approval"
approval_timeout = "30s"
"""


async def _pending(gw, n=1):
    for _ in range(500):
        if len(gw.approvals.pending()) >= n:
            return gw.approvals.pending()
        await asyncio.sleep(0.01)
    raise AssertionError("no pending approval")


async def test_pending_approvals_follow_a_policy_change(tmp_path, policy_path):
    """A waiting call whose tool becomes denied is denied; one whose tool becomes allowed goes through."""
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, APPROVAL_POLICY)])
    async with running(cfg, watch_policies=False) as gw, client(gw.url("ev")) as s:
        files = PolicyFiles(gw)
        waiting = asyncio.create_task(s.call_tool("status", {}))
        await _pending(gw)
        files.edit("ev", lambda t, f: set_action(t, f, "status", "deny"))
        res = await asyncio.wait_for(waiting, 10)
        assert res.is_error and res.meta["mcpguard/decision"]["code"] == "policy_changed"
        assert "policy changed" in res.content[0].text

        files.undo()  # back to require_approval
        waiting = asyncio.create_task(s.call_tool("status", {}))
        await _pending(gw)
        files.edit("ev", lambda t, f: set_action(t, f, "status", "allow"))
        res = await asyncio.wait_for(waiting, 10)
        assert not res.is_error, res
        assert gw.approvals.pending() == []


async def test_a_new_max_shows_in_the_counter_view_at_once(tmp_path, policy_path):
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, POLICY)])
    async with running(cfg, watch_policies=False) as gw, client(gw.url("ev")) as s:
        files = PolicyFiles(gw)
        await _admitted(s, 2)
        files.edit("ev", lambda t, f: set_max(t, f, counter="echo_rate", value=7))
        (view,) = gw.servers["ev"].counters.snapshot(__import__("time").monotonic())
        assert (view.count, view.max) == (2, 7)


# ---- a changed file is applied only once it is whole and readable

GUARDED = """\
version = "1"
default = "deny"

[tools.echo]

[tools.status]
"""

# what a person saves: everything allowed by default, except a delete they deny at the end
OPENED_UP = """\
version = "1"
default = "allow"

[tools.echo]

[tools.delete_thing]
action = "deny"
reason = "Deleting things is not for agents."
"""
FIRST_HALF = OPENED_UP[:OPENED_UP.index("[tools.delete_thing]")]  # valid on its own, and allows delete_thing


def _write_in_two_halves(path: Path, first: str, rest: str, pause_s: float) -> None:
    """An editor writing in place: truncate, write, pause, write the rest, close."""
    import time

    with open(path, "w", encoding="utf-8") as f:
        f.write(first)
        f.flush()
        time.sleep(pause_s)
        f.write(rest)


async def _events_until_quiet(sub, quiet_s: float = 1.0, limit_s: float = 8.0) -> list:
    """Every PolicyReloaded/PolicyRejected until none came for `quiet_s` (at most `limit_s` in all)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit_s
    got = []
    while loop.time() < end:
        try:
            e = await asyncio.wait_for(sub.get(), min(quiet_s, max(end - loop.time(), 0.01)))
        except TimeoutError:
            break
        if isinstance(e, (PolicyReloaded, PolicyRejected)):
            got.append(e)
    return got


async def test_a_file_written_in_two_halves_is_applied_only_whole(tmp_path, policy_path):
    """The first half is a valid policy that allows delete_thing; it must never run.

    The pause (0.15 s) is three watchfiles steps long, so a watcher that read
    at once would apply the half; settle_s is 0.5 s, a margin over the pause
    for a loaded machine (the default is 0.2 s).
    """
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, GUARDED)])
    async with running(cfg, watch_policies=False) as gw, client(gw.url("ev")) as s:
        files = PolicyFiles(gw, settle_s=0.5)
        applied: list[str] = []
        real_set_policy = gw.set_policy

        def spy(server, policy):  # every policy that ever runs, in order
            applied.append(policy.source.text)
            real_set_policy(server, policy)

        gw.set_policy = spy
        sub = gw.bus.subscribe()
        watcher = asyncio.create_task(files.watch())
        try:
            await asyncio.sleep(0.3)  # the watcher is up
            await asyncio.to_thread(_write_in_two_halves, policy_path, FIRST_HALF,
                                    OPENED_UP[len(FIRST_HALF):], 0.15)
            events = await _events_until_quiet(sub)
            assert [type(e).__name__ for e in events] == ["PolicyReloaded"]
            assert applied == [OPENED_UP]
            assert '+action = "deny"' in events[0].diff
            denied = await s.call_tool("delete_thing", {"id": "1"})
            assert denied.is_error and denied.meta["mcpguard/decision"]["code"] == "policy_denied"
            assert not (await s.call_tool("progress", {"steps": 1})).is_error  # default allow now
        finally:
            watcher.cancel()


async def test_a_file_that_never_settles_is_read_as_it_stands_after_the_bound(tmp_path, policy_path):
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, GUARDED)])
    async with running(cfg, watch_policies=False) as gw:
        files = PolicyFiles(gw, settle_s=0.05, settle_max_s=0.6)
        stop = asyncio.Event()

        async def keep_touching() -> None:  # a log-like writer that never stops appending comments
            for i in range(200):
                if stop.is_set():
                    return
                with open(policy_path, "a", encoding="utf-8") as f:
                    f.write(f"# {i}\n")
                await asyncio.sleep(0.02)

        writer = asyncio.create_task(keep_touching())
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        result = await files.reload_settled("ev")
        took = loop.time() - t0
        stop.set()
        await writer
        assert result.applied and "+# " in result.diff
        assert 0.5 < took < 3.0, took  # the bound, not the writer, ended the wait


def _not_utf8(path: Path) -> str:
    path.write_bytes(GUARDED.encode() + b"# caf\xe9 au lait\n[tools.progress]\n")
    return "not UTF-8 text (byte 0xe9 at line 7, column 6)"


def _a_folder(path: Path) -> str:
    path.unlink()
    path.mkdir()
    return "it is a folder, not a file"


def _a_pipe(path: Path) -> str:
    import os

    path.unlink()
    os.mkfifo(path)
    return "it is a named pipe (FIFO), not a file"


def _a_symlink_loop(path: Path) -> str:
    path.unlink()
    other = path.with_name("loop.toml")
    other.symlink_to(path.name)
    path.symlink_to(other.name)
    return "Too many levels of symbolic links"


def _deleted(path: Path) -> str:
    path.unlink()
    return "No such file or directory"


@pytest.mark.parametrize("make_unreadable", [_not_utf8, _a_folder, _a_pipe, _a_symlink_loop, _deleted])
async def test_an_unreadable_file_is_rejected_and_the_last_good_policy_keeps_deciding(
        tmp_path, policy_path, make_unreadable):
    from mcpguard.audit import read_audit

    audit_path = tmp_path / "audit.jsonl"
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, GUARDED)], audit_log=str(audit_path))
    async with running(cfg, watch_policies=False) as gw, client(gw.url("ev")) as s:
        files = PolicyFiles(gw)
        sub = gw.bus.subscribe()
        watcher = asyncio.create_task(files.watch())
        try:
            await asyncio.sleep(0.3)  # the watcher is up
            reason = make_unreadable(policy_path)
            rej = await _next(sub, PolicyRejected, timeout=5)
            (error,) = rej.errors
            assert error.startswith(f"{policy_path}:1:1: cannot read policy: {reason}"), error
            assert gw.servers["ev"].policy_errors == list(rej.errors)
            records = [r for r in read_audit(audit_path) if r["kind"] == "policy_rejected"]
            assert [r["errors"] for r in records] == [list(rej.errors)]
            # the last good policy still decides: echo listed, progress not (default deny)
            assert not (await s.call_tool("echo", {"text": "x"})).is_error
            denied = await s.call_tool("progress", {"steps": 1})
            assert denied.is_error and denied.meta["mcpguard/decision"]["code"] == "policy_denied"
            # and a good file again is applied
            if policy_path.is_dir() and not policy_path.is_symlink():
                policy_path.rmdir()
            elif policy_path.is_symlink() or policy_path.exists():
                policy_path.unlink()
            policy_path.write_text(GUARDED.replace("[tools.status]", "[tools.progress]"), encoding="utf-8")
            await _next(sub, PolicyReloaded, timeout=5)
            assert gw.servers["ev"].policy_errors == []
            assert not (await s.call_tool("progress", {"steps": 1})).is_error
        finally:
            watcher.cancel()


# A file without read permission. Root reads it anyway, so as root the script runs
# under setpriv (util-linux) without the two capabilities that let root ignore
# file modes (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH): the same "Permission
# denied" a normal user gets.
NO_PERMISSION = """
import asyncio, json, os, sys
from pathlib import Path
from mcpguard.audit import AuditLog, read_audit
from mcpguard.events import EventBus, PolicyRejected
from mcpguard.policy import PolicyError, load_policy
from mcpguard.reload import PolicyFiles

path, audit_path = Path(sys.argv[1]), Path(sys.argv[2])

class Handle:  # what PolicyFiles reads of a gateway's server
    policy_path = path
    policy = load_policy(path)
    policy_errors = []

class StandIn:
    bus = EventBus()
    audit = AuditLog(audit_path)
    servers = {"ev": Handle()}
    set_policy_calls = 0

    def set_policy(self, server, policy):
        self.set_policy_calls += 1
        self.servers[server].policy = policy

gw = StandIn()
first = gw.servers["ev"].policy
sub = gw.bus.subscribe()
files = PolicyFiles(gw)
os.chmod(path, 0)
try:
    load_policy(path)
    loaded = "loaded"
except PolicyError as exc:
    loaded = [str(i) for i in exc.issues]
result = asyncio.run(files.reload_settled("ev"))
events = []
while (e := sub.get_nowait()) is not None:
    events.append([type(e).__name__, list(getattr(e, "errors", ()))])
print(json.dumps({
    "load_policy": loaded, "errors": list(result.errors), "applied": result.applied, "events": events,
    "audit": [r["errors"] for r in read_audit(audit_path) if r["kind"] == "policy_rejected"],
    "same_policy": gw.servers["ev"].policy is first and gw.set_policy_calls == 0,
    "policy_errors": gw.servers["ev"].policy_errors,
}))
"""


def test_a_file_without_read_permission_is_rejected_and_the_last_good_policy_stays(tmp_path, policy_path):
    import json
    import os
    import subprocess
    import sys

    policy_path.write_text(GUARDED, encoding="utf-8")
    cmd = [sys.executable, "-c", NO_PERMISSION, str(policy_path), str(tmp_path / "audit.jsonl")]
    if os.geteuid() == 0:
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    want = [f"{policy_path}:1:1: cannot read policy: Permission denied (check the file's permissions)"]
    assert seen == {"load_policy": want, "errors": want, "applied": False,
                    "events": [["PolicyRejected", want]], "audit": [want], "same_policy": True,
                    "policy_errors": want}


async def test_the_gateway_starts_on_an_unreadable_policy_and_denies_every_call(tmp_path, policy_path):
    """A pipe where the policy should be: start-up neither hangs nor crashes; no policy, every call denied."""
    import os

    from mcpguard.audit import read_audit

    audit_path = tmp_path / "audit.jsonl"
    cfg = make_config(tmp_path, [everything_server("ev", tmp_path, GUARDED)], audit_log=str(audit_path))
    policy_path.unlink()
    os.mkfifo(policy_path)
    async with running(cfg, watch_policies=False) as gw, client(gw.url("ev")) as s:
        want = [f"{policy_path}:1:1: cannot read policy: it is a named pipe (FIFO), not a file "
                "(point the config at a policy file)"]
        assert gw.servers["ev"].policy is None and gw.servers["ev"].policy_errors == want
        assert [r["errors"] for r in read_audit(audit_path) if r["kind"] == "policy_rejected"] == [want]
        denied = await s.call_tool("echo", {"text": "x"})
        assert denied.is_error and denied.meta["mcpguard/decision"]["code"] == "no_policy"
