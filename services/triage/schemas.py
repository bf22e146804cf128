"""Referrals as callers send them and as triage answers, validated at the edge (Pydantic v2).

Everything a referral says about the person is checked before anything is stored: the NHS number's
check digit, dates that cannot be (born in the future, referred before birth), coded needs and
risks, free text within bounds. A self-referral without an NHS number gives name, date of birth
and postcode instead, so the person can still be matched.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator, model_validator

from contracts.postcodes import InvalidPostcode, normalise_postcode
from contracts.vocabulary import PRIORITY_LABELS
from services.triage.domain import (
    DecisionAction,
    Need,
    RequestedUrgency,
    Risk,
    Route,
    Source,
    normalise_nhs_number,
)
from shared.text import SafeLine, SafeText

FREE_TEXT_LIMIT = 4000
# A person's name: no control characters or invisible formatting (shared.text), so what is shown
# is what is matched; refused with a 422 naming the field on either database.
Name = Annotated[SafeLine, Field(min_length=1, max_length=100)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Contact(_In):
    phone: str | None = Field(default=None, max_length=30, pattern=r"^[0-9 +()\-]{6,30}$")
    email: EmailStr | None = None
    address: SafeText | None = Field(default=None, max_length=300)
    contact_preference: Literal["phone", "text", "email", "letter"] | None = None


class PersonIn(_In):
    nhs_number: str | None = Field(default=None, description="10 digits with a valid modulus-11 check digit")
    given_name: Name
    family_name: Name
    birth_date: date
    postcode: str = Field(
        min_length=5, max_length=10, description="Where the person lives (routes the referral)"
    )
    contact: Contact = Field(default_factory=Contact)
    ethnicity: str | None = Field(
        default=None, pattern=r"^[A-Z]{1,2}$", description="NHS ethnic category code (A-Z, 99)"
    )
    sex: Literal["male", "female", "not_known", "not_specified"] | None = None
    gender: SafeLine | None = Field(default=None, max_length=50)
    preferred_language: SafeLine | None = Field(default=None, max_length=50)
    interpreter_needed: bool = False
    accessibility_needs: list[Annotated[SafeLine, Field(max_length=200)]] = Field(
        default_factory=list, max_length=10
    )

    @field_validator("nhs_number")
    @classmethod
    def _nhs(cls, value: str | None) -> str | None:
        return valid_nhs_number(value)

    @field_validator("postcode")
    @classmethod
    def _postcode(cls, value: str) -> str:
        return valid_postcode(value)

    @field_validator("birth_date")
    @classmethod
    def _born(cls, value: date) -> date:
        return valid_birth_date(value)


# The person's checks, shared by a referral's person and an explicit update of a person.
def valid_nhs_number(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    return normalise_nhs_number(value)


def valid_postcode(value: str) -> str:
    try:
        return normalise_postcode(value)[0]
    except InvalidPostcode as exc:
        raise ValueError(str(exc)) from None


def valid_birth_date(value: date) -> date:
    if value > date.today():
        raise ValueError("date of birth is in the future")
    if value.year < 1900:
        raise ValueError("date of birth is before 1900")
    return value


class ReferralIn(_In):
    person: PersonIn
    source: Source
    needs: list[Need] = Field(default_factory=list, max_length=20, description="Coded presenting needs")
    needs_text: SafeText | None = Field(
        default=None, max_length=FREE_TEXT_LIMIT, description="In the referrer's words"
    )
    risks: list[Risk] = Field(default_factory=list, max_length=len(Risk))
    requested_urgency: RequestedUrgency | None = None
    consent_to_share: bool = Field(description="The person agrees to share their details with VCFSE partners")
    received_at: datetime | None = Field(
        default=None,
        description=(
            "When the single point of access received the referral (default: now; the clocks start "
            "then). More than the configured bound (default 30 days) in the past needs backdated_reason."
        ),
    )
    authored_at: datetime | None = Field(
        default=None,
        description="When the referrer wrote it (FHIR authoredOn); not after it was received",
    )
    backdated_reason: SafeText | None = Field(
        default=None, max_length=500, description="Why the receipt is recorded this long after it happened"
    )

    @model_validator(mode="after")
    def _dates(self) -> ReferralIn:
        for name in ("received_at", "authored_at"):
            moment: datetime | None = getattr(self, name)
            if moment is None:
                continue
            if moment.tzinfo is None or moment.tzinfo.utcoffset(moment) is None:
                raise ValueError(f"{name} needs a time zone")
            if moment.date() < self.person.birth_date:
                raise ValueError(f"{name} is before the person's date of birth")
        # Not in the future, and not written after it was received: `contracts.clocks.check_moment`,
        # applied once, by the store (the receipt defaults to now there).
        return self


class RuleOut(BaseModel):
    id: str
    text: str


class IdentityReviewOut(BaseModel):
    """The NHS number matched a person on file whose date of birth or name disagrees: flagged, not
    merged. Names the fields and how they differ, never the values."""

    status: Literal["open", "confirmed", "different_person"] = Field(
        description="open until a clinician settles it: confirmed, or a different person (moved to a new person)"
    )
    matched_by: str = Field(description="nhs_number")
    reasons: list[Literal["birth_date", "name", "postcode"]] = Field(
        description="The fields that disagree with the person on file"
    )
    kinds: dict[str, list[str]] = Field(
        description="How each differs: day_month_transposed, birth_date_typo, nickname, middle_name, "
        "hyphenated_surname, similar_spelling, given_family_swapped, or different"
    )
    raised_at: datetime
    settled_at: datetime | None = None
    settled_by: str | None = Field(default=None, description="The client that settled it")
    settled_by_end_user: str | None = Field(default=None, description="The clinician it asserted")
    reason: str | None = Field(default=None, description="How identity was established")
    previous_person_id: str | None = Field(default=None, description="The person on file it was matched to")


class ReferralOut(BaseModel):
    id: str
    person_id: str
    status: str
    source: str
    referring_organisation: str
    received_at: datetime
    crisis: bool
    age: int
    priority: int
    priority_name: str
    route: str | None
    suggestion: dict[str, Any]
    rules: list[RuleOut]
    possible_duplicates: list[str]
    deadline_at: datetime | None
    first_contact_at: datetime | None
    response_minutes: int | None
    version: int
    authored_at: datetime | None = Field(default=None, description="When the referrer wrote it")
    intake: str = Field(
        default="screened",
        description="screened (awaits triage) | reaccess (straight back to the named worker's team)",
    )
    awaiting_referral_id: str | None = Field(
        default=None, description="Another referral for this person still awaiting triage, linked"
    )
    open_episode_id: str | None = Field(
        default=None, description="The person's open episode this referral is new information for"
    )
    episode_id: str | None = Field(
        default=None,
        description="The episode of care this referral's care is in (opened for it, or linked to it)",
    )
    care_ended_at: datetime | None = Field(
        default=None, description="When that episode ended: the request is then fulfilled (FHIR completed)"
    )
    identity_review: IdentityReviewOut | None = Field(
        default=None, description="Why the person's identity is to be confirmed; null when nothing disagrees"
    )


_PRIORITY_CODES = ", ".join(f"{code} ({label})" for code, label in sorted(PRIORITY_LABELS.items())[:-1])
_PRIORITY_CODES += f" or {max(PRIORITY_LABELS)} ({PRIORITY_LABELS[max(PRIORITY_LABELS)]})"


class DecisionIn(_In):
    action: DecisionAction
    priority: int | None = Field(default=None, description=f"Override: {_PRIORITY_CODES}")
    route: Route | None = None
    team_id: str | None = Field(default=None, max_length=64)
    signposts: list[str] = Field(default_factory=list, max_length=10, description="Directory service ids")
    reason: SafeText | None = Field(default=None, max_length=2000)

    @field_validator("priority")
    @classmethod
    def _priority(cls, value: int | None) -> int | None:
        if value is not None and value not in PRIORITY_LABELS:
            raise ValueError(f"priority is {_PRIORITY_CODES}")
        return value


class IdentitySettlementIn(_In):
    outcome: Literal["confirmed", "different_person"] = Field(
        description="confirmed: the person on file is this person; different_person: the NHS number matched "
        "someone else, so the referral moves to a new person as referred (without that NHS number)"
    )
    reason: SafeText = Field(min_length=1, max_length=2000, description="How identity was established")


class ContactIn(_In):
    contact_at: datetime = Field(description="When the first face-to-face contact took place")
    mechanism: Literal["face_to_face"] = "face_to_face"

    @field_validator("contact_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("contact_at needs a time zone")
        return value


# --- answers -------------------------------------------------------------------------------------
# As each operation answers: instants written by the handlers themselves are ISO 8601 strings
# with their offset (`datetime.isoformat()`), described here, never reformatted.

Instant = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")  # every field answered is named here


class ReferralPageOut(_Out):
    items: list[ReferralOut]
    page: int
    per_page: int
    total: int


class ReferralReadOut(ReferralOut):
    """One referral read: with the person as referred on it beside the person on file."""

    person: dict[str, Any] | None = Field(description="The person on file (null when withheld)")
    person_as_referred: dict[str, Any] | None = Field(description="The person as this referral gave them")
    details: dict[str, Any]


class AssertedEndUserOut(_Out):
    """As the calling system asserted them: the suite does not authenticate the end user."""

    id: str | None
    role: str | None
    asserted: Literal[True]


class DecisionOut(_Out):
    seq: int
    at: Instant
    action: str
    from_status: str | None
    to_status: str | None
    priority: int | None
    route: str | None
    team_id: str | None
    signposts: list[Any]
    reason: str | None
    client_id: str
    end_user: AssertedEndUserOut | None


class ReferralHistoryOut(_Out):
    referral_id: str
    status: str
    items: list[DecisionOut]


class QueueEntryOut(_Out):
    """A crisis queue entry: ids, priority, times, team; no names (the app reads the referral)."""

    referral_id: str
    person_id: str
    priority: int
    priority_name: str
    source: str
    received_at: Instant
    deadline_at: Instant | None
    minutes_remaining: int | None
    overdue: bool
    team_id: str | None
    place: str | None
    route: str | None
    status: str
    first_contact_at: Instant | None
    response_minutes: int | None


class CrisisQueueOut(_Out):
    as_of: Instant
    last_event_id: int = Field(description="Resume the stream from here (Last-Event-ID)")
    entries: list[QueueEntryOut]


class PersonOut(BaseModel):
    """The person on file; the rest of its fields are the person's details as given."""

    model_config = ConfigDict(extra="allow")

    id: str
    version: int = Field(description="The person's ETag")
    nhs_number: str | None
    birth_date: str = Field(json_schema_extra={"format": "date"})
    postcode: str | None
    created_at: Instant | None
    updated_at: Instant | None


class PersonChangedBy(_Out):
    client_id: str
    organisation: str | None
    end_user_id: str | None = Field(description="As the calling system asserted it")
    end_user_role: str | None = Field(description="As the calling system asserted it")


class PersonVersionOut(_Out):
    version: int
    changed_at: Instant
    changed_by: PersonChangedBy
    reason: str | None
    referral_id: str | None
    fields: list[str]
    previous: dict[str, Any] | None
    new: dict[str, Any]


class PersonVersionsOut(_Out):
    person_id: str
    version: int
    items: list[PersonVersionOut]


# --- examples for the OpenAPI document (one realistic request per main journey) -----------------

REFERRAL_EXAMPLE: dict[str, Any] = {
    "summary": "A GP refers an adult with low mood and anxiety",
    "value": {
        "person": {
            "nhs_number": "9434765919",
            "given_name": "Amira",
            "family_name": "Okafor",
            "birth_date": "1991-04-17",
            "postcode": "LS6 2AB",
            "contact": {"phone": "07700 900123", "contact_preference": "text"},
            "preferred_language": "English",
        },
        "source": "gp",
        "needs": ["low_mood", "anxiety"],
        "needs_text": "Low mood for three months since losing her job; sleeping badly; no plans to end her life.",
        "risks": [],
        "requested_urgency": "routine",
        "consent_to_share": True,
    },
}
DECISION_EXAMPLE: dict[str, Any] = {
    "summary": "Accept the suggested route and priority",
    "value": {"action": "accept", "reason": "Agree with the suggested route after a telephone screen."},
}
