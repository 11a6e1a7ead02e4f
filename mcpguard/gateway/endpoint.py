"""One server's MCP endpoint: the SDK `Server` the agents talk to, forwarding to its upstream.

Each `[servers.NAME]` gets one low-level `mcp` `Server` served by its own
`StreamableHTTPSessionManager` at `/mcp/NAME`, which serves both MCP eras at
that one URL (MCP 2026-07-28 single exchanges and handshake-era sessions).
The SDK owns the wire: framing, the `Mcp-Method`/`Mcp-Name` header checks,
per-era request validation (a malformed request is a JSON-RPC error before
any handler runs), per-era result shaping and the caching fields
(`ttlMs`/`cacheScope`, filled when the upstream gave none), and
`subscriptions/listen` (the SDK's `ListenHandler`).

What this module adds:
- a handler per MCP request method that forwards to the upstream connection
  the agent's requests go to (`sessions.UpstreamPool`), shaped for the
  upstream's era; `tools/call` goes through the server's `CallPipeline`;
  `tools/list` drops hidden tools and fingerprints the rest;
  `server/discover` and `initialize` answer with the upstream's
  capabilities, identity and instructions;
- a middleware in front of the handlers: the handshake opens an agent
  session; request methods the SDK does not know are forwarded raw;
  notifications: only those the spec defines for clients go upstream, and a
  request sent as a notification is never forwarded (it is recorded as
  `malformed`);
- `InputRequiredResult` across eras: passed through to a 2026-07-28 agent
  with `requestState` untouched (its retry continues the same call), driven
  by the gateway for a handshake-era agent (the embedded requests go to the
  agent as server-to-client requests), and made by the gateway for a
  2026-07-28 agent whose handshake-era upstream asks it something mid-call.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Mapping
from typing import Any

import mcp_types as types
from mcp.server.caching import CacheHint
from mcp.server.context import CallNext, ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.subscriptions import ListenHandler
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import progress_token_from_params
from mcp.shared.message import ServerMessageMetadata
from mcp_types import CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, INVALID_PARAMS, SERVER_INFO_META_KEY
from mcp_types import methods as spec
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ConfigDict

from mcpguard.call import Call
from mcpguard.codes import Code
from mcpguard.events import EventBus, MalformedRequest
from mcpguard.gateway import eras
from mcpguard.gateway.pipeline import CallPipeline
from mcpguard.gateway.server import ServerHandle
from mcpguard.gateway.sessions import AgentSession, Flight, InputBridge, Parked, UpstreamPool, _AnyResult
from mcpguard.gateway.upstream import Agent, UpstreamConnection

log = logging.getLogger(__name__)

LOCAL_GRANT = "local"
INPUT_REQUIRED_MAX_ROUNDS = 10
#: results of these may be cached by the agent: the gateway's answer depends on a policy that can change
#: at any moment (a hidden tool), so nothing is fresh for longer than the call that fetched it
_CACHE_HINTS = {m: CacheHint(ttl_ms=0, scope="private") for m in (
    "prompts/list", "resources/list", "resources/read", "resources/templates/list", "server/discover", "tools/list")}
#: client notifications that go upstream on a connection of the agent's own (per_session)
_UPSTREAM_NOTIFICATIONS = frozenset({"notifications/roots/list_changed", "notifications/progress"})
_SDK_NOTIFICATIONS = frozenset({"notifications/initialized", "notifications/cancelled"})
#: how many keepalive progress notifications the `tools/call` handled in this context sent while it waited
#: for a person (set by `Endpoint._keepalive` in the request's own task, read by `Endpoint._progress`)
_kept_alive: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("mcpguard_kept_alive", default=None)


class _Params(BaseModel):
    """Any request's params, kept as sent: the SDK has validated them for the agent's era already."""

    model_config = ConfigDict(extra="allow")


def grant_of(ctx: ServerRequestContext[Any, Any]) -> str:
    """The grant a request was authenticated as (`mcpguard.gateway.auth`), `local` for loopback callers."""
    request = ctx.request
    user = request.scope.get("user") if request is not None else None
    token = getattr(user, "access_token", None)
    return token.client_id if token is not None else LOCAL_GRANT


def _connection_of(ctx: ServerRequestContext[Any, Any]) -> Any:
    # The SDK gives a handler no public way to its Connection yet; the session's end is only
    # observable through `Connection.exit_stack`, where the SDK says per-connection cleanup belongs.
    return getattr(ctx.session, "_connection", None)


class Endpoint:
    """The agents' side of one server: its SDK `Server`, session manager and forwarding.

    `handle`: the server's state; `pool`: its upstream connections;
    `pipeline`: its `CallPipeline`; `bus`: the gateway's events;
    `security`: the SDK's Host/Origin checks (DNS rebinding, MCP 2025-06-18,
    Streamable HTTP §Security Warning).
    """

    def __init__(self, handle: ServerHandle, pool: UpstreamPool, pipeline: CallPipeline, bus: EventBus,
                 security: TransportSecuritySettings, *, telemetry: bool = False) -> None:
        self.handle = handle
        self.pool = pool
        self.pipeline = pipeline
        self.bus = bus
        self.listen = ListenHandler(pool.listen_bus)
        server: Server[Any] = Server(
            handle.name,
            version="0.1.0",
            cache_hints=_CACHE_HINTS,  # type: ignore[arg-type]
            get_tool_input_schema=handle.input_schema,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_resources=self._forward,
            on_list_resource_templates=self._forward,
            on_read_resource=self._forward_interactive,
            on_subscribe_resource=self._subscribe,
            on_unsubscribe_resource=self._unsubscribe,
            on_subscriptions_listen=self._listen,
            on_list_prompts=self._forward,
            on_get_prompt=self._forward_interactive,
            on_completion=self._forward,
        )
        server.add_request_handler("server/discover", types.RequestParams, self._discover)
        server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, self._set_level)
        # telemetry off: no span middleware at all, so it costs nothing per call
        server.middleware = [*(server.middleware if telemetry else []), self._front]
        self.server = server
        self.manager = StreamableHTTPSessionManager(
            app=server,
            json_response=False,
            security_settings=security,
            session_idle_timeout=handle.config.session_idle_timeout_s,
            max_sessions=handle.config.max_sessions,
        )

    # -- who is asking ------------------------------------------------------------
    def _session(self, ctx: ServerRequestContext[Any, Any]) -> AgentSession | None:
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS or ctx.request is None:
            return None
        sid = ctx.request.headers.get("mcp-session-id")
        return self.pool.sessions.get(sid) if sid else None

    def _agent(self, ctx: ServerRequestContext[Any, Any], sess: AgentSession | None) -> Agent:
        if sess is not None:
            return sess.agent
        meta = (ctx.params or {}).get("_meta")
        if isinstance(meta, Mapping):
            info, caps = meta.get(CLIENT_INFO_META_KEY), meta.get(CLIENT_CAPABILITIES_META_KEY)
            return Agent(info if isinstance(info, Mapping) else None, caps if isinstance(caps, Mapping) else None)
        return Agent()

    def _route(self, ctx: ServerRequestContext[Any, Any]) -> tuple[AgentSession | None, UpstreamConnection]:
        sess = self._session(ctx)
        return sess, self.pool.connection_for(sess)

    def _progress(self, ctx: ServerRequestContext[Any, Any]) -> Any:
        """The upstream's progress, to the agent; after `n` keepalives on this request (`_keepalive`),
        shifted to `n + progress` of `n + total`, since the values the agent sees MUST increase."""
        if progress_token_from_params(ctx.params) is None:
            return None
        session = ctx.session
        kept = _kept_alive.get()
        shift = kept[0] if kept is not None else 0

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            with contextlib.suppress(Exception):  # the agent's stream may be gone
                await session.report_progress(progress + shift, None if total is None else total + shift, message)

        return on_progress

    def _keepalive(self, ctx: ServerRequestContext[Any, Any]) -> Any:
        """While a call waits for a person: progress for an agent that asked for it (`progressToken`), so a
        client whose read timeout resets on progress keeps waiting. Without a token the response stream
        itself is kept alive by the SDK's SSE pings (every 15 s, both eras).

        The keepalives' progress counts 0, 1, 2, ...; how many were sent is left in `_kept_alive` for
        `_progress`, which forwards the upstream's progress (created only once the wait is over)."""
        if progress_token_from_params(ctx.params) is None:
            return None
        session = ctx.session
        sent = [0]
        _kept_alive.set(sent)

        async def on_wait(remaining_s: float) -> None:
            value = sent[0]
            sent[0] += 1  # counted before the send: a send that raised may still have been delivered
            await session.report_progress(value, None, f"waiting for a person's approval, "
                                                       f"{_clock(remaining_s)} left")

        return on_wait

    def _shape(self, ctx: ServerRequestContext[Any, Any], conn: UpstreamConnection,
               result: dict[str, Any]) -> dict[str, Any]:
        return eras.complete_for(result, agent_era=eras.era_of(ctx.protocol_version), server_info=conn.server_info)

    # -- plain forwarding ---------------------------------------------------------
    async def _send(self, ctx: ServerRequestContext[Any, Any], sess: AgentSession | None, conn: UpstreamConnection,
                    params: Mapping[str, Any] | None, *, bridge: InputBridge | None = None,
                    flight: Flight | None = None) -> dict[str, Any]:
        flight = flight or Flight(owner=sess, ctx=ctx, bridge=bridge)
        return await self.pool.forward(conn, flight, ctx.method, params, agent=self._agent(ctx, sess),
                                       on_progress=self._progress(ctx))

    async def _forward(self, ctx: ServerRequestContext[Any, Any], params: Any = None) -> dict[str, Any]:
        sess, conn = self._route(ctx)
        return self._shape(ctx, conn, await self._send(ctx, sess, conn, ctx.params))

    async def _forward_interactive(self, ctx: ServerRequestContext[Any, Any], params: Any = None) -> dict[str, Any]:
        sess, conn = self._route(ctx)
        return self._shape(ctx, conn, await self._interactive(ctx, sess, conn, ctx.params))

    async def _interactive(self, ctx: ServerRequestContext[Any, Any], sess: AgentSession | None,
                           conn: UpstreamConnection, params: Mapping[str, Any] | None,
                           call: Call | None = None) -> dict[str, Any]:
        """Forward a request whose answer may be an `InputRequiredResult` (tools/call, prompts/get,
        resources/read), across eras (see the module docstring)."""
        agent_modern = ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
        if agent_modern and not conn.modern:
            return await self._bridged(ctx, conn, params, call)
        result = await self._send(ctx, sess, conn, params)
        if not eras.is_input_required(result):
            return result
        if agent_modern:
            state = result.get("requestState")
            if call is not None and isinstance(state, str):
                self.pool.continuations.passed(state, call, call.grant)
            return result
        return await self._drive_input_required(ctx, sess, conn, params, result)

    async def _drive_input_required(self, ctx: ServerRequestContext[Any, Any], sess: AgentSession | None,
                                    conn: UpstreamConnection, sent: Mapping[str, Any] | None,
                                    result: dict[str, Any]) -> dict[str, Any]:
        """A 2026-07-28 upstream asked a handshake-era agent for input: ask the agent itself, then retry."""
        params = dict(sent or {})
        for _ in range(INPUT_REQUIRED_MAX_ROUNDS):
            if not eras.is_input_required(result):
                return result
            responses: dict[str, Any] = {}
            for key, req in (result.get("inputRequests") or {}).items():
                responses[key] = await self._ask_agent(ctx, req)
            params = {k: v for k, v in params.items() if k not in ("inputResponses", "requestState")}
            if responses:
                params["inputResponses"] = responses
            if result.get("requestState") is not None:
                params["requestState"] = result["requestState"]
            result = await self._send(ctx, sess, conn, params)
        raise MCPError(code=-32603, message=f"mcpguard: the upstream asked for input more than "
                                            f"{INPUT_REQUIRED_MAX_ROUNDS} times")

    async def _ask_agent(self, ctx: ServerRequestContext[Any, Any], req: Any) -> dict[str, Any]:
        if not isinstance(req, Mapping) or not isinstance(req.get("method"), str):
            raise MCPError(code=-32603, message="mcpguard: the upstream sent a malformed input request")
        method = req["method"]
        try:
            request = spec.MONOLITH_REQUESTS[method].model_validate(dict(req))
        except Exception:
            raise MCPError(code=-32603, message=f"mcpguard cannot relay {method} to the agent") from None
        result = await ctx.session.send_request(request, _AnyResult,  # type: ignore[arg-type]
                                                request_read_timeout_seconds=self.handle.call_timeout_s,
                                                metadata=ServerMessageMetadata(related_request_id=ctx.request_id))
        return result.model_dump(by_alias=True, mode="json", exclude_none=True)

    async def _bridged(self, ctx: ServerRequestContext[Any, Any], conn: UpstreamConnection,
                       sent: Mapping[str, Any] | None, call: Call | None) -> dict[str, Any]:
        """A 2026-07-28 agent in front of a handshake-era upstream: mid-call requests become input rounds."""
        params = dict(sent or {})
        name = params.get("name") if isinstance(params.get("name"), str) else params.get("uri")
        grant = grant_of(ctx)
        parked = self.pool.continuations.resume(params.get("requestState"), grant, ctx.method,
                                                name if isinstance(name, str) else None)
        if parked is not None:
            bridge, upstream, flight = parked.bridge, parked.upstream, parked.flight
            flight.ctx = ctx  # later progress rides this request's stream
            bridge.answer(params.get("inputResponses"))
        else:
            bridge = InputBridge()
            flight = Flight(owner=None, ctx=ctx, bridge=bridge)
            clean = {k: v for k, v in params.items() if k not in ("inputResponses", "requestState")}
            upstream = asyncio.ensure_future(self._send(ctx, None, conn, clean, flight=flight))
        try:
            result = await bridge.next(upstream)
        except BaseException:
            if not upstream.done():
                upstream.cancel()
            raise
        if result is not None:
            return result
        state = self.pool.continuations.park(Parked(bridge=bridge, upstream=upstream, flight=flight, grant=grant,
                                                    method=ctx.method,
                                                    name=name if isinstance(name, str) else None, call=call))
        return {"resultType": "input_required", "inputRequests": bridge.open_asks(), "requestState": state}

    # -- tools ----------------------------------------------------------------------
    async def _list_tools(self, ctx: ServerRequestContext[Any, Any], params: Any = None) -> dict[str, Any]:
        sess, conn = self._route(ctx)
        result = await self._send(ctx, sess, conn, ctx.params)
        tools = result.get("tools")
        if isinstance(tools, list):
            self.handle.see_tools([t for t in tools if isinstance(t, dict)],
                                  complete=not result.get("nextCursor") and not (ctx.params or {}).get("cursor"))
            policy = self.handle.policy
            if policy is not None and policy.hide:
                result = {**result, "tools": [t for t in tools
                                              if not (isinstance(t, dict) and policy.is_hidden(t.get("name")))]}
        return self._shape(ctx, conn, result)

    async def _call_tool(self, ctx: ServerRequestContext[Any, Any], params: Any = None) -> dict[str, Any]:
        sess, conn = self._route(ctx)
        p = ctx.params or {}
        name: str = p["name"]
        arguments = p.get("arguments") or {}
        grant = grant_of(ctx)
        if sess is not None:
            sess.calls += 1

        async def forward(decided: Call) -> dict[str, Any]:
            params = p if decided.arguments == arguments else {**p, "arguments": decided.arguments}
            return await self._interactive(ctx, sess, conn, params, decided)

        state = p.get("requestState") if isinstance(p.get("requestState"), str) else None
        parked = self.pool.continuations.peek(state, grant, "tools/call", name)
        call = parked.call if parked is not None else self.pool.continuations.continued(state, grant, name)
        if call is not None:
            result = await self.pipeline.forward(call, forward)  # a retry continues the call decided before
        else:
            agent = self._agent(ctx, sess)
            client = sess.client if sess is not None else (agent.client_info or {}).get("name")
            call = self.pipeline.new_call(name, arguments, grant=grant,
                                          session_id=sess.session_id if sess is not None else None,
                                          client=client if isinstance(client, str) else None)
            result = await self.pipeline.run(call, forward, on_wait=self._keepalive(ctx))
        if sess is not None and result.get("isError") and result.get("_meta", {}).get("mcpguard/decision"):
            sess.refused += 1
        return self._shape(ctx, conn, result)

    # -- subscriptions, logging, discovery ---------------------------------------------
    async def _subscribe(self, ctx: ServerRequestContext[Any, Any], params: Any = None) -> dict[str, Any]:
        sess, conn = self._route(ctx)
        if conn is not self.pool.shared:
            return await self._send(ctx, sess, conn, ctx.params)
        uri = str((ctx.params or {}).get("uri"))
        await self.pool.subscribe(sess if sess is not None else ctx, uri)
        return {}

    async def _unsubscribe(self, ctx: ServerRequestContext[Any, Any], params: Any = None) -> dict[str, Any]:
        sess, conn = self._route(ctx)
        if conn is not self.pool.shared:
            return await self._send(ctx, sess, conn, ctx.params)
        await self.pool.unsubscribe(sess if sess is not None else ctx, str((ctx.params or {}).get("uri")))
        return {}

    async def _set_level(self, ctx: ServerRequestContext[Any, Any], params: Any = None) -> dict[str, Any]:
        sess, conn = self._route(ctx)
        if sess is not None:
            sess.log_level = (ctx.params or {}).get("level")
        if conn.modern:
            return {}  # a 2026-07-28 upstream takes the level per request (the agent's _meta opt-in)
        return await self._send(ctx, sess, conn, ctx.params)

    async def _listen(self, ctx: ServerRequestContext[Any, Any], params: types.SubscriptionsListenRequestParams) -> Any:
        uris = list(params.notifications.resource_subscriptions or [])
        token = object()
        try:
            for uri in uris:
                await self.pool.subscribe(token, uri)
            return await self.listen(ctx, params)
        finally:
            await self.pool.release(token)

    async def _discover(self, ctx: ServerRequestContext[Any, Any], params: Any = None) -> dict[str, Any]:
        up = self.pool.shared
        caps = dict(up.capabilities or {"tools": {}})
        result: dict[str, Any] = {"supportedVersions": list(MODERN_PROTOCOL_VERSIONS), "capabilities": caps,
                                  "resultType": "complete"}
        if up.instructions is not None:
            result["instructions"] = up.instructions
        if up.server_info:
            result["_meta"] = {SERVER_INFO_META_KEY: dict(up.server_info)}
        return result

    # -- the middleware ---------------------------------------------------------------
    async def _front(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> Any:
        method = ctx.method
        if ctx.request_id is None:
            return await self._notification(ctx, call_next)
        if method == "initialize":
            return await self._initialize(ctx, call_next)
        if method not in spec.SPEC_CLIENT_METHODS:
            # a method of an extension the upstream may serve: forwarded as sent, its answer unshaped
            sess, conn = self._route(ctx)
            return await self._send(ctx, sess, conn, ctx.params)
        return await call_next(ctx)

    async def _notification(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> Any:
        method = ctx.method
        if method in _SDK_NOTIFICATIONS:
            return await call_next(ctx)
        if method in spec.SPEC_CLIENT_NOTIFICATION_METHODS:
            sess = self._session(ctx)
            if method in _UPSTREAM_NOTIFICATIONS and sess is not None and sess.upstream is not None:
                await sess.upstream.notify(method, ctx.params)
            return None
        self._malformed(ctx, "a request sent as a notification (no id, or an id JSON-RPC does not allow) "
                             "is never forwarded")
        return None

    def _malformed(self, ctx: ServerRequestContext[Any, Any], reason: str) -> None:
        sess = self._session(ctx)
        params = ctx.params if isinstance(ctx.params, Mapping) else {}
        tool = params.get("name") if ctx.method == "tools/call" and isinstance(params.get("name"), str) else None
        args = params.get("arguments") if tool is not None and isinstance(params.get("arguments"), dict) else None
        self.bus.publish(MalformedRequest(server=self.handle.name, method=ctx.method, reason=reason,
                                          grant=grant_of(ctx), session_id=sess.session_id if sess else None,
                                          tool=tool, arguments=args, code=Code.MALFORMED))

    def malformed_post(self, scope: Mapping[str, Any], body: Mapping[str, Any], reason: str) -> None:
        """Record a 2026-07-28 POST the SDK dropped as a notification although it names a request method."""
        params = body.get("params") if isinstance(body.get("params"), Mapping) else {}
        method = str(body.get("method"))
        tool = params.get("name") if method == "tools/call" and isinstance(params.get("name"), str) else None
        args = params.get("arguments") if tool is not None and isinstance(params.get("arguments"), dict) else None
        token = getattr(scope.get("user"), "access_token", None)
        self.bus.publish(MalformedRequest(server=self.handle.name, method=method, reason=reason,
                                          grant=token.client_id if token is not None else LOCAL_GRANT,
                                          tool=tool, arguments=args, code=Code.MALFORMED))

    async def _initialize(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> Any:
        params = dict(ctx.params or {})
        sid = ctx.request.headers.get("mcp-session-id") if ctx.request is not None else None
        connection = _connection_of(ctx)
        session_id = sid or getattr(connection, "session_id", None)
        if session_id is None or (session_id in self.pool.sessions):
            return await call_next(ctx)  # a second initialize, or no session to open: the SDK answers
        requested = params.get("protocolVersion")
        sess = await self.pool.open_session(session_id, grant_of(ctx), params, connection,
                                            requested if isinstance(requested, str) else "")
        try:
            result = await call_next(ctx)
        except BaseException:
            self.pool.close_session(sess)
            raise
        if isinstance(result, Mapping):
            sess.protocol_version = str(result.get("protocolVersion") or sess.protocol_version)
        if connection is not None:
            connection.exit_stack.callback(self.pool.close_session, sess)
        up = sess.upstream or self.pool.shared
        result = dict(result) if isinstance(result, Mapping) else result
        if isinstance(result, dict):
            if up.capabilities:
                result["capabilities"] = _legacy_capabilities(up.capabilities)
            if up.server_info:
                result["serverInfo"] = dict(up.server_info)
            if up.instructions is not None:
                result["instructions"] = up.instructions
            else:
                result.pop("instructions", None)
        return result


def _clock(seconds: float) -> str:
    """`1m40s`, `45s`: a countdown as a person reads it."""
    s = int(round(seconds))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _legacy_capabilities(caps: Mapping[str, Any]) -> dict[str, Any]:
    """An upstream's capabilities as a handshake-era agent reads them (a 2026-07-28 upstream's are the same
    map; only `extensions` of the newer era is dropped, which the handshake schema does not have)."""
    return {k: v for k, v in caps.items() if k != "extensions"}
