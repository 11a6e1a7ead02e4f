"""Edits of a policy file keep every comment and the layout; JSON stays JSON."""

from __future__ import annotations

import json
import os

import pytest

from mcpguard.policy.edit import (EditError, next_action, set_action, set_hidden, set_max, short_diff,
                                  write_atomic)

TOML = """\
# MLflow: least privilege
version = "1"
default = "deny"   # tools not listed are denied
hide = ["delete_registered_model"]

[tools.get_run]   # reads are free

# tags, capped
[tools.set_experiment_tag]
[[tools.set_experiment_tag.limits]]
counter = "tag_rate"   # shared with set_run_tag
window = "minute"
max = 30
scope = "grant"

[tools.set_run_tag]
[[tools.set_run_tag.limits]]
counter = "tag_rate"
window = "minute"
max = 30
scope = "grant"

[tools.transition_model_version_stage]
action = "require_approval"   # a person decides
"""


def test_set_max_changes_one_number_and_nothing_else():
    src = TOML.replace('counter = "tag_rate"   # shared', 'counter = "experiment_tag_rate"   # not shared', 1)
    out = set_max(src, "toml", tool="set_experiment_tag", delta=-10)
    assert short_diff(src, out) .splitlines()[2:] == ["@@ -13 +13 @@", "-max = 30", "+max = 20"]
    assert "# tags, capped" in out and "# not shared" in out and "# a person decides" in out


def test_set_max_on_a_tool_whose_counter_is_shared_changes_it_everywhere_so_the_policy_still_loads():
    from mcpguard.policy import parse_policy

    out = set_max(TOML, "toml", tool="set_experiment_tag", delta=5)
    assert out.count("max = 35") == 2 and "max = 30" not in out
    assert "# shared with set_run_tag" in out
    policy = parse_policy(out, "toml", "p.toml")
    assert {lim.max for t in ("set_experiment_tag", "set_run_tag") for lim in policy.tools[t].limits} == {35}


def test_set_max_on_a_counter_changes_every_limit_that_names_it():
    out = set_max(TOML, "toml", counter="tag_rate", delta=10)
    assert out.count("max = 40") == 2 and "max = 30" not in out


def test_max_never_goes_below_one():
    out = set_max(TOML, "toml", tool="set_run_tag", delta=-100)
    assert "max = 1\n" in out


def test_set_max_without_a_limit_says_so_and_changes_nothing():
    with pytest.raises(EditError, match="no limits"):
        set_max(TOML, "toml", tool="get_run", delta=1)


def test_set_action_on_listed_and_unlisted_tools():
    out = set_action(TOML, "toml", "transition_model_version_stage", "deny")
    assert 'action = "deny"   # a person decides' in out
    out = set_action(TOML, "toml", "get_experiments", "require_approval")
    assert out.startswith(TOML.rstrip("\n")) and out.rstrip().endswith(
        '[tools.get_experiments]\naction = "require_approval"')


def test_action_cycle():
    assert [next_action(a) for a in (None, "allow", "require_approval", "deny")] == [
        "require_approval", "require_approval", "deny", "allow"]


def test_hide_and_unhide_keep_the_list_and_its_neighbours():
    out = set_hidden(TOML, "toml", "delete_run", True)
    assert 'hide = ["delete_registered_model", "delete_run"]' in out
    back = set_hidden(out, "toml", "delete_run", False)
    assert back == TOML


def test_unhide_of_a_star_hidden_tool_is_refused():
    src = 'version = "1"\ndefault = "deny"\nhide = ["*"]\n'
    with pytest.raises(EditError, match=r'hidden by "\*"'):
        set_hidden(src, "toml", "get_run", False)


def test_json_policy_is_written_back_as_json_in_its_order():
    src = json.dumps({"version": "1", "default": "deny",
                      "tools": {"set_experiment_tag": {"limits": [
                          {"counter": "set_experiment_tag_rate", "window": "minute", "max": 30,
                           "scope": "grant"}]}}}, indent=4) + "\n"
    out = set_max(src, "json", tool="set_experiment_tag", value=5)
    doc = json.loads(out)
    assert list(doc) == ["version", "default", "tools"]
    assert doc["tools"]["set_experiment_tag"]["limits"][0]["max"] == 5
    assert '\n    "version"' in out  # indent kept
    out = set_hidden(out, "json", "delete_run", True)
    assert json.loads(out)["hide"] == ["delete_run"]


def test_an_unparsable_file_is_not_edited():
    with pytest.raises(EditError, match="does not parse"):
        set_max("version = \n", "toml", tool="x", delta=1)


def test_write_atomic_replaces_the_file_and_keeps_its_mode(tmp_path):
    p = tmp_path / "policy.toml"
    p.write_text("old")
    os.chmod(p, 0o640)
    write_atomic(p, "new")
    assert p.read_text() == "new" and (p.stat().st_mode & 0o777) == 0o640
    assert [x.name for x in tmp_path.iterdir()] == ["policy.toml"]  # no temporary file left
