"""The real MLflow stack for `mcpguard demo` and the end-to-end tests.

Three parts, all outside mcpguard's own virtual environment:

- the *MLflow environment*: a virtual environment holding `mlflow-mcp` 0.4.1
  (the MLflow MCP server, 40 tools) and the `mlflow` tracking server it brings.
  `mlflow-mcp` pins `mcp<2` while mcpguard builds on `mcp` 2.x, so it lives in
  its own environment, as users run it with `uvx`. `ensure_mlflow_env()`
  creates it once under `$MCPGUARD_HOME` (default `~/.cache/mcpguard`), in
  `mlflow-mcp-0.4.1/`; `python -m mcpguard.stack prepare` runs it.
- a *tracking server* (`MlflowTrackingServer`): `mlflow server` on 127.0.0.1,
  a free port, sqlite in a data folder, one worker, job execution off.
- *seed data* (`seed(uri)`) written with MLflow's own client, run in the
  MLflow environment's python (`mlflow_python`), so mcpguard never imports
  mlflow.

`mlflow_server_config(uri, ...)` gives the `[servers.mlflow]` stdio upstream
that runs `mlflow-mcp` against that tracking server.

Installing the environment takes a minute or more, much of it with pip
quiet (resolving, then unpacking some 85 packages). `run_with_progress`
keeps it visibly alive: pip's own lines as they come (what it collects,
downloads, installs), and when nothing was shown for a while a heartbeat
line with the seconds elapsed and what pip is doing (the download's bytes
from pip's `--progress-bar raw`, the packages installed so far). Every line
goes through the `log` callable (stderr by default) as plain text, no
carriage returns or escapes, and heartbeats come every 3 s on a terminal,
every 10 s otherwise (a CI log gets a few lines a minute).

The core never imports textual or rich; neither does this module.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import fcntl
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# httpx2: the HTTP client the mcp SDK itself uses; plain httpx imports rich
# for its command line whenever rich is installed, and the core must not.
import httpx2

MLFLOW_MCP_VERSION = "0.4.1"
"""The `mlflow-mcp` release mcpguard is tested against (40 tools)."""

MLFLOW_VERSION = "3.17.2"
"""The `mlflow` release installed beside it (tracking server and client)."""

ENV_DIR_NAME = f"mlflow-mcp-{MLFLOW_MCP_VERSION}"
_STAMP = ".mcpguard-complete"
_REQUIREMENTS = (f"mlflow-mcp=={MLFLOW_MCP_VERSION}", f"mlflow=={MLFLOW_VERSION}")

DEMO_EXPERIMENT = "mcpguard-demo"
DEMO_MODEL = "mcpguard-demo-model"

# What mlflow-mcp needs so a failing call fails in seconds, not after
# minutes of MLflow's own retries.
MLFLOW_MCP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


class StackError(RuntimeError):
    """The MLflow stack could not be prepared, started or asked (the message says why)."""


# --------------------------------------------------------------------------
# The MLflow environment


def mcpguard_home() -> Path:
    """mcpguard's cache folder: `$MCPGUARD_HOME`, else `~/.cache/mcpguard`."""
    env = os.environ.get("MCPGUARD_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mcpguard"


def mlflow_env_dir(home: str | os.PathLike[str] | None = None) -> Path:
    """Where the MLflow environment lives (it may not be installed yet)."""
    return (Path(home).expanduser() if home else mcpguard_home()) / ENV_DIR_NAME


def _stamp_text() -> str:
    return json.dumps({"requirements": list(_REQUIREMENTS), "python": sys.version.split()[0]})


def is_mlflow_env_ready(env_dir: Path) -> bool:
    """True when `env_dir` holds a finished install (its stamp is written last)."""
    stamp = env_dir / _STAMP
    try:
        data = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    return (
        data.get("requirements") == list(_REQUIREMENTS)
        and (env_dir / "bin" / "mlflow-mcp").exists()
        and (env_dir / "bin" / "mlflow").exists()
    )


def ensure_mlflow_env(home: str | os.PathLike[str] | None = None, *, log=None) -> Path:
    """Make sure the MLflow environment is installed and return its folder.

    Installs `mlflow-mcp==0.4.1` and `mlflow==3.17.2` with pip into a fresh
    virtual environment `<home>/mlflow-mcp-0.4.1/` (home: `$MCPGUARD_HOME` or
    `~/.cache/mcpguard`). About 850 MB and a minute or two the first time;
    afterwards it returns at once.

    Idempotent and atomic: a stamp file is written only after pip succeeded,
    and a folder without it (an install that was stopped half-way) is removed
    and built again. A file lock keeps two processes from installing at once.
    Progress goes to `log` (a callable taking one line; default: stderr).

    Raises `StackError` when the virtual environment or pip fails.
    """
    say = log or (lambda line: print(f"[mcpguard] {line}", file=sys.stderr, flush=True))
    env_dir = mlflow_env_dir(home)
    if is_mlflow_env_ready(env_dir):
        return env_dir
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = env_dir.parent / f".{ENV_DIR_NAME}.lock"
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"another process is installing the MLflow environment; waiting ({lock_path})")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if is_mlflow_env_ready(env_dir):  # another process finished it meanwhile
                return env_dir
            if env_dir.exists():
                say(f"removing an unfinished install in {env_dir}")
                shutil.rmtree(env_dir)
            started = time.monotonic()
            say(f"creating the MLflow environment in {env_dir} (once; about 850 MB)")
            _run_logged([sys.executable, "-m", "venv", str(env_dir)], say)
            py = env_dir / "bin" / "python"
            pip = [str(py), "-m", "pip", "--disable-pip-version-check"]
            # the venv's own pip predates --progress-bar raw (pip 24.1): off until it is upgraded
            _run_logged([*pip, "install", "--progress-bar", "off", "--upgrade", "pip"], say, quiet=True)
            site = _site_packages(env_dir)
            bar = "raw" if _pip_version(site) >= (24, 1) else "off"
            say(f"installing {' '.join(_REQUIREMENTS)}")
            _run_logged([*pip, "install", "--progress-bar", bar, *_REQUIREMENTS], say, site_packages=site)
            if not (env_dir / "bin" / "mlflow-mcp").exists():
                raise StackError(f"pip finished but {env_dir}/bin/mlflow-mcp is missing")
            (env_dir / _STAMP).write_text(_stamp_text())
            say(f"MLflow environment ready in {time.monotonic() - started:.0f} s")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return env_dir


def _run_logged(cmd: list[str], say: Callable[[str], Any], *, quiet: bool = False,
                site_packages: Path | None = None) -> None:
    """One install step of `ensure_mlflow_env` (`run_with_progress`; tests replace it)."""
    run_with_progress(cmd, say, quiet=quiet, site_packages=site_packages)


def _site_packages(env_dir: Path) -> Path | None:
    found = sorted((env_dir / "lib").glob("python*/site-packages"))
    return found[0] if found else None


def _pip_version(site_packages: Path | None) -> tuple[int, ...]:
    """The version of the pip installed in `site_packages`, from its dist-info folder; () if unknown."""
    if site_packages is None:
        return ()
    for info in site_packages.glob("pip-*.dist-info"):
        m = re.match(r"pip-(\d+(?:\.\d+)*)", info.name)
        if m:
            return tuple(int(x) for x in m.group(1).split("."))
    return ()


HEARTBEAT_TTY_S = 3.0
"""Seconds without a shown line before a heartbeat, when stderr is a terminal."""
HEARTBEAT_S = 10.0
"""The same when stderr is not a terminal (CI logs): fewer lines, same facts."""

_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def _size(n: float) -> str:
    """Bytes as pip writes them: `30.1 MB`, `52 kB`, `512 bytes` (powers of 1000)."""
    if n >= 1000 * 1000:
        return f"{n / 1e6:.1f} MB"
    if n >= 10 * 1000:
        return f"{n / 1000:.0f} kB"
    return f"{n:.0f} bytes"


class PipOutput:
    """Reads pip's output line by line: what to show a person, and what pip is doing now.

    `feed(line)` returns the line to show (shortened: `Collecting alembic`
    without its `(from ...)`, `Processing six-1.17.0-py2.py3-none-any.whl`
    without its folder, long package lists cut with their count) or None for lines that say nothing new (`Requirement
    already satisfied`, `Progress N of M` from `--progress-bar raw`, which
    only feeds `activity`). `activity()` is a short phrase for a heartbeat:
    the running download's bytes, the packages installed so far (dist-info
    folders that appeared in `site_packages` since pip said it was
    installing), or the last line shown.
    """

    _SHOW = ("Collecting", "Downloading", "Processing", "Building", "Installing", "Successfully", "ERROR",
             "WARNING", "error:")

    def __init__(self, site_packages: Path | None = None) -> None:
        self.site_packages = site_packages
        self.last = ""
        self._file = ""
        self._got: tuple[int, int] | None = None  # (bytes so far, total or 0) of the running download
        self._installing: int | None = None  # how many packages pip said it installs
        self._installed_before = 0

    def feed(self, line: str) -> str | None:
        line = _ESCAPES.sub("", line).rsplit("\r", 1)[-1].rstrip()
        text = line.strip()
        m = re.fullmatch(r"Progress (\d+) of (\d+)", text)
        if m:
            self._got = (int(m.group(1)), int(m.group(2)))
            return None
        if not text.startswith(self._SHOW):
            return None
        if text.startswith(("Collecting", "Processing")):
            text = text.split(" (from ", 1)[0]  # which package wanted it: long, and not news to a person
        if text.startswith("Downloading"):
            self._file, self._got = text.split()[1].rsplit("/", 1)[-1], None
        elif text.startswith("Processing"):
            text = "Processing " + text.split(" ", 1)[-1].rstrip("/").rsplit("/", 1)[-1]
        elif text.startswith("Installing collected packages:"):
            names = [n for n in text.split(":", 1)[1].split(",") if n.strip()]
            self._installing, self._installed_before = len(names), self._count_installed()
            self._got = None
            if len(text) > 120:
                text = f"{text[:110].rsplit(',', 1)[0]}, ... ({len(names)} packages)"
        elif text.startswith("Successfully installed") and len(text) > 120:
            text = f"{text[:110].rsplit(' ', 1)[0]} ... ({len(text.split()) - 2} packages)"
        self.last = text
        return text

    def _count_installed(self) -> int:
        if self.site_packages is None:
            return 0
        try:
            return sum(1 for _ in self.site_packages.glob("*.dist-info"))
        except OSError:
            return 0

    def activity(self) -> str:
        """What pip is doing, as far as its output and the site-packages folder tell."""
        if self._got is not None and self._file:
            got, total = self._got
            return f"downloading {self._file}, {_size(got)}" + (f" of {_size(total)}" if total else "")
        if self._installing is not None:
            done = max(0, min(self._count_installed() - self._installed_before, self._installing))
            counted = f", {done} done" if self.site_packages is not None else ""
            return f"installing {self._installing} packages{counted}"
        return f"still working (last: {self.last})" if self.last else "still working"


def run_with_progress(
    cmd: list[str],
    say: Callable[[str], Any],
    *,
    quiet: bool = False,
    heartbeat_s: float | None = None,
    site_packages: Path | None = None,
    tail_lines: int = 30,
) -> None:
    """Run `cmd` (pip, or anything that writes lines) and keep a person told, through `say`.

    `say` gets `$ <cmd>`, then the lines of the command's output that
    `PipOutput` shows (none with `quiet`), each as it comes, indented; when
    no line was shown for `heartbeat_s` seconds (default 3 s if stderr is a
    terminal, else 10 s), a heartbeat `  ... <n> s: <what pip is doing>`,
    `n` being whole seconds since the command started. The command's
    stdout and stderr are read together, line by line, on a thread, so a
    silent command never blocks the heartbeat. `site_packages` lets the
    heartbeat count installed packages.

    Returns when the command exits 0. Raises `StackError` with the last
    `tail_lines` lines of its output when it exits otherwise, or OSError when
    it cannot start. If `say` raises (or Ctrl-C arrives), the command is
    killed before the exception goes on.
    """
    if heartbeat_s is None:
        heartbeat_s = HEARTBEAT_TTY_S if _stderr_is_tty() else HEARTBEAT_S
    say("$ " + " ".join(cmd))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True, errors="replace", bufsize=1, env=env)
    assert proc.stdout is not None
    lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()

    def pump(stream: Any) -> None:
        try:
            for line in stream:
                lines.put(line)
        finally:
            lines.put(None)

    reader = threading.Thread(target=pump, args=(proc.stdout,), name="mcpguard-pip-output", daemon=True)
    reader.start()
    watch = PipOutput(site_packages)
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    started = shown_at = time.monotonic()
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.01, shown_at + heartbeat_s - time.monotonic()))
            except queue.Empty:
                say(f"  ... {time.monotonic() - started:.0f} s: {watch.activity()}")
                shown_at = time.monotonic()
                continue
            if line is None:
                break
            tail.append(line.rstrip("\r\n"))
            text = watch.feed(line)
            if text and not quiet:
                say("  " + text)
                shown_at = time.monotonic()
        code = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        reader.join(timeout=5)  # at end of output already, unless a grandchild still holds the pipe
        if not reader.is_alive():
            proc.stdout.close()
    if code != 0:
        raise StackError(f"{cmd[0]} failed (exit {code}):\n" + "\n".join(tail))


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def _env_dir(env_dir: str | os.PathLike[str] | None) -> Path:
    path = Path(env_dir) if env_dir else mlflow_env_dir()
    if not (path / "bin" / "python").exists():
        raise StackError(
            f"the MLflow environment is not installed in {path}: "
            "run `python -m mcpguard.stack prepare` (or `python3 dev.py setup --stack`)"
        )
    return path


# --------------------------------------------------------------------------
# Helpers


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago (bind to port 0, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def mlflow_python(
    code: str,
    uri: str | None = None,
    *,
    env_dir: str | os.PathLike[str] | None = None,
    timeout_s: float = 120.0,
) -> str:
    """Run Python `code` in the MLflow environment and return what it printed.

    `uri` becomes `MLFLOW_TRACKING_URI`, so `mlflow.MlflowClient()` in `code`
    talks to that tracking server. This is how tests ask MLflow's own client
    whether a change really happened, without mlflow in mcpguard's venv.

    Raises `StackError` (with the stderr tail) when the code fails or runs
    longer than `timeout_s` seconds.
    """
    py = _env_dir(env_dir) / "bin" / "python"
    env = {**os.environ, **MLFLOW_MCP_ENV, "PYTHONWARNINGS": "ignore"}
    if uri:
        env["MLFLOW_TRACKING_URI"] = uri
    try:
        done = subprocess.run(
            [str(py), "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"mlflow_python timed out after {timeout_s} s") from exc
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise StackError(f"mlflow_python failed (exit {done.returncode}):\n{tail}")
    return done.stdout


# --------------------------------------------------------------------------
# The tracking server

_LIVE: set["MlflowTrackingServer"] = set()

# Runs `mlflow server` as its child and ends the whole process group when
# the process that started it is gone (killed, or exited without atexit), so
# a demo that is killed never leaves a tracking server behind. No imports
# beyond the standard library: it starts in milliseconds.
_SUPERVISOR = r"""
import os, signal, subprocess, sys, time
parent = int(sys.argv[1])
child = subprocess.Popen(sys.argv[2:])

def stop(*_):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.killpg(0, signal.SIGTERM)
    try:
        child.wait(10)
    except subprocess.TimeoutExpired:
        pass
    os.killpg(0, signal.SIGKILL)

signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
while child.poll() is None:
    if os.getppid() != parent:
        stop()
    time.sleep(0.5)
sys.exit(child.returncode)
"""


@atexit.register
def _stop_all_at_exit() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop()


class MlflowTrackingServer:
    """`mlflow server` on 127.0.0.1 with a sqlite store in `data_dir`.

    `MlflowTrackingServer(data_dir, port=0)`: port 0 picks a free port.
    Data: `data_dir/mlflow.db` (runs, registry), `data_dir/artifacts/`
    (artifacts, served by the server), `data_dir/mlflow-server.log` (its output).
    Runs one uvicorn worker with `MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`
    (else MLflow starts seven job workers). Start takes about 7 s on 2 cores,
    most of it MLflow's imports (`start_seconds` holds the measured time).

    Use as a context manager (`with` or `async with`), or `start()`/`stop()`.
    `start()` waits until `GET /health` answers and raises `StackError` (with
    the log tail) if the server exits or is not healthy in `startup_timeout_s`.
    `stop()` ends the process group it started, and only that one; servers
    still running at interpreter exit are stopped then, and a small
    supervisor ends the group within a second if the starting process dies
    without stopping it (SIGKILL, `os._exit`).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        port: int = 0,
        *,
        env_dir: str | os.PathLike[str] | None = None,
        startup_timeout_s: float = 120.0,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.host = "127.0.0.1"
        self.env_dir = env_dir
        self.startup_timeout_s = startup_timeout_s
        self.log_path = self.data_dir / "mlflow-server.log"
        self.start_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        """The tracking URI, `http://127.0.0.1:<port>` (valid once started)."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The pid of the server's supervisor, which is also its process group id."""
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> "MlflowTrackingServer":
        """Start the server and block until it is healthy; returns self."""
        if self.running:
            return self
        env_dir = _env_dir(self.env_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "artifacts").mkdir(exist_ok=True)
        attempts = 1 if self.port else 3  # a picked free port can be taken meanwhile
        last: StackError | None = None
        for _ in range(attempts):
            port = self.port or free_port()
            try:
                self._launch(env_dir, port)
                return self
            except StackError as exc:
                last = exc
                if "already in use" not in str(exc):  # only a lost race for the port is retried
                    break
        assert last is not None
        raise last

    def _launch(self, env_dir: Path, port: int) -> None:
        cmd = [
            str(env_dir / "bin" / "python"), "-c", _SUPERVISOR, str(os.getpid()),
            str(env_dir / "bin" / "mlflow"), "server",
            "--backend-store-uri", f"sqlite:///{self.data_dir / 'mlflow.db'}",
            "--artifacts-destination", str(self.data_dir / "artifacts"),
            "--host", self.host, "--port", str(port), "--workers", "1",
        ]  # fmt: skip
        env = {
            **os.environ,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "PYTHONWARNINGS": "ignore",
        }
        env.pop("MLFLOW_TRACKING_URI", None)
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"\n--- mcpguard: {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.data_dir,
                start_new_session=True,  # its own process group: stop() ends exactly that
            )
        _LIVE.add(self)
        self.port = port
        deadline = started + self.startup_timeout_s
        with httpx2.Client(timeout=2.0) as client:
            while True:
                if self._proc.poll() is not None:
                    code = self._proc.returncode
                    self._reap()
                    raise StackError(
                        f"mlflow server exited with {code} while starting; log {self.log_path}:\n"
                        + self._log_tail()
                    )
                try:
                    if client.get(f"{self.uri}/health").status_code == 200:
                        break
                except httpx2.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise StackError(
                        f"mlflow server not healthy after {self.startup_timeout_s} s; "
                        f"log {self.log_path}:\n" + self._log_tail()
                    )
                time.sleep(0.1)
        self.start_seconds = time.monotonic() - started

    def _log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM to the server's process group, SIGKILL after `timeout_s` seconds."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        # the uvicorn child may outlive its parent: end the rest of the group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        self._reap()

    def _reap(self) -> None:
        _LIVE.discard(self)
        self._proc = None

    def __enter__(self) -> "MlflowTrackingServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> "MlflowTrackingServer":
        import asyncio

        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        import asyncio

        await asyncio.to_thread(self.stop)


# --------------------------------------------------------------------------
# Seed data

_SEED_CODE = r"""
import json, sys
import mlflow
from mlflow import MlflowClient

EXPERIMENT, MODEL = sys.argv[1], sys.argv[2]
client = MlflowClient()

def describe(exp):
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    versions = sorted(client.search_model_versions(f"name='{MODEL}'"), key=lambda v: int(v.version))
    return {
        "experiment_id": exp.experiment_id,
        "experiment_name": exp.name,
        "run_ids": [r.info.run_id for r in runs],
        "run_names": [r.info.run_name for r in runs],
        "model_name": MODEL,
        "versions": [v.version for v in versions],
        "version_sources": [v.source for v in versions],
        "metric": "val_accuracy",
    }

exp = client.get_experiment_by_name(EXPERIMENT)
if exp is not None and exp.tags.get("mcpguard.seeded") == "1":
    print(json.dumps(describe(exp)))
    sys.exit(0)

exp_id = exp.experiment_id if exp else client.create_experiment(
    EXPERIMENT, tags={"team": "ml-platform", "project": "churn"})
runs = []
configs = [
    ("baseline-logreg", {"model": "logreg", "C": "1.0", "max_iter": "200"}, 0.81),
    ("gbm-depth4", {"model": "gbm", "max_depth": "4", "n_estimators": "200"}, 0.86),
    ("gbm-depth6", {"model": "gbm", "max_depth": "6", "n_estimators": "400"}, 0.88),
]
for i, (name, params, acc) in enumerate(configs):
    run = client.create_run(exp_id, run_name=name, tags={"stage": "dev", "owner": "demo"})
    rid = run.info.run_id
    for k, v in params.items():
        client.log_param(rid, k, v)
    for step in range(5):
        client.log_metric(rid, "val_accuracy", round(acc - 0.04 + 0.01 * step, 4), step=step)
        client.log_metric(rid, "train_loss", round(0.7 - 0.1 * step - 0.02 * i, 4), step=step)
    client.set_terminated(rid)
    runs.append(rid)

try:
    client.get_registered_model(MODEL)
except Exception:
    client.create_registered_model(MODEL, tags={"team": "ml-platform"},
                                   description="Churn classifier (mcpguard demo)")
for rid in runs:
    client.create_model_version(MODEL, source=f"runs:/{rid}/model", run_id=rid,
                                description="seeded by mcpguard")
client.transition_model_version_stage(MODEL, "1", "Production")
client.set_registered_model_alias(MODEL, "champion", "1")
client.set_experiment_tag(exp_id, "mcpguard.seeded", "1")
print(json.dumps(describe(client.get_experiment(exp_id))))
"""


def seed(uri: str, *, env_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Fill the tracking server at `uri` with demo data; return what is there.

    Writes, with MLflow's own client: the experiment `mcpguard-demo` (tags
    team, project), three finished runs with params and `val_accuracy` /
    `train_loss` metrics over 5 steps, and the registered model
    `mcpguard-demo-model` with three versions (sources `runs:/<run_id>/model`;
    version 1 in stage Production with alias `champion`).

    Idempotent: a server that was seeded before (experiment tag
    `mcpguard.seeded`) is only read, so the demo can reuse its data folder.

    Returns `{"experiment_id", "experiment_name", "run_ids", "run_names",
    "model_name", "versions", "version_sources", "metric"}` (ids are strings).
    Raises `StackError` when MLflow refuses.
    """
    code = (
        f"import sys; sys.argv = ['seed', {DEMO_EXPERIMENT!r}, {DEMO_MODEL!r}]\n"
        + textwrap.dedent(_SEED_CODE)
    )
    out = mlflow_python(code, uri, env_dir=env_dir)
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise StackError(f"seed printed no result: {out[-500:]!r}") from exc


# --------------------------------------------------------------------------
# The upstream entry for mcpguard.toml


def mlflow_server_config(
    uri: str,
    *,
    policy: str | os.PathLike[str] | None,
    stderr_log: str | os.PathLike[str] | None,
    name: str = "mlflow",
    env_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """The `[servers.<name>]` stdio upstream that runs `mlflow-mcp` against `uri`.

    Returns a dict in mcpguard.toml's schema (`command`, `args`, `env`, `cwd`,
    `stderr_log`, `policy`, and `name`), paths as strings, so it can be
    written into a TOML file or handed to the config module's loader. `env`
    holds `MLFLOW_TRACKING_URI` and `MLFLOW_HTTP_REQUEST_MAX_RETRIES=0`,
    `MLFLOW_HTTP_REQUEST_TIMEOUT=10` (else MLflow's retries hold a failing
    call for minutes). `upstream_sessions` is `shared`: `mlflow-mcp` keeps
    no state per session, so every agent can use one process. Does not
    check that `uri` answers.

    Raises `StackError` when the MLflow environment is not installed.
    """
    path = _env_dir(env_dir)
    entry: dict[str, Any] = {
        "name": name,
        "command": str(path / "bin" / "mlflow-mcp"),
        "args": [],
        "env": {"MLFLOW_TRACKING_URI": uri, **MLFLOW_MCP_ENV},
        "cwd": None,
        "stderr_log": str(stderr_log) if stderr_log else None,
        "policy": str(policy) if policy else None,
        "upstream_sessions": "shared",
    }
    return entry


# --------------------------------------------------------------------------
# python -m mcpguard.stack


def main(argv: list[str] | None = None) -> int:
    """`python -m mcpguard.stack prepare | serve DATA_DIR`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mcpguard.stack", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="install the MLflow environment (idempotent)")
    p.add_argument("--home", help="cache folder (default $MCPGUARD_HOME or ~/.cache/mcpguard)")
    s = sub.add_parser("serve", help="run a seeded tracking server until Ctrl-C")
    s.add_argument("data_dir")
    s.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "prepare":
            print(ensure_mlflow_env(args.home))
            return 0
        ensure_mlflow_env()
        with MlflowTrackingServer(args.data_dir, args.port) as server:
            print(f"tracking server {server.uri} (started in {server.start_seconds:.1f} s)", flush=True)
            print(json.dumps(seed(server.uri), indent=2), flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while server.running:
                    time.sleep(0.5)
        return 0
    except StackError as exc:
        print(f"mcpguard.stack: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
