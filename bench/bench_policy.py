"""Decisions per second for the 40-tool MLflow sample policy, counters included.

Each decision is what the gateway does per `tools/call`: `evaluate` (which
checks the limits), then, for an allowed call, `Counters.try_consume` of its
limits. The calls cycle through all 40 tools of the MLflow MCP server with
realistic arguments, from 8 grants, on a simulated clock of 100 calls per
second, so counters fill, slide and rate-limit as in a busy session. One
process, one core. Goal (issue 2): >= 100,000 decisions per second.

It also times loading: `parse_policy` of the sample's TOML and JSON forms
(parse, validate, build the `Policy`; the file read is left out), median of
`--loads` runs.

    .venv/bin/python bench/bench_policy.py [--seconds 3] [--loads 200]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from mcpguard.call import Call
from mcpguard.policy import evaluate, load_policy, parse_policy
from mcpguard.ratelimit import Counters

ROOT = Path(__file__).resolve().parent.parent

ARGS = {
    "transition_model_version_stage": [{"name": "m", "version": "3", "stage": "Staging"},
                                       {"name": "m", "version": "3", "stage": "Archived"}],
    "update_model_version": [{"name": "m", "version": "3", "description": "retrained on May data"},
                             {"name": "m", "version": "3", "description": " "}],
    "set_experiment_tag": [{"experiment_id": "1", "key": "owner", "value": "ana"}],
    "set_run_tag": [{"run_id": "abc", "key": "note", "value": "ok"}],
}


def calls() -> list[Call]:
    tools = json.loads((ROOT / "tests" / "mlflow_tools.json").read_text())["tools"]
    out = []
    for g in range(8):
        for t in tools:
            for args in ARGS.get(t["name"], [{"run_id": "abc", "name": "m", "version": "1"}]):
                out.append(Call("mlflow", t["name"], args, grant=f"agent-{g}", session_id=f"s{g}", client="bench"))
    return out


def evaluate_only(policy, work, seconds: float) -> float:
    """Decisions per second of `evaluate` alone (no counters), to tell the policy's share."""
    n = 0
    sim = 0.0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for c in work:
            sim += 0.01
            evaluate(c, policy, None, sim)
        n += len(work)
    return n / (time.perf_counter() - start)


def load_ms(fmt: str, runs: int) -> float:
    """Median milliseconds of one `parse_policy` of the sample policy in `fmt` (`toml` or `json`)."""
    name = f"mlflow.{fmt}"
    text = (ROOT / "sample_policies" / name).read_text(encoding="utf-8")
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        parse_policy(text, fmt, name)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="how long to run (wall clock)")
    parser.add_argument("--loads", type=int, default=200, help="parse_policy runs per format (median)")
    ns = parser.parse_args()
    policy = load_policy(ROOT / "sample_policies" / "mlflow.toml")
    counters = Counters("mlflow")
    work = calls()
    outcomes: Counter[str] = Counter()
    n = 0
    sim = 0.0
    start = time.perf_counter()
    deadline = start + ns.seconds
    while time.perf_counter() < deadline:
        for c in work:
            sim += 0.01
            d = evaluate(c, policy, counters, sim)
            if d.action == "allow" and counters.try_consume(d.limits, c, sim) is not None:
                outcomes["rate_limited_at_consume"] += 1
            else:
                outcomes[d.code] += 1
        n += len(work)
    elapsed = time.perf_counter() - start
    rate = n / elapsed
    print(f"{n} decisions in {elapsed:.2f} s: {rate:,.0f} decisions/s "
          f"({1e6 / rate:.2f} µs each; policy: {len(policy.tools)} tools listed, {len(policy.counter_names())} counters)")
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in outcomes.most_common()))
    print("goal >= 100,000/s: " + ("met" if rate >= 100_000 else "NOT met"))
    print(f"evaluate alone (no counters): {evaluate_only(policy, work, ns.seconds / 3):,.0f} decisions/s")
    print(f"parse_policy of the sample (median of {ns.loads}): mlflow.toml {load_ms('toml', ns.loads):.2f} ms, "
          f"mlflow.json {load_ms('json', ns.loads):.2f} ms")


if __name__ == "__main__":
    main()
