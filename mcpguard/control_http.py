"""The control interface over HTTP: `mcpguard serve` offers it, `mcpguard console --attach` uses it.

Server side, `control_app(control, token)` is a Starlette app the gateway
serves at `/control` on its own listen address (127.0.0.1 by default):

| request | answer |
| --- | --- |
| `GET /control/snapshot` | the `Snapshot` as JSON |
| `GET /control/events` | `text/event-stream`: every gateway event as one SSE `message` whose data is `{"type": "<EventClass>", ...fields}`; a comment line every 15 s keeps it alive |
| `POST /control/<command>` | a JSON body of the command's arguments (`approve`, `deny`, `policy_text`, `save_policy`, `tune`, `undo`, `accept_tool_change`, `revoke`, `end_session`); the answer is a `CommandResult` (200), or `{"error": {"code", "message"}}` with 400 (bad request), 401 (no or wrong token), 404 (not found), 409 (answered, changed, invalid) |

Every request needs `Authorization: Bearer <control token>`, from loopback
too: an agent runs on the same machine, and must not be able to approve its
own calls. The token is compared in constant time and never logged; the
gateway writes it, with the URL, to its control file (mode 0600) so a
console started by the same user finds both.

Client side, `RemoteControl(url, token)` is a `Control` over that HTTP
(httpx2, the SDK's HTTP client). Its event stream reconnects by itself
(backoff up to 5 s) and tells the front end with `ControlLink` events
(`disconnected` with why, `connected`), so a console keeps what it saw while
the gateway is away and takes a new snapshot when it is back.
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
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from mcpguard import events as ev
from mcpguard.control import CommandResult, Control, ControlError, EventStream, PolicyText, Snapshot

log = logging.getLogger(__name__)

PING_S = 15.0
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


def control_app(control: Control, token: str, *, on_attach: Callable[[int], None] | None = None) -> Any:
    """The Starlette app of the control endpoint (see the module docstring) for `control`, guarded by `token`.

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
        stream = control.subscribe()

        async def messages() -> AsyncIterator[dict[str, str]]:
            if on_attach is not None:
                on_attach(1)
            try:
                while True:
                    event = await stream.get()
                    yield {"event": "message", "data": json.dumps(event_to_json(event), default=str)}
            finally:
                stream.close()
                if on_attach is not None:
                    on_attach(-1)

        return EventSourceResponse(messages(), ping=PING_S)

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
                async with self._http.stream("GET", f"{self.url}/control/events",
                                             timeout=httpx2.Timeout(30, read=PING_S * 3)) as r:
                    if r.status_code != 200:
                        body = (await r.aread()).decode("utf-8", "replace")
                        raise ControlError("unauthorized" if r.status_code == 401 else "unavailable",
                                           _error_message(r.status_code, body))
                    self.connected, said_down, backoff = True, False, 0.2
                    stream._offer(ControlLink(state="connected"))
                    async for sse in httpx2.EventSource(r):
                        if sse.event != "message" or not sse.data:
                            continue
                        try:
                            event = event_from_json(json.loads(sse.data))
                        except ValueError:
                            continue
                        if event is not None:
                            stream._offer(event)
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
