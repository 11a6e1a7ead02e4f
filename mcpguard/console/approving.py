"""Answering approvals: the prompt that shows the pending call."""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text
from textual.widgets import Static

from mcpguard.console.widgets import fmt_duration, theme_color


class ApprovalPrompt(Static):
    """The current pending approval of the queue ("1 of 3") with a countdown.

    It holds no state beyond which approval is current (`current_id`); the
    owner calls `show(pending, now)` each second and on every change.
    """

    current_id: str | None = None

    def show(self, pending: list[Any], now: float) -> None:
        """`pending` are `ApprovalRequested` events, oldest first."""
        if not pending:
            self.current_id = None
            self.update("")
            self.border_title = ""
            return
        ids = [p.approval_id for p in pending]
        if self.current_id not in ids:
            self.current_id = ids[0]
        idx = ids.index(self.current_id)
        p = pending[idx]
        left = max(0.0, p.deadline - now)
        self.border_title = f"approval {idx + 1} of {len(pending)}"
        self.border_subtitle = f"denied in {fmt_duration(left)}"
        risk_color = theme_color(self, f"risk-{p.risk}") if p.risk else ""
        width = max(20, self.content_region.width or 80)

        def line() -> Text:
            return Text(no_wrap=True, overflow="ellipsis", end="")

        head = line()
        head.append(p.tool, style=f"bold {risk_color}")
        head.append(f" on {p.server}", style="dim")
        if p.risk:
            head.append("  risk ", style="dim")
            head.append(p.risk, style=f"bold {risk_color}")
        who = line()
        who.append("caller ", style="dim")
        who.append(p.client or p.grant)
        if p.session_id:
            who.append("  session ", style="dim")
            who.append(p.session_id[:12])
        why = line()
        why.append(p.reason or "the policy asks a person for this tool", style="italic")
        args = line()
        args.append("args ", style="dim")
        args.append(json.dumps(p.arguments, ensure_ascii=False, default=str))
        keys = line()
        keys.append(" a ", style="bold reverse")
        keys.append(" approve ")
        keys.append(" d ", style="bold reverse")
        keys.append(" deny ")
        keys.append(" A ", style="bold reverse")
        keys.append(" approve for session")
        if len(pending) > 1:
            keys.append("  ")
            keys.append(" ] ", style="bold reverse")
            keys.append(" next")
        for part in (head, who, why, args, keys):
            part.truncate(width, overflow="ellipsis")
        t = Text("\n").join([head, who, why, args, keys])
        t.no_wrap, t.overflow = True, "ellipsis"
        self.update(t)

    def step(self, pending: list[Any], delta: int) -> None:
        ids = [p.approval_id for p in pending]
        if not ids:
            return
        idx = ids.index(self.current_id) if self.current_id in ids else 0
        self.current_id = ids[(idx + delta) % len(ids)]
