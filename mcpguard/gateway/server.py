"""One upstream server as the gateway runs it: its policy, counters, tools and their fingerprints.

`ServerHandle` is the state every part of the gateway reads for one
`[servers.NAME]`: the call pipeline decides with its `policy`, `counters` and
`risk()`; the endpoint lists its `tools`; the console shows its `state`. It
holds no connection itself (those are in `mcpguard.gateway.sessions`).

Tool definitions are fingerprinted on first sight (`fingerprint`: name,
description, inputSchema, annotations); a definition that differs later is a
`ToolChanged` event, and the tool stays changed until a person accepts it
(`accept_tool_change`), whatever an upstream session lists afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from pathlib import Path
from typing import Any

from mcpguard.config import ServerConfig
from mcpguard.events import EventBus, ToolChanged, UpstreamState
from mcpguard.gateway.results import fingerprint
from mcpguard.ratelimit import Counters
from mcpguard.risk import Risk, classify


class ServerHandle:
    """One upstream server as the gateway runs it.

    - `config`: its `ServerConfig`; `name`.
    - `state`: `starting`, `up`, `restarting`, `down` (its shared upstream
      connection); `detail` says why.
    - `tools`: the upstream's `tools/list` tools as JSON objects, unfiltered
      (hidden tools included), as last seen.
    - `policy` (a `mcpguard.policy.Policy`, or None: every call is denied),
      `policy_path`, `policy_errors` (`file:line:col: message` strings, empty
      when the last load succeeded).
    - `counters`: this server's `mcpguard.ratelimit.Counters`, kept across
      policy changes; `shadow_counters` those of its shadow limits (`mode =
      "shadow"`), kept apart.
    - `changed_tools`: names whose definition differs from first sight;
      `fingerprints`: tool name -> sha256 at first sight.
    """

    def __init__(self, config: ServerConfig, bus: EventBus) -> None:
        self.name = config.name
        self.config = config
        self.bus = bus
        self.state = "starting"
        self.detail = ""
        self.tools: list[dict[str, Any]] = []
        self.policy: Any = None
        self.policy_path: Path | None = Path(config.policy) if config.policy else None
        self.policy_errors: list[str] = []
        self.counters = Counters(config.name, bus)
        # shadow limits count here, apart from the enforcing ones: a shadow rule never spends a real
        # budget, and a real budget never fills a shadow gauge
        self.shadow_counters = Counters(config.name, bus, shadow=True)
        self.changed_tools: set[str] = set()
        self.fingerprints: dict[str, str] = {}
        self.call_timeout_s: float = config.call_timeout_s
        self._by_name: dict[str, dict[str, Any]] = {}
        self._last_fp: dict[str, str] = {}
        self._announced_fps: dict[str, set[str]] = {}  # changed definitions already published
        self._risk_cache: dict[str, Risk] = {}
        self._policy_version: tuple[Any, str] = (None, "")

    # -- tools ----------------------------------------------------------------
    def tool(self, name: str) -> dict[str, Any] | None:
        """The upstream's definition of tool `name` (a JSON object), or None."""
        return self._by_name.get(name)

    def input_schema(self, name: str) -> Any:
        """The tool's `inputSchema`, or None when it was never listed."""
        t = self._by_name.get(name)
        return t.get("inputSchema") if t is not None else None

    def risk(self, tool_name: str) -> Risk:
        """`mcpguard.risk.Risk` of a tool: the policy's override, else annotations, else its name."""
        cached = self._risk_cache.get(tool_name)
        if cached is not None:
            return cached
        t = self._by_name.get(tool_name) or {}
        override = None
        if self.policy is not None:
            rule = self.policy.tools.get(tool_name)
            override = rule.risk if rule is not None else None
        r = classify(tool_name, t.get("annotations"), t.get("description"), override)
        self._risk_cache[tool_name] = r
        return r

    def see_tools(self, tools: list[dict[str, Any]], *, complete: bool) -> None:
        """Record a `tools/list` answer: fingerprint each tool, publish `ToolChanged` for a changed one.

        `complete`: the list is the whole catalogue (no pagination), so it
        replaces `tools`; otherwise its tools are merged in.
        """
        for t in tools:
            name = t.get("name")
            if not isinstance(name, str):
                continue
            fp = fingerprint(t)
            first = self.fingerprints.get(name)
            if first is None:
                self.fingerprints[name] = fp
            elif fp != first:
                announced = self._announced_fps.setdefault(name, set())
                if fp not in announced:
                    announced.add(fp)
                    self.bus.publish(ToolChanged(server=self.name, tool=name, old_fingerprint=first,
                                                 new_fingerprint=fp))
                self.changed_tools.add(name)
                self._last_fp[name] = fp
        if complete:
            self.tools = [t for t in tools if isinstance(t.get("name"), str)]
        else:
            by_name = {t.get("name"): i for i, t in enumerate(self.tools)}
            for t in tools:
                i = by_name.get(t.get("name"))
                if i is None:
                    self.tools.append(t)
                else:
                    self.tools[i] = t
        self._by_name = {t["name"]: t for t in self.tools if isinstance(t.get("name"), str)}
        self._risk_cache.clear()

    def accept_tool_change(self, tool: str) -> None:
        """A person reviewed a changed tool: its current definition becomes the reference."""
        if tool in self._last_fp:
            self.fingerprints[tool] = self._last_fp[tool]
        self._announced_fps.pop(tool, None)
        self.changed_tools.discard(tool)

    # -- policy ---------------------------------------------------------------
    @property
    def policy_version(self) -> str | None:
        """A short digest of the running policy's text (None: no policy), part of an approval's digest."""
        policy = self.policy
        if policy is None:
            return None
        if self._policy_version[0] is not policy:
            text = getattr(getattr(policy, "source", None), "text", None) or repr(policy)
            self._policy_version = (policy, hashlib.sha256(text.encode("utf-8")).hexdigest()[:16])
        return self._policy_version[1]

    def apply_policy(self, policy: Any) -> None:
        """Make `policy` (already validated) this server's policy; counters are kept.

        Counters no rule names any more are dropped once their window passed;
        the counters' views show the new max/window at once.
        """
        self.policy = policy
        self.policy_errors = []
        self._risk_cache.clear()
        if policy is not None:
            now = time.monotonic()
            with contextlib.suppress(Exception):
                self.counters.retain(policy.counter_names(), now)
                self.shadow_counters.retain(policy.shadow_counter_names(), now)
                limits = list(policy.all_tools_limits)
                for rule in policy.tools.values():
                    limits += rule.limits
                self.counters.update_limits([lim for lim in limits if not lim.shadow])
                self.shadow_counters.update_limits([lim for lim in limits if lim.shadow])

    # -- state ----------------------------------------------------------------
    def set_state(self, state: str, detail: str = "") -> None:
        """Record the shared upstream connection's state; an `UpstreamState` event when it changed."""
        if self.state == state and self.detail == detail:
            return
        self.state, self.detail = state, detail
        self.bus.publish(UpstreamState(server=self.name, state=state, detail=detail))
