"""The one place a `tools/call` is decided: evaluate → approval → evaluate again → consume → forward → outcome.

`CallPipeline.run(call, forward)` owns the whole outcome of one call on one
server and is the only code that turns a decision, an approval's resolution
or an upstream fault into the agent's answer. Every outcome is one
`mcpguard.codes.Code`, the same in the agent's result
(`_meta["mcpguard/decision"]`), the events (`CallDecided`, `CallCompleted`),
the audit log and the console.

1. `evaluate` (pure) against the server's policy, counters (checked, not
   consumed) and the tool's risk. A denial ends the call. Shadow rules
   (`mode = "shadow"`) decide too but never refuse: what they would have
   done goes into `CallDecided` (`would`, `would_code`, `would_rule`, ...),
   and their limits count in the server's own `shadow_counters`.
2. `require_approval`: held in `Approvals`, bound to the exact call by its
   digest (server, tool, arguments, policy version), until a person answers,
   the deadline passes (`approval_timeout`), or a policy edit decides it
   (`follow_policy`: `policy_changed`). While it waits, `on_wait` is called
   every `KEEPALIVE_S` seconds (the endpoint sends the agent progress, so a
   client's read timeout does not give up on it). A tool approved "for this
   session" goes on as `approved` by whoever approved it. With no console
   (`interactive=False`) and `headless_approvals = "deny"`, denied at once.
3. Approved: `evaluate` again, since the policy or the counters may have
   changed while it waited, and with the arguments the person approved when
   they edited them (an edit cannot approve what the policy denies).
4. The decision's limits are consumed atomically (`Counters.try_consume`);
   if another call took the last slot meanwhile, the call is `rate_limited`
   with the message `evaluate` writes.
5. `forward()` sends it upstream. `UpstreamUnavailable` (nothing was sent) is
   `upstream_unavailable`; the connection closing with the call in flight is
   `upstream_error`; no answer within the call timeout is `upstream_timeout`;
   an upstream JSON-RPC error is recorded and re-raised, so the agent gets it
   unchanged.

`forward` and the policy are the pipeline's only links to the rest of the
gateway, so it is tested without HTTP (`tests/test_pipeline.py`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

import dataclasses

from mcpguard.approvals import Approvals, Resolution, call_digest
from mcpguard.call import Call
from mcpguard.codes import Code
from mcpguard.events import CallCompleted, CallDecided, CallReceived, EventBus
from mcpguard.gateway.results import denial, unknown_tool
from mcpguard.gateway.server import ServerHandle
from mcpguard.gateway.upstream import UpstreamUnavailable
from mcpguard.policy import Decision, evaluate
from mcpguard.policy.evaluate import rate_limited

DEFAULT_APPROVAL_TIMEOUT_S = 120.0

Forward = Callable[[Call], Awaitable[dict[str, Any]]]
OnWait = Callable[[float], Awaitable[None]]
KEEPALIVE_S = 5.0
APPROVAL_META_KEY = "mcpguard/approval"

_RESOLUTION_CODES = {"timed_out": Code.APPROVAL_TIMEOUT, "policy_changed": Code.POLICY_CHANGED}


class CallPipeline:
    """Decides and forwards the `tools/call`s of one server.

    - `handle`: the server's `ServerHandle` (policy, counters, risk, changed tools).
    - `approvals`: the gateway's `Approvals` queue; `bus`: its `EventBus`.
    - `interactive`: whether a console can answer approvals now (a bool, or
      a function asked at each call); when not, `headless_approvals`
      (`"deny"` or `"wait"`) says what a call that needs one gets.
    """

    def __init__(self, handle: ServerHandle, approvals: Approvals, bus: EventBus, *,
                 interactive: bool | Callable[[], bool] = True, headless_approvals: str = "deny") -> None:
        self.handle = handle
        self.approvals = approvals
        self.bus = bus
        self.interactive = interactive
        self.headless_approvals = headless_approvals
        self._run = uuid.uuid4().hex[:6]
        self._ids = itertools.count(1)

    def new_call(self, tool: str, arguments: dict[str, Any], *, grant: str, session_id: str | None,
                 client: str | None) -> Call:
        """A `Call` on this server with a fresh `call_id` (unique across gateway runs)."""
        return Call(server=self.handle.name, tool=tool, arguments=arguments, grant=grant, session_id=session_id,
                    client=client, call_id=f"{self.handle.name}-{self._run}-{next(self._ids)}")

    # -- the pipeline ------------------------------------------------------------
    async def run(self, call: Call, forward: Forward, *, on_wait: OnWait | None = None) -> dict[str, Any]:
        """The agent's answer to `call`: mcpguard's own `CallToolResult` (a denial) or the upstream's result.

        `forward(call)` sends the call (its arguments may be a person's edit
        of the agent's) upstream; `on_wait(remaining_s)` is called while an
        approval is pending. Raises the upstream's `MCPError` (its JSON-RPC
        error) unchanged, and `CancelledError` when the agent cancelled (a
        pending approval is then withdrawn).
        """
        h = self.handle
        t0 = time.perf_counter()
        listened = _listened(self.bus)
        if listened:
            self.bus.publish(CallReceived(call_id=call.call_id, server=h.name, tool=call.tool,
                                          arguments=call.arguments, grant=call.grant, session_id=call.session_id,
                                          client=call.client))
        risk = h.risk(call.tool)
        decision = self._evaluate(call, risk)
        self._decided(call, decision)
        if decision.action == "deny":
            return self._refuse(call, Code(decision.code), decision.message, decision.rule, t0,
                                retry_after_s=decision.retry_after_s)
        outcome, approver, edited = Code.ALLOWED, None, False
        if decision.action == "require_approval":
            approver = self.approvals.session_approver(call.session_id, h.name, call.tool)
            if approver is None:
                answer = await self._approval(call, decision, risk, t0, on_wait)
                if isinstance(answer, dict):
                    return answer  # refused: already recorded
                approver = answer.by
                if answer.arguments is not None and answer.arguments != call.arguments:
                    call = dataclasses.replace(call, arguments=dict(answer.arguments))
                    edited = True
            decision = self._evaluate(call, h.risk(call.tool))
            if decision.action == "deny":
                self._decided(call, decision)
                return self._refuse(call, Code(decision.code), decision.message, decision.rule, t0,
                                    retry_after_s=decision.retry_after_s, approver=approver)
            outcome = Code.APPROVED
        if decision.limits:
            refused = h.counters.try_consume(decision.limits, call, time.monotonic())
            if refused is not None:
                late = rate_limited(call.tool, refused, risk)
                self._decided(call, late)
                return self._refuse(call, Code.RATE_LIMITED, late.message, late.rule, t0,
                                    retry_after_s=late.retry_after_s, approver=approver)
        if decision.shadow_limits:  # advisory: what the shadow limits would count; the call goes either way
            h.shadow_counters.try_consume(decision.shadow_limits, call, time.monotonic())
        result = await self.forward(call, forward, outcome=outcome, approver=approver, t0=t0, edited=edited)
        return _with_approval_meta(result, approver, edited=True) if edited else result

    async def forward(self, call: Call, forward: Forward, *, outcome: Code = Code.ALLOWED,
                      approver: str | None = None, t0: float | None = None, edited: bool = False) -> dict[str, Any]:
        """Step 5 alone: send a decided `call` upstream and record its outcome.

        The continuation of a call the policy already admitted (the agent's
        retry of an `InputRequiredResult`) comes here directly: it is the same
        call, decided and counted once.
        """
        t0 = time.perf_counter() if t0 is None else t0
        h = self.handle
        try:
            result = await forward(call)
        except UpstreamUnavailable as exc:
            return self._refuse(call, Code.UPSTREAM_UNAVAILABLE, f"nothing was sent: {exc.error.message}", None, t0,
                                approver=approver)
        except MCPError as exc:
            code = exc.error.code
            if code == CONNECTION_CLOSED:
                return self._refuse(call, Code.UPSTREAM_ERROR,
                                    f"upstream '{h.name}' went away while the call was in flight "
                                    f"({exc.error.message})", None, t0, approver=approver)
            if code == REQUEST_TIMEOUT:
                return self._refuse(call, Code.UPSTREAM_TIMEOUT,
                                    f"no answer within {h.call_timeout_s:g}s (call_timeout)", None, t0,
                                    approver=approver)
            self._completed(call, Code.UPSTREAM_ERROR, True, t0, None, approver,
                            error=f"JSON-RPC error {code}: {exc.error.message}")
            raise
        if result.get("resultType") != "input_required":
            self._completed(call, outcome, bool(result.get("isError")), t0, result, approver,
                            arguments=call.arguments if edited else None)
        return result

    def _evaluate(self, call: Call, risk: Any) -> Decision:
        h = self.handle
        return evaluate(call, h.policy, h.counters, time.monotonic(), risk=risk,
                        tool_changed=call.tool in h.changed_tools, shadow_counters=h.shadow_counters)

    async def _approval(self, call: Call, decision: Decision, risk: Any, t0: float,
                        on_wait: OnWait | None) -> Resolution | dict[str, Any]:
        """Hold `call` for a person. Returns the approving `Resolution`, or the refusal to answer with (recorded)."""
        interactive = self.interactive() if callable(self.interactive) else self.interactive
        if not interactive and self.headless_approvals != "wait":
            return self._refuse(call, Code.APPROVAL_DENIED,
                                "this call needs a person's approval and no console is attached "
                                "(headless_approvals = \"deny\")", decision.rule, t0)
        timeout_s = decision.approval_timeout_s or DEFAULT_APPROVAL_TIMEOUT_S
        version = self.handle.policy_version
        digest = call_digest(call.server, call.tool, call.arguments, version)
        waiting = asyncio.ensure_future(self.approvals.request(
            call, timeout_s=timeout_s, risk=getattr(risk, "level", None), reason=decision.message, digest=digest,
            rule=decision.rule, policy_version=version))
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                done, _ = await asyncio.wait({waiting}, timeout=KEEPALIVE_S)
                if done:
                    break
                if on_wait is not None:
                    try:
                        await on_wait(max(0.0, deadline - time.monotonic()))
                    except Exception:  # the agent's stream may be gone; its cancel reaches us anyway
                        pass
        except BaseException:
            waiting.cancel()
            raise
        resolution = waiting.result()
        if resolution.approved:
            return resolution
        code = _RESOLUTION_CODES.get(resolution.outcome, Code.APPROVAL_DENIED)
        message = resolution.reason or ("no answer in time" if code == Code.APPROVAL_TIMEOUT else "denied")
        return self._refuse(call, code, message, decision.rule, t0, approver=resolution.by)

    # -- policy changes -------------------------------------------------------------
    def follow_policy(self) -> None:
        """Re-decide this server's pending approvals under its policy now.

        A waiting call whose tool the policy now denies is answered
        `policy_changed`; one it now allows goes through; one that still
        needs approval keeps waiting.
        """
        h = self.handle
        now = time.monotonic()
        for pa in self.approvals.pending():
            if pa.call.server != h.name:
                continue
            d = evaluate(pa.call, h.policy, h.counters, now, risk=h.risk(pa.call.tool),
                         tool_changed=pa.call.tool in h.changed_tools, shadow_counters=h.shadow_counters)
            if d.action == "deny":
                self.approvals.resolve(pa.id, Resolution("policy_changed", approved=False, by="policy",
                                                         reason=f"the policy changed while the call waited: "
                                                                f"{d.message}"))
            elif d.action == "allow":
                self.approvals.resolve(pa.id, Resolution("policy_changed", approved=True, by="policy",
                                                         reason="the policy changed: the tool no longer "
                                                                "needs approval"))

    # -- outcomes -------------------------------------------------------------------
    def _decided(self, call: Call, decision: Decision) -> None:
        if not _listened(self.bus):
            return
        self.bus.publish(CallDecided(call_id=call.call_id, server=call.server, tool=call.tool,
                                     action=decision.action, code=decision.code, rule=decision.rule,
                                     message=decision.message, retry_after_s=decision.retry_after_s,
                                     risk=getattr(decision.risk, "level", None), **decision.shadow_fields()))

    def _refuse(self, call: Call, code: Code, message: str, rule: str | None, t0: float, *,
                retry_after_s: float | None = None, approver: str | None = None) -> dict[str, Any]:
        if code == Code.HIDDEN:
            result = unknown_tool(call.tool)
        else:
            result = denial(code, message, rule=rule, retry_after_s=retry_after_s, server=call.server,
                            tool=call.tool)
        self._completed(call, code, True, t0, result, approver)
        return result

    def _completed(self, call: Call, outcome: Code, is_error: bool, t0: float, result: dict[str, Any] | None,
                   approver: str | None, error: str | None = None, arguments: dict[str, Any] | None = None) -> None:
        if not _listened(self.bus):
            return  # no console, no audit, no subscriber: nothing to build or measure
        duration_ms = (time.perf_counter() - t0) * 1000.0
        size = 0
        if result is not None:
            try:
                size = len(json.dumps(result, separators=(",", ":"), ensure_ascii=False, default=str))
            except (TypeError, ValueError):
                size = 0
        self.bus.publish(CallCompleted(call_id=call.call_id, server=call.server, tool=call.tool, outcome=outcome,
                                       is_error=is_error, duration_ms=duration_ms, result_size=size, result=result,
                                       error=error, approver=approver, arguments=arguments))


def _with_approval_meta(result: dict[str, Any], approver: str | None, *, edited: bool) -> dict[str, Any]:
    """The upstream's result, telling the agent in `_meta["mcpguard/approval"]` that a person changed its arguments."""
    meta = result.get("_meta") if isinstance(result.get("_meta"), dict) else {}
    note = {"approver": approver, "arguments_changed": edited}
    return {**result, "_meta": {**meta, APPROVAL_META_KEY: note}}


def _listened(bus: EventBus) -> bool:
    """Whether `bus` has any subscriber or listener (the console, the audit log, a test).

    The per-call events (and the result's size, which needs its JSON) are
    built only then; with audit on there is always a listener.
    """
    return bus.listened
