"""`mcpguard serve --config mcpguard.toml`: the gateway, headless (no console of its own).

Prints one endpoint URL per upstream server, writes `[gateway] url_file`
and the control file (`[gateway] control_file`: the control endpoint's URL
and token, for `mcpguard console --attach`), and runs until SIGINT or
SIGTERM; then it denies pending approvals, closes every session and stops
the upstream processes, and exits 0. While no console is attached, a call
that needs approval is denied at once or waits for its deadline (so a person
can attach and answer), per `[gateway] headless_approvals`. Policy files are watched:
a change is applied within a second, a broken one is rejected (printed
with its line) while the last good policy keeps running. Exit codes: 0 stopped
cleanly, 1 the gateway could not start (address in use, ...), 2 bad config.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import sys
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--config PATH` (default `mcpguard.toml`), `--port N` (overrides `[gateway] port`; 0 = any free port),
    `--control-file PATH` and `--control-token-env VAR` (override those of `[gateway]`), `--console` (a console
    will attach and answer approvals: they wait for it), `--exit-with-parent` (stop when the process that
    started this one is gone)."""
    parser.add_argument("-c", "--config", default="mcpguard.toml", help="the mcpguard.toml to run (default: %(default)s)")
    parser.add_argument("--port", type=int, default=None, help="listen port, overriding [gateway] port (0: any free port)")
    parser.add_argument("--control-file", help="write the control endpoint's URL and token here (0600)")
    parser.add_argument("--control-token-env", help="the control token is in this environment variable")
    parser.add_argument("--console", action="store_true", help="a console answers approvals (they wait for it)")
    parser.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    """Load the config and serve until a signal; returns the exit code."""
    from mcpguard.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"mcpguard serve: {exc}", file=sys.stderr)
        return 2
    gw = config.gateway
    if args.port is not None:
        gw = dataclasses.replace(gw, port=args.port)
    if args.control_file:
        gw = dataclasses.replace(gw, control_file=Path(args.control_file).resolve())
    if args.control_token_env:
        token = os.environ.get(args.control_token_env)
        if not token:
            print(f"mcpguard serve: environment variable {args.control_token_env} is not set", file=sys.stderr)
            return 2
        gw = dataclasses.replace(gw, control_token=token)
    config = dataclasses.replace(config, gateway=gw)
    try:
        return asyncio.run(serve(config, interactive=args.console, parent=os.getppid() if args.exit_with_parent
                                 else None))
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        return 130


async def serve(config: Any, *, out: Any = None, interactive: bool = False, parent: int | None = None) -> int:
    """Run a `Gateway` for `config` until SIGINT/SIGTERM (or, with `parent`, until that process is gone);
    print its URLs to `out` (stdout). `interactive`: a console owns this gateway and answers approvals."""
    from mcpguard.gateway import Gateway

    out = out or sys.stdout
    gw = Gateway(config, interactive=interactive)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    watchdog = asyncio.create_task(_orphaned(parent, stop)) if parent is not None else None
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
            pass
    try:
        await gw.start()
    except OSError as exc:
        print(f"mcpguard serve: {exc}", file=sys.stderr)
        await gw.stop()
        return 1
    except RuntimeError as exc:
        from mcpguard.telemetry import TelemetryUnavailable

        if not isinstance(exc, TelemetryUnavailable):
            raise
        print(f"mcpguard serve: {exc}", file=sys.stderr)  # an install to make, said plainly
        await gw.stop()
        return 1
    print(f"mcpguard {getattr(sys.modules.get('mcpguard'), '__version__', '')} serving on {gw.base_url}", file=out)
    for name, h in gw.servers.items():
        policy = str(h.policy_path) if h.policy is not None else "NO POLICY: every call is denied"
        print(f"  {name}: {gw.url(name)}  upstream {h.state}  policy {policy}", file=out)
        for err in h.policy_errors:
            print(f"    {err}", file=out)
    if gw.grants:
        print(f"  grants: {', '.join(gw.grants)} (Authorization: Bearer <token>)", file=out)
    else:
        print("  no grants: loopback clients only, as grant 'local'", file=out)
    tel = config.telemetry
    if tel.enabled:
        where = tel.otlp_endpoint or "the OTEL_EXPORTER_OTLP_* endpoint"
        print(f"  telemetry: OpenTelemetry traces and metrics over OTLP/HTTP to {where}", file=out)
    if not interactive:
        print(f"  approvals: {gw.headless_approvals} while no console is attached "
              f"(mcpguard console --attach); Ctrl-C stops", file=out)
    out.flush()
    from mcpguard.events import PolicyRejected, PolicyReloaded

    def said(event: Any) -> None:
        if isinstance(event, PolicyReloaded) and event.source == "file":
            print(f"mcpguard: policy of {event.server} reloaded\n{event.diff}", file=out)
        elif isinstance(event, PolicyRejected):
            for err in event.errors:
                print(f"mcpguard: policy of {event.server} rejected, the last good one keeps running: {err}",
                      file=out)
        else:
            return
        out.flush()

    detach = gw.bus.add_listener(said)
    try:
        await stop.wait()
    finally:
        detach()
        if watchdog is not None:
            watchdog.cancel()
        pending = len(gw.approvals.pending())
        print(f"mcpguard: stopping (denying {pending} pending approval{'s' if pending != 1 else ''})", file=out)
        out.flush()
        await gw.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
    return 0


async def _orphaned(parent: int, stop: asyncio.Event) -> None:
    """Set `stop` once the process that started this one is gone (its console died without stopping us)."""
    while os.getppid() == parent:
        await asyncio.sleep(0.5)
    stop.set()
