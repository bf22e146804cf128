"""The CloudEvents 1.0 envelope every service publishes, and the subject naming rule.

Subjects are `cmh.<service>.<entity>.<verb>` (e.g. `cmh.triage.referral.routed`); the CloudEvents
`type` is the same string so an event read from anywhere names itself, and `subject` is the id of
the entity the event is about.
"""

from __future__ import annotations

import builtins
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from contracts.events import EventPayload, model_for
from shared.tracing import current_traceparent, new_traceparent, parse_traceparent

P = TypeVar("P", bound=EventPayload)

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

    @cached_property
    def payload(self) -> EventPayload:
        """The data validated against its subject's contract (`contracts/events.py`); raises
        `ContractBroken` (naming the failing fields, never their values) when it does not match.
        The consumer reads it before any handler runs, so a handler never sees a broken one."""
        return validate_payload(self.type, self.data)

    def payload_as(self, model: builtins.type[P]) -> P:  # `type` is a field here
        """The payload as the model a handler was written for (its subject's, or a base of it)."""
        payload = self.payload
        if not isinstance(payload, model):
            raise ContractBroken(f"{self.type} is a {type(payload).__name__}, not a {model.__name__}")
        return payload

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> CloudEvent:
        return cls.model_validate_json(raw)


class ContractBroken(ValueError):
    """An event's data does not match its subject's contract. The message names the fields and
    what is wrong with them, never their values (which may be person data)."""


def _broken(subject: str, error: ValidationError) -> ContractBroken:
    problems = sorted(
        {f"{'.'.join(str(p) for p in e['loc']) or '(data)'}: {e['type']}" for e in error.errors()}
    )
    return ContractBroken(f"{subject} does not match its contract: {'; '.join(problems)[:400]}")


def validate_payload(subject: str, data: Mapping[str, Any]) -> EventPayload:
    model = model_for(subject)
    if model is None:
        raise ContractBroken(f"{subject} has no contract in contracts/events.py")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise _broken(subject, error) from None


def _wire(subject: str, data: EventPayload | Mapping[str, Any]) -> dict[str, Any]:
    """The payload as it is sent: the subject's model, dumped as given (fields not set are not
    added). It must be the subject's model and hold no field the model does not declare: the
    tolerance for extra fields is the consumers', for producers newer than they are."""
    if isinstance(data, EventPayload):
        if subject != data.SUBJECT:
            raise ContractBroken(f"a {type(data).__name__} payload is not the contract of {subject}")
        payload = data
    else:
        payload = validate_payload(subject, data)
    if payload.undeclared:
        raise ContractBroken(
            f"{subject}: fields its contract does not declare: {', '.join(payload.undeclared)}"
        )
    return payload.model_dump(mode="json", exclude_unset=True)


def make_event(
    service: str,
    entity: str,
    verb: str,
    data: EventPayload | Mapping[str, Any],
    *,
    subject: str | None = None,
    event_id: str | None = None,
    time: datetime | None = None,
) -> CloudEvent:
    """Build an event in the current trace, its data checked against the subject's contract. Its
    `traceparent` (CloudEvents distributed tracing) is the span that made it (the request or the
    consumer handling an event), so a consumer's span is that span's child."""
    event_type = event_subject(service, entity, verb)
    fields: dict[str, Any] = {
        "source": f"/cmh/{service}",
        "type": event_type,
        "subject": subject,
        "traceparent": current_traceparent() or new_traceparent(),
        "data": _wire(event_type, data),
    }
    if event_id is not None:
        fields["id"] = event_id
    if time is not None:
        fields["time"] = time
    return CloudEvent(**fields)
