"""What changes when a request crosses from one MCP era to the other.

Two eras meet at the gateway: the handshake era (protocol versions up to
2025-11-25: `initialize`, sessions, server-to-client requests) and the
2026-07-28 era (no handshake; each request carries its own `_meta` envelope
with `io.modelcontextprotocol/protocolVersion`, `clientInfo` and
`clientCapabilities`; routing headers `Mcp-Method` / `Mcp-Name` /
`Mcp-Param-*` over HTTP; an `InputRequiredResult` instead of a
server-to-client request; results tagged with `resultType`). The SDK shapes
what the gateway *answers* for the agent's era (its runner validates each
request against that era's schema and sieves each result to it); this module
does the rest, for what the gateway *sends upstream*:

- `upstream_params(...)`: a request's params as the upstream's era wants
  them: the agent's envelope removed for a handshake-era upstream, or the
  gateway's hop envelope (the upstream's negotiated version, the agent's
  client info and capabilities) for a 2026-07-28 one.
- `upstream_headers(...)`: the HTTP routing headers a 2026-07-28 upstream
  checks (MCP 2026-07-28, Streamable HTTP: `Mcp-Method`, `Mcp-Name`,
  `Mcp-Param-*` mirrored from the tool's `x-mcp-header` input schema), built
  with the SDK's own header helpers.
- `complete_for(...)`: a handshake-era upstream's result, ready for a
  2026-07-28 agent (`resultType: complete`), since the SDK's result sieve
  requires the tag.

Names: "modern" means 2026-07-28 (and later), "legacy" the handshake era.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mcp.shared.inbound import (
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PROTOCOL_VERSION_HEADER,
    NAME_BEARING_METHODS,
    encode_header_value,
    mcp_param_headers,
    x_mcp_header_map,
)
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    LOG_LEVEL_META_KEY,
    PROTOCOL_VERSION_META_KEY,
    SERVER_INFO_META_KEY,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

MODERN = "modern"
LEGACY = "legacy"

#: the `_meta` keys of the 2026-07-28 request envelope (a hop's own, never forwarded as is)
ENVELOPE_KEYS = frozenset({PROTOCOL_VERSION_META_KEY, CLIENT_INFO_META_KEY, CLIENT_CAPABILITIES_META_KEY})

#: what a request's envelope says about its sender when the gateway has nothing better
GATEWAY_CLIENT_INFO = {"name": "mcpguard", "version": "0.1.0"}


def era_of(protocol_version: str | None) -> str:
    """`"modern"` for a 2026-07-28-era version string, else `"legacy"`."""
    return MODERN if protocol_version in MODERN_PROTOCOL_VERSIONS else LEGACY


def upstream_params(
    params: Mapping[str, Any] | None,
    *,
    upstream_era: str,
    upstream_version: str | None,
    client_info: Mapping[str, Any] | None,
    client_capabilities: Mapping[str, Any] | None,
    log_level: str | None = None,
    drop_progress_token: bool = False,
) -> dict[str, Any] | None:
    """A copy of the agent's request `params`, with the `_meta` envelope the upstream's era wants.

    - `upstream_era` `"legacy"`: the 2026-07-28 envelope keys (and the
      per-request log level opt-in) are removed; other `_meta` keys stay.
    - `"modern"`: the envelope is the hop's: `upstream_version`, the agent's
      `client_info` (the gateway's when None) and `client_capabilities`
      (`{}` when None); an agent's own `logLevel` opt-in is kept, else
      `log_level` (a handshake-era agent's `logging/setLevel`) is sent as one.
    - `drop_progress_token`: remove `_meta.progressToken` (the gateway then
      asks the dispatcher for its own, unique on the hop, and maps progress
      back to the agent's token).

    Returns None when `params` is None and nothing is to be added.
    """
    src = dict(params) if isinstance(params, Mapping) else {}
    meta_in = src.get("_meta")
    meta = dict(meta_in) if isinstance(meta_in, Mapping) else {}
    for key in ENVELOPE_KEYS:
        meta.pop(key, None)
    if upstream_era == LEGACY:
        meta.pop(LOG_LEVEL_META_KEY, None)
    else:
        meta[PROTOCOL_VERSION_META_KEY] = upstream_version
        meta[CLIENT_INFO_META_KEY] = dict(client_info) if client_info else dict(GATEWAY_CLIENT_INFO)
        meta[CLIENT_CAPABILITIES_META_KEY] = dict(client_capabilities) if client_capabilities else {}
        if log_level is not None:
            meta.setdefault(LOG_LEVEL_META_KEY, log_level)
    if drop_progress_token:
        meta.pop("progressToken", None)
    if meta:
        src["_meta"] = meta
    else:
        src.pop("_meta", None)
    if not src and params is None:
        return None
    return src


def upstream_headers(
    method: str,
    params: Mapping[str, Any] | None,
    *,
    upstream_era: str,
    upstream_version: str | None,
    input_schema: Callable[[str], Any] | None = None,
) -> dict[str, str]:
    """HTTP headers for one request to a Streamable HTTP upstream.

    Every request after the handshake carries `MCP-Protocol-Version`
    (MCP 2025-06-18, Streamable HTTP). A 2026-07-28 upstream also checks
    `Mcp-Method`, `Mcp-Name` (for `tools/call`, `prompts/get`,
    `resources/read`) and, for `tools/call`, the `Mcp-Param-*` headers its
    tool's input schema declares with `x-mcp-header`; `input_schema(name)`
    gives that schema (None: unknown tool, no headers).
    """
    headers: dict[str, str] = {}
    if upstream_version:
        headers[MCP_PROTOCOL_VERSION_HEADER] = upstream_version
    if upstream_era != MODERN:
        return headers
    headers[MCP_METHOD_HEADER] = method
    p = params if isinstance(params, Mapping) else {}
    name_key = NAME_BEARING_METHODS.get(method)
    if name_key is not None and isinstance(p.get(name_key), str):
        headers[MCP_NAME_HEADER] = encode_header_value(p[name_key])
    if method == "tools/call" and input_schema is not None and isinstance(p.get("name"), str):
        schema = input_schema(p["name"])
        arguments = p.get("arguments")
        if schema is not None and isinstance(arguments, Mapping):
            header_map = x_mcp_header_map(schema)
            if header_map:
                headers.update(mcp_param_headers(header_map, arguments))
    return headers


def complete_for(result: dict[str, Any], *, agent_era: str, server_info: Mapping[str, Any] | None) -> dict[str, Any]:
    """A result from the upstream, tagged for a 2026-07-28 agent.

    A handshake-era upstream writes no `resultType`; a 2026-07-28 result
    must have one (an absent tag means `complete`), and its `_meta` carries
    the answering server's identity (`io.modelcontextprotocol/serverInfo`),
    which for a proxy is the upstream's. A legacy agent's result is returned
    as is: the SDK's sieve drops what its era does not know.
    """
    if agent_era != MODERN:
        return result
    if "resultType" not in result:
        result = {**result, "resultType": "complete"}
    if server_info:
        meta = result.get("_meta")
        if not isinstance(meta, Mapping):
            result = {**result, "_meta": {SERVER_INFO_META_KEY: dict(server_info)}}
        elif meta.get(SERVER_INFO_META_KEY) is None:
            result = {**result, "_meta": {**meta, SERVER_INFO_META_KEY: dict(server_info)}}
    return result


def is_input_required(result: Mapping[str, Any]) -> bool:
    """True for an `InputRequiredResult` (MCP 2026-07-28, multi round-trip requests)."""
    return result.get("resultType") == "input_required"
