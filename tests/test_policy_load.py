"""Loading: the seed document, TOML == JSON, the sample policies, the tomlkit round trip, positions."""

from __future__ import annotations

import json
from pathlib import Path

import tomlkit
from hypothesis import given, settings
from hypothesis import strategies as st

from mcpguard.call import Call
from mcpguard.policy import Limit, Policy, evaluate, load_policy, parse_policy
from mcpguard.policy.positions import json_positions, toml_positions

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_policies"
TOOLS = json.loads((ROOT / "tests" / "mlflow_tools.json").read_text())["tools"]
SEED = '{"version":"1","default":"deny","tools":{"set_experiment_tag":{"limits":[{"counter":"set_experiment_tag_rate","window":"minute","max":30,"scope":"grant"}]}}}'
SEED_TOML = '''version = "1"
default = "deny"

[tools.set_experiment_tag]
[[tools.set_experiment_tag.limits]]
counter = "set_experiment_tag_rate"
window = "minute"
max = 30
scope = "grant"
'''


def test_seed_document_loads_as_policylayer_documents_it():
    policy = parse_policy(SEED, "json", "seed.json")
    assert policy == Policy(
        version="1",
        default="deny",
        tools={
            "set_experiment_tag": policy.tools["set_experiment_tag"],
        },
    )
    rule = policy.tools["set_experiment_tag"]
    assert rule.action is None  # listed: allowed
    assert rule.limits == (Limit("set_experiment_tag_rate", "minute", 60.0, 30, "grant", "tools.set_experiment_tag.limits[0]"),)
    assert policy.on_tool_change == "warn" and policy.approval_timeout_s == 120.0
    assert policy.counter_names() == {"set_experiment_tag_rate"}


def test_seed_in_toml_is_the_same_policy():
    assert parse_policy(SEED_TOML, "toml", "seed.toml") == parse_policy(SEED, "json", "seed.json")


def test_sample_toml_and_json_load_to_the_same_policy():
    toml_policy = load_policy(SAMPLES / "mlflow.toml")
    json_policy = load_policy(SAMPLES / "mlflow.json")
    assert toml_policy == json_policy
    assert toml_policy.source.fmt == "toml" and json_policy.source.fmt == "json"
    assert toml_policy.warnings == () and json_policy.warnings == ()


def test_sample_policy_covers_all_40_mlflow_tools_least_privilege():
    policy = load_policy(SAMPLES / "mlflow.toml")
    assert policy.default == "deny"
    names = {t["name"] for t in TOOLS}
    assert len(names) == 40
    assert set(policy.tools) | {h for h in policy.hide} == names
    by_action: dict[str, set[str]] = {}
    for t in TOOLS:
        by_action.setdefault(policy.action_for(t["name"]), set()).add(t["name"])
    reads = {t["name"] for t in TOOLS if t["annotations"].get("readOnlyHint")}
    assert by_action["hidden"] == {"delete_registered_model", "delete_experiment"}
    assert by_action["deny"] == {"delete_run", "delete_model_version", "delete_model_alias"}
    assert by_action["require_approval"] == {"transition_model_version_stage", "set_model_alias"}
    assert reads < by_action["allow"]
    # every write the agent may make is capped by a limit of its own
    for name in by_action["allow"] - reads:
        assert policy.tools[name].limits, name
    assert policy.tools["set_experiment_tag"].limits[0].describe() == "30 calls per minute per grant"
    assert policy.tools["transition_model_version_stage"].approval_timeout_s == 120.0


def test_sample_policy_decides_like_a_careful_mlops_person():
    policy = load_policy(SAMPLES / "mlflow.toml")

    def code(tool, **args):
        return evaluate(Call("mlflow", tool, args), policy, None, 0.0).code

    assert code("get_run", run_id="r") == "allowed"
    assert code("set_run_tag", run_id="r", key="k", value="v") == "allowed"
    assert code("update_model_version", name="m", version="1", description="  ") == "policy_denied"
    assert code("update_model_version", name="m", version="1", description="better") == "allowed"
    assert code("transition_model_version_stage", name="m", version="1", stage="Staging") == "approval_required"
    assert code("transition_model_version_stage", name="m", version="1", stage="Archived") == "policy_denied"
    assert code("set_model_alias", name="m", alias="champion", version="1") == "approval_required"
    assert code("delete_model_version", name="m", version="1") == "policy_denied"
    assert code("delete_experiment", experiment_id="1") == "hidden"
    assert code("some_new_tool") == "policy_denied"


def test_tomlkit_round_trip_of_the_sample_is_byte_identical():
    text = (SAMPLES / "mlflow.toml").read_text()
    assert tomlkit.dumps(tomlkit.parse(text)) == text


def test_loaded_policy_keeps_the_tomlkit_document_for_edits():
    text = (SAMPLES / "mlflow.toml").read_text()
    policy = parse_policy(text, "toml", "mlflow.toml")
    doc = policy.source.document
    assert isinstance(doc, tomlkit.TOMLDocument) and policy.source.text == text
    doc["tools"]["set_experiment_tag"]["limits"][0]["max"] = 45
    edited = tomlkit.dumps(doc)
    # only the one value changed; every comment and line else is kept
    diff = [(a, b) for a, b in zip(text.splitlines(), edited.splitlines()) if a != b]
    assert diff == [("max = 30", "max = 45")]
    assert "# --- Tags: allowed, capped" in edited
    assert parse_policy(edited, "toml", "mlflow.toml").tools["set_experiment_tag"].limits[0].max == 45


def test_load_picks_format_by_suffix(tmp_path):
    (tmp_path / "p.json").write_text(SEED)
    (tmp_path / "p.toml").write_text(SEED_TOML)
    assert load_policy(tmp_path / "p.json") == load_policy(tmp_path / "p.toml")
    assert load_policy(str(tmp_path / "p.json")).source.path.endswith("p.json")


# --- positions, as a property ---------------------------------------------------

_keys = st.text(alphabet=st.sampled_from("abcxyz_-é \"\\."), min_size=1, max_size=6)
_texts = st.text(alphabet=st.sampled_from("ab \"\\'\n\t#=[]{},é\x85"), max_size=8)
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), _texts)
_json = st.recursive(_scalars, lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(_keys, kids, max_size=3)), max_leaves=8)


def _walk(value, path=()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield path + (k,), "key", k
            yield from _walk(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield path + (i,), "item", v
            yield from _walk(v, path + (i,))


def _offset(text: str, line: int, col: int) -> int:
    # lines end at "\n" only, as in JSON and TOML (not at U+0085 as str.splitlines has it)
    return sum(len(s) + 1 for s in text.split("\n")[: line - 1]) + col - 1


@settings(max_examples=80, deadline=None)
@given(doc=st.dictionaries(_keys, _json, max_size=5), indent=st.sampled_from([None, 2]))
def test_json_positions_point_at_each_key_and_item(doc, indent):
    text = json.dumps(doc, indent=indent, ensure_ascii=False)
    pos = json_positions(text)
    for path, kind, value in _walk(doc):
        off = _offset(text, *pos.at[path])
        if kind == "key":
            assert json.decoder.scanstring(text, off + 1)[0] == path[-1]
        else:
            assert json.JSONDecoder().raw_decode(text, off)[0] == value


@settings(max_examples=80, deadline=None)
@given(doc=st.dictionaries(_keys, st.dictionaries(_keys, _json, max_size=3), max_size=4))
def test_toml_positions_point_at_each_key(doc):
    def clean(v):  # TOML has no null, and tomlkit cannot write U+0085 back
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if x is not None}
        if isinstance(v, list):
            return [clean(x) for x in v if x is not None]
        return v.replace("\x85", "") if isinstance(v, str) else v

    doc = clean(doc)
    text = tomlkit.dumps(doc)
    assert tomlkit.parse(text).unwrap() == doc
    pos = toml_positions(text)
    for path, kind, _ in _walk(doc):
        if kind != "key":
            continue
        line, col = pos.at[path]
        rest = text[_offset(text, line, col):]
        k = path[-1]
        forms = (k, json.dumps(k, ensure_ascii=False), f"'{k}'")
        if rest.startswith("["):  # a [table] header names the key (a super-table's too)
            header = rest.split("\n", 1)[0].rstrip()
            assert any(f in header for f in forms), (header, k)
        else:
            assert any(rest.startswith(f) for f in forms), (rest[:30], k)
