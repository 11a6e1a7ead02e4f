"""mcpguard.toml: loading, paths, expansion, grants, and every error with file, line and key."""

from __future__ import annotations

import hashlib
import os
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from mcpguard.config import (
    Config,
    ConfigError,
    GrantConfig,
    ServerConfig,
    TelemetryConfig,
    load_config,
    parse_config,
)

FULL = """\
[gateway]
host = "127.0.0.1"
port = 0
url_file = ".mcpguard/url"
audit_log = "logs/audit.jsonl"
headless_approvals = "wait"
call_timeout = "90s"
allowed_origins = ["https://console.example.com/"]

[console]
theme = "mcpguard-light"
max_rows = 500

[servers.mlflow]
policy = "sample_policies/mlflow.toml"
command = "mlflow-mcp"
args = ["--verbose"]
env = { MLFLOW_TRACKING_URI = "${TRACKING}", MLFLOW_HTTP_REQUEST_MAX_RETRIES = 0, PRICE = "$$5", MODE = "${MODE:-dev}" }
cwd = "."
call_timeout = "30s"

[servers.remote]
url = "https://mcp.example.com/mcp"
headers = { Authorization = "Bearer ${REMOTE_TOKEN}" }

[grants.ci]
token_env = "MCPGUARD_TOKEN_CI"

[grants.laptop]
token_sha256 = "%s"
""" % hashlib.sha256(b"laptop-token").hexdigest().upper()

ENV = {"TRACKING": "http://127.0.0.1:5000", "REMOTE_TOKEN": "r3m0te", "MCPGUARD_TOKEN_CI": "ci-token"}


def write(tmp_path: Path, text: str, name: str = "mcpguard.toml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def problems(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(p, environ=environ or {})
    assert all(i.file == str(p) for i in info.value.issues)
    return [str(i).removeprefix(str(p)) for i in info.value.issues]


def test_a_full_config_loads(tmp_path):
    cfg = load_config(write(tmp_path, FULL), environ=ENV)
    base = tmp_path.resolve()
    assert cfg.path == base / "mcpguard.toml" and cfg.base_dir == base
    g = cfg.gateway
    assert (g.host, g.port, g.headless_approvals, g.call_timeout_s) == ("127.0.0.1", 0, "wait", 90.0)
    assert g.url_file == base / ".mcpguard/url" and g.audit_log == base / "logs/audit.jsonl"
    assert g.allowed_origins == ("https://console.example.com",) and g.loopback
    assert (cfg.console.theme, cfg.console.max_rows) == ("mcpguard-light", 500)

    m = cfg.servers["mlflow"]
    assert (m.name, m.transport, m.command, m.args, m.cwd) == ("mlflow", "stdio", "mlflow-mcp", ("--verbose",), base)
    assert m.env == {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                     "PRICE": "$5", "MODE": "dev"}
    assert m.policy == base / "sample_policies/mlflow.toml"
    assert m.stderr_log == base / ".mcpguard/logs/mlflow.stderr.log"  # never the terminal
    assert m.call_timeout_s == 30.0 and m.url is None

    r = cfg.servers["remote"]
    assert (r.transport, r.url, r.headers, r.stderr_log, r.command) == (
        "http", "https://mcp.example.com/mcp", {"Authorization": "Bearer r3m0te"}, None, None)
    assert r.call_timeout_s == 90.0  # the gateway's
    assert "r3m0te" not in repr(r) and "127.0.0.1:5000" not in repr(m)


def test_defaults(tmp_path):
    cfg = load_config(write(tmp_path, '[servers.s]\ncommand = "./bin/server"\n'), environ={})
    base = tmp_path.resolve()
    g = cfg.gateway
    assert (g.host, g.port, g.headless_approvals, g.call_timeout_s, g.allowed_origins, g.audit_fsync) == (
        "127.0.0.1", 8765, "deny", 60.0, (), False)
    assert g.url_file == base / ".mcpguard/url" and g.audit_log == base / ".mcpguard/audit.jsonl"
    assert (cfg.console.theme, cfg.console.max_rows) == ("mcpguard-dark", 2000)
    s = cfg.servers["s"]
    assert s.command == str(base / "bin/server")  # a relative command path is the config folder's
    assert (s.cwd, s.policy, s.env, s.args) == (None, None, {}, ())
    assert cfg.grants == {}
    off = load_config(write(tmp_path, '[gateway]\naudit_log = ""\nurl_file = ""\n'), environ={})
    assert off.gateway.audit_log is None and off.gateway.url_file is None and off.servers == {}


def test_grants_match_tokens_without_keeping_them(tmp_path):
    cfg = load_config(write(tmp_path, FULL), environ=ENV)
    ci, laptop = cfg.grants["ci"], cfg.grants["laptop"]
    assert ci.matches("ci-token") and not ci.matches("ci-token ") and not ci.matches("")
    assert laptop.matches("laptop-token") and not laptop.matches("ci-token")
    assert laptop.token_sha256 == hashlib.sha256(b"laptop-token").hexdigest()
    assert cfg.grant_for("ci-token") is ci and cfg.grant_for("laptop-token") is laptop
    assert cfg.grant_for("nope") is None
    for text in (repr(ci), str(ci), repr(cfg)):
        assert "ci-token" not in text and hashlib.sha256(b"ci-token").hexdigest() not in text
    assert GrantConfig.from_token("t", "abc").matches("abc")
    assert not GrantConfig(name="empty").matches("")


def test_the_issue_example_error(tmp_path):
    assert problems(tmp_path, """\
        [gateway]
        port = 0

        # the MLflow server

        [servers.mlflow]
        command = "mlflow-mcp"
        url = "http://127.0.0.1:9000/mcp"
        """) == [":6: servers.mlflow: give either command (stdio) or url (Streamable HTTP), not both"]


def test_every_problem_at_once_with_line_and_key(tmp_path):
    got = problems(tmp_path, """\
        [gateway]
        hots = "127.0.0.1"
        port = 70000
        headless_approvals = "ask"
        call_timeout = "soon"
        allowed_origins = ["console.example.com"]

        [console]
        max_rows = 0

        [servers.empty]
        policy = "p.toml"

        [servers.remote]
        url = "ftp://example.com"
        args = ["x"]

        [servers.local]
        command = "srv"
        headers = { A = "b" }
        env = { URI = "${NOT_SET}" }
        call_timeout = 0

        [servers."bad name"]
        command = "x"

        [grants.ci]
        token_env = "MISSING_TOKEN"

        [grants.both]
        token_env = "A"
        token_sha256 = "00"

        [grants.hex]
        token_sha256 = "xyz"

        [extra]
        """)
    assert got == [
        ":37: extra: unknown key (known: gateway, console, servers, grants, telemetry)",
        ":2: gateway.hots: unknown key (known: host, port, url_file, control_file, control_token_env, audit_log, audit_fsync, redact_keys, "
        "audit_max_value_bytes, headless_approvals, call_timeout, allowed_origins, max_sessions, session_idle_timeout, "
        "request_read_timeout, approve_for_session_ttl)",
        ":3: gateway.port: must be a port number 0-65535 (0: any free port), not 70000",
        ":4: gateway.headless_approvals: 'ask' is not one of deny, wait",
        ":6: gateway.allowed_origins: item 0: 'console.example.com' is not an origin like "
        "'https://example.com' or 'http://host:port'",
        ":5: gateway.call_timeout: 'soon' is not a duration (use a number of seconds or '30s', '2m', '1h')",
        ":9: console.max_rows: must be a whole number of rows, 1 or more, not 0",
        ":11: servers.empty: give command (a stdio upstream) or url (a Streamable HTTP upstream)",
        ":15: servers.remote.url: 'ftp://example.com' is not an http:// or https:// URL",
        ":16: servers.remote.args: args is for stdio upstreams (command); this one has url",
        ":20: servers.local.headers: headers are for Streamable HTTP upstreams (url); this one has command",
        ":21: servers.local.env.URI: environment variable NOT_SET is not set (write ${NOT_SET:-default} for a default)",
        ":22: servers.local.call_timeout: must be more than 0 seconds",
        ":24: servers.bad name: a server name may hold only letters, digits, '_', '.', '-' (it is part of the URL "
        "/mcp/NAME)",
        ":28: grants.ci.token_env: environment variable MISSING_TOKEN is not set (or empty)",
        ":30: grants.both: give either token_env (an environment variable holding the token) or token_sha256 "
        "(the token's SHA-256 hex digest), not both",
        ":35: grants.hex.token_sha256: must be 64 hex digits (e.g. the output of sha256sum)",
    ]


def test_wrong_types_are_named(tmp_path):
    got = problems(tmp_path, """\
        gateway = 3
        [servers.s]
        command = ["mlflow-mcp"]
        args = "x"
        env = { A = true }
        """)
    assert got == [
        ":1: gateway: must be a table, not a number",
        ":3: servers.s.command: must be a string, not a list",
        ":4: servers.s.args: must be a list of strings",
        ":5: servers.s.env.A: must be a string, not a boolean",
    ]


def test_the_audit_value_cap(tmp_path):
    assert load_config(write(tmp_path, ""), environ={}).gateway.audit_max_value_bytes == 65536
    cfg = load_config(write(tmp_path, "[gateway]\naudit_max_value_bytes = 4096\n"), environ={})
    assert cfg.gateway.audit_max_value_bytes == 4096
    for bad in ("0", "512", '"64KiB"', "true", "65536.5"):
        got = problems(tmp_path, f"[gateway]\naudit_max_value_bytes = {bad}\n")
        assert got == [f":2: gateway.audit_max_value_bytes: must be a whole number of bytes, 1024 or more "
                       f"(65536 is 64 KiB), not {tomllib.loads('v = ' + bad)['v']!r}"], got


def test_telemetry_section_and_the_otel_environment(tmp_path):
    """[telemetry] otlp_endpoint turns it on; with no section the standard OTEL_EXPORTER_OTLP_* variables do;
    OTEL_SDK_DISABLED=true turns it off in every case; a bad section is a ConfigError like any other."""
    assert load_config(write(tmp_path, ""), environ={}).telemetry == TelemetryConfig()
    on = load_config(write(tmp_path, '[telemetry]\notlp_endpoint = "http://127.0.0.1:4318"\n'
                                     'service_name = "edge-gw"\n'), environ={})
    assert on.telemetry == TelemetryConfig(otlp_endpoint="http://127.0.0.1:4318", service_name="edge-gw",
                                           enabled=True)
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"):
        assert load_config(write(tmp_path, ""), environ={var: "http://127.0.0.1:4318"}).telemetry.enabled
    assert not load_config(write(tmp_path, ""), environ={"OTEL_EXPORTER_OTLP_ENDPOINT": ""}).telemetry.enabled
    off = load_config(write(tmp_path, '[telemetry]\notlp_endpoint = "http://127.0.0.1:4318"\n'),
                      environ={"OTEL_SDK_DISABLED": "TRUE"})
    assert off.telemetry.otlp_endpoint == "http://127.0.0.1:4318" and not off.telemetry.enabled
    got = problems(tmp_path, '[telemetry]\notlp_endpoint = "127.0.0.1:4318"\nservice_name = 3\nsampler = "x"\n')
    assert got == [
        ":4: telemetry.sampler: unknown key (known: otlp_endpoint, service_name)",
        ":2: telemetry.otlp_endpoint: '127.0.0.1:4318' is not an http:// or https:// URL "
        "(an OTLP/HTTP collector, e.g. 'http://127.0.0.1:4318')",
        ":3: telemetry.service_name: must be a string, not a number",
    ], got


def test_two_grants_with_one_token(tmp_path):
    got = problems(tmp_path, """\
        [grants.a]
        token_env = "T1"
        [grants.b]
        token_env = "T2"
        """, environ={"T1": "same", "T2": "same"})
    assert got == [":3: grants.b: has the same token as grants.a; a token must name one grant"]


def test_toml_syntax_errors_name_the_line(tmp_path):
    assert problems(tmp_path, '[gateway]\nport = 1\nport = 2\n') == [
        ":3: TOML syntax: Cannot overwrite a value (column 9)"]
    got = problems(tmp_path, '[gateway]\nhost = "127.0.0.1\n')
    assert len(got) == 1 and got[0].startswith(":2: TOML syntax: ")


def test_a_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the config"):
        load_config(tmp_path / "nope.toml")


def test_parse_config_resolves_against_the_given_path(tmp_path):
    cfg = parse_config('[servers.s]\nurl = "http://127.0.0.1:1/mcp"\npolicy = "p.json"\n', tmp_path / "x.toml",
                       environ={})
    assert cfg.servers["s"].policy == tmp_path.resolve() / "p.json"


def test_from_dict_takes_the_stack_entry_as_is(tmp_path):
    entry = {"name": "mlflow", "command": "/opt/env/bin/mlflow-mcp", "args": [],
             "env": {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"},
             "cwd": None, "stderr_log": None, "policy": "mlflow.toml"}
    cfg = Config.from_dict({"gateway": {"port": 0, "audit_log": None}, "servers": {"mlflow": entry}},
                           base_dir=tmp_path)
    s = cfg.servers["mlflow"]
    assert isinstance(s, ServerConfig)
    assert (s.command, s.cwd, s.policy) == ("/opt/env/bin/mlflow-mcp", None, tmp_path.resolve() / "mlflow.toml")
    assert s.stderr_log == tmp_path.resolve() / ".mcpguard/logs/mlflow.stderr.log"
    assert cfg.path is None and cfg.gateway.port == 0
    assert cfg.gateway.audit_log == tmp_path.resolve() / ".mcpguard/audit.jsonl"  # None means "the default"
    with pytest.raises(ConfigError) as info:
        Config.from_dict({"servers": {"mlflow": {**entry, "name": "other"}}}, base_dir=tmp_path)
    assert str(info.value.issues[0]) == "<config>: servers.mlflow.name: 'other' differs from the table's name 'mlflow'"


def test_the_real_stack_entry_loads(tmp_path):
    """The MLflow environment is prepared by `dev.py test` before the suite runs."""
    from mcpguard import stack

    entry = stack.mlflow_server_config("http://127.0.0.1:5000", policy=None, stderr_log=None)
    s = Config.from_dict({"servers": {"mlflow": entry}}, base_dir=tmp_path).servers["mlflow"]
    assert s.transport == "stdio" and Path(s.command).name == "mlflow-mcp"
    assert s.env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"


SERVER = '''
import os, sys
from mcp.server.mcpserver import MCPServer
app = MCPServer("probe")

@app.tool()
def where() -> str:
    """Where the process runs and what it was given."""
    print("stderr goes to the log", file=sys.stderr, flush=True)
    return f"{os.getcwd()}|{os.environ.get('PROBE_URI')}|{' '.join(sys.argv[1:])}"

app.run()
'''


async def test_a_stdio_server_from_the_config_runs_as_written(tmp_path):
    """The fields a stdio upstream gets from mcpguard.toml start a real MCP server over stdio."""
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "probe.py").write_text(SERVER, encoding="utf-8")
    cfg = load_config(write(tmp_path, f"""\
        [servers.probe]
        command = "{sys.executable}"
        args = ["probe.py", "--flag"]
        cwd = "srv"
        env = {{ PROBE_URI = "${{PROBE_BASE}}/api" }}
        stderr_log = "logs/probe.log"
        """), environ={"PROBE_BASE": "http://127.0.0.1:5000"})
    s = cfg.servers["probe"]
    s.stderr_log.parent.mkdir(parents=True, exist_ok=True)
    params = StdioServerParameters(command=s.command, args=list(s.args), env=s.env, cwd=s.cwd)
    with open(s.stderr_log, "a", encoding="utf-8") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write_):
            async with ClientSession(read, write_) as session:
                await session.initialize()
                result = await session.call_tool("where", {})
    text = result.content[0].text
    assert text == f"{(tmp_path / 'srv').resolve()}|http://127.0.0.1:5000/api|--flag"
    assert "stderr goes to the log" in s.stderr_log.read_text()


def test_console_bell_is_on_unless_turned_off_and_must_be_a_boolean():
    assert parse_config("", "x.toml").console.bell is True
    assert parse_config("[console]\nbell = false\n", "x.toml").console.bell is False
    with pytest.raises(ConfigError, match="console.bell: must be true or false"):
        parse_config('[console]\nbell = "no"\n', "x.toml")
