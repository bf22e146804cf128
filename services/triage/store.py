"""Taking referrals in and deciding them: identity matching, screening against the read-models,
and the events, in the caller's transaction (so an accepted referral and its events commit
together or not at all)."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.triage import readmodels
from services.triage.domain import (
    DecisionAction,
    Priority,
    ReferralFacts,
    Route,
    Suggestion,
    age_on,
    check_decision,
    deadline,
    name_key,
    screen,
)
from services.triage.models import CrisisChange, Decision, DirectoryService, Person, Referral
from services.triage.schemas import DecisionIn, ReferralIn
from shared.auth import Caller
from shared.events import make_event
from shared.outbox import add_event
from shared.sqltypes import utcnow
from shared.timezones import london_date

SERVICE = "triage"
PRIORITY_NAMES = {1: "emergency", 2: "urgent", 3: "routine", 4: "very urgent"}
CLOSED = "closed"


class Refused(Exception):
    """A request the rules refuse (422 naming the field; nothing stored)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# --- identity ------------------------------------------------------------------------------------


async def match_person(session: AsyncSession, body: ReferralIn) -> tuple[Person, list[str], str]:
    """(person, possible duplicates, how matched). NHS number first; else exact name, date of
    birth and postcode. Near matches are flagged for review, never merged."""
    person_in = body.person
    key = name_key(person_in.given_name, person_in.family_name)
    details = person_in.model_dump(mode="json", exclude={"nhs_number", "birth_date", "postcode"})
    if person_in.nhs_number:
        found = await session.scalar(select(Person).where(Person.nhs_number == person_in.nhs_number))
        if found is not None:
            found.details = json.dumps(details)
            found.postcode = person_in.postcode
            found.updated_at = utcnow()
            return found, [], "nhs_number"
    same_name_dob = (
        await session.scalars(
            select(Person).where(Person.name_key == key, Person.birth_date == person_in.birth_date)
        )
    ).all()
    if person_in.nhs_number is None:
        exact = [p for p in same_name_dob if p.postcode == person_in.postcode]
        if len(exact) == 1:
            return exact[0], [p.id for p in same_name_dob if p.id != exact[0].id], "name_dob_postcode"
    # A new person; anyone with the same name and date of birth may be them: flag, never merge.
    duplicates = [
        p.id
        for p in same_name_dob
        if not (p.nhs_number and person_in.nhs_number and p.nhs_number != person_in.nhs_number)
    ]
    person = Person(
        id=str(uuid.uuid4()),
        nhs_number=person_in.nhs_number,
        name_key=key,
        birth_date=person_in.birth_date,
        postcode=person_in.postcode,
        details=json.dumps(details),
    )
    session.add(person)
    return person, duplicates, "new"


# --- intake --------------------------------------------------------------------------------------


def _suggestion_json(suggestion: Suggestion) -> dict[str, Any]:
    data = asdict(suggestion)
    data["priority"] = int(suggestion.priority)
    data["priority_name"] = PRIORITY_NAMES[int(suggestion.priority)]
    data["route"] = suggestion.route.value
    return json.loads(json.dumps(data, default=str))  # type: ignore[no-any-return]


def queue_entry(referral: Referral) -> dict[str, Any]:
    """What the crisis queue shows: ids, priority, times, team; no names (the app reads the referral)."""
    now = utcnow()
    remaining = None
    if referral.deadline_at is not None and referral.first_contact_at is None:
        remaining = int((referral.deadline_at - now).total_seconds() // 60)
    return {
        "referral_id": referral.id,
        "person_id": referral.person_id,
        "priority": referral.priority,
        "priority_name": PRIORITY_NAMES[referral.priority],
        "source": referral.source,
        "received_at": referral.received_at.isoformat(),
        "deadline_at": referral.deadline_at.isoformat() if referral.deadline_at else None,
        "minutes_remaining": remaining,
        "overdue": remaining is not None and remaining < 0,
        "team_id": referral.team_id,
        "place": referral.place_key,
        "route": referral.route or referral.suggested_route,
        "status": referral.status,
        "first_contact_at": referral.first_contact_at.isoformat() if referral.first_contact_at else None,
        "response_minutes": referral.response_minutes,
    }


def _crisis_change(session: AsyncSession, referral: Referral, change: str) -> None:
    if referral.deadline_at is not None:
        session.add(
            CrisisChange(referral_id=referral.id, change=change, entry=json.dumps(queue_entry(referral)))
        )


def _event_facts(referral: Referral) -> dict[str, Any]:
    details = json.loads(referral.details)
    return {
        "sex": details.get("sex"),
        "ethnicity": details.get("ethnicity"),
        "referral_id": referral.id,
        "person_id": referral.person_id,
        "received_at": referral.received_at.isoformat(),
        "source": referral.source,
        "referring_organisation": referral.referring_org,
        "crisis": referral.crisis,
        "age": referral.age,
        "place": referral.place_key,
        "network_id": referral.network_id,
        "team_id": referral.team_id,
        "pathway": referral.pathway,
        "priority": referral.priority,
        "status": referral.status,
        "version": referral.version,
    }


async def submit(session: AsyncSession, caller: Caller, body: ReferralIn, *, crisis: bool) -> Referral:
    received_at = body.received_at or utcnow()
    if received_at > utcnow():
        raise Refused("received_at", "received_at is in the future")
    person, duplicates, matched = await match_person(session, body)
    await session.flush()
    age = age_on(body.person.birth_date, london_date(received_at))
    snapshot, directory = await readmodels.screening(session, london_date(received_at))
    facts = ReferralFacts(
        age=age,
        source=body.source,
        risks=frozenset(body.risks),
        needs=frozenset(need.value for need in body.needs),
        requested=body.requested_urgency,
        consent_to_share=body.consent_to_share,
        postcode=body.person.postcode,
        referring_org=caller.organisation,
    )
    suggestion = screen(
        facts,
        snapshot,
        directory,
        # A person new to triage has never been discharged: no need to look.
        None if matched == "new" else await readmodels.live_discharge(session, person.id, received_at),
        received_at,
    )
    suggestion_json = _suggestion_json(suggestion)
    suggestion_json["identity"] = {"matched_by": matched}
    priority = int(suggestion.priority)
    referral = Referral(
        id=str(uuid.uuid4()),
        person_id=person.id,
        referring_org=caller.organisation,
        referring_client=caller.client_id,
        source=body.source.value,
        received_at=received_at,
        age=age,
        consent_to_share=body.consent_to_share,
        crisis=crisis,
        details=json.dumps(
            {
                "needs": [n.value for n in body.needs],
                "needs_text": body.needs_text,
                "risks": [r.value for r in body.risks],
                "requested_urgency": body.requested_urgency.value if body.requested_urgency else None,
                # Categories reporting groups by (not identifiers; kept with the referral as given then).
                "sex": body.person.sex,
                "ethnicity": body.person.ethnicity,
            }
        ),
        suggestion=json.dumps(suggestion_json),
        suggested_priority=priority,
        suggested_route=suggestion.route.value,
        priority=priority,
        route=None,
        status="received",
        place_key=(suggestion.place or {}).get("key"),
        network_id=(suggestion.network or {}).get("id"),
        team_id=(suggestion.team or {}).get("id"),
        pathway=suggestion.pathway,
        possible_duplicates=json.dumps(duplicates),
        reaccess_episode_id=suggestion.reaccess_episode_id,
        deadline_at=deadline(received_at, suggestion.priority, body.source),
        version=1,
    )
    session.add(referral)
    facts_event = _event_facts(referral)
    add_event(
        session,
        make_event(SERVICE, "referral", "received", {**facts_event, "possible_duplicate": bool(duplicates)}),
    )
    add_event(
        session,
        make_event(
            SERVICE,
            "referral",
            "prioritised",
            {
                **facts_event,
                "suggested_route": suggestion.route.value,
                "target_minutes": suggestion.target_minutes,
                "deadline_at": referral.deadline_at.isoformat() if referral.deadline_at else None,
                "rules": [rule.id for rule in suggestion.rules],
            },
        ),
    )
    _crisis_change(session, referral, "new")
    return referral


# --- decisions -----------------------------------------------------------------------------------


async def decide(session: AsyncSession, caller: Caller, referral: Referral, body: DecisionIn) -> Referral:
    if referral.status == CLOSED:
        raise Refused("action", "this referral is closed")
    suggestion = json.loads(referral.suggestion)
    action = body.action
    route = body.route.value if body.route else None
    signposts = list(body.signposts)
    if action is DecisionAction.ACCEPT:
        route = referral.suggested_route
        signposts = signposts or [s["service_id"] for s in suggestion.get("signposts", [])]
    try:
        check_decision(
            action,
            route=Route(route) if route else None,
            signposts=signposts,
            reason=body.reason,
            consent_to_share=referral.consent_to_share,
        )
    except ValueError as refusal:
        raise Refused(getattr(refusal, "field", "action"), str(refusal)) from None
    if signposts:
        known = set(
            (
                await session.scalars(
                    select(DirectoryService.service_id).where(
                        DirectoryService.service_id.in_(signposts), DirectoryService.withdrawn.is_(False)
                    )
                )
            ).all()
        )
        unknown = [s for s in signposts if s not in known]
        if unknown:
            raise Refused("signposts", f"not published partner services: {', '.join(unknown[:3])}")
    priority = body.priority or referral.priority
    team_id = body.team_id or (
        referral.team_id if action is DecisionAction.ACCEPT or route == referral.suggested_route else None
    )
    referral.priority = priority
    referral.route = route
    referral.team_id = team_id
    referral.version += 1
    referral.updated_at = utcnow()
    session.add(
        Decision(
            referral_id=referral.id, action=action.value, priority=priority, route=route, team_id=team_id,
            signposts=json.dumps(signposts), reason=body.reason, actor=caller.client_id,
        )
    )  # fmt: skip
    if action in (DecisionAction.DECLINE, DecisionAction.CLOSE):
        referral.status = CLOSED
    elif route == Route.VCFSE_SIGNPOST.value:
        referral.status = "signposted"  # no clinical team: the partner services are the offer
    else:
        referral.status = "routed"
    facts = {
        **_event_facts(referral),
        "decision": action.value,
        "decided_by": caller.client_id,
        "reason": body.reason,
    }
    if priority != referral.suggested_priority:
        add_event(session, make_event(SERVICE, "referral", "prioritised", {**facts, "overridden": True}))
    if referral.status == CLOSED:
        add_event(
            session,
            make_event(
                SERVICE, "referral", "closed", {**facts, "alternative_route": route, "signposts": signposts}
            ),
        )
    elif referral.status == "routed":
        add_event(
            session,
            make_event(
                SERVICE,
                "referral",
                "routed",
                {
                    **facts,
                    "route": route,
                    "reaccess_episode_id": referral.reaccess_episode_id,
                    "named_worker_id": suggestion.get("named_worker_id"),
                    "deadline_at": referral.deadline_at.isoformat() if referral.deadline_at else None,
                },
            ),
        )
    if signposts:
        add_event(
            session,
            make_event(SERVICE, "referral", "signposted", await _signpost_data(session, referral, signposts)),
        )
    _crisis_change(session, referral, "closed" if referral.status == CLOSED else "updated")
    return referral


async def _signpost_data(session: AsyncSession, referral: Referral, signposts: list[str]) -> dict[str, Any]:
    """The handover the directory offers each partner: person details only with consent."""
    details = json.loads(referral.details)
    data: dict[str, Any] = {
        "referral_id": referral.id,
        "person_id": referral.person_id,
        "referring_organisation": referral.referring_org,
        "status": referral.status,
        "version": referral.version,
        "consent_to_share": referral.consent_to_share,
        "services": [{"service_id": s} for s in signposts],
        "needs": details["needs"],
        "place": referral.place_key,
    }
    if referral.consent_to_share:
        person = await session.get(Person, referral.person_id)
        assert person is not None
        person_details = json.loads(person.details)
        contact = person_details.get("contact", {})
        data["person"] = {
            "name": f"{person_details['given_name']} {person_details['family_name']}",
            "phone": contact.get("phone"),
            "email": contact.get("email"),
            "preferred_language": person_details.get("preferred_language"),
            "interpreter_needed": person_details.get("interpreter_needed", False),
        }
        data["note"] = details.get("needs_text")
    return data


async def record_contact(session: AsyncSession, referral: Referral, contact_at: datetime) -> Referral:
    if contact_at < referral.received_at:
        raise Refused("contact_at", "the contact is before the referral was received")
    if contact_at > utcnow():
        raise Refused("contact_at", "the contact is in the future")
    if referral.first_contact_at is not None:
        raise Refused("contact_at", "the first face-to-face contact is already recorded")
    referral.first_contact_at = contact_at
    referral.response_minutes = int((contact_at - referral.received_at).total_seconds() // 60)
    referral.version += 1
    referral.updated_at = utcnow()
    target = json.loads(referral.suggestion).get("target_minutes")
    add_event(
        session,
        make_event(
            SERVICE,
            "referral",
            "contacted",
            {
                **_event_facts(referral),
                "first_contact_at": contact_at.isoformat(),
                "response_minutes": referral.response_minutes,
                "target_minutes": target,
                "met": target is None or referral.response_minutes <= target,
            },
        ),
    )
    _crisis_change(session, referral, "contacted")
    return referral


def open_crisis_filter() -> Any:
    return (
        Referral.deadline_at.is_not(None),
        Referral.first_contact_at.is_(None),
        Referral.status != CLOSED,
        or_(Referral.priority != int(Priority.ROUTINE), Referral.crisis.is_(True)),
    )
