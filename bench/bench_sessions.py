"""Many never-closed agent sessions on a `shared` server: the gateway's memory and upstream processes.

    .venv/bin/python bench/bench_sessions.py                    # 10,000 sessions, 32 opened at a time
    .venv/bin/python bench/bench_sessions.py --sessions 2000 --per-session

`mcpguard serve` runs in front of the real `mlflow-mcp` 0.4.1 (a
handshake-era stdio upstream, from the MLflow environment `dev.py test`
installs) with `upstream_sessions = "shared"` and `max_sessions` above the
count. A load process opens handshake-era sessions (`initialize` and
`notifications/initialized` over Streamable HTTP, as an agent does) and
never closes them. Printed as it goes and at the end: sessions open, the
gateway's RSS (MiB), the `mlflow-mcp` processes running under it, and the
time an `initialize` took (p50, p99). `--per-session` runs the same against
`upstream_sessions = "per_session"` for comparison (each session then starts
its own `mlflow-mcp`, so keep `--sessions` small). Bounded: the sessions
count, a 20-minute cap, and every process started here is stopped by its pid.

First, untimed against the bulk, it opens `--ready` sessions one at a time
with the SDK's own `ClientSession` (the `initialize` handshake and
`notifications/initialized`, as an agent does) and prints how long a new
agent session took to be ready (p50, max).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import log  # bench/common.py (scripts run from bench/)

import httpx2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mcpguard.stack import ensure_mlflow_env, free_port  # noqa: E402

HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}
WALL_CAP_S = 20 * 60


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def upstreams_under(pid: int) -> int:
    """Processes whose parent is `pid` and whose command line runs mlflow-mcp."""
    n = 0
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
            cmd = Path(f"/proc/{p}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"mlflow-mcp" in cmd:
            n += 1
    return n


async def ready_times(url: str, n: int) -> list[float]:
    """Seconds for each of `n` real SDK client sessions, opened one after another, to finish the handshake."""
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    took = []
    async with httpx2.AsyncClient(timeout=60) as http:
        for _ in range(n):
            t0 = time.perf_counter()
            async with streamable_http_client(url, http_client=http) as (r, w), ClientSession(r, w) as s:
                await s.initialize()
                took.append(time.perf_counter() - t0)
    return took


async def open_sessions(url: str, total: int, concurrency: int, pid: int, deadline: float) -> list[float]:
    took: list[float] = []
    opened = 0
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx2.AsyncClient(timeout=60, limits=limits) as http:

        async def one() -> None:
            nonlocal opened
            t0 = time.perf_counter()
            r = await http.post(url, json=INIT, headers=HEADERS)
            if r.status_code != 200:
                raise RuntimeError(f"initialize answered {r.status_code}: {r.text[:200]}")
            sid = r.headers["mcp-session-id"]
            r = await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                                headers={**HEADERS, "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"})
            took.append(time.perf_counter() - t0)
            opened += 1

        step = max(1, total // 10)
        for start in range(0, total, concurrency):
            if time.monotonic() > deadline:
                log("time cap reached")
                break
            await asyncio.gather(*(one() for _ in range(min(concurrency, total - start))))
            if opened % step < concurrency:
                log(f"{opened:>6} sessions open: gateway RSS {rss_mib(pid):7.1f} MiB, "
                    f"{upstreams_under(pid)} mlflow-mcp process(es)")
    return took


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--per-session", action="store_true", help="upstream_sessions = per_session instead")
    ap.add_argument("--ready", type=int, default=20, help="sessions opened one at a time first, timed")
    args = ap.parse_args(argv)
    env = ensure_mlflow_env()
    work = Path(tempfile.mkdtemp(prefix="mcpguard-sessions-"))
    port = free_port()
    (work / "p.toml").write_text('version = "1"\ndefault = "allow"\n', encoding="utf-8")
    mode = "per_session" if args.per_session else "shared"
    (work / "mcpguard.toml").write_text(
        f'[gateway]\nport = {port}\naudit_log = ""\nurl_file = ""\nsession_idle_timeout = "1h"\n\n'
        f'[servers.mlflow]\ncommand = {json.dumps(str(env / "bin" / "mlflow-mcp"))}\npolicy = "p.toml"\n'
        f'upstream_sessions = "{mode}"\nmax_sessions = {args.sessions + 10}\n'
        f'env = {{ MLFLOW_TRACKING_URI = "http://127.0.0.1:1", MLFLOW_HTTP_REQUEST_MAX_RETRIES = "0" }}\n',
        encoding="utf-8")
    out = open(work / "serve.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "mcpguard", "serve", "--config", str(work / "mcpguard.toml")],
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/mcp/mlflow"
        for _ in range(600):
            try:
                httpx2.get(url, timeout=1)
                break
            except httpx2.TransportError:
                time.sleep(0.1)
        time.sleep(1.0)
        before = rss_mib(proc.pid)
        log(f"{mode}: gateway up, RSS {before:.1f} MiB, {upstreams_under(proc.pid)} mlflow-mcp process(es)")
        ready = asyncio.run(ready_times(url, args.ready))
        took = asyncio.run(open_sessions(url, args.sessions, args.concurrency, proc.pid, time.monotonic() + WALL_CAP_S))
        time.sleep(1.0)
        after = rss_mib(proc.pid)
        ups = upstreams_under(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        out.close()
    xs = sorted(took)
    print()
    if ready:
        print(f"a new agent session (SDK ClientSession, one at a time) ready in: p50 "
              f"{statistics.median(ready) * 1000:.1f} ms, max {max(ready) * 1000:.1f} ms over {len(ready)}")
    print(f"mcpguard bench_sessions ({mode}): {len(took)} sessions opened and left open, "
          f"{args.concurrency} at a time, {os.cpu_count()} CPUs")
    print(f"gateway RSS: {before:.1f} MiB at start -> {after:.1f} MiB "
          f"({(after - before) * 1024 / max(1, len(took)):.1f} KiB per session)")
    print(f"mlflow-mcp processes under the gateway: {ups}")
    if xs:
        print(f"initialize + initialized: p50 {statistics.median(xs) * 1000:.1f} ms, "
              f"p99 {xs[int(0.99 * (len(xs) - 1))] * 1000:.1f} ms (with {args.concurrency} in flight)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
