"""Helpers for gateway tests: config records, a gateway in front of the everything server, SDK clients.

`make_config` builds the same shape `mcpguard.config.load_config` returns
(plain records with the documented attribute names), so gateway tests do not
depend on the TOML loader.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from mcpguard.gateway import Gateway

HERE = Path(__file__).resolve().parent
EVERYTHING = HERE / "everything_server.py"


@dataclass
class GatewayCfg:
    host: str = "127.0.0.1"
    port: int = 0
    url_file: str | None = None
    audit_log: str | None = None
    headless_approvals: str = "deny"
    call_timeout_s: float = 30.0
    allowed_origins: list[str] = field(default_factory=list)


@dataclass
class ServerCfg:
    name: str
    transport: str = "stdio"
    command: str | None = None
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    stderr_log: str | None = None
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    policy: str | None = None
    call_timeout_s: float | None = None


@dataclass
class GrantCfg:
    name: str
    token_env: str | None = None
    token_sha256: str | None = None

    def matches(self, token: str) -> bool:
        if self.token_env:
            want = os.environ.get(self.token_env, "")
            return bool(want) and hmac.compare_digest(want.encode(), token.encode())
        if self.token_sha256:
            got = hashlib.sha256(token.encode()).hexdigest()
            return hmac.compare_digest(got, self.token_sha256)
        return False


@dataclass
class Cfg:
    gateway: GatewayCfg
    servers: dict[str, ServerCfg]
    grants: dict[str, GrantCfg] = field(default_factory=dict)
    path: str | None = None
    console: Any = None


ALLOW_ALL = """
version = "1"
default = "allow"
"""


def everything_server(name: str, tmp: Path, policy_text: str | None = ALLOW_ALL, **kw: Any) -> ServerCfg:
    """A stdio `[servers.NAME]` running tests/upstreams/everything_server.py with a policy file."""
    policy = None
    if policy_text is not None:
        p = tmp / f"{name}.toml"
        p.write_text(policy_text, encoding="utf-8")
        policy = str(p)
    return ServerCfg(name=name, command=sys.executable, args=[str(EVERYTHING)],
                     stderr_log=str(tmp / f"{name}.stderr.log"), policy=policy, **kw)


def make_config(tmp: Path, servers: list[ServerCfg], **gw: Any) -> Cfg:
    gw.setdefault("audit_log", None)
    return Cfg(gateway=GatewayCfg(**gw), servers={s.name: s for s in servers})


@contextlib.asynccontextmanager
async def running(cfg: Cfg, **kw: Any) -> AsyncIterator[Gateway]:
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
