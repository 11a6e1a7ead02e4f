"""Validation: every error at once, each with file, line, column and a hint; one test per kind."""

from __future__ import annotations

import json
from textwrap import dedent

import pytest

from mcpguard.policy import PolicyError, load_policy, parse_policy


def errors(text: str, fmt: str = "toml", path: str = "p.toml") -> list:
    with pytest.raises(PolicyError) as info:
        parse_policy(dedent(text).lstrip("\n"), fmt, path)
    return list(info.value.issues)


def only(text: str, fmt: str = "toml"):
    found = errors(text, fmt, "p." + fmt)
    assert len(found) == 1, [str(i) for i in found]
    return found[0]


HEAD = 'version = "1"\ndefault = "deny"\n'


def test_issue_str_is_file_line_col_message_hint():
    issue = only(HEAD + '[[tools.t.limits]]\ncounter = "c"\nwindow = "minit"\nmax = 3\n')
    assert str(issue) == 'p.toml:5:1: window "minit" is not one of second, minute, hour, day (did you mean "minute"?)'


def test_toml_syntax_error_has_line_and_col():
    issue = only('version = "1"\ndefault = deny\n')
    assert (issue.line, issue.col) == (2, 11)
    assert issue.message.startswith("TOML syntax error: Unexpected character")


def test_json_syntax_error_has_line_and_col():
    issue = only('{"version": "1",\n  "default": "deny",\n}', "json")
    assert (issue.line, issue.col) == (3, 1)
    assert issue.message.startswith("JSON syntax error:")


def test_unknown_top_level_key():
    issue = only(HEAD + 'defualt_timeout = 3\n')
    assert (issue.line, issue.message) == (3, 'unknown key "defualt_timeout"')
    assert "allowed keys: version, default" in issue.hint


def test_unknown_tool_key_suggests_the_right_one():
    issue = only(HEAD + '[tools.t]\nlimit = []\n')
    assert (issue.line, issue.message, issue.hint) == (4, 'unknown key "limit" in tools.t', 'did you mean "limits"?')


def test_unknown_limit_key_in_inline_table_points_at_the_key():
    issue = only(HEAD + '[tools.t]\nlimits = [{ counter = "c", window = "hour", max = 3, per = "grant" }]\n')
    assert (issue.line, issue.col) == (4, 54)
    assert issue.message == 'unknown key "per" in tools.t.limits[0]'


def test_missing_version_and_default_both_reported():
    found = errors('[tools.t]\n')
    assert [i.message for i in found] == ['missing key "version"', 'missing key "default"']


def test_wrong_version():
    issue = only('version = 1\ndefault = "deny"\n')
    assert (issue.line, issue.message, issue.hint) == (1, "version 1 is not supported", 'write version = "1" (a string)')


def test_bad_default():
    issue = only('version = "1"\ndefault = "block"\n')
    assert (issue.line, issue.message) == (2, 'default "block" is not one of allow, deny')


def test_bad_action():
    issue = only(HEAD + '[tools.t]\naction = "alow"\n')
    assert (issue.line, issue.message, issue.hint) == (4, 'action "alow" is not one of allow, deny, require_approval', 'did you mean "allow"?')


def test_wrong_type_of_reason_and_tool_body():
    found = errors(HEAD + 'tools.t = "allow"\n[tools.u]\nreason = 3\n')
    assert [(i.line, i.message) for i in found] == [
        (3, "tools.t must be a table, not a string"),
        (5, "tools.u.reason must be a string, not a number"),
    ]


def test_bad_window_scope_and_max_at_their_lines():
    found = errors(HEAD + '[[tools.t.limits]]\ncounter = "c"\nwindow = "week"\nmax = 0\nscope = "user"\n')
    assert [(i.line, i.message) for i in found] == [
        (5, 'window "week" is not one of second, minute, hour, day'),
        (6, "max must be at least 1, not 0"),
        (7, 'scope "user" is not one of grant, session, client, server, global'),
    ]
    assert found[1].hint == 'to block the tool, use action = "deny"'


def test_max_must_be_whole():
    issue = only(HEAD + '[[tools.t.limits]]\ncounter = "c"\nwindow = "minute"\nmax = 2.5\n')
    assert (issue.line, issue.message) == (6, "max must be a whole number of calls, not 2.5")


def test_missing_limit_keys():
    found = errors(HEAD + '[[tools.t.limits]]\nmax = 3\n')
    assert [(i.line, i.message) for i in found] == [
        (3, 'tools.t.limits[0] is missing "counter"'),
        (3, 'tools.t.limits[0] is missing "window"'),
    ]


def test_counter_defined_twice_differently():
    issue = only(HEAD + dedent('''
        [[tools.a.limits]]
        counter = "writes"
        window = "minute"
        max = 30
        [[tools.b.limits]]
        counter = "writes"
        window = "hour"
        max = 30
    '''))
    assert issue.line == 9
    assert issue.message == ('counter "writes" is defined twice differently: tools.a.limits[0] says 30 calls per minute '
                             'per grant, tools.b.limits[0] says 30 calls per hour per grant')


def test_counter_shared_the_same_way_is_fine():
    text = HEAD + dedent('''
        [[tools.a.limits]]
        counter = "writes"
        window = "minute"
        max = 30
        [[tools.b.limits]]
        counter = "writes"
        window = "minute"
        max = 30
    ''')
    assert parse_policy(text, "toml", "p.toml").counter_names() == {"writes"}


def test_counter_named_twice_in_one_tool_or_also_in_all_tools():
    found = errors(HEAD + dedent('''
        [[all_tools.limits]]
        counter = "all"
        window = "minute"
        max = 100
        [tools.t]
        limits = [
          { counter = "c", window = "minute", max = 3 },
          { counter = "c", window = "minute", max = 3 },
          { counter = "all", window = "minute", max = 100 },
        ]
    '''))
    assert [(i.line, i.message) for i in found] == [
        (11, 'counter "c" is named twice in tools.t.limits'),
        (12, 'counter "all" is already counted for every tool by all_tools.limits[0]'),
    ]


def test_bad_op_bad_path_bad_regex_in_one_entry():
    found = errors(HEAD + dedent('''
        [[tools.t.deny_if]]
        conditions = [
          { path = "stage", op = "eq", value = "x" },
          { path = "args.stage", op = "equals", value = "x" },
          { path = "args.stage", op = "regex", value = "(" },
        ]
    '''))
    assert [(i.line, i.col, i.message) for i in found] == [
        (6, 5, 'path "stage" must point into the arguments: args.NAME'),
        (7, 26, 'op "equals" is not one of eq, neq, in, not_in, lt, lte, gt, gte, regex, contains, exists'),
        (8, 40, "bad regex '(': missing ), unterminated subpattern at position 0"),
    ]
    assert found[0].hint == 'write "args.stage"'


def test_op_value_types():
    found = errors(HEAD + dedent('''
        [[tools.t.deny_if]]
        conditions = [
          { path = "args.a", op = "in", value = "x" },
          { path = "args.a", op = "gt", value = [1] },
          { path = "args.a", op = "eq" },
          { path = "args.a", op = "exists", value = "yes" },
        ]
    '''))
    assert [(i.line, i.message) for i in found] == [
        (6, "value of op \"in\" must be a list, not 'x'"),
        (7, 'value of op "gt" must be a number or a string, not [1]'),
        (8, 'op "eq" needs a value'),
        (9, "value of op \"exists\" must be true or false, not 'yes'"),
    ]


def test_entries_need_conditions():
    found = errors(HEAD + '[[tools.t.require]]\non_deny = "x"\n[[tools.t.deny_if]]\nconditions = []\n')
    assert [(i.line, i.message) for i in found] == [
        (3, 'tools.t.require[0] is missing "conditions"'),
        (6, "tools.t.deny_if[0].conditions must be a non-empty list"),
    ]


def test_bad_risk_and_bad_durations():
    found = errors('version = "1"\ndefault = "deny"\napproval_timeout = "soon"\n[tools.t]\nrisk = "huge"\napproval_timeout = -5\n')
    assert [(i.line, i.message) for i in found] == [
        (3, "approval_timeout: 'soon' is not a duration (use a number of seconds or '30s', '2m', '1h')"),
        (5, 'risk "huge" is not one of low, medium, high, critical'),
        (6, "tools.t.approval_timeout: duration -5 is negative"),
    ]


def test_bad_on_tool_change_and_hide_entries():
    found = errors(HEAD + 'on_tool_change = "block"\nhide = ["a", 3, ""]\n')
    assert [(i.line, i.col, i.message) for i in found] == [
        (3, 1, 'on_tool_change "block" is not one of warn, deny'),
        (4, 14, "hide[1] must be a tool name, not 3"),
        (4, 17, "hide[2] must be a tool name, not ''"),
    ]


def test_json_duplicate_key_and_errors_at_json_positions():
    text = '{\n  "version": "1",\n  "default": "deny",\n  "tools": {\n    "t": {"limits": [{"counter": "c", "window": "minit", "max": 3}]},\n    "t": {}\n  }\n}\n'
    found = errors(text, "json", "p.json")
    assert [(i.line, i.col, i.message) for i in found] == [(6, 5, 'key "t" appears twice in tools')]
    text2 = '{\n  "version": "1",\n  "default": "deny",\n  "tools": {\n    "t": {"limits": [{"counter": "c", "window": "minit", "max": 3}]}\n  }\n}\n'
    (issue,) = errors(text2, "json", "p.json")
    assert (issue.file, issue.line, issue.col) == ("p.json", 5, 39)
    assert issue.message == 'window "minit" is not one of second, minute, hour, day'


def test_every_error_is_reported_at_once_in_file_order():
    text = dedent('''
        version = "1"
        default = "maybe"
        bogus = true
        [tools.a]
        action = "nope"
        [[tools.a.limits]]
        counter = "c"
        window = "minit"
        max = -1
    ''').lstrip()
    found = errors(text)
    assert [i.line for i in found] == [2, 3, 5, 8, 9]


def test_hidden_tool_with_rules_is_a_warning_not_an_error():
    policy = parse_policy(HEAD + 'hide = ["t"]\n[tools.t]\naction = "deny"\n', "toml", "p.toml")
    (w,) = policy.warnings
    assert (w.line, w.message) == (4, "t is hidden, so its rules never apply")


def test_unreadable_file(tmp_path):
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path / "missing.toml")
    (issue,) = info.value.issues
    assert issue.message == "cannot read policy: No such file or directory"
    assert issue.file.endswith("missing.toml")


@pytest.mark.parametrize("state, message", [
    ("folder", "cannot read policy: it is a folder, not a file"),
    ("pipe", "cannot read policy: it is a named pipe (FIFO), not a file"),  # and no hang waiting for a writer
    ("loop", "cannot read policy: Too many levels of symbolic links"),
    ("latin-1", "cannot read policy: not UTF-8 text (byte 0xe9 at line 3, column 4)"),
    ("device", "cannot read policy: it is a character device, not a file"),
])
def test_a_policy_that_is_not_readable_text_is_a_policy_error_at_1_1(tmp_path, state, message):
    import os

    path = tmp_path / "p.toml"
    if state == "folder":
        path.mkdir()
    elif state == "pipe":
        os.mkfifo(path)
    elif state == "loop":
        path.symlink_to("q.toml")
        (tmp_path / "q.toml").symlink_to("p.toml")
    elif state == "latin-1":
        path.write_bytes(HEAD.encode() + '# r\u00e9sum\u00e9 caf\u00e9\n'.encode("latin-1"))
    else:
        path.symlink_to(os.devnull)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    (issue,) = info.value.issues
    assert (issue.file, issue.line, issue.col, issue.message) == (str(path), 1, 1, message)
    assert issue.hint  # what to do about it


def test_top_level_not_an_object():
    issue = only("[1, 2]", "json")
    assert issue.message == "the policy must be a table, not a list"


def test_array_of_tables_under_array_of_tables_positions():
    # [[tools.t.deny_if]] then a nested [[tools.t.deny_if.conditions]]
    text = HEAD + dedent('''
        [[tools.t.deny_if]]
        on_deny = "first"
        [[tools.t.deny_if.conditions]]
        path = "args.a"
        op = "exists"
        [[tools.t.deny_if]]
        on_deny = "second"
        [[tools.t.deny_if.conditions]]
        path = "args.b"
        op = "eqq"
    ''')
    issue = only(text)
    assert (issue.line, issue.message) == (13, 'op "eqq" is not one of eq, neq, in, not_in, lt, lte, gt, gte, regex, contains, exists')


def test_json_v1_with_every_policylayer_field_loads_unchanged():
    doc = {
        "version": "1",
        "default": "allow",
        "hide": ["delete_account"],
        "all_tools": {"limits": [{"counter": "all", "window": "hour", "max": 1000, "scope": "grant"}]},
        "tools": {
            "create_charge": {
                "require": [{"conditions": [{"path": "args.reason", "op": "exists"}], "on_deny": "Give a reason."}],
                "deny_if": [{"conditions": [{"path": "args.amount", "op": "gt", "value": 10000}]}],
                "limits": [{"counter": "charges", "window": "minute", "max": 30, "scope": "grant"}],
            },
            "list_customers": {},
        },
    }
    policy = parse_policy(json.dumps(doc, indent=2), "json", "p.json")
    assert policy.hide == ("delete_account",)
    rule = policy.tools["create_charge"]
    assert rule.require[0].on_deny == "Give a reason."
    assert rule.deny_if[0].conditions[0].value == 10000
    assert [lim.path for lim in policy.limits_for("create_charge")] == ["tools.create_charge.limits[0]", "all_tools.limits[0]"]


def test_a_string_left_open_says_unterminated_at_its_line_not_control_characters():
    text = 'version = "1"\ndefault = "deny"\n\n[tools.delete_run]\naction = "deny"\nreason = "Runs are records\n'
    with pytest.raises(PolicyError) as err:
        parse_policy(text, "toml", "p.toml")
    (issue,) = err.value.issues
    assert issue.line == 6 and "unterminated string" in issue.message and "Control characters" not in issue.message
    with pytest.raises(PolicyError) as err:
        parse_policy('version = "1\x01"\n', "toml", "p.toml")
    assert "U+0001" in err.value.issues[0].message
