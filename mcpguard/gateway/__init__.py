"""The embedded MCP proxy: downstream Streamable HTTP endpoints, upstream sessions, tools/call interception.

Public API (docs/internals.md): `Gateway(config, bus=None, interactive=True)`,
`ServerHandle`, `DownstreamSession`; denial results in `mcpguard.gateway.results`.
"""

from mcpguard.gateway.core import DownstreamSession, Gateway, ServerHandle
from mcpguard.gateway.results import DECISION_META_KEY, denial, fingerprint, unknown_tool
from mcpguard.gateway.upstream import UpstreamConnection, UpstreamUnavailable

__all__ = [
    "DECISION_META_KEY",
    "DownstreamSession",
    "Gateway",
    "ServerHandle",
    "UpstreamConnection",
    "UpstreamUnavailable",
    "denial",
    "fingerprint",
    "unknown_tool",
]
