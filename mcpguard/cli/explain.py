"""`mcpguard explain POLICY TOOL [--args JSON] [--grant G] [--tools TOOLS.json]`: one decision and why.

Evaluates one `tools/call` of TOOL with the given arguments against POLICY,
as the gateway would with fresh counters (no call made yet), and prints the
decision (action, code, the deciding rule, the message the agent would
read), the limits the call would count against, and the trace of every rule
looked at, in evaluation order. Rules in shadow mode are marked `(shadow)` in
the trace, and what they would have done is printed under the decision
(`shadow: would deny ...`).

Exit 0 when a decision was made (whatever it is), 1 when the policy has
errors (printed as `file:line:col: error: ...`), 2 for bad `--args` or an
unreadable TOOLS.json.
"""

from __future__ import annotations

import argparse
import json
import time

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mcpguard.call import Call
from mcpguard.durations import format_duration
from mcpguard.policy import PolicyError, evaluate, load_policy
from mcpguard.ratelimit import Counters
from mcpguard.risk import classify
from mcpguard.cli.check import ACTION_STYLE, RISK_STYLE, ToolsFileError, read_tools

OUTCOME_STYLE = {"pass": "green", "allow": "bold green", "deny": "bold red", "approval": "bold yellow", "warn": "yellow",
                 "would_deny": "bold magenta", "would_approval": "magenta"}
WOULD_TEXT = {"would_deny": "would deny", "would_rate_limit": "would rate-limit",
              "would_require_approval": "would require approval"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("policy", metavar="POLICY", help="policy file (.toml, or .json in PolicyLayer's shape)")
    parser.add_argument("tool", metavar="TOOL", help="the tool's name, as in tools/call")
    parser.add_argument("--args", metavar="JSON", default="{}", help='the call\'s arguments as a JSON object, e.g. \'{"stage": "Production"}\'')
    parser.add_argument("--grant", metavar="G", default="local", help="the caller's grant (default: local)")
    parser.add_argument("--session", metavar="ID", default=None, help="the caller's MCP session id")
    parser.add_argument("--client", metavar="NAME", default=None, help="the caller's clientInfo.name")
    parser.add_argument("--server", metavar="NAME", default="mlflow", help="the upstream's name (default: mlflow)")
    parser.add_argument("--tools", metavar="TOOLS.json", help="the server's tools/list result, for the tool's risk")


def run(args: argparse.Namespace) -> int:
    out = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    try:
        policy = load_policy(args.policy)
    except PolicyError as exc:
        for issue in exc.issues:
            err.print(Text(f"{issue.file}:{issue.line}:{issue.col}: error: {issue.message}" + (f" ({issue.hint})" if issue.hint else "")), soft_wrap=True)
        err.print(Text(f"{args.policy}: the policy was not loaded", style="bold red"))
        return 1
    try:
        arguments = json.loads(args.args)
    except json.JSONDecodeError as exc:
        err.print(Text(f"mcpguard explain: --args is not JSON: {exc.msg} at column {exc.colno}", style="bold red"), soft_wrap=True)
        return 2
    if not isinstance(arguments, dict):
        err.print(Text("mcpguard explain: --args must be a JSON object, like '{\"run_id\": \"abc\"}'", style="bold red"))
        return 2
    tool_def = None
    if args.tools:
        try:
            tool_def = next((t for t in read_tools(args.tools) if t["name"] == args.tool), None)
        except ToolsFileError as exc:
            err.print(Text(f"mcpguard explain: {exc}", style="bold red"), soft_wrap=True)
            return 2
        if tool_def is None:
            out.print(Text(f"note: the server in {args.tools} has no tool named {args.tool}", style="yellow"))
    rule = policy.tools.get(args.tool)
    risk = classify(
        args.tool,
        tool_def.get("annotations") if tool_def else None,
        tool_def.get("description") if tool_def else None,
        override=rule.risk if rule else None,
    )
    call = Call(args.server, args.tool, arguments, grant=args.grant, session_id=args.session, client=args.client)
    decision = evaluate(call, policy, Counters(args.server), time.monotonic(), risk=risk,
                        shadow_counters=Counters(args.server))

    head = Text()
    head.append(f"{args.tool}", style="bold")
    head.append(f"({json.dumps(arguments)}) as grant {args.grant}: ")
    head.append(decision.action, style=ACTION_STYLE.get(decision.action, ""))
    head.append(f"  code {decision.code}, rule {decision.rule}")
    out.print(head, soft_wrap=True)
    out.print(Text("the agent reads: ", style="dim") + Text(decision.message), soft_wrap=True)
    out.print(Text("risk: ", style="dim") + Text(f"{risk.level} {risk.kind}", style=RISK_STYLE.get(risk.level, ""))
              + Text(f" (from {risk.source}{': ' + risk.reason if getattr(risk, 'reason', '') else ''})", style="dim"), soft_wrap=True)
    if decision.approval_timeout_s is not None:
        out.print(Text(f"a person must approve within {format_duration(decision.approval_timeout_s)}, else it is denied", style="dim"))
    if decision.limits:
        counts = "; ".join(f"{lim.counter} ({lim.describe()})" for lim in decision.limits)
        out.print(Text("counts against: ", style="dim") + Text(counts), soft_wrap=True)
    if decision.shadow_limits:
        counts = "; ".join(f"{lim.counter} ({lim.describe()})" for lim in decision.shadow_limits)
        out.print(Text("counts against (shadow): ", style="dim") + Text(counts), soft_wrap=True)
    sh = decision.shadow
    if sh is not None:
        line = Text("shadow: ", style="dim") + Text(WOULD_TEXT[sh.would], style="bold magenta")
        line.append(f"  code {sh.code}, rule {sh.rule}")
        out.print(line, soft_wrap=True)
        out.print(Text("the agent would read: ", style="dim") + Text(sh.message), soft_wrap=True)
    elif policy.has_shadow and decision.action != "deny":
        out.print(Text("shadow: no shadow rule would change this decision", style="dim"))

    table = Table(title=Text("trace"), title_justify="left", header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("rule", no_wrap=True)
    table.add_column("outcome", no_wrap=True)
    table.add_column("detail")
    for i, step in enumerate(decision.trace, 1):
        rule = Text(step.rule)
        if step.shadow:
            rule.append(" (shadow)", style="magenta")
        table.add_row(str(i), rule, Text(step.outcome, style=OUTCOME_STYLE.get(step.outcome, "")), Text(step.detail))
    out.print(table)
    return 0
