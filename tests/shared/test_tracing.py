"""Traces (shared/tracing.py): off by default (nothing recorded, yet every hop a real span id and
the logs a trace id), exported over OTLP/HTTP when an endpoint is set, a served process's spans
reaching a real OTLP receiver, and housekeeping statements never a trace of their own."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from shared.logs import JsonFormatter
from shared.nats_server import EmbeddedNatsServer, free_port
from shared.settings import Settings
from shared.tracing import (
    configure_tracing,
    current_traceparent,
    flush_spans,
    parse_traceparent,
    record_spans_to,
    recording,
    span,
    trace_id_of,
    traces_endpoint,
)

CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class OtlpReceiver:
    """A real OTLP/HTTP endpoint (protobuf `ExportTraceServiceRequest` on /v1/traces)."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.content_types: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == "/v1/traces":
                    message = ExportTraceServiceRequest()
                    message.ParseFromString(body)
                    receiver.requests.append(message)
                    receiver.content_types.append(self.headers["Content-Type"])
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self) -> list[tuple[str, str, str]]:
        """(service.name, span name, trace id hex) of every span received."""
        found = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                service = next(
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                )
                for scope_spans in resource_spans.scope_spans:
                    found.extend((service, s.name, s.trace_id.hex()) for s in scope_spans.spans)
        return found


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    running = OtlpReceiver()
    yield running
    running.server.shutdown()


@pytest.fixture(autouse=True)
def back_to_off() -> Iterator[None]:
    yield
    record_spans_to(None)


def test_off_by_default_each_hop_still_a_span_of_the_callers_trace_and_logged() -> None:
    assert configure_tracing(Settings()) is False and not recording()
    record = logging.makeLogRecord({"msg": "request", "levelname": "INFO"})
    with span("triage", "GET /x", kind=SpanKind.SERVER, parent=CALLER) as current:
        assert not current.is_recording()
        inner = current_traceparent()
        line = json.loads(JsonFormatter("triage").format(record))
    parsed = parse_traceparent(inner)
    assert parsed is not None and parsed[0] == trace_id_of(CALLER) and parsed[1] != CALLER.split("-")[2]
    assert line["trace_id"] == trace_id_of(CALLER)
    assert current_traceparent() is None  # outside any span


def test_the_endpoint_from_our_setting_or_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    assert traces_endpoint(Settings(traces_endpoint="http://collector:4318/v1/traces")) == (
        "http://collector:4318/v1/traces"
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    assert traces_endpoint(Settings()) == "http://collector:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://other:4318/v1/traces")
    assert traces_endpoint(Settings()) == "http://other:4318/v1/traces"


def test_spans_are_exported_over_otlp_http_when_configured(receiver: OtlpReceiver) -> None:
    assert configure_tracing(Settings(traces_endpoint=f"{receiver.url}/v1/traces")) is True
    with span("careplan", "process cmh.triage.referral.accepted", kind=SpanKind.CONSUMER, parent=CALLER):
        pass
    flush_spans()
    assert receiver.content_types == ["application/x-protobuf"]
    assert receiver.spans() == [("cmh-careplan", "process cmh.triage.referral.accepted", trace_id_of(CALLER))]


def test_which_spans_are_recorded() -> None:
    exporter = InMemorySpanExporter()
    record_spans_to(exporter)
    with span("triage", "SELECT", kind=SpanKind.CLIENT):
        pass  # a polling statement outside any work: no trace of its own
    with span("triage", "POST /x", kind=SpanKind.SERVER, parent=CALLER.replace("-01", "-00")):
        pass  # the caller did not sample its trace: neither do we
    with span("triage", "POST /y", kind=SpanKind.SERVER), span("triage", "INSERT", kind=SpanKind.CLIENT):
        pass
    with pytest.raises(ValueError), span("careplan", "process e", kind=SpanKind.CONSUMER):
        raise ValueError("Alex Example, 9434765919")
    names = {s.name: s for s in exporter.get_finished_spans()}
    assert set(names) == {"POST /y", "INSERT", "process e"}
    failed = names["process e"]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes is not None and failed.attributes["error.type"] == "builtins.ValueError"
    assert not failed.events and "Alex" not in str(failed.to_json())  # the type only, never the text


def test_a_served_process_exports_its_spans_to_the_configured_endpoint(
    tmp_path: Path, nats_server: EmbeddedNatsServer, receiver: OtlpReceiver
) -> None:
    env = {
        **os.environ,
        "CMH_VAR_DIR": str(tmp_path / "var"),
        "CMH_NATS_URL": nats_server.url,
        "CMH_LOG_LEVEL": "WARNING",
        "CMH_SHUTDOWN_DRAIN_SECONDS": "0",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
    }
    subprocess.run([sys.executable, "-m", "cmh.cli", "migrate", "triage"], env=env, check=True, timeout=60)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cmh.cli", "serve", "triage", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90  # a loaded machine starts a process slowly
        while True:
            try:
                if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the service never became ready"
            time.sleep(0.1)
        refused = httpx.get(f"{base}/triage/referrals", headers={"traceparent": CALLER}, timeout=5)
        assert refused.status_code == 401
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    received = receiver.spans()
    assert ("cmh-triage", "GET /triage/referrals", trace_id_of(CALLER)) in received, received
    assert not any(name.startswith(("GET /health", "GET /ready")) for _, name, _ in received)  # probes
