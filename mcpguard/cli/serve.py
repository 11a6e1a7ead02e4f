"""`mcpguard serve --config mcpguard.toml`: the gateway, headless (no console).

Prints one endpoint URL per upstream server, writes `[gateway] url_file`,
and runs until SIGINT or SIGTERM; then it denies pending approvals, closes
every session and stops the upstream processes, and exits 0. With no
console attached, a call that needs approval is denied at once or waits for
its deadline, per `[gateway] headless_approvals`. Policy files are watched:
a change is applied within a second, a broken one is rejected (printed
with its line) while the last good policy keeps running. Exit codes: 0 stopped
cleanly, 1 the gateway could not start (address in use, ...), 2 bad config.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--config PATH` (default `mcpguard.toml`), `--port N` (overrides `[gateway] port`; 0 = any free port)."""
    parser.add_argument("-c", "--config", default="mcpguard.toml", help="the mcpguard.toml to run (default: %(default)s)")
    parser.add_argument("--port", type=int, default=None, help="listen port, overriding [gateway] port (0: any free port)")


def run(args: argparse.Namespace) -> int:
    """Load the config and serve until a signal; returns the exit code."""
    from mcpguard.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"mcpguard serve: {exc}", file=sys.stderr)
        return 2
    if args.port is not None:
        config = dataclasses.replace(config, gateway=dataclasses.replace(config.gateway, port=args.port))
    try:
        return asyncio.run(serve(config))
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        return 130


async def serve(config: Any, *, out: Any = None) -> int:
    """Run a headless `Gateway` for `config` until SIGINT/SIGTERM; print its URLs to `out` (stdout)."""
    from mcpguard.gateway import Gateway

    out = out or sys.stdout
    gw = Gateway(config, interactive=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
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
    print(f"  approvals: {gw.headless_approvals} (no console attached); Ctrl-C stops", file=out)
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
