"""`mcpguard check POLICY [--tools TOOLS.json]`: validate a policy and print its table.

Errors print as `file:line:col: error: message (hint)` (one per line, every
one at once) and the exit code is 1. A valid policy prints a table of every
tool (action, limits, conditions, risk) and its warnings: entries naming
tools the server does not have, write or destructive tools left unlimited
under `default = "allow"`, rules on hidden tools. Rules in shadow mode (mcpguard's
extension) are marked: `shadow: deny` in the rules column, `shadow` after a
limit. Exit 0 when valid (warnings
included), 1 on policy errors, 2 when TOOLS.json cannot be read.

TOOLS.json is a `tools/list` result (`{"tools": [...]}`) or a list of tool
objects, as the MCP spec's `Tool` (name, description, inputSchema, annotations).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mcpguard.durations import format_duration
from mcpguard.policy import Limit, Policy, PolicyError, load_policy
from mcpguard.policy.positions import Positions, json_positions, toml_positions
from mcpguard.risk import classify

ACTION_STYLE = {"allow": "green", "deny": "bold red", "require_approval": "bold yellow", "hidden": "dim"}
ACTION_LABEL = {"allow": "allow", "deny": "deny", "require_approval": "approval", "hidden": "hidden"}
RISK_STYLE = {"low": "green", "medium": "yellow", "high": "bold dark_orange", "critical": "bold red"}
WINDOW_SHORT = {"second": "s", "minute": "min", "hour": "h", "day": "day"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("policy", metavar="POLICY", help="policy file (.toml, or .json in PolicyLayer's shape)")
    parser.add_argument("--tools", metavar="TOOLS.json", help="the server's tools/list result, to check names and risks against")


class ToolsFileError(Exception):
    """TOOLS.json cannot be read or is not a tools/list result."""


def read_tools(path: str) -> list[dict[str, Any]]:
    """The tool objects of a `tools/list` result file; raises ToolsFileError with the reason."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise ToolsFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ToolsFileError(f"{path}:{exc.lineno}:{exc.colno}: JSON syntax error: {exc.msg}") from None
    tools = data.get("tools") if isinstance(data, dict) else data
    if not isinstance(tools, list) or not all(isinstance(t, dict) and isinstance(t.get("name"), str) for t in tools):
        raise ToolsFileError(f'{path}: not a tools/list result (expected {{"tools": [{{"name": ...}}, ...]}})')
    return tools


def short_limit(lim: Limit, shared: bool) -> str:
    """`30/min`, `5/h per session`, with `[counter]` when other tools share the counter
    (the scope is only written when it is not `grant`) and ` shadow` for a shadow limit."""
    text = f"{lim.max}/{WINDOW_SHORT[lim.window]}"
    if lim.scope != "grant":
        text += " for all" if lim.scope == "global" else f" per {lim.scope}"
    text = f"{text} [{lim.counter}]" if shared else text
    return f"{text} shadow" if lim.shadow else text


@dataclass
class Row:
    name: str
    action: str
    limits: str
    rules: str
    risk: Any
    missing: bool


def build_rows(policy: Policy, tools: list[dict[str, Any]] | None) -> tuple[list[Row], list[str]]:
    """The table's rows, in the server's order (then names only the policy has), and the warnings."""
    warnings = [f"{w.file}:{w.line}:{w.col}: warning: {w.message}" + (f" ({w.hint})" if w.hint else "") for w in policy.warnings]
    uses: dict[str, int] = {}
    for rule in policy.tools.values():
        for lim in rule.limits:
            uses[lim.counter] = uses.get(lim.counter, 0) + 1
    by_name = {t["name"]: t for t in tools or []}
    names = list(by_name)
    for n in list(policy.tools) + [h for h in policy.hide if h != "*"]:
        if n not in by_name and n not in names:
            names.append(n)
    src = policy.source
    pos: Positions | None = None
    if src is not None:
        pos = json_positions(src.text) if src.fmt == "json" else toml_positions(src.text)

    def where(*path: str | int) -> str:
        if src is None or pos is None:
            return ""
        line, col = pos.locate(path)
        return f"{src.path}:{line}:{col}: "

    rows: list[Row] = []
    for name in names:
        tool = by_name.get(name)
        rule = policy.tools.get(name)
        action = policy.action_for(name)
        risk = classify(name, tool.get("annotations") if tool else None, tool.get("description") if tool else None,
                        override=rule.risk if rule else None)
        own = [short_limit(lim, uses.get(lim.counter, 0) > 1) for lim in rule.limits] if rule and action not in ("hidden", "deny") else []
        rules = []
        would = policy.shadow_action_for(name)
        if would is not None:
            rules.append(f"shadow: {ACTION_LABEL[would]}")
        if action == "require_approval" and rule is not None:
            t = rule.approval_timeout_s if rule.approval_timeout_s is not None else policy.approval_timeout_s
            rules.append(f"within {format_duration(t)}")
        for kind in ("deny_if", "require"):
            entries = getattr(rule, kind) if rule is not None and action != "hidden" else ()
            if entries:
                shadowed = sum(e.mode == "shadow" for e in entries)
                rules.append(f"{len(entries)} {kind}" + ("" if not shadowed else " shadow" if shadowed == len(entries)
                                                         else f" ({shadowed} shadow)"))
        missing = tools is not None and tool is None
        if missing:
            at = where("tools", name) if name in policy.tools else where("hide", policy.hide.index(name))
            warnings.append(f"{at}warning: {name} is named by the policy but the server has no such tool")
        if (
            policy.default == "allow"
            and action == "allow"
            and tool is not None
            and risk.kind in ("write", "destructive", "execute")
            and not policy.limits_for(name)
            and not policy.shadow
        ):
            at = where("tools", name) if rule else where("default")
            warnings.append(f'{at}warning: {name} is a {risk.kind} tool left unlimited under default = "allow" '
                            '(add limits, or list it with action = "require_approval" or "deny")')
        rows.append(Row(name, action, "\n".join(own), "\n".join(rules), risk, missing))
    return rows, warnings


def render(policy: Policy, rows: list[Row], console: Console, title: str) -> None:
    """Print the table: riskiest and most restricted first, then by name."""
    table = Table(title=Text(title), title_justify="left", header_style="bold", expand=False)
    # in a narrow terminal the tool name gives way first (rich never shrinks a
    # no_wrap column on its own), then the risk wraps; the limits stay whole
    limits_w = max((len(line) for r in rows for line in r.limits.splitlines()), default=6)
    tool_w = max(16, console.width - 50 - min(limits_w, 24))
    table.add_column("tool", no_wrap=True, overflow="ellipsis", max_width=tool_w)
    table.add_column("action", no_wrap=True, min_width=8)
    table.add_column("rules", no_wrap=True, min_width=9)
    table.add_column("limits", no_wrap=True, overflow="ellipsis", max_width=24)
    table.add_column("risk", min_width=8)
    order = {"hidden": 0, "deny": 1, "require_approval": 2, "allow": 3}
    levels = {"critical": 0, "high": 1, "medium": 2, "low": 3}
    for row in sorted(rows, key=lambda r: (order[r.action], levels.get(r.risk.level, 9), r.name)):
        name = Text(row.name, style="dim" if row.action == "hidden" else "")
        if row.missing:
            name.append("  not on server", style="bold red")
        risk = Text(f"{row.risk.level} {row.risk.kind}", style=RISK_STYLE.get(row.risk.level, ""))
        if row.risk.source == "policy":
            risk.append(" (policy)", style="dim")
        table.add_row(name, Text(ACTION_LABEL[row.action], style=ACTION_STYLE[row.action]), Text(row.rules),
                      Text(row.limits), risk)
    console.print(table)


def run(args: argparse.Namespace) -> int:
    # piped or in CI (no terminal), print the whole table rather than 80 columns of it
    out = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    err = Console(stderr=True, highlight=False)
    try:
        policy = load_policy(args.policy)
    except PolicyError as exc:
        for issue in exc.issues:
            line = f"{issue.file}:{issue.line}:{issue.col}: error: {issue.message}" + (f" ({issue.hint})" if issue.hint else "")
            err.print(Text(line), soft_wrap=True)
        n = len(exc.issues)
        err.print(Text(f"{args.policy}: {n} error{'s' if n != 1 else ''}; the policy was not loaded", style="bold red"))
        return 1
    tools = None
    if args.tools:
        try:
            tools = read_tools(args.tools)
        except ToolsFileError as exc:
            err.print(Text(f"mcpguard check: {exc}", style="bold red"))
            return 2
    rows, warnings = build_rows(policy, tools)
    hidden = sum(1 for r in rows if r.action == "hidden")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.action] = counts.get(r.action, 0) + 1
    title = (
        f"{args.policy} — default {policy.default}, on_tool_change {policy.on_tool_change}, "
        f"approval timeout {policy.approval_timeout_s:g} s"
    )
    title += "\nlimits are per grant unless marked; [name] is a counter shared by several tools"
    if policy.shadow:
        title += "\nshadow = true: nothing is enforced; every call goes through and is reported as it would be decided"
    if policy.all_tools_limits:
        title += "\nevery call also counts against: " + ", ".join(
            f"{short_limit(lim, False)} [{lim.counter}]" for lim in policy.all_tools_limits
        )
    render(policy, rows, out, title)
    summary = (
        f"{len(rows)} tools: {counts.get('allow', 0)} allowed, {counts.get('require_approval', 0)} need approval, "
        f"{counts.get('deny', 0)} denied, {hidden} hidden; {len(policy.counter_names())} counters"
        + (f", {len(policy.shadow_counter_names())} shadow counters" if policy.shadow_counter_names() else "")
    )
    out.print(Text(summary))
    for w in warnings:
        out.print(Text(w, style="yellow"), soft_wrap=True)
    out.print(Text(f"OK: {args.policy} is valid" + (f" ({len(warnings)} warnings)" if warnings else ""), style="bold green"))
    return 0


if __name__ == "__main__":  # pragma: no cover
    p = argparse.ArgumentParser(prog="mcpguard check")
    add_arguments(p)
    sys.exit(run(p.parse_args()))
