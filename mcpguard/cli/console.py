"""`mcpguard console --config mcpguard.toml`: the Textual console with the embedded gateway."""

from __future__ import annotations

import argparse
import dataclasses
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", default="mcpguard.toml", help="the mcpguard.toml to run (default: ./mcpguard.toml)")
    parser.add_argument("--theme", help="dark, light, high-contrast, or the name of a theme in ~/.config/mcpguard/themes/*.toml")
    parser.add_argument("--port", type=int, help="listen on this port instead of [gateway] port (0: any free port)")


def run(args: argparse.Namespace) -> int:
    """Load the config, open the console; the exit code is 2 for a bad config, 1 if the gateway cannot start."""
    from mcpguard.config import ConfigError, load_config

    try:
        cfg = load_config(args.config)
    except FileNotFoundError:
        print(f"mcpguard: no config at {args.config} (see `mcpguard demo` for one that runs as is)", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"mcpguard: {exc}", file=sys.stderr)
        return 2
    if args.port is not None:
        cfg = dataclasses.replace(cfg, gateway=dataclasses.replace(cfg.gateway, port=args.port))
    from mcpguard.console import ConsoleApp
    from mcpguard.gateway import Gateway

    gateway = Gateway(cfg)
    app = ConsoleApp.embedded(gateway, theme_name=args.theme or cfg.console.theme, max_rows=cfg.console.max_rows)
    rc = app.run()
    if app.started:
        for name in gateway.servers:
            print(f"mcpguard: stopped {gateway.url(name)}")
    return int(rc or 0)
