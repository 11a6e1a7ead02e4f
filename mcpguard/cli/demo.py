"""`mcpguard demo`: the console in front of a real MLflow stack, with a scripted agent.

Prepares the MLflow environment on first use (progress printed before the
console takes the terminal), starts a tracking server on 127.0.0.1 with
sqlite in a data folder (`<mcpguard home>/demo`), seeds it, writes a
`mcpguard.toml` there with `mlflow-mcp` as upstream, and opens the console
on it; the gateway runs as the console's child process, as `mcpguard
console` runs it. The policy is a copy of the packaged sample `mlflow.toml`
(`mcpguard.sample_policies`, the repository's `sample_policies/` folder),
kept in the data folder so edits survive and the shipped file stays as
shipped; its path is on screen, and `--reset-policy` copies the sample
again. A scripted agent (`mcpguard.agent.run_agent`) plays its session in a
loop as a worker. Quitting stops every process the demo started.
"""

from __future__ import annotations

import argparse
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

#: The sample policy the demo starts from (package data: found in a wheel too).
SAMPLE_POLICY = files("mcpguard.sample_policies") / "mlflow.toml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--theme", help="dark, light, high-contrast, or the name of a theme in ~/.config/mcpguard/themes/*.toml")
    parser.add_argument("--port", type=int, default=8765, help="gateway port on 127.0.0.1 (default 8765; 0: any free port)")
    parser.add_argument("--no-agent", action="store_true", help="do not run the scripted agent")
    parser.add_argument("--data-dir", help="where the demo keeps MLflow data, its policy and logs")
    parser.add_argument("--pace", type=float, default=1.5, help="seconds between the scripted agent's steps")
    parser.add_argument("--reset-policy", action="store_true",
                        help="start again from the sample policy (the demo's copy keeps your edits otherwise)")


def connect_snippet(url: str) -> str:
    """How a real agent connects to the gateway at `url` (Streamable HTTP)."""
    return (
        "Connect a real agent (Streamable HTTP):\n"
        f"  claude mcp add --transport http mlflow {url}\n"
        "or in an mcpServers config:\n"
        f'  {{"mcpServers": {{"mlflow": {{"type": "http", "url": "{url}"}}}}}}\n'
    )


def say(line: str) -> None:
    print(f"[mcpguard demo] {line}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns the console's exit code (1 when the stack cannot start)."""
    from mcpguard import stack
    from mcpguard.config import ConfigError, load_config

    data = Path(args.data_dir).expanduser() if args.data_dir else stack.mcpguard_home() / "demo"
    data.mkdir(parents=True, exist_ok=True)
    (data / "logs").mkdir(exist_ok=True)
    policy = data / "mlflow.toml"
    sample = SAMPLE_POLICY.read_text(encoding="utf-8")
    if args.reset_policy or not policy.exists():
        from mcpguard.policy.edit import write_atomic

        # atomic, so a demo stopped mid-copy never leaves half a policy to start from next time
        write_atomic(policy, sample)
    args.policy_state = ("the sample, as shipped" if policy.read_text(encoding="utf-8", errors="replace") == sample
                         else "edited since it was copied from the sample")
    say(f"policy: {policy} ({args.policy_state})")
    try:
        say("checking the MLflow environment (the first run installs it: about 850 MB, a minute or two)")
        env_dir = stack.ensure_mlflow_env(log=say)
        say(f"starting an MLflow tracking server (sqlite in {data})")
        server = stack.MlflowTrackingServer(data, env_dir=env_dir)
        server.start()
    except stack.StackError as exc:
        say(f"cannot start the MLflow stack: {exc}")
        return 1
    try:
        say(f"MLflow is up at {server.uri}; seeding demo data")
        stack.seed(server.uri, env_dir=env_dir)
        entry = stack.mlflow_server_config(server.uri, policy=policy, stderr_log=data / "logs" / "mlflow-mcp.stderr.log",
                                           env_dir=env_dir)
        config = write_config(data, {
            "gateway": {"port": args.port, "url_file": str(data / "url"), "audit_log": str(data / "audit.jsonl"),
                        "control_file": str(data / "control.json")},
            "servers": {"mlflow": {k: v for k, v in entry.items() if k != "name"}},
        })
        try:
            load_config(config)  # a config the gateway would refuse fails here, before the console takes the screen
        except ConfigError as exc:
            say(f"the demo's config is not valid: {exc}")
            return 1
        return _run_console(config, args, data)
    finally:
        say("stopping the MLflow tracking server")
        server.stop()


def write_config(data: Path, cfg: dict[str, Any]) -> Path:
    """Write `cfg` (mcpguard.toml's schema; None values left out) as `data/mcpguard.toml`; returns its path."""
    import tomlkit

    from mcpguard.policy.edit import write_atomic

    def clean(v: Any) -> Any:  # TOML has no null
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if x is not None}
        return v

    doc = tomlkit.document()
    doc.add(tomlkit.comment("Written by `mcpguard demo` at each start; `mcpguard console --attach -c <this file>`"))
    doc.add(tomlkit.comment("attaches a second console to the demo's gateway while it runs."))
    for key, value in clean(cfg).items():
        doc[key] = value
    path = data / "mcpguard.toml"
    write_atomic(path, tomlkit.dumps(doc))
    return path


def _run_console(config: Path, args: argparse.Namespace, data: Path) -> int:
    from mcpguard.cli.child import GatewayProcess
    from mcpguard.console import ConsoleApp

    child = GatewayProcess(config, port=args.port, log=data / "logs" / "gateway.log", control_file=data / "control.json")
    policy = data / "mlflow.toml"

    def url() -> str:
        s = app.snap.server("mlflow") if app.snap is not None else None
        return s.url if s is not None else ""

    async def agent(app: ConsoleApp) -> None:
        from mcpguard.agent import run_agent

        await run_agent(url(), loops=None, pace_s=args.pace)

    def hint() -> str:
        return (f"The demo's policy ({args.policy_state}):\n  {policy}\n"
                "  Edit it here (e) or in any editor; `mcpguard demo --reset-policy` restores the sample.\n"
                + connect_snippet(url()))

    app = ConsoleApp(child.control, start=child.start, stop=child.stop, owner=True, theme_name=args.theme,
                     workers=[] if args.no_agent else [agent], connect_hint=hint)
    rc = app.run()
    if app.started:
        print(hint(), end="")
        print(f"Audit log: {data / 'audit.jsonl'}   gateway log: {child.log}")
    return int(rc or 0)
