"""Helpers for gateway tests: configs through the real loader, a gateway in front of the everything server, SDK clients.

`make_config` builds a `mcpguard.toml`-shaped document and loads it with
`mcpguard.config.Config.from_dict`, the loader `mcpguard.toml` goes through,
so gateway tests run on the config users get. `ServerCfg` is a convenient
way to write one `[servers.NAME]` entry in a test.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from mcpguard.config import Config
from mcpguard.gateway import Gateway

HERE = Path(__file__).resolve().parent
EVERYTHING = HERE / "everything_server.py"
LEGACY = HERE / "legacy_server.py"


def legacy_python() -> str:
    """The MLflow environment's Python, which has the `mcp` 1.x SDK the handshake-era test server needs."""
    from mcpguard.stack import ensure_mlflow_env

    return str(ensure_mlflow_env() / "bin" / "python")


@dataclass
class ServerCfg:
    """One `[servers.NAME]` entry (None values are left out)."""

    name: str
    command: str | None = None
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    stderr_log: str | None = None
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    policy: str | None = None
    call_timeout_s: float | None = None
    upstream_sessions: str | None = None
    max_sessions: int | None = None
    session_idle_timeout_s: float | None = None

    def table(self) -> dict[str, Any]:
        t: dict[str, Any] = {"command": self.command, "args": self.args or None, "env": self.env or None,
                             "cwd": self.cwd, "stderr_log": self.stderr_log, "url": self.url,
                             "headers": self.headers or None, "policy": self.policy,
                             "call_timeout": self.call_timeout_s, "upstream_sessions": self.upstream_sessions,
                             "max_sessions": self.max_sessions, "session_idle_timeout": self.session_idle_timeout_s}
        return {k: v for k, v in t.items() if v is not None}


_GATEWAY_KEYS = {"call_timeout_s": "call_timeout", "session_idle_timeout_s": "session_idle_timeout",
                 "request_read_timeout_s": "request_read_timeout"}


def make_config(tmp: Path, servers: list[ServerCfg | Mapping[str, Any]], *,
                grants: Mapping[str, Mapping[str, str]] | None = None, environ: Mapping[str, str] | None = None,
                telemetry: Mapping[str, Any] | None = None, **gw: Any) -> Config:
    """A real `Config`: `[gateway]` from `gw` (port 0, no audit log, no url file unless given), the servers,
    `[grants.NAME]` tables from `grants`, the `[telemetry]` table; relative paths resolve against `tmp`."""
    gateway: dict[str, Any] = {"port": 0, "audit_log": "", "url_file": "", "call_timeout": 30}
    for key, value in gw.items():
        gateway[_GATEWAY_KEYS.get(key, key)] = "" if value is None else value
    doc: dict[str, Any] = {"gateway": gateway, "servers": {}}
    for s in servers:
        if isinstance(s, ServerCfg):
            doc["servers"][s.name] = s.table()
        else:
            entry = dict(s)
            doc["servers"][entry.pop("name")] = {k: v for k, v in entry.items() if v is not None}
    if grants:
        doc["grants"] = {name: dict(g) for name, g in grants.items()}
    if telemetry is not None:
        doc["telemetry"] = dict(telemetry)
    return Config.from_dict(doc, base_dir=tmp, environ=environ)


ALLOW_ALL = """
version = "1"
default = "allow"
"""


def _policy_file(name: str, tmp: Path, policy_text: str | None) -> str | None:
    if policy_text is None:
        return None
    p = tmp / f"{name}.toml"
    p.write_text(policy_text, encoding="utf-8")
    return str(p)


def everything_server(name: str, tmp: Path, policy_text: str | None = ALLOW_ALL, **kw: Any) -> ServerCfg:
    """A stdio `[servers.NAME]` running tests/upstreams/everything_server.py (mcp 2.x: it speaks
    MCP 2026-07-28, so the gateway negotiates that era) with a policy file."""
    return ServerCfg(name=name, command=sys.executable, args=[str(EVERYTHING)],
                     stderr_log=str(tmp / f"{name}.stderr.log"), policy=_policy_file(name, tmp, policy_text), **kw)


def legacy_server(name: str, tmp: Path, policy_text: str | None = ALLOW_ALL, **kw: Any) -> ServerCfg:
    """A stdio `[servers.NAME]` running tests/upstreams/legacy_server.py (mcp 1.x: handshake era only)."""
    return ServerCfg(name=name, command=legacy_python(), args=[str(LEGACY)],
                     stderr_log=str(tmp / f"{name}.stderr.log"), policy=_policy_file(name, tmp, policy_text), **kw)


def upstream(era: str, name: str, tmp: Path, policy_text: str | None = ALLOW_ALL, **kw: Any) -> ServerCfg:
    """`everything_server` for era `"modern"`, `legacy_server` for `"legacy"`."""
    return (everything_server if era == "modern" else legacy_server)(name, tmp, policy_text, **kw)


@contextlib.asynccontextmanager
async def running(cfg: Config, **kw: Any) -> AsyncIterator[Gateway]:
    gw = Gateway(cfg, **kw)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


@contextlib.asynccontextmanager
async def client(url: str, headers: dict[str, str] | None = None, **callbacks: Any) -> AsyncIterator[ClientSession]:
    """A real SDK client over Streamable HTTP, initialized."""
    async with httpx2.AsyncClient(headers=headers or {}, timeout=httpx2.Timeout(30, read=60)) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write, **callbacks) as session:
                await session.initialize()
                yield session
