"""Risk classes: the 40 real MLflow MCP tools, the annotation rules, overrides."""

from __future__ import annotations

import json
from pathlib import Path

import mcp_types
import pytest

from mcpguard.risk import LEVELS, Risk, classify, level_rank, name_words

TOOLS = json.loads((Path(__file__).parent / "mlflow_tools.json").read_text())["tools"]

READS = [
    "get_experiments", "search_experiments", "get_experiment_by_name", "get_experiment_metrics",
    "get_experiment_params", "get_experiment_tags", "get_runs", "get_run", "get_parent_run",
    "query_runs", "get_run_artifacts", "get_run_artifact", "get_run_metrics", "get_run_metric",
    "get_best_run", "compare_runs", "get_registered_models", "get_model_versions",
    "get_model_version", "get_registered_model", "get_model_version_by_alias",
    "get_latest_versions", "search_runs_by_tags", "get_artifact_content", "search_logged_models",
    "get_logged_model", "health",
]

# What a careful person says about each tool of mlflow-mcp 0.4.1 (level, kind, source).
EXPECTED = {
    **{name: ("low", "read", "annotations") for name in READS},
    # writes: a value the caller can set back
    "register_model": ("medium", "write", "name"),  # only readOnlyHint: false; "register" settles it
    "copy_model_version": ("medium", "write", "name"),  # creates a new version elsewhere
    "set_registered_model_tag": ("medium", "write", "annotations"),
    "set_run_tag": ("medium", "write", "annotations"),
    "set_experiment_tag": ("medium", "write", "annotations"),  # idempotent setter, destructiveHint omitted
    "update_model_version": ("medium", "write", "annotations"),
    "set_model_alias": ("high", "write", "annotations"),  # moves what 'champion' serves
    # destructive
    "transition_model_version_stage": ("high", "destructive", "annotations"),  # can be moved back
    "delete_model_alias": ("high", "destructive", "annotations"),  # the version stays
    "delete_run": ("high", "destructive", "annotations"),  # soft delete, recoverable
    "delete_experiment": ("high", "destructive", "annotations"),  # soft delete, recoverable
    "delete_model_version": ("critical", "destructive", "annotations"),  # irreversible
    "delete_registered_model": ("critical", "destructive", "annotations"),  # irreversible, all versions
}


def test_the_table_covers_every_real_tool():
    assert sorted(EXPECTED) == sorted(t["name"] for t in TOOLS)
    assert len(TOOLS) == 40


@pytest.mark.parametrize("tool", TOOLS, ids=lambda t: t["name"])
def test_every_mlflow_tool(tool):
    risk = classify(tool["name"], tool.get("annotations"), tool.get("description"))
    assert (risk.level, risk.kind, risk.source) == EXPECTED[tool["name"]], risk.reason
    assert risk.reason


def test_the_examples_the_issue_names():
    by_name = {t["name"]: t for t in TOOLS}

    def of(name: str) -> Risk:
        t = by_name[name]
        return classify(name, t["annotations"], t["description"])

    assert "destructiveHint" not in by_name["set_experiment_tag"]["annotations"]
    assert of("set_experiment_tag") == Risk("medium", "write", "annotations")
    assert of("transition_model_version_stage").level == "high"
    assert of("delete_registered_model").level == "critical"
    assert of("get_run") == Risk("low", "read", "annotations")


def test_typed_annotations_read_like_json_ones():
    typed = mcp_types.ToolAnnotations(read_only_hint=False, idempotent_hint=True)
    assert classify("set_experiment_tag", typed) == Risk("medium", "write", "annotations")
    assert classify("x", mcp_types.ToolAnnotations(read_only_hint=True)).kind == "read"
    assert classify("x", {"read_only_hint": True}).kind == "read"


def test_spec_defaults_apply_when_nothing_settles_them():
    # not read-only, destructiveHint omitted, not idempotent, no known verb: may be destructive
    r = classify("frobnicate", {"readOnlyHint": False})
    assert (r.kind, r.source) == ("destructive", "annotations")
    # explicit destructiveHint: false is an additive write
    assert classify("frobnicate", {"destructiveHint": False}) == Risk("medium", "write", "annotations")
    # readOnlyHint: false on a read-sounding name: it changes something
    assert classify("get_or_create_user", {"readOnlyHint": False}).kind == "write"
    # annotations with no behavioural hint say nothing
    assert classify("get_x", {"title": "X", "openWorldHint": True}) == Risk("low", "read", "name")


def test_annotations_may_raise_but_never_lower_the_name():
    r = classify("delete_everything", {"readOnlyHint": True})
    assert (r.level, r.kind, r.source) == ("critical", "destructive", "name")
    r = classify("get_things", {"readOnlyHint": False, "destructiveHint": True})
    assert (r.kind, r.source) == ("destructive", "annotations")


def test_names_alone():
    assert classify("list_models") == Risk("low", "read", "name")
    assert classify("create_experiment") == Risk("medium", "write", "name")
    assert classify("promote_model") == Risk("high", "write", "name")
    assert classify("purge_runs") == Risk("critical", "destructive", "name")
    assert classify("delete_run", description="Moves it to trash; recoverable.").level == "high"
    assert classify("delete_run", description="Cannot be undone, not recoverable.").level == "critical"
    assert classify("removeTag").level == "high"
    for name in ("exec", "run_command", "shell", "execute_python", "run_script"):
        assert classify(name) == Risk("critical", "execute", "name"), name
    assert classify("get_run").kind == "read"  # "run" is a noun here
    assert classify("run_query").source == "default"


def test_nothing_known_is_high_by_default():
    assert classify("frobnicate") == Risk("high", "destructive", "default")
    assert classify("") == Risk("high", "destructive", "default")


def test_policy_override_wins():
    ann = {"readOnlyHint": True}
    assert classify("get_run", ann, override="high") == Risk("high", "read", "policy")
    assert classify("delete_registered_model", override="low").level == "low"
    assert classify("x", override=Risk("medium", "write", "default")) == Risk("medium", "write", "policy")
    with pytest.raises(ValueError, match="not one of low, medium, high, critical"):
        classify("get_run", override="severe")


def test_levels_are_ordered():
    assert [level_rank(x) for x in LEVELS] == [0, 1, 2, 3]
    assert Risk("low", "read", "name").rank < Risk("critical", "execute", "name").rank
    with pytest.raises(ValueError):
        Risk("huge", "read", "name")
    with pytest.raises(ValueError):
        Risk("low", "readish", "name")
    with pytest.raises(ValueError):
        Risk("low", "read", "guess")


def test_name_words():
    assert name_words("deleteModelVersion") == ["delete", "model", "version"]
    assert name_words("delete-model.version") == ["delete", "model", "version"]
    assert name_words("getHTTPStatus") == ["get", "http", "status"]
