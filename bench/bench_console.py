"""Console benchmark: the Textual console, headless, under a steady stream of calls.

    .venv/bin/python bench/bench_console.py                   # 500 calls/s for 20 s, each mode once
    .venv/bin/python bench/bench_console.py --rate 300 --seconds 10 --rounds 3
    .venv/bin/python bench/bench_console.py --modes child     # only the console as `mcpguard console` runs
    .venv/bin/python bench/bench_console.py --short           # smoke run: 100 calls/s for 3 s

Modes, run in the order given each round (interleaved over `--rounds`):

- `headless`: `mcpguard serve` in its own process, nothing attached: the
  calls/s the console modes are compared with;
- `child`: what `mcpguard console` runs: `ConsoleApp` headless
  (`App.run_test`, 120x36) in this process, its gateway a child process
  (`mcpguard serve --console`) it attaches to through the control endpoint
  (the same path as `console --attach`);
- `in-process`: `ConsoleApp.embedded`, the gateway in the console's own
  event loop (how the console ran before it moved the gateway out).

Every mode serves `bench/echo_server.py` (mcp 2.x SDK, stdio) under a
policy with two limits that never trip, with the audit log on. A second
process (this script with `--load`) opens `--clients` real `mcp` 2.x client
sessions over Streamable HTTP and calls `echo` on an open-loop schedule of
`--rate` calls per second, at most `--in-flight` outstanding per session (a
late call is sent as soon as a slot frees: when the gateway cannot keep up,
the achieved rate says so). A 10 ms ticker in the console's loop measures
how late it wakes (the lag a person feels as a frozen screen).

Printed per run: calls/s asked and achieved (and as a share of the round's
headless run), the agent's latency, the gateway's CPU per call and RSS, the
console's loop lag (worst, p99, p50), CPU per call, RSS and its growth, the
table's rows against `max_rows`, events the console dropped, audit records.
Bounded: the load stops after `--seconds` or `rate x seconds` calls, every
wait has a deadline, and every process started is stopped by its pid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import POLICY, log  # bench/common.py (scripts run from bench/)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ECHO = Path(__file__).resolve().with_name("echo_server.py")
TICK_S = 0.010
SIZE = (120, 36)


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux /proc; NaN elsewhere)."""
    return proc_rss_mb(os.getpid())


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


# ---------------------------------------------------------------------------- the load (second process)


async def load(url: str, rate: float, seconds: float, clients: int, in_flight: int) -> dict:
    """Open `clients` sessions, print `ready`, then call `echo` at `rate`/s for `seconds`; return figures."""
    import mcp_types as types
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    info = types.Implementation(name="bench-console", version="1")
    async with contextlib.AsyncExitStack() as stack:
        sessions = []
        for _ in range(clients):
            http = await stack.enter_async_context(create_mcp_http_client())
            r, w = await stack.enter_async_context(streamable_http_client(url, http_client=http))
            s = await stack.enter_async_context(ClientSession(r, w, client_info=info))
            await asyncio.wait_for(s.initialize(), 60)
            res = await asyncio.wait_for(s.call_tool("echo", {"text": "warm"}), 60)
            if res.is_error:
                raise RuntimeError(f"echo failed: {res.content}")
            sessions.append(s)
        print("ready", flush=True)

        total = int(rate * seconds)
        stats = {"sent": 0, "ok": 0, "errors": 0, "late_s": [], "latency_s": []}
        started = time.perf_counter()
        deadline = started + seconds

        async def one(s: ClientSession, i: int, due: float, slots: asyncio.Semaphore) -> None:
            try:
                t0 = time.perf_counter()
                stats["late_s"].append(t0 - due)
                r = await asyncio.wait_for(s.call_tool("echo", {"text": f"hello {i}"}), 60)
                stats["latency_s"].append(time.perf_counter() - t0)
                stats["ok" if not r.is_error else "errors"] += 1
            except Exception:  # noqa: BLE001 - counted, the run goes on
                stats["errors"] += 1
            finally:
                slots.release()

        async def feeder(k: int, s: ClientSession) -> None:
            slots = asyncio.Semaphore(in_flight)
            tasks = set()
            for i in range(k, total, clients):  # call i is due at i / rate
                due = started + i / rate
                now = time.perf_counter()
                if now >= deadline:
                    break
                if due > now:
                    await asyncio.sleep(due - now)
                await slots.acquire()
                if time.perf_counter() >= deadline:
                    slots.release()
                    break
                stats["sent"] += 1
                t = asyncio.create_task(one(s, i, due, slots))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.wait(tasks, timeout=60)

        await asyncio.gather(*(feeder(k, s) for k, s in enumerate(sessions)))
        elapsed = time.perf_counter() - started
    return {
        "sent": stats["sent"], "ok": stats["ok"], "errors": stats["errors"], "seconds": elapsed,
        "late_p50_ms": pct(stats["late_s"], 0.5) * 1000, "late_p99_ms": pct(stats["late_s"], 0.99) * 1000,
        "latency_p50_ms": pct(stats["latency_s"], 0.5) * 1000, "latency_p99_ms": pct(stats["latency_s"], 0.99) * 1000,
    }


def load_main(args: argparse.Namespace) -> int:
    out = asyncio.run(load(args.load, args.rate, args.seconds, args.clients, args.in_flight))
    print(json.dumps(out), flush=True)
    return 0


# ---------------------------------------------------------------------------- the app (this process)


def write_config(work: Path) -> Path:
    """The bench's `mcpguard.toml`: the echo server (stdio) under `common.POLICY`, audit log on, any port."""
    (work / "echo.toml").write_text(POLICY)
    cfg = work / "mcpguard.toml"
    cfg.write_text(
        f'[gateway]\nhost = "127.0.0.1"\nport = 0\naudit_log = {json.dumps(str(work / "audit.jsonl"))}\n\n'
        f'[servers.echo]\ncommand = {json.dumps(sys.executable)}\nargs = [{json.dumps(str(ECHO))}]\n'
        f'policy = {json.dumps(str(work / "echo.toml"))}\nstderr_log = {json.dumps(str(work / "echo.stderr.log"))}\n'
    )
    return cfg


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` (Linux /proc; NaN elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def proc_rss_mb(pid: int) -> float:
    """Resident set size of process `pid` in MiB (Linux /proc; NaN elsewhere)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def audit_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


async def run_load(args: argparse.Namespace, url: str, during: Any) -> dict:
    """Start the load process against `url`, wait for its sessions, then await `during(finished)` while it
    runs (`finished`: a future that resolves to its figures); returns them. Bounded by `--seconds` + 120 s."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--load", url, "--rate", str(args.rate),
           "--seconds", str(args.seconds), "--clients", str(args.clients), "--in-flight", str(args.in_flight)]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, start_new_session=True)
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        if not line.startswith(b"ready"):
            raise RuntimeError(f"the load process did not start: {line!r}")
        reader = asyncio.ensure_future(proc.stdout.readline())
        await during(reader)
        if not reader.done():
            try:
                await asyncio.wait_for(reader, args.seconds + 120)
            except TimeoutError:
                raise RuntimeError("the load process did not finish in time") from None
        return json.loads(reader.result())
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 15)


async def bench_headless(args: argparse.Namespace, work: Path) -> dict:
    """`mcpguard serve` in its own process, no console attached: the baseline the console modes are held to."""
    from mcpguard.cli.child import GatewayProcess

    gw = GatewayProcess(write_config(work))
    await gw.start()
    try:
        for _ in range(600):  # bounded: 60 s for the upstream
            snap = await gw.control.snapshot()
            if snap.server("echo") is not None and snap.server("echo").state == "up":
                break
            await asyncio.sleep(0.1)
        url = snap.server("echo").url
        pid = gw.proc.pid
        res: dict = {"gw_rss_start_mb": proc_rss_mb(pid)}
        records0 = audit_lines(work / "audit.jsonl")
        marks: dict = {}

        async def during(finished: asyncio.Future) -> None:
            marks["cpu0"], marks["t0"] = proc_cpu_s(pid), time.perf_counter()
            peak = res["gw_rss_start_mb"]
            while not finished.done():
                await asyncio.wait({finished}, timeout=0.5)
                peak = max(peak, proc_rss_mb(pid))
            marks["cpu1"], marks["t1"] = proc_cpu_s(pid), time.perf_counter()
            res["gw_rss_peak_mb"] = peak

        res["load"] = await run_load(args, url, during)
        res["gw_cpu_s"], res["wall_s"] = marks["cpu1"] - marks["cpu0"], marks["t1"] - marks["t0"]
        res["audit_records"] = audit_lines(work / "audit.jsonl") - records0
    finally:
        await gw.control.close()
        await gw.stop()
    return res


async def bench_console_app(args: argparse.Namespace, work: Path, mode: str) -> dict:
    """The console headless (`App.run_test`, 120x36) under load.

    `child`: as `mcpguard console` runs, the gateway in a child process
    (`mcpguard serve --console`) and the console attached to it through the
    control endpoint. `in-process`: the gateway in the console's own event
    loop (`ConsoleApp.embedded`), as the console ran before.
    """
    from mcpguard.config import load_config
    from mcpguard.console.app import ConsoleApp

    cfg = write_config(work)
    child = None
    if mode == "child":
        from mcpguard.cli.child import GatewayProcess

        child = GatewayProcess(cfg)
        app = ConsoleApp(child.control, start=child.start, stop=child.stop, owner=True, theme_name="dark",
                         max_rows=args.max_rows)
    else:
        from mcpguard.gateway import Gateway

        app = ConsoleApp.embedded(Gateway(load_config(cfg)), theme_name="dark", max_rows=args.max_rows)
    res: dict = {"rss_boot_mb": rss_mb()}
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(600):  # bounded: 60 s for the gateway and the console's first snapshot
            s = app.snap.server("echo") if app.started and app.snap is not None else None
            if s is not None and s.state == "up":
                break
            await pilot.pause(0.1)
        else:
            raise RuntimeError("the gateway did not come up")
        url = s.url
        gw_pid = child.proc.pid if child is not None else os.getpid()
        res["rss_up_mb"] = rss_mb()
        records0 = audit_lines(work / "audit.jsonl")
        lags: list[float] = []
        stop = asyncio.Event()
        marks: dict = {}

        async def ticker() -> None:
            while not stop.is_set():
                t = time.perf_counter()
                await asyncio.sleep(TICK_S)
                lags.append(time.perf_counter() - t - TICK_S)

        async def during(finished: asyncio.Future) -> None:
            await pilot.pause(0.5)  # let the sessions' first events settle
            res["rss_start_mb"] = rss_mb()
            res["gw_rss_start_mb"] = proc_rss_mb(gw_pid)
            marks["cpu0"], marks["gw0"], marks["t0"] = time.process_time(), proc_cpu_s(gw_pid), time.perf_counter()
            tick = asyncio.create_task(ticker())
            peak, gw_peak = res["rss_start_mb"], res["gw_rss_start_mb"]
            while not finished.done():
                await asyncio.wait({finished}, timeout=0.5)
                now_rss = rss_mb()
                peak, gw_peak = max(peak, now_rss), max(gw_peak, proc_rss_mb(gw_pid))
            marks["cpu1"], marks["gw1"], marks["t1"] = time.process_time(), proc_cpu_s(gw_pid), time.perf_counter()
            stop.set()
            await tick
            res["rss_peak_mb"], res["gw_rss_peak_mb"] = peak, gw_peak

        try:
            res["load"] = await run_load(args, url, during)
            res["cpu_s"], res["wall_s"] = marks["cpu1"] - marks["cpu0"], marks["t1"] - marks["t0"]
            res["gw_cpu_s"] = res["cpu_s"] if child is None else marks["gw1"] - marks["gw0"]
            res["lags_ms"] = [x * 1000 for x in lags]
            await pilot.pause(0.5)  # the last flush reaches the table
            res["rss_after_mb"] = rss_mb()
            res["audit_records"] = audit_lines(work / "audit.jsonl") - records0
            res["rows"] = app.main.query_one("#calls").row_count
            res["model_rows"] = len(app.model.calls)
            res["dropped"] = app.model.dropped_events  # what the status bar shows as "events dropped"
        finally:
            await app.shutdown()
    return res


def report(args: argparse.Namespace, mode: str, r: dict, headless_rate: float | None) -> float:
    """Print one run's figures; returns the calls/s achieved."""
    ld = r["load"]
    calls = ld["ok"] + ld["errors"]
    rate = calls / ld["seconds"] if ld["seconds"] else 0.0
    print()
    print(f"mode {mode}: {args.rate:g} calls/s asked for {args.seconds:g} s, {args.clients} client sessions "
          f"in another process, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    vs = f", {rate / headless_rate * 100:.0f}% of headless" if headless_rate else ""
    print(f"  calls/s achieved      {rate:8.0f}{vs}   ({ld['ok']} ok, {ld['errors']} errors, {ld['sent']} sent; "
          f"call latency p50 {ld['latency_p50_ms']:.1f} ms, p99 {ld['latency_p99_ms']:.1f} ms; "
          f"sent late by p50 {ld['late_p50_ms']:.0f} ms, p99 {ld['late_p99_ms']:.0f} ms)")
    gw_per_call = r["gw_cpu_s"] / calls * 1000 if calls else float("nan")
    gw_busy = r["gw_cpu_s"] / r["wall_s"] if r["wall_s"] else float("nan")
    where = "the console's process (one loop)" if mode == "in-process" else "its own process"
    print(f"  gateway CPU           {gw_per_call:8.2f} ms per call, busy {gw_busy * 100:.0f}% of one core ({where}); "
          f"RSS start {r['gw_rss_start_mb']:.1f} MiB, peak {r['gw_rss_peak_mb']:.1f} MiB")
    if mode != "headless":
        lags = r["lags_ms"]
        busy = r["cpu_s"] / r["wall_s"] if r["wall_s"] else float("nan")
        cpu_per_call = r["cpu_s"] / calls * 1000 if calls else float("nan")
        print(f"  console loop lag      worst {max(lags, default=float('nan')):7.1f} ms   p99 {pct(lags, 0.99):6.1f} ms"
              f"   p50 {pct(lags, 0.5):5.1f} ms   ({len(lags)} ticks of {TICK_S * 1000:g} ms)")
        print(f"  console CPU           {cpu_per_call:8.2f} ms per call, busy {busy * 100:.0f}% of one core"
              + (" (gateway included)" if mode == "in-process" else ""))
        growth = (r["rss_after_mb"] - r["rss_start_mb"]) / calls * 1000 if calls else float("nan")
        print(f"  console RSS           boot {r['rss_boot_mb']:.1f} MiB, up {r['rss_up_mb']:.1f} MiB, "
              f"start {r['rss_start_mb']:.1f} MiB, peak {r['rss_peak_mb']:.1f} MiB, after {r['rss_after_mb']:.1f} MiB "
              f"({growth:.3f} MiB per 1,000 calls)")
        print(f"  call table            {r['rows']} rows, model {r['model_rows']} (max_rows {args.max_rows}); "
              f"events dropped by the console: {r['dropped']}")
    print(f"  audit                 {r['audit_records']} records")
    if rate < 0.9 * args.rate:
        print(f"  NOT reached: {rate:.0f} of {args.rate:g} calls/s asked (gateway {gw_busy * 100:.0f}% of a core, "
              f"{os.cpu_count()} cores shared with the client process and {args.clients} upstream processes)")
    return rate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=500.0, help="calls per second asked (default 500)")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of load (default 20)")
    ap.add_argument("--clients", type=int, default=4, help="client sessions (each has its own upstream process)")
    ap.add_argument("--in-flight", type=int, default=64, help="most calls outstanding per session")
    ap.add_argument("--max-rows", type=int, default=2000, help="the console's max_rows")
    ap.add_argument("--short", action="store_true", help="smoke run: 100 calls/s for 3 s, 2 sessions")
    ap.add_argument("--modes", default="headless,child,in-process",
                    help="comma-separated, run in this order each round: headless (serve, no console), child (the "
                         "console with its gateway in a child process, as `mcpguard console`), in-process (one loop)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds of all modes, interleaved")
    ap.add_argument("--load", metavar="URL", help=argparse.SUPPRESS)  # internal: be the load process
    args = ap.parse_args(argv)
    if args.load:
        return load_main(args)
    if args.short:
        args.rate, args.seconds, args.clients = 100.0, 3.0, 2
    if args.rate <= 0 or args.seconds <= 0 or args.clients < 1 or args.in_flight < 1:
        ap.error("--rate, --seconds, --clients and --in-flight must be positive")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if bad := [m for m in modes if m not in ("headless", "child", "in-process")]:
        ap.error(f"unknown mode(s): {', '.join(bad)}")
    for rnd in range(args.rounds):
        headless_rate = None
        for mode in modes:
            work = Path(tempfile.mkdtemp(prefix=f"mcpguard-bench-console-{mode}-"))
            log(f"round {rnd + 1}/{args.rounds}, {mode}: {args.rate:g} calls/s for {args.seconds:g} s; work dir {work}")
            if mode == "headless":
                r = asyncio.run(bench_headless(args, work))
            else:
                r = asyncio.run(bench_console_app(args, work, mode))
            rate = report(args, mode, r, headless_rate if mode != "headless" else None)
            if mode == "headless":
                headless_rate = rate
    return 0

if __name__ == "__main__":
    sys.exit(main())
