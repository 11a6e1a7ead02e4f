"""Gateway benchmark: a trivial tool called directly, through mcpguard, and through mcp-proxy.

    .venv/bin/python bench/bench_gateway.py [--rounds 3] [--seconds 2] [--clients 1,16]

Legs, each a real `mcp` 2.x client over the wire, of either MCP era: `/2026`
is `mcp.Client(mode="2026-07-28")` (no handshake, each call one POST),
`/legacy` a `ClientSession` after the `initialize` handshake (a session, SSE
responses):

- `direct-stdio`: the client spawns `bench/echo_server.py` and talks stdio;
- `direct-http`:  the same server on Streamable HTTP (127.0.0.1);
- `mcpguard`:     `mcpguard serve` (Streamable HTTP downstream, the echo server as
                  a stdio upstream, negotiated to 2026-07-28, a policy with limits
                  that never trip, audit log on, flushed per record);
- `mcp-proxy`:    `mcp-proxy` 0.13.0 (no policy at all) in front of the same stdio
                  server; it pins `mcp<2` (handshake era only), so it gets its own
                  virtual environment under `$MCPGUARD_HOME` (installed here on
                  first use).

Ratios: `x direct` against `direct-stdio` of the same era, `x mcp-proxy`
against `mcp-proxy/legacy`; `+p50 ms` is the p50 latency added over
`direct-stdio` of the same era.

Each cell (leg x concurrent clients) opens its client sessions untimed, then
every client calls `echo` back to back for `--seconds`; rounds interleave the
legs so a slow spell of the shared machine hits every leg alike. Printed:
calls/s, p50 and p99 latency (ms), and the ratios of calls/s to `direct-stdio`
and to `mcp-proxy`. Bounded: each cell stops at `--seconds` or 200,000 calls,
and every process started here is stopped by its pid at the end.

`--profile FILE` runs the mcpguard leg under cProfile (pstats written to FILE
when the gateway stops) to see where its time goes; the profiler slows the
gateway about twofold, so the figures of such a run are not comparable.
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
from dataclasses import dataclass, field
from pathlib import Path

from common import POLICY, log  # bench/common.py (scripts run from bench/)

import httpx
import mcp_types as types
from mcp import Client, ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mcpguard.stack import free_port, mcpguard_home  # noqa: E402

ECHO = Path(__file__).resolve().with_name("echo_server.py")
MCP_PROXY_VERSION = "0.13.0"
MAX_CALLS_PER_CELL = 200_000


# ---------------------------------------------------------------------------- set-up


def ensure_mcp_proxy_env() -> Path:
    """`mcp-proxy==0.13.0` in its own venv under $MCPGUARD_HOME; stamp written last."""
    env = mcpguard_home() / f"bench-mcp-proxy-{MCP_PROXY_VERSION}"
    stamp = env / ".mcpguard-complete"
    if stamp.exists() and (env / "bin" / "mcp-proxy").exists():
        return env
    if env.exists():
        import shutil

        shutil.rmtree(env)
    log(f"installing mcp-proxy {MCP_PROXY_VERSION} into {env} (once)")
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    subprocess.run(
        [str(env / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         f"mcp-proxy=={MCP_PROXY_VERSION}"],
        check=True,
    )  # fmt: skip
    stamp.write_text(MCP_PROXY_VERSION)
    return env


@dataclass
class Proc:
    """A process this script started; stopped by its pid (its own process group)."""

    name: str
    popen: subprocess.Popen

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)


def start(name: str, cmd: list[str], logfile: Path, env: dict | None = None) -> Proc:
    out = open(logfile, "ab")
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                         start_new_session=True, env={**os.environ, **(env or {})})  # fmt: skip
    out.close()
    return Proc(name, p)


def wait_http(url: str, proc: Proc, timeout_s: float = 60.0) -> None:
    """Wait until `url` answers at all (any status) or fail if `proc` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=1.0)
            return
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not answer at {url} in {timeout_s} s")


# ---------------------------------------------------------------------------- clients


@dataclass
class Cell:
    leg: str
    clients: int
    calls: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    proxy_cpu_s: float = 0.0  # CPU seconds of the proxy process (not its upstreams) in the timed part
    client_cpu_s: float = 0.0  # CPU seconds of this load generator in the timed part

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


def process_cpu_s(pid: int | None) -> float:
    """user+system CPU seconds of process `pid` so far (Linux /proc), 0 without a pid."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.asynccontextmanager
async def open_session(target: dict):
    info = types.Implementation(name="bench", version="1")
    if target["era"] == "2026":
        server = StdioServerParameters(command=sys.executable, args=[str(ECHO)]) if target["kind"] == "stdio" \
            else target["url"]
        async with Client(server, mode="2026-07-28", client_info=info, cache=None) as c:
            yield c
        return
    if target["kind"] == "stdio":
        params = StdioServerParameters(command=sys.executable, args=[str(ECHO)])
        with open(os.devnull, "w") as devnull:
            async with stdio_client(params, errlog=devnull) as (r, w):
                async with ClientSession(r, w, client_info=info) as s:
                    await s.initialize()
                    yield s
    else:
        async with create_mcp_http_client() as http:
            async with streamable_http_client(target["url"], http_client=http) as (r, w):
                async with ClientSession(r, w, client_info=info) as s:
                    await s.initialize()
                    yield s


async def run_cell(target: dict, clients: int, seconds: float, cell: Cell) -> None:
    async with contextlib.AsyncExitStack() as stack:
        sessions = [await stack.enter_async_context(open_session(target)) for _ in range(clients)]
        for s in sessions:  # warm-up, untimed
            r = await s.call_tool("echo", {"text": "warm"})
            if r.is_error:
                raise RuntimeError(f"{target['name']}: echo failed: {r.content}")
        budget = MAX_CALLS_PER_CELL // clients
        cpu0, own0 = process_cpu_s(target.get("pid")), time.process_time()
        started = time.perf_counter()
        deadline = started + seconds

        async def worker(s: ClientSession | Client) -> None:
            for i in range(budget):
                t0 = time.perf_counter()
                if t0 >= deadline:
                    return
                r = await s.call_tool("echo", {"text": f"hello {i}"})
                cell.latencies.append(time.perf_counter() - t0)
                cell.calls += 1
                if r.is_error:
                    cell.errors += 1

        await asyncio.wait_for(asyncio.gather(*(worker(s) for s in sessions)), seconds + 60)
        cell.seconds += time.perf_counter() - started
        cell.proxy_cpu_s += process_cpu_s(target.get("pid")) - cpu0
        cell.client_cpu_s += time.process_time() - own0


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0, help="timed seconds per cell per round")
    ap.add_argument("--clients", default="1,16")
    ap.add_argument("--legs", default="direct-stdio,direct-http,mcpguard,mcp-proxy")
    ap.add_argument("--eras", default="2026,legacy", help="client eras: 2026 (2026-07-28), legacy (handshake)")
    ap.add_argument("--profile", help="cProfile the mcpguard gateway into this pstats file")
    args = ap.parse_args(argv)
    concurrency = [int(c) for c in args.clients.split(",")]
    legs = args.legs.split(",")
    client_eras = args.eras.split(",")

    work = Path(tempfile.mkdtemp(prefix="mcpguard-bench-"))
    procs: list[Proc] = []
    targets: dict[str, dict] = {}
    try:
        if "direct-stdio" in legs:
            targets["direct-stdio"] = {"name": "direct-stdio", "kind": "stdio"}
        if "direct-http" in legs:
            port = free_port()
            p = start("echo-http", [sys.executable, str(ECHO), "--http", str(port)], work / "echo-http.log")
            procs.append(p)
            targets["direct-http"] = {"name": "direct-http", "kind": "http", "url": f"http://127.0.0.1:{port}/mcp", "pid": p.popen.pid}
            wait_http(targets["direct-http"]["url"], p)
        if "mcpguard" in legs:
            port = free_port()
            (work / "echo.toml").write_text(POLICY)
            (work / "mcpguard.toml").write_text(
                f'[gateway]\nhost = "127.0.0.1"\nport = {port}\naudit_log = "audit.jsonl"\nurl_file = "url"\n\n'
                f'[servers.echo]\ncommand = {json.dumps(sys.executable)}\nargs = [{json.dumps(str(ECHO))}]\n'
                f'policy = "echo.toml"\nstderr_log = "echo.stderr.log"\n'
            )
            cmd = [sys.executable, "-m", "mcpguard", "serve", "--config", str(work / "mcpguard.toml")]
            if args.profile:  # cProfile writes its stats when serve exits on SIGTERM
                cmd[1:1] = ["-m", "cProfile", "-o", str(Path(args.profile).resolve())]
            p = start("mcpguard", cmd, work / "mcpguard.log")
            procs.append(p)
            targets["mcpguard"] = {"name": "mcpguard", "kind": "http", "url": f"http://127.0.0.1:{port}/mcp/echo", "pid": p.popen.pid}
            wait_http(f"http://127.0.0.1:{port}/", p)
        if "mcp-proxy" in legs:
            env = ensure_mcp_proxy_env()
            port = free_port()
            p = start(
                "mcp-proxy",
                [str(env / "bin" / "mcp-proxy"), "--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING",
                 "--", sys.executable, str(ECHO)],
                work / "mcp-proxy.log",
            )  # fmt: skip
            procs.append(p)
            targets["mcp-proxy"] = {"name": "mcp-proxy", "kind": "http", "url": f"http://127.0.0.1:{port}/mcp", "pid": p.popen.pid}
            wait_http(f"http://127.0.0.1:{port}/status", p)

        targets = {f"{name}/{era}": {**t, "name": f"{name}/{era}", "era": era}
                   for name, t in targets.items() for era in client_eras
                   if not (name == "mcp-proxy" and era == "2026")}  # mcp-proxy speaks only the handshake era
        cells = {(leg, c): Cell(leg, c) for leg in targets for c in concurrency}
        log(f"{args.rounds} rounds x {len(cells)} cells x {args.seconds} s; work dir {work}")
        for rnd in range(args.rounds):
            for c in concurrency:
                for leg, target in targets.items():
                    cell = cells[(leg, c)]
                    asyncio.run(run_cell(target, c, args.seconds, cell))
                    log(f"round {rnd + 1}: {leg:<20} {c:>2} clients  {cell.rate:8.0f} calls/s so far")
    finally:
        for p in reversed(procs):
            p.stop()

    audit_lines = 0
    if (work / "audit.jsonl").exists():
        audit_lines = sum(1 for _ in open(work / "audit.jsonl"))
    print()
    print(f"mcpguard bench_gateway: {args.rounds} rounds x {args.seconds:g} s per cell, "
          f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}")  # fmt: skip
    head = (f"{'leg':<20}{'clients':>8}{'calls/s':>10}{'p50 ms':>9}{'+p50 ms':>9}{'p99 ms':>9}{'x direct':>10}"
            f"{'x mcp-proxy':>13}{'errors':>8}{'srv CPU ms/call':>17}{'client CPU ms/call':>20}")  # fmt: skip
    print(head)
    print("-" * len(head))
    for c in concurrency:
        proxy = cells.get(("mcp-proxy/legacy", c))
        for leg in targets:
            cell = cells[(leg, c)]
            direct = cells.get((f"direct-stdio/{targets[leg]['era']}", c))
            xd = f"{cell.rate / direct.rate:.2f}" if direct and direct.rate else "-"
            added = f"{cell.pct(0.5) - direct.pct(0.5):.2f}" if direct and direct.latencies else "-"
            xp = f"{cell.rate / proxy.rate:.2f}" if proxy and proxy.rate else "-"
            srv = f"{cell.proxy_cpu_s / cell.calls * 1000:.2f}" if cell.calls and cell.proxy_cpu_s else "-"
            cli = f"{cell.client_cpu_s / cell.calls * 1000:.2f}" if cell.calls else "-"
            print(f"{leg:<20}{c:>8}{cell.rate:>10.0f}{cell.pct(0.5):>9.2f}{added:>9}{cell.pct(0.99):>9.2f}{xd:>10}"
                  f"{xp:>13}{cell.errors:>8}{srv:>17}{cli:>20}")  # fmt: skip
    mcpguard_legs = [leg for leg in targets if leg.startswith("mcpguard/")]
    if mcpguard_legs:
        calls = sum(cells[(leg, c)].calls for leg in mcpguard_legs for c in concurrency)
        print(f"\nmcpguard audit log: {audit_lines} records for {calls} timed calls (+ warm-up calls)")
    if args.profile:
        print(f"profile of the gateway: {args.profile}  (python -m pstats {args.profile})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
