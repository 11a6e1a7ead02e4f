"""Decide one `tools/call` against a policy: a pure function of call, policy, counters and time.

Order (design §3): hidden → tool changed (when `on_tool_change = "deny"`) →
deny (`action = "deny"`, or `default = "deny"` for an unlisted tool) →
`deny_if` / `require` → limit check → approval. The first rule that denies
names itself in the decision. Limits are only checked here; the gateway
consumes them (`Counters.try_consume(decision.limits, ...)`) when it forwards
the call, so a call that waits for approval is checked before and counted
when it goes.

Shadow rules (`mode = "shadow"`, `shadow = true`; mcpguard's extension) are
walked in the same order and decide as usual, but never deny: the first one
that would have refused the call (or sent it for approval) is reported in
`Decision.shadow` (`decision.would`, `.would_rule`, ...), and later shadow
rules are not looked at, since the call
would not have got past that one. Enforcing rules after it still decide.
Shadow limits are checked in their own counters (`shadow_counters`) and listed
in `Decision.shadow_limits` for the gateway to consume there.
"""

from __future__ import annotations

from typing import Any, Protocol

from mcpguard.call import Call
from mcpguard.policy.model import Decision, Limit, Policy, ShadowOutcome, TraceStep


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
    kept per (risk, counters given) so the common path builds nothing. A denial by
    a `deny_if` or `require` entry depends only on the entry (and, for `require`,
    on which of its conditions failed), so it is kept too (`denials`). A tool with
    any shadow rule (`shadow`) always takes the full walk."""

    __slots__ = ("static", "deny_if", "require", "limits", "memo", "denials", "shadow")

    def __init__(self, policy: Policy, tool: str):
        self.memo: dict[tuple[int, bool], tuple[Any, Decision]] = {}
        self.denials: dict[tuple[Any, ...], tuple[Any, Decision]] = {}
        rule = policy.tools.get(tool)
        self.shadow = policy.has_shadow and (
            policy.shadow
            or bool(policy.shadow_limits_for(tool))
            or (rule is not None and (rule.mode == "shadow" or any(e.mode == "shadow" for e in rule.deny_if + rule.require)))
        )
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
    shadow_counters: _Counters | None = None,
) -> Decision:
    """The `Decision` for `call` under `policy`.

    - `counters`: the server's `mcpguard.ratelimit.Counters`; read only
      (`check`), never consumed. None skips the limit check (as `explain`
      does without live counters).
    - `shadow_counters`: the server's second `Counters`, for shadow limits
      only; read only. None skips the shadow limits' check (they are still
      listed in `Decision.shadow_limits`).
    - `now`: seconds on `time.monotonic()`, the counters' clock.
    - `risk`: the tool's `mcpguard.risk.Risk`, carried into the decision.
    - `tool_changed`: the tool's definition changed since first seen; with
      `on_tool_change = "deny"` the call is denied (`tool_changed`).

    `policy=None` (none loaded, or none ever loaded good) denies with
    `no_policy`. Never raises for any call; never awaits. Shadow rules never
    change `action`; what they would have done is in `Decision.would*`.

    Speed: per tool, what does not depend on the call is worked out once and
    kept with the policy, so an allowed call costs a dict lookup, its
    conditions, the counters' check and no allocation (bench/bench_policy.py).
    """
    if policy is None or tool_changed:
        return _decide(call, policy, counters, now, risk, tool_changed, _UNCHECKED, shadow_counters)
    tool = call.tool
    plans = policy._plans
    plan = plans.get(tool)
    if plan is None:
        if len(plans) >= _MAX_PLANS:
            plans.clear()
        plan = plans[tool] = _Plan(policy, tool)
    if plan.shadow:
        return _decide(call, policy, counters, now, risk, tool_changed, _UNCHECKED, shadow_counters)
    if not plan.static:
        args = call.arguments
        for entry in plan.deny_if:
            if entry.matches(args):
                return _condition_denied(plan, (entry.path, id(risk)), call, policy, risk)
        for entry in plan.require:
            if not entry.matches(args):
                failed = tuple([c.test(args) for c in entry.conditions])
                return _condition_denied(plan, (entry.path, id(risk), failed), call, policy, risk)
        if plan.limits and counters is not None:
            limited = counters.check(plan.limits, call, now)
            if limited is not None:
                return _decide(call, policy, counters, now, risk, tool_changed, limited, None)
    key = (id(risk), counters is None)
    hit = plan.memo.get(key)
    if hit is not None and hit[0] is risk:
        return hit[1]
    decision = _decide(call, policy, counters, now, risk, tool_changed, None, None)
    plan.memo[key] = (risk, decision)
    return decision


_MAX_DENIALS = 64


def _condition_denied(plan: _Plan, key: tuple[Any, ...], call: Call, policy: Policy, risk: Any) -> Decision:
    """The denial by a `deny_if`/`require` entry, built once per `key` (entry, risk, failed conditions)."""
    hit = plan.denials.get(key)
    if hit is not None and hit[0] is risk:
        return hit[1]
    decision = _decide(call, policy, None, 0.0, risk, False, _UNCHECKED, None)
    if len(plan.denials) >= _MAX_DENIALS:
        plan.denials.clear()
    plan.denials[key] = (risk, decision)
    return decision


def _decide(
    call: Call,
    policy: Policy | None,
    counters: _Counters | None,
    now: float,
    risk: Any,
    tool_changed: bool,
    checked: Any,
    shadow_counters: _Counters | None = None,
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
    would: ShadowOutcome | None = None  # set by the first shadow rule that refuses; later shadow rules are skipped
    shadow_all = policy.shadow
    if policy.hides(tool):
        why = f"{tool} is named in hide" if tool in policy.hide else f'hide = ["*"] and {tool} is not listed under tools'
        if not shadow_all:
            trace.append(TraceStep("hide", "deny", why))
            return Decision("deny", "hidden", f"Unknown tool: {tool}", "hide", risk=risk, trace=tuple(trace))
        trace.append(TraceStep("hide", "would_deny", why, True))
        would = ShadowOutcome("would_deny", "hidden", "hide", f"Unknown tool: {tool}")
    else:
        trace.append(TraceStep("hide", "pass", f"{tool} is not hidden", shadow_all))

    if tool_changed:
        if policy.on_tool_change == "deny":
            why = f"the definition of {tool} changed and on_tool_change = \"deny\""
            text = (f"{tool} is denied: its definition (description or input schema) changed since mcpguard first saw it; "
                    "a person must review the change before it can be called.")
            if not shadow_all:
                trace.append(TraceStep("on_tool_change", "deny", why))
                return Decision("deny", "tool_changed", text, "on_tool_change", risk=risk, trace=tuple(trace))
            if would is None:
                trace.append(TraceStep("on_tool_change", "would_deny", why, True))
                would = ShadowOutcome("would_deny", "tool_changed", "on_tool_change", text)
        else:
            trace.append(TraceStep("on_tool_change", "warn", f'the definition of {tool} changed; on_tool_change = "warn" lets it through'))

    rule = policy.tools.get(tool)
    shadow_approval = False  # a shadow rule's action = "require_approval"
    if rule is None:
        if policy.default != "allow":
            why = f'{tool} is not listed under tools and default = "deny"'
            text = (f"{tool} is not allowed by this policy (it is not listed and the default is deny). "
                    "Use another tool or ask the user to allow it.")
            if not shadow_all:
                trace.append(TraceStep("default", "deny", why))
                return Decision("deny", "policy_denied", text, "default", risk=risk, trace=tuple(trace))
            if would is None:
                trace.append(TraceStep("default", "would_deny", why, True))
                would = ShadowOutcome("would_deny", "policy_denied", "default", text)
            deciding = "shadow"
        else:
            deciding = "shadow" if shadow_all else "default"
            trace.append(TraceStep("default", "pass", f'{tool} is not listed under tools and default = "allow"', shadow_all))
        action = "allow"
    else:
        base = f"tools.{tool}"
        rule_shadow = rule.mode == "shadow"
        written = rule.action or "allow"
        if written == "deny":
            why = 'action = "deny"' + (f": {rule.reason}" if rule.reason else "")
            reason = f" {rule.reason}" if rule.reason else ""
            if not rule_shadow:
                trace.append(TraceStep(base + ".action", "deny", why))
                return Decision(
                    "deny",
                    "policy_denied",
                    f"{tool} is denied by policy.{reason}",
                    base + ".action",
                    risk=risk,
                    trace=tuple(trace),
                )
            if would is None:
                trace.append(TraceStep(base + ".action", "would_deny", why, True))
                would = ShadowOutcome("would_deny", "policy_denied", base + ".action", f"{tool} is denied by policy.{reason}")
        elif rule.action is None:
            trace.append(TraceStep(base, "pass", f"{tool} is listed, so it is allowed", rule_shadow))
        else:
            trace.append(TraceStep(base + ".action", "pass", f'action = "{written}"', rule_shadow))
        if rule_shadow:
            deciding = "shadow" if shadow_all else base + ".mode"
            action = "allow"
            shadow_approval = written == "require_approval"
        else:
            deciding = base if rule.action is None else base + ".action"
            action = written
        args = call.arguments
        for entry in rule.deny_if:
            entry_shadow = entry.mode == "shadow"
            if entry_shadow and would is not None:
                continue
            if entry.matches(args):
                conds = " and ".join(c.describe() for c in entry.conditions)
                text = entry.on_deny or f"a deny_if rule matched ({conds})"
                if not entry_shadow:
                    trace.append(TraceStep(entry.path, "deny", f"{conds}: holds"))
                    return _condition_denial(tool, text, entry.path, risk, trace)
                trace.append(TraceStep(entry.path, "would_deny", f"{conds}: holds", True))
                would = ShadowOutcome("would_deny", "policy_denied", entry.path, f"{tool} is denied by policy: {text}")
                continue
            trace.append(TraceStep(entry.path, "pass",
                                   "does not hold: " + " and ".join(c.describe() for c in entry.conditions),
                                   entry_shadow))
        for entry in rule.require:
            entry_shadow = entry.mode == "shadow"
            if entry_shadow and would is not None:
                continue
            if not entry.matches(args):
                failed = [c.describe() for c in entry.conditions if not c.test(args)]
                text = entry.on_deny or "it requires " + " and ".join(c.describe() for c in entry.conditions)
                if not entry_shadow:
                    trace.append(TraceStep(entry.path, "deny", "not met: " + " and ".join(failed)))
                    return _condition_denial(tool, text, entry.path, risk, trace)
                trace.append(TraceStep(entry.path, "would_deny", "not met: " + " and ".join(failed), True))
                would = ShadowOutcome("would_deny", "policy_denied", entry.path, f"{tool} is denied by policy: {text}")
                continue
            trace.append(TraceStep(entry.path, "pass", "met: " + " and ".join(c.describe() for c in entry.conditions),
                                   entry_shadow))

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
    shadow_limits = policy.shadow_limits_for(tool) if policy.has_shadow else ()
    if shadow_limits and would is None:
        shadow_limited = shadow_counters.check(shadow_limits, call, now) if shadow_counters is not None else None
        if shadow_limited is not None:
            lim = shadow_limited.limit
            retry = float(shadow_limited.retry_after_s)
            trace.append(TraceStep(
                lim.path, "would_deny",
                f"shadow counter {lim.counter} [{shadow_limited.scope_key}] at {shadow_limited.count}/{shadow_limited.max} per {lim.window}",
                True))
            would = ShadowOutcome("would_rate_limit", "rate_limited", lim.path,
                           f"{tool} is rate-limited: {_limit_text(tool, lim)}; retry after {retry:.1f} s", retry)
        else:
            for lim in shadow_limits:
                detail = (f"shadow counter {lim.counter}: under {lim.describe()}" if shadow_counters is not None
                          else f"shadow counter {lim.counter}: {lim.describe()} (counters not checked)")
                trace.append(TraceStep(lim.path, "pass", detail, True))
    # a call a shadow rule would have refused never went, in the world the shadow
    # rules describe, so it counts in no shadow counter
    consume_shadow = shadow_limits if would is None else ()

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
            shadow_limits=consume_shadow,
            shadow=would,
        )
    if shadow_approval and would is None:
        assert rule is not None
        timeout = rule.approval_timeout_s if rule.approval_timeout_s is not None else policy.approval_timeout_s
        path = f"tools.{tool}.action"
        trace.append(TraceStep(path, "would_approval", f"a person would have to approve within {timeout:g} s", True))
        reason = f" {rule.reason}" if rule.reason else ""
        would = ShadowOutcome("would_require_approval", "approval_required", path, f"{tool} needs a person's approval.{reason}")
    if deciding == "shadow":
        trace.append(TraceStep("shadow", "allow", f"{tool} is allowed: the policy is in shadow mode (shadow = true)"))
    elif rule is not None and rule.mode == "shadow":
        trace.append(TraceStep(deciding, "allow", f'{tool} is allowed: its rule is in shadow mode (mode = "shadow")'))
    else:
        trace.append(TraceStep(deciding, "allow", f"{tool} is allowed"))
    return Decision("allow", "allowed", f"{tool} is allowed", deciding, limits=limits, risk=risk,
                    trace=tuple(trace), shadow_limits=consume_shadow, shadow=would)


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
