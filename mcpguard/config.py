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
bell = true                       # ring the terminal's bell when an approval arrives

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

Each table is validated by a pydantic model of what may be written there
(`GatewayTable`, `ConsoleTable`, `TelemetryTable`, `ServerTable`,
`GrantTable`, `ConfigFile`; shared parts in `mcpguard.validation`), and the
records below are filled from the validated tables by field name. A new key is one field on its
table's model (type, default, and a `Says` if its problems need their own
words) and the attribute of that name on the record readers use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, StrictBool, StrictInt, StrictStr, ValidationError, \
    ValidationInfo, model_validator
from pydantic_core import InitErrorDetails

from mcpguard.audit import DEFAULT_MAX_VALUE_BYTES as DEFAULT_AUDIT_MAX_VALUE_BYTES
from mcpguard.audit import MIN_MAX_VALUE_BYTES as MIN_AUDIT_MAX_VALUE_BYTES
from mcpguard.validation import (
    Duration,
    RuledTable,
    Says,
    Seen,
    Text,
    explain,
    field_metadata,
    found,
    keys_of,
    kind_of,
    problem,
)

DEFAULT_PORT = 8765
HEADLESS_APPROVALS = ("deny", "wait")
UPSTREAM_SESSIONS = ("per_session", "shared")
#: agent sessions a server holds at once when neither it nor [gateway] says: shared
#: sessions cost some kilobytes each, per_session ones an upstream process each
DEFAULT_MAX_SESSIONS = {"shared": 1000, "per_session": 16}
DEFAULT_SESSION_IDLE_TIMEOUT_S = 600.0
DEFAULT_REQUEST_READ_TIMEOUT_S = 10.0


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
    """`[console]`: `theme` name, `max_rows` calls kept in the live table, `bell` when an approval arrives."""

    theme: str = "mcpguard-dark"
    max_rows: int = 2000
    bell: bool = True


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
        return _load(data, file, base.resolve(), None, environ, Path(path).resolve() if path else None)


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
    return _load(doc, file, p.parent, positions, environ, p)


# -- the file's tables ------------------------------------------------------------------------
#
# Each table of mcpguard.toml is a pydantic model of the keys it may hold, in the
# order "unknown key (known: ...)" lists them. A field's alias is its key in the
# file when the record's attribute says its unit (`call_timeout` -> `call_timeout_s`).
# Records are filled from the tables by field name (`_record`), paths resolved.

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_STDIO_ONLY = ("args", "env", "cwd", "stderr_log")


class _IsPath:
    """Field metadata: a path as written, resolved against the config's folder in the record ('' is None)."""

    def __repr__(self) -> str:
        return "IS_PATH"


IS_PATH = _IsPath()


def _resolve(base: Path, written: str | None) -> Path | None:
    if not written:
        return None
    p = Path(os.path.expanduser(written))
    return p if p.is_absolute() else base / p


def _number_as_text(value: Any) -> Any:
    # the environment holds strings only, so `RETRIES = 0` means "0"
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _expanded(value: str, info: ValidationInfo) -> str:
    environ = info.context["environ"]
    missing: list[str] = []

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, default = m.group(1), m.group(2)
        got = environ.get(name)
        if got is None or (got == "" and default is not None):
            if default is not None:
                return default
            missing.append(name)
            return ""
        return got

    out = _VAR.sub(sub, value)
    if missing:
        raise ValidationError.from_exception_data("env", [
            found((), "env_unset", f"environment variable {name} is not set (write ${{{name}:-default}} for a default)",
                  input=value) for name in missing])
    return out


def _origin(origin: str) -> str:
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise problem("origin", f"{origin!r} is not an origin like 'https://example.com' or 'http://host:port'")
    return origin.rstrip("/")


def _no_file_there(written: str, info: ValidationInfo) -> str:
    p = _resolve(info.context["base"], written)
    if p is not None and p.exists() and not p.is_dir():
        raise problem("not_a_folder", f"{p} is not a folder")
    return written


def _from_environment(name: str, info: ValidationInfo) -> str | None:
    if not name:
        return None
    if not _ENV_NAME.match(name):
        raise problem("env_name", f"{name!r} is not an environment variable name")
    value = info.context["environ"].get(name)
    if not value:
        raise problem("env_unset", f"environment variable {name} is not set (or empty)")
    return value


def _otlp_endpoint(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise problem("url", f"{url!r} is not an http:// or https:// URL "
                             "(an OTLP/HTTP collector, e.g. 'http://127.0.0.1:4318')")
    return url


def _server_name(name: str) -> str:
    if not _NAME.match(name):
        raise problem("name", "a server name may hold only letters, digits, '_', '.', '-' (it is part of the URL "
                              "/mcp/NAME)")
    return name


def _grant_name(name: str) -> str:
    if not _NAME.match(name):
        raise problem("name", "a grant name may hold only letters, digits, '_', '.', '-'")
    return name


def _whole(what: str, least: int = 1, note: str = "") -> Says:
    return Says(f"must be a whole number of {what}, {least} or more{note}, not {{input!r}}")


Port = Annotated[StrictInt, Field(ge=0, le=65535), Says("must be a port number 0-65535 (0: any free port), not {input!r}")]
SessionCap = Annotated[StrictInt, Field(ge=1), _whole("sessions")]
RowCap = Annotated[StrictInt, Field(ge=1), _whole("rows")]
AuditCap = Annotated[StrictInt, Field(ge=MIN_AUDIT_MAX_VALUE_BYTES),
                     _whole("bytes", MIN_AUDIT_MAX_VALUE_BYTES, " (65536 is 64 KiB)")]
Switch = Annotated[StrictBool, Says("must be true or false")]
Strings = Annotated[tuple[Annotated[StrictStr, Says("must be a list of strings")], ...], Says("must be a list of strings")]
FilePath = Annotated[StrictStr, IS_PATH, Says("must be a path string, not {kind}", when=("string_type",))]
Folder = Annotated[FilePath, AfterValidator(_no_file_there)]
Origin = Annotated[StrictStr, AfterValidator(_origin), Says("must be a list of strings", when=("string_type",))]
Origins = Annotated[tuple[Origin, ...], Says("must be a list of strings", when=("tuple_type",))]
Expanded = Annotated[StrictStr, BeforeValidator(_number_as_text), AfterValidator(_expanded)]
"""An `env` or `headers` value: `${VAR}`, `${VAR:-default}` expanded from the environment, `$$` a `$`."""
SecretFromEnv = Annotated[StrictStr, AfterValidator(_from_environment)]
"""The value of the environment variable a key names ('' names none: None); never kept in a repr."""
ServerName = Annotated[StrictStr, AfterValidator(_server_name)]
GrantName = Annotated[StrictStr, AfterValidator(_grant_name)]


class _ConfigTable(RuledTable):
    """A table of mcpguard.toml; a known key given None is absent (`Config.from_dict` callers write it so)."""

    @model_validator(mode="before")
    @classmethod
    def _none_is_absent(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            known = keys_of(cls)
            return {k: v for k, v in data.items() if v is not None or k not in known}
        return data


class GatewayTable(_ConfigTable):
    """`[gateway]` as written (see `GatewayConfig`)."""

    host: Text = "127.0.0.1"
    port: Port = DEFAULT_PORT
    url_file: FilePath = ".mcpguard/url"
    control_file: FilePath = ".mcpguard/control.json"
    control_token: SecretFromEnv = Field(None, alias="control_token_env", repr=False)
    audit_log: FilePath = ".mcpguard/audit.jsonl"
    audit_fsync: Switch = False
    redact_keys: Strings = ()
    audit_max_value_bytes: AuditCap = DEFAULT_AUDIT_MAX_VALUE_BYTES
    headless_approvals: Literal[HEADLESS_APPROVALS] = "deny"
    call_timeout_s: Duration = Field(60.0, alias="call_timeout")
    allowed_origins: Origins = ()
    max_sessions: SessionCap | None = None
    session_idle_timeout_s: Duration = Field(DEFAULT_SESSION_IDLE_TIMEOUT_S, alias="session_idle_timeout")
    request_read_timeout_s: Duration = Field(DEFAULT_REQUEST_READ_TIMEOUT_S, alias="request_read_timeout")
    approve_for_session_ttl_s: Duration = Field(3600.0, alias="approve_for_session_ttl")


class ConsoleTable(_ConfigTable):
    """`[console]` as written (see `ConsoleConfig`)."""

    theme: Text = "mcpguard-dark"
    max_rows: RowCap = 2000
    bell: Switch = True


class TelemetryTable(_ConfigTable):
    """`[telemetry]` as written (see `TelemetryConfig`; `enabled` is decided from it and the environment)."""

    otlp_endpoint: Annotated[Text, AfterValidator(_otlp_endpoint)] | None = None
    service_name: Text | None = None


class ServerTable(_ConfigTable):
    """`[servers.NAME]` as written (see `ServerConfig`): a stdio (`command`) or Streamable HTTP (`url`) upstream."""

    name: StrictStr | None = None
    policy: FilePath | None = None
    call_timeout_s: Duration | None = Field(None, alias="call_timeout")
    upstream_sessions: Literal[UPSTREAM_SESSIONS] = "per_session"
    max_sessions: SessionCap | None = None
    session_idle_timeout_s: Duration | None = Field(None, alias="session_idle_timeout")
    command: Text | None = None
    args: Strings = ()
    env: dict[StrictStr, Expanded] = Field(default={}, repr=False)  # may hold credentials
    cwd: Folder | None = None
    stderr_log: FilePath | None = None
    url: Text | None = None
    headers: dict[StrictStr, Expanded] = Field(default={}, repr=False)

    @classmethod
    def rules(cls, seen: Seen, context: Mapping[str, Any]) -> Iterator[InitErrorDetails]:
        """One transport: `command` (stdio, with its stdio keys) or an http(s) `url` (with `headers`)."""
        command, url, data = seen.ok("command"), seen.ok("url"), seen.data
        if command is not None and url is not None:
            yield found((), "transport", "give either command (stdio) or url (Streamable HTTP), not both")
        elif command is None and url is None:
            if data.get("command") is None and data.get("url") is None:
                yield found((), "transport", "give command (a stdio upstream) or url (a Streamable HTTP upstream)")
        elif url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                yield found(("url",), "url", f"{url!r} is not an http:// or https:// URL", input=url)
            for key in _STDIO_ONLY:
                if data.get(key) is not None:
                    yield found((key,), "stdio_only", f"{key} is for stdio upstreams (command); this one has url")
        if (url is None or command is not None) and data.get("headers") is not None:
            yield found(("headers",), "http_only", "headers are for Streamable HTTP upstreams (url); this one has command")


class GrantTable(_ConfigTable):
    """`[grants.NAME]` as written (see `GrantConfig`): `token_env` or `token_sha256`."""

    token_env: Text | None = None
    token_sha256: Text | None = None

    @classmethod
    def rules(cls, seen: Seen, context: Mapping[str, Any]) -> Iterator[InitErrorDetails]:
        """Exactly one of the two keys; a digest of 64 hex digits; a variable that is set."""
        env, hexd, data = seen.ok("token_env"), seen.ok("token_sha256"), seen.data
        if env is not None and hexd is not None or data.get("token_env") is None and data.get("token_sha256") is None:
            yield found((), "token", "give either token_env (an environment variable holding the token) "
                                     "or token_sha256 (the token's SHA-256 hex digest)" + (", not both" if env else ""))
        elif hexd is not None:
            if not _HEX64.match(hexd):
                yield found(("token_sha256",), "hex", "must be 64 hex digits (e.g. the output of sha256sum)")
        elif env is not None:
            if not _ENV_NAME.match(env):
                yield found(("token_env",), "env_name", f"{env!r} is not an environment variable name")
            elif not context["environ"].get(env):
                yield found(("token_env",), "env_unset", f"environment variable {env} is not set (or empty)")


class ConfigFile(_ConfigTable):
    """A whole mcpguard.toml as written: its sections (see `Config`)."""

    gateway: GatewayTable = Field(default_factory=GatewayTable)
    console: ConsoleTable = Field(default_factory=ConsoleTable)
    servers: dict[ServerName, ServerTable] = {}
    grants: dict[GrantName, GrantTable] = {}
    telemetry: TelemetryTable = Field(default_factory=TelemetryTable)

    @classmethod
    def rules(cls, seen: Seen, context: Mapping[str, Any]) -> Iterator[InitErrorDetails]:
        """A server entry's own `name` is its key's; a token names one grant."""
        servers, grants = seen.data.get("servers"), seen.data.get("grants")
        for name, entry in servers.items() if isinstance(servers, Mapping) else ():
            if isinstance(entry, Mapping) and not seen.bad("servers", name, "name"):
                if entry.get("name") is not None and entry["name"] != name:
                    yield found(("servers", name, "name"), "name",
                                f"{entry['name']!r} differs from the table's name {name!r}")
        first: dict[bytes, str] = {}
        for name, entry in grants.items() if isinstance(grants, Mapping) else ():
            if not isinstance(entry, Mapping):
                continue
            env = None if seen.bad("grants", name, "token_env") else entry.get("token_env")
            hexd = None if seen.bad("grants", name, "token_sha256") else entry.get("token_sha256")
            digest = None if (env is None) == (hexd is None) else _token_digest(env, hexd, context["environ"])
            if digest is not None:  # else the grant's own problem is reported
                other = first.setdefault(digest, name)
                if other != name:
                    yield found(("grants", name), "same_token",
                                f"has the same token as grants.{other}; a token must name one grant")


def _token_digest(token_env: str | None, token_sha256: str | None, environ: Mapping[str, str]) -> bytes | None:
    if token_sha256:
        return bytes.fromhex(token_sha256)
    token = environ.get(token_env or "")
    return hashlib.sha256(token.encode("utf-8")).digest() if token else None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# -- from the tables to the records -----------------------------------------------------------------


def _load(data: Any, file: str, base: Path, positions: Any, environ: Mapping[str, str] | None,
          path: Path | None) -> Config:
    """Validate `data` (mcpguard.toml's shape) and build the `Config`; raises `ConfigError` with every problem."""
    environ = os.environ if environ is None else environ
    try:
        doc = ConfigFile.model_validate(data, context={"base": base, "environ": environ})
    except ValidationError as exc:
        raise ConfigError(_issues(exc, file, positions, data)) from None
    gateway = _record(GatewayConfig, doc.gateway, base)
    servers = {name: _server(name, t, gateway, base) for name, t in doc.servers.items()}
    grants = {name: _grant(name, t, environ) for name, t in doc.grants.items()}
    telemetry = _record(TelemetryConfig, doc.telemetry, base,
                        enabled=telemetry_enabled(doc.telemetry.otlp_endpoint, environ))
    return Config(path=path, gateway=gateway, console=_record(ConsoleConfig, doc.console, base),
                  servers=servers, grants=grants, telemetry=telemetry)


def _record(cls: type[Any], table: Any, base: Path, **resolved: Any) -> Any:
    """A `cls` record from a validated table: each record field from the table's field of that name
    (a path resolved against `base`), unless `resolved` gives it."""
    fields = type(table).model_fields
    values = dict(resolved)
    for f in dataclasses.fields(cls):
        if f.init and f.name not in values and f.name in fields:
            value = getattr(table, f.name)
            values[f.name] = _resolve(base, value) if IS_PATH in field_metadata(fields[f.name]) else value
    return cls(**values)


def _server(name: str, t: ServerTable, gateway: GatewayConfig, base: Path) -> ServerConfig:
    transport = "http" if t.url is not None else "stdio"
    command = t.command
    if command is not None and ("/" in command or os.sep in command):
        command = str(_resolve(base, command))
    stderr_log = None
    if transport == "stdio":
        stderr_log = _resolve(base, f".mcpguard/logs/{name}.stderr.log" if t.stderr_log is None else t.stderr_log)
    return _record(
        ServerConfig, t, base, name=name, transport=transport, command=command, stderr_log=stderr_log,
        call_timeout_s=gateway.call_timeout_s if t.call_timeout_s is None else t.call_timeout_s,
        max_sessions=t.max_sessions or gateway.max_sessions or DEFAULT_MAX_SESSIONS[t.upstream_sessions],
        session_idle_timeout_s=(gateway.session_idle_timeout_s if t.session_idle_timeout_s is None
                                else t.session_idle_timeout_s),
    )


def _grant(name: str, t: GrantTable, environ: Mapping[str, str]) -> GrantConfig:
    digest = _token_digest(t.token_env, t.token_sha256, environ) or b""
    if t.token_sha256 is not None:
        return GrantConfig(name=name, token_sha256=t.token_sha256.lower(), _digest=digest)
    return GrantConfig(name=name, token_env=t.token_env, _digest=digest)


# -- problems, worded -------------------------------------------------------------------------------

_SECTIONS = tuple(keys_of(ConfigFile))
_ENTRIES = ("servers", "grants")
_DURATION_ERRORS = ("duration", "duration_not_positive")


def _issues(exc: ValidationError, file: str, positions: Any, data: Any) -> list[ConfigIssue]:
    """`exc`'s errors as `ConfigIssue`s: unknown top-level keys first, then table by table in the
    file's order (a section, or one server or grant), each table's unknown keys first, then its
    problems by line, its durations last (the order this loader has always reported them in)."""
    ranked = []
    for n, x in enumerate(explain(ConfigFile, exc)):
        loc = tuple(p for p in x.loc if p != "[key]")
        item = None
        if loc and isinstance(loc[-1], int):  # a list item's problem is the list key's
            item, loc = loc[-1], loc[:-1]
        line = positions.locate(loc)[0] if positions is not None else 0
        issue = ConfigIssue(file, line, ".".join(str(p) for p in loc), _message(x, item))
        ranked.append(((*_table_rank(loc, x.type, data, positions), x.type != "extra_forbidden",
                        x.type in _DURATION_ERRORS, line, n), issue))
    out: list[ConfigIssue] = []
    for _, issue in sorted(ranked, key=lambda r: r[0]):
        if issue not in out:  # several bad items of one list are one problem of its key
            out.append(issue)
    return out


def _table_rank(loc: tuple[Any, ...], kind: str, data: Any, positions: Any) -> tuple[int, int, int]:
    """(where the table of `loc` starts in the file, its section's place in `ConfigFile`, its entry's place)."""
    if not loc or loc[0] not in _SECTIONS or len(loc) == 1 and kind == "extra_forbidden":
        return (-1, 0, 0)
    table = loc[:2] if loc[0] in _ENTRIES and len(loc) > 1 else loc[:1]
    entry = 0
    if len(table) == 2 and isinstance(data, Mapping) and isinstance(data.get(table[0]), Mapping):
        names = list(data[table[0]])
        entry = names.index(table[1]) if table[1] in names else 0
    start = positions.locate(table)[0] if positions is not None else 0
    return (start, _SECTIONS.index(table[0]), entry)


def _message(x: Any, item: int | None) -> str:
    if x.says is not None and x.says.message is not None:
        return x.word(x.says.message, "")
    kind = x.type
    if kind == "extra_forbidden":
        msg = f"unknown key (known: {', '.join(x.known_keys())})"
    elif kind in ("model_type", "dict_type"):
        msg = f"must be a table, not {kind_of(x.input)}" if x.loc else "the config must be a table"
    elif kind == "string_type" or kind == "literal_error" and not isinstance(x.input, str):
        msg = f"must be a string, not {kind_of(x.input)}"
    elif kind == "blank" or kind == "literal_error" and not x.input.strip():
        msg = "must not be empty"
    elif kind == "literal_error":
        msg = f"{x.input!r} is not one of {', '.join(x.choices)}"
    elif kind == "bool_type":
        msg = "must be true or false"
    elif kind == "duration":
        msg = x.ctx["detail"]
    elif kind == "duration_not_positive":
        msg = "must be more than 0 seconds"
    else:
        msg = x.ctx.get("message") or x.msg
    return f"item {item}: {msg}" if item is not None else msg
