"""The rules of partner notifications, pure (no I/O) and property-tested: which criteria a
Subscription may have, how a notification is signed and checked, when a failed delivery is retried,
given up or pauses its subscription, what a notification carries, and which endpoints may receive one.

Signature scheme: Standard Webhooks (https://www.standardwebhooks.com/), signed with its reference
library `standardwebhooks`. Every POST carries

    webhook-id: <the delivery's id, the same on every retry>
    webhook-timestamp: <unix seconds>
    webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>." + raw body)>

The partner is handed the secret as `whsec_<base64 of the key>` and verifies with any Standard
Webhooks library (`Webhook(secret).verify(body, headers)`), which also refuses a timestamp more
than five minutes from its own clock (a replayed request). The stored secret is the key's text, as
before the switch: the key is its UTF-8 bytes, so a subscription made earlier (whose partner holds
the raw text) keeps its key, and its `whsec_` form is `whsec_` + base64(raw text) (`partner_secret`).
"""

from __future__ import annotations

import base64
import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from standardwebhooks import Webhook

from shared.fhir_terms import EPISODE_OF_CARE_STATUS, SERVICE_REQUEST_STATUSES, SUBSETTED_TAG, instant
from shared.outbound import address_allowed

# --- criteria ------------------------------------------------------------------------------------

# The FHIR status codes each resource's notifications can carry (so a filter naming anything else
# could never match and is refused).
NOTIFIED_STATUSES: dict[str, tuple[str, ...]] = {
    "ServiceRequest": SERVICE_REQUEST_STATUSES,
    "EpisodeOfCare": tuple(dict.fromkeys(EPISODE_OF_CARE_STATUS.values())),  # active finished
    "CarePlan": ("active", "completed"),  # agreed with the person; completed at discharge
}
MAX_CRITERIA_LENGTH = 200
SUPPORTED_CRITERIA = (
    "criteria must be ServiceRequest, EpisodeOfCare or CarePlan, optionally followed by "
    "?status=<code>[,<code>...] with codes ServiceRequest: active, completed, revoked; "
    "EpisodeOfCare: active, finished; CarePlan: active, completed"
)


def parse_criteria(text: str) -> tuple[str, tuple[str, ...] | None]:
    """`Type` or `Type?status=a[,b...]` -> (resource type, status codes or None for any status).

    Exactly these forms: no other search parameter, no whitespace, no empty or repeated code."""
    if not isinstance(text, str) or len(text) > MAX_CRITERIA_LENGTH:
        raise ValueError(SUPPORTED_CRITERIA)
    resource_type, question, query = text.partition("?")
    if resource_type not in NOTIFIED_STATUSES:
        raise ValueError(SUPPORTED_CRITERIA)
    if not question:
        return resource_type, None
    name, equals, value = query.partition("=")
    if name != "status" or not equals:
        raise ValueError(SUPPORTED_CRITERIA)
    codes = tuple(value.split(","))
    allowed = NOTIFIED_STATUSES[resource_type]
    if any(code not in allowed for code in codes) or len(set(codes)) != len(codes):
        raise ValueError(
            f"{resource_type} status codes are {', '.join(allowed)} (each at most once); {SUPPORTED_CRITERIA}"
        )
    return resource_type, codes


def matches(resource_type: str, statuses: tuple[str, ...] | list[str] | None, focus: Focus) -> bool:
    return focus.resource_type == resource_type and (statuses is None or focus.status in statuses)


# --- signatures ----------------------------------------------------------------------------------

SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret


def partner_secret(stored: str) -> str:
    """The stored secret (the key's text) as the partner is handed it: `whsec_<base64 of the key>`."""
    return SECRET_PREFIX + base64.b64encode(stored.encode()).decode("ascii")


def sign(stored: str, message_id: str, timestamp: int, body: str) -> str:
    """The `webhook-signature` value, `v1,<base64 HMAC-SHA256>`, over `"<id>.<timestamp>.<body>"`
    keyed by the stored secret's UTF-8 bytes (the Standard Webhooks library signs it)."""
    return Webhook(stored.encode()).sign(message_id, datetime.fromtimestamp(timestamp, UTC), body)


def signature_headers(stored: str, message_id: str, timestamp: int, body: str) -> dict[str, str]:
    """The three Standard Webhooks headers of one POST."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(stored, message_id, timestamp, body),
    }


# --- retries -------------------------------------------------------------------------------------


def next_attempt_delay(attempts: int, base: float, cap: float, jitter: float) -> float:
    """Seconds before the next try after `attempts` failed tries (counting from 1).

    The ceiling doubles from `base` (base, 2*base, 4*base...) up to `cap`; the delay is the ceiling's
    upper half chosen by `jitter` in [0, 1): ceiling * (1 + jitter) / 2. So unlike full jitter
    (anything from 0) a retry never comes sooner than half the ceiling, the delay never exceeds
    `cap`, and for a given jitter it never shrinks as failures mount."""
    exponent = min(max(attempts, 1) - 1, 64)
    ceiling = min(cap, base * 2.0**exponent)
    return ceiling * (1.0 + min(max(jitter, 0.0), 1.0)) / 2.0


def should_abandon(created_at: datetime, now: datetime, window: float) -> bool:
    """A notification still failing `window` seconds after it was queued is given up."""
    return (now - created_at).total_seconds() >= window


def should_disable(consecutive_failures: int, limit: int) -> bool:
    """This many failed attempts in a row (to any of its resources) put a subscription in error."""
    return consecutive_failures >= limit


def failure_summary(consecutive_failures: int, last_outcome: str) -> str:
    return f"{consecutive_failures} consecutive delivery failures; last: {last_outcome}"[:200]


# --- the notification ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Focus:
    """The changed resource as a notification names it: ids and status, nothing else."""

    resource_type: str
    resource_id: str
    version: int
    status: str
    person_id: str

    @property
    def key(self) -> str:
        return f"{self.resource_type}/{self.resource_id}"


def focus_resource(focus: Focus) -> dict[str, Any]:
    """The focus reduced to its ids and status (no person data beyond the Patient's id)."""
    person = {"reference": f"Patient/{focus.person_id}"}
    resource: dict[str, Any] = {
        "resourceType": focus.resource_type,
        "id": focus.resource_id,
        "meta": {"versionId": str(focus.version), "tag": [SUBSETTED_TAG]},
        "status": focus.status,
    }
    if focus.resource_type == "ServiceRequest":
        resource |= {"intent": "order", "subject": person}
    elif focus.resource_type == "EpisodeOfCare":
        resource["patient"] = person
    elif focus.resource_type == "CarePlan":
        resource |= {"intent": "plan", "subject": person}
    else:
        raise ValueError(f"no notifications about {focus.resource_type}")
    return resource


def notification_bundle(
    *,
    delivery_id: str,
    subscription_id: str,
    events_since_start: int,
    event_number: int,
    event_time: datetime,
    focus: Focus,
    base: str,
    now: datetime,
    subscription_status: str = "active",
) -> dict[str, Any]:
    """A FHIR R4 `history` Bundle in the Subscriptions R4 Backport's id-only shape (plus status):
    a `Parameters` subscription status (id = the delivery id, stable across retries) and the focus.

    `subscription_status` is `active`: a notification is only ever sent while its subscription is."""
    status = {
        "resourceType": "Parameters",
        "id": delivery_id,
        "parameter": [
            {"name": "subscription", "valueReference": {"reference": f"Subscription/{subscription_id}"}},
            {"name": "status", "valueCode": subscription_status},
            {"name": "type", "valueCode": "event-notification"},
            {"name": "events-since-subscription-start", "valueString": str(events_since_start)},
            {
                "name": "notification-event",
                "part": [
                    {"name": "event-number", "valueString": str(event_number)},
                    {"name": "timestamp", "valueInstant": instant(event_time)},
                    {"name": "focus", "valueReference": {"reference": focus.key}},
                ],
            },
        ],
    }
    return {
        "resourceType": "Bundle",
        "id": delivery_id,
        "type": "history",
        "timestamp": instant(now),
        "entry": [
            {
                "fullUrl": f"urn:uuid:{delivery_id}",
                "resource": status,
                "request": {"method": "GET", "url": f"Subscription/{subscription_id}/$status"},
                "response": {"status": "200"},
            },
            {
                "fullUrl": f"{base}/{focus.key}",
                "resource": focus_resource(focus),
                "request": {"method": "PUT", "url": focus.key},
                "response": {"status": "200"},
            },
        ],
    }


# --- endpoints -----------------------------------------------------------------------------------

MAX_ENDPOINT_LENGTH = 2048
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")
REFUSED_ADDRESS = "the endpoint's address is loopback, private, link-local or reserved"


def endpoint_allowed(url: str, allow_private: bool) -> str | None:
    """None if notifications may go to `url`, else why not (the reason names no input).

    https only (http too when `allow_private`, for development); no user information (credentials
    go in channel.header); a host written as an IP address must be globally routable unless
    `allow_private`. Names are checked again when resolved, at each delivery."""
    if not isinstance(url, str) or not url:
        return "the endpoint must be an absolute URL"
    if len(url) > MAX_ENDPOINT_LENGTH:
        return f"the endpoint is longer than {MAX_ENDPOINT_LENGTH} characters"
    if _CONTROL_OR_SPACE.search(url) or not url.isascii():
        return "the endpoint must not contain spaces, control or non-ASCII characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "the endpoint is not a valid URL"
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme.lower() not in schemes:
        return "the endpoint must be an https URL"
    if "@" in parts.netloc:
        return "the endpoint must not carry user information (send credentials in channel.header)"
    host = parts.hostname
    if not host:
        return "the endpoint must name a host"
    if parts.fragment:
        return "the endpoint must not have a fragment"
    if port == 0:
        return "the endpoint's port is not valid"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        return None if allow_private or address_allowed(address) else REFUSED_ADDRESS
    labels = host.rstrip(".").split(".")
    if not all(re.fullmatch(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?", label) for label in labels):
        return "the endpoint's host is not a valid name"
    if re.fullmatch(r"[0-9]+|0x[0-9a-f]*", labels[-1]):
        # Numeric forms resolvers read as addresses (2130706433, 0x7f.1): not names.
        return "the endpoint's host is not a valid name"
    if not allow_private and labels[-1] in ("localhost", "local", "internal", "localdomain"):
        return REFUSED_ADDRESS
    return None


# --- channel headers -----------------------------------------------------------------------------

MAX_HEADERS = 10
MAX_HEADER_LENGTH = 4096
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}$")
_HEADER_VALUE = re.compile(r"^[\x20-\x7e\t]*$")
# Set by us, or by the HTTP layer: a partner's header may not replace them.
RESERVED_HEADERS = frozenset(
    {
        "content-type", "content-length", "content-encoding", "transfer-encoding", "host", "connection",
        "keep-alive", "upgrade", "te", "trailer", "proxy-authorization", "proxy-connection", "expect",
        "user-agent", "cookie",
    }
)  # fmt: skip
MASK = "***"


def parse_header(text: str) -> tuple[str, str]:
    """A channel header `Name: value` -> (name, value); ValueError saying which rule it broke."""
    if not isinstance(text, str):
        raise ValueError("each header is a string 'Name: value'")
    if "\r" in text or "\n" in text or "\x00" in text:
        raise ValueError("headers must not contain line breaks")
    if len(text) > MAX_HEADER_LENGTH:
        raise ValueError(f"each header is at most {MAX_HEADER_LENGTH} characters")
    name, colon, value = text.partition(":")
    if not colon or not _HEADER_NAME.match(name):
        raise ValueError("each header is 'Name: value' with a valid header name")
    value = value.strip(" \t")
    if not _HEADER_VALUE.match(value):
        raise ValueError("header values are visible ASCII characters")
    lowered = name.lower()
    if lowered in RESERVED_HEADERS or lowered.startswith(("x-cmh-", "webhook-")):
        raise ValueError("this header is set by the server and cannot be given")
    return name, value


def masked(headers: list[str]) -> list[str]:
    """Headers as shown on reads: names only, values masked."""
    return [f"{text.partition(':')[0]}: {MASK}" for text in headers]
