"""One frozen Pydantic model per event subject: what its producer builds and its consumers read.

A producer builds the subject's model (`shared.events.make_event` refuses a payload of another
subject's model, or one with a field its model does not declare); a consumer gets the payload
validated against the same model before its handler runs (`shared.consumer`), and an event that
does not match is dead-lettered with the fields that failed, never half applied. Models are
tolerant readers: a field a newer producer adds is kept, not refused, so producers can be upgraded
before their consumers.

`EVENT_MODELS` maps every subject to its model; `shared/event_catalogue.py` says who produces each,
what it means and which person data it carries, and `docs/events.md` lists both.

Times are ISO 8601 with a UTC offset on the wire (`Instant`), as `datetime.isoformat` writes them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer

from contracts.vocabulary import Priority, Route, Source


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("a time in an event carries its UTC offset")
    return value


Instant = Annotated[
    datetime,
    AfterValidator(_aware),
    PlainSerializer(lambda value: value.isoformat(), return_type=str, when_used="json"),
]


class EventPayload(BaseModel):
    """The data of one CloudEvent. `SUBJECT` is the subject (and CloudEvents type) it is sent on."""

    model_config = ConfigDict(frozen=True, extra="allow")
    SUBJECT: ClassVar[str] = ""

    @property
    def undeclared(self) -> list[str]:
        """Fields the payload holds that its model does not declare (a producer may send none)."""
        return sorted(self.model_extra or {})


def _subject(service: str, entity: str, verb: str) -> str:
    return f"cmh.{service}.{entity}.{verb}"


# --- triage --------------------------------------------------------------------------------------


class ReferralEvent(EventPayload):
    """What every `cmh.triage.referral.*` event says: which referral, for whom, its version and
    status, and who referred (notifications tell a referrer about its own referrals)."""

    referral_id: str
    person_id: str
    version: int | None = None
    status: str | None = None
    referring_organisation: str | None = None
    # With status, what the ServiceRequest status is (`shared.fhir_terms.service_request_status`).
    route: Route | None = None
    care_ended_at: Instant | None = None


class ReferralFacts(ReferralEvent):
    """A referral's facts (ids, codes and the demographics reporting groups by; no name, no
    contact, no free text)."""

    received_at: Instant | None = None
    source: Source | None = None
    crisis: bool = False
    priority: Priority | None = None
    place: str | None = None
    network_id: str | None = None
    team_id: str | None = None
    pathway: str | None = None
    age: int | None = None
    sex: str | None = None
    ethnicity: str | None = None


class Accountable(EventPayload):
    """Who made a decision: the calling system, and the clinician it asserts (as asserted)."""

    decided_by: str | None = None
    end_user_id: str | None = None
    end_user_role: str | None = None
    decided_at: Instant | None = None


class ReferralReceived(ReferralFacts):
    SUBJECT = _subject("triage", "referral", "received")
    possible_duplicate: bool = False


class ReferralPrioritised(ReferralFacts, Accountable):
    SUBJECT = _subject("triage", "referral", "prioritised")
    decision: str | None = None
    suggested_route: Route | None = None
    target_minutes: int | None = None
    deadline_at: Instant | None = None
    rules: list[str] = Field(default_factory=list)
    overridden: bool = False
    previous_priority: Priority | None = None


class ReferralRouted(ReferralFacts, Accountable):
    SUBJECT = _subject("triage", "referral", "routed")
    decision: str | None = None
    route: Route | None = None
    automatic: bool = False
    reaccess_episode_id: str | None = None
    named_worker_id: str | None = None
    deadline_at: Instant | None = None


class ReferralTransferred(ReferralFacts, Accountable):
    SUBJECT = _subject("triage", "referral", "transferred")
    decision: str | None = None
    reason: str | None = None  # the clinician's free text: careplan keeps it with the transfer
    route: Route | None = None
    previous_route: Route | None = None
    previous_team_id: str | None = None


class ReferralClosed(ReferralFacts, Accountable):
    SUBJECT = _subject("triage", "referral", "closed")
    decision: str | None = None
    reason: str | None = None  # the clinician's free text: careplan keeps it with the discharge
    alternative_route: Route | None = None
    signposts: list[str] = Field(default_factory=list)
    episode_rule: Literal["end_episode", "none"] = "none"


class SignpostedService(EventPayload):
    service_id: str


class ReferralSignposted(ReferralEvent):
    """The signposting as everyone may hear it (journey, notifications, reporting): no person."""

    SUBJECT = _subject("triage", "referral", "signposted")
    consent_to_share: bool = False
    services: list[SignpostedService] = Field(default_factory=list)
    needs: list[str] = Field(default_factory=list)
    place: str | None = None


class HandoverContact(EventPayload):
    """Who the partner contacts, sent only with the person's consent to share."""

    name: str
    phone: str | None = None
    email: str | None = None
    preferred_language: str | None = None
    interpreter_needed: bool = False


class HandoverRequested(ReferralSignposted):
    """The warm handovers the directory offers; only the directory reads it."""

    SUBJECT = _subject("triage", "handover", "requested")
    person: HandoverContact | None = None
    note: str | None = None  # the referral's needs text, only with consent


class ReferralContacted(ReferralFacts, Accountable):
    SUBJECT = _subject("triage", "referral", "contacted")
    first_contact_at: Instant
    response_minutes: int
    target_minutes: int | None = None
    met: bool = True


class ReferralCompleted(ReferralFacts):
    """The episode of care this routed referral was in has ended (careplan discharged it), so the
    request is fulfilled: its ServiceRequest is now `completed`."""

    SUBJECT = _subject("triage", "referral", "completed")
    episode_id: str
    care_ended_at: Instant


class ReferralIdentitySettled(ReferralFacts, Accountable):
    SUBJECT = _subject("triage", "referral", "identity_settled")
    outcome: Literal["confirmed", "different_person"]
    previous_person_id: str | None = None


class PersonUpdated(EventPayload):
    """A person's record changed: which fields, never their values."""

    SUBJECT = _subject("triage", "person", "updated")
    person_id: str
    fields: list[str]
    version: int
    previous_version: int | None = None
    changed_at: Instant | None = None


# --- careplan ------------------------------------------------------------------------------------


class ClockState(EventPayload):
    """One four-week clock as the domain computes it (`contracts.clocks.Clock`)."""

    name: str
    start: Instant | None = None
    stop: Instant | None = None
    state: str
    days_elapsed: int | None = None
    days_remaining: int | None = None
    missing: list[str] = Field(default_factory=list)


class Clocks(EventPayload):
    plan: ClockState
    national: ClockState


class EpisodeFacts(EventPayload):
    """What every episode event carries: ids, codes and the state partners are told about."""

    episode_id: str
    referral_id: str
    person_id: str
    referring_organisation: str | None = None
    version: int | None = None
    status: Literal["open", "discharged"] | None = None
    plan_agreed: bool = False
    team_id: str | None = None
    network_id: str | None = None
    place: str | None = None
    pathway: str | None = None
    route: Route | None = None
    priority: Priority | None = None
    named_worker_id: str | None = None
    age_at_referral: int | None = None
    referral_received_at: Instant | None = None
    spell_started_at: Instant | None = None
    previous_episode_id: str | None = None


class EpisodeOpened(EpisodeFacts):
    SUBJECT = _subject("careplan", "episode", "opened")
    reaccess: bool = False
    opened_at: Instant | None = None
    plan_clock_started_at: Instant | None = None


class EpisodeLinked(EpisodeFacts):
    SUBJECT = _subject("careplan", "episode", "linked")
    linked_referral_id: str


class EpisodeTransferred(EpisodeFacts):
    SUBJECT = _subject("careplan", "episode", "transferred")
    previous_team_id: str | None = None
    previous_route: Route | None = None
    transferred_at: Instant | None = None
    named_worker_cleared: bool = False
    clocks: Clocks | None = None


class EpisodeDischarged(EpisodeFacts):
    SUBJECT = _subject("careplan", "episode", "discharged")
    discharged_at: Instant
    reaccess_until: Instant  # until then a new referral goes straight back to the team
    reason: str | None = None  # a discharge reason code
    clocks: Clocks | None = None


class PlanAgreed(EpisodeFacts):
    SUBJECT = _subject("careplan", "plan", "agreed")
    agreed_at: Instant
    clocks: Clocks | None = None


class ClockAtRisk(EpisodeFacts):
    SUBJECT = _subject("careplan", "clock", "at_risk")
    clocks: Clocks | None = None


class ClockBreached(EpisodeFacts):
    SUBJECT = _subject("careplan", "clock", "breached")
    clocks: Clocks | None = None


class ClockCorrected(EpisodeFacts):
    SUBJECT = _subject("careplan", "clock", "corrected")
    withdrawn: Literal["at_risk", "breached"]
    clocks: Clocks | None = None


class RecordKept(EpisodeFacts):
    """An episode record was kept: when, and its facts and codes (never its free text)."""

    at: Instant
    attended: bool | None = None
    mechanism: str | None = None
    tool: str | None = None
    score: int | float | None = None
    kind: str | None = None
    meaningful: bool | None = None
    how_agreed: str | None = None
    reason: str | None = None  # a code (a discharge reason), not free text
    practitioner_id: str | None = None
    breach_reason: str | None = None
    linked_referral_id: str | None = None
    linked_from_episode_id: str | None = None
    from_team_id: str | None = None
    to_team_id: str | None = None
    named_worker_cleared: str | None = None


RECORD_KINDS = (
    "contact", "assessment", "outcome_measure", "intervention", "advice", "plan", "plan_agreement", "review",
    "named_worker", "discharge",
)  # fmt: skip


def _record_model(kind: str) -> type[RecordKept]:
    name = "".join(part.title() for part in kind.split("_")) + "Recorded"
    subject = _subject("careplan", kind, "recorded")
    return type(name, (RecordKept,), {"SUBJECT": subject, "__module__": __name__})


RECORD_MODELS: dict[str, type[RecordKept]] = {kind: _record_model(kind) for kind in RECORD_KINDS}


# --- registry ------------------------------------------------------------------------------------


class TimelineEntry(EventPayload):
    """One period of a registry record: its attributes from `valid_from` until `valid_to`."""

    valid_from: str
    valid_to: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)


class RegistryRecordChanged(EventPayload):
    """A registry record created, changed or retired, with its whole timeline."""

    id: str
    kind: str
    version: int
    timeline: list[TimelineEntry]


REGISTRY_KINDS = (
    "organisation", "place", "network", "pathway", "team", "practitioner", "membership", "leadership_role",
)  # fmt: skip
REGISTRY_VERBS = ("upserted", "retired")


def _registry_model(kind: str, verb: str) -> type[RegistryRecordChanged]:
    name = "".join(part.title() for part in kind.split("_")) + verb.title()
    return type(
        name, (RegistryRecordChanged,), {"SUBJECT": _subject("registry", kind, verb), "__module__": __name__}
    )


REGISTRY_MODELS: dict[tuple[str, str], type[RegistryRecordChanged]] = {
    (kind, verb): _registry_model(kind, verb) for kind in REGISTRY_KINDS for verb in REGISTRY_VERBS
}


# --- directory -----------------------------------------------------------------------------------


class ServiceNeed(EventPayload):
    taxonomy_term_id: str | None = None
    code: str | None = None
    name: str


class ServiceArea(EventPayload):
    name: str
    uri: str | None = None
    extent: str | None = None


class OpeningSlot(EventPayload):
    day: str
    opens: str  # HH:MM, London time
    closes: str


class ServiceLocation(EventPayload):
    service_at_location_id: str
    name: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    postcode: str | None = None  # the service's location, not a person's


class ServicePublished(EventPayload):
    """What triage keeps to match needs to services (no call back to the directory needed)."""

    SUBJECT = _subject("directory", "service", "published")
    service_id: str
    version: int
    organization_id: str | None = None
    organization_name: str | None = None
    organization_identifier: str | None = None
    name: str
    status: str
    minimum_age: int | None = None
    maximum_age: int | None = None
    needs: list[ServiceNeed] = Field(default_factory=list)
    service_areas: list[ServiceArea] = Field(default_factory=list)
    slots: list[OpeningSlot] = Field(default_factory=list)
    locations: list[ServiceLocation] = Field(default_factory=list)
    languages: list[str | None] = Field(default_factory=list)
    free: bool = True
    url: str | None = None
    email: str | None = None
    last_modified: Instant | None = None


class ServiceWithdrawn(EventPayload):
    SUBJECT = _subject("directory", "service", "withdrawn")
    service_id: str
    version: int | None = None  # one more than its last publication, so a late copy never revives it
    organization_id: str | None = None


class HandoverUpdated(EventPayload):
    """A warm handover's state changed (no reason, no person detail)."""

    SUBJECT = _subject("directory", "handover", "updated")
    handover_id: str
    referral_id: str
    person_id: str
    service_id: str
    organization: str | None = None
    state: Literal["offered", "accepted", "declined", "completed"]
    version: int
    actor: str | None = None
    at: Instant | None = None


# --- audit ---------------------------------------------------------------------------------------


class AccessRecorded(EventPayload):
    """An access to person-identifiable data, for the gateway's audit trail: ids only."""

    service: str
    action: str
    outcome: str
    resource_type: str
    resource_ids: list[str]
    person_ids: list[str]
    client_id: str
    client_kind: str
    organisation: str
    end_user_id: str | None = None
    end_user_role: str | None = None
    purpose_of_use: str
    request_id: str | None = None
    token_id: str | None = None


AUDITED_SERVICES = ("triage", "careplan", "directory", "notify", "reporting")


def _audit_model(service: str) -> type[AccessRecorded]:
    name = f"{service.title()}AccessRecorded"
    return type(
        name, (AccessRecorded,), {"SUBJECT": _subject(service, "audit", "recorded"), "__module__": __name__}
    )


AUDIT_MODELS: dict[str, type[AccessRecorded]] = {
    service: _audit_model(service) for service in AUDITED_SERVICES
}


# --- every subject -------------------------------------------------------------------------------


def _declared() -> list[type[EventPayload]]:
    found: list[type[EventPayload]] = []
    pending: list[type[EventPayload]] = [EventPayload]
    while pending:
        for model in pending.pop().__subclasses__():
            pending.append(model)
            if "SUBJECT" in model.__dict__ and model.SUBJECT:
                found.append(model)
    return found


EVENT_MODELS: dict[str, type[EventPayload]] = {model.SUBJECT: model for model in _declared()}


def model_for(subject: str) -> type[EventPayload] | None:
    """The contract of a subject, or None for one the suite does not publish."""
    return EVENT_MODELS.get(subject)
