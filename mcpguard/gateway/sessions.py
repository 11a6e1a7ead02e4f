"""Agent sessions, the upstream connections they use, and who gets what the upstream sends back.

Which upstream connection serves a request (see `docs/internals.md`, "Eras
and sessions"):

- every server has one *shared* connection (`UpstreamPool.shared`), opened at
  start, whose era is negotiated; it fills the server's `tools` and state;
- a 2026-07-28 upstream is stateless: the shared connection serves every
  agent of either era;
- a handshake-era upstream serves through the shared connection too when the
  server says `upstream_sessions = "shared"`, and always for 2026-07-28
  agents (they have no session to map); with `per_session` (the default) a
  handshake-era agent session gets its own connection, opened with that
  agent's own `initialize` and closed when its session ends.

What the upstream sends on its own goes back to the agent it belongs to:

- progress: the dispatcher sends each request with a progress token unique
  on the hop and hands progress to the forwarding request, which reports it
  with the agent's own token;
- server-to-client requests (sampling, elicitation, roots) and log messages:
  to the request they rode on when the transport says so (Streamable HTTP
  upstreams deliver them on that request's response stream, and the
  dispatcher runs our callback in that request's context), else to the only
  agent with requests in flight on that connection. Several agents in flight
  on a shared stdio connection cannot be told apart: the upstream gets a
  JSON-RPC error naming that, never a guess. A 2026-07-28 agent cannot take
  a server-to-client request: it gets the request inside an
  `InputRequiredResult` instead (`InputBridge`);
- `list_changed` and `resources/updated`: to every handshake-era session the
  connection serves (resource updates only to sessions that subscribed to
  the URI) and to the server's `subscriptions/listen` streams.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.dispatcher import DispatchContext
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp.shared.subscriptions import event_from_wire
from mcp_types import INTERNAL_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND
from mcp_types import methods as spec
from pydantic import ConfigDict, ValidationError

from mcpguard.events import SessionClosed, SessionOpened, UpstreamState
from mcpguard.gateway import eras
from mcpguard.gateway.server import ServerHandle
from mcpguard.gateway.upstream import Agent, UpstreamConnection

log = logging.getLogger(__name__)

#: the forwarded request this task works for (read by the upstream callbacks it causes)
CURRENT_FLIGHT: contextvars.ContextVar[Flight | None] = contextvars.ContextVar("mcpguard_flight", default=None)

BRIDGE_TTL_S = 600.0
MAX_PARKED = 1000


class _AnyResult(types.Result):
    """A client's result to a server-to-client request, validated by the SDK for its era, every field kept."""

    model_config = ConfigDict(extra="allow")


# ---------------------------------------------------------------------------
# who is on the other side


@dataclass(eq=False)
class AgentSession:
    """One handshake-era agent session (`Mcp-Session-Id`) on one server endpoint.

    `grant` (the grant that opened it), `client` (`clientInfo.name`),
    `client_info` and `capabilities` (its `initialize`), `protocol_version`,
    `upstream` (its own connection with `per_session`, else None: the
    shared one), `connection` (the SDK's `Connection` of the session: its
    standalone stream), `opened_at` (epoch seconds), `calls`, `refused`
    (counts), `log_level` (set with `logging/setLevel`).
    """

    session_id: str
    grant: str
    client: str | None
    client_info: dict[str, Any] | None
    capabilities: dict[str, Any] | None
    protocol_version: str
    upstream: UpstreamConnection | None
    connection: Any
    opened_at: float = field(default_factory=time.time)
    calls: int = 0
    refused: int = 0
    log_level: str | None = None
    closed: bool = False

    @property
    def agent(self) -> Agent:
        return Agent(self.client_info, self.capabilities, self.log_level)


@dataclass(eq=False)
class Flight:
    """A forwarded request in flight on one upstream connection.

    `owner`: the `AgentSession`, or None for a 2026-07-28 agent (each of its
    requests stands alone); `ctx`: the agent's request context (its
    `session` reaches that request's response stream); `bridge`: for a
    2026-07-28 agent's request, where server-to-client requests go instead.
    """

    owner: AgentSession | None
    ctx: ServerRequestContext[Any, Any]
    bridge: InputBridge | None = None
    started: float = field(default_factory=time.monotonic)

    def same_agent(self, other: Flight) -> bool:
        return self is other or (self.owner is not None and self.owner is other.owner)


# ---------------------------------------------------------------------------
# 2026-07-28 agents: server-to-client requests as InputRequiredResult rounds


class InputBridge:
    """The server-to-client requests a handshake-era upstream makes during one 2026-07-28 agent's call.

    The agent cannot take a request (MCP 2026-07-28 has none), so the
    gateway keeps the upstream call running, answers the agent with an
    `InputRequiredResult` carrying the requests under `inputRequests` and a
    `requestState` naming this bridge, and, when the agent retries with its
    `inputResponses`, hands them to the waiting upstream requests and waits
    for what comes next (the final result, or more requests).
    """

    def __init__(self) -> None:
        self._asks: dict[str, tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]] = {}
        self._new = asyncio.Event()
        self._keys = itertools.count(1)
        self.state = "mcpguard:" + secrets.token_urlsafe(18)

    async def ask(self, method: str, params: Mapping[str, Any] | None, timeout_s: float) -> dict[str, Any]:
        """Hold one upstream request until the agent answers it (its result, raw), at most `timeout_s` seconds."""
        key = f"r{next(self._keys)}"
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        request: dict[str, Any] = {"method": method}
        if params is not None:
            request["params"] = dict(params)
        self._asks[key] = (request, fut)
        self._new.set()
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            raise MCPError(code=INTERNAL_ERROR, message="mcpguard: the agent did not answer the request in time") from None
        finally:
            self._asks.pop(key, None)

    def open_asks(self) -> dict[str, dict[str, Any]]:
        """The requests not yet answered, keyed as the agent will answer them."""
        return {k: req for k, (req, fut) in self._asks.items() if not fut.done()}

    def answer(self, responses: Mapping[str, Any] | None) -> None:
        """Hand the agent's `inputResponses` to the waiting upstream requests."""
        for key, value in (responses or {}).items():
            entry = self._asks.get(key)
            if entry is not None and not entry[1].done():
                if isinstance(value, Mapping):
                    entry[1].set_result(dict(value))
                else:
                    entry[1].set_exception(MCPError(code=INVALID_REQUEST, message="input response is not an object"))

    async def next(self, upstream: asyncio.Task[dict[str, Any]]) -> dict[str, Any] | None:
        """Wait for the upstream call's result (returned; exceptions raise) or for requests (None)."""
        while True:
            if self.open_asks():
                return None
            self._new.clear()
            waiter = asyncio.ensure_future(self._new.wait())
            try:
                await asyncio.wait({upstream, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            if upstream.done():
                return upstream.result()


@dataclass(eq=False)
class Parked:
    """A 2026-07-28 agent's call waiting for its retry: the bridge, the upstream task, who may resume it."""

    bridge: InputBridge
    upstream: asyncio.Future[dict[str, Any]]
    flight: Flight
    grant: str
    method: str
    name: str | None
    call: Any = None  # the mcpguard Call of a tools/call, decided once
    expires: float = 0.0


class Continuations:
    """`requestState` values the gateway has seen, so an agent's retry is the same call, not a new one.

    - `park(parked)`: a bridged call (the gateway's own `requestState`).
    - `passed(state, call, grant)`: an upstream's `InputRequiredResult`
      passed through to the agent; its retry carries the upstream's state.
    Both bounded (`MAX_PARKED`, oldest dropped) and expire after
    `BRIDGE_TTL_S` seconds; a parked upstream call is cancelled when dropped.
    """

    def __init__(self) -> None:
        self._parked: OrderedDict[str, Parked] = OrderedDict()
        self._passed: OrderedDict[str, tuple[Any, str, float]] = OrderedDict()

    def park(self, parked: Parked) -> str:
        self._expire()
        parked.expires = time.monotonic() + BRIDGE_TTL_S
        self._parked[parked.bridge.state] = parked
        while len(self._parked) > MAX_PARKED:
            _, old = self._parked.popitem(last=False)
            old.upstream.cancel()
        return parked.bridge.state

    def peek(self, state: str | None, grant: str, method: str, name: str | None) -> Parked | None:
        """The parked call `state` names, if this grant parked it for this method and name (it stays parked)."""
        if not state:
            return None
        p = self._parked.get(state)
        if p is None or p.grant != grant or p.method != method or p.name != name:
            return None
        return p

    def resume(self, state: str | None, grant: str, method: str, name: str | None) -> Parked | None:
        """Like `peek`, and the call is no longer parked (the retry now waits for it)."""
        p = self.peek(state, grant, method, name)
        if p is not None:
            del self._parked[p.bridge.state]
        return p

    def passed(self, state: str, call: Any, grant: str) -> None:
        self._expire()
        self._passed[state] = (call, grant, time.monotonic() + BRIDGE_TTL_S)
        while len(self._passed) > MAX_PARKED:
            self._passed.popitem(last=False)

    def continued(self, state: str | None, grant: str, tool: str) -> Any:
        """The `Call` an upstream `requestState` belongs to (same grant and tool), or None."""
        if not state:
            return None
        entry = self._passed.pop(state, None)
        if entry is None or entry[1] != grant or entry[0].tool != tool:
            return None
        return entry[0]

    def _expire(self) -> None:
        now = time.monotonic()
        for state in [s for s, p in self._parked.items() if p.expires < now]:
            self._parked.pop(state).upstream.cancel()
        for state in [s for s, e in self._passed.items() if e[2] < now]:
            self._passed.pop(state, None)

    def close(self) -> None:
        for p in self._parked.values():
            p.upstream.cancel()
        self._parked.clear()
        self._passed.clear()


# ---------------------------------------------------------------------------
# the upstream side of one server


class UpstreamPool:
    """The upstream connections of one server and the agent sessions they serve.

    `shared`: the server's own connection (era negotiated, fills `tools`);
    `sessions`: `Mcp-Session-Id` -> `AgentSession`; `listen_bus`: where
    upstream change events go for 2026-07-28 agents' `subscriptions/listen`
    streams; `continuations`: see `Continuations`.
    """

    def __init__(self, handle: ServerHandle, *, on_session_closed: Callable[[AgentSession], None] | None = None) -> None:
        self.handle = handle
        self.sessions: dict[str, AgentSession] = {}
        self.ended: OrderedDict[str, str] = OrderedDict()  # sessions a person ended -> why
        self.listen_bus = InMemorySubscriptionBus()
        self.continuations = Continuations()
        self._on_session_closed = on_session_closed
        self._flights: dict[UpstreamConnection, dict[int, Flight]] = {}
        self._closers: set[asyncio.Task[None]] = set()
        self._resource_refs: dict[str, int] = {}
        self._owned: dict[int, set[str]] = {}
        self._listen_task: asyncio.Future[None] | None = None
        self.shared = self._connection(None, None, label=handle.name, on_up=self._on_shared_up,
                                       on_state=lambda c, s, d: handle.set_state(s, d))

    # -- connections -------------------------------------------------------------
    def _connection(self, owner: AgentSession | None, init_params: dict[str, Any] | None, *, label: str,
                    on_up: Callable[[UpstreamConnection], Awaitable[None]] | None = None,
                    on_state: Callable[[UpstreamConnection, str, str], None] | None = None) -> UpstreamConnection:
        holder: dict[str, UpstreamConnection] = {}

        async def on_request(dctx: DispatchContext[Any], method: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
            return await self._to_agent(holder["c"], owner, method, params)

        async def on_notify(dctx: DispatchContext[Any], method: str, params: Mapping[str, Any] | None) -> None:
            await self._notify_agents(holder["c"], owner, method, params)

        conn = UpstreamConnection(self.handle.config, init_params=init_params, on_request=on_request,
                                  on_notify=on_notify, on_state=on_state, on_up=on_up,
                                  input_schema=self.handle.input_schema, label=label)
        holder["c"] = conn
        self._flights[conn] = {}
        return conn

    async def start(self) -> None:
        """Start the shared connection (returns once it is up or its first start failed)."""
        await self.shared.start()

    @property
    def per_session(self) -> bool:
        """True when handshake-era agent sessions get their own upstream connection."""
        return self.handle.config.upstream_sessions == "per_session" and not self.shared.modern

    async def open_session(self, session_id: str, grant: str, params: Mapping[str, Any], connection: Any,
                           protocol_version: str) -> AgentSession:
        """Register a handshake-era agent session at its `initialize`; with `per_session`, open its connection.

        Raises `MCPError` when its own upstream connection cannot start.
        """
        info = params.get("clientInfo") if isinstance(params.get("clientInfo"), dict) else None
        caps = params.get("capabilities") if isinstance(params.get("capabilities"), dict) else None
        sess = AgentSession(session_id=session_id, grant=grant,
                            client=info.get("name") if info and isinstance(info.get("name"), str) else None,
                            client_info=info, capabilities=caps, protocol_version=protocol_version, upstream=None,
                            connection=connection)
        if self.per_session:
            label = f"{self.handle.name}#{session_id[:8]}"

            def on_state(conn: UpstreamConnection, state: str, detail: str) -> None:
                # a session's own upstream: only its faults and recoveries are news
                if state == "restarting" or (state == "up" and conn.restarts) or (
                        state == "down" and detail != "closed"):
                    self.handle.bus.publish(UpstreamState(server=self.handle.name, state=state,
                                                          detail=f"session {label}: {detail}"))

            conn = self._connection(sess, dict(params), label=label, on_state=on_state)
            sess.upstream = conn
            await conn.start()
            if not conn.up:
                cause = conn.last_failure or conn.detail or conn.state
                self._spawn_close(conn)
                raise MCPError(code=INTERNAL_ERROR,
                               message=f"mcpguard: upstream '{self.handle.name}' is unavailable: {cause}")
        old = self.sessions.pop(session_id, None)
        if old is not None:
            self.close_session(old)
        self.sessions[session_id] = sess
        self.handle.bus.publish(SessionOpened(server=self.handle.name, session_id=session_id, grant=grant,
                                              client=sess.client, protocol_version=protocol_version))
        return sess

    def end_session(self, session_id: str, why: str = "ended by a person") -> bool:
        """End an agent's session from the gateway's side: its requests are refused from now on (the agent
        must open a new session), its own upstream connection closes. False when there is no such session."""
        sess = self.sessions.get(session_id)
        if sess is None:
            return False
        self.ended[session_id] = why
        while len(self.ended) > MAX_PARKED:
            self.ended.popitem(last=False)
        self.close_session(sess, why=why)
        return True

    def close_session(self, sess: AgentSession, why: str = "") -> None:
        """The agent's session ended: drop it, release its subscriptions, close its own connection (once)."""
        registered = self.sessions.get(sess.session_id) is sess
        if registered:
            del self.sessions[sess.session_id]
        if sess.closed:
            return
        sess.closed = True
        if registered:
            self.handle.bus.publish(SessionClosed(server=self.handle.name, session_id=sess.session_id,
                                                  why=why or "the session ended"))
        if sess.upstream is not None:
            self._flights.pop(sess.upstream, None)
            self._spawn_close(sess.upstream)
        else:
            self._spawn(self.release(sess))
        if self._on_session_closed is not None:
            self._on_session_closed(sess)

    def connection_for(self, sess: AgentSession | None) -> UpstreamConnection:
        """The connection that serves requests of `sess` (None: a 2026-07-28 agent)."""
        if sess is not None and sess.upstream is not None:
            return sess.upstream
        return self.shared

    def processes(self) -> int:
        """Upstream connections open now (for a stdio upstream, processes)."""
        return 1 + sum(1 for s in self.sessions.values() if s.upstream is not None)

    async def close(self) -> None:
        """Close every connection (and process) of this server."""
        self.continuations.close()
        if self._listen_task is not None:
            self._listen_task.cancel()
        conns = [s.upstream for s in self.sessions.values() if s.upstream is not None]
        self.sessions.clear()
        await asyncio.gather(*(c.close() for c in [*conns, self.shared]), return_exceptions=True)
        if self._closers:
            await asyncio.gather(*list(self._closers), return_exceptions=True)

    def _spawn_close(self, conn: UpstreamConnection) -> None:
        self._spawn(conn.close())

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    # -- forwarding ----------------------------------------------------------------
    async def forward(self, conn: UpstreamConnection, flight: Flight, method: str,
                      params: Mapping[str, Any] | None, *, agent: Agent | None,
                      on_progress: Any = None) -> dict[str, Any]:
        """Send one agent request upstream on `conn`, recorded as `flight` while it is in flight."""
        flights = self._flights.setdefault(conn, {})
        key = id(flight)
        flights[key] = flight
        token = CURRENT_FLIGHT.set(flight)
        try:
            return await conn.request(method, params, timeout=self.handle.call_timeout_s, agent=agent,
                                      on_progress=on_progress)
        finally:
            CURRENT_FLIGHT.reset(token)
            flights.pop(key, None)

    async def subscribe(self, owner: Any, uri: str) -> None:
        """A resource subscription through the shared connection: counted per URI, made upstream for the first.

        `owner` is an `AgentSession` (its `resources/subscribe`) or a listen
        stream's token (a 2026-07-28 agent's `subscriptions/listen`). On a
        handshake-era upstream the first subscriber sends
        `resources/subscribe`; on a 2026-07-28 one the gateway's own listen
        stream is reopened with the URI. Raises the upstream's `MCPError`.
        """
        owned = self._owned.setdefault(id(owner), set())
        if uri in owned:
            return
        owned.add(uri)
        self._resource_refs[uri] = self._resource_refs.get(uri, 0) + 1
        if self._resource_refs[uri] > 1:
            return
        try:
            await self._want(uri, True)
        except BaseException:
            owned.discard(uri)
            self._drop_ref(uri)
            raise

    async def unsubscribe(self, owner: Any, uri: str) -> None:
        """Release `owner`'s subscription to `uri`; the last one leaving ends it upstream."""
        owned = self._owned.get(id(owner), set())
        if uri not in owned:
            return
        owned.discard(uri)
        if not owned:
            self._owned.pop(id(owner), None)
        if self._drop_ref(uri) == 0:
            try:
                await self._want(uri, False)
            except MCPError as exc:
                log.info("unsubscribing %s on %s failed: %s", uri, self.handle.name, exc)

    async def release(self, owner: Any) -> None:
        """Release every subscription `owner` holds (its session or stream ended)."""
        for uri in list(self._owned.get(id(owner), ())):
            await self.unsubscribe(owner, uri)

    def _drop_ref(self, uri: str) -> int:
        left = self._resource_refs.get(uri, 1) - 1
        if left > 0:
            self._resource_refs[uri] = left
        else:
            self._resource_refs.pop(uri, None)
        return max(left, 0)

    async def _want(self, uri: str, on: bool) -> None:
        if self.shared.modern:
            self._restart_listen()
            return
        method = "resources/subscribe" if on else "resources/unsubscribe"
        await self.shared.request(method, {"uri": uri}, timeout=self.handle.call_timeout_s)

    # -- a 2026-07-28 upstream's change events ----------------------------------------
    def _restart_listen(self) -> None:
        if self._listen_task is not None:
            self._listen_task.cancel()
        self._listen_task = None
        if self.shared.modern and self.shared.connected:
            self._listen_task = asyncio.ensure_future(self._listen())

    async def _listen(self) -> None:
        """The gateway's own `subscriptions/listen` on a 2026-07-28 upstream (its events reach `_notify_agents`)."""
        caps = self.shared.capabilities
        wanted = {
            "toolsListChanged": bool((caps.get("tools") or {}).get("listChanged")),
            "promptsListChanged": bool((caps.get("prompts") or {}).get("listChanged")),
            "resourcesListChanged": bool((caps.get("resources") or {}).get("listChanged")),
        }
        notifications: dict[str, Any] = {k: True for k, v in wanted.items() if v}
        if self._resource_refs:
            notifications["resourceSubscriptions"] = sorted(self._resource_refs)
        if not notifications:
            return
        try:
            await self.shared.request("subscriptions/listen", {"notifications": notifications}, timeout=None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the stream ended or the upstream refused: events are then not relayed
            log.info("subscriptions/listen on %s ended: %s", self.handle.name, exc)

    # -- from the upstream ---------------------------------------------------------
    def _flight_for(self, conn: UpstreamConnection, owner: AgentSession | None) -> Flight | str:
        """The agent request an upstream message belongs to, or why none can be named."""
        current = CURRENT_FLIGHT.get()
        flights = list(self._flights.get(conn, {}).values())
        if current is not None and any(f is current for f in flights):
            return current
        if not flights:
            return "no agent request is in flight on this connection"
        newest = max(flights, key=lambda f: f.started)
        if all(f.same_agent(newest) for f in flights):
            return newest
        return (f"{len(flights)} requests of different agents are in flight on the shared connection of "
                f"'{self.handle.name}', so mcpguard cannot tell which one this belongs to "
                "(set upstream_sessions = \"per_session\" for this server)")

    async def _to_agent(self, conn: UpstreamConnection, owner: AgentSession | None, method: str,
                        params: Mapping[str, Any] | None) -> dict[str, Any]:
        """An upstream's server-to-client request, to the agent it belongs to (raw result back)."""
        if method == "ping":
            return {}
        target = self._flight_for(conn, owner)
        if isinstance(target, str):
            raise MCPError(code=INTERNAL_ERROR, message=f"mcpguard: {method} not delivered: {target}")
        if target.bridge is not None:
            if method not in ("sampling/createMessage", "elicitation/create", "roots/list"):
                raise MCPError(code=METHOD_NOT_FOUND, message=f"mcpguard: a 2026-07-28 agent cannot take {method}")
            return await target.bridge.ask(method, params, self.handle.call_timeout_s)
        session = target.ctx.session
        try:
            request = spec.MONOLITH_REQUESTS[method].model_validate(
                {"method": method, **({"params": dict(params)} if params is not None else {})})
        except (KeyError, ValidationError):
            raise MCPError(code=METHOD_NOT_FOUND, message=f"mcpguard cannot relay {method} to the agent") from None
        result = await session.send_request(request, _AnyResult,  # type: ignore[arg-type]
                                            request_read_timeout_seconds=self.handle.call_timeout_s,
                                            metadata=ServerMessageMetadata(related_request_id=target.ctx.request_id))
        return result.model_dump(by_alias=True, mode="json", exclude_none=True)

    async def _notify_agents(self, conn: UpstreamConnection, owner: AgentSession | None, method: str,
                             params: Mapping[str, Any] | None) -> None:
        if method in ("notifications/progress", "notifications/cancelled"):
            return  # progress reaches the forwarding request through the dispatcher; ids differ per hop
        event = event_from_wire(method, params)
        if event is not None:
            if method == "notifications/tools/list_changed" and conn is self.shared:
                self._spawn(self.refresh_tools())
            await self.listen_bus.publish(event)
            uri = (params or {}).get("uri")
            for sess in self._sessions_on(conn, owner):
                if method == "notifications/resources/updated" and owner is None and uri not in self._owned.get(
                        id(sess), ()):
                    continue
                await _send_standalone(sess, method, params)
            return
        if method == "notifications/message":
            target = self._flight_for(conn, owner)
            if not isinstance(target, str):
                await _send_on_request(target, method, params)
                return
            for sess in self._sessions_on(conn, owner):
                if owner is not None or sess.log_level is not None:
                    await _send_standalone(sess, method, params)
            return
        if owner is not None:
            await _send_standalone(owner, method, params)

    def _sessions_on(self, conn: UpstreamConnection, owner: AgentSession | None) -> list[AgentSession]:
        if owner is not None:
            return [owner]
        if conn is self.shared:
            return [s for s in self.sessions.values() if s.upstream is None]
        return []

    # -- the shared connection's own work ------------------------------------------
    async def _on_shared_up(self, conn: UpstreamConnection) -> None:
        await self.refresh_tools()
        self._restart_listen()

    async def refresh_tools(self) -> None:
        """List the upstream's tools on the shared connection (bounded pagination) into the handle."""
        tools: list[dict[str, Any]] = []
        cursor = None
        try:
            for _ in range(100):
                params = {"cursor": cursor} if cursor else None
                res = await self.shared.request("tools/list", params, timeout=self.handle.call_timeout_s)
                tools.extend(t for t in res.get("tools", []) if isinstance(t, dict))
                cursor = res.get("nextCursor")
                if not cursor:
                    break
        except MCPError as exc:
            log.info("tools/list of %s failed: %s", self.handle.name, exc)
            return
        self.handle.see_tools(tools, complete=True)


async def _send_standalone(sess: AgentSession, method: str, params: Mapping[str, Any] | None) -> None:
    """A notification to an agent session's standalone stream (dropped when it has none or it is gone)."""
    if sess.connection is None or _typed_notification(method, params) is None:
        return  # only what the spec defines, and well formed
    try:
        await sess.connection.notify(method, params)
    except Exception as exc:  # a gone session must not fail the upstream's notification
        log.debug("notification %s to session %s dropped: %s", method, sess.session_id[:8], exc)


async def _send_on_request(flight: Flight, method: str, params: Mapping[str, Any] | None) -> None:
    note = _typed_notification(method, params)
    if note is None:
        return
    try:
        await flight.ctx.session.send_notification(note, related_request_id=flight.ctx.request_id)
    except Exception as exc:
        log.debug("notification %s dropped: %s", method, exc)


def _typed_notification(method: str, params: Mapping[str, Any] | None) -> Any:
    model = spec.MONOLITH_NOTIFICATIONS.get(method)
    if model is None:
        return None
    try:
        return model.model_validate({"method": method, **({"params": dict(params)} if params is not None else {})})
    except ValidationError:
        log.info("dropped a malformed %s from the upstream", method)
        return None


def era_of_ctx(ctx: ServerRequestContext[Any, Any]) -> str:
    """The agent's era for one request."""
    return eras.era_of(ctx.protocol_version)
