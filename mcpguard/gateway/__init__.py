"""The embedded MCP proxy: both MCP eras at every `/mcp/<server>` endpoint, upstream connections, one call pipeline.

Public API (docs/internals.md): `Gateway(config, bus=None, interactive=True)`,
`ServerHandle`, `CallPipeline`, `UpstreamPool`, `AgentSession`; the results
mcpguard answers with in `mcpguard.gateway.results`.
"""

from mcpguard.gateway.core import Gateway
from mcpguard.gateway.pipeline import CallPipeline
from mcpguard.gateway.results import DECISION_META_KEY, denial, fingerprint, unknown_tool
from mcpguard.gateway.server import ServerHandle
from mcpguard.gateway.sessions import AgentSession, UpstreamPool
from mcpguard.gateway.upstream import UpstreamConnection, UpstreamUnavailable

__all__ = [
    "DECISION_META_KEY",
    "AgentSession",
    "CallPipeline",
    "Gateway",
    "ServerHandle",
    "UpstreamConnection",
    "UpstreamPool",
    "UpstreamUnavailable",
    "denial",
    "fingerprint",
    "unknown_tool",
]
