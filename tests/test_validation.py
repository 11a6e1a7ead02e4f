"""The pydantic models behind both loaders: keys reach their records, rules report with everything else."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mcpguard.config import (
    ConfigError,
    ConsoleConfig,
    ConsoleTable,
    GatewayConfig,
    GatewayTable,
    GrantConfig,
    GrantTable,
    ServerConfig,
    ServerTable,
    TelemetryConfig,
    TelemetryTable,
    parse_config,
)
from mcpguard.policy import PolicyError, parse_policy


@pytest.mark.parametrize("table, record, resolved", [
    (GatewayTable, GatewayConfig, set()),
    (ConsoleTable, ConsoleConfig, set()),
    (ServerTable, ServerConfig, {"transport"}),
    (GrantTable, GrantConfig, {"_digest"}),
    (TelemetryTable, TelemetryConfig, {"enabled"}),
])
def test_every_key_of_a_table_has_its_record_attribute(table, record, resolved):
    """Records are filled from tables by field name: a key added to a model without the record's
    attribute would be validated and then dropped, so the two lists must agree."""
    keys = set(table.model_fields)
    attributes = {f.name for f in dataclasses.fields(record) if f.init} - {"name"}
    assert keys - {"name"} == attributes - resolved


def test_rules_across_keys_are_reported_with_every_other_problem():
    text = """\
[gateway]
port = -1

[servers.both]
command = "srv"
url = "http://127.0.0.1:1/mcp"
env = { A = "${UNSET}" }

[grants.a]
token_env = "T"
colour = "red"

[grants.b]
token_env = "T2"
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/nowhere/mcpguard.toml", environ={"T": "same", "T2": "same"})
    assert [str(i).removeprefix("/nowhere/mcpguard.toml") for i in info.value.issues] == [
        ":2: gateway.port: must be a port number 0-65535 (0: any free port), not -1",
        ":4: servers.both: give either command (stdio) or url (Streamable HTTP), not both",
        ":7: servers.both.env.A: environment variable UNSET is not set (write ${UNSET:-default} for a default)",
        ":11: grants.a.colour: unknown key (known: token_env, token_sha256)",
        ":13: grants.b: has the same token as grants.a; a token must name one grant",
    ]


def test_a_policy_counter_conflict_is_reported_with_unrelated_errors():
    doc = {"version": "1", "default": "block", "tools": {
        "a": {"action": "alow", "limits": [{"counter": "w", "window": "minute", "max": 5}]},
        "b": {"limits": [{"counter": "w", "window": "hour", "max": 5, "mode": "dry-run"}]}}}
    with pytest.raises(PolicyError) as info:
        parse_policy(json.dumps(doc, indent=2), "json", "p.json")
    assert [i.message for i in info.value.issues] == [
        'default "block" is not one of allow, deny',
        'action "alow" is not one of allow, deny, require_approval',
        'counter "w" is defined twice differently: tools.a.limits[0] says 5 calls per minute per grant, '
        "tools.b.limits[0] says 5 calls per hour per grant",
        'mode "dry-run" is not one of enforce, shadow',
    ]


def test_json_null_is_a_wrong_type_not_an_absent_key():
    doc = {"version": "1", "default": "deny", "tools": {"t": {"reason": None, "limits": None}}}
    with pytest.raises(PolicyError) as info:
        parse_policy(json.dumps(doc, indent=2), "json", "p.json")
    assert [(i.message, i.hint) for i in info.value.issues] == [
        ("tools.t.reason must be a string, not NoneType", 'write reason = "..."'),
        ("tools.t.limits must be a list of limits, not NoneType", "use [[tools.t.limits]] tables"),
    ]
