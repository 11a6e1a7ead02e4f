"""Replay speed: recorded calls decided again per second, reading the audit log included.

    .venv/bin/python bench/bench_replay.py [--calls 100000] [--rounds 3] [--profile /tmp/replay.pstats]

A synthetic audit log of `--calls` recorded `tools/call`s is written first,
untimed, by the real writer (`mcpguard.audit.AuditLog.record_event` from
`CallReceived`, `CallDecided` and `CallCompleted` events, so every line has the
real record shape: a `decision` and a `completion` record per call, secrets
redacted), with decisions made by `evaluate` under the 40-tool MLflow sample
policy and its counters: the 40 tools of the MLflow MCP server with realistic
arguments, 8 grants with a session each, 100 calls per second on a simulated
clock (so minute windows fill and slide), a few arguments the log redacts.

Then each round times what `mcpguard replay --json` does before printing:
`read_calls` (read and parse every line, join completions to decisions) and
`what_would_change` under NEW, the sample policy with its write limits cut
by three and a `deny_if` on an argument added, so counters fill, slide and
rate-limit and conditions are tested on every call. Printed per phase and in
total: seconds, calls per second, microseconds per call; then what the
replay found. One process, one core. Goal: >= 100,000 calls/s in total.
`--profile FILE` runs one more round under cProfile and prints the top
functions by own time (the profiler slows it about twofold).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import log  # bench/common.py (scripts run from bench/)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mcpguard.audit import AuditLog  # noqa: E402
from mcpguard.call import Call  # noqa: E402
from mcpguard.events import CallCompleted, CallDecided, CallReceived  # noqa: E402
from mcpguard.policy import evaluate, load_policy, parse_policy  # noqa: E402
from mcpguard.ratelimit import Counters  # noqa: E402
from mcpguard.whatif import read_calls, what_would_change  # noqa: E402

SAMPLE = ROOT / "sample_policies" / "mlflow.toml"
RATE = 100.0  # recorded calls per second of simulated time

ARGS = {
    "transition_model_version_stage": [{"name": "churn", "version": "3", "stage": "Staging"},
                                       {"name": "churn", "version": "3", "stage": "Archived"}],
    "update_model_version": [{"name": "churn", "version": "3", "description": "retrained on May data"},
                             {"name": "churn", "version": "3", "description": " "}],
    "set_experiment_tag": [{"experiment_id": "1", "key": "owner", "value": "ana"}],
    "set_run_tag": [{"run_id": "6f1c2b9e", "key": "note", "value": "ok"},
                    {"run_id": "6f1c2b9e", "key": "deploy_target", "value": "eu-west"},
                    {"run_id": "6f1c2b9e", "key": "note", "value": "ok", "api_token": "tok-123"}],  # redacted
    "set_registered_model_tag": [{"name": "churn", "key": "team", "value": "risk"}],
    "search_runs": [{"experiment_ids": ["1", "2"], "filter_string": "metrics.val_accuracy > 0.9",
                     "max_results": 50}],
}
DEFAULT_ARGS = [{"run_id": "6f1c2b9e", "name": "churn", "version": "1"}]


def new_policy() -> str:
    """The sample policy with its write limits cut by three and two deny_if on set_run_tag:
    one on its key, one on a token the log redacts (so those calls cannot be decided again)."""
    text = SAMPLE.read_text(encoding="utf-8")
    for old, new in (("max = 30", "max = 10"), ("max = 20", "max = 7")):
        text = text.replace(old, new)
    return text + """
[[tools.set_run_tag.deny_if]]
conditions = [{ path = "args.key", op = "regex", value = "^(deploy|release)" }]
on_deny = "Deployment tags are set by the pipeline."

[[tools.set_run_tag.deny_if]]
conditions = [{ path = "args.api_token", op = "eq", value = "tok-revoked" }]
on_deny = "That token was revoked."
"""


def write_log(path: Path, n: int) -> dict[str, int]:
    """`n` recorded calls at RATE per second, decided under the sample policy; returns codes -> count."""
    tools = [t["name"] for t in json.loads((ROOT / "tests" / "mlflow_tools.json").read_text())["tools"]]
    policy = load_policy(SAMPLE)
    counters = Counters("mlflow")
    work = []
    for g in range(8):
        for t in tools:
            for args in ARGS.get(t, DEFAULT_ARGS):
                work.append((t, args, f"agent-{g}", f"sess-{g:02d}-4f1c9a7e2b0d4c8e", "claude-code"))
    codes: dict[str, int] = {}
    t0 = 1_780_000_000.0
    with AuditLog(path) as audit:
        for i in range(n):
            tool, args, grant, session, client = work[i % len(work)]
            ts = t0 + i / RATE
            cid = f"bench-{i}"
            call = Call("mlflow", tool, args, grant=grant, session_id=session, client=client, call_id=cid)
            d = evaluate(call, policy, counters, ts)
            outcome = d.code
            if d.action != "deny" and d.limits and counters.try_consume(d.limits, call, ts) is not None:
                outcome = "rate_limited"
            elif d.action == "require_approval":
                outcome = "approved" if i % 3 else "approval_denied"
            codes[d.code] = codes.get(d.code, 0) + 1
            audit.record_event(CallReceived(call_id=cid, server="mlflow", tool=tool, arguments=args, grant=grant,
                                            session_id=session, client=client, ts=ts))
            audit.record_event(CallDecided(call_id=cid, server="mlflow", tool=tool, action=d.action, code=d.code,
                                           rule=d.rule, message=d.message, retry_after_s=d.retry_after_s,
                                           risk="medium", ts=ts))
            audit.record_event(CallCompleted(call_id=cid, server="mlflow", tool=tool, outcome=outcome,
                                             is_error=d.action == "deny", duration_ms=12.5, result_size=300,
                                             ts=ts + 0.0125))
    return codes


def one_round(path: Path, policy) -> tuple[tuple[float, float], tuple[float, float], object, object]:
    """((wall, cpu) seconds of read_calls, (wall, cpu) of what_would_change, what they returned)."""
    w0, c0 = time.perf_counter(), time.process_time()
    found = read_calls(path)
    w1, c1 = time.perf_counter(), time.process_time()
    report = what_would_change(found.calls, policy)
    w2, c2 = time.perf_counter(), time.process_time()
    return (w1 - w0, c1 - c0), (w2 - w1, c2 - c1), found, report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=100_000, help="recorded calls in the synthetic log (default 100,000)")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3; the median is printed)")
    ap.add_argument("--profile", metavar="FILE", help="one more round under cProfile; pstats to FILE")
    ns = ap.parse_args()
    policy = parse_policy(new_policy(), "toml", "new.toml")
    with tempfile.TemporaryDirectory(prefix="mcpguard-bench-replay-") as tmp:
        path = Path(tmp) / "audit.jsonl"
        log(f"writing {ns.calls:,} recorded calls with the real audit writer ...")
        t = time.perf_counter()
        codes = write_log(path, ns.calls)
        size = path.stat().st_size
        log(f"... {size / 1e6:.1f} MB, {2 * ns.calls:,} records, in {time.perf_counter() - t:.1f} s; "
            "recorded: " + ", ".join(f"{k} {v}" for k, v in sorted(codes.items(), key=lambda kv: -kv[1])))
        rounds = []
        found = report = None
        for r in range(ns.rounds):
            found = report = None  # each round starts with only the log on disk, as the CLI does
            gc.collect()
            read, replay, found, report = one_round(path, policy)
            rounds.append((read, replay))
            log(f"round {r + 1}: read {read[0]:.3f} s wall / {read[1]:.3f} s CPU, "
                f"replay {replay[0]:.3f} s wall / {replay[1]:.3f} s CPU")
        n = len(found.calls)
        assert n == ns.calls and not found.unreadable, (n, found.unreadable[:3])
        med = lambda xs: statistics.median(xs)  # noqa: E731
        phases = [
            ("read_calls (read, parse, join)", med(r[0][0] for r in rounds), med(r[0][1] for r in rounds)),
            ("what_would_change (decide, count)", med(r[1][0] for r in rounds), med(r[1][1] for r in rounds)),
            ("total", med(r[0][0] + r[1][0] for r in rounds), med(r[0][1] + r[1][1] for r in rounds)),
        ]
        print(f"{n:,} recorded calls ({size / 1e6:.1f} MB, {2 * n:,} records), median of {ns.rounds} rounds "
              "(CPU time is steadier than wall time on a shared machine):")
        for name, wall, cpu in phases:
            print(f"  {name:<36} {n / cpu:>9,.0f} calls/s CPU ({1e6 * cpu / n:5.2f} µs/call)"
                  f"  {n / wall:>9,.0f} calls/s wall ({wall:.3f} s)")
        total_s = phases[-1][2]
        print(f"found: {report.changed:,} would change ("
              + ", ".join(f"{k} {v:,}" for k, v in report.counts.items() if v)
              + f"), {len(report.unknown):,} depend on redacted arguments")
        rate = n / total_s
        print("goal >= 100,000 calls/s in total (CPU): " + ("met" if rate >= 100_000 else "NOT met")
              + f" ({rate:,.0f}/s)")
        if ns.profile:
            prof = cProfile.Profile()
            prof.enable()
            one_round(path, policy)
            prof.disable()
            prof.dump_stats(ns.profile)
            print(f"\nprofile (cProfile, own time, top 15; pstats in {ns.profile}):")
            pstats.Stats(prof).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
