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
    async with running(cfg) as gw, client(gw.url("ev")) as s:
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
    async with running(cfg) as gw, client(gw.url("ev")) as s:
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
    async with running(cfg) as gw:
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
    async with running(cfg) as gw, client(gw.url("ev")) as s:
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
    async with running(cfg) as gw, client(gw.url("ev")) as s:
        files = PolicyFiles(gw)
        await _admitted(s, 2)
        files.edit("ev", lambda t, f: set_max(t, f, counter="echo_rate", value=7))
        (view,) = gw.servers["ev"].counters.snapshot(__import__("time").monotonic())
        assert (view.count, view.max) == (2, 7)
