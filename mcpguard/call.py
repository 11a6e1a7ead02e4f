"""The one record every layer shares: a `tools/call` as the gateway saw it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Call:
    """A `tools/call` request, with who made it.

    - `server`: the upstream's name in `mcpguard.toml` (`[servers.NAME]`).
    - `tool`: `params.name` of the request.
    - `arguments`: `params.arguments` (a JSON object; `{}` when absent).
    - `grant`: the grant that authenticated the caller (`local` for loopback
      callers when no grants are configured).
    - `session_id`: the Streamable HTTP `Mcp-Session-Id`, or None.
    - `client`: `clientInfo.name` from the caller's `initialize`, or None.
    - `call_id`: mcpguard's own id for this call (events, audit, approvals).
    """

    server: str
    tool: str
    arguments: dict[str, Any] = field(default_factory=dict)
    grant: str = "local"
    session_id: str | None = None
    client: str | None = None
    call_id: str = ""
