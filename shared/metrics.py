"""Prometheus metrics of the suite (the reference client library; one registry per process)."""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

HTTP_REQUESTS = Counter(
    "cmh_http_requests_total", "HTTP requests handled", ["service", "method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "cmh_http_request_duration_seconds",
    "HTTP request latency",
    ["service", "method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
OUTBOX_PUBLISHED = Counter("cmh_outbox_published_total", "Events published by the outbox relay", ["service"])
OUTBOX_PUBLISH_FAILURES = Counter(
    "cmh_outbox_publish_failures_total", "Event publishes not acknowledged by JetStream", ["service"]
)
# 0 while a process has lost NATS: /ready stays 200 then (the outbox buffers), so this is what
# an alert watches (deploy/README.md, Probes).
BROKER_CONNECTED = Gauge("cmh_broker_connected", "1 while connected to NATS, 0 while not", ["service"])
OUTBOX_BACKLOG = Gauge("cmh_outbox_backlog", "Events committed but not yet published", ["service"])
# The pipeline's health (issue 21, operations 4): what deploy/prometheus/alerts.yaml watches and
# `cmh status` prints. Labels name processes and durables only, never a person or a resource.
OUTBOX_OLDEST_UNPUBLISHED = Gauge(
    "cmh_outbox_oldest_unpublished_seconds",
    "Age of the oldest event committed but not yet published (0 when none), set by each relay pass",
    ["service"],
)
CONSUMER_PENDING = Gauge(
    "cmh_consumer_pending",
    "Events a durable consumer has still to apply (JetStream num_pending + num_ack_pending)",
    ["service", "durable"],
)
CONSUMER_PROGRESS = Gauge(
    "cmh_consumer_last_progress_timestamp_seconds",
    "When a durable consumer last applied an event or was found caught up (Unix time)",
    ["service", "durable"],
)
DEAD_LETTERS = Gauge(
    "cmh_dead_letters",
    "Dead-lettered events of a durable consumer held on the stream (cmh.deadletter.<durable>)",
    ["service", "durable"],
)
# Labelled by service like the rest, so only the process that sets them exports them: a gauge
# without labels is exported (as 0) by every process, and a clock-scan timestamp of 0 would make
# CmhClockScanStale true in each of them.
WEBHOOK_BACKLOG = Gauge("cmh_webhook_backlog", "Webhook deliveries pending (notify)", ["service"])
WEBHOOK_OLDEST_PENDING = Gauge(
    "cmh_webhook_oldest_pending_seconds",
    "Age of the oldest pending webhook delivery (0 when none)",
    ["service"],
)
CLOCK_SCAN_LAST_SUCCESS = Gauge(
    "cmh_clock_scan_last_success_timestamp_seconds",
    "When careplan last completed a scan of the plan clocks, or started scanning (Unix time)",
    ["service"],
)
CLOCK_SCAN_INTERVAL = Gauge(
    "cmh_clock_scan_interval_seconds",
    "How often careplan scans the plan clocks (CMH_CAREPLAN_CLOCK_SCAN_SECONDS)",
    ["service"],
)
EVENTS_CONSUMED = Counter(
    "cmh_events_consumed_total",
    "Events handled by durable consumers, by outcome (applied, duplicate, retried, dead_lettered)",
    ["service", "consumer", "outcome"],
)
UPSTREAM_ERRORS = Counter(
    "cmh_gateway_upstream_errors_total", "Gateway requests that failed upstream", ["upstream", "kind"]
)
UPSTREAM_RETRIES = Counter(
    "cmh_gateway_upstream_retries_total",
    "Requests the gateway sent again after a service closed the connection before answering",
    ["upstream"],
)


def render_metrics() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def metrics_port(api_port: int, offset: int) -> int | None:
    """Where a process serves `/metrics`: its API port plus the offset (0: not served)."""
    return api_port + offset if offset else None


def serve_metrics(host: str, port: int) -> Any:
    """`/metrics` on a port of its own (issue 18: never on the public API port), from a thread, so
    a scrape is answered even while the event loop is busy. Returns the server (for shutdown)."""
    server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    return server
