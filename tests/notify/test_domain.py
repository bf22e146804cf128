"""The notify rules, by property: signatures, backoff, criteria, endpoints, headers and the
notification Bundle (valid FHIR R4B)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from fhir.resources.R4B.bundle import Bundle
from hypothesis import assume, given
from hypothesis import strategies as st
from standardwebhooks import Webhook, WebhookVerificationError

from services.notify.domain import (
    NOTIFIED_STATUSES,
    Focus,
    endpoint_allowed,
    masked,
    next_attempt_delay,
    notification_bundle,
    parse_criteria,
    parse_header,
    partner_secret,
    should_abandon,
    should_disable,
    sign,
    signature_headers,
)
from shared.fhir_terms import SUBSETTED_TAG

secrets_ = st.text(min_size=1, max_size=64)
bodies = st.text(max_size=2048)
fhir_ids = st.from_regex(r"[A-Za-z0-9\-.]{1,64}", fullmatch=True)
message_ids = st.uuids().map(str)


# --- signatures (Standard Webhooks, checked with the library a partner uses) ---------------------


def _verified(secret: str, headers: dict[str, str], body: str) -> bool:
    try:
        Webhook(partner_secret(secret)).verify(body.encode(), headers, json_parse=False)
    except WebhookVerificationError:
        return False
    return True


@given(secrets_, message_ids, bodies)
def test_a_signature_verifies_and_is_the_documented_hmac(secret: str, message_id: str, body: str) -> None:
    ts = int(time.time())
    headers = signature_headers(secret, message_id, ts, body)
    mac = hmac.new(secret.encode(), f"{message_id}.{ts}.{body}".encode(), hashlib.sha256).digest()
    assert headers == {
        "webhook-id": message_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
    }
    assert partner_secret(secret) == "whsec_" + base64.b64encode(secret.encode()).decode()
    assert _verified(secret, headers, body)


@given(secrets_, message_ids, bodies, bodies)
def test_any_change_to_the_body_fails(secret: str, message_id: str, body: str, other: str) -> None:
    assume(body != other)
    assert not _verified(secret, signature_headers(secret, message_id, int(time.time()), body), other)


@given(secrets_, message_ids, message_ids, bodies)
def test_any_change_to_the_id_fails(secret: str, message_id: str, other: str, body: str) -> None:
    assume(message_id != other)
    headers = signature_headers(secret, message_id, int(time.time()), body) | {"webhook-id": other}
    assert not _verified(secret, headers, body)


@given(secrets_, secrets_, message_ids, bodies)
def test_any_other_secret_fails(secret: str, other: str, message_id: str, body: str) -> None:
    assume(secret != other)
    assert not _verified(other, signature_headers(secret, message_id, int(time.time()), body), body)


@given(secrets_, message_ids, bodies, st.integers(min_value=301, max_value=10**7), st.booleans())
def test_stale_or_future_timestamps_fail(
    secret: str, message_id: str, body: str, skew: int, future: bool
) -> None:
    now = int(time.time())
    ts = now + skew if future else now - skew
    assert not _verified(secret, signature_headers(secret, message_id, ts, body), body)


def test_a_secret_stored_before_the_switch_keeps_its_key() -> None:
    raw = "pre-standard-webhooks-secret-text"  # what an older subscription's partner holds
    at = datetime.fromtimestamp(1_700_000_000, UTC)
    expected = hmac.new(raw.encode(), b"d-1.1700000000.{}", hashlib.sha256).digest()
    assert sign(raw, "d-1", 1_700_000_000, "{}") == "v1," + base64.b64encode(expected).decode()
    assert Webhook(partner_secret(raw)).sign("d-1", at, "{}") == sign(raw, "d-1", 1_700_000_000, "{}")


# --- retries -------------------------------------------------------------------------------------


@given(
    st.integers(min_value=1, max_value=10_000),
    st.integers(min_value=1, max_value=10_000),
    st.floats(min_value=0.001, max_value=60),
    st.floats(min_value=0.001, max_value=100_000),
    st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_backoff_is_monotone_capped_and_floored(
    a: int, b: int, base: float, cap: float, jitter: float
) -> None:
    low, high = sorted((a, b))
    first, later = (next_attempt_delay(n, base, cap, jitter) for n in (low, high))
    assert first <= later <= cap
    ceiling = min(cap, base * 2.0 ** min(high - 1, 64))
    assert ceiling / 2 <= later <= ceiling


def test_backoff_doubles() -> None:
    assert [next_attempt_delay(n, 2, 300, 0) for n in range(1, 6)] == [1, 2, 4, 8, 16]
    assert next_attempt_delay(100, 2, 300, 0.999) < 300


def test_abandon_and_disable_thresholds() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert not should_abandon(start, start + timedelta(seconds=59), 60)
    assert should_abandon(start, start + timedelta(seconds=60), 60)
    assert not should_disable(9, 10) and should_disable(10, 10)


# --- criteria ------------------------------------------------------------------------------------

resource_types = st.sampled_from(sorted(NOTIFIED_STATUSES))


@st.composite
def valid_criteria(draw: st.DrawFn) -> tuple[str, str, tuple[str, ...] | None]:
    resource_type = draw(resource_types)
    if draw(st.booleans()):
        return resource_type, resource_type, None
    codes = tuple(draw(st.lists(st.sampled_from(NOTIFIED_STATUSES[resource_type]), min_size=1, unique=True)))
    return f"{resource_type}?status={','.join(codes)}", resource_type, codes


@given(valid_criteria())
def test_every_supported_form_parses(case: tuple[str, str, tuple[str, ...] | None]) -> None:
    text, resource_type, codes = case
    assert parse_criteria(text) == (resource_type, codes)


_FORMS = {
    t: re.compile(rf"{t}(\?status=({'|'.join(codes)})(,({'|'.join(codes)}))*)?")
    for t, codes in NOTIFIED_STATUSES.items()
}


def _supported(text: str) -> bool:
    resource_type = text.partition("?")[0]
    form = _FORMS.get(resource_type)
    if form is None or not form.fullmatch(text):
        return False
    codes = text.partition("=")[2].split(",") if "?" in text else []
    return len(codes) == len(set(codes))


@given(
    st.one_of(
        st.text(max_size=60),
        st.builds(
            lambda t, sep, name, codes: f"{t}{sep}{name}{','.join(codes)}",
            st.sampled_from([*NOTIFIED_STATUSES, "Patient", "servicerequest", "ServiceRequest ", ""]),
            st.sampled_from(["?", "", "?x", " ?"]),
            st.sampled_from(["status=", "status:not=", "_id=", "status", "status=="]),
            st.lists(
                st.sampled_from(
                    ["active", "completed", "revoked", "finished", "draft", "", " active", "ACTIVE"]
                ),
                max_size=4,
            ),
        ),
    )
)
def test_the_parser_accepts_exactly_the_supported_forms(text: str) -> None:
    try:
        resource_type, codes = parse_criteria(text)
    except ValueError as exc:
        assert not _supported(text)
        assert "ServiceRequest, EpisodeOfCare or CarePlan" in str(exc)
    else:
        assert _supported(text)
        assert resource_type == text.partition("?")[0]
        assert codes == (tuple(text.partition("=")[2].split(",")) if "?" in text else None)


# --- the notification ----------------------------------------------------------------------------


@st.composite
def foci(draw: st.DrawFn) -> Focus:
    resource_type = draw(resource_types)
    return Focus(
        resource_type,
        draw(fhir_ids),
        draw(st.integers(min_value=0, max_value=2**31 - 1)),
        draw(st.sampled_from(NOTIFIED_STATUSES[resource_type])),
        draw(fhir_ids),
    )


@given(foci(), st.uuids(), st.uuids(), st.integers(min_value=1, max_value=2**31 - 1))
def test_the_notification_is_a_valid_r4_history_bundle_of_ids_and_status(
    focus: Focus, delivery: object, subscription: object, number: int
) -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    bundle = notification_bundle(
        delivery_id=str(delivery),
        subscription_id=str(subscription),
        events_since_start=number,
        event_number=number,
        event_time=now - timedelta(seconds=5),
        focus=focus,
        base="https://api.example.nhs.uk/fhir",
        now=now,
    )
    Bundle.model_validate(bundle)
    assert bundle["type"] == "history"
    status, changed = (entry["resource"] for entry in bundle["entry"])
    assert status["resourceType"] == "Parameters" and status["id"] == str(delivery)
    parameters = {p["name"]: p for p in status["parameter"]}
    assert set(parameters) == {
        "subscription",
        "status",
        "type",
        "events-since-subscription-start",
        "notification-event",
    }
    assert parameters["type"]["valueCode"] == "event-notification"
    parts = {p["name"]: p for p in parameters["notification-event"]["part"]}
    assert parts["event-number"]["valueString"] == str(number)
    assert parts["focus"]["valueReference"]["reference"] == focus.key
    assert bundle["entry"][0]["request"] == {"method": "GET", "url": f"Subscription/{subscription}/$status"}
    assert bundle["entry"][1]["fullUrl"] == f"https://api.example.nhs.uk/fhir/{focus.key}"
    assert bundle["entry"][1]["request"] == {"method": "PUT", "url": focus.key}
    # Ids and status only: nothing else about the person or the care.
    allowed = {"resourceType", "id", "meta", "status", "intent", "subject", "patient"}
    assert set(changed) <= allowed
    assert changed["meta"] == {"versionId": str(focus.version), "tag": [SUBSETTED_TAG]}  # a part: no profile
    assert changed["status"] == focus.status
    person = changed.get("subject") or changed.get("patient")
    assert person == {"reference": f"Patient/{focus.person_id}"}


# --- endpoints and headers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "allow_private", "refused"),
    [
        ("https://ehr.example.nhs.uk/fhir/notify", False, None),
        ("https://ehr.example.nhs.uk:8443/hook?x=1", False, None),
        ("https://203.0.113.9/hook", False, "loopback"),  # TEST-NET-3 is reserved
        ("https://8.8.8.8/hook", False, None),
        ("http://ehr.example.nhs.uk/hook", False, "https"),
        ("http://127.0.0.1:9000/hook", True, None),
        ("https://127.0.0.1/hook", False, "loopback"),
        ("https://10.1.2.3/hook", False, "loopback"),
        ("https://169.254.169.254/latest", False, "loopback"),
        ("https://[::1]/hook", False, "loopback"),
        ("https://[::ffff:127.0.0.1]/hook", False, "loopback"),
        ("https://[fe80::1]/hook", False, "loopback"),
        ("https://localhost/hook", False, "loopback"),
        ("https://api.localhost/hook", False, "loopback"),
        ("https://2130706433/hook", False, "not a valid name"),
        ("https://0x7f.1/hook", False, "not a valid name"),
        ("https://user:pw@ehr.example.nhs.uk/hook", False, "user information"),
        ("https://ehr.example.nhs.uk/hook#frag", False, "fragment"),
        ("https://ehr.example.nhs.uk/ho ok", False, "spaces"),
        ("https://ehr.example.nhs.uk/hook\r\nX: y", False, "control"),
        ("ftp://ehr.example.nhs.uk/hook", True, "https"),
        ("https:///hook", False, "host"),
        ("https://ehr.example.nhs.uk:99999/", False, "not a valid URL"),
        ("not a url", False, "spaces"),
        ("", False, "absolute"),
    ],
)
def test_endpoints(url: str, allow_private: bool, refused: str | None) -> None:
    reason = endpoint_allowed(url, allow_private)
    if refused is None:
        assert reason is None
    else:
        assert reason is not None and refused in reason


def test_headers() -> None:
    assert parse_header("Authorization: Bearer abc.def") == ("Authorization", "Bearer abc.def")
    assert masked(["Authorization: Bearer abc", "X-Api-Key:k"]) == ["Authorization: ***", "X-Api-Key: ***"]
    for bad, why in [
        ("Authorization: a\r\nX-Evil: 1", "line breaks"),
        ("Authorization: a\nb", "line breaks"),
        ("NoColon", "Name: value"),
        ("Bad Name: x", "Name: value"),
        ("Host: evil", "set by the server"),
        ("X-CMH-Event-Number: 1", "set by the server"),
        ("Webhook-Signature: v1,0", "set by the server"),
        ("Content-Type: text/plain", "set by the server"),
        ("X-Key: caf\u00e9", "visible ASCII"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_header(bad)
