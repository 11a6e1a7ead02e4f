"""The real MLflow stack: environment install, tracking server, seed data, and the
real `mlflow-mcp` (mcp 1.x in its own venv) answering our mcp 2.x client over stdio."""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

import httpx
import mcp_types as types
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

from mcpguard import stack

TOOLS_JSON = Path(__file__).with_name("mlflow_tools.json")


def _tool_names() -> list[str]:
    data = json.loads(TOOLS_JSON.read_text())
    return [t["name"] for t in (data["tools"] if isinstance(data, dict) else data)]


def _text(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def test_mlflow_mcp_answers_our_sdk_over_stdio(mlflow_stack):
    """mlflow-mcp (mcp<2) and our mcp 2.x client interoperate over stdio: the 40 tools,
    and real calls that read the seeded data."""
    cfg = mlflow_stack.server_config()
    params = StdioServerParameters(command=cfg["command"], args=cfg["args"], env=cfg["env"])
    with open(cfg["stderr_log"], "a") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                assert init.server_info.name
                listed = await session.list_tools()
                names = [t.name for t in listed.tools]
                assert sorted(names) == sorted(_tool_names())
                assert len(names) == 40
                by_name = {t.name: t for t in listed.tools}
                assert by_name["delete_model_version"].annotations.destructive_hint is True
                assert by_name["get_run"].annotations.read_only_hint is True

                seeded = mlflow_stack.seeded
                result = await session.call_tool("get_experiment_by_name", {"name": seeded["experiment_name"]})
                assert not result.is_error
                assert seeded["experiment_id"] in _text(result)

                result = await session.call_tool("get_model_versions", {"model_name": seeded["model_name"]})
                assert not result.is_error
                text = _text(result)
                for run_id in seeded["run_ids"]:
                    assert run_id in text

                result = await session.call_tool("get_run", {"run_id": "no-such-run"})
                assert result.is_error


def test_seed_wrote_what_it_says_and_is_idempotent(mlflow_stack):
    seeded = mlflow_stack.seeded
    assert len(seeded["run_ids"]) == 3
    assert seeded["versions"] == ["1", "2", "3"]
    assert seeded["version_sources"] == [f"runs:/{r}/model" for r in seeded["run_ids"]]
    out = mlflow_stack.python(
        f"""
        import json
        from mlflow import MlflowClient
        c = MlflowClient()
        runs = c.search_runs([{seeded["experiment_id"]!r}])
        v1 = c.get_model_version({seeded["model_name"]!r}, "1")
        print(json.dumps({{
            "runs": len(runs),
            "metrics": sorted(runs[0].data.metrics),
            "params": len(runs[0].data.params) > 0,
            "stage": v1.current_stage,
            "alias": c.get_model_version_by_alias({seeded["model_name"]!r}, "champion").version,
        }}))
        """
    )
    assert json.loads(out) == {
        "runs": 3,
        "metrics": ["train_loss", "val_accuracy"],
        "params": True,
        "stage": "Production",
        "alias": "1",
    }
    again = stack.seed(mlflow_stack.uri, env_dir=mlflow_stack.env_dir)
    assert again == seeded  # nothing new created


def test_mlflow_python_reports_failures(mlflow_stack):
    with pytest.raises(stack.StackError, match="ZeroDivisionError"):
        mlflow_stack.python("1/0")


def test_server_config_is_a_stdio_upstream(mlflow_stack, tmp_path):
    cfg = stack.mlflow_server_config(
        mlflow_stack.uri, policy=tmp_path / "p.toml", stderr_log=tmp_path / "e.log", env_dir=mlflow_stack.env_dir
    )
    assert Path(cfg["command"]).name == "mlflow-mcp" and os.access(cfg["command"], os.X_OK)
    assert cfg["env"] == {
        "MLFLOW_TRACKING_URI": mlflow_stack.uri,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    }
    assert cfg["policy"] == str(tmp_path / "p.toml")
    assert cfg["stderr_log"] == str(tmp_path / "e.log")
    assert cfg["name"] == "mlflow"


@pytest.mark.e2e
def test_tracking_server_stops_its_whole_process_group(mlflow_stack, tmp_path):
    server = stack.MlflowTrackingServer(tmp_path / "data", env_dir=mlflow_stack.env_dir)
    with server:
        pid = server.pid
        assert httpx.get(f"{server.uri}/health").status_code == 200
        assert (tmp_path / "data" / "mlflow.db").exists()
        assert server.start_seconds is not None and server.start_seconds > 0
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # no process of its group is left
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.uri}/health")
    server.stop()  # a second stop is harmless


@pytest.mark.e2e
def test_tracking_server_on_a_taken_port_fails_clearly(mlflow_stack, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = stack.MlflowTrackingServer(tmp_path / "data", port=port, env_dir=mlflow_stack.env_dir)
        with pytest.raises(stack.StackError, match="exited"):
            server.start()
        assert not server.running


# ---- ensure_mlflow_env: its install steps faked (unit tests of that one function)


def _fake_installer(monkeypatch, calls, *, fail=False):
    def fake_run(cmd, say, quiet=False, site_packages=None):
        calls.append(cmd)
        if cmd[1:3] == ["-m", "venv"]:
            (Path(cmd[3]) / "bin").mkdir(parents=True)
            (Path(cmd[3]) / "bin" / "python").touch()
        elif "mlflow-mcp==0.4.1" in cmd:
            if fail:
                raise stack.StackError("pip failed")
            bin_dir = Path(cmd[0]).parent
            (bin_dir / "mlflow-mcp").touch()
            (bin_dir / "mlflow").touch()

    monkeypatch.setattr(stack, "_run_logged", fake_run)


def test_ensure_env_installs_once_and_redoes_an_unfinished_install(monkeypatch, tmp_path):
    calls: list = []
    _fake_installer(monkeypatch, calls)
    half = tmp_path / stack.ENV_DIR_NAME
    (half / "bin").mkdir(parents=True)
    (half / "bin" / "leftover").touch()  # a stopped install: no stamp
    lines: list[str] = []
    env = stack.ensure_mlflow_env(tmp_path, log=lines.append)
    assert env == half and stack.is_mlflow_env_ready(env)
    assert not (half / "bin" / "leftover").exists()
    assert any("unfinished" in line for line in lines)
    n = len(calls)
    assert stack.ensure_mlflow_env(tmp_path, log=lines.append) == env
    assert len(calls) == n  # the second call installs nothing


def test_ensure_env_failure_leaves_no_stamp(monkeypatch, tmp_path):
    _fake_installer(monkeypatch, [], fail=True)
    with pytest.raises(stack.StackError, match="pip failed"):
        stack.ensure_mlflow_env(tmp_path, log=lambda line: None)
    assert not stack.is_mlflow_env_ready(tmp_path / stack.ENV_DIR_NAME)


def test_env_home_follows_mcpguard_home(monkeypatch, tmp_path):
    monkeypatch.setenv("MCPGUARD_HOME", str(tmp_path))
    assert stack.mlflow_env_dir() == tmp_path / "mlflow-mcp-0.4.1"
    with pytest.raises(stack.StackError, match="mcpguard.stack prepare"):
        stack.mlflow_server_config("http://127.0.0.1:1", policy=None, stderr_log=None)


@pytest.mark.e2e
def test_tracking_server_stops_when_its_starter_dies(mlflow_stack, tmp_path):
    """A demo killed without cleanup (here: os._exit, no atexit) leaves no tracking server."""
    import subprocess
    import sys
    import time

    code = (
        "import os, sys; from mcpguard.stack import MlflowTrackingServer\n"
        f"s = MlflowTrackingServer({str(tmp_path / 'data')!r}, env_dir={str(mlflow_stack.env_dir)!r}).start()\n"
        "print(s.uri, s.pid, flush=True); os._exit(0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, check=True)
    uri, pgid = out.stdout.split()
    for _ in range(100):  # bounded: 20 s
        try:
            os.killpg(int(pgid), 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.killpg(int(pgid), 0)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{uri}/health")


# ---- run_with_progress: the install's signs of life, with a fake pip that prints what pip 26 prints

FAKE_PIP = r"""
import os, sys, time
site = sys.argv[1]
def say(line):
    print(line, flush=True)
say("Looking in indexes: https://pypi.org/simple")
say("Collecting mlflow-mcp==0.4.1")
say("  Downloading mlflow_mcp-0.4.1-py3-none-any.whl.metadata (9.8 kB)")
say("Collecting alembic (from mlflow==3.17.2)")
say("Requirement already satisfied: pip in ./lib/python3.11/site-packages (26.3)")
say("  Downloading big_wheel-1.0-py3-none-any.whl (31.5 MB)")
total = 31_457_280
for i in range(6):  # 0.6 s of download: raw progress lines only
    say(f"Progress {total * i // 5} of {total}")
    time.sleep(0.1)
say("Installing collected packages: alpha, beta, gamma")
for name in ("alpha", "beta", "gamma"):  # 0.9 s of silent unpacking
    time.sleep(0.3)
    os.mkdir(os.path.join(site, f"{name}-1.0.dist-info"))
say("\x1b[32mSuccessfully installed alpha-1.0 beta-1.0 gamma-1.0\x1b[0m")
if len(sys.argv) > 2:
    say("ERROR: No matching distribution found for nope")
    sys.exit(1)
"""


def test_the_install_streams_pips_lines_and_a_heartbeat_while_pip_is_silent(tmp_path):
    import sys
    import time

    site = tmp_path / "site-packages"
    site.mkdir()
    (site / "pip-26.3.dist-info").mkdir()
    lines: list[tuple[float, str]] = []
    t0 = time.monotonic()
    stack.run_with_progress([sys.executable, "-c", FAKE_PIP, str(site)],
                            lambda line: lines.append((time.monotonic() - t0, line)),
                            heartbeat_s=0.2, site_packages=site)
    said = [line for _, line in lines]
    shown = [line for line in said[1:] if not line.startswith("  ... ")]
    assert said[0].startswith("$ ") and FAKE_PIP.strip()[:20] in said[0]
    assert shown == [
        "  Collecting mlflow-mcp==0.4.1",
        "  Downloading mlflow_mcp-0.4.1-py3-none-any.whl.metadata (9.8 kB)",
        "  Collecting alembic",
        "  Downloading big_wheel-1.0-py3-none-any.whl (31.5 MB)",
        "  Installing collected packages: alpha, beta, gamma",
        "  Successfully installed alpha-1.0 beta-1.0 gamma-1.0",
    ]
    beats = [line for line in said if line.startswith("  ... ")]
    assert any("downloading big_wheel-1.0-py3-none-any.whl, " in b and " of 31.5 MB" in b for b in beats), beats
    installing = [b for b in beats if "installing 3 packages" in b]
    assert installing and any(", 0 done" in b or ", 1 done" in b for b in installing), beats
    # each heartbeat says the whole seconds since the start, never going back
    seconds = [int(b.split()[1]) for b in beats]
    assert seconds == sorted(seconds)
    # the fake's longest silence is 0.9 s; heartbeats cut it to about 0.2 s (0.8 s leaves slack for a busy
    # machine and still fails without them), and there are no more heartbeats than the silences allow
    times = [t for t, _ in lines]
    assert max(b - a for a, b in zip(times, times[1:])) < 0.8
    assert len(beats) <= (times[-1] / 0.2) + 1
    assert not any("\r" in line or "\x1b" in line or "Progress " in line for line in said[1:])


def test_a_failing_install_says_why_with_the_output_tail(tmp_path):
    import sys

    site = tmp_path / "site-packages"
    site.mkdir()
    with pytest.raises(stack.StackError) as info:
        stack.run_with_progress([sys.executable, "-c", FAKE_PIP, str(site), "fail"], lambda line: None,
                                heartbeat_s=5)
    assert "failed (exit 1)" in str(info.value)
    assert "ERROR: No matching distribution found for nope" in str(info.value)


@pytest.mark.parametrize("terminal, beats", [(True, range(2, 5)), (False, range(0, 1))])
def test_heartbeats_are_sparser_when_stderr_is_not_a_terminal(monkeypatch, terminal, beats):
    import io
    import sys

    class Stderr(io.StringIO):
        def isatty(self) -> bool:
            return terminal

    monkeypatch.setattr(sys, "stderr", Stderr())
    # the real intervals are 3 s and 10 s; scaled down, the choice between them is the same
    monkeypatch.setattr(stack, "HEARTBEAT_TTY_S", 0.3)
    monkeypatch.setattr(stack, "HEARTBEAT_S", 5.0)
    lines: list[str] = []
    stack.run_with_progress([sys.executable, "-c", "import time; time.sleep(1.0)"], lines.append)
    assert len(lines[1:]) in beats, lines  # one every 0.3 s of the 1 s silence on a terminal; none otherwise
    assert all(re.fullmatch(r"  \.\.\. [012] s: still working", line) for line in lines[1:]), lines
    assert sys.stderr.getvalue() == ""  # everything went to `say`


def test_the_install_step_asks_pip_for_raw_progress_once_pip_knows_it(monkeypatch, tmp_path):
    calls: list = []
    _fake_installer(monkeypatch, calls)
    real_venv = stack._run_logged

    def with_new_pip(cmd, say, quiet=False, site_packages=None):
        real_venv(cmd, say, quiet=quiet, site_packages=site_packages)
        if "--upgrade" in cmd:  # the upgraded pip of the new environment
            (Path(cmd[0]).parent.parent / "lib" / "python3.11" / "site-packages" / "pip-26.3.dist-info").mkdir(
                parents=True)

    monkeypatch.setattr(stack, "_run_logged", with_new_pip)
    stack.ensure_mlflow_env(tmp_path, log=lambda line: None)
    upgrade, install = [c for c in calls if "install" in c]
    assert upgrade[upgrade.index("--progress-bar") + 1] == "off"  # the venv's bundled pip predates raw
    assert install[install.index("--progress-bar") + 1] == "raw"
