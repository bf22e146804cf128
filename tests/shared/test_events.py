"""The CloudEvents envelope, subject naming and trace context (property tests)."""

from __future__ import annotations

import string
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.events import (
    ALL_DOMAIN_EVENTS,
    EVENT_SUBJECT,
    CloudEvent,
    dead_letter_subject,
    event_subject,
    make_event,
)
from shared.tracing import context_from, parse_traceparent, span, trace_id_of

token = st.text(alphabet=string.ascii_lowercase + string.digits + "_", min_size=0, max_size=20).map(
    lambda rest: "a" + rest
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@given(token, token, token)
def test_subjects_have_four_tokens_and_match_the_domain_wildcard(
    service: str, entity: str, verb: str
) -> None:
    if service == "deadletter":
        with pytest.raises(ValueError):
            event_subject(service, entity, verb)
        return
    subject = event_subject(service, entity, verb)
    assert subject == f"cmh.{service}.{entity}.{verb}"
    assert EVENT_SUBJECT.match(subject)
    assert len(subject.split(".")) == len(ALL_DOMAIN_EVENTS.split("."))


@pytest.mark.parametrize("bad", ["", "Triage", "tri.age", "tri age", "1triage", "triage>", "*"])
def test_invalid_subject_tokens_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        event_subject(bad, "referral", "routed")


def test_dead_letters_never_match_the_domain_wildcard() -> None:
    assert len(dead_letter_subject("careplan-triage").split(".")) == 3


@given(st.dictionaries(st.text(max_size=12), json_values, max_size=6), st.text(min_size=1, max_size=40))
def test_envelope_round_trips_through_json(data: dict[str, object], subject: str) -> None:
    # The envelope alone: any JSON object round-trips (make_event adds the subject's contract).
    event = CloudEvent(source="/cmh/triage", type="cmh.triage.referral.routed", subject=subject, data=data)
    again = CloudEvent.from_json(event.to_json())
    assert again == event
    assert again.specversion == "1.0"
    assert again.source == "/cmh/triage"
    assert again.type == "cmh.triage.referral.routed" == again.nats_subject
    assert again.datacontenttype == "application/json"
    assert again.time.tzinfo is not None


ROUTED = {"referral_id": "r-1", "person_id": "p-1"}


def test_event_continues_the_current_trace() -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with span("triage", "POST /triage/referrals", parent=parent) as current:
        event = make_event("triage", "referral", "routed", ROUTED)
    assert trace_id_of(event.traceparent) == "0af7651916cd43dd8448eb211c80319c"
    assert event.traceparent != parent  # the span that made it, a child of the caller's
    assert parse_traceparent(event.traceparent)[1] == format(current.get_span_context().span_id, "016x")  # type: ignore[index]


def test_event_outside_a_request_starts_a_trace() -> None:
    assert parse_traceparent(make_event("triage", "referral", "routed", ROUTED).traceparent) is not None


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "triage.referral.routed"},
        {"type": "cmh.triage.referral"},
        {"traceparent": "not-a-trace"},
        {"time": datetime(2026, 1, 1)},  # naive
        {"specversion": "0.3"},
        {"unexpected": 1},
    ],
)
def test_malformed_envelopes_are_rejected(fields: dict[str, object]) -> None:
    base: dict[str, object] = {"source": "/cmh/triage", "type": "cmh.triage.referral.routed"}
    with pytest.raises(ValidationError):
        CloudEvent(**{**base, **fields})


@given(st.text(max_size=60))
def test_any_incoming_traceparent_gives_a_valid_span_of_its_trace_or_a_new_one(parent: str) -> None:
    assert (context_from(parent) is None) == (parse_traceparent(parent) is None)
    with span("gateway", "GET /x", parent=parent):
        event = make_event("triage", "referral", "routed", ROUTED)
    assert parse_traceparent(event.traceparent) is not None
    parsed = parse_traceparent(parent)
    if parsed:
        assert trace_id_of(event.traceparent) == parsed[0]
