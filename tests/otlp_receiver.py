"""An in-process OTLP/HTTP receiver for tests: what the gateway's real exporters send, decoded.

`OtlpReceiver()` listens on 127.0.0.1 (a free port) in a daemon thread
and keeps every `POST /v1/traces` and `/v1/metrics` body, decoded with
`opentelemetry-proto` (the collector's own message types). Use it as a
context manager; it stops when the `with` ends.

- `spans()`: every span received, as `Span` (name, kind, ids in hex,
  attributes as plain Python values, status code, resource attributes).
- `metric_points(name)`: the data points of one metric, in arrival order,
  as `(attributes, value)`; `value` is a sum's or gauge's number or a
  histogram's `(count, sum)`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


@dataclass
class Span:
    name: str
    kind: str  # SERVER, CLIENT, INTERNAL, ...
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    status: str  # UNSET, OK, ERROR
    resource: dict[str, Any]


class OtlpReceiver:
    """A collector stand-in on 127.0.0.1; `url` is its base (`http://127.0.0.1:PORT`)."""

    def __init__(self) -> None:
        self.traces: list[ExportTraceServiceRequest] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.requests = 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with lock:
                    outer.requests += 1
                    if self.path == "/v1/traces":
                        outer.traces.append(ExportTraceServiceRequest.FromString(body))
                    elif self.path == "/v1/metrics":
                        outer.metrics.append(ExportMetricsServiceRequest.FromString(body))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def spans(self) -> list[Span]:
        out: list[Span] = []
        for req in list(self.traces):
            for rs in req.resource_spans:
                resource = _attrs(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        out.append(Span(name=s.name, kind=PbSpan.SpanKind.Name(s.kind).removeprefix("SPAN_KIND_"),
                                        trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
                                        parent_span_id=s.parent_span_id.hex(), attributes=_attrs(s.attributes),
                                        status=s.status.StatusCode.Name(s.status.code).removeprefix("STATUS_CODE_"),
                                        resource=resource))
        return out

    def metric_points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        out: list[tuple[dict[str, Any], Any]] = []
        for req in list(self.metrics):
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        if m.name != name:
                            continue
                        kind = m.WhichOneof("data")
                        for p in getattr(m, kind).data_points:
                            if kind == "histogram":
                                out.append((_attrs(p.attributes), (p.count, p.sum)))
                            else:
                                out.append((_attrs(p.attributes), p.as_int if p.HasField("as_int") else p.as_double))
        return out
