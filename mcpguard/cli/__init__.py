"""`mcpguard console | serve | demo | check | explain | replay | connect`.

Each subcommand lives in `mcpguard.cli.<name>` with
`add_arguments(parser)` and `run(args) -> int` (the exit code); it is
imported only when used, so `mcpguard check` never loads Textual.
With no subcommand, `mcpguard` opens the console when `mcpguard.toml` is in
the current folder, and prints help otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

COMMANDS = {
    "console": "open the policy console with the embedded gateway",
    "serve": "run the gateway headless (no console)",
    "demo": "the console on the embedded MLflow demo, with a scripted agent",
    "check": "validate a policy and print its table",
    "explain": "show the decision for one call and the rules behind it",
    "replay": "decide recorded calls again under another policy and show what would change",
    "connect": "a stdio MCP server forwarding to a gateway endpoint (for stdio-only clients)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcpguard", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        try:
            mod = importlib.import_module(f"mcpguard.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"mcpguard.cli.{name}":
                raise
            continue
        mod.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv and Path("mcpguard.toml").exists():
        argv = ["console"]
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    try:
        mod = importlib.import_module(f"mcpguard.cli.{args.command}")
    except ModuleNotFoundError:
        print(f"mcpguard: '{args.command}' is not built yet", file=sys.stderr)
        return 2
    return int(mod.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
