"""Request id, and traces: OpenTelemetry spans from the gateway through each service, its
database and outbox, over NATS (the W3C `traceparent` carried in the CloudEvent) into consumers.

One home for tracing. Every process always has an SDK tracer, so each hop gets a real span id and
logs carry the trace id; nothing is recorded or exported unless an OTLP endpoint is configured
(`CMH_TRACES_ENDPOINT`, or the standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
`OTEL_EXPORTER_OTLP_ENDPOINT`): off by default, the tracer samples nothing, which costs only the
ids. Span names and attributes are route templates, event types, process and durable names and
status codes, never a URL, a query, a statement parameter, a payload or an exception's text, so no
person data can reach a span (tests/e2e/test_traces.py checks every attribute of a referral's trace).
"""

from __future__ import annotations

import atexit
import re
import secrets
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

REQUEST_ID_HEADER = "X-Request-ID"
TRACEPARENT_HEADER = "traceparent"

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
# A caller's request id is echoed into logs and headers, so only a safe token is accepted.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

request_id_var: ContextVar[str | None] = ContextVar("cmh_request_id", default=None)


def new_request_id() -> str:
    return str(uuid.uuid4())


def valid_request_id(value: str | None) -> str | None:
    return value if value and _REQUEST_ID.match(value) else None


CORRELATION_ID_HEADER = "X-Correlation-ID"
_CORRELATION_ID = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]{0,126}[\x21-\x7e])?$")


def valid_correlation_id(value: str | None) -> str | None:
    """A caller's `X-Correlation-ID` (NHS API convention: echoed on the answer) when it is printable
    ASCII of at most 128 characters; anything else is ignored."""
    return value if value and _CORRELATION_ID.match(value) else None


def new_traceparent(trace_id: str | None = None) -> str:
    """A fresh span id in the given trace (or in a new trace), for an event made outside any span."""
    trace_hex = trace_id or secrets.token_hex(16)
    return f"00-{trace_hex}-{secrets.token_hex(8)}-01"


def parse_traceparent(value: str | None) -> tuple[str, str, str] | None:
    if not value:
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if not match or match.group(1) == "0" * 32 or match.group(2) == "0" * 16:
        return None
    return match.group(1), match.group(2), match.group(3)


def trace_id_of(traceparent: str | None) -> str | None:
    parsed = parse_traceparent(traceparent)
    return parsed[0] if parsed else None


# --- the tracer ---------------------------------------------------------------------------------

_PROPAGATOR = TraceContextTextMapPropagator()


class WorkNotHousekeeping(Sampler):
    """Every span of work (a request, an event consumed or published, and what runs inside them,
    following the caller's sampled flag), but no client span that starts a trace of its own: the
    relays', consumers' and scans' polling statements would otherwise each be a trace of one span."""

    def __init__(self) -> None:
        self._work = ParentBased(ALWAYS_ON)

    def should_sample(
        self,
        parent_context: Any,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if kind is SpanKind.CLIENT and not parent.is_valid:
            return SamplingResult(Decision.DROP)
        return self._work.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return "WorkNotHousekeeping"


class _Tracing:
    """Which processor receives finished spans (None: nothing is recorded) and a tracer provider
    per process name, so each span names the process that made it (`service.name`) even when
    tests run several in one interpreter."""

    def __init__(self) -> None:
        self.processor: SpanProcessor | None = None
        self.providers: dict[str, TracerProvider] = {}
        self.tracers: dict[str, trace.Tracer] = {}
        self.unsampled = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)

    def tracer(self, process: str) -> trace.Tracer:
        found = self.tracers.get(process)
        if found is None:
            if self.processor is None:
                found = self.unsampled.get_tracer("cmh")
            else:
                provider = TracerProvider(
                    sampler=WorkNotHousekeeping(),
                    resource=Resource.create({"service.name": f"cmh-{process}", "service.namespace": "cmh"}),
                    shutdown_on_exit=False,
                )
                provider.add_span_processor(self.processor)
                self.providers[process] = provider
                found = provider.get_tracer("cmh")
            self.tracers[process] = found
        return found

    def record_to(self, processor: SpanProcessor | None) -> None:
        self.processor = processor
        self.providers.clear()
        self.tracers.clear()


_tracing = _Tracing()


def tracer(process: str) -> trace.Tracer:
    return _tracing.tracer(process)


def recording() -> bool:
    """Whether spans are recorded (an exporter is configured)."""
    return _tracing.processor is not None


def traces_endpoint(settings: Any) -> str | None:
    """The OTLP/HTTP traces endpoint from the settings: the traces URL itself, or the standard
    base endpoint with `/v1/traces` appended (as the OpenTelemetry specification says)."""
    if settings.traces_endpoint:
        return str(settings.traces_endpoint)
    if settings.otlp_endpoint:
        return str(settings.otlp_endpoint).rstrip("/") + "/v1/traces"
    return None


def configure_tracing(settings: Any) -> bool:
    """At process start (`cmh serve`): export spans over OTLP/HTTP in batches when an endpoint is
    configured; otherwise record nothing. Returns whether spans are exported."""
    endpoint = traces_endpoint(settings)
    if endpoint is None:
        _tracing.record_to(None)
        return False
    # Imported only when used: the exporter pulls in protobuf and requests.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint))
    _tracing.record_to(processor)
    atexit.register(processor.shutdown)  # what is still batched goes out on a clean stop
    return True


def record_spans_to(exporter: SpanExporter | None) -> None:
    """Tests: every finished span to `exporter` at once (None: back to recording nothing)."""
    _tracing.record_to(SimpleSpanProcessor(exporter) if exporter is not None else None)


def flush_spans(timeout_millis: int = 5000) -> None:
    if _tracing.processor is not None:
        _tracing.processor.force_flush(timeout_millis)


def context_from(traceparent: str | None) -> otel_context.Context | None:
    """The remote parent a W3C `traceparent` names (an incoming header, an event's attribute);
    None when absent or malformed: the span starts a new trace."""
    if parse_traceparent(traceparent) is None:
        return None
    return _PROPAGATOR.extract({TRACEPARENT_HEADER: traceparent.strip().lower()})  # type: ignore[union-attr]


def current_traceparent() -> str | None:
    """The current span as a W3C `traceparent`, or None outside any span."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get(TRACEPARENT_HEADER)


def current_trace_id() -> str | None:
    span_context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(span_context.trace_id) if span_context.is_valid else None


@contextmanager
def span(
    process: str,
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: str | None = None,
    attributes: Mapping[str, str | int | bool] | None = None,
) -> Iterator[Span]:
    """A span of `process` around a block, current inside it: a child of the current span, or of
    the remote `parent` traceparent when given. An exception marks it an error by its type only
    (exception text can carry person data)."""
    with tracer(process).start_as_current_span(
        name,
        context=context_from(parent) if parent is not None else None,
        kind=kind,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            if current.is_recording():
                current.set_attribute("error.type", f"{type(exc).__module__}.{type(exc).__qualname__}")
                current.set_status(Status(StatusCode.ERROR))
            raise


def set_status_code(current: Span, status: int) -> None:
    """HTTP status on a server or client span; 5xx marks it an error (4xx is the caller's)."""
    if current.is_recording():
        current.set_attribute("http.response.status_code", status)
        if status >= 500:
            current.set_status(Status(StatusCode.ERROR))


def instrument_engine(engine: AsyncEngine, process: str) -> None:
    """Database spans for an engine, when spans are recorded: SQLAlchemy's maintained
    instrumentation, which records the statement with its placeholders, never its parameters.
    Its `EngineTracer` is attached per engine (the instrumentor itself is one per interpreter)."""
    if not recording():
        return
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import NoOpMeterProvider

    # Spans only: connection-pool usage is already in the suite's Prometheus metrics.
    unused = NoOpMeterProvider().get_meter("cmh").create_up_down_counter("db.client.connections.usage")
    EngineTracer(tracer(process), engine.sync_engine, unused)  # type: ignore[no-untyped-call]
