"""The console's own gateway, in a child process: `mcpguard console` and `mcpguard demo` run it this way.

The console and the gateway used to share one event loop, so painting the
screen delayed the agents' calls. Now the console starts `mcpguard serve`
as a child process (`--console`: approvals wait for the console;
`--exit-with-parent`: it stops if the console dies) and attaches to it like
`mcpguard console --attach` does, through the control endpoint with a token
only these two processes know (passed in the child's environment). The
child's output goes to a log file, never to the terminal the console draws
on. `stop()` sends SIGTERM (the gateway denies pending approvals, closes its
sessions and upstream processes) and waits, then kills.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mcpguard.control_http import RemoteControl, read_control_file

TOKEN_ENV = "MCPGUARD_CONTROL_TOKEN"
START_TIMEOUT_S = 120.0


class GatewayProcess:
    """`mcpguard serve --config CONFIG` as a child of this process, with its `RemoteControl` (`control`).

    `port` overrides `[gateway] port`; `log` is where the child's stdout and
    stderr go. `start()` raises `RuntimeError` (with the end of the log) when
    the gateway exits or does not come up within `START_TIMEOUT_S` seconds.
    """

    def __init__(self, config: str | os.PathLike[str], *, port: int | None = None,
                 log: str | os.PathLike[str] | None = None,
                 control_file: str | os.PathLike[str] | None = None) -> None:
        self.config = Path(config).resolve()
        self.port = port
        self._dir = Path(tempfile.mkdtemp(prefix="mcpguard-console-"))
        # The config's control file, so `mcpguard console --attach` finds this gateway too;
        # a file left by an earlier run is told apart by its token.
        self.control_file = Path(control_file) if control_file else self._dir / "control.json"
        self.log = Path(log) if log else self._dir / "gateway.log"
        self.token = secrets.token_urlsafe(32)
        self.control = RemoteControl(None, self.token)
        self.proc: subprocess.Popen[bytes] | None = None
        self.url: str | None = None

    async def start(self) -> None:
        cmd = [sys.executable, "-m", "mcpguard", "serve", "--config", str(self.config), "--control-file",
               str(self.control_file), "--control-token-env", TOKEN_ENV, "--console", "--exit-with-parent"]
        if self.port is not None:
            cmd += ["--port", str(self.port)]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab")
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, TOKEN_ENV: self.token}, start_new_session=True,
                                         cwd=str(self.config.parent))
        finally:
            out.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the gateway exited ({self.proc.returncode}): {self._log_tail()}")
            if self.control_file.exists():
                with contextlib.suppress(OSError, ValueError):
                    url, token = read_control_file(self.control_file)
                    if token == self.token:
                        self.url = url
                        self.control.set_url(url)
                        return
            await asyncio.sleep(0.05)
        await self.stop()
        raise RuntimeError(f"the gateway did not come up within {START_TIMEOUT_S:g}s: {self._log_tail()}")

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        for _ in range(400):  # up to 20 s: pending approvals denied, sessions and upstreams closed
            if proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(5)
        shutil.rmtree(self._dir, ignore_errors=True)

    def _log_tail(self, n: int = 15) -> str:
        try:
            lines = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-n:]) or "(nothing logged)"
