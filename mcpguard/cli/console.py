"""`mcpguard console`: the Textual console, with its own gateway or attached to a running one.

- `mcpguard console --config mcpguard.toml` (or plain `mcpguard` in a folder
  with `mcpguard.toml`): the console starts the gateway as a child process
  (`mcpguard.cli.child`, so painting never delays an agent's call) and stops
  it on quit; `--in-process` runs both in one process instead.
- `mcpguard console --attach [URL]`: a console on a gateway that runs
  already (`mcpguard serve`, or another console's). Without URL, the URL and
  token come from the gateway's control file (`[gateway] control_file` of
  `--config`, default `.mcpguard/control.json`); `--token-env VAR` gives the
  token instead. Quitting leaves the gateway running; several consoles may
  attach at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", default="mcpguard.toml", help="the mcpguard.toml to run (default: ./mcpguard.toml)")
    parser.add_argument("--theme", help="dark, light, high-contrast, or the name of a theme in ~/.config/mcpguard/themes/*.toml")
    parser.add_argument("--port", type=int, help="listen on this port instead of [gateway] port (0: any free port)")
    parser.add_argument("--attach", nargs="?", const="", default=None, metavar="URL",
                        help="attach to a running gateway (URL: its base URL; default: from its control file)")
    parser.add_argument("--token-env", help="with --attach: the control token is in this environment variable")
    parser.add_argument("--in-process", action="store_true", help="run the gateway in the console's own process")


def run(args: argparse.Namespace) -> int:
    """Open the console; the exit code is 2 for a bad config or attach target, 1 if the gateway cannot start."""
    if args.attach is not None:
        return _attach(args)
    from mcpguard.config import ConfigError, load_config

    try:
        cfg = load_config(args.config)
    except FileNotFoundError:
        print(f"mcpguard: no config at {args.config} (see `mcpguard demo` for one that runs as is)", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"mcpguard: {exc}", file=sys.stderr)
        return 2
    from mcpguard.console import ConsoleApp

    theme = args.theme or cfg.console.theme
    if args.in_process:
        from mcpguard.gateway import Gateway

        if args.port is not None:
            cfg = dataclasses.replace(cfg, gateway=dataclasses.replace(cfg.gateway, port=args.port))
        app = ConsoleApp.embedded(Gateway(cfg), theme_name=theme, max_rows=cfg.console.max_rows,
                                  bell=cfg.console.bell)
    else:
        from mcpguard.cli.child import GatewayProcess

        child = GatewayProcess(args.config, port=args.port, log=cfg.base_dir / ".mcpguard" / "logs" / "gateway.log",
                               control_file=cfg.gateway.control_file)
        app = ConsoleApp(child.control, start=child.start, stop=child.stop, owner=True, theme_name=theme,
                         max_rows=cfg.console.max_rows, bell=cfg.console.bell)
    rc = app.run()
    if app.started and app.snap is not None:
        for s in app.snap.servers:
            print(f"mcpguard: stopped {s.url}")
    return int(rc or 0)


def _attach(args: argparse.Namespace) -> int:
    from mcpguard.console import ConsoleApp
    from mcpguard.control_http import RemoteControl, read_control_file

    url, token = args.attach or None, None
    if args.token_env:
        token = os.environ.get(args.token_env)
        if not token:
            print(f"mcpguard: environment variable {args.token_env} is not set", file=sys.stderr)
            return 2
    if url is None or token is None:
        path = _control_file(args.config)
        try:
            file_url, file_token = read_control_file(path)
        except (OSError, ValueError) as exc:
            print(f"mcpguard: cannot read the gateway's control file {path}: {exc}\n"
                  "  (is `mcpguard serve` running here? or give --attach URL --token-env VAR)", file=sys.stderr)
            return 2
        url, token = url or file_url, token or file_token
    app = ConsoleApp(RemoteControl(url, token), owner=False, theme_name=args.theme)
    return int(app.run() or 0)


def _control_file(config: str) -> Path:
    """The control file `config` names (`[gateway] control_file`), or `.mcpguard/control.json` beside it."""
    from mcpguard.config import ConfigError, load_config

    try:
        cfg = load_config(config)
    except (FileNotFoundError, ConfigError):
        return Path(config).resolve().parent / ".mcpguard" / "control.json"
    return cfg.gateway.control_file or cfg.base_dir / ".mcpguard" / "control.json"
