"""The one vocabulary of call outcomes: every decision, denial and completion code.

A `tools/call` ends in exactly one `Code`. The same value is the `code` in
`_meta["mcpguard/decision"]` of the agent's `CallToolResult`, the `decision`
of the audit record, the `code`/`outcome` of `CallDecided`/`CallCompleted`
events, and what the console shows and filters on. `Code` is a `StrEnum`, so
a code compares equal to its string (`Code.RATE_LIMITED == "rate_limited"`)
and JSON-encodes as one.

What the agent reads for a refusal — the hint after the message — is written
once, in `HINTS`. `Code.refused` says whether a code means the call did not
reach the upstream (or failed there): the console's `denied` count and its
`/denied` filter use it, so they always agree.
"""

from __future__ import annotations

from enum import StrEnum


class Code(StrEnum):
    """Every outcome a `tools/call` can have in mcpguard."""

    # the call went through
    ALLOWED = "allowed"
    APPROVED = "approved"
    # waiting for a person (a decision, never a final outcome)
    APPROVAL_REQUIRED = "approval_required"
    # the policy refused it before anyone was asked
    POLICY_DENIED = "policy_denied"
    RATE_LIMITED = "rate_limited"
    HIDDEN = "hidden"
    NO_POLICY = "no_policy"
    TOOL_CHANGED = "tool_changed"
    # a person (or the clock, or a policy edit) refused it while it waited
    APPROVAL_DENIED = "approval_denied"
    APPROVAL_TIMEOUT = "approval_timeout"
    POLICY_CHANGED = "policy_changed"
    # the upstream could not take it, or failed while it was in flight
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    UPSTREAM_ERROR = "upstream_error"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    # a request sent as a notification (no id, or an id JSON-RPC does not allow): never forwarded
    MALFORMED = "malformed"

    @property
    def refused(self) -> bool:
        """True when the call did not get the upstream's answer (every code but allowed/approved/pending)."""
        return self not in _THROUGH

    @property
    def upstream_fault(self) -> bool:
        """True for the codes that name a fault of the upstream rather than a decision."""
        return self in (Code.UPSTREAM_UNAVAILABLE, Code.UPSTREAM_ERROR, Code.UPSTREAM_TIMEOUT)


_THROUGH = frozenset({Code.ALLOWED, Code.APPROVED, Code.APPROVAL_REQUIRED})

#: What the agent is told to do after each refusal; `{retry}` is seconds (rate limits).
HINTS: dict[Code, str] = {
    Code.POLICY_DENIED: "The policy forbids this call; do not retry it unchanged.",
    Code.NO_POLICY: "No valid policy is loaded for this server, so every call is denied.",
    Code.RATE_LIMITED: "Retry after {retry:g} seconds.",
    Code.APPROVAL_DENIED: "A person denied this call.",
    Code.APPROVAL_TIMEOUT: "No one approved this call in time; ask the user before retrying.",
    Code.POLICY_CHANGED: "The policy changed while the call waited for approval; do not retry it unchanged.",
    Code.TOOL_CHANGED: "The tool's definition changed since mcpguard first saw it; a person must review it.",
    Code.UPSTREAM_UNAVAILABLE: "The MCP server is not running; nothing was sent. Retry once it is back.",
    Code.UPSTREAM_ERROR: "The MCP server failed while the call was in flight; it is being restarted, "
                         "retry in a few seconds.",
    Code.UPSTREAM_TIMEOUT: "The MCP server did not answer in time; the call was cancelled.",
}


def code_of(value: str | None) -> Code | None:
    """The `Code` for a code string, or None for None or a string that is no code (old audit records)."""
    if value is None:
        return None
    try:
        return Code(value)
    except ValueError:
        return None
