"""Episodes and what is recorded in them, the clocks, the scheduler's once-only clock events,
and the journey: in the caller's transaction, with their events.

Triage's lifecycle events (`cmh.triage.referral.routed`, `.transferred`, `.closed`) open, link,
move and end episodes; each handler is idempotent under redelivery (the consumer's inbox) and
ignores an event older than the last referral `version` applied, so events arriving out of order
never undo a newer state. Every change keeps who made it (`Actor`: the client and the end user it
asserts) on its record."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.clocks import (
    Clock,
    ClockEvent,
    EpisodeFacts,
    due_clock_events,
    national_clock,
    plan_clock,
    spell_start,
)
from contracts.timezones import london_date
from services.careplan.domain import (
    DischargeReason,
    RuleRefused,
    check_clinical_time,
    check_discharge,
    check_plan_agreement,
    named_worker_on_transfer,
    opens_episode,
    reaccess_plan_clock_start,
    reaccess_until,
    withdrawn_clock_events,
)
from services.careplan.models import (
    ClockEventSent,
    Episode,
    EpisodeRecord,
    JourneyEntry,
    ReferralState,
    RegistryRecord,
)
from shared import registry_events
from shared.auth import Caller
from shared.db import Database
from shared.events import CloudEvent, make_event
from shared.outbox import add_event
from shared.sqltypes import utcnow

SERVICE = "careplan"
log = logging.getLogger("cmh.careplan.lifecycle")
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
    session: AsyncSession,
    source_id: str,
    person_id: str,
    at: datetime,
    kind: str,
    summary: dict[str, Any],
    recorded_at: datetime | None = None,
) -> None:
    """A journey step at its clinical time `at`, with when it was entered beside it."""
    session.add(
        JourneyEntry(
            source_id=source_id, person_id=person_id, at=at, recorded_at=recorded_at or utcnow(), kind=kind,
            summary=json.dumps(summary),
        )
    )  # fmt: skip


@dataclass(frozen=True)
class Actor:
    """Who makes a change: the client (`recorded_by`), and the end user that client's system says
    acted (asserted by it, not verified here: X-End-User-Id / X-End-User-Role, or triage's event)."""

    client_id: str
    end_user_id: str | None = None
    end_user_role: str | None = None

    @classmethod
    def of(cls, caller: Caller) -> Actor:
        return cls(caller.client_id, caller.end_user_id, caller.end_user_role)

    @classmethod
    def from_event(cls, data: Mapping[str, Any]) -> Actor:
        """A triage decision's maker; an automatic routing (a re-access) is triage's own."""

        def short(value: Any) -> str | None:
            return str(value)[:64] if value else None

        client = data.get("decided_by") or ("triage:automatic" if data.get("automatic") else "triage")
        return cls(str(client)[:128], short(data.get("end_user_id")), short(data.get("end_user_role")))

    def out(self) -> dict[str, Any]:
        return {"recorded_by": self.client_id, **asserted_end_user(self.end_user_id, self.end_user_role)}


def asserted_end_user(end_user_id: str | None, end_user_role: str | None) -> dict[str, Any]:
    """The end user as every view shows it: labelled as asserted by the recording client."""
    if end_user_id is None and end_user_role is None:
        return {"asserted_end_user": None}
    return {"asserted_end_user": {"id": end_user_id, "role": end_user_role, "asserted": True}}


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
        "previous_episode_id": episode.previous_episode_id,
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


# --- the episode lifecycle from triage -----------------------------------------------------------


def _version(data: Mapping[str, Any]) -> int | None:
    value = data.get("version")
    return int(value) if value is not None else None


def _stale(applied: int, data: Mapping[str, Any]) -> bool:
    """An event no newer than the referral version already applied (a redelivery, or overtaken)."""
    version = _version(data)
    return version is not None and version <= applied


def _applied(state: ReferralState, data: Mapping[str, Any], episode: Episode | None = None) -> None:
    state.version = max(state.version or 0, _version(data) or 0)
    state.updated_at = utcnow()
    if episode is not None and episode.referral_id == state.referral_id:
        episode.referral_version = state.version


def _decided_at(data: Mapping[str, Any], event: CloudEvent) -> datetime:
    """When triage decided: the decision's own time, else the event's (never when it is processed)."""
    return _at(data.get("decided_at")) or event.time or utcnow()


@dataclass
class _Claimed:
    """A batch's referral states and the episodes opened for them, locked by `prepare_lifecycle`
    (None: none yet); kept current as the batch's handlers make them."""

    states: dict[str, ReferralState | None]
    episodes: dict[str, Episode | None]  # by referral id


_CLAIMED = "cmh_careplan_claimed"  # session.info key


async def prepare_lifecycle(session: AsyncSession, events: Sequence[CloudEvent]) -> None:
    """The consumer's `prepare`: a batch's referral states, then their episodes, locked in one query
    each and in key order (as a lone event's handler locks its state, then its episode), instead of
    a locking SELECT or two per event (py-spy: `_claim` and `apply_prioritised` ~45 %)."""
    ids = sorted(
        {str(event.data["referral_id"]) for event in events if event.data and event.data.get("referral_id")}
    )
    if not ids:
        return
    states = {
        state.referral_id: state
        for state in await session.scalars(
            select(ReferralState)
            .where(ReferralState.referral_id.in_(ids))
            .order_by(ReferralState.referral_id)
            .with_for_update()
        )
    }
    episodes = {
        episode.referral_id: episode
        for episode in await session.scalars(
            select(Episode).where(Episode.referral_id.in_(ids)).order_by(Episode.id).with_for_update()
        )
    }
    session.info[_CLAIMED] = _Claimed(
        {key: states.get(key) for key in ids}, {key: episodes.get(key) for key in ids}
    )


async def _own_episode(session: AsyncSession, referral_id: str, *, lock: bool) -> Episode | None:
    """The episode opened for a referral (locked if asked, or already by `prepare_lifecycle`)."""
    claimed: _Claimed | None = session.info.get(_CLAIMED)
    if claimed is not None and referral_id in claimed.episodes:
        return claimed.episodes[referral_id]
    query = select(Episode).where(Episode.referral_id == referral_id)
    return await session.scalar(query.with_for_update() if lock else query)


async def _claim(session: AsyncSession, data: Mapping[str, Any]) -> ReferralState:
    """The referral's state, locked (PostgreSQL) or created: a second replica applying an event of
    the same referral waits for this one, or fails its insert and retries (the consumer's backoff)."""
    claimed: _Claimed | None = session.info.get(_CLAIMED)
    referral_id = data["referral_id"]
    if claimed is not None and referral_id in claimed.states:
        state = claimed.states[referral_id]
    else:
        state = await session.get(ReferralState, referral_id, with_for_update=True)
    if state is not None:
        return state
    own = await _own_episode(session, referral_id, lock=False)
    state = ReferralState(
        referral_id=referral_id, person_id=data["person_id"], linked=False,
        episode_id=own.id if own else None, version=own.referral_version if own else 0, updated_at=utcnow(),
    )  # fmt: skip
    session.add(state)
    await session.flush()
    if claimed is not None:
        claimed.states[referral_id] = state
    return state


async def _episode_of(session: AsyncSession, state: ReferralState) -> Episode | None:
    if state.episode_id is None:
        return None
    return await session.get(Episode, state.episode_id, with_for_update=True)


LIFECYCLE_SUBJECTS = (
    "cmh.triage.referral.routed", "cmh.triage.referral.transferred", "cmh.triage.referral.closed",
    "cmh.triage.referral.prioritised",
)  # fmt: skip


async def apply_referral_event(session: AsyncSession, event: CloudEvent) -> None:
    """Triage's referral lifecycle on one durable consumer, so one referral's events arrive in the
    order triage published them (the handlers also stand any order: see `ReferralState`)."""
    verb = event.type.rsplit(".", 1)[-1]
    if verb == "routed":
        await open_from_routed(session, event)
    elif verb == "transferred":
        await apply_transferred(session, event)
    elif verb == "closed":
        await apply_closed(session, event)
    elif verb == "prioritised":
        await apply_prioritised(session, event)


async def apply_prioritised(session: AsyncSession, event: CloudEvent) -> None:
    """A clinician's change of priority reaches the referral's open episode. It does not advance
    the referral version applied: a decision can publish `prioritised` and `routed` with one
    version, and the routing must still open the episode."""
    data = event.data or {}
    if data.get("priority") is None:
        return
    episode = await _own_episode(session, data["referral_id"], lock=True)
    version = _version(data)
    if (
        episode is None
        or episode.status != "open"
        or (version is not None and version < episode.referral_version)
    ):
        return
    episode.priority = int(data["priority"])


async def open_from_routed(session: AsyncSession, event: CloudEvent) -> None:
    """One episode per routed referral to a clinical team (a redelivery finds it and stops). A
    referral for a person who already has an open episode at the same team is linked to that
    episode as new information instead; a referral triage has already closed never opens one."""
    data = event.data or {}
    if not opens_episode(data.get("route")):
        return
    state = await _claim(session, data)
    if state.closed_at is not None or state.episode_id is not None:
        return  # closed before it could open one, or opened / linked already (a redelivery)
    await _open_or_link(session, event, data, state)


async def _open_or_link(
    session: AsyncSession, event: CloudEvent, data: Mapping[str, Any], state: ReferralState
) -> Episode:
    at, actor = _decided_at(data, event), Actor.from_event(data)
    team_id = data.get("team_id")
    open_here = await _open_at(session, data["person_id"], team_id, other_than=data["referral_id"])
    if open_here is not None:
        _link_referral(session, open_here, data, at, actor)
        state.episode_id, state.linked = open_here.id, True
        _applied(state, data)
        return open_here
    episode = await _open_episode(session, data, at, actor)
    state.episode_id, state.linked = episode.id, False
    _applied(state, data, episode)
    return episode


def _link_referral(
    session: AsyncSession, episode: Episode, data: Mapping[str, Any], at: datetime, actor: Actor
) -> None:
    """A second referral for the team's open episode: new information in it, not a second episode
    (the clocks of the episode go on as they were)."""
    record(
        session, episode, "new_referral", max(at, episode.opened_at), actor,
        {
            "linked_referral_id": data["referral_id"], "route": data.get("route"), "priority": data.get("priority"),
            "source": data.get("source"), "referring_organisation": data.get("referring_organisation"),
            "received_at": data.get("received_at"),
        },
        publish=False,
    )  # fmt: skip
    add_event(
        session,
        make_event(
            SERVICE,
            "episode",
            "linked",
            {**_episode_event(episode), "linked_referral_id": data["referral_id"]},
        ),
    )


async def _open_episode(
    session: AsyncSession, data: Mapping[str, Any], at: datetime, actor: Actor
) -> Episode:
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
    opened_at = max(at, received_at)
    named_worker = (linked.named_worker_id if linked else None) or data.get("named_worker_id")
    episode = Episode(
        id=str(uuid.uuid4()),
        referral_id=data["referral_id"],
        person_id=data["person_id"],
        team_id=data.get("team_id"),
        network_id=data.get("network_id"),
        place_key=data.get("place"),
        owner_org=await team_owner(session, data.get("team_id"), london_date(opened_at)),
        referring_org=data.get("referring_organisation"),
        pathway=data.get("pathway"),
        route=data["route"],
        priority=data["priority"],
        status="open",
        opened_at=opened_at,
        referral_received_at=received_at,
        spell_started_at=spell,
        age_at_referral=data["age"],
        # Re-access: the same named worker, and the previous assessment and plan linked.
        named_worker_id=named_worker,
        previous_episode_id=linked.id if linked else None,
        # Re-access: the linked assessment stands as the first, so the plan clock starts now.
        first_assessment_completed_at=reaccess_plan_clock_start(opened_at) if linked else None,
        referral_version=_version(data) or 0,
        version=1,
    )
    session.add(episode)
    claimed: _Claimed | None = session.info.get(_CLAIMED)
    if claimed is not None:
        claimed.episodes[episode.referral_id] = episode
    opened = {
        **_episode_event(episode),
        "reaccess": linked is not None,
        "opened_at": opened_at.isoformat(),
        "plan_clock_started_at": (
            episode.first_assessment_completed_at.isoformat()
            if episode.first_assessment_completed_at
            else None
        ),
    }
    add_event(session, make_event(SERVICE, "episode", "opened", opened))
    summary: dict[str, Any] = {"episode_id": episode.id, "team_id": episode.team_id, "route": episode.route}
    if linked is not None:
        summary["linked_episode_id"] = linked.id
        summary["named_worker_id"] = named_worker
        summary["note"] = "re-access: previous assessment and plan linked, no new assessment"
    _journey(session, f"episode-opened:{episode.id}", episode.person_id, opened_at, "episode_opened", summary)
    if linked is not None and named_worker is not None:
        # The named worker carried over is an assignment like any other: who made it is kept.
        record(
            session, episode, "named_worker", opened_at, actor,
            {"practitioner_id": named_worker, "linked_from_episode_id": linked.id},
        )  # fmt: skip
    return episode


async def apply_transferred(session: AsyncSession, event: CloudEvent) -> None:
    """Triage moved a routed referral to another team or route: its open episode follows (both
    clocks continue unchanged; the named worker stays only if a practitioner of the new team). A
    referral without an episode of its own opens one as a routed one would (if the route is
    clinical); a discharged episode is left as it is."""
    data = event.data or {}
    state = await _claim(session, data)
    if state.closed_at is not None or _stale(state.version, data):
        return
    episode = await _episode_of(session, state)
    if episode is not None and not state.linked:
        if episode.status != "open":
            _applied(state, data, episode)
            log.info("transfer not applied: the episode is already discharged", extra={"event_id": event.id})
            return
        joined = await _open_at(
            session, episode.person_id, data.get("team_id"), other_than=episode.referral_id
        )
        if joined is not None:
            _join(session, episode, joined, data, event, state)
            return
        await _transfer(session, episode, data, event)
        _applied(state, data, episode)
        return
    if episode is not None and episode.status == "open" and episode.team_id == data.get("team_id"):
        _applied(state, data)
        return  # still new information in the same team's open episode
    if not opens_episode(data.get("route")):
        _applied(state, data)
        return
    # No episode of its own (or it leaves the episode it informed, whose record stays as history).
    state.episode_id = None
    await _open_or_link(session, event, data, state)


async def _open_at(
    session: AsyncSession, person_id: str, team_id: str | None, *, other_than: str
) -> Episode | None:
    """The person's open episode at a team from a referral other than `other_than`, if any (locked)."""
    if team_id is None:
        return None
    return await session.scalar(
        select(Episode)
        .where(
            Episode.person_id == person_id, Episode.status == "open", Episode.team_id == team_id,
            Episode.referral_id != other_than,
        )
        .order_by(Episode.opened_at.desc(), Episode.id)
        .limit(1)
        .with_for_update()
    )  # fmt: skip


def _join(
    session: AsyncSession,
    episode: Episode,
    joined: Episode,
    data: Mapping[str, Any],
    event: CloudEvent,
    state: ReferralState,
) -> None:
    """A transfer into a team where the person already has an open episode: the referral joins that
    episode as new information, as a second referral routed there would, and its own episode ends
    (`transferred`), so nobody has two open episodes, two clocks and two named workers at one team
    (HAZ-043). The receiving team's episode and its clocks go on unchanged."""
    at = max(_decided_at(data, event), episode.opened_at)
    actor = Actor.from_event(data)
    _end(
        session, episode, at, DischargeReason.TRANSFERRED, actor, {"joined_episode_id": joined.id},
        reaccess_at=reaccess_until(at), now=utcnow(),
    )  # fmt: skip
    _link_referral(session, joined, data, at, actor)
    state.episode_id, state.linked = joined.id, True
    _applied(state, data)


async def _transfer(
    session: AsyncSession, episode: Episode, data: Mapping[str, Any], event: CloudEvent
) -> None:
    at, actor = _decided_at(data, event), Actor.from_event(data)
    at = max(at, episode.opened_at)
    previous_team, previous_route = episode.team_id, episode.route
    day = london_date(at)
    episode.team_id = data.get("team_id")
    episode.network_id = data.get("network_id")
    episode.place_key = data.get("place")
    episode.pathway = data.get("pathway") or episode.pathway
    episode.route = data.get("route") or episode.route
    if data.get("priority") is not None:
        episode.priority = int(data["priority"])
    episode.owner_org = await team_owner(session, episode.team_id, day)
    # Both four-week clocks continue unchanged: nothing here touches the episode's clock facts.
    of_receiving_team = episode.named_worker_id is not None and await is_team_practitioner(
        session, episode.named_worker_id, episode.team_id, day
    )
    episode.named_worker_id, cleared = named_worker_on_transfer(
        episode.named_worker_id, of_receiving_team=of_receiving_team
    )
    record(
        session, episode, "transfer", at, actor,
        {
            "from_team_id": previous_team, "to_team_id": episode.team_id, "from_route": previous_route,
            "to_route": episode.route, "transfer_reason": data.get("reason"),
            "named_worker_kept": episode.named_worker_id, "named_worker_cleared": cleared,
            "clocks": "both four-week clocks continue unchanged",
        },
        publish=False,
    )  # fmt: skip
    add_event(
        session,
        make_event(
            SERVICE, "episode", "transferred",
            {
                # Not triage's free-text reason: no consumer reads it (it stays in the transfer record).
                **_episode_event(episode), "previous_team_id": previous_team, "previous_route": previous_route,
                "transferred_at": at.isoformat(),
                "named_worker_cleared": cleared is not None, "clocks": clocks(episode, at),
            },
        ),
    )  # fmt: skip


async def apply_closed(session: AsyncSession, event: CloudEvent) -> None:
    """Triage closed a referral. With `episode_rule: end_episode` its open episode ends (discharged,
    `referral_closed`, at the decision's time, the triage reason kept in the discharge record) and
    the four-week clocks stop; the referral is remembered as closed, so a late routed or
    transferred event never opens an episode for it. A linked referral's closing leaves the
    episode it informed (another referral's) as it is."""
    data = event.data or {}
    state = await _claim(session, data)
    at = _decided_at(data, event)
    if state.closed_at is not None or _stale(state.version, data):
        return
    state.closed_at = at
    episode = await _episode_of(session, state)
    _applied(state, data, episode)
    if episode is None or state.linked:
        return
    if episode.status != "open":
        log.info("closed referral: its episode is already discharged", extra={"event_id": event.id})
        return
    if data.get("episode_rule") != "end_episode":
        log.info("closed referral without end_episode: its episode stays open", extra={"event_id": event.id})
        return
    now = utcnow()
    ended = max(at, episode.opened_at)
    _end(
        session, episode, ended, DischargeReason.REFERRAL_CLOSED, Actor.from_event(data),
        {"triage_reason": data.get("reason")},
        # No re-access window: nobody was discharged from care, and a new referral is screened afresh.
        reaccess_at=ended, now=now,
    )  # fmt: skip
    await correct_clocks(session, episode, now)


# --- the journey from other services' events -----------------------------------------------------

JOURNEY_SUBJECTS = (
    "cmh.triage.referral.received", "cmh.triage.referral.routed", "cmh.triage.referral.signposted",
    "cmh.triage.referral.closed", "cmh.triage.referral.contacted", "cmh.triage.referral.transferred",
    "cmh.directory.handover.updated",
)  # fmt: skip
_JOURNEY_FACTS = (
    "referral_id",
    "route",
    "team_id",
    "previous_team_id",
    "priority",
    "decision",
    "state",
    "service_id",
    "source",
    "response_minutes",
    "episode_rule",
)


def journey_time(event: CloudEvent) -> datetime:
    """A step's clinical time: a referral when it was received, a first contact when it happened,
    a decision when it was decided, else when the event says it happened (never its processing)."""
    data = event.data or {}
    if event.type == "cmh.triage.referral.received":
        moment = _at(data.get("received_at"))
    elif event.type == "cmh.triage.referral.contacted":
        moment = _at(data.get("first_contact_at"))
    else:
        moment = _at(data.get("decided_at")) or _at(data.get("at"))
    return moment or event.time or utcnow()


# session.info key: which of a batch's events are in the journey already, read once by `prepare_journey`.
_JOURNEY_SEEN = "cmh_careplan_journey_seen"


async def prepare_journey(session: AsyncSession, events: Sequence[CloudEvent]) -> None:
    """The journey entries a batch's events already made, in one query (the consumer's `prepare`)
    instead of one lookup per event."""
    ids = [event.id for event in events]
    found = await session.scalars(select(JourneyEntry.source_id).where(JourneyEntry.source_id.in_(ids)))
    session.info[_JOURNEY_SEEN] = set(found)


async def journey_from_event(session: AsyncSession, event: CloudEvent) -> None:
    data = event.data or {}
    if not data.get("person_id"):
        return
    seen: set[str] | None = session.info.get(_JOURNEY_SEEN)
    if seen is not None:
        if event.id in seen:
            return
    elif await session.scalar(select(JourneyEntry.seq).where(JourneyEntry.source_id == event.id)):
        return
    kind = event.type.removeprefix("cmh.").replace(".", "_")
    summary = {key: data[key] for key in _JOURNEY_FACTS if data.get(key) is not None}
    if "services" in data:
        summary["services"] = [s.get("service_id") for s in data["services"]]
    _journey(session, event.id, data["person_id"], journey_time(event), kind, summary, event.time)


# --- recording -----------------------------------------------------------------------------------


async def _linked_from(session: AsyncSession, episode: Episode, body: Any) -> datetime | None:
    """A record linked from the previous episode: that episode's referral bounds its times."""
    linked_id = getattr(body, "linked_from_episode_id", None)
    if linked_id is None:
        return None
    if linked_id != episode.previous_episode_id:
        raise RuleRefused(
            "linked_from_episode_id", "records can be linked only from this episode's previous episode"
        )
    previous = await session.get(Episode, linked_id)
    if previous is None:
        raise RuleRefused("linked_from_episode_id", "the previous episode is not known here")
    return previous.referral_received_at


def _check_time(
    episode: Episode, at: datetime, field: str, now: datetime, kind: str, linked: datetime | None = None
) -> None:
    check_clinical_time(
        at, now=now, referral_received_at=episode.referral_received_at, field=field, kind=kind,
        opened_at=episode.opened_at, linked_from_received_at=linked,
    )  # fmt: skip


def _first(episode: Episode, name: str, at: datetime, linked: datetime | None = None) -> None:
    if linked is not None:
        return  # history brought forward from the previous episode never moves this one's clocks
    current = getattr(episode, name)
    if current is None or at < current:
        setattr(episode, name, at)


_RECORD_FACTS = (
    "attended", "mechanism", "tool", "score", "kind", "meaningful", "how_agreed", "reason", "practitioner_id",
    "breach_reason", "linked_referral_id", "linked_from_episode_id", "from_team_id", "to_team_id",
    "named_worker_cleared",
)  # fmt: skip


def record(
    session: AsyncSession,
    episode: Episode,
    kind: str,
    at: datetime,
    actor: Actor,
    data: dict[str, Any],
    *,
    publish: bool = True,
) -> None:
    """Keep a record (with who made it), its journey step and, unless the caller publishes its own,
    its `cmh.careplan.<kind>.recorded` event (no free text in the step or the event)."""
    recorded_at = utcnow()
    session.add(
        EpisodeRecord(
            episode_id=episode.id, kind=kind, at=at, recorded_at=recorded_at, recorded_by=actor.client_id,
            end_user_id=actor.end_user_id, end_user_role=actor.end_user_role, data=json.dumps(data, default=str),
        )
    )  # fmt: skip
    episode.version += 1
    facts_only = {k: v for k, v in data.items() if k in _RECORD_FACTS}
    _journey(
        session, f"{kind}:{episode.id}:{episode.version}", episode.person_id, at, kind,
        {"episode_id": episode.id, **facts_only}, recorded_at,
    )  # fmt: skip
    if publish:
        add_event(
            session,
            make_event(
                SERVICE, kind, "recorded", {**_episode_event(episode), "at": at.isoformat(), **facts_only}
            ),
        )


async def contact(session: AsyncSession, episode: Episode, body: Any, actor: Actor, now: datetime) -> None:
    linked = await _linked_from(session, episode, body)
    _check_time(episode, body.at, "at", now, "contact", linked)
    if body.attended:
        _first(episode, "first_attended_contact_at", body.at, linked)
    record(session, episode, "contact", body.at, actor, body.model_dump(mode="json"))


async def assessment(session: AsyncSession, episode: Episode, body: Any, actor: Actor, now: datetime) -> None:
    linked = await _linked_from(session, episode, body)
    _check_time(episode, body.started_at, "started_at", now, "assessment", linked)
    if body.completed_at is not None:
        _check_time(episode, body.completed_at, "completed_at", now, "assessment", linked)
        if body.completed_at < body.started_at:
            raise RuleRefused("completed_at", "an assessment cannot be completed before it started")
        _first(episode, "first_assessment_completed_at", body.completed_at, linked)
        if body.meaningful:
            _first(episode, "first_meaningful_assessment_at", body.completed_at, linked)
    _first(episode, "assessment_started_at", body.started_at, linked)
    record(
        session,
        episode,
        "assessment",
        body.completed_at or body.started_at,
        actor,
        body.model_dump(mode="json"),
    )


async def outcome_measure(
    session: AsyncSession, episode: Episode, body: Any, actor: Actor, now: datetime
) -> None:
    linked = await _linked_from(session, episode, body)
    _check_time(episode, body.at, "at", now, "outcome_measure", linked)
    _first(episode, "first_outcome_measure_at", body.at, linked)
    record(session, episode, "outcome_measure", body.at, actor, body.model_dump(mode="json"))


async def intervention(
    session: AsyncSession, episode: Episode, body: Any, actor: Actor, now: datetime
) -> None:
    linked = await _linked_from(session, episode, body)
    _check_time(episode, body.at, "at", now, "intervention", linked)
    _first(episode, "first_intervention_at", body.at, linked)
    record(session, episode, "intervention", body.at, actor, body.model_dump(mode="json"))


async def advice(session: AsyncSession, episode: Episode, body: Any, actor: Actor, now: datetime) -> None:
    linked = await _linked_from(session, episode, body)
    _check_time(episode, body.at, "at", now, "advice", linked)
    _first(episode, "advice_or_signposting_at", body.at, linked)
    record(session, episode, "advice", body.at, actor, body.model_dump(mode="json"))


async def plan(session: AsyncSession, episode: Episode, body: Any, actor: Actor, now: datetime) -> None:
    linked = await _linked_from(session, episode, body)
    _check_time(episode, body.at, "at", now, "plan", linked)
    record(session, episode, "plan", body.at, actor, body.model_dump(mode="json"))


async def agreement(
    session: AsyncSession, episode: Episode, body: Any, actor: Actor, now: datetime, has_plan: bool
) -> None:
    _check_time(episode, body.agreed_at, "agreed_at", now, "plan_agreement")
    if not has_plan:
        raise RuleRefused("agreed_at", "record the care plan before its agreement")
    check_plan_agreement(
        facts(episode), body.agreed_at, breach_reason=body.breach_reason, breach_text=body.breach_text,
        declined_to_sign_reason=body.declined_to_sign_reason, how_agreed=body.how_agreed,
    )  # fmt: skip
    # The first agreement, or one dated before it (a late entry), stops the clock.
    first = episode.plan_agreed_at is None or body.agreed_at < episode.plan_agreed_at
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


async def review(session: AsyncSession, episode: Episode, body: Any, actor: Actor, now: datetime) -> None:
    linked = await _linked_from(session, episode, body)
    _check_time(episode, body.at, "at", now, "review", linked)
    record(session, episode, "review", body.at, actor, body.model_dump(mode="json"))


def assign_named_worker(
    session: AsyncSession, episode: Episode, practitioner_id: str, actor: Actor, now: datetime
) -> None:
    episode.named_worker_id = practitioner_id
    record(session, episode, "named_worker", now, actor, {"practitioner_id": practitioner_id})


def discharge(session: AsyncSession, episode: Episode, body: Any, actor: Actor, now: datetime) -> None:
    if episode.status != "open":
        raise RuleRefused("at", "this episode is already discharged")
    _check_time(episode, body.at, "at", now, "discharge")
    check_discharge(facts(episode), reason=body.reason, without_plan_reason=body.without_plan_reason)
    _end(
        session, episode, body.at, body.reason, actor, {},
        reaccess_at=reaccess_until(body.at, body.reaccess_months), now=now,
    )  # fmt: skip


def _end(
    session: AsyncSession,
    episode: Episode,
    at: datetime,
    reason: DischargeReason,
    actor: Actor,
    extra: dict[str, Any],
    *,
    reaccess_at: datetime,
    now: datetime,
) -> None:
    """Discharge: the episode ends at `at`, its clocks stop there, and triage, reporting and notify
    hear `cmh.careplan.episode.discharged`."""
    episode.status = "discharged"
    episode.discharged_at = at
    episode.discharge_reason = reason.value
    episode.reaccess_until = reaccess_at
    record(session, episode, "discharge", at, actor, {"reason": reason.value, **extra})
    add_event(
        session,
        make_event(
            SERVICE,
            "episode",
            "discharged",
            {
                **_episode_event(episode),
                "discharged_at": at.isoformat(),
                "reaccess_until": reaccess_at.isoformat(),
                "reason": reason.value,
                "clocks": clocks(episode, at),
            },
        ),
    )


# --- late entries: a clock event the facts no longer support is withdrawn -------------------------


async def correct_clocks(session: AsyncSession, episode: Episode, now: datetime) -> list[str]:
    """After a change (a back-dated agreement, assessment or discharge), withdraw each at-risk or
    breach event already sent that the facts no longer support: `cmh.careplan.clock.corrected`
    (`withdrawn` names it) and a journey step, once each. Returns what was withdrawn."""
    rows = (
        await session.scalars(
            select(ClockEventSent).where(
                ClockEventSent.episode_id == episode.id, ClockEventSent.withdrawn_at.is_(None)
            )
        )
    ).all()
    if not rows:
        return []
    by_event = {ClockEvent(row.event): row for row in rows}
    withdrawn = withdrawn_clock_events(facts(episode), now, by_event)
    for clock_event in withdrawn:
        by_event[clock_event].withdrawn_at = now
        add_event(
            session,
            make_event(
                SERVICE, "clock", "corrected",
                {**_episode_event(episode), "withdrawn": clock_event.value, "clocks": clocks(episode, now)},
            ),
        )  # fmt: skip
        _journey(
            session, f"clock-corrected-{clock_event.value}:{episode.id}", episode.person_id, now, "clock_corrected",
            {"episode_id": episode.id, "withdrawn": clock_event.value},
        )  # fmt: skip
    return [event.value for event in withdrawn]


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
                # Locked: a late entry (a back-dated agreement) and this scan never interleave, so a
                # breach is either not sent or sent before the entry that withdraws it.
                episode = await session.get(Episode, episode_id, with_for_update=True)
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
