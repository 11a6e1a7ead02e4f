"""Decide one `tools/call` against a policy: a pure function of call, policy, counters and time.

Order (design §3): hidden → tool changed (when `on_tool_change = "deny"`) →
deny (`action = "deny"`, or `default = "deny"` for an unlisted tool) →
`deny_if` / `require` → limit check → approval. The first rule that denies
names itself in the decision. Limits are only checked here; the gateway
consumes them (`Counters.try_consume(decision.limits, ...)`) when it forwards
the call, so a call that waits for approval is checked before and counted
when it goes.
"""

from __future__ import annotations

from typing import Any, Protocol

from mcpguard.call import Call
from mcpguard.policy.model import Decision, Limit, Policy, TraceStep


class _Counters(Protocol):  # mcpguard.ratelimit.Counters
    def check(self, limits: tuple[Limit, ...], call: Call, now: float) -> Any: ...


def _limit_text(tool: str, limit: Limit) -> str:
    if limit.path.startswith("all_tools"):
        return f"all tools together allow {limit.describe()} (counter {limit.counter})"
    return limit.describe()


_MAX_PLANS = 4096
_UNCHECKED = object()


class _Plan:
    """What never changes between calls of one tool under one policy: whether it is
    decided before its arguments are read, its conditions and limits, and the last
    decision that passed every condition and limit (all of whose parts are static),
    kept per (risk, counters given) so the common path builds nothing."""

    __slots__ = ("static", "deny_if", "require", "limits", "memo")

    def __init__(self, policy: Policy, tool: str):
        self.memo: dict[tuple[int, bool], tuple[Any, Decision]] = {}
        rule = policy.tools.get(tool)
        self.static = policy.is_hidden(tool) or (rule is None and policy.default != "allow") or (
            rule is not None and rule.action == "deny"
        )
        self.deny_if = rule.deny_if if rule is not None else ()
        self.require = rule.require if rule is not None else ()
        self.limits = policy.limits_for(tool)


def evaluate(
    call: Call,
    policy: Policy | None,
    counters: _Counters | None,
    now: float,
    *,
    risk: Any = None,
    tool_changed: bool = False,
) -> Decision:
    """The `Decision` for `call` under `policy`.

    - `counters`: the server's `mcpguard.ratelimit.Counters`; read only
      (`check`), never consumed. None skips the limit check (as `explain`
      does without live counters).
    - `now`: seconds on `time.monotonic()`, the counters' clock.
    - `risk`: the tool's `mcpguard.risk.Risk`, carried into the decision.
    - `tool_changed`: the tool's definition changed since first seen; with
      `on_tool_change = "deny"` the call is denied (`tool_changed`).

    `policy=None` (none loaded, or none ever loaded good) denies with
    `no_policy`. Never raises for any call; never awaits.

    Speed: per tool, what does not depend on the call is worked out once and
    kept with the policy, so an allowed call costs a dict lookup, its
    conditions, the counters' check and no allocation (bench/bench_policy.py).
    """
    if policy is None or tool_changed:
        return _decide(call, policy, counters, now, risk, tool_changed, _UNCHECKED)
    tool = call.tool
    plans = policy._plans
    plan = plans.get(tool)
    if plan is None:
        if len(plans) >= _MAX_PLANS:
            plans.clear()
        plan = plans[tool] = _Plan(policy, tool)
    if not plan.static:
        args = call.arguments
        for entry in plan.deny_if:
            if entry.matches(args):
                return _decide(call, policy, counters, now, risk, tool_changed, _UNCHECKED)
        for entry in plan.require:
            if not entry.matches(args):
                return _decide(call, policy, counters, now, risk, tool_changed, _UNCHECKED)
        if plan.limits and counters is not None:
            limited = counters.check(plan.limits, call, now)
            if limited is not None:
                return _decide(call, policy, counters, now, risk, tool_changed, limited)
    key = (id(risk), counters is None)
    hit = plan.memo.get(key)
    if hit is not None and hit[0] is risk:
        return hit[1]
    decision = _decide(call, policy, counters, now, risk, tool_changed, None)
    plan.memo[key] = (risk, decision)
    return decision


def _decide(
    call: Call,
    policy: Policy | None,
    counters: _Counters | None,
    now: float,
    risk: Any,
    tool_changed: bool,
    checked: Any,
) -> Decision:
    """The full evaluation with its trace. `checked` is what `counters.check` already
    returned for this call (None: admitted, or a `RateLimited`), or `_UNCHECKED`."""
    tool = call.tool
    if policy is None:
        step = TraceStep("no_policy", "deny", f"no policy is loaded for server {call.server}")
        return Decision(
            "deny",
            "no_policy",
            f"{tool} is denied: mcpguard has no valid policy for server {call.server}, so every call is denied.",
            "no_policy",
            risk=risk,
            trace=(step,),
        )
    trace: list[TraceStep] = []
    if policy.is_hidden(tool):
        why = f"{tool} is named in hide" if tool in policy.hide else f'hide = ["*"] and {tool} is not listed under tools'
        trace.append(TraceStep("hide", "deny", why))
        return Decision("deny", "hidden", f"Unknown tool: {tool}", "hide", risk=risk, trace=tuple(trace))
    trace.append(TraceStep("hide", "pass", f"{tool} is not hidden"))

    if tool_changed:
        if policy.on_tool_change == "deny":
            trace.append(TraceStep("on_tool_change", "deny", f"the definition of {tool} changed and on_tool_change = \"deny\""))
            return Decision(
                "deny",
                "tool_changed",
                f"{tool} is denied: its definition (description or input schema) changed since mcpguard first saw it; "
                "a person must review the change before it can be called.",
                "on_tool_change",
                risk=risk,
                trace=tuple(trace),
            )
        trace.append(TraceStep("on_tool_change", "warn", f'the definition of {tool} changed; on_tool_change = "warn" lets it through'))

    rule = policy.tools.get(tool)
    if rule is None:
        if policy.default != "allow":
            trace.append(TraceStep("default", "deny", f'{tool} is not listed under tools and default = "deny"'))
            return Decision(
                "deny",
                "policy_denied",
                f"{tool} is not allowed by this policy (it is not listed and the default is deny). "
                "Use another tool or ask the user to allow it.",
                "default",
                risk=risk,
                trace=tuple(trace),
            )
        deciding = "default"
        trace.append(TraceStep("default", "pass", f'{tool} is not listed under tools and default = "allow"'))
        action = "allow"
    else:
        base = f"tools.{tool}"
        action = rule.action or "allow"
        if action == "deny":
            trace.append(TraceStep(base + ".action", "deny", f'action = "deny"' + (f": {rule.reason}" if rule.reason else "")))
            reason = f" {rule.reason}" if rule.reason else ""
            return Decision(
                "deny",
                "policy_denied",
                f"{tool} is denied by policy.{reason}",
                base + ".action",
                risk=risk,
                trace=tuple(trace),
            )
        if rule.action is None:
            deciding = base
            trace.append(TraceStep(base, "pass", f"{tool} is listed, so it is allowed"))
        else:
            deciding = base + ".action"
            trace.append(TraceStep(base + ".action", "pass", f'action = "{action}"'))
        args = call.arguments
        for entry in rule.deny_if:
            if entry.matches(args):
                conds = " and ".join(c.describe() for c in entry.conditions)
                trace.append(TraceStep(entry.path, "deny", f"{conds}: holds"))
                text = entry.on_deny or f"a deny_if rule matched ({conds})"
                return _condition_denial(tool, text, entry.path, risk, trace)
            trace.append(TraceStep(entry.path, "pass", "does not hold: " + " and ".join(c.describe() for c in entry.conditions)))
        for entry in rule.require:
            if not entry.matches(args):
                failed = [c.describe() for c in entry.conditions if not c.test(args)]
                trace.append(TraceStep(entry.path, "deny", "not met: " + " and ".join(failed)))
                text = entry.on_deny or "it requires " + " and ".join(c.describe() for c in entry.conditions)
                return _condition_denial(tool, text, entry.path, risk, trace)
            trace.append(TraceStep(entry.path, "pass", "met: " + " and ".join(c.describe() for c in entry.conditions)))

    limits = policy.limits_for(tool)
    if limits:
        if counters is not None:
            limited = counters.check(limits, call, now) if checked is _UNCHECKED else checked
            if limited is not None:
                return rate_limited(tool, limited, risk, trace)
            for lim in limits:
                trace.append(TraceStep(lim.path, "pass", f"counter {lim.counter}: under {lim.describe()}"))
        else:
            for lim in limits:
                trace.append(TraceStep(lim.path, "pass", f"counter {lim.counter}: {lim.describe()} (counters not checked)"))

    if action == "require_approval":
        assert rule is not None
        timeout = rule.approval_timeout_s if rule.approval_timeout_s is not None else policy.approval_timeout_s
        trace.append(TraceStep(deciding, "approval", f"a person must approve within {timeout:g} s, else it is denied"))
        reason = f" {rule.reason}" if rule.reason else ""
        return Decision(
            "require_approval",
            "approval_required",
            f"{tool} needs a person's approval.{reason}",
            deciding,
            approval_timeout_s=timeout,
            limits=limits,
            risk=risk,
            trace=tuple(trace),
        )
    trace.append(TraceStep(deciding, "allow", f"{tool} is allowed"))
    return Decision("allow", "allowed", f"{tool} is allowed", deciding, limits=limits, risk=risk, trace=tuple(trace))


def rate_limited(tool: str, limited: Any, risk: Any = None, trace: list[TraceStep] | None = None) -> Decision:
    """The `rate_limited` decision for `tool` refused by `limited` (a `mcpguard.ratelimit.RateLimited`).

    The one place its message is written: `evaluate` returns it when a limit
    is full, and the gateway when a limit filled between the check and the
    admission (`Counters.try_consume` refused). `retry_after_s` is seconds.
    """
    lim: Limit = limited.limit
    retry = float(limited.retry_after_s)
    steps = list(trace or ())
    steps.append(TraceStep(lim.path, "deny",
                           f"counter {lim.counter} [{limited.scope_key}] at {limited.count}/{limited.max} per {lim.window}"))
    return Decision(
        "deny",
        "rate_limited",
        f"{tool} is rate-limited: {_limit_text(tool, lim)}; retry after {retry:.1f} s",
        lim.path,
        retry_after_s=retry,
        risk=risk,
        trace=tuple(steps),
    )


def _condition_denial(tool: str, text: str, path: str, risk: Any, trace: list[TraceStep]) -> Decision:
    """A `deny_if` that holds or a `require` that does not: `policy_denied` naming the entry."""
    return Decision("deny", "policy_denied", f"{tool} is denied by policy: {text}", path,
                    risk=risk, trace=tuple(trace))
