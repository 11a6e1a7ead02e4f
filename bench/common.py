"""What the benchmark scripts share: the policy they run under and their log line."""

from __future__ import annotations

import sys

# Two limits every call is checked and counted against (so the counters' cost is
# in every figure), with maxima no benchmark run reaches.
POLICY = """\
version = "1"
default = "deny"

[[all_tools.limits]]
counter = "all_calls"
window = "minute"
max = 10000000
scope = "global"

[tools.echo]
[[tools.echo.limits]]
counter = "echo_rate"
window = "second"
max = 1000000
scope = "grant"
"""


def log(msg: str) -> None:
    """One progress line on stderr, so the printed table stays clean on stdout."""
    print(f"[bench] {msg}", file=sys.stderr, flush=True)
