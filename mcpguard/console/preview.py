"""What an edit of a policy would have changed, for the console: the editor's preview pane and the
toasts of `+`, `-`, `t`, `h`.

The console's own history of a server's calls (its `CallLog`) becomes
`mcpguard.whatif.RecordedCall`s, so `whatif.what_would_change` decides them
again under the edited policy and under the running one, on the recorded
clock; the audit log serves the same way when a person asks
(`whatif.read_calls`). Pure: no textual, no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from rich.text import Text

from mcpguard.whatif import CHANGE_TEXT, CHANGES, RecordedCall, Report, what_would_change

#: changed calls listed by name under the counts
SHOWN_CHANGES = 4


def recorded_calls(records: Iterable[Any], server: str) -> list[RecordedCall]:
    """`server`'s decided calls among the console's `CallRecord`s, as the audit log would record them."""
    out = []
    for r in records:
        if r.server != server or r.decided_code is None:
            continue
        outcome = r.outcome if r.outcome is not None and r.outcome != r.decided_code else None
        out.append(RecordedCall(server=r.server, tool=r.tool, arguments=r.arguments or {}, grant=r.grant or "local",
                                session_id=r.session_id, client=r.client, call_id=r.call_id, ts=r.ts,
                                decision=r.decided_code, action=r.action, rule=r.rule, message=r.message,
                                outcome=str(outcome) if outcome is not None else None))
    return out


def preview(calls: list[RecordedCall], new_policy: Any, old_policy: Any | None) -> Report:
    """`what_would_change` of `calls` (one server's) from `old_policy` (None: as recorded) to `new_policy`."""
    return what_would_change(calls, new_policy, old_policy=old_policy)


def summary(report: Report, *, source: str) -> str:
    """One line: `of the last 87 calls (this console), 3 would change: newly rate-limited 2, allow → deny 1`."""
    n = report.calls
    head = f"of the last {n} call{'s' if n != 1 else ''} ({source})"
    if not n:
        return f"{head}: nothing to compare yet"
    if not report.changed and not report.unknown:
        tail = "none would change"
    else:
        parts = [f"{CHANGE_TEXT[k]} {report.counts[k]}" for k in CHANGES if report.counts[k]]
        tail = f"{report.changed} would change" + (": " + ", ".join(parts) if parts else "")
        if report.unknown:
            tail += f"; {len(report.unknown)} depend on arguments the audit log does not hold"
    if report.would:
        tail += "; shadow rules: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(report.would.items()))
    return f"{head}, {tail}"


def render(report: Report, *, source: str, colors: dict[str, str] | None = None) -> Text:
    """The summary line, then up to `SHOWN_CHANGES` changed calls: time, tool, old → new, deciding rule."""
    colors = colors or {}
    t = Text()
    t.append("preview ", style="bold")
    t.append(summary(report, source=source))
    for ch in report.changes[:SHOWN_CHANGES]:
        t.append("\n  ")
        t.append(time.strftime("%H:%M:%S", time.localtime(ch.call.ts)), style="dim")
        t.append(f"  {ch.call.tool}  ", style="bold")
        t.append(ch.old.code)
        t.append(" → ")
        t.append(ch.new.code, style=f"bold {colors.get('warning', '')}")
        if ch.new.rule:
            t.append(f"  {ch.new.rule}", style="dim")
    if len(report.changes) > SHOWN_CHANGES:
        t.append(f"\n  … and {len(report.changes) - SHOWN_CHANGES} more (mcpguard replay lists them all)",
                 style="dim")
    return t
