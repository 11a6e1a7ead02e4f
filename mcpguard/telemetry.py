"""OpenTelemetry for the gateway: a span per `tools/call` with mcpguard's decision on it, and call metrics.

Off by default. It is on when `mcpguard.toml` has `[telemetry] otlp_endpoint`,
or when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `..._METRICS_ENDPOINT`) is set;
`OTEL_SDK_DISABLED=true` turns it off whatever else says
(`mcpguard.config.TelemetryConfig`). Off, nothing here is imported or
runs: the gateway's `Endpoint`s drop the SDK's span middleware and no
listener is on the event bus.

On, the OpenTelemetry SDK exports traces and metrics with its OTLP/HTTP
(protobuf) exporters to `otlp_endpoint` (`/v1/traces`, `/v1/metrics`
appended, as for `OTEL_EXPORTER_OTLP_ENDPOINT`) or wherever the `OTEL_*`
variables say (headers, timeouts, compression, the metric export interval
`OTEL_METRIC_EXPORT_INTERVAL`, resource attributes); `service.name` is
`[telemetry] service_name`, else `OTEL_SERVICE_NAME`, else `mcpguard`.

Spans (OTel semantic conventions for MCP): the `mcp` SDK's own
`OpenTelemetryMiddleware` makes the server span of every request the agent
sends, `tools/call {tool}` (kind SERVER; `mcp.method.name`,
`gen_ai.tool.name`, `gen_ai.operation.name = execute_tool`,
`jsonrpc.request.id`, `mcp.protocol.version`; `error.type = tool_error` and
status ERROR for an `isError` result), parented on the W3C trace context the
agent put in `params._meta.traceparent` (MCP SEP-414). The SDK's dispatcher
makes the gateway's request upstream a CLIENT child span (`MCP send
tools/call {tool}`) and writes its `traceparent` into that request's
`_meta`, so the upstream continues the same trace. This module adds, from
the `EventBus` events of the call (published inside the call's task, so the
current span is that call's server span):

| attribute | value |
| --- | --- |
| `mcpguard.decision` | the call's outcome, a `mcpguard.codes.Code` (`allowed`, `approved`, `policy_denied`, `approval_timeout`, `upstream_error`, ...): `CallCompleted.outcome` |
| `mcpguard.code` | the policy's decision code (`allowed`, `approval_required`, `policy_denied`, `rate_limited`, `hidden`, ...): the last `CallDecided.code` |
| `mcpguard.rule` | the deciding rule's path (`tools.delete_run`, `tools.x.deny_if[0]`), when one decided |
| `mcpguard.approver` | who approved or refused it while it waited (`console`, `timeout`, `policy`, ...) |
| `mcpguard.approval_wait_ms` | milliseconds it waited for a person (from `ApprovalRequested` to `ApprovalResolved`) |
| `mcpguard.server`, `mcpguard.call_id`, `mcp.session.id` | the server's name, mcpguard's call id, the agent's session (handshake era) |

Metrics (instruments of meter `mcpguard`):
- `mcpguard.decisions` (counter, `{call}`): one per finished call and per
  malformed request, by `mcpguard.decision`, `mcpguard.server`,
  `gen_ai.tool.name`;
- `mcpguard.call.duration` (histogram, `ms`): from the call's arrival to
  its answer, approval wait included, by the same attributes;
- `mcpguard.approvals.pending` (up-down counter, `{approval}`): calls
  waiting for a person now, by `mcpguard.server`, `gen_ai.tool.name`.
A tool name is the agent's to choose; the SDK's cardinality limit per
metric (2000 attribute sets, then one overflow set) keeps random names from
growing the metrics without end.

The OTel API's global tracer provider can be set only once per process, and
the SDK's middleware and dispatcher trace through it; a gateway's telemetry
has to start and end with that gateway (its resource and exporters, and a
final flush at `stop()`). So the global provider mcpguard installs is a gate:
it hands out the running `Telemetry`'s SDK tracers, and no-op ones when none
runs (as if no provider were set: no spans, nothing injected). When the
process already has an SDK tracer provider of its own (run under
`opentelemetry-instrument`, say), spans go there and only the metrics are
mcpguard's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from mcpguard.events import (
    ApprovalRequested,
    ApprovalResolved,
    CallCompleted,
    CallDecided,
    CallReceived,
    Event,
    EventBus,
    MalformedRequest,
)

if TYPE_CHECKING:
    from mcpguard.config import TelemetryConfig

log = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "mcpguard"
INSTRUMENTATION = "mcpguard"
#: calls whose decision or approval wait is kept until their CallCompleted; a cancelled call never gets
#: one, so past this many the oldest are forgotten
MAX_OPEN_CALLS = 10_000


class TelemetryUnavailable(RuntimeError):
    """Telemetry is configured but the OpenTelemetry SDK or its OTLP/HTTP exporter is not installed."""


class Telemetry:
    """One gateway's OpenTelemetry: its tracer and meter providers and the bus listener that records calls.

    `Telemetry(config, bus)`: `config` is the `[telemetry]` section
    (`TelemetryConfig`, `enabled` true); `bus` the gateway's `EventBus`.
    `start()` sets up the SDK providers with OTLP/HTTP exporters and starts
    listening; `shutdown()` stops listening, exports what is left and shuts
    the providers down (it blocks for up to the exporters' timeout, so call
    it off the event loop). Raises `TelemetryUnavailable` from `start()`
    when the SDK is missing (`pip install 'mcpguard[otel]'`).
    """

    def __init__(self, config: TelemetryConfig, bus: EventBus) -> None:
        self.config = config
        self.bus = bus
        self.tracer_provider: Any = None
        self.meter_provider: Any = None
        self._detach: Callable[[], None] | None = None
        self._decided: dict[str, CallDecided] = {}
        self._waiting: dict[str, float] = {}
        self._waited_ms: dict[str, float] = {}

    # -- set-up ------------------------------------------------------------------
    def start(self) -> None:
        """Build the SDK providers and exporters, become the traced gateway, listen on the bus."""
        try:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as exc:
            raise TelemetryUnavailable(
                f"telemetry is configured ([telemetry] or OTEL_EXPORTER_OTLP_ENDPOINT) but the OpenTelemetry "
                f"SDK is not installed ({exc.name}): pip install 'mcpguard[otel]'") from None
        resource = self._resource()
        base = self.config.otlp_endpoint.rstrip("/") if self.config.otlp_endpoint else None
        if os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf") != "http/protobuf":
            log.warning("mcpguard exports OTLP over HTTP (protobuf) only; OTEL_EXPORTER_OTLP_PROTOCOL=%s is ignored",
                        os.environ["OTEL_EXPORTER_OTLP_PROTOCOL"])
        gate = _install_gate()
        if gate is not None:
            self.tracer_provider = TracerProvider(resource=resource)
            self.tracer_provider.add_span_processor(BatchSpanProcessor(
                OTLPSpanExporter(endpoint=f"{base}/v1/traces" if base else None)))
            gate.target = self.tracer_provider
        reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{base}/v1/metrics" if base else None))
        self.meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
        meter = self.meter_provider.get_meter(INSTRUMENTATION)
        self.decisions = meter.create_counter(
            "mcpguard.decisions", unit="{call}", description="Finished tools/call requests by outcome code")
        self.duration = meter.create_histogram(
            "mcpguard.call.duration", unit="ms",
            description="tools/call latency at the gateway, from arrival to answer, approval wait included")
        self.pending = meter.create_up_down_counter(
            "mcpguard.approvals.pending", unit="{approval}", description="Calls waiting for a person's approval")
        self._detach = self.bus.add_listener(self._on_event)

    def _resource(self) -> Any:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource

        resource = Resource.create({})
        name = self.config.service_name
        if name is None and str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            name = DEFAULT_SERVICE_NAME  # neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES named it
        return resource.merge(Resource({SERVICE_NAME: name})) if name else resource

    def shutdown(self) -> None:
        """Stop recording, export what is buffered, shut the providers down. Blocking; safe to call twice."""
        if self._detach is not None:
            self._detach()
            self._detach = None
        gate = _GATE
        if gate is not None and self.tracer_provider is not None and gate.target is self.tracer_provider:
            gate.target = None
        for provider in (self.tracer_provider, self.meter_provider):
            if provider is not None:
                try:
                    provider.shutdown()
                except Exception:  # an exporter's failure must not fail the gateway's stop
                    log.warning("telemetry: shutting down %s failed", type(provider).__name__, exc_info=True)
        self.tracer_provider = self.meter_provider = None

    # -- recording ---------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        if isinstance(event, CallReceived):
            span = _recording_span()
            if span is not None:
                span.set_attribute("mcpguard.server", event.server)
                span.set_attribute("mcpguard.call_id", event.call_id)
                if event.session_id:
                    span.set_attribute("mcp.session.id", event.session_id)
        elif isinstance(event, CallDecided):
            self._decided[event.call_id] = event
            _bound(self._decided)
        elif isinstance(event, ApprovalRequested):
            self._waiting[event.call_id] = event.ts
            _bound(self._waiting)
            self.pending.add(1, {"mcpguard.server": event.server, "gen_ai.tool.name": event.tool})
        elif isinstance(event, ApprovalResolved):
            asked = self._waiting.pop(event.call_id, None)
            if asked is not None:
                self.pending.add(-1, {"mcpguard.server": event.server, "gen_ai.tool.name": event.tool})
                if event.outcome != "cancelled":  # a cancelled call gets no CallCompleted
                    self._waited_ms[event.call_id] = max(0.0, (event.ts - asked) * 1000.0)
                    _bound(self._waited_ms)
        elif isinstance(event, CallCompleted):
            self._completed(event)
        elif isinstance(event, MalformedRequest):
            self.decisions.add(1, {"mcpguard.decision": event.code, "mcpguard.server": event.server,
                                   "gen_ai.tool.name": event.tool or ""})

    def _completed(self, event: CallCompleted) -> None:
        decided = self._decided.pop(event.call_id, None)
        waited_ms = self._waited_ms.pop(event.call_id, None)
        attrs = {"mcpguard.decision": str(event.outcome), "mcpguard.server": event.server,
                 "gen_ai.tool.name": event.tool}
        self.decisions.add(1, attrs)
        self.duration.record(event.duration_ms, attrs)
        span = _recording_span()
        if span is None:
            return
        span.set_attribute("mcpguard.decision", str(event.outcome))
        if decided is not None:
            span.set_attribute("mcpguard.code", str(decided.code))
            if decided.rule:
                span.set_attribute("mcpguard.rule", decided.rule)
        if event.approver:
            span.set_attribute("mcpguard.approver", event.approver)
        if waited_ms is not None:
            span.set_attribute("mcpguard.approval_wait_ms", waited_ms)


def _bound(open_calls: dict[str, Any]) -> None:
    while len(open_calls) > MAX_OPEN_CALLS:
        open_calls.pop(next(iter(open_calls)))  # the oldest: dicts keep insertion order


def _recording_span() -> Any:
    span = trace.get_current_span()
    return span if span.is_recording() else None


# -- the process's tracer provider --------------------------------------------------


class _Gate(trace.TracerProvider):
    """The global tracer provider mcpguard installs: the running gateway's SDK provider, or none (no-op)."""

    def __init__(self) -> None:
        self.target: Any = None

    def get_tracer(self, instrumenting_module_name: str, instrumenting_library_version: str | None = None,
                   schema_url: str | None = None, attributes: Any = None) -> trace.Tracer:
        return _GatedTracer(self, (instrumenting_module_name, instrumenting_library_version, schema_url, attributes))


class _GatedTracer(trace.Tracer):
    """A tracer that asks the gate for the running provider's tracer at each span (callers keep tracers)."""

    def __init__(self, gate: _Gate, key: tuple[Any, ...]) -> None:
        self._gate = gate
        self._key = key
        self._tracers: dict[int, trace.Tracer] = {}
        self._noop = trace.NoOpTracer()

    def _tracer(self) -> trace.Tracer:
        target = self._gate.target
        if target is None:
            return self._noop
        tracer = self._tracers.get(id(target))
        if tracer is None:
            self._tracers = {id(target): target.get_tracer(*self._key)}  # one provider runs at a time
            tracer = self._tracers[id(target)]
        return tracer

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return self._tracer().start_span(*args, **kwargs)

    @contextmanager
    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Iterator[trace.Span]:
        with self._tracer().start_as_current_span(*args, **kwargs) as span:
            yield span


_GATE: _Gate | None = None


def _install_gate() -> _Gate | None:
    """The process's gate, installed as the global tracer provider on first use; None when the process
    already has another tracer provider (its spans then go there)."""
    global _GATE
    if _GATE is not None:
        return _GATE
    current = trace.get_tracer_provider()
    if not isinstance(current, trace.ProxyTracerProvider):
        log.info("telemetry: the process has a tracer provider already (%s); spans go there",
                 type(current).__name__)
        return None
    gate = _Gate()
    trace.set_tracer_provider(gate)
    if trace.get_tracer_provider() is not gate:  # another thread won the race
        return None
    _GATE = gate
    return gate

