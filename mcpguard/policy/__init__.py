"""The policy engine: model, loading (TOML via tomlkit, PolicyLayer JSON v1), validation, evaluation.

A policy is one document per upstream server. Load it with
`load_policy(path)` or `parse_policy(text, fmt, path)` (both raise
`PolicyError` listing every issue as `file:line:col: message (hint)`), then
decide each `tools/call` with the pure `evaluate(call, policy, counters, now)`.
This package never imports textual or rich.
"""

from mcpguard.policy.evaluate import evaluate
from mcpguard.policy.loader import (
    decode_policy_text,
    dotted,
    load_policy,
    parse_policy,
    policy_format_of,
    read_policy_bytes,
    read_policy_text,
)
from mcpguard.policy.model import (
    ACTIONS,
    OPS,
    RISK_LEVELS,
    SCOPES,
    WINDOWS,
    Condition,
    ConditionEntry,
    Decision,
    Limit,
    Policy,
    PolicyError,
    PolicyIssue,
    PolicySource,
    ToolRule,
    TraceStep,
)

__all__ = [
    "ACTIONS",
    "OPS",
    "RISK_LEVELS",
    "SCOPES",
    "WINDOWS",
    "Condition",
    "ConditionEntry",
    "Decision",
    "Limit",
    "Policy",
    "PolicyError",
    "PolicyIssue",
    "PolicySource",
    "ToolRule",
    "TraceStep",
    "decode_policy_text",
    "dotted",
    "evaluate",
    "load_policy",
    "parse_policy",
    "policy_format_of",
    "read_policy_bytes",
    "read_policy_text",
]
