"""The core never imports textual or rich (design §2).

Every core module (all of mcpguard but console and cli) is imported in
a fresh interpreter where `textual` and `rich` cannot be imported: each
attempt is recorded with the file that made it, and fails. The core must
import cleanly, no attempt may come from an mcpguard core file, and neither
package may end up in `sys.modules`.

Why block rather than only look at `sys.modules`: httpx (used by the mcp SDK)
imports `rich` for its optional command line whenever rich is installed, and
falls back quietly when it is not. That is third-party and optional, so it is
recorded but allowed; an import by our own code is not.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import mcpguard

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(mcpguard.__file__).resolve().parent
FRONT_ENDS = ("mcpguard.console", "mcpguard.cli", "mcpguard.__main__")

PROBE = r'''
import importlib, json, sys, traceback
attempts = []
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("rich", "textual"):
            frames = [f.filename for f in traceback.extract_stack()[:-1]
                      if "importlib" not in f.filename and not f.filename.startswith("<")]
            attempts.append([name, frames[-1] if frames else "?"])
            raise ImportError(f"{name} is blocked: the core must not import it")
        return None
sys.meta_path.insert(0, Block())
failed = {}
for name in NAMES:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("rich", "textual"))
print(json.dumps({"attempts": attempts, "failed": failed, "loaded": loaded}))
'''


def core_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(mcpguard.__path__, "mcpguard."):
        if any(info.name == f or info.name.startswith(f + ".") for f in FRONT_ENDS):
            continue
        names.append(info.name)
    return sorted(names)


def probe(names: list[str]) -> dict:
    code = PROBE.replace("NAMES", repr(names))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def ours(attempts: list[list[str]]) -> list[list[str]]:
    return [a for a in attempts if Path(a[1]).resolve().is_relative_to(PACKAGE)]


def test_core_modules_are_found():
    names = core_modules()
    assert {"mcpguard.policy", "mcpguard.policy.evaluate", "mcpguard.policy.loader", "mcpguard.ratelimit",
            "mcpguard.risk", "mcpguard.events"} <= set(names)
    assert not any(n.startswith(("mcpguard.console", "mcpguard.cli")) for n in names)


def test_core_imports_neither_textual_nor_rich():
    result = probe(core_modules())
    assert result["failed"] == {}
    assert ours(result["attempts"]) == []
    assert result["loaded"] == []


def test_the_probe_catches_a_front_end_importing_rich():
    """The same probe fails for `mcpguard.cli.check`, which uses rich: the test above can fail."""
    result = probe(["mcpguard.cli.check"])
    assert "mcpguard.cli.check" in result["failed"]
    assert [Path(f).name for _, f in ours(result["attempts"])] == ["check.py"]


def test_walking_the_whole_package_loads_neither_when_only_the_core_is_imported():
    """Import every core module the plain way (nothing blocked), walking the package
    as tools do (`pkgutil.walk_packages` imports each package it enters, the
    front ends' packages included): neither textual nor rich may be loaded."""
    code = r'''
import importlib, pkgutil, sys
import mcpguard
for m in pkgutil.walk_packages(mcpguard.__path__, "mcpguard."):
    if m.name.startswith(("mcpguard.console.", "mcpguard.cli.")) or m.name == "mcpguard.__main__":
        continue
    importlib.import_module(m.name)
print(sorted(n for n in sys.modules if n.split(".")[0] in ("textual", "rich")))
'''
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


#: what the console may import of mcpguard: the control interface and the pure vocabulary it speaks
CONSOLE_MAY_IMPORT = ("mcpguard.console", "mcpguard.control", "mcpguard.control_http", "mcpguard.events",
                      "mcpguard.codes", "mcpguard.policy", "mcpguard.whatif", "mcpguard.durations")


def test_the_console_reaches_the_gateway_only_through_the_control_interface() -> None:
    """Every mcpguard import in mcpguard/console/ (at any depth, in any function) is one the console may make:
    nothing of the gateway, approvals, counters, policy files or audit log."""
    import ast

    found = []
    for path in sorted((PACKAGE / "console").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names if node.module == "mcpguard"]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name == "mcpguard" or not name.startswith("mcpguard"):
                    continue
                if not any(name == ok or name.startswith(ok + ".") for ok in CONSOLE_MAY_IMPORT):
                    found.append(f"{path.name}:{node.lineno}: {name}")
    assert found == []
    assert any("mcpguard.control" in p.read_text() for p in (PACKAGE / "console").glob("*.py"))
