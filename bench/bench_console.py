"""Console benchmark: the Textual console, headless, under a steady stream of calls.

    .venv/bin/python bench/bench_console.py                   # 500 calls/s for 20 s
    .venv/bin/python bench/bench_console.py --rate 200 --seconds 10
    .venv/bin/python bench/bench_console.py --short           # smoke run: 100 calls/s for 3 s

What runs (issue 4, "Benchmark"):

- this process: `mcpguard.console.app.ConsoleApp` headless (`App.run_test`,
  120x36) with its embedded `Gateway` in Textual's own event loop, in front
  of `bench/echo_server.py` (mcp 2.x SDK, stdio), a policy with two limits
  that never trip, and the audit log on; a 10 ms ticker in the same loop
  measures how late it wakes up (the event-loop lag a person feels as a
  frozen screen);
- a second process (this script with `--load`), so the clients' CPU does
  not count against the app's loop: `--clients` real `mcp` 2.x client
  sessions over Streamable HTTP, calling `echo` on an open-loop schedule of
  `--rate` calls per second spread over the sessions, at most `--in-flight`
  calls outstanding per session (a late call is sent as soon as a slot
  frees: when the gateway cannot keep up, the achieved rate says so).

Printed: calls/s asked and achieved, worst and p99 event-loop lag (ms),
the app process's CPU per call and how busy it was, RSS at start (gateway
up and client sessions open), after the run, and its growth per 1,000
calls, and the call table's row count against `max_rows`. Bounded: the load
stops after `--seconds` or `rate x seconds` calls, every wait has a
deadline, and the load process (and through the gateway the upstream
processes) is stopped by its pid.
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
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


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


async def bench_app(args: argparse.Namespace, work: Path) -> dict:
    from mcpguard.config import load_config
    from mcpguard.console.app import ConsoleApp
    from mcpguard.gateway import Gateway

    (work / "echo.toml").write_text(POLICY)
    (work / "mcpguard.toml").write_text(
        f'[gateway]\nhost = "127.0.0.1"\nport = 0\naudit_log = {json.dumps(str(work / "audit.jsonl"))}\n\n'
        f'[servers.echo]\ncommand = {json.dumps(sys.executable)}\nargs = [{json.dumps(str(ECHO))}]\n'
        f'policy = {json.dumps(str(work / "echo.toml"))}\nstderr_log = {json.dumps(str(work / "echo.stderr.log"))}\n'
    )
    gw = Gateway(load_config(work / "mcpguard.toml"))
    app = ConsoleApp.embedded(gw, theme_name="dark", max_rows=args.max_rows)
    res: dict = {"rss_boot_mb": rss_mb()}
    proc: asyncio.subprocess.Process | None = None
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(600):  # bounded: 60 s for the gateway and its control session
            if app.started and gw.servers["echo"].state == "up":
                break
            await pilot.pause(0.1)
        else:
            raise RuntimeError(f"the gateway did not come up: {gw.servers['echo'].state}")
        res["rss_up_mb"] = rss_mb()
        url = gw.url("echo")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--load", url, "--rate", str(args.rate),
               "--seconds", str(args.seconds), "--clients", str(args.clients), "--in-flight", str(args.in_flight)]
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, start_new_session=True)
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 120)
            if not line.startswith(b"ready"):
                raise RuntimeError(f"the load process did not start: {line!r}")
            await pilot.pause(0.5)  # let the sessions' first events settle
            lags: list[float] = []
            stop = asyncio.Event()

            async def ticker() -> None:
                while not stop.is_set():
                    t = time.perf_counter()
                    await asyncio.sleep(TICK_S)
                    lags.append(time.perf_counter() - t - TICK_S)

            records0 = gw.audit.records if gw.audit is not None else 0
            res["rss_start_mb"] = rss_mb()
            cpu0, t0 = time.process_time(), time.perf_counter()
            tick = asyncio.create_task(ticker())
            peak = res["rss_start_mb"]
            line = b""
            reader = asyncio.ensure_future(proc.stdout.readline())
            limit = time.monotonic() + args.seconds + 120
            samples: list[tuple[int, float]] = []  # (audit records, RSS MiB) every 0.5 s
            while not reader.done() and time.monotonic() < limit:
                await asyncio.wait({reader}, timeout=0.5)
                now_rss = rss_mb()
                peak = max(peak, now_rss)
                samples.append(((gw.audit.records if gw.audit is not None else 0) - records0, now_rss))
            if not reader.done():
                reader.cancel()
                raise RuntimeError("the load process did not finish in time")
            line = reader.result()
            stop.set()
            await tick
            res["cpu_s"], res["wall_s"] = time.process_time() - cpu0, time.perf_counter() - t0
            res["load"] = json.loads(line)
            res["lags_ms"] = [x * 1000 for x in lags]
            res["rss_peak_mb"] = peak
            res["rss_samples"] = samples
            await pilot.pause(0.3)  # the last flush (every 0.1 s) reaches the table
            res["rss_after_mb"] = rss_mb()
            res["audit_records"] = (gw.audit.records if gw.audit is not None else 0) - records0
            table = app.main.query_one("#calls")
            res["rows"] = table.row_count
            res["model_rows"] = len(app.model.calls)
            res["dropped"] = app.model.dropped_events  # what the status bar shows as "events dropped"
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 15)
            await app.shutdown()
    return res


def report(args: argparse.Namespace, r: dict) -> None:
    ld = r["load"]
    calls = ld["ok"] + ld["errors"]
    rate = calls / ld["seconds"] if ld["seconds"] else 0.0
    lags = r["lags_ms"]
    busy = r["cpu_s"] / r["wall_s"] if r["wall_s"] else float("nan")
    cpu_per_call = r["cpu_s"] / calls * 1000 if calls else float("nan")
    growth = (r["rss_after_mb"] - r["rss_start_mb"]) / calls * 1000 if calls else float("nan")
    print()
    print(f"mcpguard bench_console: {args.rate:g} calls/s asked for {args.seconds:g} s, {args.clients} client "
          f"sessions in another process, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    print(f"  calls/s achieved      {rate:8.0f}   ({ld['ok']} ok, {ld['errors']} errors, {ld['sent']} sent; "
          f"call latency p50 {ld['latency_p50_ms']:.1f} ms, p99 {ld['latency_p99_ms']:.1f} ms; "
          f"sent late by p50 {ld['late_p50_ms']:.0f} ms, p99 {ld['late_p99_ms']:.0f} ms)")
    print(f"  event-loop lag        worst {max(lags, default=float('nan')):7.1f} ms   p99 {pct(lags, 0.99):6.1f} ms   "
          f"p50 {pct(lags, 0.5):5.1f} ms   ({len(lags)} ticks of {TICK_S * 1000:g} ms)")
    print(f"  app process CPU       {cpu_per_call:8.2f} ms per call, busy {busy * 100:.0f}% of one core "
          f"(gateway + console in one loop)")
    print(f"  RSS                   boot {r['rss_boot_mb']:.1f} MiB, gateway up {r['rss_up_mb']:.1f} MiB, "
          f"start {r['rss_start_mb']:.1f} MiB, peak {r['rss_peak_mb']:.1f} MiB, after {r['rss_after_mb']:.1f} MiB")
    print(f"  RSS growth            {growth:8.3f} MiB per 1,000 calls")
    half = r.get("rss_samples", [])[len(r.get("rss_samples", [])) // 2:]
    if len(half) >= 2 and half[-1][0] > half[0][0]:
        # audit records are 2 per call: growth over the run's second half tells a
        # leak (keeps growing) from a high-water mark (flat once the table is full)
        late = (half[-1][1] - half[0][1]) / ((half[-1][0] - half[0][0]) / 2) * 1000
        print(f"  RSS growth, 2nd half  {late:8.3f} MiB per 1,000 calls "
              f"({half[0][1]:.1f} -> {half[-1][1]:.1f} MiB)")
    print(f"  call table            {r['rows']} rows, model {r['model_rows']} (max_rows {args.max_rows}); audit {r['audit_records']} records; "
          f"events dropped by the console's subscription: {r['dropped']}")
    if rate < 0.9 * args.rate:
        why = (f"the app's one loop was busy {busy * 100:.0f}% of a core at {cpu_per_call:.2f} ms CPU per call"
               if busy > 0.85 else
               f"the app's loop was busy only {busy * 100:.0f}%: the {os.cpu_count()} cores are shared with the "
               f"client process and {args.clients} upstream echo processes (and whatever else runs)")
        print(f"  NOT reached: {rate:.0f} of {args.rate:g} calls/s; {why}. "
              f"Ceiling for this loop alone: about {1000 / cpu_per_call:.0f} calls/s." if calls else
              "  NOT reached: no calls completed")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=500.0, help="calls per second asked (default 500)")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of load (default 20)")
    ap.add_argument("--clients", type=int, default=4, help="client sessions (each has its own upstream process)")
    ap.add_argument("--in-flight", type=int, default=64, help="most calls outstanding per session")
    ap.add_argument("--max-rows", type=int, default=2000, help="the console's max_rows")
    ap.add_argument("--short", action="store_true", help="smoke run: 100 calls/s for 3 s, 2 sessions")
    ap.add_argument("--load", metavar="URL", help=argparse.SUPPRESS)  # internal: be the load process
    args = ap.parse_args(argv)
    if args.load:
        return load_main(args)
    if args.short:
        args.rate, args.seconds, args.clients = 100.0, 3.0, 2
    if args.rate <= 0 or args.seconds <= 0 or args.clients < 1 or args.in_flight < 1:
        ap.error("--rate, --seconds, --clients and --in-flight must be positive")
    work = Path(tempfile.mkdtemp(prefix="mcpguard-bench-console-"))
    log(f"{args.rate:g} calls/s for {args.seconds:g} s through the console's gateway; work dir {work}")
    r = asyncio.run(bench_app(args, work))
    report(args, r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
