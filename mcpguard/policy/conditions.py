"""Compile `deny_if`/`require` conditions into fast tests of a call's arguments.

A condition is `{path = "args.stage", op = "eq", value = "Archived"}`; the
path walks the call's `arguments` (objects by key, arrays by index). Semantics
are in `Condition`'s docstring; everything that can be checked before a call
arrives (the op, the path, the value's type, the regex) is checked at load.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_MISSING = object()


def split_path(path: str) -> tuple[str, ...]:
    """`"args.tags.team"` -> `("tags", "team")`; raises ValueError if it does not start with `args.`."""
    parts = path.split(".")
    if len(parts) < 2 or parts[0] != "args" or any(p == "" for p in parts):
        raise ValueError(path)
    return tuple(parts[1:])


def _getter(parts: tuple[str, ...]) -> Callable[[dict[str, Any]], Any]:
    if len(parts) == 1:
        key = parts[0]

        def get1(args: dict[str, Any]) -> Any:
            return args.get(key, _MISSING) if type(args) is dict else _MISSING

        return get1

    def get(args: Any) -> Any:
        cur = args
        for p in parts:
            if isinstance(cur, dict):
                cur = cur.get(p, _MISSING)
            elif isinstance(cur, list) and p.isdigit() and int(p) < len(cur):
                cur = cur[int(p)]
            else:
                return _MISSING
            if cur is _MISSING:
                return _MISSING
        return cur

    return get


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _ordered(op: str, value: Any) -> Callable[[Any], bool]:
    cmp: Callable[[Any, Any], bool] = {
        "lt": lambda a, b: a < b,
        "lte": lambda a, b: a <= b,
        "gt": lambda a, b: a > b,
        "gte": lambda a, b: a >= b,
    }[op]
    if isinstance(value, str):
        return lambda a: isinstance(a, str) and cmp(a, value)

    def test(a: Any) -> bool:
        n = _num(a)
        return n is not None and cmp(n, value)

    return test


def compile_test(path: str, op: str, value: Any) -> Callable[[dict[str, Any]], bool]:
    """A function `arguments -> bool` for one condition. Assumes `op`, `path` and
    `value` were validated (`validate_condition`); raises re.error on a bad regex."""
    get = _getter(split_path(path))
    if op == "exists":
        want = True if value is None else bool(value)
        return lambda args: (get(args) is not _MISSING) is want

    if op == "eq":
        pred: Callable[[Any], bool] = lambda a: _same(a, value)
    elif op == "neq":
        pred = lambda a: not _same(a, value)
    elif op == "in":
        items = list(value)
        pred = lambda a: any(_same(a, v) for v in items)
    elif op == "not_in":
        items = list(value)
        pred = lambda a: not any(_same(a, v) for v in items)
    elif op in ("lt", "lte", "gt", "gte"):
        pred = _ordered(op, value)
    elif op == "regex":
        rx = re.compile(value)
        pred = lambda a: isinstance(a, str) and rx.search(a) is not None
    elif op == "contains":

        def pred(a: Any) -> bool:
            if isinstance(a, str):
                return isinstance(value, str) and value in a
            if isinstance(a, list):
                return any(_same(x, value) for x in a)
            if isinstance(a, dict):
                return isinstance(value, str) and value in a
            return False

    else:  # pragma: no cover - validated before
        raise ValueError(op)

    def test(args: dict[str, Any]) -> bool:
        a = get(args)
        return a is not _MISSING and pred(a)

    return test


def validate_condition(op: str, value: Any, has_value: bool) -> tuple[str, str] | None:
    """Why `value` does not fit `op`, as (message, hint), or None when it does."""
    if op == "exists":
        if has_value and not isinstance(value, bool):
            return (f"value of op \"exists\" must be true or false, not {value!r}", "omit value to test that the path is present")
        return None
    if not has_value:
        return (f'op "{op}" needs a value', 'add value = ... to the condition')
    if op in ("in", "not_in"):
        if not isinstance(value, list):
            return (f'value of op "{op}" must be a list, not {value!r}', f'write value = [{value!r}]'.replace("'", '"'))
        return None
    if op in ("lt", "lte", "gt", "gte"):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return (f'value of op "{op}" must be a number or a string, not {value!r}', "compare with a number like 10")
        return None
    if op == "regex":
        if not isinstance(value, str):
            return (f'value of op "regex" must be a string, not {value!r}', 'write a pattern like "^prod-"')
        try:
            re.compile(value)
        except re.error as exc:
            return (f"bad regex {value!r}: {exc}", "Python re syntax; escape backslashes in TOML basic strings or use 'single quotes'")
        return None
    return None
