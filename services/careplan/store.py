"""Episodes and what is recorded in them, the clocks, the scheduler's once-only clock events,
and the journey: in the caller's transaction, with their events."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.careplan.domain import (
    RuleRefused,
    check_clinical_time,
    check_discharge,
    check_plan_agreement,
    reaccess_until,
)
from services.careplan.models import ClockEventSent, Episode, EpisodeRecord, JourneyEntry, RegistryRecord
from shared import registry_events
from shared.clocks import (
    Clock,
    ClockEvent,
    EpisodeFacts,
    due_clock_events,
    national_clock,
    plan_clock,
    spell_start,
)
from shared.db import Database
from shared.events import CloudEvent, make_event
from shared.outbox import add_event
from shared.sqltypes import utcnow
from shared.timezones import london_date

SERVICE = "careplan"
# Routes that open an episode with a clinical team (a signpost, the crisis line or out of area do not).
CLINICAL_ROUTES = frozenset(
    {
        "crisis_response",
        "home_treatment",
        "front_door_primary",
        "front_door_secondary",
        "focused_support",
        "staying_well",
        "reaccess",
    }
)
REGISTRY_KINDS = ("team", "organisation", "practitioner", "membership")
FIRSTS = (
    "first_assessment_completed_at", "plan_agreed_at", "first_attended_contact_at", "first_outcome_measure_at",
    "first_meaningful_assessment_at", "first_intervention_at", "assessment_started_at", "advice_or_signposting_at",
)  # fmt: skip


def _at(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def facts(episode: Episode) -> EpisodeFacts:
    return EpisodeFacts(
        referral_received_at=episode.referral_received_at,
        age_at_referral=episode.age_at_referral,
        spell_started_at=episode.spell_started_at,
        discharged_at=episode.discharged_at,
        **{name: getattr(episode, name) for name in FIRSTS},
    )


def clocks(episode: Episode, now: datetime) -> dict[str, Any]:
    def out(clock: Clock) -> dict[str, Any]:
        data = asdict(clock)
        for key in ("start", "stop"):
            data[key] = data[key].isoformat() if data[key] else None
        data["state"] = clock.state.value
        data["missing"] = list(clock.missing)
        return data

    episode_facts = facts(episode)
    return {"plan": out(plan_clock(episode_facts, now)), "national": out(national_clock(episode_facts, now))}


def _journey(
    session: AsyncSession, source_id: str, person_id: str, at: datetime, kind: str, summary: dict[str, Any]
) -> None:
    session.add(
        JourneyEntry(source_id=source_id, person_id=person_id, at=at, kind=kind, summary=json.dumps(summary))
    )


def _episode_event(episode: Episode) -> dict[str, Any]:
    """What every episode event carries. `referring_organisation`, `version` (one more on every
    write a FHIR reader would see), `status` (open | discharged) and `plan_agreed` let the
    notifications service tell partners about their own referrals' episodes and care plans."""
    return {
        "episode_id": episode.id,
        "referral_id": episode.referral_id,
        "person_id": episode.person_id,
        "referring_organisation": episode.referring_org,
        "version": episode.version,
        "status": episode.status,
        "plan_agreed": episode.plan_agreed_at is not None,
        "team_id": episode.team_id,
        "network_id": episode.network_id,
        "place": episode.place_key,
        "pathway": episode.pathway,
        "route": episode.route,
        "priority": episode.priority,
        "named_worker_id": episode.named_worker_id,
        "age_at_referral": episode.age_at_referral,
        "referral_received_at": episode.referral_received_at.isoformat(),
        "spell_started_at": episode.spell_started_at.isoformat(),
    }


# --- registry read-model -------------------------------------------------------------------------


async def apply_registry_event(session: AsyncSession, event: CloudEvent) -> None:
    await registry_events.apply_registry_event(session, RegistryRecord, event.data or {}, REGISTRY_KINDS)


async def _attributes(session: AsyncSession, record_id: str | None, day: Any) -> dict[str, Any] | None:
    if record_id is None:
        return None
    record = await session.get(RegistryRecord, record_id)
    return registry_events.valid_on(json.loads(record.timeline), day) if record else None


async def team_owner(session: AsyncSession, team_id: str | None, day: Any) -> str | None:
    """The ODS code of the organisation providing a team (who may write in its episodes)."""
    team = await _attributes(session, team_id, day)
    provider = await _attributes(session, (team or {}).get("provider_id"), day)
    return (provider or {}).get("code")


async def is_team_practitioner(
    session: AsyncSession, practitioner_id: str, team_id: str | None, day: Any
) -> bool:
    if await _attributes(session, practitioner_id, day) is None:
        return False
    memberships = (
        await session.scalars(select(RegistryRecord).where(RegistryRecord.kind == "membership"))
    ).all()
    for membership in memberships:
        attributes = registry_events.valid_on(json.loads(membership.timeline), day)
        if (
            attributes
            and attributes["practitioner_id"] == practitioner_id
            and attributes["team_id"] == team_id
        ):
            return True
    return False


# --- opening episodes from triage ----------------------------------------------------------------


async def open_from_routed(session: AsyncSession, event: CloudEvent) -> None:
    """One episode per routed referral to a clinical team (a redelivery finds it and stops)."""
    data = event.data or {}
    if data.get("route") not in CLINICAL_ROUTES:
        return
    if await session.scalar(select(Episode.id).where(Episode.referral_id == data["referral_id"])):
        return
    received_at = datetime.fromisoformat(data["received_at"])
    previous = await session.scalar(
        select(Episode)
        .where(Episode.person_id == data["person_id"])
        .order_by(Episode.opened_at.desc())
        .limit(1)
    )
    linked = (
        await session.get(Episode, data["reaccess_episode_id"]) if data.get("reaccess_episode_id") else None
    )
    spell = spell_start(
        previous.spell_started_at if previous else None,
        previous.discharged_at if previous else None,
        received_at,
    )
    now = utcnow()
    episode = Episode(
        id=str(uuid.uuid4()),
        referral_id=data["referral_id"],
        person_id=data["person_id"],
        team_id=data.get("team_id"),
        network_id=data.get("network_id"),
        place_key=data.get("place"),
        owner_org=await team_owner(session, data.get("team_id"), london_date(now)),
        referring_org=data.get("referring_organisation"),
        pathway=data.get("pathway"),
        route=data["route"],
        priority=data["priority"],
        status="open",
        opened_at=now,
        referral_received_at=received_at,
        spell_started_at=spell,
        age_at_referral=data["age"],
        # Re-access: the same named worker, and the previous assessment and plan linked.
        named_worker_id=(linked.named_worker_id if linked else None) or data.get("named_worker_id"),
        previous_episode_id=linked.id if linked else None,
        version=1,
    )
    session.add(episode)
    add_event(
        session,
        make_event(SERVICE, "episode", "opened", {**_episode_event(episode), "reaccess": linked is not None}),
    )
    summary = {"episode_id": episode.id, "team_id": episode.team_id, "route": episode.route}
    if linked is not None:
        summary["linked_episode_id"] = linked.id
        summary["note"] = "re-access: previous assessment and plan linked, no new assessment"
    _journey(session, f"episode-opened:{episode.id}", episode.person_id, now, "episode_opened", summary)


# --- the journey from other services' events -----------------------------------------------------

JOURNEY_SUBJECTS = (
    "cmh.triage.referral.received", "cmh.triage.referral.routed", "cmh.triage.referral.signposted",
    "cmh.triage.referral.closed", "cmh.triage.referral.contacted", "cmh.directory.handover.updated",
)  # fmt: skip
_JOURNEY_FACTS = (
    "referral_id",
    "route",
    "team_id",
    "priority",
    "decision",
    "state",
    "service_id",
    "source",
    "response_minutes",
)


async def journey_from_event(session: AsyncSession, event: CloudEvent) -> None:
    data = event.data or {}
    if not data.get("person_id"):
        return
    if await session.scalar(select(JourneyEntry.seq).where(JourneyEntry.source_id == event.id)):
        return
    kind = event.type.removeprefix("cmh.").replace(".", "_")
    summary = {key: data[key] for key in _JOURNEY_FACTS if data.get(key) is not None}
    if "services" in data:
        summary["services"] = [s.get("service_id") for s in data["services"]]
    _journey(session, event.id, data["person_id"], event.time or utcnow(), kind, summary)


# --- recording -----------------------------------------------------------------------------------


def _check_time(episode: Episode, at: datetime, field: str, now: datetime) -> None:
    check_clinical_time(at, now=now, referral_received_at=episode.referral_received_at, field=field)


def _first(episode: Episode, name: str, at: datetime) -> None:
    current = getattr(episode, name)
    if current is None or at < current:
        setattr(episode, name, at)


def record(
    session: AsyncSession, episode: Episode, kind: str, at: datetime, actor: str, data: dict[str, Any]
) -> None:
    """Keep a record, its journey step and its event (no free text in either)."""
    session.add(
        EpisodeRecord(
            episode_id=episode.id, kind=kind, at=at, recorded_by=actor, data=json.dumps(data, default=str)
        )
    )
    episode.version += 1
    facts_only = {
        k: v
        for k, v in data.items()
        if k
        in (
            "attended",
            "mechanism",
            "tool",
            "score",
            "kind",
            "meaningful",
            "how_agreed",
            "reason",
            "practitioner_id",
            "breach_reason",
        )
    }
    _journey(
        session, f"{kind}:{episode.id}:{episode.version}", episode.person_id, at, kind,
        {"episode_id": episode.id, **facts_only},
    )  # fmt: skip
    add_event(
        session,
        make_event(
            SERVICE, kind, "recorded", {**_episode_event(episode), "at": at.isoformat(), **facts_only}
        ),
    )


def contact(session: AsyncSession, episode: Episode, body: Any, actor: str, now: datetime) -> None:
    _check_time(episode, body.at, "at", now)
    if body.attended:
        _first(episode, "first_attended_contact_at", body.at)
    record(session, episode, "contact", body.at, actor, body.model_dump(mode="json"))


def assessment(session: AsyncSession, episode: Episode, body: Any, actor: str, now: datetime) -> None:
    _check_time(episode, body.started_at, "started_at", now)
    if body.completed_at is not None:
        _check_time(episode, body.completed_at, "completed_at", now)
        if body.completed_at < body.started_at:
            raise RuleRefused("completed_at", "an assessment cannot be completed before it started")
        _first(episode, "first_assessment_completed_at", body.completed_at)
        if body.meaningful:
            _first(episode, "first_meaningful_assessment_at", body.completed_at)
    _first(episode, "assessment_started_at", body.started_at)
    record(
        session,
        episode,
        "assessment",
        body.completed_at or body.started_at,
        actor,
        body.model_dump(mode="json"),
    )


def outcome_measure(session: AsyncSession, episode: Episode, body: Any, actor: str, now: datetime) -> None:
    _check_time(episode, body.at, "at", now)
    _first(episode, "first_outcome_measure_at", body.at)
    record(session, episode, "outcome_measure", body.at, actor, body.model_dump(mode="json"))


def intervention(session: AsyncSession, episode: Episode, body: Any, actor: str, now: datetime) -> None:
    _check_time(episode, body.at, "at", now)
    _first(episode, "first_intervention_at", body.at)
    record(session, episode, "intervention", body.at, actor, body.model_dump(mode="json"))


def advice(session: AsyncSession, episode: Episode, body: Any, actor: str, now: datetime) -> None:
    _check_time(episode, body.at, "at", now)
    _first(episode, "advice_or_signposting_at", body.at)
    record(session, episode, "advice", body.at, actor, body.model_dump(mode="json"))


def plan(session: AsyncSession, episode: Episode, body: Any, actor: str, now: datetime) -> None:
    _check_time(episode, body.at, "at", now)
    record(session, episode, "plan", body.at, actor, body.model_dump(mode="json"))


def agreement(
    session: AsyncSession, episode: Episode, body: Any, actor: str, now: datetime, has_plan: bool
) -> None:
    _check_time(episode, body.agreed_at, "agreed_at", now)
    if not has_plan:
        raise RuleRefused("agreed_at", "record the care plan before its agreement")
    check_plan_agreement(
        facts(episode), body.agreed_at, breach_reason=body.breach_reason, breach_text=body.breach_text,
        declined_to_sign_reason=body.declined_to_sign_reason, how_agreed=body.how_agreed,
    )  # fmt: skip
    first = episode.plan_agreed_at is None
    _first(episode, "plan_agreed_at", body.agreed_at)
    if first and body.breach_reason is not None:
        episode.plan_breach_reason = body.breach_reason.value
    record(session, episode, "plan_agreement", body.agreed_at, actor, body.model_dump(mode="json"))
    if first:
        add_event(
            session,
            make_event(
                SERVICE,
                "plan",
                "agreed",
                {
                    **_episode_event(episode),
                    "agreed_at": body.agreed_at.isoformat(),
                    "clocks": clocks(episode, body.agreed_at),
                },
            ),
        )


def review(session: AsyncSession, episode: Episode, body: Any, actor: str, now: datetime) -> None:
    _check_time(episode, body.at, "at", now)
    record(session, episode, "review", body.at, actor, body.model_dump(mode="json"))


def assign_named_worker(
    session: AsyncSession, episode: Episode, practitioner_id: str, actor: str, now: datetime
) -> None:
    episode.named_worker_id = practitioner_id
    record(session, episode, "named_worker", now, actor, {"practitioner_id": practitioner_id})


def discharge(session: AsyncSession, episode: Episode, body: Any, actor: str, now: datetime) -> None:
    if episode.status != "open":
        raise RuleRefused("at", "this episode is already discharged")
    _check_time(episode, body.at, "at", now)
    check_discharge(facts(episode), reason=body.reason, without_plan_reason=body.without_plan_reason)
    episode.status = "discharged"
    episode.discharged_at = body.at
    episode.discharge_reason = body.reason.value
    episode.reaccess_until = reaccess_until(body.at, body.reaccess_months)
    record(session, episode, "discharge", body.at, actor, {"reason": body.reason.value})
    add_event(
        session,
        make_event(
            SERVICE,
            "episode",
            "discharged",
            {
                **_episode_event(episode),
                "discharged_at": body.at.isoformat(),
                "reaccess_until": episode.reaccess_until.isoformat(),
                "reason": body.reason.value,
                "clocks": clocks(episode, body.at),
            },
        ),
    )


# --- the clock scheduler -------------------------------------------------------------------------


async def scan_clocks(db: Database, now: datetime) -> int:
    """Emit the plan clock's at-risk and breach events now due, once each per episode: the event
    and its `ClockEventSent` row commit together, and a second replica's insert of the same row
    fails and rolls its copy back. Returns how many events were emitted."""
    emitted = 0
    async with db.session() as session:
        candidates = (
            await session.scalars(
                select(Episode.id).where(
                    Episode.status == "open",
                    Episode.first_assessment_completed_at.is_not(None),
                    Episode.plan_agreed_at.is_(None),
                )
            )
        ).all()
    for episode_id in candidates:
        this_episode = 0
        try:
            async with db.transaction() as session:
                episode = await session.get(Episode, episode_id)
                if episode is None:
                    continue
                sent = frozenset(
                    ClockEvent(e)
                    for e in (
                        await session.scalars(
                            select(ClockEventSent.event).where(ClockEventSent.episode_id == episode_id)
                        )
                    ).all()
                )
                for clock_event in due_clock_events(facts(episode), now, sent):
                    session.add(ClockEventSent(episode_id=episode_id, event=clock_event.value, sent_at=now))
                    add_event(
                        session,
                        make_event(
                            SERVICE,
                            "clock",
                            clock_event.value,
                            {**_episode_event(episode), "clocks": clocks(episode, now)},
                        ),
                    )
                    _journey(
                        session,
                        f"clock-{clock_event.value}:{episode_id}",
                        episode.person_id,
                        now,
                        f"clock_{clock_event.value}",
                        {"episode_id": episode_id},
                    )
                    this_episode += 1
                await session.flush()
        except IntegrityError:
            continue  # another replica sent it first
        emitted += this_episode
    return emitted
