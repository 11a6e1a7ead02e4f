"""A scripted agent: a real `mcp` 2.x client that plays an MLflow session.

`mcpguard demo` runs it against the gateway so a person can watch calls,
counters and approvals happen; the end-to-end tests and the benchmark reuse
its pieces. It speaks Streamable HTTP (MCP 2025-06-18, "Transports") to one
URL, `http://127.0.0.1:<port>/mcp/mlflow`, as any agent would, and uses the
real tool names and argument shapes of `mlflow-mcp` 0.4.1.

One loop of the session, under `sample_policies/mlflow.toml`:

1. `tools/list`;
2. reads: the demo experiment, its runs, one run, its metrics, the best run,
   the registered model's versions and its `champion` alias;
3. tags: `set_run_tag`, `set_experiment_tag`;
4. `set_model_alias` (the policy asks a person to approve it);
5. a burst of `set_registered_model_tag` calls, more than its cap (20 a
   minute) allows: the last ones come back `rate_limited` with
   `retry_after_s`, and the agent stops after the second;
6. `transition_model_version_stage` to Staging, which waits for approval;
7. `delete_model_version`, which the policy denies;
8. `delete_registered_model`, a hidden tool: unknown to the agent.

A denial or an upstream error is reported as a step and the session goes on;
a lost connection is reported, and the agent reconnects after a pause.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from mcpguard.stack import DEMO_EXPERIMENT, DEMO_MODEL

DECISION_META_KEY = "mcpguard/decision"
"""Where mcpguard puts its decision in a denied `CallToolResult._meta`."""

CLIENT_NAME = "mcpguard-demo-agent"


@dataclass
class Step:
    """One thing the agent did, as `on_step` receives it.

    `loop` counts from 1; `tool` is a tool name or `"tools/list"`;
    `outcome` is `"ok"`, `"error"` (the upstream's `isError` result), a
    mcpguard decision code (`"rate_limited"`, `"policy_denied"`,
    `"approval_denied"`, `"approval_timeout"`, ...), `"rpc_error"` (a
    JSON-RPC error), `"unknown_tool"` (what a hidden tool answers) or
    `"connection_error"`;
    `decision` is `_meta["mcpguard/decision"]` when there is one;
    `text` is the start of the answer; `duration_s` in seconds.
    """

    loop: int
    phase: str
    tool: str
    arguments: dict[str, Any]
    outcome: str = "ok"
    decision: dict[str, Any] | None = None
    text: str = ""
    duration_s: float = 0.0
    data: Any = field(default=None, repr=False)

    @property
    def retry_after_s(self) -> float | None:
        """Seconds the gateway says to wait before the next call (rate_limited only)."""
        return (self.decision or {}).get("retry_after_s")

    def line(self) -> str:
        """A one-line summary for a terminal."""
        extra = ""
        if self.retry_after_s is not None:
            extra = f" (retry after {self.retry_after_s:.1f} s)"
        args = json.dumps(self.arguments, separators=(",", ":"))
        if len(args) > 60:
            args = args[:57] + "..."
        return f"[loop {self.loop}] {self.phase:<9} {self.tool}({args}) -> {self.outcome}{extra} [{self.duration_s * 1000:.0f} ms]"


@dataclass
class AgentStats:
    """What `run_agent` returns: counts of steps by outcome, and loops finished."""

    loops: int = 0
    steps: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def add(self, step: Step) -> None:
        self.steps += 1
        self.outcomes[step.outcome] = self.outcomes.get(step.outcome, 0) + 1


OnStep = Callable[[Step], Awaitable[None] | None]


def _structured(result: types.CallToolResult) -> Any:
    """The tool's answer as data: structuredContent (FastMCP wraps lists in `result`) or JSON text."""
    data = result.structured_content
    if isinstance(data, dict) and set(data) == {"result"}:
        return data["result"]
    if data is not None:
        return data
    text = _text(result)
    try:
        return json.loads(text)
    except ValueError:
        return None


def _text(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


class _Session:
    """One agent session: calls tools and reports each as a `Step`."""

    def __init__(self, session: ClientSession, loop: int, emit: Callable[[Step], Awaitable[None]], call_timeout_s: float):
        self.session = session
        self.loop = loop
        self.emit = emit
        self.call_timeout_s = call_timeout_s
        self.phase = "start"

    async def list_tools(self) -> list[str]:
        started = time.monotonic()
        listed = await self.session.list_tools()
        names = [t.name for t in listed.tools]
        await self.emit(
            Step(self.loop, self.phase, "tools/list", {}, "ok", None, f"{len(names)} tools",
                 time.monotonic() - started, names)
        )  # fmt: skip
        return names

    async def call(self, tool: str, arguments: dict[str, Any]) -> Step:
        step = Step(self.loop, self.phase, tool, arguments)
        started = time.monotonic()
        try:
            result = await self.session.call_tool(tool, arguments, read_timeout_seconds=self.call_timeout_s)
        except MCPError as exc:
            step.outcome, step.text = "rpc_error", str(exc)[:300]
        else:
            step.text = _text(result)[:300]
            meta = result.meta or {}
            decision = meta.get(DECISION_META_KEY) if isinstance(meta, dict) else None
            if isinstance(decision, dict):
                step.decision = decision
            if result.is_error:
                if step.decision:
                    step.outcome = str(step.decision.get("code"))
                elif step.text.startswith("Unknown tool"):
                    step.outcome = "unknown_tool"
                else:
                    step.outcome = "error"
            else:
                step.data = _structured(result)
        step.duration_s = time.monotonic() - started
        await self.emit(step)
        return step


async def play_loop(s: _Session, *, pace_s: float, burst: int, experiment_name: str, model_name: str) -> None:
    """One loop of the demo session (see the module docstring)."""

    async def pause(factor: float = 1.0) -> None:
        if pace_s > 0:
            await asyncio.sleep(pace_s * factor)

    s.phase = "discover"
    await s.list_tools()
    await pause()

    s.phase = "read"
    exp = await s.call("get_experiment_by_name", {"name": experiment_name})
    exp_id = exp.data.get("experiment_id") if isinstance(exp.data, dict) else None
    exp_id = exp_id or "1"
    await pause()
    runs = await s.call("get_runs", {"experiment_id": exp_id, "limit": 5})
    run_ids = [r.get("run_id") or r.get("info", {}).get("run_id") for r in runs.data or [] if isinstance(r, dict)]
    run_ids = [r for r in run_ids if r]
    run_id = run_ids[0] if run_ids else "unknown-run"
    await pause()
    await s.call("get_run", {"run_id": run_id})
    await pause()
    await s.call("get_run_metrics", {"run_id": run_id})
    await pause()
    await s.call("get_best_run", {"experiment_id": exp_id, "metric": "val_accuracy"})
    await pause()
    versions = await s.call("get_model_versions", {"model_name": model_name})
    numbers = sorted(
        (str(v["version"]) for v in versions.data or [] if isinstance(v, dict) and "version" in v), key=int
    ) or ["1"]
    await pause()
    await s.call("get_model_version_by_alias", {"name": model_name, "alias": "champion"})
    await pause()

    s.phase = "tag"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    await s.call("set_run_tag", {"run_id": run_id, "key": "reviewed_by", "value": CLIENT_NAME})
    await pause()
    await s.call("set_experiment_tag", {"experiment_id": exp_id, "key": "last_agent_visit", "value": stamp})
    await pause()

    s.phase = "alias"
    await s.call("set_model_alias", {"name": model_name, "alias": "challenger", "version": numbers[-1]})
    await pause()

    s.phase = "burst"
    limited = 0
    for i in range(burst):  # a loop that tags too fast: the cap stops it
        step = await s.call(
            "set_registered_model_tag", {"name": model_name, "key": f"agent_note_{i % 5}", "value": f"{stamp}#{i}"}
        )
        if step.outcome == "rate_limited":
            limited += 1
            if limited >= 2:  # told twice to wait: give up, as a sensible agent would
                break
            await pause(0.5)
        await pause(0.1)
    await pause()

    s.phase = "promote"
    target = numbers[1] if len(numbers) > 1 else numbers[0]
    await s.call(
        "transition_model_version_stage",
        {"name": model_name, "version": target, "stage": "Staging", "archive_existing": False},
    )
    await pause()

    s.phase = "cleanup"
    await s.call("delete_model_version", {"name": model_name, "version": numbers[-1]})
    await pause()
    await s.call("delete_registered_model", {"name": model_name})
    await pause()


async def run_agent(
    url: str,
    *,
    loops: int | None = None,
    pace_s: float = 1.0,
    on_step: OnStep | None = None,
    token: str | None = None,
    burst: int = 25,
    call_timeout_s: float = 300.0,
    experiment_name: str = DEMO_EXPERIMENT,
    model_name: str = DEMO_MODEL,
) -> AgentStats:
    """Play the demo MLflow session against the MCP endpoint at `url`.

    - `loops`: how many loops to play; None plays until cancelled.
    - `pace_s`: seconds between steps (a burst goes ten times faster), so a
      person can follow; 0 for tests.
    - `on_step(step)`: called (or awaited, if it is a coroutine function)
      after each step with a `Step`; an exception in it ends the run and is
      raised from `run_agent` as is.
    - `token`: sent as `Authorization: Bearer <token>` (a mcpguard grant).
    - `burst`: at most how many `set_registered_model_tag` calls the burst
      makes (more than the sample policy's cap of 20 a minute); it stops at
      the second `rate_limited` answer.
    - `call_timeout_s`: seconds one call may take, approval waits included.

    Never raises on a denial, an upstream error or a lost connection: each is
    a step (a lost connection is retried after `max(pace_s, 1)` seconds and
    counts as a loop, so `loops` bounds the run). Cancel-safe: cancelling the
    task closes the session (the HTTP session is ended with DELETE).
    Returns `AgentStats`.
    """
    stats = AgentStats()

    async def emit(step: Step) -> None:
        stats.add(step)
        if on_step is not None:
            try:
                out = on_step(step)
                if inspect.isawaitable(out):
                    await out
            except Exception as exc:  # the caller's bug: not a connection problem, let it out
                raise _CallbackFailed() from exc

    headers = {"Authorization": f"Bearer {token}"} if token else None
    loop_no = 0
    while loops is None or loop_no < loops:
        in_loop = False  # whether the failure below cut a loop short (it then counts as that loop)
        try:
            async with create_mcp_http_client(headers=headers) as http:
                async with streamable_http_client(url, http_client=http) as (read, write):
                    async with ClientSession(
                        read, write, client_info=types.Implementation(name=CLIENT_NAME, version="1.0")
                    ) as session:
                        await session.initialize()
                        while loops is None or loop_no < loops:
                            loop_no += 1
                            in_loop = True
                            s = _Session(session, loop_no, emit, call_timeout_s)
                            await play_loop(
                                s, pace_s=pace_s, burst=burst, experiment_name=experiment_name, model_name=model_name
                            )
                            stats.loops += 1
                            in_loop = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a lost connection or a refused session: report, pause, retry
            failed = _find(exc, _CallbackFailed)
            if failed is not None:
                raise failed.__cause__ from None
            if not in_loop:
                loop_no += 1
            await emit(Step(loop_no, "connect", "initialize", {"url": url}, "connection_error", None, _describe(exc)))
            await asyncio.sleep(max(pace_s, 1.0))
    return stats


class _CallbackFailed(Exception):
    """`on_step` raised (the original is `__cause__`)."""


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """`exc` or the first exception of type `kind` inside (nested) exception groups."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, kind)
            if found is not None:
                return found
    return None


def _describe(exc: BaseException) -> str:
    """A short text for an exception, looking inside exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"[:300]


def main(argv: list[str] | None = None) -> int:
    """`python -m mcpguard.agent URL [--loops N] [--pace S] [--token T]`: print each step."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mcpguard.agent", description=run_agent.__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--loops", type=int, default=None)
    parser.add_argument("--pace", type=float, default=1.0)
    parser.add_argument("--token")
    args = parser.parse_args(argv)
    try:
        stats = asyncio.run(
            run_agent(args.url, loops=args.loops, pace_s=args.pace, token=args.token, on_step=lambda st: print(st.line(), flush=True))
        )
    except KeyboardInterrupt:
        return 130
    print(f"{stats.loops} loops, {stats.steps} steps: {stats.outcomes}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
