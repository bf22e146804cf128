"""The CloudEvents 1.0 envelope every service publishes, and the subject naming rule.

Subjects are `cmh.<service>.<entity>.<verb>` (e.g. `cmh.triage.referral.routed`); the CloudEvents
`type` is the same string so an event read from anywhere names itself, and `subject` is the id of
the entity the event is about.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.tracing import child_traceparent, parse_traceparent, traceparent_var

SUBJECT_PREFIX = "cmh"
DEAD_LETTER_TOKEN = "deadletter"  # noqa: S105 - a subject token, not a secret
_TOKEN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
EVENT_SUBJECT = re.compile(r"^cmh\.[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")
# Every domain event has exactly four tokens, so this wildcard never matches a dead letter.
ALL_DOMAIN_EVENTS = f"{SUBJECT_PREFIX}.*.*.*"


def event_subject(service: str, entity: str, verb: str) -> str:
    """The NATS subject (and CloudEvents type) for a fact about an entity."""
    for part, value in (("service", service), ("entity", entity), ("verb", verb)):
        if not _TOKEN.match(value):
            raise ValueError(f"invalid {part} token {value!r}: lowercase letters, digits and _ only")
    if service == DEAD_LETTER_TOKEN:
        raise ValueError(f"{DEAD_LETTER_TOKEN!r} is reserved for dead letters")
    return f"{SUBJECT_PREFIX}.{service}.{entity}.{verb}"


def dead_letter_subject(durable: str) -> str:
    return f"{SUBJECT_PREFIX}.{DEAD_LETTER_TOKEN}.{durable}"


def new_event_id() -> str:
    return str(uuid.uuid4())


class CloudEvent(BaseModel):
    """CloudEvents 1.0, JSON format, with the W3C `traceparent` extension."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=new_event_id, min_length=1, max_length=128)
    source: str = Field(min_length=1, description="URI-reference of the producing service, e.g. /cmh/triage")
    type: str = Field(description="Same as the NATS subject: cmh.<service>.<entity>.<verb>")
    subject: str | None = Field(default=None, description="Id of the entity the event is about")
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    datacontenttype: Literal["application/json"] = "application/json"
    traceparent: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _type_is_subject(cls, value: str) -> str:
        if not EVENT_SUBJECT.match(value):
            raise ValueError("type must be cmh.<service>.<entity>.<verb>")
        return value

    @field_validator("traceparent")
    @classmethod
    def _valid_traceparent(cls, value: str | None) -> str | None:
        if value is not None and parse_traceparent(value) is None:
            raise ValueError("traceparent must follow W3C trace context")
        return value

    @field_validator("time")
    @classmethod
    def _aware_time(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("time must carry a time zone")
        return value

    @property
    def nats_subject(self) -> str:
        return self.type

    @property
    def service(self) -> str:
        return self.type.split(".")[1]

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> CloudEvent:
        return cls.model_validate_json(raw)


def make_event(
    service: str,
    entity: str,
    verb: str,
    data: dict[str, Any],
    *,
    subject: str | None = None,
    event_id: str | None = None,
    time: datetime | None = None,
) -> CloudEvent:
    """Build an event in the current trace (a new span of the request that caused it)."""
    fields: dict[str, Any] = {
        "source": f"/cmh/{service}",
        "type": event_subject(service, entity, verb),
        "subject": subject,
        "traceparent": child_traceparent(traceparent_var.get()),
        "data": data,
    }
    if event_id is not None:
        fields["id"] = event_id
    if time is not None:
        fields["time"] = time
    return CloudEvent(**fields)
