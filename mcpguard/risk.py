"""Risk classes of tools: what a careful person would say a tool can do.

`classify(name, annotations, description, override)` returns a
`Risk(level, kind, source)`:

- `kind`: `read` (changes nothing), `write` (changes or adds state that can
  be set back), `destructive` (removes or overwrites state), `execute` (runs
  arbitrary commands or code).
- `level`: `low`, `medium`, `high`, `critical`, ordered (`Risk.rank`,
  `level_rank`).
- `source`: what decided the kind: `policy` (the policy's `risk = "high"`
  override), `annotations` (the tool's `ToolAnnotations`), `name` (the
  verb its name starts with), `default` (nothing told us anything).

The evidence, in the MCP spec's terms (MCP 2025-06-18 schema,
`ToolAnnotations`; the defaults are those documented in `mcp_types`):
`readOnlyHint` (default false), `destructiveHint` (default true, meaningful
only when not read-only), `idempotentHint` (default false), `openWorldHint`
(default true). The spec says these are hints that clients must not trust
from untrusted servers, so annotations may *raise* the risk a tool's name
suggests but never lower it: a tool called `delete_x` that claims
`readOnlyHint: true` is still destructive.

How the annotations are read:

1. No behavioural hint given (no `readOnlyHint`, `destructiveHint`,
   `idempotentHint`): the annotations say nothing; the name decides.
2. `readOnlyHint: true` → read.
3. Not read-only and `destructiveHint` given: true → destructive, false →
   write.
4. Not read-only, `destructiveHint` omitted, `idempotentHint: true` → write.
   The spec's default for an omitted `destructiveHint` is true, but a tool
   whose author took care to declare it idempotent (repeating it has no
   further effect) and did not declare it destructive is a setter: it
   overwrites one value the caller can set back. MLflow's server shows the
   pattern: its setters (`set_experiment_tag`) say `idempotentHint: true`
   and omit `destructiveHint`, while every tool that removes data says
   `destructiveHint: true` explicitly.
5. Not read-only, `destructiveHint` and `idempotentHint` omitted: the
   spec's default (may be destructive) stands unless the name settles it:
   `register_model` is a write, an unnamed verb is destructive.

Names: the first word of the name (split on `_`, `-`, `.` and camelCase):
`get list search query compare describe read fetch find count show view` →
read; `set update register copy create log add put patch upsert insert
rename write save upload edit modify assign attach tag label transition
promote archive restore` → write; `delete remove drop purge destroy erase
truncate wipe clear reset revoke unregister` → destructive;
`exec execute eval shell bash sh spawn`, and `run_command`, `run_shell`,
`run_script`, `run_code` → execute (`run` alone is a noun in MLflow: `get_run`).

Levels:

- read → low.
- write → medium; high when the name touches a lifecycle or a pointer that
  consumers follow (`transition promote stage alias`): moving a model to
  Production or the `champion` alias changes what serves traffic.
- destructive → critical, unless what it destroys can come back: high when
  the name marks a lifecycle change or a pointer (`transition promote stage
  alias tag label`: the data stays, the pointer can be set again; e.g.
  `delete_model_alias`, `transition_model_version_stage`), or when the
  description says it is recoverable (`delete_run`, `delete_experiment`:
  MLflow's soft delete, "recoverable via the MLflow API") and does not say
  irreversible. Without such evidence a destructive tool is assumed
  irreversible (`delete_model_version`, `delete_registered_model`).
- execute → critical.
- Nothing known (no hints, no known verb): the spec's defaults say the tool
  may be destructive; we say `Risk("high", "destructive", "default")` rather
  than critical, as nothing says it deletes anything.

A policy override (`risk = "high"` in the tool's rule) sets the level and
wins, with source `policy`; the kind is still classified.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

LEVELS = ("low", "medium", "high", "critical")
KINDS = ("read", "write", "destructive", "execute")
SOURCES = ("policy", "annotations", "name", "default")

_LEVEL_RANK = {level: i for i, level in enumerate(LEVELS)}
_KIND_RANK = {kind: i for i, kind in enumerate(KINDS)}

_READ = frozenset("get list search query compare describe read fetch find count show view".split())
_WRITE = frozenset(
    "set update register copy create log add put patch upsert insert rename write save upload "
    "edit modify assign attach tag label transition promote archive restore".split()
)
_DESTRUCTIVE = frozenset("delete remove drop purge destroy erase truncate wipe clear reset revoke unregister".split())
_EXECUTE = frozenset("exec execute eval shell bash sh spawn".split())
_RUN_OBJECTS = frozenset("command cmd shell script code".split())
_HIGH_WRITE = frozenset("transition promote stage alias aliases".split())
_POINTERS = _HIGH_WRITE | frozenset("tag tags label labels".split())

_IRREVERSIBLE = re.compile(
    r"irreversib|unrecoverable|not recoverable|permanent|can ?not be (undone|recovered|restored)",
    re.IGNORECASE,
)
_RECOVERABLE = re.compile(r"\brecoverable\b|\bcan be (restored|recovered|undone)\b|\brestorable\b|soft[- ]delete",
                          re.IGNORECASE)
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def level_rank(level: str) -> int:
    """0 for `low` … 3 for `critical`; raises ValueError for any other level."""
    try:
        return _LEVEL_RANK[level]
    except KeyError:
        raise ValueError(f"risk level {level!r} is not one of {', '.join(LEVELS)}") from None


@dataclass(frozen=True, slots=True)
class Risk:
    """A tool's risk: `level` in `LEVELS`, `kind` in `KINDS`, `source` in `SOURCES`.

    `reason` is a short human explanation (not part of equality).
    Raises ValueError for a value outside those sets.
    """

    level: str
    kind: str
    source: str
    reason: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        level_rank(self.level)
        if self.kind not in _KIND_RANK:
            raise ValueError(f"risk kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.source not in SOURCES:
            raise ValueError(f"risk source {self.source!r} is not one of {', '.join(SOURCES)}")

    @property
    def rank(self) -> int:
        """The level as a number: low 0, medium 1, high 2, critical 3."""
        return _LEVEL_RANK[self.level]


def name_words(name: str) -> list[str]:
    """Lower-case words of a tool name: `deleteModelVersion`, `delete-model_version` → delete, model, version."""
    return [w.lower() for w in _WORDS.findall(name)]


def _name_kind(words: list[str]) -> str | None:
    if not words:
        return None
    verb = words[0]
    if verb in _EXECUTE or (verb == "run" and len(words) > 1 and words[1] in _RUN_OBJECTS):
        return "execute"
    if verb in _DESTRUCTIVE:
        return "destructive"
    if verb in _WRITE:
        return "write"
    if verb in _READ:
        return "read"
    return None


def _hint(annotations: Any, camel: str, snake: str) -> bool | None:
    if annotations is None:
        return None
    if isinstance(annotations, Mapping):
        value = annotations.get(camel, annotations.get(snake))
    else:  # mcp_types.ToolAnnotations or any object with the snake_case fields
        value = getattr(annotations, snake, None)
    return value if isinstance(value, bool) else None


def _annotation_kind(annotations: Any, name_kind: str | None) -> tuple[str | None, str]:
    """(kind or None, why) from ToolAnnotations, rules 1-5 of the module docstring."""
    read_only = _hint(annotations, "readOnlyHint", "read_only_hint")
    destructive = _hint(annotations, "destructiveHint", "destructive_hint")
    idempotent = _hint(annotations, "idempotentHint", "idempotent_hint")
    if read_only is None and destructive is None and idempotent is None:
        return None, ""
    if read_only:
        return "read", "readOnlyHint"
    if destructive is True:
        return "destructive", "destructiveHint"
    if destructive is False:
        return "write", "destructiveHint: false"
    if idempotent:
        return "write", "idempotent setter (destructiveHint omitted)"
    # not read-only, destructiveHint omitted (spec default: true)
    if name_kind in ("write", "destructive", "execute"):
        return None, ""  # the name settles what the spec's default leaves open
    if name_kind == "read":
        return "write", "readOnlyHint: false"
    return "destructive", "destructiveHint omitted (spec default: true)"


def classify(
    name: str,
    annotations: Mapping[str, Any] | Any | None = None,
    description: str | None = None,
    override: str | Risk | None = None,
) -> Risk:
    """The `Risk` of tool `name` (rules in the module docstring).

    - `annotations`: the tool's `annotations` as in `tools/list` (a JSON
      object with `readOnlyHint` …) or an `mcp_types.ToolAnnotations`; None
      when absent. Hints that are not booleans are ignored.
    - `description`: the tool's description (only read for recoverability).
    - `override`: the policy's `risk` for this tool, a level string or a
      `Risk`; it wins, with source `policy`.

    Raises ValueError when `override` is not a known level.
    """
    words = name_words(name)
    name_kind = _name_kind(words)
    ann_kind, ann_why = _annotation_kind(annotations, name_kind)

    if ann_kind is not None and (name_kind is None or _KIND_RANK[ann_kind] >= _KIND_RANK[name_kind]):
        kind, source, why = ann_kind, "annotations", ann_why
    elif name_kind is not None:
        kind, source, why = name_kind, "name", f"name starts with {words[0]!r}"
    else:
        kind, source, why = "destructive", "default", "no hints and no known verb (spec defaults: may be destructive)"

    wordset = set(words)
    if source == "default":
        level = "high"
    elif kind == "read":
        level = "low"
    elif kind == "write":
        marker = wordset & _HIGH_WRITE
        level = "high" if marker else "medium"
        if marker:
            why += f"; changes a lifecycle or pointer ({sorted(marker)[0]})"
    elif kind == "destructive":
        marker = wordset & _POINTERS
        text = description or ""
        if marker:
            level = "high"
            why += f"; changes a lifecycle stage or pointer ({sorted(marker)[0]}), the data stays"
        elif _RECOVERABLE.search(text) and not _IRREVERSIBLE.search(text):
            level = "high"
            why += "; recoverable per its description"
        else:
            level = "critical"
            why += "; irreversible" if _IRREVERSIBLE.search(text) else "; nothing says it can be undone"
    else:  # execute
        level = "critical"

    if override is not None:
        if isinstance(override, Risk):
            return Risk(override.level, override.kind, "policy", reason="policy override")
        level_rank(override)
        return Risk(override, kind, "policy", reason=f"policy sets risk = {override!r} ({why})")
    return Risk(level, kind, source, reason=why)
