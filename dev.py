#!/usr/bin/env python3
"""Set up and run mcpguard from a fresh clone, with nothing but python3.

    python3 dev.py demo     # set up .venv, then open the console on the embedded MLflow demo
    python3 dev.py test     # set up .venv and the test stack, then run the whole test suite
    python3 dev.py setup    # only set up .venv (and `--stack` for the MLflow environment)

Every install step of the project lives here:
- `.venv/` at the repo root with mcpguard installed editable, with its test extras;
- the MLflow environment (`mlflow-mcp` 0.4.1 and the `mlflow` server) in its own
  virtual environment under the user cache (see `mcpguard.stack`), because
  `mlflow-mcp` pins `mcp<2` while mcpguard builds on `mcp` 2.x;
- tmux (Debian package) for the test that drives the console in a real terminal,
  and, when run as root, setpriv (util-linux) for the unreadable-file test.

Arguments after `test` go to pytest (`python3 dev.py test -k policy -x`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".mcpguard-installed"


def log(msg: str) -> None:
    print(f"[dev] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kw) -> None:
    log(" ".join(str(c) for c in cmd))
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def setup_venv() -> None:
    """Create `.venv` and install mcpguard with its test extras, once per pyproject change."""
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == want and (BIN / "mcpguard").exists():
        return
    if not (BIN / "python").exists():
        run([sys.executable, "-m", "venv", VENV])
    pip = [BIN / "python", "-m", "pip", "--disable-pip-version-check", "-q"]
    run([*pip, "install", "--upgrade", "pip"])
    run([*pip, "install", "-e", f"{ROOT}[test]"])
    STAMP.write_text(want)


def ensure_tools() -> None:
    """Install the test tools that are missing from Debian's packages, when we may (root, apt-get).

    tmux drives the console in a real terminal. setpriv (util-linux) is needed
    only as root: the test of an unreadable policy file drops the
    capabilities that let root read any file.
    """
    wanted = {"tmux": "tmux"}
    if os.geteuid() == 0:
        wanted["setpriv"] = "util-linux"
    missing = sorted({pkg for tool, pkg in wanted.items() if not shutil.which(tool)})
    if not missing:
        return
    if shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL)
        run(["apt-get", "install", "-y", "-q", *missing], env=env, stdout=subprocess.DEVNULL)
    else:
        log(f"missing and cannot be installed here: {', '.join(missing)}; the tests needing them will fail")


def setup_stack() -> None:
    """Prepare the MLflow environment (mlflow server + mlflow-mcp) outside the repo."""
    run([BIN / "python", "-m", "mcpguard.stack", "prepare"])


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "help"
    rest = argv[1:]
    if cmd == "setup":
        setup_venv()
        if "--stack" in rest:
            setup_stack()
        return 0
    if cmd == "demo":
        setup_venv()
        os.execv(BIN / "mcpguard", [str(BIN / "mcpguard"), "demo", *rest])
    if cmd == "test":
        setup_venv()
        ensure_tools()
        setup_stack()
        return subprocess.call([BIN / "python", "-m", "pytest", *rest], cwd=ROOT)
    print(__doc__)
    return 0 if cmd in ("help", "-h", "--help") else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
