"""A policy file's tables as pydantic models: what each key may hold.

The loader (`mcpguard.policy.loader`) validates a parsed document with
`PolicyFile`, words pydantic's errors as `PolicyIssue`s placed by the
position scanner, and turns a valid document into the `Policy` model that
`evaluate` reads. The tables and their keys, in the order hints list them:

    PolicyFile      version, default, description, hide, all_tools, tools,
                    on_tool_change, approval_timeout, shadow
    AllToolsTable   limits
    ToolTable       action, reason, approval_timeout, risk, limits, deny_if, require, mode
    LimitTable      counter, window, max, scope, mode
    EntryTable      conditions, on_deny, mode           (a deny_if or require entry)
    ConditionTable  path, op, value

A key given JSON `null` is an error like any other wrong type (TOML has no
null). A key added to a table is one field here (its type, default, and a
`Says` when its problems need words of their own) plus its use in the
loader's `_policy`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, StrictBool, StrictInt, StrictStr
from pydantic_core import InitErrorDetails

from mcpguard.policy.conditions import split_path, validate_condition
from mcpguard.policy.model import (
    ACTIONS,
    DEFAULT_APPROVAL_TIMEOUT_S,
    DEFAULTS,
    MODES,
    ON_TOOL_CHANGE,
    OPS,
    RISK_LEVELS,
    SCOPES,
    WINDOWS,
    Limit,
)
from mcpguard.policy.positions import Path, dotted
from mcpguard.validation import Duration, RuledTable, Says, Seen, Table, Text, found, problem

Mode = Literal[MODES]
"""A rule's `mode`: `enforce` or `shadow`; a rule without one has the mode of the rule around it."""


def mode_in_force(written: str | None, inherited: str) -> str:
    """The mode of a rule that says `written` (None: nothing) inside one in `inherited` mode:
    shadow when either is (a shadow rule enforces none of its parts)."""
    if written is None:
        return inherited
    return "shadow" if "shadow" in (written, inherited) else "enforce"


def _args_path(path: str) -> str:
    try:
        split_path(path)
    except ValueError:
        hint = f'write "args.{path}"' if not path.startswith("args") else 'like "args.stage" or "args.tags.team"'
        raise problem("args_path", f'path "{path}" must point into the arguments: args.NAME', hint) from None
    return path


def _whole_number(value: Any) -> Any:
    # 30.0 is 30 calls (JSON writers emit it); 2.5 is left for the integer check to refuse
    return int(value) if type(value) is float and value.is_integer() else value


def _version_hint(value: Any) -> str:
    return 'write version = "1" (a string)' if value in (1, 1.0) else 'only "1" is recognised'


_CONDITIONS = 'conditions = [{{path = "args.x", op = "exists"}}]'


class ConditionTable(RuledTable):
    """`{path = "args.x", op = "eq", value = ...}`: one test of a call's arguments (see `Condition`)."""

    table_hint = 'a condition is {{path = "args.x", op = "eq", value = ...}}'

    path: Annotated[Text, AfterValidator(_args_path),
                    Says(hint='path = "args.NAME", the argument to test', when=("missing",))]
    op: Annotated[Literal[OPS], Says(hint="op is one of " + ", ".join(OPS), when=("missing",))]
    value: Any = None

    @classmethod
    def rules(cls, seen: Seen, context: Mapping[str, Any]) -> Iterator[InitErrorDetails]:
        """`value` fits `op`: its type, and a regex that compiles (`validate_condition`)."""
        op = seen.ok("op")
        if op is not None:
            has_value = "value" in seen.data
            bad = validate_condition(op, seen.data.get("value"), has_value)
            if bad is not None:
                yield found(("value",) if has_value else (), "value", bad[0], bad[1], input=seen.data.get("value"))


class EntryTable(Table):
    """A `deny_if` or `require` entry: every condition must hold for it to match (see `ConditionEntry`)."""

    table_hint = 'a {key} entry is {{conditions = [{{path = "args.x", op = "eq", value = 1}}], on_deny = "..."}}'

    conditions: Annotated[list[ConditionTable], Field(min_length=1),
                          Says("{path} must be a non-empty list", _CONDITIONS, when=("list_type", "too_short")),
                          Says(hint=_CONDITIONS, when=("missing",))]
    on_deny: Text = None
    mode: Mode = None


class LimitTable(Table):
    """`{counter, window, max, scope}`: a rate limit (see `Limit`)."""

    table_hint = 'a limit is {{counter = "name", window = "minute", max = 30, scope = "grant"}}'

    counter: Annotated[Text, Says(hint='name it: counter = "writes" (tools naming one counter share it)',
                                  when=("missing",))]
    window: Annotated[Literal[tuple(WINDOWS)], Says(hint='window = "minute" (second, minute, hour, day)',
                                                    when=("missing",))]
    max: Annotated[StrictInt, BeforeValidator(_whole_number), Field(ge=1),
                   Says("max must be at least 1, not {input!r}", 'to block the tool, use action = "deny"',
                        when=("greater_than_equal",)),
                   Says(hint="max = 30 (calls per window)", when=("missing",)),
                   Says("max must be a whole number of calls, not {input!r}", "max = 30 means 30 calls per window")]
    scope: Literal[SCOPES] = "grant"
    mode: Mode = None

    def to_limit(self, path: Path, mode: str) -> Limit:
        """The `Limit` this table describes, written at `path`, in `mode`."""
        return Limit(counter=self.counter, window=self.window, window_s=float(WINDOWS[self.window]), max=self.max,
                     scope=self.scope, path=dotted(path), mode=mode)


_IDENTITY = ("counter", "window", "max", "scope")

Limits = Annotated[list[LimitTable], Says("{path} must be a list of limits, not {kind}", "use [[{path}]] tables",
                                          when=("list_type",))]
Entries = Annotated[list[EntryTable], Says("{path} must be a list of entries, not {kind}",
                                           "use [[{path}]] tables with conditions = [...]", when=("list_type",))]


class ToolTable(Table):
    """`[tools.NAME]`: one tool's rules (see `ToolRule`); listed with no keys, the tool is allowed."""

    table_hint = "list a tool with an empty table to allow it: [tools.{key}]"

    action: Literal[ACTIONS] = None
    reason: Text = None
    approval_timeout: Duration = None
    risk: Literal[RISK_LEVELS] = None
    limits: Limits = ()
    deny_if: Entries = ()
    require: Entries = ()
    mode: Mode = None


class AllToolsTable(Table):
    """`[all_tools]`: limits every call counts against."""

    table_hint = "all_tools holds limits = [...]"

    limits: Limits = ()


ToolName = Annotated[StrictStr, Field(min_length=1),
                     Says("{path} must be a tool name, not {input!r}", 'a tool name, or "*" for every unlisted tool')]


class PolicyFile(RuledTable):
    """A whole policy document (PolicyLayer JSON v1, or the same in TOML; see `Policy`)."""

    table_hint = "a policy is a table of keys like version, default, tools"

    version: Annotated[Literal["1"], Says("version {input!r} is not supported", _version_hint, when=("literal_error",)),
                       Says(hint='add version = "1" (PolicyLayer JSON v1)', when=("missing",))]
    default: Annotated[Literal[DEFAULTS],
                       Says(hint='add default = "deny" (unlisted tools are denied) or "allow"', when=("missing",))]
    description: StrictStr = None
    hide: Annotated[list[ToolName], Says("hide must be a list of tool names, not {kind}", 'write hide = ["tool_name"]',
                                         when=("list_type",))] = ()
    all_tools: AllToolsTable = None
    tools: Annotated[dict[StrictStr, ToolTable],
                     Says("{path} must be a table, not {kind}", "tools maps tool names to their rules",
                          when=("dict_type",))] = {}
    on_tool_change: Literal[ON_TOOL_CHANGE] = "warn"
    approval_timeout: Duration = DEFAULT_APPROVAL_TIMEOUT_S
    shadow: Annotated[StrictBool, Says("shadow must be true or false, not {shown}",
                                       "shadow = true decides every call without enforcing (the call goes through)")] = False

    @classmethod
    def rules(cls, seen: Seen, context: Mapping[str, Any]) -> Iterator[InitErrorDetails]:
        """A counter's name is its identity: every limit naming it agrees on window, max, scope
        and mode, and no call counts twice against it."""
        base = "shadow" if seen.ok("shadow") is True else "enforce"
        counters: dict[str, Limit] = {}
        everyone: dict[str, Limit] = {}
        for path, tables, mode, of_a_tool in _limit_tables(seen, base):
            named: set[str] = set()
            for i, table in tables:
                lim = table.to_limit(path + (i,), mode_in_force(table.mode, mode))
                at = path + (i, "counter")
                if lim.counter in named:
                    yield found(at, "counter", f'counter "{lim.counter}" is named twice in {dotted(path)}',
                                "each call would count twice; keep one")
                    continue
                named.add(lim.counter)
                if of_a_tool and lim.counter in everyone:
                    yield found(at, "counter", f'counter "{lim.counter}" is already counted for every tool by '
                                f"{everyone[lim.counter].path}",
                                "each call would count twice; give this limit its own counter name")
                    continue
                first = counters.setdefault(lim.counter, lim)
                if first.mode != lim.mode:
                    enforced, shadowed = (first, lim) if lim.shadow else (lim, first)
                    yield found(at, "counter", f'counter "{lim.counter}" is enforced by {enforced.path} and shadowed '
                                f"by {shadowed.path}",
                                "shadow limits count in counters of their own, so that neither uses up the other's "
                                "budget: give the shadow limit its own counter name")
                    continue
                if (first.window, first.max, first.scope) != (lim.window, lim.max, lim.scope):
                    yield found(at, "counter", f'counter "{lim.counter}" is defined twice differently: {first.path} '
                                f"says {first.describe()}, {lim.path} says {lim.describe()}",
                                "a counter's name is its identity: give both the same window, max and scope, "
                                "or use another name")
                    continue
                if not of_a_tool:
                    everyone[lim.counter] = lim


def _limit_tables(seen: Seen, base: str) -> Iterator[tuple[Path, Iterable[tuple[int, LimitTable]], str, bool]]:
    """(path, (index, limit table) pairs, the mode around them, whether a tool's) for each list of limits.

    From the validated document when it is one; else from the data as written,
    where a limit takes part when what names and sizes its counter is valid (an
    unknown key or a bad mode of its own is its own problem; a bad mode counts as none).
    """
    doc = seen.model
    if isinstance(doc, PolicyFile):
        if doc.all_tools is not None:
            yield ("all_tools", "limits"), enumerate(doc.all_tools.limits), base, False
        for name, tool in doc.tools.items():
            if tool.limits:
                yield ("tools", name, "limits"), enumerate(tool.limits), mode_in_force(tool.mode, base), True
        return
    all_tools, tools = seen.data.get("all_tools"), seen.data.get("tools")
    if isinstance(all_tools, Mapping):
        yield ("all_tools", "limits"), _valid_limits(seen, ("all_tools", "limits"), all_tools.get("limits")), base, False
    for name, body in tools.items() if isinstance(tools, Mapping) else ():
        if isinstance(body, Mapping):
            path = ("tools", name, "limits")
            written = None if seen.bad("tools", name, "mode") else body.get("mode")
            yield path, _valid_limits(seen, path, body.get("limits")), mode_in_force(written, base), True


def _valid_limits(seen: Seen, path: Path, items: Any) -> Iterator[tuple[int, LimitTable]]:
    for i, item in enumerate(items if isinstance(items, list) else ()):
        if isinstance(item, Mapping) and not any(seen.bad(*path, i, key) for key in _IDENTITY):
            yield i, LimitTable.model_validate(
                {k: v for k, v in item.items() if k in _IDENTITY or k == "mode" and not seen.bad(*path, i, k)})
