"""`mcpguard.toml`: where the gateway listens, its upstream servers, grants, paths.

```toml
[gateway]
host = "127.0.0.1"                # loopback by default
port = 8765                       # 0: any free port
url_file = ".mcpguard/url"        # where the listen URL is written
control_file = ".mcpguard/control.json"  # the control endpoint's URL and token (0600), for console --attach
control_token_env = ""            # take the control token from this variable (default: a new one each start)
audit_log = ".mcpguard/audit.jsonl"
audit_fsync = false               # fsync each audit record (slower)
redact_keys = []                  # extra secret key fragments for the audit log (matched anywhere in a key)
audit_max_value_bytes = 65536     # a longer audit value (arguments, error, ...) is kept as size, sha256, preview
headless_approvals = "deny"       # "deny" | "wait": approvals with no console attached
approve_for_session_ttl = "1h"    # how long "approve for this session" lasts
call_timeout = "60s"              # per-call upstream timeout
allowed_origins = []              # extra Origin values accepted (DNS rebinding checks)
max_sessions = 1000               # default cap of open agent sessions per server (see below)
session_idle_timeout = "10m"      # an agent session with no request for this long is closed
request_read_timeout = "10s"      # a connection must send a whole request within this, else it is closed

[console]
theme = "mcpguard-dark"
max_rows = 2000

[telemetry]                       # OpenTelemetry, off when the section and OTEL_EXPORTER_OTLP_* are absent
otlp_endpoint = "http://127.0.0.1:4318"  # OTLP/HTTP collector: /v1/traces and /v1/metrics are appended
service_name = "mcpguard"         # the resource's service.name (default: OTEL_SERVICE_NAME, else mcpguard)

[servers.mlflow]                  # stdio upstream
policy = "sample_policies/mlflow.toml"
command = "mlflow-mcp"
args = []
env = { MLFLOW_TRACKING_URI = "${MLFLOW_TRACKING_URI}" }
cwd = "."
stderr_log = ".mcpguard/logs/mlflow.stderr.log"
call_timeout = "30s"
upstream_sessions = "shared"      # "per_session" (default) | "shared": see below
max_sessions = 100                # overrides [gateway] max_sessions for this server

[servers.other]                   # Streamable HTTP upstream
url = "http://127.0.0.1:9000/mcp"
headers = { Authorization = "Bearer ${OTHER_TOKEN}" }

[grants.ci]
token_env = "MCPGUARD_TOKEN_CI"   # or token_sha256 = "<64 hex digits>"
```

Rules:
- Relative paths (`url_file`, `audit_log`, `policy`, `cwd`, `stderr_log`,
  and a `command` written with a `/`) resolve against the config file's
  folder. Empty `url_file` / `audit_log` turn them off.
- `${VAR}` (and `${VAR:-default}`) in `env` and `headers` values expand from
  mcpguard's environment; `$$` is a literal `$`. An unset variable without a
  default is an error.
- A stdio upstream's stderr goes to `stderr_log` (default
  `.mcpguard/logs/<name>.stderr.log`), never the terminal. Its `env` is
  merged by the SDK over a safe default environment (`PATH`, `HOME`, ...).
- A grant's token is read from `token_env` at load time and only its SHA-256
  digest is kept; `GrantConfig.matches` compares digests in constant time.
  Tokens appear in no repr, message or log.
- `upstream_sessions`: a handshake-era upstream may keep state per session,
  so by default (`per_session`) each agent session gets its own upstream
  session (for stdio, its own process); `shared` serves every agent through
  one upstream session. A 2026-07-28 upstream is stateless and always shared.
- `max_sessions`: agent sessions open at once per server (a request that
  would open one more gets HTTP 503); default `[gateway] max_sessions`,
  else 1000 for a shared server and 16 for a `per_session` one (each of
  those is an upstream process). `session_idle_timeout` closes sessions
  that sent nothing for that long (default 10 minutes).
- Telemetry (`mcpguard.telemetry`) is on when `[telemetry] otlp_endpoint`
  is set, or, with no endpoint there, when the environment has
  `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
  `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` (the OpenTelemetry SDK's standard
  variables, which then also say where to and how); `OTEL_SDK_DISABLED=true`
  turns it off in every case (OpenTelemetry SDK environment variables).
- Unknown keys are errors. Every problem is reported at once in a
  `ConfigError`, each as `file:line: key: message`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


from mcpguard.audit import DEFAULT_MAX_VALUE_BYTES as DEFAULT_AUDIT_MAX_VALUE_BYTES
from mcpguard.audit import MIN_MAX_VALUE_BYTES as MIN_AUDIT_MAX_VALUE_BYTES
from mcpguard.durations import parse_duration

DEFAULT_PORT = 8765
HEADLESS_APPROVALS = ("deny", "wait")
UPSTREAM_SESSIONS = ("per_session", "shared")
#: agent sessions a server holds at once when neither it nor [gateway] says: shared
#: sessions cost some kilobytes each, per_session ones an upstream process each
DEFAULT_MAX_SESSIONS = {"shared": 1000, "per_session": 16}
DEFAULT_SESSION_IDLE_TIMEOUT_S = 600.0
DEFAULT_REQUEST_READ_TIMEOUT_S = 10.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


# -- errors ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem: `file`, `line` (1-based; 0 when unknown), dotted `key`, `message`."""

    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(ValueError):
    """The config cannot be used; `.issues` lists every problem (`ConfigIssue`)."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = list(issues)
        n = len(self.issues)
        head = f"{n} problem{'s' if n != 1 else ''} in the mcpguard config"
        super().__init__(head + ":\n" + "\n".join(str(i) for i in self.issues))


# -- the model ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """`[gateway]`: listen address and shared settings.

    `host`/`port` (0: any free port); `control_file` (where the control
    endpoint's URL and token are written for `console --attach`, None: not
    written), `control_token` (from `control_token_env`; None: the gateway
    makes one at each start; never in a repr); `url_file`, `audit_log`: absolute
    paths or None (off); `audit_fsync`; `redact_keys` (extra audit secret
    key fragments, matched anywhere in a key, on top of
    `mcpguard.audit.SECRET_KEYS`); `audit_max_value_bytes` (bytes one value
    of an audit record may take, 1024 or more, default 65536; a longer one
    is recorded as its size, SHA-256 and a preview, see `mcpguard.audit`);
    `headless_approvals` `deny` | `wait` (what a call that
    needs approval gets when no console is attached); `call_timeout_s`
    (seconds, per upstream call); `allowed_origins` (extra `Origin` values
    accepted besides loopback ones, MCP 2025-06-18, Streamable HTTP
    §Security Warning: servers must validate Origin against DNS rebinding);
    `approve_for_session_ttl_s` (seconds an "approve for this session"
    lasts), `max_sessions` (the servers' default cap of open agent sessions, None:
    each server's own default), `session_idle_timeout_s` (seconds),
    `request_read_timeout_s` (seconds a connection may take to send a whole
    request, head and body, before it is closed; also how long an idle
    connection is kept).
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    url_file: Path | None = None
    control_file: Path | None = None
    control_token: str | None = field(default=None, repr=False)
    audit_log: Path | None = None
    audit_fsync: bool = False
    redact_keys: tuple[str, ...] = ()
    audit_max_value_bytes: int = DEFAULT_AUDIT_MAX_VALUE_BYTES
    headless_approvals: str = "deny"
    call_timeout_s: float = 60.0
    allowed_origins: tuple[str, ...] = ()
    max_sessions: int | None = None
    approve_for_session_ttl_s: float = 3600.0
    session_idle_timeout_s: float = DEFAULT_SESSION_IDLE_TIMEOUT_S
    request_read_timeout_s: float = DEFAULT_REQUEST_READ_TIMEOUT_S

    @property
    def loopback(self) -> bool:
        """True when `host` is a loopback address or `localhost`."""
        return _is_loopback(self.host)


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """`[console]`: `theme` name, `max_rows` calls kept in the live table."""

    theme: str = "mcpguard-dark"
    max_rows: int = 2000


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    """`[telemetry]`: OpenTelemetry traces and metrics over OTLP/HTTP (`mcpguard.telemetry`).

    `otlp_endpoint`: the collector's base URL (`http://127.0.0.1:4318`;
    `/v1/traces` and `/v1/metrics` are appended, as for
    `OTEL_EXPORTER_OTLP_ENDPOINT`), or None: the exporters read the `OTEL_*`
    variables. `service_name`: the resource's `service.name`, or None
    (`OTEL_SERVICE_NAME`, else `mcpguard`). `enabled`: decided at load time
    from the section and the environment (see the module docstring's rules).
    """

    otlp_endpoint: str | None = None
    service_name: str | None = None
    enabled: bool = False


#: the OpenTelemetry SDK's variables that name an OTLP destination: any of them turns telemetry on
OTEL_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                      "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")


def telemetry_enabled(otlp_endpoint: str | None, environ: Mapping[str, str]) -> bool:
    """Whether telemetry runs: `OTEL_SDK_DISABLED=true` says no; else an `otlp_endpoint` or one of
    `OTEL_ENDPOINT_VARS` in `environ` says yes (OpenTelemetry SDK environment variables)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(otlp_endpoint) or any(environ.get(var, "").strip() for var in OTEL_ENDPOINT_VARS)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """`[servers.NAME]`: one upstream MCP server.

    `transport` is `stdio` (`command`, `args`, `env`, `cwd`, `stderr_log`)
    or `http` (Streamable HTTP: `url`, `headers`). `policy` is the policy
    file's absolute path or None (no policy: every call is denied).
    `call_timeout_s` is this server's per-call timeout in seconds (the
    gateway's when not set). `upstream_sessions` is `per_session` or
    `shared`; `max_sessions` the cap of open agent sessions (resolved:
    never None); `session_idle_timeout_s` seconds. Paths are absolute; `env` and `headers` values
    are expanded (and left out of the repr: they may hold credentials). The
    policy file is not read here: a missing or bad one is the policy
    loader's error, reported per server by the gateway.
    """

    name: str
    transport: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict, repr=False)
    cwd: Path | None = None
    stderr_log: Path | None = None
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    policy: Path | None = None
    call_timeout_s: float = 60.0
    upstream_sessions: str = "per_session"
    max_sessions: int = DEFAULT_MAX_SESSIONS["per_session"]
    session_idle_timeout_s: float = DEFAULT_SESSION_IDLE_TIMEOUT_S


@dataclass(frozen=True, slots=True)
class GrantConfig:
    """`[grants.NAME]`: a bearer token that names a grant.

    `token_env` (the environment variable the token was read from) or
    `token_sha256` (its hex digest, as configured). The token itself is never
    kept; only its SHA-256 digest, which is not in the repr either.
    """

    name: str
    token_env: str | None = None
    token_sha256: str | None = None
    _digest: bytes = field(default=b"", repr=False, compare=False)

    def matches(self, token: str) -> bool:
        """True when `token` is this grant's token (constant-time compare of SHA-256 digests)."""
        if not self._digest or not isinstance(token, str):
            return False
        return hmac.compare_digest(hashlib.sha256(token.encode("utf-8")).digest(), self._digest)

    @classmethod
    def from_token(cls, name: str, token: str) -> GrantConfig:
        """A grant for `token` (for the demo and tests); stored as its digest only."""
        return cls(name=name, _digest=hashlib.sha256(token.encode("utf-8")).digest())


@dataclass(frozen=True, slots=True)
class Config:
    """A whole `mcpguard.toml`: `path` (None when built in code), sections, servers, grants."""

    path: Path | None
    gateway: GatewayConfig
    console: ConsoleConfig
    servers: dict[str, ServerConfig]
    grants: dict[str, GrantConfig]
    telemetry: TelemetryConfig = TelemetryConfig()

    @property
    def base_dir(self) -> Path:
        """The folder relative paths were resolved against."""
        return self.path.parent if self.path else Path.cwd()

    def grant_for(self, token: str) -> GrantConfig | None:
        """The grant whose token is `token`, or None (every grant is compared, in constant time each)."""
        found = None
        for grant in self.grants.values():
            if grant.matches(token) and found is None:
                found = grant
        return found

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base_dir: str | os.PathLike[str] | None = None,
                  path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
        """A config from a dict in `mcpguard.toml`'s shape (the demo and tests build it in code).

        Relative paths resolve against `base_dir` (default: `path`'s folder,
        else the current folder). A server entry may carry `name` (it must
        equal its key) and None for any optional value (as absent), so
        `mcpguard.stack.mlflow_server_config(...)` can be used as is.
        Raises `ConfigError`.
        """
        file = str(path) if path else "<config>"
        base = Path(base_dir) if base_dir is not None else (Path(path).parent if path else Path.cwd())
        return _Builder(file, base.resolve(), None, environ).build(data, Path(path).resolve() if path else None)


# -- loading ----------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate `mcpguard.toml` at `path`.

    `environ` (default `os.environ`) feeds `${VAR}` expansion and `token_env`.
    Raises `ConfigError` (file missing or unreadable, TOML syntax, every
    validation problem at once, each with file, line and key).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(str(path), 0, "", f"cannot read the config: {exc}")]) from None
    return parse_config(text, path, environ=environ)


def parse_config(text: str, path: str | os.PathLike[str] = "mcpguard.toml", *,
                 environ: Mapping[str, str] | None = None) -> Config:
    """Validate config `text` as if read from `path` (relative paths resolve against its folder).

    Raises `ConfigError`.
    """
    file = str(path)
    try:
        doc = tomllib.loads(text)  # read-only here: the stdlib parser, whose errors name line and column
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r" \(at line (\d+), column (\d+)\)$", msg)
        if m:
            line, msg = int(m.group(1)), f"{msg[:m.start()]} (column {m.group(2)})"
        else:
            line = text.count("\n") + 1
        raise ConfigError([ConfigIssue(file, line, "", f"TOML syntax: {msg}")]) from None
    from mcpguard.policy.positions import toml_positions  # one TOML position scanner for the project

    positions = toml_positions(text)
    p = Path(path).resolve()
    return _Builder(file, p.parent, positions, environ).build(doc, p)


# -- validation ----------------------------------------------------------------------------

_GATEWAY_KEYS = ("host", "port", "url_file", "control_file", "control_token_env", "audit_log", "audit_fsync", "redact_keys", "audit_max_value_bytes",
                 "headless_approvals", "call_timeout", "allowed_origins", "max_sessions", "session_idle_timeout",
                 "request_read_timeout", "approve_for_session_ttl")
_CONSOLE_KEYS = ("theme", "max_rows")
_TELEMETRY_KEYS = ("otlp_endpoint", "service_name")
_STDIO_KEYS = ("command", "args", "env", "cwd", "stderr_log")
_HTTP_KEYS = ("url", "headers")
_SERVER_KEYS = ("name", "policy", "call_timeout", "upstream_sessions", "max_sessions", "session_idle_timeout",
                *_STDIO_KEYS, *_HTTP_KEYS)
_GRANT_KEYS = ("token_env", "token_sha256")
_MISSING = object()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Builder:
    def __init__(self, file: str, base: Path, positions: Any, environ: Mapping[str, str] | None) -> None:
        self.file = file
        self.base = base
        self.positions = positions
        self.environ = os.environ if environ is None else environ
        self.issues: list[ConfigIssue] = []

    # -- helpers ---------------------------------------------------------
    def err(self, path: tuple[str, ...], message: str) -> None:
        line = self.positions.locate(path)[0] if self.positions is not None else 0
        self.issues.append(ConfigIssue(self.file, line, ".".join(path), message))

    def table(self, value: Any, path: tuple[str, ...]) -> dict[str, Any] | None:
        if value is _MISSING or value is None:
            return {}
        if not isinstance(value, Mapping):
            self.err(path, f"must be a table, not {_typename(value)}")
            return None
        return dict(value)

    def unknown(self, table: Mapping[str, Any], path: tuple[str, ...], allowed: tuple[str, ...]) -> None:
        for key in table:
            if key not in allowed:
                self.err((*path, key), f"unknown key (known: {', '.join(allowed)})")

    def string(self, table: Mapping[str, Any], path: tuple[str, ...], key: str, default: Any = None,
               nonempty: bool = True) -> Any:
        v = table.get(key)
        if v is None:
            return default
        if not isinstance(v, str):
            self.err((*path, key), f"must be a string, not {_typename(v)}")
            return default
        if nonempty and not v.strip():
            self.err((*path, key), "must not be empty")
            return default
        return v

    def strings(self, table: Mapping[str, Any], path: tuple[str, ...], key: str) -> tuple[str, ...]:
        v = table.get(key)
        if v is None:
            return ()
        if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
            self.err((*path, key), "must be a list of strings")
            return ()
        return tuple(v)

    def duration(self, table: Mapping[str, Any], path: tuple[str, ...], key: str, default: float) -> float:
        v = table.get(key)
        if v is None:
            return default
        try:
            seconds = parse_duration(v)
        except ValueError as exc:
            self.err((*path, key), str(exc))
            return default
        if seconds <= 0:
            self.err((*path, key), "must be more than 0 seconds")
            return default
        return seconds

    def secret_from_env(self, table: Mapping[str, Any], path: tuple[str, ...], key: str) -> str | None:
        name = self.string(table, path, key, None, nonempty=False)
        if not name:
            return None
        if not _ENV_NAME.match(name):
            self.err((*path, key), f"{name!r} is not an environment variable name")
            return None
        value = self.environ.get(name)
        if not value:
            self.err((*path, key), f"environment variable {name} is not set (or empty)")
            return None
        return value

    def count(self, table: Mapping[str, Any], path: tuple[str, ...], key: str, what: str) -> int | None:
        v = table.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            self.err((*path, key), f"must be a whole number of {what}, 1 or more, not {v!r}")
            return None
        return v

    def path_of(self, table: Mapping[str, Any], path: tuple[str, ...], key: str, default: str | None) -> Path | None:
        v = table.get(key, _MISSING)
        if v is _MISSING or v is None:
            v = default
        elif not isinstance(v, str):
            self.err((*path, key), f"must be a path string, not {_typename(v)}")
            return None
        if v is None or v == "":
            return None
        p = Path(os.path.expanduser(v))
        return p if p.is_absolute() else self.base / p

    def expand(self, value: Any, path: tuple[str, ...]) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            self.err(path, f"must be a string, not {_typename(value)}")
            return None
        if not isinstance(value, str):
            return str(value)
        missing: list[str] = []

        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, default = m.group(1), m.group(2)
            got = self.environ.get(name)
            if got is None or (got == "" and default is not None):
                if default is not None:
                    return default
                missing.append(name)
                return ""
            return got

        out = _VAR.sub(sub, value)
        for name in missing:
            self.err(path, f"environment variable {name} is not set (write ${{{name}:-default}} for a default)")
        return out if not missing else None

    def mapping(self, table: Mapping[str, Any], path: tuple[str, ...], key: str) -> dict[str, str]:
        v = self.table(table.get(key, _MISSING), (*path, key))
        out: dict[str, str] = {}
        for k, val in (v or {}).items():
            expanded = self.expand(val, (*path, key, k))
            if expanded is not None:
                out[str(k)] = expanded
        return out

    # -- sections --------------------------------------------------------
    def build(self, data: Any, path: Path | None) -> Config:
        if not isinstance(data, Mapping):
            raise ConfigError([ConfigIssue(self.file, 0, "", "the config must be a table")])
        self.unknown(data, (), ("gateway", "console", "servers", "grants", "telemetry"))
        gateway = self.gateway(self.table(data.get("gateway", _MISSING), ("gateway",)) or {})
        console = self.console(self.table(data.get("console", _MISSING), ("console",)) or {})
        telemetry = self.telemetry(self.table(data.get("telemetry", _MISSING), ("telemetry",)) or {})
        servers: dict[str, ServerConfig] = {}
        for name, entry in (self.table(data.get("servers", _MISSING), ("servers",)) or {}).items():
            server = self.server(str(name), entry, gateway)
            if server is not None:
                servers[server.name] = server
        grants: dict[str, GrantConfig] = {}
        for name, entry in (self.table(data.get("grants", _MISSING), ("grants",)) or {}).items():
            grant = self.grant(str(name), entry)
            if grant is not None:
                grants[grant.name] = grant
        self.duplicate_tokens(grants)
        if self.issues:
            raise ConfigError(self.issues)
        return Config(path=path, gateway=gateway, console=console, servers=servers, grants=grants,
                      telemetry=telemetry)

    def gateway(self, t: dict[str, Any]) -> GatewayConfig:
        P = ("gateway",)
        self.unknown(t, P, _GATEWAY_KEYS)
        host = self.string(t, P, "host", "127.0.0.1")
        port = t.get("port", DEFAULT_PORT)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            self.err((*P, "port"), f"must be a port number 0-65535 (0: any free port), not {port!r}")
            port = DEFAULT_PORT
        fsync = t.get("audit_fsync", False)
        if not isinstance(fsync, bool):
            self.err((*P, "audit_fsync"), "must be true or false")
            fsync = False
        cap = t.get("audit_max_value_bytes", DEFAULT_AUDIT_MAX_VALUE_BYTES)
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < MIN_AUDIT_MAX_VALUE_BYTES:
            self.err((*P, "audit_max_value_bytes"),
                     f"must be a whole number of bytes, {MIN_AUDIT_MAX_VALUE_BYTES} or more "
                     f"(65536 is 64 KiB), not {cap!r}")
            cap = DEFAULT_AUDIT_MAX_VALUE_BYTES
        headless = self.string(t, P, "headless_approvals", "deny")
        if headless not in HEADLESS_APPROVALS:
            self.err((*P, "headless_approvals"), f"{headless!r} is not one of deny, wait")
            headless = "deny"
        origins = self.strings(t, P, "allowed_origins")
        for i, origin in enumerate(origins):
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
                self.err((*P, "allowed_origins"),
                         f"item {i}: {origin!r} is not an origin like 'https://example.com' or 'http://host:port'")
        return GatewayConfig(
            host=host,
            port=port,
            url_file=self.path_of(t, P, "url_file", ".mcpguard/url"),
            control_file=self.path_of(t, P, "control_file", ".mcpguard/control.json"),
            control_token=self.secret_from_env(t, P, "control_token_env"),
            audit_log=self.path_of(t, P, "audit_log", ".mcpguard/audit.jsonl"),
            audit_fsync=fsync,
            redact_keys=self.strings(t, P, "redact_keys"),
            audit_max_value_bytes=cap,
            headless_approvals=headless,
            call_timeout_s=self.duration(t, P, "call_timeout", 60.0),
            allowed_origins=tuple(o.rstrip("/") for o in origins),
            max_sessions=self.count(t, P, "max_sessions", "sessions"),
            approve_for_session_ttl_s=self.duration(t, P, "approve_for_session_ttl", 3600.0),
            session_idle_timeout_s=self.duration(t, P, "session_idle_timeout", DEFAULT_SESSION_IDLE_TIMEOUT_S),
            request_read_timeout_s=self.duration(t, P, "request_read_timeout", DEFAULT_REQUEST_READ_TIMEOUT_S),
        )

    def console(self, t: dict[str, Any]) -> ConsoleConfig:
        P = ("console",)
        self.unknown(t, P, _CONSOLE_KEYS)
        rows = t.get("max_rows", 2000)
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            self.err((*P, "max_rows"), f"must be a whole number of rows, 1 or more, not {rows!r}")
            rows = 2000
        return ConsoleConfig(theme=self.string(t, P, "theme", "mcpguard-dark"), max_rows=rows)

    def telemetry(self, t: dict[str, Any]) -> TelemetryConfig:
        P = ("telemetry",)
        self.unknown(t, P, _TELEMETRY_KEYS)
        endpoint = self.string(t, P, "otlp_endpoint")
        if endpoint is not None:
            parts = urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                self.err((*P, "otlp_endpoint"), f"{endpoint!r} is not an http:// or https:// URL "
                                                 "(an OTLP/HTTP collector, e.g. 'http://127.0.0.1:4318')")
                endpoint = None
        return TelemetryConfig(otlp_endpoint=endpoint, service_name=self.string(t, P, "service_name"),
                               enabled=telemetry_enabled(endpoint, self.environ))

    def server(self, name: str, entry: Any, gateway: GatewayConfig) -> ServerConfig | None:
        P = ("servers", name)
        n0 = len(self.issues)
        if not _NAME.match(name):
            self.err(P, "a server name may hold only letters, digits, '_', '.', '-' (it is part of the URL /mcp/NAME)")
        t = self.table(entry, P)
        if t is None:
            return None
        self.unknown(t, P, _SERVER_KEYS)
        if t.get("name") is not None and t.get("name") != name:
            self.err((*P, "name"), f"{t.get('name')!r} differs from the table's name {name!r}")
        command = self.string(t, P, "command")
        url = self.string(t, P, "url")
        transport = "stdio"
        if command is not None and url is not None:
            self.err(P, "give either command (stdio) or url (Streamable HTTP), not both")
        elif command is None and url is None:
            if "command" not in t and "url" not in t:
                self.err(P, "give command (a stdio upstream) or url (a Streamable HTTP upstream)")
        elif url is not None:
            transport = "http"
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                self.err((*P, "url"), f"{url!r} is not an http:// or https:// URL")
            for key in _STDIO_KEYS[1:]:
                if t.get(key) is not None:
                    self.err((*P, key), f"{key} is for stdio upstreams (command); this one has url")
        if transport == "stdio" and t.get("headers") is not None:
            self.err((*P, "headers"), "headers are for Streamable HTTP upstreams (url); this one has command")
        if command is not None and ("/" in command or os.sep in command):
            command = str(self.path_of({"command": command}, P, "command", None))
        cwd = self.path_of(t, P, "cwd", None)
        if cwd is not None and cwd.exists() and not cwd.is_dir():
            self.err((*P, "cwd"), f"{cwd} is not a folder")
        policy = self.path_of(t, P, "policy", None)
        sessions = self.string(t, P, "upstream_sessions", "per_session")
        if sessions not in UPSTREAM_SESSIONS:
            self.err((*P, "upstream_sessions"), f"{sessions!r} is not one of per_session, shared")
            sessions = "per_session"
        max_sessions = self.count(t, P, "max_sessions", "sessions") or gateway.max_sessions or DEFAULT_MAX_SESSIONS[
            sessions]
        server = ServerConfig(
            name=name,
            transport=transport,
            command=command,
            args=self.strings(t, P, "args"),
            env=self.mapping(t, P, "env"),
            cwd=cwd,
            stderr_log=(self.path_of(t, P, "stderr_log", f".mcpguard/logs/{name}.stderr.log")
                        if transport == "stdio" else None),
            url=url,
            headers=self.mapping(t, P, "headers"),
            policy=policy,
            call_timeout_s=self.duration(t, P, "call_timeout", gateway.call_timeout_s),
            upstream_sessions=sessions,
            max_sessions=max_sessions,
            session_idle_timeout_s=self.duration(t, P, "session_idle_timeout", gateway.session_idle_timeout_s),
        )
        return server if len(self.issues) == n0 else None

    def grant(self, name: str, entry: Any) -> GrantConfig | None:
        P = ("grants", name)
        if not _NAME.match(name):
            self.err(P, "a grant name may hold only letters, digits, '_', '.', '-'")
        t = self.table(entry, P)
        if t is None:
            return None
        self.unknown(t, P, _GRANT_KEYS)
        env_name = self.string(t, P, "token_env")
        hexd = self.string(t, P, "token_sha256")
        if (env_name is None) == (hexd is None):
            if "token_env" not in t and "token_sha256" not in t or env_name and hexd:
                self.err(P, "give either token_env (an environment variable holding the token) "
                            "or token_sha256 (the token's SHA-256 hex digest)" + (", not both" if env_name else ""))
            return None
        if hexd is not None:
            if not _HEX64.match(hexd):
                self.err((*P, "token_sha256"), "must be 64 hex digits (e.g. the output of sha256sum)")
                return None
            return GrantConfig(name=name, token_sha256=hexd.lower(), _digest=bytes.fromhex(hexd))
        assert env_name is not None
        if not _ENV_NAME.match(env_name):
            self.err((*P, "token_env"), f"{env_name!r} is not an environment variable name")
            return None
        token = self.environ.get(env_name)
        if not token:
            self.err((*P, "token_env"), f"environment variable {env_name} is not set (or empty)")
            return None
        return GrantConfig(name=name, token_env=env_name, _digest=hashlib.sha256(token.encode("utf-8")).digest())

    def duplicate_tokens(self, grants: dict[str, GrantConfig]) -> None:
        seen: dict[bytes, str] = {}
        for name, grant in grants.items():
            other = seen.setdefault(grant._digest, name)
            if other != name:
                self.err(("grants", name), f"has the same token as grants.{other}; a token must name one grant")


def _typename(v: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            tuple: "a list", dict: "a table"}.get(type(v), type(v).__name__)
