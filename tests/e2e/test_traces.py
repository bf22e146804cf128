"""Traces (issue 21 §5): one referral's trace runs gateway → triage → its database → its outbox →
NATS → careplan's consumer → careplan's database, every span a child of the one before it, and no
span name or attribute of any span carries the person's details."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from shared.tracing import record_spans_to
from tests.e2e.conftest import Suite, read_models_filled
from tests.support import eventually
from tests.triage.support import nhs_number

PERSON = {
    "nhs_number": nhs_number("943476592"),
    "given_name": "Ottoline",
    "family_name": "Brackenridge",
    "birth_date": "1981-02-23",
    "postcode": "BB11 2DL",
}
PHONE = "07700 900472"
NOTE = "Not sleeping since the fire at the mill in Burnley"
INTAKE_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
DECISION_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    record_spans_to(exporter)
    try:
        yield exporter
    finally:
        record_spans_to(None)


@pytest.fixture
def suite_overrides(spans: InMemorySpanExporter) -> dict[str, Any]:
    return {}  # recording starts before the suite's databases are made (they get database spans)


def in_trace(exporter: InMemorySpanExporter, trace_hex: str) -> list[ReadableSpan]:
    return [
        span
        for span in exporter.get_finished_spans()
        if span.context is not None and format(span.context.trace_id, "032x") == trace_hex
    ]


def process_of(span: ReadableSpan) -> str:
    return str(span.resource.attributes["service.name"])


def parent_hex(span: ReadableSpan) -> str | None:
    return format(span.parent.span_id, "016x") if span.parent is not None else None


def orphans(trace: list[ReadableSpan]) -> list[str]:
    """Spans whose parent is not a span of the trace (except the first hop's: the caller's)."""
    ids = {format(span.context.span_id, "016x") for span in trace if span.context is not None}
    return [span.name for span in trace if parent_hex(span) not in ids and parent_hex(span) != CALLER_SPAN]


async def assert_one_tree(exporter: InMemorySpanExporter, trace_hex: str) -> list[ReadableSpan]:
    """The trace is one tree, once every span has ended (a consumer's span ends after the
    statements inside it, so for a moment its children are recorded without it)."""
    await eventually(lambda: not orphans(in_trace(exporter, trace_hex)), timeout=10)
    return in_trace(exporter, trace_hex)


def hops(trace: list[ReadableSpan]) -> set[tuple[str, SpanKind, str]]:
    return {(process_of(span), span.kind, span.name) for span in trace}


async def test_a_referrals_trace_runs_from_the_gateway_through_the_bus_and_holds_no_person_data(
    suite: Suite, spans: InMemorySpanExporter
) -> None:
    gp = await suite.bearer("gp-ehr")
    spa = await suite.bearer("crisis-app")
    clinician = await suite.bearer("lscft-clinician")
    await eventually(lambda: read_models_filled(suite.triage_app), timeout=30)
    body = {
        "person": {**PERSON, "contact": {"phone": PHONE}},
        "source": "gp",
        "needs": ["psychosis"],
        "needs_text": NOTE,
        "consent_to_share": True,
    }
    async with httpx.AsyncClient(base_url=suite.url, timeout=15) as http:
        created = await http.post(
            "/triage/referrals",
            json=body,
            headers={
                **gp,
                "Idempotency-Key": "traces-1",
                "traceparent": f"00-{INTAKE_TRACE}-{CALLER_SPAN}-01",
            },
        )
        assert created.status_code == 201, created.text
        referral = created.json()
        decided = await http.post(
            f"/triage/referrals/{referral['id']}/decisions",
            json={"action": "accept", "reason": "traces test"},
            headers={**spa, "traceparent": f"00-{DECISION_TRACE}-{CALLER_SPAN}-01"},
        )
        assert decided.status_code == 200, decided.text

        async def episode() -> bool:
            found = await http.get(
                "/careplan/episodes", params={"referral_id": referral["id"]}, headers=clinician
            )
            return found.status_code == 200 and bool(found.json()["items"])

        await eventually(episode, timeout=20)
        # Reads that carry the person's details in the path or query.
        await http.get(f"/fhir/Patient/{referral['person_id']}", headers=spa)
        await http.get("/fhir/Patient", params={"identifier": PERSON["nhs_number"]}, headers=spa)

    async def consumed() -> bool:
        return any(span.kind is SpanKind.CONSUMER for span in in_trace(spans, DECISION_TRACE))

    await eventually(consumed, timeout=20)

    intake = await assert_one_tree(spans, INTAKE_TRACE)
    assert {
        ("cmh-gateway", SpanKind.SERVER, "POST /triage/{path:path}"),  # the gateway's route
        ("cmh-gateway", SpanKind.CLIENT, "POST triage"),
        ("cmh-triage", SpanKind.SERVER, "POST /triage/referrals"),
    } <= hops(intake)
    assert any(process_of(s) == "cmh-triage" and s.name.startswith("INSERT") for s in intake), hops(intake)
    assert any(process_of(s) == "cmh-triage" and s.kind is SpanKind.PRODUCER for s in intake)

    decision = await assert_one_tree(spans, DECISION_TRACE)
    published = [s for s in decision if s.kind is SpanKind.PRODUCER and process_of(s) == "cmh-triage"]
    consumers = [s for s in decision if s.kind is SpanKind.CONSUMER and process_of(s) == "cmh-careplan"]
    assert published and consumers, hops(decision)
    # careplan's work on the event is inside its consumer span: the episode's insert is its child.
    consumer_ids = {format(s.context.span_id, "016x") for s in consumers if s.context is not None}
    assert any(
        process_of(s) == "cmh-careplan" and s.name.startswith("INSERT") and parent_hex(s) in consumer_ids
        for s in decision
    ), hops(decision)
    # The consumer continues the span that made the event (triage's request), not a phantom.
    triage_server = {
        format(s.context.span_id, "016x")
        for s in decision
        if s.kind is SpanKind.SERVER and process_of(s) == "cmh-triage" and s.context is not None
    }
    assert any(parent_hex(s) in triage_server for s in consumers)

    # No housekeeping trace of one polling statement: every database span belongs to work.
    assert all(s.parent is not None for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT)

    # Nothing about the person in any span of any trace recorded meanwhile.
    details = [*PERSON.values(), PHONE, PHONE.replace(" ", ""), NOTE, "Burnley"]
    texts = [
        (span.name, f"{key}={value}")
        for span in spans.get_finished_spans()
        for key, value in [("name", span.name), *(span.attributes or {}).items()]
    ]
    assert len(texts) > 50
    leaks = [
        (name, text[:200]) for name, text in texts for detail in details if detail.lower() in text.lower()
    ]
    assert not leaks, leaks
