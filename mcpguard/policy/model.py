"""The policy model: what a loaded, validated policy document is.

A policy is one document per upstream server, in PolicyLayer's JSON v1 shape
or the same document in TOML (design §3). Every object here is immutable and
compares by value, so the TOML and JSON forms of one policy load to equal
`Policy` objects (`source`, the file it came from, is left out of equality).

Units: every duration is seconds (`*_s`); a limit's `max` is calls per window.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

WINDOWS: dict[str, int] = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
"""Window name -> length in seconds."""

SCOPES: tuple[str, ...] = ("grant", "session", "client", "server", "global")
"""What a counter is kept per: the agent's grant (token), the MCP session id,
`clientInfo.name`, the upstream server, or one counter for everyone."""

ACTIONS: tuple[str, ...] = ("allow", "deny", "require_approval")
DEFAULTS: tuple[str, ...] = ("allow", "deny")
OPS: tuple[str, ...] = ("eq", "neq", "in", "not_in", "lt", "lte", "gt", "gte", "regex", "contains", "exists")
RISK_LEVELS: tuple[str, ...] = ("low", "medium", "high", "critical")
ON_TOOL_CHANGE: tuple[str, ...] = ("warn", "deny")
MODES: tuple[str, ...] = ("enforce", "shadow")
"""A rule's `mode` (mcpguard's extension): `enforce` (the default) or `shadow`,
which decides as usual but lets the call through, reporting what it would have done."""
WOULD: tuple[str, ...] = ("would_deny", "would_rate_limit", "would_require_approval")
"""What shadow rules would have done to a call they let through (`Decision.would`)."""
DEFAULT_APPROVAL_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class PolicyIssue:
    """One problem found in a policy file.

    `line` and `col` are 1-based positions in the file's text (the key or
    value at fault; 1:1 when the whole file is at fault); `hint` says how to
    fix it ('' when there is nothing more to say). `str(issue)` is
    `file:line:col: message (hint)`, the form editors and terminals link.
    """

    file: str
    line: int
    col: int
    message: str
    hint: str = ""

    def __str__(self) -> str:
        text = f"{self.file}:{self.line}:{self.col}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text


class PolicyError(ValueError):
    """A policy that cannot be loaded; `.issues` lists every error found, in file order."""

    def __init__(self, issues: list[PolicyIssue] | tuple[PolicyIssue, ...]):
        self.issues: tuple[PolicyIssue, ...] = tuple(issues)
        n = len(self.issues)
        head = f"{n} error{'s' if n != 1 else ''} in policy"
        super().__init__(head + ":\n" + "\n".join(str(i) for i in self.issues))


@dataclass(frozen=True, slots=True)
class Limit:
    """A rate limit: at most `max` admitted calls in any `window_s`-long interval (sliding).

    - `counter`: the counter's name, its identity: rules naming one counter share it.
    - `window`: `second`, `minute`, `hour` or `day`; `window_s` its length (1, 60, 3600, 86400 s).
    - `max`: calls per window, >= 1.
    - `scope`: `grant`, `session`, `client`, `server` or `global` (design §3).
    - `path`: where it is written, `tools.x.limits[0]` or `all_tools.limits[0]`.
    - `mode`: `enforce`, or `shadow` when the limit, its tool rule or the whole
      policy is in shadow mode (mcpguard's extension). A shadow limit is checked
      and counted in its own counters (`evaluate`'s `shadow_counters`) and
      never refuses a call.
    """

    counter: str
    window: str
    window_s: float
    max: int
    scope: str
    path: str
    mode: str = "enforce"

    @property
    def shadow(self) -> bool:
        """Whether this limit only reports (`mode = "shadow"`)."""
        return self.mode == "shadow"

    def describe(self) -> str:
        """`30 calls per minute per grant` (or `... for everyone` for the global scope)."""
        calls = "call" if self.max == 1 else "calls"
        who = "for everyone" if self.scope == "global" else f"per {self.scope}"
        return f"{self.max} {calls} per {self.window} {who}"


@dataclass(frozen=True, slots=True)
class Condition:
    """One test of a call's arguments: `path` (`args.stage`, `args.tags.team`), `op`, `value`.

    `op` is one of `eq neq in not_in lt lte gt gte regex contains exists`.
    A path that is absent from the arguments makes every op false except
    `exists` (which is true when `value` is true and the path is present, or
    `value` is false and it is absent). `lt lte gt gte` compare numbers (a
    numeric string argument, as MLflow's versions are, compares as its
    number) or two strings; other type mixes are false. `regex` searches a
    string argument (Python `re.search`). `contains` is substring for
    strings, membership for lists, key presence for objects.
    """

    path: str
    op: str
    value: Any
    test: Callable[[dict[str, Any]], bool] = field(compare=False, repr=False, default=None)  # type: ignore[assignment]

    def holds(self, arguments: dict[str, Any]) -> bool:
        """Whether the condition holds for a call's `arguments` (a JSON object)."""
        return self.test(arguments)

    def describe(self) -> str:
        """`args.stage eq "Archived"` (strings shown as written, without escapes)."""
        if self.op == "exists":
            return f"{self.path} exists" if self.value else f"{self.path} does not exist"
        shown = f'"{self.value}"' if isinstance(self.value, str) else json.dumps(self.value)
        return f"{self.path} {self.op} {shown}"


@dataclass(frozen=True, slots=True)
class ConditionEntry:
    """A `deny_if` or `require` entry: all `conditions` must hold for it to match.

    A `deny_if` entry denies when it matches; a `require` entry denies when it
    does not. `on_deny` is the text the agent reads then (None: a generated
    one). `path` is `tools.x.deny_if[0]` or `tools.x.require[1]`. `mode` is
    `enforce`, or `shadow` when the entry, its tool rule or the whole policy is
    in shadow mode: it is tested as usual but denies nothing.
    """

    conditions: tuple[Condition, ...]
    on_deny: str | None
    path: str
    mode: str = "enforce"

    def matches(self, arguments: dict[str, Any]) -> bool:
        """Whether every condition holds for `arguments`."""
        for c in self.conditions:
            if not c.test(arguments):
                return False
        return True


@dataclass(frozen=True, slots=True)
class ToolRule:
    """The rules of one tool listed under `tools`.

    - `action`: `allow`, `deny`, `require_approval`, or None when the tool is
      only listed (which allows it, as PolicyLayer does under `default = "deny"`).
    - `reason`: why (shown in denials and approval prompts), or None.
    - `approval_timeout_s`: seconds an approval may wait before the call is
      denied, or None to use the policy's `approval_timeout_s`.
    - `risk`: a risk level override (`low medium high critical`) or None.
    - `limits`, `deny_if`, `require`: tuples of `Limit` and `ConditionEntry`.
    - `mode`: `enforce`, or `shadow` when the rule (or the whole policy) is in
      shadow mode: its action, limits and entries decide as usual, but the call
      goes through (its limits and entries then carry `mode = "shadow"` too).
    """

    name: str
    action: str | None = None
    reason: str | None = None
    approval_timeout_s: float | None = None
    risk: str | None = None
    limits: tuple[Limit, ...] = ()
    deny_if: tuple[ConditionEntry, ...] = ()
    require: tuple[ConditionEntry, ...] = ()
    mode: str = "enforce"


@dataclass(frozen=True, slots=True)
class PolicySource:
    """Where a policy came from, kept for edits (issue 5) and messages.

    `fmt` is `toml` or `json`; `text` the file's text as read; `document` the
    parsed document: a `tomlkit.TOMLDocument` (comments and layout kept) for
    TOML, the plain JSON object for JSON.
    """

    path: str
    fmt: str
    text: str
    document: Any = field(repr=False)


@dataclass(frozen=True, slots=True)
class Policy:
    """A validated policy document (design §3).

    - `version`: `"1"`.
    - `default`: `allow` or `deny`, for tools not listed under `tools`.
    - `hide`: tool names removed from `tools/list` and answered as unknown
      tools; `"*"` hides every tool not listed under `tools`.
    - `all_tools_limits`: limits every call counts against.
    - `tools`: tool name -> `ToolRule`.
    - `on_tool_change`: `warn` or `deny` (deny calls to a tool whose
      definition changed since first seen).
    - `approval_timeout_s`: default seconds an approval waits (120).
    - `source`: the `PolicySource`, or None for a policy built in code.
    - `warnings`: issues that do not stop the policy loading (limits on a
      hidden tool, an `approval_timeout` on a tool that needs no approval).
    - `shadow`: `shadow = true` (mcpguard's extension): every rule, `hide` and
      `default` included, decides without enforcing; every call goes through.
      The rules' own `mode` fields are then all `shadow`.

    Enforcing and shadow limits are kept apart: `limits_for` and
    `counter_names` give the enforcing ones (for the server's `Counters`),
    `shadow_limits_for` and `shadow_counter_names` the shadow ones (for its
    shadow `Counters`); a counter's name belongs to one of the two.
    """

    version: str
    default: str
    hide: tuple[str, ...] = ()
    all_tools_limits: tuple[Limit, ...] = ()
    tools: dict[str, ToolRule] = field(default_factory=dict)
    on_tool_change: str = "warn"
    approval_timeout_s: float = DEFAULT_APPROVAL_TIMEOUT_S
    source: PolicySource | None = field(default=None, compare=False, repr=False)
    warnings: tuple[PolicyIssue, ...] = field(default=(), compare=False, repr=False)
    shadow: bool = False
    _hidden: frozenset[str] = field(init=False, compare=False, repr=False)
    _hide_all: bool = field(init=False, compare=False, repr=False)
    _limits: dict[str, tuple[Limit, ...]] = field(init=False, compare=False, repr=False)
    _shadow_limits: dict[str, tuple[Limit, ...]] = field(init=False, compare=False, repr=False)
    _all_enforced: tuple[Limit, ...] = field(init=False, compare=False, repr=False)
    _all_shadow: tuple[Limit, ...] = field(init=False, compare=False, repr=False)
    _has_shadow: bool = field(init=False, compare=False, repr=False)
    _plans: dict[str, Any] = field(init=False, compare=False, repr=False)  # evaluate's per-tool cache

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hidden", frozenset(h for h in self.hide if h != "*"))
        object.__setattr__(self, "_hide_all", "*" in self.hide)
        all_enf = tuple(lim for lim in self.all_tools_limits if not lim.shadow)
        all_sh = tuple(lim for lim in self.all_tools_limits if lim.shadow)
        object.__setattr__(self, "_all_enforced", all_enf)
        object.__setattr__(self, "_all_shadow", all_sh)
        object.__setattr__(self, "_limits", {
            name: tuple(lim for lim in rule.limits if not lim.shadow) + all_enf for name, rule in self.tools.items()})
        object.__setattr__(self, "_shadow_limits", {
            name: tuple(lim for lim in rule.limits if lim.shadow) + all_sh for name, rule in self.tools.items()})
        object.__setattr__(self, "_has_shadow", self.shadow or bool(all_sh) or any(
            rule.mode == "shadow" or any(lim.shadow for lim in rule.limits)
            or any(e.mode == "shadow" for e in rule.deny_if + rule.require)
            for rule in self.tools.values()))
        object.__setattr__(self, "_plans", {})

    def hides(self, tool: str) -> bool:
        """Whether `hide` names `tool` (or `hide = ["*"]` and it is unlisted), enforced or not."""
        return tool in self._hidden or (self._hide_all and tool not in self.tools)

    def is_hidden(self, tool: str) -> bool:
        """Whether `tool` is hidden from agents: `hides(tool)` and the policy is not in shadow
        mode (a shadow policy removes nothing from `tools/list`)."""
        return not self.shadow and (tool in self._hidden or (self._hide_all and tool not in self.tools))

    @property
    def has_shadow(self) -> bool:
        """Whether any rule of this policy is in shadow mode (else `evaluate` never sets `would`)."""
        return self._has_shadow

    def limits_for(self, tool: str) -> tuple[Limit, ...]:
        """The enforcing limits a call of `tool` counts against: the tool's own, then
        `all_tools.limits` (shadow limits are in `shadow_limits_for`)."""
        found = self._limits.get(tool)
        return self._all_enforced if found is None else found

    def shadow_limits_for(self, tool: str) -> tuple[Limit, ...]:
        """The shadow limits a call of `tool` counts against (the tool's own, then
        `all_tools.limits`), kept in the server's shadow counters."""
        found = self._shadow_limits.get(tool)
        return self._all_shadow if found is None else found

    def counter_names(self) -> frozenset[str]:
        """Names of every enforcing counter a rule of this policy names (for `Counters.retain`)."""
        return self._names(shadow=False)

    def shadow_counter_names(self) -> frozenset[str]:
        """Names of every shadow counter (for the shadow `Counters.retain`)."""
        return self._names(shadow=True)

    def _names(self, shadow: bool) -> frozenset[str]:
        names = {lim.counter for lim in self.all_tools_limits if lim.shadow is shadow}
        for rule in self.tools.values():
            names.update(lim.counter for lim in rule.limits if lim.shadow is shadow)
        return frozenset(names)

    def action_for(self, tool: str) -> str:
        """The action a call of `tool` gets before conditions and limits, as enforced:
        `hidden`, `allow`, `deny` or `require_approval` (for tables and the console tree).
        A rule in shadow mode enforces nothing, so its tool is `allow` here; see
        `shadow_action_for`."""
        if self.is_hidden(tool):
            return "hidden"
        rule = self.tools.get(tool)
        if rule is None:
            return "allow" if self.shadow else self.default
        if rule.mode == "shadow":
            return "allow"
        return rule.action or "allow"

    def shadow_action_for(self, tool: str) -> str | None:
        """What a shadow rule would make of `tool` before conditions and limits (`hidden`,
        `deny`, `require_approval`), or None when no shadow rule restricts its action."""
        if self.shadow and self.hides(tool):
            return "hidden"
        rule = self.tools.get(tool)
        if rule is None:
            return "deny" if self.shadow and self.default == "deny" else None
        if rule.mode == "shadow" and rule.action in ("deny", "require_approval"):
            return rule.action
        return None


class TraceStep(NamedTuple):
    """One rule looked at while deciding: `rule` (its path), `outcome`
    (`pass`, `deny`, `allow`, `approval`, `warn`; for a shadow rule `pass`,
    `would_deny` or `would_approval`), `detail` (a sentence), `shadow` (the
    rule is in shadow mode: it decided nothing for the call)."""

    rule: str
    outcome: str
    detail: str
    shadow: bool = False

    def __str__(self) -> str:
        mark = " (shadow)" if self.shadow else ""
        return f"{self.rule}{mark}: {self.outcome} — {self.detail}"


@dataclass(frozen=True, slots=True)
class ShadowOutcome:
    """What shadow rules would have done to a call they let through (`Decision.shadow`).

    - `would`: `would_deny`, `would_rate_limit` or `would_require_approval`.
    - `code`: the code the call would have got (`policy_denied`, `hidden`,
      `tool_changed`, `rate_limited`, `approval_required`).
    - `rule`: the shadow rule's path (`tools.x.deny_if[0]`, `tools.x.limits[1]`,
      `tools.x.action`, `default`, `hide`).
    - `message`: the text the agent would have read.
    - `retry_after_s`: seconds until the shadow limit frees a slot (`would_rate_limit`), else None.
    """

    would: str
    code: str
    rule: str
    message: str
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """What the policy says about one `tools/call` (design §3, §6).

    - `action`: `allow`, `deny` or `require_approval`.
    - `code`: `allowed`, `approval_required`, `policy_denied`, `rate_limited`,
      `hidden`, `no_policy` or `tool_changed` (stable, for `_meta` and audit).
    - `message`: the text the agent reads, written so it can act on it.
    - `rule`: the deciding rule's path (`tools.delete_run.deny_if[0]`,
      `tools.x.limits[0]`, `tools.x.action`, `tools.x`, `default`, `hide`,
      `on_tool_change`, `no_policy`; `tools.x.mode` or `shadow` when a rule in
      shadow mode let the call through).
    - `retry_after_s`: seconds until a slot frees, for `rate_limited`; else None.
    - `approval_timeout_s`: seconds an approval may wait, for `require_approval`.
    - `limits`: the enforcing limits to consume when the call is forwarded (empty on deny).
    - `risk`: the `mcpguard.risk.Risk` passed to `evaluate`, or None.
    - `trace`: every rule looked at, in order (`TraceStep`s), for `mcpguard explain`.
    - `shadow_limits`: the shadow limits to consume in the server's shadow
      `Counters` when the call is forwarded: those it counts against, unless a
      shadow rule would have refused it (in the world the shadow rules
      describe, that call never went). Empty on deny.
    - `shadow`: a `ShadowOutcome` when a shadow rule would have refused the call
      or asked for approval where the enforcing rules did not; else None
      (always None when `action` is `deny`). `would`, `would_code`,
      `would_rule`, `would_message` read it.
    """

    action: str
    code: str
    message: str
    rule: str
    retry_after_s: float | None = None
    approval_timeout_s: float | None = None
    limits: tuple[Limit, ...] = ()
    risk: Any = None
    trace: tuple[TraceStep, ...] = ()
    shadow_limits: tuple[Limit, ...] = ()
    shadow: ShadowOutcome | None = None

    @property
    def allowed(self) -> bool:
        return self.action == "allow"

    @property
    def would(self) -> str | None:
        """`would_deny`, `would_rate_limit`, `would_require_approval`, or None."""
        return None if self.shadow is None else self.shadow.would

    @property
    def would_code(self) -> str | None:
        """The code the shadow rules would have given (`policy_denied`, `rate_limited`, ...), or None."""
        return None if self.shadow is None else self.shadow.code

    @property
    def would_rule(self) -> str | None:
        """The path of the shadow rule that would have decided, or None."""
        return None if self.shadow is None else self.shadow.rule

    @property
    def would_message(self) -> str | None:
        """The text the agent would have read under the shadow rules, or None."""
        return None if self.shadow is None else self.shadow.message

    def meta(self) -> dict[str, Any]:
        """The `_meta["mcpguard/decision"]` object of a denied `CallToolResult`:
        `{"code", "rule", "message"}` plus `retry_after_s` when rate-limited."""
        out: dict[str, Any] = {"code": self.code, "rule": self.rule, "message": self.message}
        if self.retry_after_s is not None:
            out["retry_after_s"] = round(self.retry_after_s, 3)
        return out

    def shadow_fields(self) -> dict[str, Any]:
        """The shadow outcome for `CallDecided` and the audit's `decision` record:
        `{"would", "would_code", "would_rule", "would_message"}` (plus
        `would_retry_after_s` for `would_rate_limit`), or `{}` when `shadow` is None."""
        sh = self.shadow
        if sh is None:
            return {}
        out: dict[str, Any] = {"would": sh.would, "would_code": sh.code, "would_rule": sh.rule,
                               "would_message": sh.message}
        if sh.retry_after_s is not None:
            out["would_retry_after_s"] = round(sh.retry_after_s, 3)
        return out
