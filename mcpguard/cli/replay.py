"""`mcpguard replay AUDIT.jsonl --policy NEW [--server NAME] [--since 2h] [--json]`: what a policy would change.

Every `tools/call` recorded in the audit log (its `decision` records) is
decided again under NEW, with rate-limit counters replayed in recorded order
on the recorded clock (`mcpguard.whatif` has the rules), and the calls whose
decision would change are printed: a summary (N calls, M would change: allow
→ deny, deny → allow, newly rate-limited, newly needing approval), then a
table of the changed calls with their line in the log, time, tool, caller,
old and new decision and the rule that decides now (its step of the trace
`mcpguard explain` prints). Calls whose decision depends on arguments the log
redacted or truncated are listed apart, never guessed. `--json` prints one
document instead (`mcpguard.whatif.report_to_json`, plus the file names,
unreadable records and the exit code).

Exit codes, for CI: 0 nothing would change; 1 something would change, or may
(a call depends on arguments the log does not hold); 2 bad input: a missing
or unreadable file, a policy with errors, a bad `--since`, a log with several
servers and no `--server`, or records that could not be read (each printed
with its line; the calls that could be read are still replayed and reported).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mcpguard.audit import iso_utc
from mcpguard.durations import parse_duration
from mcpguard.policy import PolicyError, load_policy
from mcpguard.whatif import (
    CHANGE_TEXT,
    CHANGES,
    AuditReadError,
    Change,
    Report,
    read_calls,
    report_to_json,
    what_would_change,
)

CODE_STYLE = {"allowed": "green", "approval_required": "yellow", "rate_limited": "bold dark_orange"}
HEADLINE = ("allow_to_deny", "deny_to_allow", "newly_rate_limited", "newly_requires_approval")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("audit", metavar="AUDIT.jsonl", help="the audit log (gateway.audit_log)")
    parser.add_argument("--policy", metavar="NEW", required=True,
                        help="the policy to decide the calls under (.toml, or .json in PolicyLayer's shape)")
    parser.add_argument("--server", metavar="NAME", help="replay only this server's calls (needed when the log has several)")
    parser.add_argument("--since", metavar="WHEN",
                        help='only calls from this long ago ("2h", "30m", "1d") or this time '
                             '("2026-05-01T09:00:00Z"); earlier ones still fill the counters')
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    parser.add_argument("--rows", metavar="N", type=int, default=100,
                        help="changed calls to list (default 100; 0: all; --json lists all)")


def parse_since(text: str, now: float) -> float:
    """Epoch seconds for `--since`: a duration before `now` (`2h`, `90m`, `45s`, `1d`,
    seconds) or an ISO-8601 time (no zone: UTC). Raises ValueError with a hint."""
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f'--since {text!r} is neither a duration ("2h", "30m") nor an ISO time '
                         '("2026-05-01T09:00:00Z")') from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def run(args: argparse.Namespace) -> int:
    out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)

    def fail(message: str) -> int:
        if args.json:
            print(json.dumps({"audit": args.audit, "policy": args.policy, "error": message, "exit": 2}))
        err.print(Text(f"mcpguard replay: {message}", style="bold red"), soft_wrap=True)
        return 2

    since = None
    if args.since:
        try:
            since = parse_since(args.since, time.time())
        except ValueError as exc:
            return fail(str(exc))
    try:
        policy = load_policy(args.policy)
    except PolicyError as exc:
        for issue in exc.issues:
            err.print(Text(f"{issue.file}:{issue.line}:{issue.col}: error: {issue.message}"
                           + (f" ({issue.hint})" if issue.hint else "")), soft_wrap=True)
        n = len(exc.issues)
        return fail(f"{args.policy}: {n} error{'s' if n != 1 else ''}; nothing was replayed")
    try:
        found = read_calls(args.audit, server=args.server)
    except AuditReadError as exc:
        return fail(str(exc))
    for bad in found.unreadable:
        err.print(Text(f"{args.audit}:{bad.line}: cannot read: {bad.reason}", style="yellow"), soft_wrap=True)
    if args.server is None and len(found.servers) > 1:
        listed = ", ".join(f"{name} ({n} calls)" for name, n in sorted(found.servers.items()))
        return fail(f"{args.audit} has calls to {len(found.servers)} servers: {listed}; a policy belongs to one, "
                    "so name it with --server")
    if args.server is not None and args.server not in found.servers and found.servers:
        listed = ", ".join(sorted(found.servers))
        return fail(f"{args.audit} has no calls to server {args.server!r} (it has: {listed})")

    report = what_would_change(found.calls, policy, since=since)
    code = 2 if found.unreadable else (1 if report.changes or report.unknown else 0)
    if args.json:
        doc: dict[str, Any] = {"audit": args.audit, "policy": args.policy, "since": since,
                               **report_to_json(report),
                               "decided_again": found.decided_again,
                               "unreadable": len(found.unreadable),
                               "unreadable_records": [{"line": u.line, "reason": u.reason} for u in found.unreadable],
                               "exit": code}
        print(json.dumps(doc, ensure_ascii=False, indent=1))
        return code
    _print(out, args, report, found.decided_again, len(found.unreadable), since)
    return code


def _summary(report: Report) -> str:
    parts = [f"{CHANGE_TEXT[k]}: {report.counts[k]}" for k in HEADLINE]
    parts += [f"{CHANGE_TEXT[k]}: {report.counts[k]}" for k in CHANGES if k not in HEADLINE and report.counts[k]]
    return ", ".join(parts)


def _print(out: Console, args: argparse.Namespace, report: Report, decided_again: int, unreadable: int,
           since: float | None) -> None:
    where = f"server {report.server}" if report.server else "no calls"
    calls = f"{report.calls} call{'s' if report.calls != 1 else ''}"
    head = f"{args.audit} ({where}) under {args.policy}: {calls}"
    if since is not None:
        head += f" since {iso_utc(since)}"
    head += f", {report.changed} would change"
    out.print(Text(head, style="bold"), soft_wrap=True)
    out.print(Text("  " + _summary(report)), soft_wrap=True)
    if report.unknown:
        n = len(report.unknown)
        out.print(Text(f"  {n} call{'s' if n != 1 else ''} cannot be decided again: the decision depends on "
                       "arguments the audit log does not hold (listed below)", style="yellow"), soft_wrap=True)
    if report.would:
        shown = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in sorted(report.would.items()))
        out.print(Text(f"  the new policy's shadow rules: {shown}", style="magenta"), soft_wrap=True)
    if report.warmup:
        out.print(Text(f"  {report.warmup} earlier calls were replayed only to fill the counters", style="dim"),
                  soft_wrap=True)
    if decided_again:
        out.print(Text(f"  {decided_again} calls were decided again after their approval; "
                       "their first decision is compared", style="dim"), soft_wrap=True)
    if unreadable:
        out.print(Text(f"  {unreadable} record{'s' if unreadable != 1 else ''} could not be read "
                       "(listed on stderr with their lines); the others were replayed", style="bold red"),
                  soft_wrap=True)
    if report.changes:
        rows = report.changes if args.rows <= 0 else report.changes[: args.rows]
        out.print(_changes_table(rows))
        if len(rows) < len(report.changes):
            out.print(Text(f"... and {len(report.changes) - len(rows)} more changed calls "
                           "(--rows 0 lists all; --json gives every one with its trace)", style="dim"))
    if report.unknown:
        out.print(_unknown_table(report.unknown))


def _when(ch: Change) -> str:
    return ch.call.time or iso_utc(ch.call.ts)


def _day_and_times(rows: list[Change]) -> tuple[str, list[str]]:
    """(`, 2026-05-01 UTC` for the title, the times of day) when every row is on one
    UTC day, else ("", the full ISO times)."""
    full = [_when(ch) for ch in rows]
    days = {t[:10] for t in full}
    if len(days) == 1 and all(len(t) > 11 and t[10] == "T" for t in full):
        return f", {days.pop()} UTC", [t[11:].rstrip("Z") for t in full]
    return "", full


def _caller(ch: Change) -> str:
    rc = ch.call
    who = rc.grant
    if rc.session_id:
        who += f" / {rc.session_id[:8]}"
    return who


def _code(code: str) -> Text:
    return Text(code, style=CODE_STYLE.get(code, "bold red"))


def _changes_table(rows: list[Change]) -> Table:
    day, times = _day_and_times(rows)
    table = Table(title=Text(f"changed calls{day}"), title_justify="left", header_style="bold")
    table.add_column("line", justify="right")
    table.add_column("time", no_wrap=True)
    table.add_column("tool", no_wrap=True)
    table.add_column("caller", no_wrap=True)
    table.add_column("change", no_wrap=True)
    table.add_column("old → new", no_wrap=True)
    table.add_column("decided by (new)")
    for ch, when in zip(rows, times):
        step = ch.step
        why = Text(f"{step.rule}: {step.detail}" if step is not None else ch.new.rule)
        if ch.new.shadow is not None:
            why.append(f"  (shadow {ch.new.shadow.would.replace('_', ' ')}: {ch.new.shadow.rule})", style="magenta")
        table.add_row(str(ch.call.line or ""), when, ch.call.tool, _caller(ch), CHANGE_TEXT[ch.change],
                      _code(ch.old.code) + Text(" → ") + _code(ch.new.code), why)
    return table


def _unknown_table(rows: list[Change]) -> Table:
    day, times = _day_and_times(rows)
    table = Table(title=Text(f"cannot be decided again{day}"), title_justify="left", header_style="bold yellow")
    table.add_column("line", justify="right")
    table.add_column("time", no_wrap=True)
    table.add_column("tool", no_wrap=True)
    table.add_column("caller", no_wrap=True)
    table.add_column("recorded", no_wrap=True)
    table.add_column("depends on")
    for ch, when in zip(rows, times):
        deps = "; ".join(f"{u.path} ({u.reason} in the log), read by {u.rule}" + (" (shadow)" if u.shadow else "")
                         for u in ch.unknown)
        table.add_row(str(ch.call.line or ""), when, ch.call.tool, _caller(ch), _code(ch.old.code), Text(deps))
    return table
