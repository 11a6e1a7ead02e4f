"""The package as users get it: the sdist and the wheel built from it, the wheel
installed with pip (its dependencies resolved by pip) into a fresh virtual
environment, then used from a folder outside the repository.

What it proves: the wheel holds every module of the source tree, the console's
stylesheet, the themes and the sample policies, and the installed code finds
them through `importlib.resources` (`mcpguard check` on the packaged sample
policy, the console opening on the packaged light theme, `mcpguard demo
--help`). Nothing here can reach the repository's files: the commands run in
an empty folder, with `HOME` in the test's own folder (so no theme of the
person running the tests counts) and no `PYTHONPATH`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.e2e

# what a checkout holds that is not source: virtual environments, caches, earlier builds
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                     ".pytest_cache", ".hypothesis", ".mcpguard", "snapshot_report.html")

OPEN_THE_CONSOLE = textwrap.dedent("""
    import asyncio, json
    from mcpguard.config import Config
    from mcpguard.console import ConsoleApp
    from mcpguard.gateway import Gateway

    async def main():
        cfg = Config.from_dict({"gateway": {"port": 0, "url_file": "", "audit_log": ""}, "servers": {}},
                               base_dir=".")
        app = ConsoleApp.embedded(Gateway(cfg), theme_name="light")
        async with app.run_test(size=(100, 30)) as pilot:
            for _ in range(200):  # at most 10 s for the gateway to listen on 127.0.0.1
                if app.started:
                    break
                await pilot.pause(0.05)
            seen = {"started": app.started, "theme": app.theme, "theme_errors": app.theme_errors,
                    "risk_critical": app.theme_variables.get("risk-critical"),
                    "themes": sorted(n for n in app.available_themes if n.startswith("mcpguard-"))}
            await pilot.press("ctrl+q")
        seen["return_code"] = app.return_code
        print(json.dumps(seen))

    asyncio.run(main())
""")


def _run(cmd: list[str | Path], *, timeout: float, **kw) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    assert done.returncode == 0, f"{cmd} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_the_installed_wheel_finds_its_themes_and_sample_policies(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=_NOT_SOURCE)  # builds write into the source folder; not into ours
    dist = tmp_path / "dist"
    # no --sdist/--wheel: build makes the sdist, then the wheel from the sdist, so both must be complete
    _run([sys.executable, "-m", "build", "--outdir", dist, src], timeout=240)
    (wheel,) = dist.glob("mcpguard-*.whl")

    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "mcpguard").rglob("*.py")}
    assert modules - names == set(), "modules missing from the wheel (pyproject.toml lists the packages)"
    data = {f"mcpguard/themes/{p.name}" for p in (ROOT / "themes").glob("*.toml")}
    data |= {f"mcpguard/sample_policies/{p.name}" for p in (ROOT / "sample_policies").glob("*.*")
             if p.suffix in (".toml", ".json")}
    data |= {"mcpguard/console/app.tcss", "mcpguard/py.typed"}
    assert len(data) >= 7 and data - names == set()

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], timeout=120)
    py, bin_dir = venv / "bin" / "python", venv / "bin"
    _run([py, "-m", "pip", "install", "--disable-pip-version-check", "-q", wheel], timeout=300)

    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "home").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(HOME=str(elsewhere / "home"), MCPGUARD_HOME=str(elsewhere / "home" / "cache"), TERM="xterm-256color")
    opts = {"cwd": elsewhere, "env": env}

    where = _run([py, "-c", "import importlib.resources as r; d = r.files('mcpguard.sample_policies'); "
                  "print(d / 'mlflow.toml'); print(d / 'mlflow.json')"], timeout=60, **opts)
    policies = [Path(line) for line in where.stdout.split()]
    site = venv / "lib"
    assert all(p.is_file() and site in p.parents for p in policies), policies
    for policy in policies:
        checked = _run([bin_dir / "mcpguard", "check", policy], timeout=60, **opts)
        assert "delete_run" in checked.stdout  # its table of tools

    helped = _run([bin_dir / "mcpguard", "demo", "--help"], timeout=60, **opts)
    assert "--theme" in helped.stdout and "--no-agent" in helped.stdout

    opened = _run([py, "-c", OPEN_THE_CONSOLE], timeout=120, **opts)
    seen = json.loads(opened.stdout.strip().splitlines()[-1])
    assert seen == {
        "started": True,
        "theme": "mcpguard-light",
        "theme_errors": [],
        "risk_critical": "#d70057",  # themes/light.toml's own value, not the fallback
        "themes": ["mcpguard-dark", "mcpguard-high-contrast", "mcpguard-light"],
        "return_code": 0,
    }
