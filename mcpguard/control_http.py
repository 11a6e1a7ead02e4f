"""The control interface over HTTP: `mcpguard serve` offers it, `mcpguard console --attach` uses it.

Server side, `control_app(control, token)` is a Starlette app the gateway
serves at `/control` on its own listen address (127.0.0.1 by default):

| request | answer |
| --- | --- |
| `GET /control/snapshot` | the `Snapshot` as JSON |
| `GET /control/events` | `text/event-stream`: the gateway's events in order, as SSE `events` messages whose data is a JSON array of `{"type": "<EventClass>", ...fields}` (at most `BATCH_EVENTS`, gathered for up to `BATCH_S`) and whose `id` is `<boot>-<n>`, the number of its last event; a comment line every 15 s keeps it alive |
| `POST /control/<command>` | a JSON body of the command's arguments (`approve`, `deny`, `policy_text`, `save_policy`, `tune`, `undo`, `accept_tool_change`, `revoke`, `end_session`); the answer is a `CommandResult` (200), or `{"error": {"code", "message"}}` with 400 (bad request), 401 (no or wrong token), 404 (not found), 409 (answered, changed, invalid) |

Every request needs `Authorization: Bearer <control token>`, from loopback
too: an agent runs on the same machine, and must not be able to approve its
own calls. The token is compared in constant time and never logged; the
gateway writes it, with the URL, to its control file (mode 0600) so a
console started by the same user finds both.

The gateway keeps its recent events (`EventLog`: the last `REPLAY_EVENTS`,
at most `REPLAY_BYTES` of arguments and results), so a front end misses
nothing: a new event stream starts with them (a console opened after the
agent's first calls still shows them), and one that sends the SSE
`Last-Event-ID` it last saw gets only what came after (a reconnect loses no
call and no approval). An id of another boot of the gateway (it restarted)
counts as none; when the events after the id are gone from the log, an
`EventsDropped` with their count comes first.

Client side, `RemoteControl(url, token)` is a `Control` over that HTTP
(httpx2, the SDK's HTTP client). Its event stream reconnects by itself
(backoff up to 5 s, sending `Last-Event-ID`) and tells the front end with
`ControlLink` events (`disconnected` with why, `connected`), so a console
keeps what it saw while the gateway is away and takes a new snapshot when it
is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
import os
import stat
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from mcpguard import events as ev
from mcpguard.control import CommandResult, Control, ControlError, EventStream, PolicyText, Snapshot

log = logging.getLogger(__name__)

PING_S = 15.0
#: an event stream gathers what comes in this long (seconds) into one SSE message, at most
#: BATCH_EVENTS events: under load one write (and one JSON encoding) per batch, not per event,
#: costs the gateway a fraction of what a message per event did; a person sees no 25 ms delay
BATCH_S = 0.025
BATCH_EVENTS = 500
#: events the gateway keeps for front ends that attach late or reconnect
REPLAY_EVENTS = 5000
#: and at most this many bytes of their arguments and results (approximate)
REPLAY_BYTES = 16 * 1024 * 1024
COMMANDS = ("approve", "deny", "policy_text", "save_policy", "tune", "undo", "accept_tool_change", "revoke",
            "end_session")
_STATUS = {"bad_request": 400, "unauthorized": 401, "not_found": 404, "answered": 409, "changed": 409,
           "invalid_arguments": 409, "invalid_policy": 409, "cannot_edit": 409, "unavailable": 503}


@dataclasses.dataclass(frozen=True, slots=True)
class ControlLink(ev.Event):
    """The link of an attached front end to its gateway: `state` `connected` or `disconnected` (`detail`: why)."""

    state: str
    detail: str = ""


# -- events as JSON --------------------------------------------------------------------------------------------


def event_to_json(event: ev.Event) -> dict[str, Any]:
    """`{"type": "<EventClass>", ...its fields}` (JSON-ready: values the event holds are JSON already)."""
    out = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    out["type"] = type(event).__name__
    return out


def event_from_json(data: Mapping[str, Any]) -> ev.Event | None:
    """The event `event_to_json` wrote, or None for a type or shape this side does not know (a newer
    gateway); fields this side does not know are dropped."""
    kind = data.get("type")
    cls = getattr(ev, kind, None) if isinstance(kind, str) else None
    if cls is None and kind == "ControlLink":
        cls = ControlLink
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls) and issubclass(cls, ev.Event)):
        return None
    names = {f.name for f in dataclasses.fields(cls)}
    fields = {k: v for k, v in data.items() if k in names}
    if isinstance(fields.get("errors"), list):
        fields["errors"] = tuple(fields["errors"])
    try:
        return cls(**fields)
    except TypeError:
        return None


# -- the server ------------------------------------------------------------------------------------------------


def _weight(event: ev.Event) -> int:
    """Roughly how many bytes an event holds (its arguments and result dominate)."""
    n = 256 + int(getattr(event, "result_size", 0) or 0)
    args = getattr(event, "arguments", None)
    if args:
        try:
            n += len(json.dumps(args, default=str))
        except (TypeError, ValueError):
            n += 1024
    return n


class EventLog:
    """The gateway's recent events, numbered 1, 2, ... in publish order, for the control event stream.

    Listens to `bus` from creation until `close()`. Keeps at most
    `max_events` events and about `max_bytes` of their content (oldest
    dropped first). `boot` tells this gateway process's numbers from
    another's. `after(n)` returns `(missed, [(seq, event), ...])`: the
    events after number `n` still kept, and how many after `n` are gone.
    `wait(n)` returns once an event after `n` exists.
    """

    def __init__(self, bus: ev.EventBus, *, max_events: int = REPLAY_EVENTS, max_bytes: int = REPLAY_BYTES) -> None:
        import secrets

        self.boot = secrets.token_hex(4)
        self.seq = 0
        self._items: deque[tuple[int, ev.Event, int]] = deque()
        self._bytes = 0
        self._max_events, self._max_bytes = max_events, max_bytes
        self._changed: asyncio.Event | None = None
        self._detach = bus.add_listener(self._on_event)

    def _on_event(self, event: ev.Event) -> None:
        self.seq += 1
        w = _weight(event)
        self._items.append((self.seq, event, w))
        self._bytes += w
        while self._items and (len(self._items) > self._max_events or self._bytes > self._max_bytes):
            self._bytes -= self._items.popleft()[2]
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def after(self, n: int, limit: int | None = None) -> tuple[int, list[tuple[int, ev.Event]]]:
        """`(missed, items)`: the kept events after number `n` (the first `limit` of them), and how
        many after `n` are gone. Reads from the newest end: O(events after n), not O(kept)."""
        first = self._items[0][0] if self._items else self.seq + 1
        missed = max(0, first - n - 1)
        out: list[tuple[int, ev.Event]] = []
        for seq, e, _ in reversed(self._items):
            if seq <= n:
                break
            out.append((seq, e))
        out.reverse()
        return missed, out[:limit] if limit is not None else out

    async def wait(self, n: int) -> None:
        while self.seq <= n:
            if self._changed is None:
                self._changed = asyncio.Event()
            await self._changed.wait()

    def parse_id(self, last_event_id: str | None) -> int:
        """The number in a `Last-Event-ID` of this boot, else 0 (from the start of the log)."""
        boot, _, n = (last_event_id or "").strip().partition("-")
        return int(n) if boot == self.boot and n.isdigit() and int(n) <= self.seq else 0

    def close(self) -> None:
        self._detach()


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApproveArgs(_Args):
    approval_id: str
    by: str
    for_session: bool = False
    digest: str | None = None
    arguments: dict[str, Any] | None = None


class DenyArgs(_Args):
    approval_id: str
    by: str
    reason: str | None = None
    digest: str | None = None


class ServerArgs(_Args):
    server: str


class SavePolicyArgs(_Args):
    server: str
    text: str
    by: str


class TuneArgs(_Args):
    server: str
    by: str
    tool: str | None = None
    counter: str | None = None
    max_delta: int | None = None
    action: str | None = None
    hidden: bool | None = None


class ByArgs(_Args):
    by: str


class ToolArgs(_Args):
    server: str
    tool: str
    by: str


class RevokeArgs(_Args):
    server: str
    session_id: str
    tool: str
    by: str


class SessionArgs(_Args):
    server: str
    session_id: str
    by: str


_ARGS: dict[str, type[_Args]] = {"approve": ApproveArgs, "deny": DenyArgs, "policy_text": ServerArgs,
                                 "save_policy": SavePolicyArgs, "tune": TuneArgs, "undo": ByArgs,
                                 "accept_tool_change": ToolArgs, "revoke": RevokeArgs, "end_session": SessionArgs}


def control_app(control: Control, token: str, *, recent: EventLog,
                on_attach: Callable[[int], None] | None = None) -> Any:
    """The Starlette app of the control endpoint (see the module docstring) for `control`, guarded by `token`.

    `recent`: the gateway's `EventLog`, which the event stream replays and
    follows.
    `on_attach(delta)` is told +1 when a front end opens the event stream and
    -1 when it closes it (the gateway counts attached consoles).
    """
    from sse_starlette import EventSourceResponse
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    want = token.encode("utf-8")

    def authorized(request: Request) -> bool:
        got = request.headers.get("authorization", "")
        if got[:7].lower() != "bearer ":
            return False
        return hmac.compare_digest(got[7:].strip().encode("utf-8"), want)

    def refused() -> Response:
        return JSONResponse({"error": {"code": "unauthorized", "message": "a valid control token is required "
                                       "(Authorization: Bearer <token>; see the gateway's control file)"}},
                            status_code=401, headers={"www-authenticate": 'Bearer realm="mcpguard-control"'})

    async def snapshot(request: Request) -> Response:
        if not authorized(request):
            return refused()
        snap = await control.snapshot()
        return Response(snap.model_dump_json(), media_type="application/json")

    async def events(request: Request) -> Response:
        if not authorized(request):
            return refused()
        return EventSourceResponse(replayed(recent, recent.parse_id(request.headers.get("last-event-id"))),
                                   ping=PING_S)

    async def replayed(log: EventLog, cursor: int) -> AsyncIterator[dict[str, str]]:
        if on_attach is not None:
            on_attach(1)
        try:
            while True:
                missed, items = log.after(cursor, BATCH_EVENTS)
                if missed:
                    yield {"event": "events", "data": _dump([ev.EventsDropped(count=missed)])}
                if items:
                    cursor = items[-1][0]
                    yield {"id": f"{log.boot}-{cursor}", "event": "events", "data": _dump([e for _, e in items])}
                    if len(items) == BATCH_EVENTS:
                        continue  # more kept: send them before waiting
                await log.wait(cursor)
                await asyncio.sleep(BATCH_S)
        finally:
            if on_attach is not None:
                on_attach(-1)

    async def command(request: Request) -> Response:
        if not authorized(request):
            return refused()
        name = request.path_params["name"]
        args_type = _ARGS.get(name)
        if args_type is None:
            return _error("not_found", f"no command {name!r} (commands: {', '.join(COMMANDS)})")
        try:
            args = args_type.model_validate_json(await request.body() or b"{}")
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            return _error("bad_request", f"{name}: {where}: {first.get('msg')}")
        try:
            result = await getattr(control, name)(**args.model_dump())
        except ControlError as exc:
            return _error(exc.code, exc.message)
        return Response(result.model_dump_json(), media_type="application/json")

    def _error(code: str, message: str) -> Response:
        return JSONResponse({"error": {"code": code, "message": message}}, status_code=_STATUS.get(code, 400))

    return Starlette(routes=[Route("/control/snapshot", snapshot), Route("/control/events", events),
                             Route("/control/{name}", command, methods=["POST"])])


def _dump(events: list[ev.Event]) -> str:
    return json.dumps([event_to_json(e) for e in events], default=str)


def write_control_file(path: str | os.PathLike[str], url: str, token: str) -> None:
    """Write `{"url", "token", "pid"}` to `path`, readable by this user only (created 0600, replaced atomically)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"url": url, "token": token, "pid": os.getpid()}, f)
    os.replace(tmp, p)


def read_control_file(path: str | os.PathLike[str]) -> tuple[str, str]:
    """`(url, token)` from a gateway's control file. Raises OSError or ValueError (what is wrong with it)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("url"), str) or not isinstance(data.get("token"), str):
        raise ValueError(f"{path} is not an mcpguard control file")
    return data["url"], data["token"]


# -- the client ------------------------------------------------------------------------------------------------


class _RemoteStream(EventStream):
    def __init__(self, remote: RemoteControl, maxsize: int) -> None:
        self._remote = remote
        self._queue: asyncio.Queue[ev.Event] = asyncio.Queue(maxsize)
        self._dropped = 0
        self._task: asyncio.Future[None] | None = None  # started in the loop, at the first read
        self._closed = False

    def _follow(self) -> None:
        if self._task is None and not self._closed and self._remote.url is not None:
            self._task = asyncio.ensure_future(self._remote._follow(self))

    def _offer(self, event: ev.Event) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._dropped += 1

    async def get(self) -> ev.Event:
        self._follow()
        if self._dropped:
            n, self._dropped = self._dropped, 0
            return ev.EventsDropped(count=n)
        return await self._queue.get()

    def get_nowait(self) -> ev.Event | None:
        self._follow()
        if self._dropped:
            n, self._dropped = self._dropped, 0
            return ev.EventsDropped(count=n)
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()


class RemoteControl(Control):
    """A `Control` of a gateway at `url` (its `/control` endpoint's base, e.g. `http://127.0.0.1:8765`),
    authenticated with `token`. `url` may be given later (`set_url`), before the first use. Commands
    raise `ControlError` as the gateway answered, or `ControlError("unavailable", ...)` when it cannot
    be reached."""

    def __init__(self, url: str | None, token: str, *, timeout_s: float = 30.0) -> None:
        import httpx2

        self.url: str | None = None
        if url is not None:
            self.set_url(url)
        self._headers = {"authorization": f"Bearer {token}"}
        self._http = httpx2.AsyncClient(timeout=httpx2.Timeout(timeout_s), headers=self._headers)
        self.connected = False
        self._last_event_id: str | None = None  # the SSE id last seen: a reconnect asks for what came after

    def set_url(self, url: str) -> None:
        """Where the gateway is: its base URL (`http://HOST:PORT`) or its `/control` URL."""
        url = url.rstrip("/")
        self.url = url[: -len("/control")] if url.endswith("/control") else url

    async def close(self) -> None:
        await self._http.aclose()

    async def _get(self, path: str) -> Any:
        import httpx2

        if self.url is None:
            raise ControlError("unavailable", "no gateway yet")
        try:
            r = await self._http.get(f"{self.url}/control/{path}")
        except httpx2.TransportError as exc:
            raise ControlError("unavailable", f"the gateway at {self.url} cannot be reached: {exc}") from None
        return _answer(r)

    async def _post(self, name: str, **args: Any) -> Any:
        import httpx2

        if self.url is None:
            raise ControlError("unavailable", "no gateway yet")
        try:
            r = await self._http.post(f"{self.url}/control/{name}", json=args)
        except httpx2.TransportError as exc:
            raise ControlError("unavailable", f"the gateway at {self.url} cannot be reached: {exc}") from None
        return _answer(r)

    async def snapshot(self) -> Snapshot:
        return Snapshot.model_validate(await self._get("snapshot"))

    def subscribe(self, maxsize: int = 10_000) -> EventStream:
        return _RemoteStream(self, maxsize)

    async def _follow(self, stream: _RemoteStream) -> None:
        """Read the event stream into `stream`; reconnect with backoff, telling the front end each time."""
        import httpx2

        backoff = 0.2
        said_down = False
        while True:
            try:
                headers = {"last-event-id": self._last_event_id} if self._last_event_id else {}
                async with self._http.stream("GET", f"{self.url}/control/events", headers=headers,
                                             timeout=httpx2.Timeout(30, read=PING_S * 3)) as r:
                    if r.status_code != 200:
                        body = (await r.aread()).decode("utf-8", "replace")
                        raise ControlError("unauthorized" if r.status_code == 401 else "unavailable",
                                           _error_message(r.status_code, body))
                    self.connected, said_down, backoff = True, False, 0.2
                    stream._offer(ControlLink(state="connected"))
                    async for sse in httpx2.EventSource(r):
                        if sse.event != "events" or not sse.data:
                            continue
                        try:
                            batch = json.loads(sse.data)
                        except ValueError:
                            continue
                        for item in batch if isinstance(batch, list) else ():
                            event = event_from_json(item) if isinstance(item, dict) else None
                            if event is not None:
                                stream._offer(event)
                        if sse.id:  # after its events are offered: a reconnect resumes after them
                            self._last_event_id = sse.id
                detail = "the gateway closed the event stream"
            except asyncio.CancelledError:
                raise
            except ControlError as exc:
                detail = exc.message
            except Exception as exc:  # noqa: BLE001 - any failure of the link: say so, try again
                detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if self.connected or not said_down:
                self.connected, said_down = False, True
                stream._offer(ControlLink(state="disconnected", detail=detail))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def approve(self, approval_id: str, *, by: str, for_session: bool = False, digest: str | None = None,
                      arguments: dict[str, Any] | None = None) -> CommandResult:
        return CommandResult.model_validate(await self._post("approve", approval_id=approval_id, by=by,
                                                             for_session=for_session, digest=digest,
                                                             arguments=arguments))

    async def deny(self, approval_id: str, *, by: str, reason: str | None = None,
                   digest: str | None = None) -> CommandResult:
        return CommandResult.model_validate(await self._post("deny", approval_id=approval_id, by=by, reason=reason,
                                                             digest=digest))

    async def policy_text(self, server: str) -> PolicyText:
        return PolicyText.model_validate(await self._post("policy_text", server=server))

    async def save_policy(self, server: str, text: str, *, by: str) -> CommandResult:
        return CommandResult.model_validate(await self._post("save_policy", server=server, text=text, by=by))

    async def tune(self, server: str, *, by: str, tool: str | None = None, counter: str | None = None,
                   max_delta: int | None = None, action: str | None = None,
                   hidden: bool | None = None) -> CommandResult:
        return CommandResult.model_validate(await self._post("tune", server=server, by=by, tool=tool,
                                                             counter=counter, max_delta=max_delta, action=action,
                                                             hidden=hidden))

    async def undo(self, *, by: str) -> CommandResult:
        return CommandResult.model_validate(await self._post("undo", by=by))

    async def accept_tool_change(self, server: str, tool: str, *, by: str) -> CommandResult:
        return CommandResult.model_validate(await self._post("accept_tool_change", server=server, tool=tool, by=by))

    async def revoke(self, server: str, session_id: str, tool: str, *, by: str) -> CommandResult:
        return CommandResult.model_validate(await self._post("revoke", server=server, session_id=session_id,
                                                             tool=tool, by=by))

    async def end_session(self, server: str, session_id: str, *, by: str) -> CommandResult:
        return CommandResult.model_validate(await self._post("end_session", server=server, session_id=session_id,
                                                             by=by))


def _error_message(status: int, body: str) -> str:
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        return str(json.loads(body)["error"]["message"])
    return f"HTTP {status}: {body[:200]}"


def _answer(r: Any) -> Any:
    if r.status_code == 200:
        return r.json()
    try:
        err = r.json()["error"]
        raise ControlError(str(err.get("code", "bad_request")), str(err.get("message", "")))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ControlError("unavailable", f"the gateway answered HTTP {r.status_code}: {r.text[:200]}") from None
