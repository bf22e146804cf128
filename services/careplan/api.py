"""`/careplan`: episodes, what clinicians record in them, the two four-week clocks, the worklist,
and each person's journey. Writes (`careplan:write`) are bound to the organisation providing the
episode's team; reads need `careplan:read`; every access is audited."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Query
from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.clocks import TimeRefused, plan_clock
from contracts.timezones import london_date
from services.careplan import access, store
from services.careplan.domain import RuleRefused, WorklistItem, check_named_worker
from services.careplan.models import Episode, EpisodeRecord, JourneyEntry
from services.careplan.schemas import (
    CONTACT_EXAMPLE,
    PLAN_EXAMPLE,
    AdviceIn,
    AgreementIn,
    AssessmentIn,
    ContactIn,
    DischargeIn,
    EpisodeClocksOut,
    EpisodeOut,
    EpisodesOut,
    EpisodeWithRecordsOut,
    InterventionIn,
    JourneyOut,
    NamedWorkerIn,
    OutcomeMeasureIn,
    PlanIn,
    ReviewIn,
    WorklistOut,
)
from shared.audit import AuditAction, record_access, record_access_to
from shared.auth import Caller, requires
from shared.db import Database
from shared.deps import DatabaseDep, NowDep
from shared.errors import Problem, problems

router = APIRouter(prefix="/careplan", tags=["careplan"], responses=problems(401, 403, 422))
SERVICE = "careplan"
Entry = TypeVar("Entry", EpisodeRecord, JourneyEntry)


def _audit(
    session: AsyncSession,
    caller: Caller,
    action: AuditAction,
    records: Sequence[Any],
    resource: str = "Episode",
) -> None:
    record_access_to(session, caller, records, service=SERVICE, action=action, resource_type=resource)


def episode_out(episode: Episode, now: datetime) -> dict[str, Any]:
    return {
        "id": episode.id,
        "referral_id": episode.referral_id,
        "person_id": episode.person_id,
        "status": episode.status,
        "team_id": episode.team_id,
        "network_id": episode.network_id,
        "place": episode.place_key,
        "pathway": episode.pathway,
        "route": episode.route,
        "priority": episode.priority,
        "named_worker_id": episode.named_worker_id,
        "previous_episode_id": episode.previous_episode_id,
        "opened_at": episode.opened_at.isoformat(),
        "referral_received_at": episode.referral_received_at.isoformat(),
        "discharged_at": episode.discharged_at.isoformat() if episode.discharged_at else None,
        "reaccess_until": episode.reaccess_until.isoformat() if episode.reaccess_until else None,
        "clocks": store.clocks(episode, now),
        "version": episode.version,
    }


NO_SUCH_EPISODE = Problem(404, "No such episode", type_slug="not-found")


async def _episode(
    session: AsyncSession, caller: Caller, episode_id: str, resource: str, *, lock: bool = False
) -> Episode:
    """The episode if the caller may read it; otherwise 404, whether it is missing or refused (a
    refusal audited as denied)."""
    return await access.episode_for(session, caller, episode_id, resource, missing=NO_SUCH_EPISODE, lock=lock)


async def _in_clinical_order(session: AsyncSession, model: type[Entry], *where: Any) -> Sequence[Entry]:
    """An episode's records or a person's journey, by clinical time, then when entered, then entry."""
    query = select(model).where(*where).order_by(model.at, model.recorded_at, model.seq)
    return (await session.scalars(query)).all()


@router.get("/episodes", response_model=EpisodesOut, summary="Find episodes by referral or person")
async def find_episodes(
    db: DatabaseDep,
    now: NowDep,
    caller: Caller = requires("careplan:read"),
    referral_id: Annotated[str | None, Query(max_length=64)] = None,
    person_id: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[str | None, Query(pattern="^(open|discharged)$")] = None,
) -> dict[str, Any]:
    if referral_id is None and person_id is None:
        raise Problem(422, "Say whose episodes", "Give referral_id or person_id.", type_slug="validation")
    conditions = [access.readable_episodes(caller)]
    for column, value in (
        (Episode.referral_id, referral_id),
        (Episode.person_id, person_id),
        (Episode.status, status),
    ):
        if value is not None:
            conditions.append(column == value)
    async with db.transaction() as session:
        episodes = (
            await session.scalars(select(Episode).where(*conditions).order_by(Episode.opened_at).limit(200))
        ).all()
        _audit(session, caller, AuditAction.SEARCH, list(episodes))
    return {"items": [episode_out(e, now) for e in episodes]}


@router.get(
    "/episodes/{episode_id}",
    response_model=EpisodeWithRecordsOut,
    responses=problems(404),
    summary="An episode with both clocks",
)
async def read_episode(
    episode_id: str, db: DatabaseDep, now: NowDep, caller: Caller = requires("careplan:read")
) -> dict[str, Any]:
    async with db.transaction() as session:
        episode = await _episode(session, caller, episode_id, "Episode")
        records = await _in_clinical_order(session, EpisodeRecord, EpisodeRecord.episode_id == episode_id)
        _audit(session, caller, AuditAction.READ, [episode])
    body = episode_out(episode, now)
    body["records"] = [record_out(r) for r in records]
    return body


def record_out(record: EpisodeRecord) -> dict[str, Any]:
    """A record with its clinical time, when it was entered, the client that recorded it, and the
    end user that client asserted (labelled as asserted: careplan does not verify it)."""
    return {
        "kind": record.kind,
        "at": record.at.isoformat(),
        "recorded_at": record.recorded_at.isoformat(),
        "recorded_by": record.recorded_by,
        **store.asserted_end_user(record.end_user_id, record.end_user_role),
        "data": json.loads(record.data),
    }


@router.get(
    "/episodes/{episode_id}/clocks",
    response_model=EpisodeClocksOut,
    responses=problems(404),
    summary="The plan clock (enforced) and the national clock (reported)",
)
async def episode_clocks(
    episode_id: str, db: DatabaseDep, now: NowDep, caller: Caller = requires("careplan:read")
) -> dict[str, Any]:
    async with db.transaction() as session:
        episode = await _episode(session, caller, episode_id, "EpisodeClocks")
        _audit(session, caller, AuditAction.READ, [episode], "EpisodeClocks")
    return {"episode_id": episode.id, **store.clocks(episode, now)}


async def _write(
    db: Database,
    now: datetime,
    caller: Caller,
    episode_id: str,
    work: Callable[[AsyncSession, Episode, datetime], Any],
) -> dict[str, Any]:
    # A refusal (missing, not readable, or the referrer, who reads but never writes) rolls back;
    # only its denial's audit entry is kept.
    async with db.transaction() as session:
        episode = await _episode(session, caller, episode_id, "Episode", lock=True)
        access.may_change(caller, episode)
        try:
            result = work(session, episode, now)
            if hasattr(result, "__await__"):
                await result
        except TimeRefused as refusal:  # a RuleRefused is answered as it is (the one Refusal)
            raise RuleRefused(refusal.field, refusal.message) from None
        # A late entry may have changed a clock's outcome: withdraw what no longer holds.
        await store.correct_clocks(session, episode, now)
        _audit(session, caller, AuditAction.UPDATE, [episode])
        return episode_out(episode, now)


@router.post(
    "/episodes/{episode_id}/contacts",
    response_model=EpisodeOut,
    responses=problems(404),
    summary="An attended or missed contact",
    description=(
        "Record a contact with the person in the episode: when, how, and whether they attended. The "
        "first attended contact moves the episode's national clock; answers the episode with its clocks."
    ),
)
async def add_contact(
    episode_id: str,
    body: Annotated[ContactIn, Body(openapi_examples={"attended": CONTACT_EXAMPLE})],
    db: DatabaseDep,
    now: NowDep,
    caller: Caller = requires("careplan:write"),
) -> dict[str, Any]:
    return await _write(
        db, now, caller, episode_id, lambda s, e, now: store.contact(s, e, body, store.Actor.of(caller), now)
    )


@router.post(
    "/episodes/{episode_id}/assessments",
    response_model=EpisodeOut,
    responses=problems(404),
    summary="An assessment started (and completed)",
)
async def add_assessment(
    episode_id: str,
    body: AssessmentIn,
    db: DatabaseDep,
    now: NowDep,
    caller: Caller = requires("careplan:write"),
) -> dict[str, Any]:
    return await _write(
        db,
        now,
        caller,
        episode_id,
        lambda s, e, now: store.assessment(s, e, body, store.Actor.of(caller), now),
    )


@router.post(
    "/episodes/{episode_id}/outcome-measures",
    response_model=EpisodeOut,
    responses=problems(404),
    summary="A baseline or follow-up outcome measure",
)
async def add_outcome(
    episode_id: str,
    body: OutcomeMeasureIn,
    db: DatabaseDep,
    now: NowDep,
    caller: Caller = requires("careplan:write"),
) -> dict[str, Any]:
    return await _write(
        db,
        now,
        caller,
        episode_id,
        lambda s, e, now: store.outcome_measure(s, e, body, store.Actor.of(caller), now),
    )


@router.post(
    "/episodes/{episode_id}/interventions",
    response_model=EpisodeOut,
    responses=problems(404),
    summary="An intervention",
)
async def add_intervention(
    episode_id: str,
    body: InterventionIn,
    db: DatabaseDep,
    now: NowDep,
    caller: Caller = requires("careplan:write"),
) -> dict[str, Any]:
    return await _write(
        db,
        now,
        caller,
        episode_id,
        lambda s, e, now: store.intervention(s, e, body, store.Actor.of(caller), now),
    )


@router.post(
    "/episodes/{episode_id}/advice",
    response_model=EpisodeOut,
    responses=problems(404),
    summary="Advice or signposting (stops a CYP national clock)",
)
async def add_advice(
    episode_id: str, body: AdviceIn, db: DatabaseDep, now: NowDep, caller: Caller = requires("careplan:write")
) -> dict[str, Any]:
    return await _write(
        db, now, caller, episode_id, lambda s, e, now: store.advice(s, e, body, store.Actor.of(caller), now)
    )


@router.post(
    "/episodes/{episode_id}/plans",
    response_model=EpisodeOut,
    responses=problems(404),
    summary="A personalised care plan",
    description=(
        "Write the person's personalised care plan: needs, goals in their own words, the crisis and "
        "contingency plans, who does what and when it is reviewed. It stays a draft until the person "
        "agrees it (`/plans/agreement`), which stops the plan clock."
    ),
)
async def add_plan(
    episode_id: str,
    body: Annotated[PlanIn, Body(openapi_examples={"plan": PLAN_EXAMPLE})],
    db: DatabaseDep,
    now: NowDep,
    caller: Caller = requires("careplan:write"),
) -> dict[str, Any]:
    return await _write(
        db, now, caller, episode_id, lambda s, e, now: store.plan(s, e, body, store.Actor.of(caller), now)
    )


@router.post(
    "/episodes/{episode_id}/plans/agreement",
    response_model=EpisodeOut,
    responses=problems(404),
    summary="The person agrees the plan (stops the plan clock)",
)
async def agree_plan(
    episode_id: str,
    body: AgreementIn,
    db: DatabaseDep,
    now: NowDep,
    caller: Caller = requires("careplan:write"),
) -> dict[str, Any]:
    async def work(session: AsyncSession, episode: Episode, now: datetime) -> None:
        has_plan = await session.scalar(
            select(EpisodeRecord.seq)
            .where(EpisodeRecord.episode_id == episode.id, EpisodeRecord.kind == "plan")
            .limit(1)
        )
        await store.agreement(session, episode, body, store.Actor.of(caller), now, has_plan is not None)

    return await _write(db, now, caller, episode_id, work)


@router.post(
    "/episodes/{episode_id}/reviews",
    response_model=EpisodeOut,
    responses=problems(404),
    summary="A plan review",
)
async def add_review(
    episode_id: str, body: ReviewIn, db: DatabaseDep, now: NowDep, caller: Caller = requires("careplan:write")
) -> dict[str, Any]:
    return await _write(
        db, now, caller, episode_id, lambda s, e, now: store.review(s, e, body, store.Actor.of(caller), now)
    )


@router.put(
    "/episodes/{episode_id}/named-worker",
    response_model=EpisodeOut,
    responses=problems(404),
    summary="Assign the named worker (a practitioner of the team)",
)
async def named_worker(
    episode_id: str,
    body: NamedWorkerIn,
    db: DatabaseDep,
    now: NowDep,
    caller: Caller = requires("careplan:write"),
) -> dict[str, Any]:
    async def work(session: AsyncSession, episode: Episode, now: datetime) -> None:
        check_named_worker(
            of_team=await store.is_team_practitioner(
                session, body.practitioner_id, episode.team_id, london_date(now)
            )
        )
        store.assign_named_worker(session, episode, body.practitioner_id, store.Actor.of(caller), now)

    return await _write(db, now, caller, episode_id, work)


@router.post(
    "/episodes/{episode_id}/discharge",
    response_model=EpisodeOut,
    responses=problems(404),
    summary="Discharge (without an agreed plan needs a reason)",
)
async def discharge(
    episode_id: str,
    body: DischargeIn,
    db: DatabaseDep,
    now: NowDep,
    caller: Caller = requires("careplan:write"),
) -> dict[str, Any]:
    return await _write(
        db,
        now,
        caller,
        episode_id,
        lambda s, e, now: store.discharge(s, e, body, store.Actor.of(caller), now),
    )


WORKLIST_MAX_PER_PAGE = 500


def worklist_order(today: int) -> list[Any]:
    """`domain.order_worklist` in SQL: running plan clocks first, fewest days remaining first (days
    remaining is 28 minus the London days since the clock's start day, never counting a start
    later than today, so the start day orders them), ties by when opened then episode id; open
    episodes with no running clock (not started, or a plan agreed) last, by when opened then id."""
    no_clock = Episode.plan_clock_day.is_(None)
    start_day = case((Episode.plan_clock_day > today, today), else_=Episode.plan_clock_day)
    return [no_clock, func.coalesce(start_day, 0), Episode.opened_at, Episode.id]  # false (0) sorts first


@router.get(
    "/worklist",
    response_model=WorklistOut,
    summary="Open episodes by days remaining on the plan clock, paged",
)
async def worklist(
    db: DatabaseDep,
    now: NowDep,
    caller: Caller = requires("careplan:read"),
    team_id: Annotated[str | None, Query(max_length=64)] = None,
    network_id: Annotated[str | None, Query(max_length=64)] = None,
    place: Annotated[str | None, Query(max_length=64)] = None,
    named_worker_id: Annotated[str | None, Query(max_length=64)] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=WORKLIST_MAX_PER_PAGE)] = 100,
) -> dict[str, Any]:
    """Ordered and paged in the database, so the most urgent cases are on page 1 however many
    episodes are open; `total` is how many open episodes match."""
    conditions = [Episode.status == "open", access.readable_episodes(caller)]
    for column, value in (
        (Episode.team_id, team_id),
        (Episode.network_id, network_id),
        (Episode.place_key, place),
        (Episode.named_worker_id, named_worker_id),
    ):
        if value is not None:
            conditions.append(column == value)
    today = london_date(now).toordinal()
    async with db.transaction() as session:
        total = int(await session.scalar(select(func.count()).select_from(Episode).where(*conditions)) or 0)
        episodes = (
            await session.scalars(
                select(Episode)
                .where(*conditions)
                .order_by(*worklist_order(today))
                .offset((page - 1) * per_page)
                .limit(per_page)
            )
        ).all()
        _audit(session, caller, AuditAction.SEARCH, list(episodes), "Worklist")
    items = []
    for episode in episodes:
        clock = plan_clock(store.facts(episode), now)
        item = WorklistItem(episode.id, clock.days_remaining, clock.state, episode.opened_at)
        items.append(
            {
                "episode_id": item.episode_id,
                "person_id": episode.person_id,
                "team_id": episode.team_id,
                "named_worker_id": episode.named_worker_id,
                "route": episode.route,
                "opened_at": episode.opened_at.isoformat(),
                "days_remaining": item.days_remaining,
                "state": item.state.value,
                "at_risk": item.state.value == "at_risk",
                "breached": item.state.value == "breached",
                # A re-access: back with the named worker, the previous episode linked.
                "reaccess": episode.previous_episode_id is not None,
                "previous_episode_id": episode.previous_episode_id,
            }
        )
    return {"as_of": now.isoformat(), "page": page, "per_page": per_page, "total": total, "items": items}


@router.get(
    "/people/{person_id}/journey",
    response_model=JourneyOut,
    responses=problems(404),
    summary="One timeline: referrals, decisions, episodes, contacts, plans, discharges",
)
async def journey(
    person_id: str, db: DatabaseDep, caller: Caller = requires("careplan:read")
) -> dict[str, Any]:
    async with db.transaction() as session:
        if not await session.scalar(select(access.journey_visible(caller, person_id))):
            raise access.refuse_journey(caller, Problem(404, "No such person", type_slug="not-found"))
        entries = await _in_clinical_order(session, JourneyEntry, JourneyEntry.person_id == person_id)
        record_access(
            session,
            caller,
            service=SERVICE,
            action=AuditAction.READ,
            resource_type="Journey",
            person_ids=[person_id],
        )
    return {
        "person_id": person_id,
        # By clinical time, each step with when it was entered beside it.
        "entries": [
            {
                "at": e.at.isoformat(),
                "recorded_at": e.recorded_at.isoformat(),
                "kind": e.kind,
                **json.loads(e.summary),
            }
            for e in entries
        ],
    }
