"""What clinicians record, validated at the edge. Clinical times are given by the caller (records
are often entered later); the store checks them against the referral and the clock."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.careplan.domain import BreachReason, DischargeReason

Short = Annotated[str, Field(min_length=1, max_length=500)]
Words = Annotated[str, Field(min_length=1, max_length=2000)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _aware(cls, value: object) -> object:
        if isinstance(value, datetime) and value.tzinfo is None:
            raise ValueError("a clinical time needs a time zone")
        return value


class _Clinical(_In):
    linked_from_episode_id: str | None = Field(
        default=None,
        max_length=36,
        description=(
            "This record is history linked from the episode's previous episode (a re-access): its "
            "time may precede this episode, back to that episode's referral, and it never moves "
            "this episode's clocks"
        ),
    )


class ContactIn(_Clinical):
    at: datetime
    attended: bool
    mechanism: Literal["face_to_face", "telephone", "video", "other"]


class AssessmentIn(_Clinical):
    started_at: datetime
    completed_at: datetime | None = None
    meaningful: bool = Field(
        default=False, description="A meaningful assessment in the national clock's sense"
    )


class OutcomeMeasureIn(_Clinical):
    at: datetime
    tool: Literal[
        "DIALOG",
        "ReQoL-10",
        "ReQoL-20",
        "GAD-7",
        "PHQ-9",
        "CORE-10",
        "WEMWBS",
        "SWEMWBS",
        "HoNOS",
        "Goal-Based Outcomes",
        "RCADS",
    ]
    score: float = Field(ge=0, le=1000)


class InterventionIn(_Clinical):
    at: datetime
    kind: Literal["psychosocial", "psychological", "medication", "physical_health"]
    description: Short | None = None


class Responsibility(_In):
    who: Short
    what: Short
    partner_service_id: str | None = Field(
        default=None, max_length=36, description="A VCFSE partner's directory service"
    )


class PlanIn(_Clinical):
    at: datetime
    needs: list[Short] = Field(min_length=1, max_length=20)
    goals: list[Words] = Field(min_length=1, max_length=20, description="In the person's own words")
    crisis_plan: Words
    contingency_plan: Words
    responsibilities: list[Responsibility] = Field(default_factory=list, max_length=30)
    review_date: date


class AgreementIn(_In):
    agreed_at: datetime
    how_agreed: Literal["in_person", "telephone", "video", "letter", "declined_to_sign"]
    declined_to_sign_reason: Short | None = None
    breach_reason: BreachReason | None = None
    breach_text: Short | None = None


class ReviewIn(_Clinical):
    at: datetime
    summary: Words | None = None
    next_review: date | None = None


class NamedWorkerIn(_In):
    practitioner_id: str = Field(min_length=1, max_length=64)


class DischargeIn(_In):
    at: datetime
    reason: DischargeReason
    without_plan_reason: Short | None = None
    reaccess_months: int = Field(default=12, ge=0, le=36)


class AdviceIn(_Clinical):
    at: datetime
    description: Short | None = None


# --- answers -------------------------------------------------------------------------------------
# What each operation returns, as it returns it: instants are ISO 8601 strings with their offset
# (`datetime.isoformat()`), so these models describe the answer and never reformat it.

Instant = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClockOut(_Out):
    name: Literal["plan", "national"]
    start: Instant | None
    stop: Instant | None
    days_elapsed: int | None = Field(description="London dates: (stop or now) minus start")
    days_remaining: int | None = Field(description="28 minus days elapsed while running (may go negative)")
    state: Literal["not_started", "running", "at_risk", "met", "breached"]
    missing: list[str] = Field(description="What is still needed to stop it; empty once stopped")


class ClocksOut(_Out):
    plan: ClockOut = Field(description="The four-week plan clock (enforced)")
    national: ClockOut = Field(description="The national four-week clock (reported)")


class EpisodeOut(_Out):
    id: str
    referral_id: str
    person_id: str
    status: Literal["open", "discharged"]
    team_id: str | None
    network_id: str | None
    place: str | None
    pathway: str | None
    route: str
    priority: int
    named_worker_id: str | None
    previous_episode_id: str | None
    opened_at: Instant
    referral_received_at: Instant
    discharged_at: Instant | None
    reaccess_until: Instant | None
    clocks: ClocksOut
    version: int


class AssertedEndUser(_Out):
    """The end user the recording client asserted (careplan does not verify it)."""

    id: str | None
    role: str | None
    asserted: Literal[True]


class EpisodeRecordOut(_Out):
    kind: str
    at: Instant = Field(description="Clinical time")
    recorded_at: Instant = Field(description="When it was entered")
    recorded_by: str = Field(description="The client that recorded it")
    asserted_end_user: AssertedEndUser | None
    data: dict[str, Any]


class EpisodeWithRecordsOut(EpisodeOut):
    records: list[EpisodeRecordOut] = Field(description="By clinical time, then when entered")


class EpisodesOut(_Out):
    items: list[EpisodeOut]


class EpisodeClocksOut(_Out):
    episode_id: str
    plan: ClockOut = Field(description="The four-week plan clock (enforced)")
    national: ClockOut = Field(description="The national four-week clock (reported)")


class WorklistEntry(_Out):
    episode_id: str
    person_id: str
    team_id: str | None
    named_worker_id: str | None
    route: str
    opened_at: Instant
    days_remaining: int | None
    state: Literal["not_started", "running", "at_risk", "met", "breached"]
    at_risk: bool
    breached: bool
    reaccess: bool = Field(description="A re-access: back with the named worker, the previous episode linked")
    previous_episode_id: str | None


class WorklistOut(_Out):
    as_of: Instant
    page: int
    per_page: int
    total: int = Field(description="How many open episodes match")
    items: list[WorklistEntry]


class JourneyEntryOut(BaseModel):
    """A step of the person's journey; the rest of its fields are the step's own summary."""

    model_config = ConfigDict(extra="allow")

    at: Instant = Field(description="Clinical time")
    recorded_at: Instant = Field(description="When it was entered")
    kind: str


class JourneyOut(_Out):
    person_id: str
    entries: list[JourneyEntryOut] = Field(description="By clinical time, each with when it was entered")


# --- examples for the OpenAPI document (one realistic request per main journey) -----------------

CONTACT_EXAMPLE: dict[str, Any] = {
    "summary": "An attended first appointment at the team base",
    "value": {"at": "2026-11-24T10:30:00+00:00", "attended": True, "mechanism": "face_to_face"},
}
PLAN_EXAMPLE: dict[str, Any] = {
    "summary": "A personalised care plan written with the person",
    "value": {
        "at": "2026-11-26T14:00:00+00:00",
        "needs": ["Low mood", "Sleep"],
        "goals": ["Get back to walking the dog every morning", "Sleep through most nights"],
        "crisis_plan": "Call the crisis line (0800 952 1181) or go to A&E; her sister Grace will stay with her.",
        "contingency_plan": "If the named worker is away, the duty worker calls within one working day.",
        "responsibilities": [{"who": "Named worker", "what": "Weekly call for the first month"}],
        "review_date": "2027-02-26",
    },
}
