"""FHIR R4 (UK Core) views of episodes and their care plans, as pure functions (no I/O, no clock
reads: the API layer fetches what a resource needs and passes it in, `now` included).

Each resource claims its UK Core profile (UKCore-EpisodeOfCare, UKCore-CarePlan; their
constraints are must-support flags on elements rendered here, checked by tests/shared/
test_uk_core_profiles.py); `meta` also carries `versionId` (the episode's version, one more on
every write, the ETag) and `lastUpdated`. Codes without a published code system (route, pathway, care plan category, clock
states, how a plan was agreed) use the suite's own under `https://cmh-suite.nhs.uk/CodeSystem/`.
Organisations, the named worker and the referral are referenced as the rest of the suite names
them: ODS codes and staff ids as logical references, referrals as `ServiceRequest/<id>`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from contracts.clocks import Clock
from services.careplan.models import Episode, EpisodeRecord
from shared.fhir_terms import (
    CMH_CODES,
    CMH_EXTENSIONS,
    CMH_IDS,
    EPISODE_OF_CARE_STATUS,
    ODS_SYSTEM,
    UK_CORE,
    care_plan_status,
    coding,
    identifier,
    instant,
    reference,
)

EPISODE_OF_CARE_STATUS_SYSTEM = "http://hl7.org/fhir/episode-of-care-status"
CARE_PLAN_STATUS_SYSTEM = "http://hl7.org/fhir/request-status"
# Every code of the two required value sets: a search for one this suite never uses finds nothing,
# a code outside them is refused.
EPISODE_OF_CARE_STATUS_CODES = frozenset(
    {"planned", "waitlist", "active", "onhold", "finished", "cancelled", "entered-in-error"}
)
CARE_PLAN_STATUS_CODES = frozenset(
    {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"}
)

EPISODE_SYSTEM = CMH_IDS + "episode"
STAFF_SYSTEM = CMH_IDS + "staff"
DIRECTORY_SERVICE_SYSTEM = CMH_IDS + "directory-service"
ROUTE_CODES = CMH_CODES + "route"
PATHWAY_CODES = CMH_CODES + "pathway"
CARE_PLAN_CATEGORY_CODES = CMH_CODES + "care-plan"
CARE_PLAN_ACTIVITY_CODES = CMH_CODES + "care-plan-activity"
CLOCK_STATE_CODES = CMH_CODES + "clock-state"
HOW_AGREED_CODES = CMH_CODES + "how-agreed"
PLAN_CLOCK_EXTENSION = CMH_EXTENSIONS + "plan-clock"
PLAN_AGREEMENT_EXTENSION = CMH_EXTENSIONS + "plan-agreement"
# Who recorded: the end user a client's system asserts (not verified by the suite), and the client.
END_USER_SYSTEM = CMH_IDS + "asserted-end-user"
CLIENT_SYSTEM = CMH_IDS + "client"
ASSERTED_BY_EXTENSION = CMH_EXTENSIONS + "asserted-by-client"
ASSERTED_ROLE_EXTENSION = CMH_EXTENSIONS + "asserted-end-user-role"

# What the responsibilities in a plan are, by the plan's status: not started until the person
# agrees it, in progress while it is in force. At discharge the suite does not know whether each
# was carried out (unknown); a plan never agreed was never started (cancelled).
_ACTIVITY_STATUS = {
    "draft": "not-started",
    "active": "in-progress",
    "completed": "unknown",
    "revoked": "cancelled",
}


def _words(code: str) -> str:
    return code.replace("_", " ").replace("-", " ").capitalize()


def _drop_empty(resource: dict[str, Any]) -> dict[str, Any]:
    # FHIR forbids empty elements and nulls.
    return {key: value for key, value in resource.items() if value not in (None, [], {}, "")}


EPISODE_OF_CARE_PROFILE = UK_CORE + "UKCore-EpisodeOfCare"
CARE_PLAN_PROFILE = UK_CORE + "UKCore-CarePlan"


def _meta(episode: Episode, last_updated: datetime, profile: str) -> dict[str, Any]:
    return {"versionId": str(episode.version), "lastUpdated": instant(last_updated), "profile": [profile]}


def _period(start: datetime | None, end: datetime | None) -> dict[str, str] | None:
    """A Period; a clinical end recorded before the system's start (a late entry) is not allowed
    to make the period run backwards (FHIR per-1): the start moves back to it."""
    if start is not None and end is not None and end < start:
        start = end
    period = {key: instant(moment) for key, moment in (("start", start), ("end", end)) if moment is not None}
    return period or None


def _organisation(ods_code: str | None) -> dict[str, Any] | None:
    # Organisations are referenced logically, by ODS code (the registry serves them by it).
    if not ods_code:
        return None
    return {"type": "Organization", "identifier": identifier(ODS_SYSTEM, ods_code)}


def plan_clock_extension(clock: Clock) -> dict[str, Any]:
    """The plan clock (first completed assessment → agreed care plan, 28 days) as a complex
    extension: its state, start and stop, and the days elapsed and remaining. State and days are
    as at the read: a running clock moves on with the calendar, not with the episode's version."""
    parts: list[dict[str, Any]] = [
        {
            "url": "state",
            "valueCoding": coding(CLOCK_STATE_CODES, clock.state.value, _words(clock.state.value)),
        }
    ]
    if clock.start is not None:
        parts.append({"url": "start", "valueDateTime": instant(clock.start)})
    if clock.stop is not None:
        parts.append({"url": "stop", "valueDateTime": instant(clock.stop)})
    if clock.days_elapsed is not None:
        parts.append({"url": "daysElapsed", "valueInteger": clock.days_elapsed})
    if clock.days_remaining is not None:
        parts.append({"url": "daysRemaining", "valueInteger": clock.days_remaining})
    return {"url": PLAN_CLOCK_EXTENSION, "extension": parts}


def episode_of_care(
    episode: Episode,
    *,
    last_updated: datetime,
    plan_clock: Clock | None = None,
    care_manager_staff_id: str | None = None,
) -> dict[str, Any]:
    """An episode as an EpisodeOfCare. `care_manager_staff_id` is the named worker's staff id (the
    episode holds the registry's practitioner id; the API looks the staff id up): without it
    there is no careManager, rather than a reference nobody could resolve."""
    status = EPISODE_OF_CARE_STATUS[episode.status]
    history = []
    if episode.status == "discharged":
        history.append({"status": "active", "period": _period(episode.opened_at, episode.discharged_at)})
    types = [{"coding": [coding(ROUTE_CODES, episode.route, _words(episode.route))]}]
    if episode.pathway:
        types.append({"coding": [coding(PATHWAY_CODES, episode.pathway)]})
    care_manager = (
        {"type": "Practitioner", "identifier": identifier(STAFF_SYSTEM, care_manager_staff_id)}
        if care_manager_staff_id
        else None
    )
    return _drop_empty(
        {
            "resourceType": "EpisodeOfCare",
            "id": episode.id,
            "meta": _meta(episode, last_updated, EPISODE_OF_CARE_PROFILE),
            "extension": [plan_clock_extension(plan_clock)] if plan_clock is not None else [],
            "identifier": [identifier(EPISODE_SYSTEM, episode.id)],
            "status": status,
            "statusHistory": history,
            "type": types,
            "patient": reference("Patient", episode.person_id),
            "managingOrganization": _organisation(episode.owner_org),
            "period": _period(episode.opened_at, episode.discharged_at),
            "referralRequest": [reference("ServiceRequest", episode.referral_id)],
            "careManager": care_manager,
        }
    )


def recorded_by(record: EpisodeRecord) -> dict[str, Any]:
    """Who made a record, as a FHIR Reference: the end user the recording client asserted, as a
    logical Practitioner reference (an identifier in the suite's asserted-end-user system, the
    role and the asserting client in extensions, the display saying it is asserted); without an
    asserted end user, the client itself, as a Device."""
    client = {"url": ASSERTED_BY_EXTENSION, "valueIdentifier": identifier(CLIENT_SYSTEM, record.recorded_by)}
    if record.end_user_id is None and record.end_user_role is None:
        return {
            "type": "Device",
            "identifier": identifier(CLIENT_SYSTEM, record.recorded_by),
            "display": f"Client {record.recorded_by} (no end user asserted)",
        }
    extensions = [client]
    if record.end_user_role:
        extensions.append({"url": ASSERTED_ROLE_EXTENSION, "valueString": record.end_user_role})
    reference = {
        "extension": extensions,
        "type": "Practitioner",
        "display": f"{record.end_user_role or 'End user'}, asserted by client {record.recorded_by}",
    }
    if record.end_user_id:
        reference["identifier"] = identifier(END_USER_SYSTEM, record.end_user_id)
    return reference


def _contributors(*records: EpisodeRecord | None) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for record in records:
        if record is not None and (who := recorded_by(record)) not in found:
            found.append(who)
    return found


def _agreement_extension(agreement: dict[str, Any]) -> dict[str, Any]:
    how = agreement["how_agreed"]
    return {
        "url": PLAN_AGREEMENT_EXTENSION,
        "extension": [
            {"url": "howAgreed", "valueCoding": coding(HOW_AGREED_CODES, how, _words(how))},
            {"url": "agreed", "valueDateTime": instant(datetime.fromisoformat(agreement["agreed_at"]))},
        ],
    }


def _responsibility(item: dict[str, Any], status: str) -> dict[str, Any]:
    performer = (
        [
            {
                "type": "HealthcareService",
                "identifier": identifier(DIRECTORY_SERVICE_SYSTEM, item["partner_service_id"]),
            }
        ]
        if item.get("partner_service_id")
        else []
    )
    return {
        "detail": _drop_empty(
            {
                "kind": "Task",
                "code": {"coding": [coding(CARE_PLAN_ACTIVITY_CODES, "responsibility", "Responsibility")]},
                "status": status,
                "performer": performer,
                "description": f"{item['who']}: {item['what']}",
            }
        )
    }


def _review(review_date: str, status: str) -> dict[str, Any]:
    # A review still to come is not started; once the plan is over it is not going to happen.
    review_status = "not-started" if status in ("draft", "active") else "cancelled"
    return {
        "detail": {
            "code": {"coding": [coding(CARE_PLAN_ACTIVITY_CODES, "review", "Care plan review")]},
            "status": review_status,
            "scheduledPeriod": {"start": review_date, "end": review_date},
            "description": "Review of the care plan with the person",
        }
    }


def care_plan(
    episode: Episode,
    plan_record: EpisodeRecord | None,
    agreement_record: EpisodeRecord | None,
    review_record: EpisodeRecord | None = None,
    *,
    last_updated: datetime,
) -> dict[str, Any] | None:
    """The personalised care plan of an episode as a CarePlan, or None before a plan is recorded.

    An episode has one current plan, so the CarePlan's id is the episode's id: the latest plan
    recorded (a revision replaces it) is the plan. It is draft until the person agrees a plan,
    active from then (a revision after agreement stays in force; the plan-agreement extension says
    how and when it was last agreed), and completed at discharge, or revoked if it was never
    agreed. Needs, goals (in the person's own words), the crisis plan and the contingency plan are
    notes; who does what are activities, with the next review (the latest review's `next_review`
    when one was recorded after the plan, otherwise the plan's review date).
    """
    if plan_record is None:
        return None
    plan = json.loads(plan_record.data)
    agreed = episode.plan_agreed_at is not None
    status = care_plan_status(agreed=agreed, discharged=episode.status == "discharged")
    created = instant(plan_record.at)
    notes = [
        *(f"Need: {need}" for need in plan.get("needs", [])),
        *(f"Goal: {goal}" for goal in plan.get("goals", [])),
        f"Crisis plan: {plan['crisis_plan']}",
        f"Contingency plan: {plan['contingency_plan']}",
    ]
    activity_status = _ACTIVITY_STATUS[status]
    activities = [_responsibility(item, activity_status) for item in plan.get("responsibilities", [])]
    review_date = plan.get("review_date")
    if review_record is not None and review_record.seq > plan_record.seq:
        review_date = json.loads(review_record.data).get("next_review") or review_date
    if review_date:
        activities.append(_review(review_date, status))
    agreement = json.loads(agreement_record.data) if agreement_record is not None else None
    return _drop_empty(
        {
            "resourceType": "CarePlan",
            "id": episode.id,
            "meta": _meta(episode, last_updated, CARE_PLAN_PROFILE),
            "extension": [_agreement_extension(agreement)] if agreement else [],
            "status": status,
            "intent": "plan",
            "category": [
                {
                    "coding": [
                        coding(CARE_PLAN_CATEGORY_CODES, "personalised-care-plan", "Personalised care plan")
                    ]
                }
            ],
            "title": "Personalised care plan",
            "subject": reference("Patient", episode.person_id),
            "period": _period(episode.plan_agreed_at, episode.discharged_at),
            "created": created,
            "author": _organisation(episode.owner_org),
            # Who recorded the plan, its agreement and its review (end users as asserted).
            "contributor": _contributors(plan_record, agreement_record, review_record),
            "supportingInfo": [reference("EpisodeOfCare", episode.id)],
            "activity": activities,
            "note": [{"time": created, "text": text} for text in notes],
        }
    )
