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

from services.triage.domain import (
    DecisionAction,
    Need,
    RequestedUrgency,
    Risk,
    Route,
    Source,
    normalise_nhs_number,
)
from shared.postcodes import InvalidPostcode, normalise_postcode

FREE_TEXT_LIMIT = 4000
Name = Annotated[str, Field(min_length=1, max_length=100)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Contact(_In):
    phone: str | None = Field(default=None, max_length=30, pattern=r"^[0-9 +()\-]{6,30}$")
    email: EmailStr | None = None
    address: str | None = Field(default=None, max_length=300)
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
    gender: str | None = Field(default=None, max_length=50)
    preferred_language: str | None = Field(default=None, max_length=50)
    interpreter_needed: bool = False
    accessibility_needs: list[Annotated[str, Field(max_length=200)]] = Field(
        default_factory=list, max_length=10
    )

    @field_validator("nhs_number")
    @classmethod
    def _nhs(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return normalise_nhs_number(value)

    @field_validator("postcode")
    @classmethod
    def _postcode(cls, value: str) -> str:
        try:
            return normalise_postcode(value)[0]
        except InvalidPostcode as exc:
            raise ValueError(str(exc)) from None

    @field_validator("birth_date")
    @classmethod
    def _born(cls, value: date) -> date:
        if value > date.today():
            raise ValueError("date of birth is in the future")
        if value.year < 1900:
            raise ValueError("date of birth is before 1900")
        return value


class ReferralIn(_In):
    person: PersonIn
    source: Source
    needs: list[Need] = Field(default_factory=list, max_length=20, description="Coded presenting needs")
    needs_text: str | None = Field(
        default=None, max_length=FREE_TEXT_LIMIT, description="In the referrer's words"
    )
    risks: list[Risk] = Field(default_factory=list, max_length=len(Risk))
    requested_urgency: RequestedUrgency | None = None
    consent_to_share: bool = Field(description="The person agrees to share their details with VCFSE partners")
    received_at: datetime | None = Field(
        default=None, description="When the referral was made (default: now)"
    )

    @model_validator(mode="after")
    def _dates(self) -> ReferralIn:
        if self.received_at is not None:
            if self.received_at.tzinfo is None:
                raise ValueError("received_at needs a time zone")
            if self.received_at.date() < self.person.birth_date:
                raise ValueError("received_at is before the person's date of birth")
        return self


class RuleOut(BaseModel):
    id: str
    text: str


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


class DecisionIn(_In):
    action: DecisionAction
    priority: int | None = Field(
        default=None, description="Override: 1 emergency, 2 urgent, 3 routine, 4 very urgent"
    )
    route: Route | None = None
    team_id: str | None = Field(default=None, max_length=64)
    signposts: list[str] = Field(default_factory=list, max_length=10, description="Directory service ids")
    reason: str | None = Field(default=None, max_length=2000)

    @field_validator("priority")
    @classmethod
    def _priority(cls, value: int | None) -> int | None:
        if value is not None and value not in (1, 2, 3, 4):
            raise ValueError("priority is 1 (emergency), 2 (urgent), 3 (routine) or 4 (very urgent)")
        return value


class ContactIn(_In):
    contact_at: datetime = Field(description="When the first face-to-face contact took place")
    mechanism: Literal["face_to_face"] = "face_to_face"

    @field_validator("contact_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("contact_at needs a time zone")
        return value
