"""What the config and policy loaders share to validate their files with pydantic.

Both files are tables of known keys. Each table is a pydantic model (`Table`:
unknown keys are errors); each key's type says what it accepts (`Literal`
choices, strict scalars, `Duration`, `Text`, lists and tables of other
models), and a table whose keys depend on one another (`RuledTable`) adds
`rules` that run even when some of its keys failed, so one pass reports
every problem of a file at once.

pydantic's `ValidationError` then says where (`loc`, the path of keys and
list indices, as `mcpguard.policy.positions` records them) and what (the
error `type`). `explain` pairs each error with what the schema knows about
that place: the table the key belongs to (its known keys), the `Literal`
choices, and any `Says` written on the key, which words the problem in the
file's own terms; each loader turns those into its own messages and hints.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from types import NoneType, UnionType
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainValidator, StrictStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails, PydanticCustomError

from mcpguard.durations import parse_duration

Loc = tuple[str | int, ...]


def problem(kind: str, message: str = "", hint: str = "", **ctx: Any) -> PydanticCustomError:
    """An error of type `kind` for a validator to raise: `message` and `hint` ride in its context.

    (They are not pydantic's message template, so braces in them are kept as written.)
    """
    return PydanticCustomError(kind, "{message}", {**ctx, "hint": hint, "message": message})


def found(loc: Loc, kind: str, message: str = "", hint: str = "", input: Any = None) -> InitErrorDetails:
    """An error a table's `rules` report at `loc` (relative to the table; `()` is the table itself)."""
    return InitErrorDetails(type=problem(kind, message, hint), loc=loc, input=input)


@dataclass(frozen=True, slots=True)
class Says:
    """How a loader words a problem at one key or list item (pydantic ignores it; `explain` reads it).

    `message` and `hint` are `str.format` templates (so literal braces are
    doubled) with `path` (the dotted path), `key` (the last key name),
    `input` (the value found), `kind` (`a string`, `a list`, ...) and
    `shown` (a string in double quotes, anything else as its repr); a hint
    may also be a function of the value found. None keeps the loader's
    usual wording. `when` names the pydantic error types it words (empty:
    every type).
    """

    message: str | None = None
    hint: str | Callable[[Any], str] | None = None
    when: tuple[str, ...] = ()


# -- types both files use ---------------------------------------------------------------------


def _duration(value: Any) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise problem("duration", detail=str(exc)) from None
    if seconds <= 0:
        raise problem("duration_not_positive")
    return seconds


Duration = Annotated[float, PlainValidator(_duration)]
"""Seconds, more than 0: a number of seconds or `"250ms"`, `"30s"`, `"2m"`, `"1h"`, `"1d"`
(`mcpguard.durations.parse_duration`). Errors: `duration` (ctx `detail`), `duration_not_positive`."""


def _not_blank(value: str) -> str:
    if not value.strip():
        raise problem("blank")
    return value


Text = Annotated[StrictStr, AfterValidator(_not_blank)]
"""A string with something in it besides spaces. Errors: `string_type`, `blank`."""


def kind_of(value: Any) -> str:
    """`a boolean`, `a number`, `a string`, `a list`, `a table`, else the type's name: for messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "a table"
    return type(value).__name__


def did_you_mean(value: Any, allowed: Iterable[str]) -> str:
    """`did you mean "minute"?` when `value` is a string close to one of `allowed`, else ''."""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, list(allowed), n=1, cutoff=0.7)
        if close:
            return f'did you mean "{close[0]}"?'
    return ""


# -- tables -------------------------------------------------------------------------------------


class Table(BaseModel):
    """A table of a config or policy file: known keys only, immutable once validated.

    `table_hint` (a `Says` template) says what the table looks like, for a
    value found where it should be. A field's alias, when it has one, is its
    key in the file (`call_timeout` for `call_timeout_s`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    table_hint: ClassVar[str] = ""


class Seen:
    """What a table's `rules` read: the `data` as written, and where its keys failed.

    `model` is the validated table, or None when any key failed.
    """

    __slots__ = ("data", "model", "_bad")

    def __init__(self, data: Mapping[str, Any], model: BaseModel | None, errors: list[Any]) -> None:
        self.data = data
        self.model = model
        self._bad = [tuple(e["loc"]) for e in errors]

    def bad(self, *loc: str | int) -> bool:
        """Whether an error was found at `loc` or under it."""
        if not self._bad:
            return False
        n = len(loc)
        return any(b[:n] == loc for b in self._bad)

    def ok(self, key: str) -> Any:
        """The value written for `key` when it is there and valid, else None."""
        value = self.data.get(key)
        return None if value is None or self.bad(key) else value


class RuledTable(Table):
    """A table with rules across its keys (`rules`), reported together with its keys' own errors."""

    @classmethod
    def rules(cls, seen: Seen, context: Mapping[str, Any]) -> Iterator[InitErrorDetails]:
        """The table's problems across keys (`found(...)`); `context` is the validation context."""
        return iter(())

    @model_validator(mode="wrap")
    @classmethod
    def _with_rules(cls, data: Any, handler: Any, info: Any) -> Any:
        try:
            model, errors, failure = handler(data), [], None
        except ValidationError as exc:
            if not isinstance(data, Mapping):
                raise
            model, errors, failure = None, exc.errors(), exc
        more = list(cls.rules(Seen(data, model, errors), info.context or {}))
        if not more:
            if failure is not None:
                raise failure
            return model
        # the keys' errors again, as they were (type, context, message), for one ValidationError with both
        again = [InitErrorDetails(type=PydanticCustomError(e["type"], "{_msg}", {**e.get("ctx", {}), "_msg": e["msg"]}),
                                  loc=e["loc"], input=e.get("input")) for e in errors]
        raise ValidationError.from_exception_data(cls.__name__, again + more)


# -- errors, explained --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Explained:
    """One pydantic error and what the schema knows about where it is.

    `loc`, `type`, `input`, `ctx`, `msg` as pydantic gives them (`ctx` may
    carry `message` and `hint` from `problem`); `table`: the model whose key the
    error is at or under the last (for `missing` and `extra_forbidden`: the
    table the key is missing from or unknown in); `at`: the type at `loc`
    (a model class for a table, a `Literal` for choices; None past the
    schema); `says`: the `Says` that words this error type here, or None
    (always None for an error `problem` gave a message).
    """

    loc: Loc
    type: str
    input: Any
    ctx: Mapping[str, Any]
    msg: str
    table: type[BaseModel] | None
    at: Any
    says: Says | None

    @property
    def key(self) -> str:
        """The last key name of `loc` (`window` for `tools.t.limits[0].window`, `t` for `tools.t`)."""
        for part in reversed(self.loc):
            if isinstance(part, str) and part != "[key]":
                return part
        return ""

    @property
    def choices(self) -> tuple[Any, ...]:
        """The allowed values when the type here is a `Literal`, else ()."""
        return get_args(self.at) if get_origin(self.at) is Literal else ()

    def known_keys(self) -> tuple[str, ...]:
        """The keys `table` knows, as written in files, in declaration order."""
        return tuple(keys_of(self.table)) if self.table is not None else ()

    def word(self, template: str | Callable[[Any], str], path: str) -> str:
        """`template` (a `Says` template or function) filled in for this error."""
        if callable(template):
            return template(self.input)
        shown = f'"{self.input}"' if isinstance(self.input, str) else repr(self.input)
        return template.format(path=path, key=self.key, input=self.input, kind=kind_of(self.input), shown=shown)


@cache
def keys_of(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """File key -> `FieldInfo` of `model`'s fields, in declaration order (a field's alias is its key)."""
    return {(f.alias or name): f for name, f in model.model_fields.items()}


def field_metadata(info: FieldInfo) -> list[Any]:
    """Every metadata object of a field, also those inside `X | None` (which pydantic leaves in the annotation)."""
    meta = list(info.metadata)
    _unwrap(info.annotation, meta)
    return meta


def _unwrap(tp: Any, meta: list[Any]) -> Any:
    """`tp` without `Annotated` (its metadata go to `meta`) and without `| None`."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            args = get_args(tp)
            meta.extend(args[1:])
            tp = args[0]
        elif origin in (Union, UnionType):
            rest = [a for a in get_args(tp) if a is not NoneType]
            if len(rest) != 1:
                return tp
            tp = rest[0]
        else:
            return tp


def _place(root: type[BaseModel], loc: Loc) -> tuple[type[BaseModel] | None, Any, list[Any]]:
    """(the model whose key `loc` names last, the type at `loc`, its metadata).

    For a key a model does not know, the type is None and the model is the
    one it is unknown in. `(..., name, "[key]")` is a dict's key `name` itself.
    """
    table: type[BaseModel] | None = None
    meta: list[Any] = []
    tp = _unwrap(root, meta)
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        meta = []
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = keys_of(tp).get(part) if isinstance(part, str) else None
            if field is None:
                return tp, None, []
            table = tp
            meta = list(field.metadata)
            tp = field.annotation
        elif get_origin(tp) in (dict, Mapping):
            if parts[:1] == ["[key]"]:
                parts.pop(0)
                tp = get_args(tp)[0]
            else:
                tp = get_args(tp)[1]
        elif get_origin(tp) in (list, tuple) and isinstance(part, int):
            tp = get_args(tp)[0]
        else:
            return table, None, []
        tp = _unwrap(tp, meta)
    return table, tp, meta


def explain(root: type[BaseModel], exc: ValidationError) -> list[Explained]:
    """Each error of `exc` (raised validating `root`) with what the schema knows of its place, in pydantic's order."""
    out = []
    for e in exc.errors(include_url=False):
        loc = tuple(e["loc"])
        kind = e["type"]
        table, at, meta = _place(root, loc)
        ctx = e.get("ctx") or {}
        # an error worded where it was found (`problem` with a message) keeps its words
        says = None if ctx.get("message") else next(
            (m for m in meta if isinstance(m, Says) and (not m.when or kind in m.when)), None)
        out.append(Explained(loc, kind, e.get("input"), ctx, e["msg"], table, at, says))
    return out
