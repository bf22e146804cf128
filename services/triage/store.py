"""Taking referrals in and deciding them: identity matching, screening against the read-models,
and the events, in the caller's transaction (so an accepted referral and its events commit
together or not at all)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.clocks import TimeRefused, check_moment
from contracts.timezones import london_date
from contracts.vocabulary import PRIORITY_LABELS
from services.triage import access, identity, readmodels
from services.triage.domain import (
    CRISIS_PRIORITIES,
    DecisionAction,
    DecisionRefused,
    Intake,
    Priority,
    ReferralFacts,
    ReferralStatus,
    Route,
    Source,
    Suggestion,
    TransferImpossible,
    TransitionRefused,
    age_on,
    check_backdating,
    check_decision,
    check_transfer,
    check_transfer_possible,
    deadline,
    decided_route,
    decided_team,
    held_for_identity,
    intake_step,
    name_key,
    next_step,
    screen,
)
from services.triage.events import referral_facts
from services.triage.models import (
    CrisisChange,
    Decision,
    DirectoryService,
    Episode,
    Person,
    PersonVersion,
    Referral,
)
from services.triage.schemas import DecisionIn, PersonIn, ReferralIn
from shared.auth import Caller
from shared.events import make_event
from shared.outbox import add_event
from shared.sqltypes import utcnow

SERVICE = "triage"
CLOSED = ReferralStatus.CLOSED.value
DEFAULT_BACKDATE_LIMIT = timedelta(days=30)
CONTACT_RECORDED = "contact"  # a history row that is not a triage decision (the first contact)


class NotAllowedNow(Exception):
    """A decision the referral's current status does not allow (409; nothing stored or published)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Refused(Exception):
    """A request the rules refuse (422 naming the field; nothing stored)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# --- identity ------------------------------------------------------------------------------------


PERSON_FIELDS = (
    "nhs_number", "given_name", "family_name", "birth_date", "postcode", "contact", "ethnicity", "sex",
    "gender", "preferred_language", "interpreter_needed", "accessibility_needs",
)  # fmt: skip
NEAR_CANDIDATES = 200  # people examined for near matches (found by index; never a scan)
BIRTH_YEAR_WINDOW = 10  # same family name: birth dates this many years either side


def person_values(person: Person) -> dict[str, Any]:
    """The person's details as on file, one dict (the columns with the details JSON)."""
    return {
        **json.loads(person.details),
        "nhs_number": person.nhs_number,
        "birth_date": person.birth_date.isoformat(),
        "postcode": person.postcode,
    }


def _demographics(person: Person) -> identity.Demographics:
    return _demographics_of(person.details, person.birth_date, person.postcode, person.nhs_number)


def _demographics_of(
    details_json: str, birth_date: date, postcode: str | None, nhs_number: str | None
) -> identity.Demographics:
    details = json.loads(details_json)
    return identity.Demographics(
        given_name=details.get("given_name", ""),
        family_name=details.get("family_name", ""),
        birth_date=birth_date,
        postcode=postcode,
        nhs_number=nhs_number,
    )


@dataclass
class IdentityMatch:
    """Who a referral is about, and what is to be confirmed: the person is never rewritten."""

    person: Person
    matched_by: str  # nhs_number | name_dob_postcode | new
    as_referred: dict[str, Any]  # the person as the referral gives them, kept with the referral
    comparison: identity.Comparison | None = None  # NHS number matched: the referral against the person
    near: dict[str, tuple[str, ...]] = field(default_factory=dict)  # possible duplicates: person id -> why
    created: PersonVersion | None = None

    @property
    def duplicates(self) -> list[str]:
        return list(self.near)

    @property
    def in_review(self) -> bool:
        return self.comparison is not None and self.comparison.needs_review

    def summary(self) -> dict[str, Any]:
        """What the suggestion says about identity (kinds and ids, never values)."""
        return {
            "matched_by": self.matched_by,
            "differs": list(self.comparison.disagreeing) if self.comparison else [],
            "identity_review": self.in_review,
            "possible_duplicates": [
                {"person_id": pid, "reasons": list(why)} for pid, why in self.near.items()
            ],
        }

    def rules(self, referral_day: date) -> list[dict[str, str]]:
        found = identity.identity_rules(
            self.comparison,
            date.fromisoformat(self.as_referred["birth_date"]),
            self.person.birth_date if self.comparison is not None else None,
            referral_day,
            duplicates=len(self.near),
        )
        return [asdict(rule) for rule in found]

    def record(self, referral: Referral) -> None:
        """Keep the person as referred, and any review, with the referral."""
        referral.person_as_referred = json.dumps(self.as_referred)
        referral.identity_review_open = self.in_review
        if self.in_review:
            assert self.comparison is not None
            referral.identity_review = json.dumps(
                {
                    "status": "open",
                    "matched_by": self.matched_by,
                    "reasons": list(self.comparison.disagreeing),
                    "kinds": self.comparison.kinds(),
                    "raised_at": utcnow().isoformat(),
                }
            )
        if self.created is not None and self.created.referral_id != referral.id:
            self.created.referral_id = referral.id


async def _near_matches(
    session: AsyncSession,
    referred: identity.Demographics,
    also: Sequence[Person] = (),
    *,
    exclude: str | None = None,
    ignore_nhs: bool = False,
) -> dict[str, tuple[str, ...]]:
    """People who may be the person referred (`identity.near_match`), found by indexed lookups:
    the same or the day/month-swapped birth date, the same family name born within a few years,
    the same postcode."""
    born = referred.birth_date
    dates = [born, *([swapped] if (swapped := identity.swapped_day_month(born)) else [])]
    conditions = [Person.birth_date.in_(dates)]
    family = identity.family_key(referred.family_name)
    if family:
        conditions.append(
            and_(
                Person.family_key == family,
                Person.birth_date.between(
                    date(max(born.year - BIRTH_YEAR_WINDOW, 1), 1, 1),
                    date(min(born.year + BIRTH_YEAR_WINDOW, 9999), 12, 31),
                ),
            )
        )
    if referred.postcode:
        conditions.append(Person.postcode == referred.postcode)
    # Only the columns compared, as plain rows: up to 200 ORM people per referral were most of
    # intake's CPU (building them, then the unit of work looking them over at every flush).
    candidates = (
        await session.execute(
            select(Person.id, Person.details, Person.birth_date, Person.postcode, Person.nhs_number)
            .where(or_(*conditions))
            .order_by(Person.birth_date, Person.id)
            .limit(NEAR_CANDIDATES)
        )
    ).all()
    people = {p.id: _demographics(p) for p in also}
    for person_id, details, birth_date, postcode, nhs_number in candidates:
        if person_id not in people:
            people[person_id] = _demographics_of(details, birth_date, postcode, nhs_number)
    near: dict[str, tuple[str, ...]] = {}
    for person_id, demographics in people.items():
        if person_id == exclude:
            continue
        reasons = identity.near_match(referred, demographics, ignore_nhs=ignore_nhs)
        if reasons is not None:
            near[person_id] = reasons
    return dict(sorted(near.items()))


async def match_person(
    session: AsyncSession, caller: Caller, body: ReferralIn, *, referral_id: str | None = None
) -> IdentityMatch:
    """Who the referral is about. A referral never rewrites a person: what it says is kept with
    the referral (`IdentityMatch.record`). NHS number first: a match whose date of birth or name
    disagrees is flagged for identity review (a postcode alone is information); else exactly the
    same name, date of birth and postcode. Near matches are flagged as possible duplicates, never
    merged. `referral_id`: the referral's id, known before it is stored, kept on a new person's
    first version as it is inserted (not by an UPDATE after)."""
    person_in = body.person
    as_referred = person_in.model_dump(mode="json")
    referred = identity.Demographics(
        given_name=person_in.given_name,
        family_name=person_in.family_name,
        birth_date=person_in.birth_date,
        postcode=person_in.postcode,
        nhs_number=person_in.nhs_number,
    )
    key = name_key(person_in.given_name, person_in.family_name)
    same_name_and_birth = and_(Person.name_key == key, Person.birth_date == person_in.birth_date)
    # One round trip for both lookups: the person with the NHS number (unique) and those with the
    # same name and date of birth, told apart here (the second matter only when the first is none).
    known = (
        await session.scalars(
            select(Person).where(
                or_(Person.nhs_number == person_in.nhs_number, same_name_and_birth)
                if person_in.nhs_number
                else same_name_and_birth
            )
        )
    ).all()
    if person_in.nhs_number:
        found = next((p for p in known if p.nhs_number == person_in.nhs_number), None)
        if found is not None:
            comparison = identity.compare(_demographics(found), referred)
            near: dict[str, tuple[str, ...]] = {}
            if comparison.needs_review:
                # The NHS number may be the wrong one: who on file looks like the person as referred?
                near = await _near_matches(session, referred, exclude=found.id, ignore_nhs=True)
            return IdentityMatch(found, "nhs_number", as_referred, comparison, near)
    same_name_dob = [p for p in known if p.name_key == key and p.birth_date == person_in.birth_date]
    near = await _near_matches(session, referred, same_name_dob)
    if person_in.nhs_number is None:
        exact = [p for p in same_name_dob if p.postcode == person_in.postcode]
        if len(exact) == 1:
            near.pop(exact[0].id, None)
            return IdentityMatch(exact[0], "name_dob_postcode", as_referred, near=near)
    # A new person; anyone who may be them is flagged, never merged.
    person, created = new_person(
        session, caller, person_in, "As the first referral gave them", referral_id=referral_id
    )
    return IdentityMatch(person, "new", as_referred, near=near, created=created)


def new_person(
    session: AsyncSession, caller: Caller, person_in: PersonIn, reason: str, *, referral_id: str | None = None
) -> tuple[Person, PersonVersion]:
    """A person as a referral gives them, with their first version (who, when, why)."""
    details = person_in.model_dump(mode="json", exclude={"nhs_number", "birth_date", "postcode"})
    person = Person(
        id=str(uuid.uuid4()),
        nhs_number=person_in.nhs_number,
        name_key=name_key(person_in.given_name, person_in.family_name),
        family_key=identity.family_key(person_in.family_name),
        birth_date=person_in.birth_date,
        postcode=person_in.postcode,
        details=json.dumps(details),
        version=1,
    )
    session.add(person)
    created = PersonVersion(
        person_id=person.id,
        version=1,
        changed_at=utcnow(),
        client_id=caller.client_id,
        organisation=access.owner_of(caller),
        end_user_id=caller.end_user_id,
        end_user_role=caller.end_user_role,
        reason=reason,
        fields=json.dumps(list(PERSON_FIELDS)),
        previous=None,
        new=json.dumps(person_in.model_dump(mode="json")),
        referral_id=referral_id,
    )
    session.add(created)
    return person, created


async def settle_identity(
    session: AsyncSession, caller: Caller, referral: Referral, outcome: str, reason: str
) -> Referral:
    """Close a referral's identity review: `confirmed` (the person on file is this person) or
    `different_person` (the NHS number matched someone else: the referral moves to a new person
    made from the demographics as referred, without that NHS number). Nothing is merged or
    rewritten; the history says who settled it and why."""
    if not referral.identity_review_open or not referral.identity_review:
        raise NotAllowedNow("this referral's identity is not in review")
    review = json.loads(referral.identity_review)
    now = utcnow()
    previous_person = referral.person_id
    if outcome == "different_person":
        as_referred = json.loads(referral.person_as_referred or "{}")
        person, created = new_person(
            session, caller, PersonIn.model_validate({**as_referred, "nhs_number": None}),
            "Identity review: not the person on file with the NHS number referred",
        )  # fmt: skip
        created.referral_id = referral.id
        referral.person_id = person.id
    review.update(
        status=outcome, settled_at=now.isoformat(), settled_by=caller.client_id,
        settled_by_end_user=caller.end_user_id, reason=reason, previous_person_id=previous_person,
    )  # fmt: skip
    referral.identity_review = json.dumps(review)
    referral.identity_review_open = False
    referral.version += 1
    referral.updated_at = now
    session.add(
        Decision(
            referral_id=referral.id, action=f"identity_{'confirmed' if outcome == 'confirmed' else 'relinked'}",
            priority=referral.priority, route=referral.route, team_id=referral.team_id, reason=reason,
            actor=caller.client_id, at=now, from_status=referral.status, to_status=referral.status,
            end_user_id=caller.end_user_id, end_user_role=caller.end_user_role,
        )
    )  # fmt: skip
    add_event(
        session,
        make_event(
            SERVICE, "referral", "identity_settled",
            {**referral_facts(referral), **_accountable(caller, now), "outcome": outcome,
             "previous_person_id": previous_person},
        ),
    )  # fmt: skip
    return referral


# --- intake --------------------------------------------------------------------------------------


def _suggestion_json(suggestion: Suggestion) -> dict[str, Any]:
    data = asdict(suggestion)
    data["priority"] = int(suggestion.priority)
    data["priority_name"] = PRIORITY_LABELS[int(suggestion.priority)]
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
        "priority_name": PRIORITY_LABELS[referral.priority],
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


def _crisis_change(session: AsyncSession, referral: Referral, change: str, *, force: bool = False) -> None:
    """Tell the crisis queue and stream; `force` for the change that takes a referral off it."""
    if referral.deadline_at is not None or force:
        session.add(
            CrisisChange(referral_id=referral.id, change=change, entry=json.dumps(queue_entry(referral)))
        )


async def submit(
    session: AsyncSession,
    caller: Caller,
    body: ReferralIn,
    *,
    crisis: bool,
    backdate_limit: timedelta = DEFAULT_BACKDATE_LIMIT,
) -> Referral:
    now = utcnow()
    received_at = body.received_at or now
    try:
        check_moment(received_at, now=now, field="received_at")
        if body.authored_at is not None:
            # Written no later than it was received (a receipt defaulted to now: not in the future).
            written_by = None if body.received_at is None else "the referral was received"
            check_moment(body.authored_at, now=received_at, field="authored_at", now_what=written_by)
    except TimeRefused as refusal:
        raise Refused(refusal.field, f"{refusal.field}: {refusal.message}") from None
    try:
        check_backdating(received_at, now, backdate_limit, body.backdated_reason)
    except DecisionRefused as refusal:
        raise Refused(refusal.field, refusal.message) from None
    referral_id = str(uuid.uuid4())
    # identity: never rewrites the person
    match = await match_person(session, caller, body, referral_id=referral_id)
    person, duplicates, matched = match.person, match.duplicates, match.matched_by
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
        referring_org=access.owner_of(caller),
        crisis_path=crisis,
    )
    known = matched != "new"  # a person new to triage has never been discharged nor referred
    # Identity in doubt: no re-access to, nor links with, the record of someone who may be another.
    known = known and not match.in_review
    suggestion = screen(
        facts,
        snapshot,
        directory,
        await readmodels.previous_discharge(session, person.id, received_at) if known else None,
        received_at,
    )
    suggestion_json = _suggestion_json(suggestion)
    suggestion_json["identity"] = match.summary()
    suggestion_json["rules"] = [*suggestion_json["rules"], *match.rules(london_date(received_at))]
    awaiting = open_episode = None
    if known:
        # Context the clinician must see: the same person already waiting, or already in care.
        awaiting = await session.scalar(
            select(Referral)
            .where(Referral.person_id == person.id, Referral.status == ReferralStatus.RECEIVED.value)
            .order_by(Referral.received_at.desc())
            .limit(1)
        )
        open_episode = await readmodels.open_episode(session, person.id)
    links = []
    if awaiting is not None:
        links.append(
            {"id": "D-awaiting-triage", "text": f"Referral {awaiting.id} for this person is still awaiting "
             "triage: linked to it, so both are decided together."}
        )  # fmt: skip
    if open_episode is not None:
        links.append(
            {"id": "D-open-episode", "text": f"This person has an open episode ({open_episode.episode_id}, team "
             f"{open_episode.team_id}): linked to it as new information; no second episode opens at that team."}
        )  # fmt: skip
    suggestion_json["rules"] = [*suggestion_json["rules"], *links]
    priority = int(suggestion.priority)
    reaccess = suggestion.route == Route.REACCESS and suggestion.reaccess_episode_id is not None
    status, lifecycle_events = intake_step(reaccess)
    referral = Referral(
        id=referral_id,
        person_id=person.id,
        referring_org=access.owner_of(caller),
        referring_client=caller.client_id,
        source=body.source.value,
        received_at=received_at,
        authored_at=body.authored_at or received_at,
        backdated_reason=body.backdated_reason,
        intake=(Intake.REACCESS if reaccess else Intake.SCREENED).value,
        awaiting_referral_id=awaiting.id if awaiting is not None else None,
        open_episode_id=open_episode.episode_id if open_episode is not None else None,
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
        route=suggestion.route.value if reaccess else None,
        status=status.value,
        place_key=(suggestion.place or {}).get("key"),
        network_id=(suggestion.network or {}).get("id"),
        team_id=(suggestion.team or {}).get("id"),
        pathway=suggestion.pathway,
        possible_duplicates=json.dumps(duplicates),
        reaccess_episode_id=suggestion.reaccess_episode_id,
        deadline_at=deadline(received_at, suggestion.priority, body.source),
        version=1,
    )
    match.record(referral)  # the person as referred, and any identity review, stay with the referral
    session.add(referral)
    session.add(
        Decision(
            referral_id=referral.id, action="reaccess" if reaccess else "received", priority=priority, route=referral.route,
            team_id=referral.team_id, reason=body.backdated_reason, actor=caller.client_id, at=now,
            from_status=None, to_status=status.value, end_user_id=caller.end_user_id,
            end_user_role=caller.end_user_role,
        )
    )  # fmt: skip
    facts_event = referral_facts(referral)
    for verb in lifecycle_events:
        if verb == "received":
            data = {**facts_event, "possible_duplicate": bool(duplicates) or awaiting is not None}
        elif verb == "prioritised":
            data = {
                **facts_event,
                "suggested_route": suggestion.route.value,
                "target_minutes": suggestion.target_minutes,
                "deadline_at": referral.deadline_at.isoformat() if referral.deadline_at else None,
                "rules": [rule.id for rule in suggestion.rules],
            }
        else:  # routed straight back to the named worker's team: no triage decision is awaited
            data = _routed_data(referral, suggestion_json, caller, decided_at=now, automatic=True)
        add_event(session, make_event(SERVICE, "referral", verb, data))
    _crisis_change(session, referral, "new")
    return referral


def _accountable(caller: Caller, decided_at: datetime) -> dict[str, Any]:
    """Who made a decision: the calling system, and the clinician it asserts (as asserted). The
    decision's free-text reason is not here: only `transferred` and `closed` carry it, for careplan
    to keep with the episode it moves or ends (`shared/event_catalogue.py`); no consumer reads it
    from the other events, so they leave it in triage's decision history."""
    return {
        "decided_by": caller.client_id,
        "end_user_id": caller.end_user_id,
        "end_user_role": caller.end_user_role,
        "decided_at": decided_at.isoformat(),
    }


def _routed_data(
    referral: Referral,
    suggestion: dict[str, Any],
    caller: Caller,
    *,
    decided_at: datetime,
    automatic: bool,
) -> dict[str, Any]:
    return {
        **referral_facts(referral),
        **_accountable(caller, decided_at),
        "route": referral.route,
        "automatic": automatic,
        "reaccess_episode_id": referral.reaccess_episode_id,
        "named_worker_id": suggestion.get("named_worker_id"),
        "deadline_at": referral.deadline_at.isoformat() if referral.deadline_at else None,
    }


# --- decisions -----------------------------------------------------------------------------------


async def decide(session: AsyncSession, caller: Caller, referral: Referral, body: DecisionIn) -> Referral:
    """Apply a clinician's decision through the lifecycle (`domain.LIFECYCLE`): refused with
    `NotAllowedNow` (409) when the referral's status does not allow it, and then nothing changes
    and nothing is published."""
    suggestion = json.loads(referral.suggestion)
    action = body.action
    source_status = ReferralStatus(referral.status)
    route = decided_route(
        action, body.route.value if body.route else None, referral.route, referral.suggested_route
    )
    signposts = list(body.signposts)
    if action is DecisionAction.ACCEPT:
        signposts = signposts or [s["service_id"] for s in suggestion.get("signposts", [])]
    try:
        step = next_step(source_status, action, Route(route) if route else None)
    except TransitionRefused as refusal:
        raise NotAllowedNow(refusal.message) from None
    crisis = referral.crisis or Priority(referral.priority) in CRISIS_PRIORITIES
    if held_for_identity(step, action, in_review=bool(referral.identity_review_open), crisis=crisis):
        raise NotAllowedNow(
            "the person's identity is in review: settle it first (POST /triage/referrals/{id}/identity)"
        )
    if action is DecisionAction.TRANSFER:
        episode = await session.scalar(select(Episode).where(Episode.referral_id == referral.id).limit(1))
        try:
            check_transfer_possible(action, None if episode is None else episode.status == "open")
        except TransferImpossible as refusal:
            raise NotAllowedNow(refusal.message) from None
    priority = body.priority or referral.priority
    team_id = decided_team(action, body.team_id, referral.team_id, route, referral.suggested_route)
    try:
        check_decision(
            action,
            route=Route(route) if route else None,
            signposts=signposts,
            reason=body.reason,
            consent_to_share=referral.consent_to_share,
            team_id=team_id,
            priority_changed=priority != referral.priority,
        )
    except ValueError as refusal:
        raise Refused(getattr(refusal, "field", "action"), str(refusal)) from None
    network_id = referral.network_id
    if body.team_id:
        # A team the clinician names must be a team in the registry today: an unknown id would
        # leave the episode with no providing organisation, so nobody could write in it.
        snapshot, _ = await readmodels.screening(session, london_date(utcnow()))
        team = next((t for t in snapshot.teams if body.team_id in (t.id, t.key)), None)
        if team is None:
            raise Refused("team_id", "not a team in the registry today")
        team_id, network_id = team.id, team.network_id
    try:
        check_transfer(
            action, team_id=team_id, current_team=referral.team_id, route=route, current_route=referral.route
        )
    except DecisionRefused as refusal:
        raise Refused("team_id", str(refusal)) from None
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
    now = utcnow()
    previous_team, previous_route, previous_priority = referral.team_id, referral.route, referral.priority
    had_deadline = referral.deadline_at is not None
    referral.priority = priority
    if priority != previous_priority:
        referral.deadline_at = deadline(referral.received_at, Priority(priority), Source(referral.source))
    referral.route = route
    if action is not DecisionAction.CLOSE:
        referral.team_id = team_id
        referral.network_id = network_id if team_id else referral.network_id
    referral.status = step.target.value
    referral.version += 1
    referral.updated_at = now
    session.add(
        Decision(
            referral_id=referral.id, action=action.value, priority=priority, route=route, team_id=team_id,
            signposts=json.dumps(signposts), reason=body.reason, actor=caller.client_id, at=now,
            from_status=source_status.value, to_status=step.target.value, end_user_id=caller.end_user_id,
            end_user_role=caller.end_user_role,
        )
    )  # fmt: skip
    facts = {**referral_facts(referral), **_accountable(caller, now), "decision": action.value}
    if priority != previous_priority and "prioritised" not in step.events:
        add_event(session, make_event(SERVICE, "referral", "prioritised", {**facts, "overridden": True}))
    for verb in step.events:
        if verb == "prioritised":
            data = {**facts, "overridden": True, "previous_priority": previous_priority,
                    "deadline_at": referral.deadline_at.isoformat() if referral.deadline_at else None}  # fmt: skip
        elif verb == "routed":
            data = _routed_data(referral, suggestion, caller, decided_at=now, automatic=False)
            data["decision"] = action.value
        elif verb == "transferred":
            data = {
                **facts,
                "reason": body.reason,  # careplan keeps it with the transfer of the episode
                "route": route,
                "previous_route": previous_route,
                "previous_team_id": previous_team,
            }
        elif verb == "closed":
            data = {
                **facts,
                "reason": body.reason,  # careplan keeps it with the discharge the closing makes
                "alternative_route": route if action is DecisionAction.DECLINE else None,
                "signposts": signposts,
                "episode_rule": "end_episode" if step.ends_episode else "none",
            }
        elif verb == "signposted":
            data = _signpost_facts(referral, signposts)
        else:  # pragma: no cover - the lifecycle table names only these
            raise AssertionError(verb)
        add_event(session, make_event(SERVICE, "referral", verb, data))
        if verb == "signposted":
            await _request_handovers(session, referral, signposts)
    if signposts and "signposted" not in step.events:
        add_event(
            session, make_event(SERVICE, "referral", "signposted", _signpost_facts(referral, signposts))
        )
        await _request_handovers(session, referral, signposts)
    if referral.deadline_at is not None or had_deadline:
        if referral.status == ReferralStatus.CLOSED.value:
            change = "closed"
        elif referral.deadline_at is None:
            change = "downgraded"  # off the crisis queue, by a practitioner, with a reason
        else:
            change = "updated"
        _crisis_change(session, referral, change, force=True)
    return referral


def _signpost_facts(referral: Referral, signposts: list[str]) -> dict[str, Any]:
    """The signposting as everyone may hear it (journey, notifications, reporting): no person."""
    details = json.loads(referral.details)
    return {
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


async def _request_handovers(session: AsyncSession, referral: Referral, signposts: list[str]) -> None:
    """The warm handovers the directory offers each partner, on a subject only the directory reads:
    who to contact, only with consent (issue 18: events carry only what their consumers need)."""
    add_event(
        session,
        make_event(SERVICE, "handover", "requested", await _handover_data(session, referral, signposts)),
    )


async def _handover_data(session: AsyncSession, referral: Referral, signposts: list[str]) -> dict[str, Any]:
    """The signposting with, when the person consented to share, their contact details and needs."""
    details = json.loads(referral.details)
    data = _signpost_facts(referral, signposts)
    if referral.consent_to_share:
        person = await session.get(Person, referral.person_id)
        assert person is not None
        person_details = json.loads(person.details)
        if referral.identity_review_open and referral.person_as_referred:
            # Identity in doubt: hand over the person who consented on this referral, never the
            # details of the person on file its NHS number matched (who may be someone else).
            person_details = json.loads(referral.person_as_referred)
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


async def record_contact(
    session: AsyncSession, caller: Caller, referral: Referral, contact_at: datetime
) -> Referral:
    """The first face-to-face contact: off the crisis queue, with who recorded it in the history."""
    try:
        check_moment(contact_at, now=utcnow(), field="contact_at", not_before=referral.received_at)
    except TimeRefused as refusal:
        raise Refused(refusal.field, f"the contact: {refusal.message}") from None
    if referral.first_contact_at is not None:
        raise Refused("contact_at", "the first face-to-face contact is already recorded")
    referral.first_contact_at = contact_at
    referral.response_minutes = int((contact_at - referral.received_at).total_seconds() // 60)
    referral.version += 1
    now = referral.updated_at = utcnow()
    session.add(
        Decision(
            referral_id=referral.id, action=CONTACT_RECORDED, priority=referral.priority, route=referral.route,
            team_id=referral.team_id, actor=caller.client_id, at=now, from_status=referral.status,
            to_status=referral.status, end_user_id=caller.end_user_id, end_user_role=caller.end_user_role,
        )
    )  # fmt: skip
    target = json.loads(referral.suggestion).get("target_minutes")
    add_event(
        session,
        make_event(
            SERVICE,
            "referral",
            "contacted",
            {
                **referral_facts(referral),
                "first_contact_at": contact_at.isoformat(),
                "response_minutes": referral.response_minutes,
                "target_minutes": target,
                "met": target is None or referral.response_minutes <= target,
                **_accountable(caller, now),
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
