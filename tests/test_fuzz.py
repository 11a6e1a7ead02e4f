"""Fuzzing with hypothesis: the gateway's HTTP endpoint and the policy loader, fed malformed input.

The gateway is a real `mcpguard serve` process (its own process, so a crash
is seen as one) in front of tests/upstreams/everything_server.py over stdio,
on 127.0.0.1, under a policy that denies `delete_thing`. Each example is one
HTTP POST of either era: bytes that are no JSON, cut JSON, batches and
scalars, envelopes with odd `jsonrpc`/`id`/`method`/`params` (huge, float,
nested ids; unknown and real method names; request methods sent as
notifications), wrong or missing headers (`Content-Type`, `Accept`,
`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`, `Mcp-Session-Id`), and
well-formed `tools/call`s of every tool with random arguments. Each answer
must come within `ANSWER_BOUND_S`, be no 5xx (503 only at the session cap),
and hold nothing but JSON-RPC responses (or nothing, for 202); a `tools/call`
of `delete_thing` is never answered with a success. Afterwards the gateway
still serves, its output has no traceback, and the upstream's own count says
`delete_thing` was never called.

The policy loader gets random TOML and JSON texts, random documents, random
bytes as files, and mutations of `sample_policies/mlflow.toml`: each loads to
a `Policy` or raises a `PolicyError` whose every issue is `file:line:col`
inside the text, never another exception.

Both print their figures (inputs tried, crashes) whether they pass or fail.
Bounded: a few hundred examples each, the whole file well under two minutes.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp.shared.inbound import encode_header_value
from upstreams.harness import EVERYTHING

from mcpguard.policy import PolicyError, load_policy, parse_policy

pytestmark = pytest.mark.fuzz

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = (ROOT / "sample_policies" / "mlflow.toml").read_text(encoding="utf-8")
ANSWER_BOUND_S = 15.0
MODERN = "2026-07-28"
LEGACY = "2025-06-18"

#: tools that wait by design (for the agent's answer, a clock, a loop the arguments size) are hidden, so
#: every answer is bounded by the gateway alone; `delete_thing` is the denied tool the fuzzer goes after
FUZZ_POLICY = """
version = "1"
default = "allow"
hide = ["slow", "crash", "sample", "elicit", "roots", "progress", "mutate"]

[tools.delete_thing]
action = "deny"
reason = "Never."
"""

TOOLS = ["echo", "count_items", "delete_thing", "secret_tool", "progress", "slow", "log", "sample", "elicit",
         "roots", "fail_rpc", "crash", "mutate", "touch", "status", "meta"]
METHODS = ["initialize", "ping", "tools/list", "tools/call", "resources/list", "resources/read",
           "resources/templates/list", "resources/subscribe", "resources/unsubscribe", "prompts/list",
           "prompts/get", "completion/complete", "logging/setLevel", "server/discover",
           "notifications/initialized", "notifications/cancelled", "notifications/progress",
           "notifications/roots/list_changed", "sampling/createMessage", "roots/list"]


# -- the gateway under test -------------------------------------------------------------


@dataclass
class Served:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    session_id: str
    figures: Counter[str] = field(default_factory=Counter)


def _envelope(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "fuzz", "version": "0"}, **(extra or {})}


def _headers(era: str, method: str | None = None, name: str | None = None, session: str | None = None) -> dict[str, str]:
    h = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    if era == "modern":
        h["mcp-protocol-version"] = MODERN
        if method:
            h["mcp-method"] = method
        if name:
            h["mcp-name"] = name
    else:
        h["mcp-protocol-version"] = LEGACY
        if session:
            h["mcp-session-id"] = session
    return h


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "ev.toml").write_text(FUZZ_POLICY, encoding="utf-8")
    (tmp / "mcpguard.toml").write_text(f"""
[gateway]
port = 0
audit_log = "audit.jsonl"
url_file = ""
call_timeout = "5s"

[servers.ev]
command = {json.dumps(sys.executable)}
args = [{json.dumps(str(EVERYTHING))}]
policy = "ev.toml"
upstream_sessions = "shared"
stderr_log = "ev.stderr.log"
""", encoding="utf-8")
    log = tmp / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mcpguard", "serve", "--config", str(tmp / "mcpguard.toml")],
                                stdout=out, stderr=subprocess.STDOUT, cwd=tmp)
    try:
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            m = re.search(r"^\s+ev: (\S+)", log.read_text(errors="replace"), re.M)
            url = m.group(1) if m else None
            time.sleep(0.05)
        assert url is not None, log.read_text(errors="replace")
        with httpx2.Client(timeout=ANSWER_BOUND_S) as http:
            r = http.post(url, headers=_headers("legacy"), json={
                "jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "0"}}})
            session_id = r.headers["mcp-session-id"]
            http.post(url, headers=_headers("legacy", session=session_id),
                      json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        yield Served(url=url, proc=proc, log=log, session_id=session_id)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# -- what is sent -------------------------------------------------------------------------

_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
_json = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                          max_size=3), max_leaves=8)
_ids = st.one_of(st.integers(-(2**80), 2**80), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
                 st.text(min_size=2000, max_size=2000, alphabet="x9é"), st.booleans(), st.none(),
                 st.lists(_scalar, max_size=2), st.dictionaries(st.text(max_size=4), _scalar, max_size=2),
                 st.sampled_from([0, -1, 2**63, 2**64 + 1, 1e308, -0.0, "", "1", " 1"]))
_methods = st.one_of(st.sampled_from(METHODS), st.text(max_size=30), st.sampled_from(["tools/", "tools/call ", "TOOLS/CALL",
                                                                                       "rpc.discover", "$/x"]))
_MISSING = object()


def _header_safe(value: str | None) -> bool:
    return bool(value) and value.isascii() and value.isprintable() and value == value.strip()


@st.composite
def _request(draw: st.DrawFn) -> dict[str, Any]:
    """One POST: `era`, `body` (bytes), `headers`, and what it was (`kind`, `call`: the tool of a
    well-formed tools/call request, if it was one)."""
    era = draw(st.sampled_from(["modern", "legacy"]))
    kind = draw(st.sampled_from(["garbage", "cut", "scalar", "envelope", "envelope", "call", "call", "call", "call",
                                 "notified_call", "notified_call", "big"]))
    call = None
    if kind == "garbage":
        body = draw(st.binary(max_size=200) | st.text(max_size=100).map(str.encode))
        doc: Any = _MISSING
    elif kind == "scalar":
        doc = draw(st.one_of(_scalar, st.lists(_json, max_size=3), st.just([])))
    elif kind in ("envelope", "cut"):
        doc = {}
        for key, strat in (("jsonrpc", st.sampled_from(["2.0", "2.0", "1.0", 2, None, ""])), ("id", _ids),
                           ("method", _methods), ("params", st.one_of(_json, st.just(_MISSING)))):
            if draw(st.integers(0, 5)):  # most often present
                value = draw(strat)
                if value is not _MISSING:
                    doc[key] = value
        if isinstance(doc.get("params"), dict) and era == "modern" and draw(st.booleans()):
            doc["params"]["_meta"] = _envelope()
        if draw(st.booleans()) and kind == "envelope":
            doc = [doc, *draw(st.lists(st.just(doc), max_size=2))]  # a batch, which neither era allows
    else:  # call, notified_call, big
        tool = draw(st.sampled_from(TOOLS) | st.text(max_size=20))
        params: dict[str, Any] = {"name": tool, "arguments": draw(st.dictionaries(st.text(max_size=8), _json,
                                                                                   max_size=4))}
        if kind == "big":
            params["arguments"]["text"] = "B" * draw(st.integers(100_000, 600_000))
        if era == "modern":
            params["_meta"] = _envelope()
        doc = {"jsonrpc": "2.0", "method": "tools/call", "params": params}
        if kind != "notified_call":
            doc["id"] = draw(_ids.filter(lambda i: isinstance(i, (int, str)) and not isinstance(i, bool)))
            call = tool
    if doc is not _MISSING:
        body = json.dumps(doc, ensure_ascii=draw(st.booleans())).encode()
        if kind == "cut":
            body = body[: draw(st.integers(0, max(len(body) - 1, 0)))]
    method = doc.get("method") if isinstance(doc, dict) and isinstance(doc.get("method"), str) else None
    params = doc.get("params") if isinstance(doc, dict) else None
    name = params.get("name") if isinstance(params, dict) and isinstance(params.get("name"), str) else None
    # a header carries printable ASCII (RFC 9110 field values); what a body holds beyond that is the SDK
    # client's to encode, and the HTTP parser's to refuse before any MCP is read
    headers = _headers(era, method if _header_safe(method) else None,
                       encode_header_value(name) if isinstance(name, str) else None, "SESSION")
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # wrong headers, sometimes
        header = draw(st.sampled_from(["content-type", "accept", "mcp-protocol-version", "mcp-method", "mcp-name",
                                       "mcp-session-id"]))
        value = draw(st.sampled_from(["", "text/plain", "application/json", "text/event-stream", "*/*", MODERN,
                                      LEGACY, "1999-01-01", "tools/list", "tools/call", "echo", "=?base64?###?=",
                                      "deadbeef", _MISSING]))
        if value is _MISSING:
            headers.pop(header, None)
        else:
            headers[header] = value
    return {"era": era, "kind": kind, "body": body, "headers": headers, "call": call}


# -- what must come back ---------------------------------------------------------------------


def _messages(r: httpx2.Response) -> list[Any]:
    ctype = r.headers.get("content-type", "")
    if ctype.startswith("text/event-stream"):
        # SSE lines end at CR, LF or CRLF only (str.splitlines would also split at U+0085 in a JSON string)
        lines = re.split(r"\r\n|\r|\n", r.text)
        return [json.loads(line[5:]) for line in lines if line.startswith("data:") and line[5:].strip()]
    return [json.loads(r.content)] if r.content else []


def _is_jsonrpc_answer(m: Any) -> bool:
    if not isinstance(m, dict) or m.get("jsonrpc") != "2.0" or "id" not in m:
        return False
    if "error" in m:
        e = m["error"]
        return "result" not in m and isinstance(e, dict) and isinstance(e.get("code"), int) \
            and isinstance(e.get("message"), str)
    return isinstance(m.get("result"), dict)


def _http_layer_refusal(headers: dict[str, str]) -> bool:
    accept = headers.get("accept", "")
    return headers.get("content-type") != "application/json" or not (
        "application/json" in accept and "text/event-stream" in accept)


def _check(r: httpx2.Response, sent: dict[str, Any]) -> None:
    where = f"HTTP {r.status_code} for {sent['era']} {sent['kind']} {sent['body'][:300]!r} {sent['headers']}"
    assert r.status_code < 500 or r.status_code == 503, f"server error: {where}: {r.text[:500]}"
    if r.status_code == 202:
        assert not r.content.strip(), where
        return
    if r.status_code in (400, 406) and _http_layer_refusal(sent["headers"]):
        # The SDK refuses a POST it cannot take as MCP before any JSON-RPC is read (Streamable HTTP: the
        # client MUST send Content-Type application/json and accept both answer types): an HTTP status with
        # a plain-text or empty body, by design. Counted, not failed.
        assert not r.content or not r.headers.get("content-type", "").startswith("application/json") \
            or _is_jsonrpc_answer(r.json()), where
        return
    try:
        messages = _messages(r)
    except ValueError:
        raise AssertionError(f"not JSON: {where}: {r.text[:300]!r}") from None
    assert messages, f"no answer: {where}"
    for m in messages:
        # progress or log notifications may ride an SSE answer before the response
        if isinstance(m, dict) and "method" in m and "id" not in m:
            continue
        assert _is_jsonrpc_answer(m), f"not a JSON-RPC response: {where}: {m!r:.300}"
        if sent["call"] == "delete_thing" and "result" in m:
            assert m["result"].get("isError") is True, f"denied tool answered with success: {where}: {m}"


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
@given(sent=_request())
def _fuzz_gateway(served: Served, http: httpx2.Client, sent: dict[str, Any]) -> None:
    headers = {k: (served.session_id if v == "SESSION" else v) for k, v in sent["headers"].items()}
    served.figures["inputs"] += 1
    served.figures[sent["era"]] += 1
    t0 = time.monotonic()
    try:
        r = http.post(served.url, content=sent["body"], headers=headers)
    except httpx2.TimeoutException:
        served.figures["hangs"] += 1
        raise AssertionError(f"no answer within {ANSWER_BOUND_S:g} s: {sent['body'][:300]!r} {headers}") from None
    served.figures["slowest_ms"] = max(served.figures["slowest_ms"], int((time.monotonic() - t0) * 1000))
    served.figures[f"http_{r.status_code}"] += 1
    if r.status_code in (400, 406) and _http_layer_refusal(headers):
        served.figures["http_layer_refusals"] += 1
    try:
        _check(r, sent)
    except AssertionError:
        served.figures["unclean"] += 1
        raise
    assert served.proc.poll() is None, "the gateway exited"


def _upstream_calls(http: httpx2.Client, url: str) -> dict[str, int]:
    r = http.post(url, headers=_headers("modern", "tools/call", "status"), json={
        "jsonrpc": "2.0", "id": "status", "method": "tools/call",
        "params": {"name": "status", "arguments": {}, "_meta": _envelope()}})
    text = _messages(r)[-1]["result"]["content"][0]["text"]
    return eval(text, {})["by_tool"]  # the everything server's repr of its own counters  # noqa: S307


def test_fuzz_gateway_http(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    t0 = time.monotonic()
    with httpx2.Client(timeout=httpx2.Timeout(ANSWER_BOUND_S, connect=5)) as http:
        try:
            _fuzz_gateway(served, http)
        finally:
            f = served.figures
            with capsys.disabled():
                print(f"\nfuzz gateway: {f['inputs']} inputs tried ({f['modern']} 2026-07-28, {f['legacy']} handshake), "
                      f"crashes: {int(served.proc.poll() is not None)}, hangs: {f['hangs']}, unclean answers: "
                      f"{f['unclean']}, refused at the HTTP layer (Content-Type/Accept): {f['http_layer_refusals']}, "
                      f"slowest answer {f['slowest_ms']} ms, statuses "
                      f"{dict(sorted((k, v) for k, v in f.items() if k.startswith('http_')))}, "
                      f"{time.monotonic() - t0:.1f} s")
        # still serving: a clean call in each era
        by_tool = _upstream_calls(http, served.url)
        r = http.post(served.url, headers=_headers("legacy", session=served.session_id), json={
            "jsonrpc": "2.0", "id": 99, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "ok"}}})
        assert _messages(r)[-1]["result"]["content"][0]["text"] == "ok"
    assert "delete_thing" not in by_tool, f"a denied call reached the upstream: {by_tool}"
    log = served.log.read_text(errors="replace")
    assert "Traceback" not in log and "Exception" not in log, log[-3000:]
    with capsys.disabled():
        known = {t: n for t, n in sorted(by_tool.items()) if t in TOOLS}
        print(f"fuzz gateway: tools/call that reached the upstream: {known} and {sum(by_tool.values()) - sum(known.values())} "
              f"of unknown names; of the denied tool: 0; tracebacks in the gateway's output: 0")


# -- the policy loader ------------------------------------------------------------------------

_ISSUE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): \S")


@st.composite
def _policy_text(draw: st.DrawFn) -> tuple[str, str]:
    """(fmt, text): random texts, random documents as TOML or JSON, and mutations of the sample policy."""
    kind = draw(st.sampled_from(["text", "doc", "mutation", "mutation", "mutation"]))
    if kind == "text":
        return draw(st.sampled_from(["toml", "json"])), draw(st.text(max_size=300))
    if kind == "doc":
        keys = st.sampled_from(["version", "default", "hide", "tools", "all_tools", "limits", "action", "counter",
                                "window", "max", "scope", "deny_if", "conditions", "path", "op", "value",
                                "approval_timeout", "on_tool_change", "reason", "require"]) | st.text(max_size=6)
        doc = draw(st.recursive(_scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner,
                                                                                                      max_size=4),
                                max_leaves=20))
        if not isinstance(doc, dict):
            return "json", json.dumps(doc)
        if draw(st.booleans()):
            import tomlkit

            try:
                return "toml", tomlkit.dumps(doc)
            except Exception:  # tomlkit cannot write every document (None values): send it as JSON then
                pass
        return "json", json.dumps(doc)
    text = SAMPLE
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["delete", "insert", "swap_lines", "replace_value", "duplicate_line"]))
        lines = text.splitlines(keepends=True) or [""]
        if op == "delete" and text:
            i = draw(st.integers(0, len(text) - 1))
            text = text[:i] + text[i + draw(st.integers(1, 40)):]
        elif op == "insert":
            i = draw(st.integers(0, len(text)))
            text = text[:i] + draw(st.sampled_from(["[", "]", "=", '"', "\n", "[[tools.x.limits]]\n", "max = -1\n",
                                                    "window = \"fortnight\"\n", "\x00", "é", "{", "#", "'''"])
                                   | st.text(max_size=5)) + text[i:]
        elif op == "swap_lines" and len(lines) > 1:
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            text = "".join(lines)
        elif op == "duplicate_line":
            i = draw(st.integers(0, len(lines) - 1))
            text = "".join(lines[: i + 1] + [lines[i]] + lines[i + 1:])
        else:
            value = draw(st.sampled_from(['"allow"', '"maybe"', "0", "-5", "1e999", "true", "[]", "{}", '""',
                                          '"1x"', "2147483648000", '"deny"']))
            text = re.sub(r"= [^\n]+", "= " + value, text, count=1) if draw(st.booleans()) else \
                re.sub(r"(max|window|action|scope|default|version) = [^\n]+", r"\1 = " + value.replace("\\", ""),
                       text, count=draw(st.integers(1, 3)))
    return "toml", text


def _check_policy_error(exc: PolicyError, text: str, path: str) -> None:
    assert exc.issues, "a PolicyError with no issue"
    n_lines = text.count("\n") + 1
    for issue in exc.issues:
        m = _ISSUE.match(str(issue))
        assert m and m["file"] == path, f"not file:line:col: {issue}"
        assert 1 <= issue.line <= n_lines + 1 and issue.col >= 1, f"outside the text ({n_lines} lines): {issue}"


def test_fuzz_policy_loader(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    figures: Counter[str] = Counter()

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
    @given(case=_policy_text())
    def parse(case: tuple[str, str]) -> None:
        fmt, text = case
        figures["inputs"] += 1
        try:
            parse_policy(text, fmt, f"fuzz.{fmt}")
            figures["loaded"] += 1
        except PolicyError as exc:
            figures["rejected"] += 1
            _check_policy_error(exc, text, f"fuzz.{fmt}")
        except Exception as exc:
            figures["crashes"] += 1
            raise AssertionError(f"{type(exc).__name__} instead of a PolicyError for {fmt} {text!r:.500}") from exc

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
    @given(data=st.binary(max_size=300) | _policy_text().map(lambda c: c[1].encode("utf-8", "surrogatepass")),
           suffix=st.sampled_from([".toml", ".json"]))
    def load(data: bytes, suffix: str) -> None:
        figures["inputs"] += 1
        figures["files"] += 1
        p = tmp_path / f"fuzz{suffix}"
        p.write_bytes(data)
        try:
            load_policy(p)
            figures["loaded"] += 1
        except PolicyError as exc:
            figures["rejected"] += 1
            _check_policy_error(exc, data.decode("utf-8", "replace"), str(p))
        except Exception as exc:
            figures["crashes"] += 1
            raise AssertionError(f"{type(exc).__name__} instead of a PolicyError for {data!r:.500}") from exc

    t0 = time.monotonic()
    try:
        parse()
        load()
    finally:
        with capsys.disabled():
            print(f"\nfuzz policy loader: {figures['inputs']} inputs tried ({figures['files']} as files), "
                  f"loaded {figures['loaded']}, PolicyError {figures['rejected']}, crashes: {figures['crashes']}, "
                  f"{time.monotonic() - t0:.1f} s")
    assert figures["rejected"] > figures["inputs"] // 4  # the mutations did reach the validator's errors
