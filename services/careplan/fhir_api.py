"""FHIR R4 (UK Core) views of careplan under `/careplan/fhir/`: EpisodeOfCare and CarePlan, read
and search, for partner EHRs (the organisation that made the referral) and the providing
organisation. The gateway serves them as `/fhir/<Type>`, resolving NHS-number searches into
`patient=Patient/<id>[,...]` first.

Organisation binding (`services/careplan/access.py`, the same rule as the native API): a caller
sees the episodes of referrals its organisation made and of teams it provides; another
organisation's episode is not found (404) and never in its search results, whatever its kind.
Every read and search is audited, as the native API's are; a read refused by the binding is
audited as denied. Answers are `application/fhir+json`; errors are OperationOutcome.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import ColumnElement, Select, and_, exists, false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.clocks import plan_clock
from contracts.timezones import london_date
from services.careplan import access, fhir, store
from services.careplan.models import Episode, EpisodeRecord, RegistryRecord
from shared import registry_events
from shared.audit import AuditAction, record_access_to
from shared.auth import Caller, requires
from shared.db import Database
from shared.deps import DatabaseDep, NowDep
from shared.fhir import (
    DateRange,
    Paging,
    check_format,
    fhir_base,
    fhir_response,
    invalid,
    not_found,
    paging,
    parse_date,
    reference_id,
    resource_response,
    searchset,
    split_token,
)

router = APIRouter(prefix="/careplan/fhir", tags=["careplan FHIR"])
SERVICE = "careplan"
OWN_BASE = "/careplan/fhir"
# Result parameters every search accepts besides its own.
CONTROL_PARAMS = frozenset({"_format", "_count", "_offset"})
EPISODE_OF_CARE_PARAMS = ("_id", "patient", "status", "incoming-referral", "date")
CARE_PLAN_PARAMS = ("_id", "patient", "status")
MAX_VALUES = 200  # values in one parameter (the gateway sends at most 100 patients)
PLAN_KINDS = ("plan", "plan_agreement", "review")

# Each FHIR status code searched for, as a condition on the episode.
_EPISODE_STATUS: dict[str, ColumnElement[bool]] = {
    fhir_code: Episode.status == native for native, fhir_code in fhir.EPISODE_OF_CARE_STATUS.items()
}
_AGREED = Episode.plan_agreed_at.is_not(None)
_CARE_PLAN_STATUS: dict[str, ColumnElement[bool]] = {
    "draft": and_(Episode.status == "open", ~_AGREED),
    "active": and_(Episode.status == "open", _AGREED),
    "completed": and_(Episode.status == "discharged", _AGREED),
    "revoked": and_(Episode.status == "discharged", ~_AGREED),
}
_HAS_PLAN = exists().where(EpisodeRecord.episode_id == Episode.id, EpisodeRecord.kind == "plan")


# --- organisation binding and audit --------------------------------------------------------------


def _audit(
    session: AsyncSession, caller: Caller, action: AuditAction, episodes: Sequence[Episode], resource: str
) -> None:
    record_access_to(session, caller, episodes, service=SERVICE, action=action, resource_type=resource)


# --- search parameters ---------------------------------------------------------------------------


def _search_params(request: Request, supported: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Each search parameter given (repeated: all must match) with its values (comma: any may
    match). Unknown parameters, modifiers and empty values are refused (400), never ignored: a
    partner must not take a wider answer for the one it asked. Values are never echoed back."""
    given = []
    for name, raw in request.query_params.multi_items():
        if name in CONTROL_PARAMS:
            continue
        if name not in supported:
            accepted = ", ".join([*supported, *sorted(CONTROL_PARAMS)])
            raise invalid(f"unsupported search parameter (or modifier); supported: {accepted}")
        values = [value.strip() for value in raw.split(",")]
        if not all(values):
            raise invalid(f"{name} needs a value (comma-separated values each need one)")
        if len(values) > MAX_VALUES:
            raise invalid(f"{name} takes at most {MAX_VALUES} values")
        given.append((name, values))
    return given


def _status(
    value: str, system: str, codes: frozenset[str], conditions: dict[str, ColumnElement[bool]]
) -> Any:
    given_system, code = split_token(value)
    if code not in codes:
        raise invalid(f"status codes are {', '.join(sorted(codes))}", code="code-invalid")
    if given_system is not None and given_system != system:
        return false()  # another code system's codes are not this resource's status
    return conditions.get(code, false())  # a valid status this suite never uses: nothing has it


def _opened(moment: DateRange) -> ColumnElement[bool]:
    """`date` searches when the episode opened (its period's start), with FHIR's prefixes."""
    column = Episode.opened_at
    if moment.prefix == "eq":
        return and_(column >= moment.start, column < moment.end)
    if moment.prefix == "ne":
        return or_(column < moment.start, column >= moment.end)
    if moment.prefix in ("gt", "sa"):
        return column >= moment.end
    if moment.prefix == "ge":
        return column >= moment.start
    if moment.prefix in ("lt", "eb"):
        return column < moment.start
    return column < moment.end  # le


def _condition(resource_type: str, name: str, value: str) -> Any:
    if name == "_id":
        return Episode.id == reference_id(value, resource_type)
    if name == "patient":
        return Episode.person_id == reference_id(value, "Patient")
    if name == "incoming-referral":
        return Episode.referral_id == reference_id(value, "ServiceRequest")
    if name == "date":
        return _opened(parse_date(value))
    if resource_type == "EpisodeOfCare":
        return _status(
            value, fhir.EPISODE_OF_CARE_STATUS_SYSTEM, fhir.EPISODE_OF_CARE_STATUS_CODES, _EPISODE_STATUS
        )
    return _status(value, fhir.CARE_PLAN_STATUS_SYSTEM, fhir.CARE_PLAN_STATUS_CODES, _CARE_PLAN_STATUS)


def _conditions(request: Request, resource_type: str, supported: Sequence[str]) -> list[Any]:
    return [
        or_(*(_condition(resource_type, name, value) for value in values))
        for name, values in _search_params(request, supported)
    ]


# --- what the resources need ---------------------------------------------------------------------


async def _last_updated(session: AsyncSession, episodes: Sequence[Episode]) -> dict[str, datetime]:
    """When each episode last changed: its latest record (every write keeps one), or its opening."""
    latest = {episode.id: episode.opened_at for episode in episodes}
    if latest:
        rows = await session.execute(
            select(EpisodeRecord.episode_id, func.max(EpisodeRecord.recorded_at))
            .where(EpisodeRecord.episode_id.in_(latest))
            .group_by(EpisodeRecord.episode_id)
        )
        for episode_id, recorded_at in rows.all():
            if recorded_at is not None and recorded_at > latest[episode_id]:
                latest[episode_id] = recorded_at
    return latest


async def _staff_ids(session: AsyncSession, practitioner_ids: set[str], now: datetime) -> dict[str, str]:
    """Named workers' staff ids (episodes hold the registry's practitioner ids), from the registry
    read-model as they stand today."""
    found: dict[str, str] = {}
    for practitioner_id in practitioner_ids:
        record = await session.get(RegistryRecord, practitioner_id)
        if record is None or record.kind != "practitioner":
            continue
        attributes = registry_events.valid_on(json.loads(record.timeline), london_date(now))
        if attributes and attributes.get("staff_id"):
            found[practitioner_id] = attributes["staff_id"]
    return found


async def _episodes_of_care(
    session: AsyncSession, episodes: Sequence[Episode], now: datetime
) -> list[dict[str, Any]]:
    updated = await _last_updated(session, episodes)
    staff = await _staff_ids(session, {e.named_worker_id for e in episodes if e.named_worker_id}, now)
    return [
        fhir.episode_of_care(
            episode,
            last_updated=updated[episode.id],
            plan_clock=plan_clock(store.facts(episode), now),
            care_manager_staff_id=staff.get(episode.named_worker_id or ""),
        )
        for episode in episodes
    ]


async def _care_plans(session: AsyncSession, episodes: Sequence[Episode]) -> list[dict[str, Any]]:
    """The CarePlans of episodes that have a plan (the latest plan, agreement and review by the
    order they were recorded in)."""
    updated = await _last_updated(session, episodes)
    latest: dict[tuple[str, str], EpisodeRecord] = {}
    if episodes:
        records = await session.scalars(
            select(EpisodeRecord)
            .where(EpisodeRecord.episode_id.in_([e.id for e in episodes]), EpisodeRecord.kind.in_(PLAN_KINDS))
            .order_by(EpisodeRecord.seq)
        )
        for record in records.all():
            latest[(record.episode_id, record.kind)] = record
    resources = []
    for episode in episodes:
        resource = fhir.care_plan(
            episode,
            latest.get((episode.id, "plan")),
            latest.get((episode.id, "plan_agreement")),
            latest.get((episode.id, "review")),
            last_updated=updated[episode.id],
        )
        if resource is not None:
            resources.append(resource)
    return resources


# --- interactions --------------------------------------------------------------------------------


async def _read(
    request: Request,
    db: Database,
    now: datetime,
    caller: Caller,
    resource_type: str,
    resource_id: str,
    build: Callable[[AsyncSession, Episode, datetime], Any],
) -> JSONResponse:
    check_format(request)
    async with db.transaction() as session:
        episode = await access.episode_for(
            session, caller, resource_id, resource_type, missing=not_found(resource_type, resource_id)
        )
        resource: dict[str, Any] | None = await build(session, episode, now)
        if resource is not None:
            _audit(session, caller, AuditAction.READ, [episode], resource_type)
    if resource is None:
        raise not_found(resource_type, resource_id)
    return resource_response(resource)


async def _search(
    request: Request,
    db: Database,
    now: datetime,
    caller: Caller,
    resource_type: str,
    supported: Sequence[str],
    build: Callable[[AsyncSession, Sequence[Episode], datetime], Any],
    *,
    only: Sequence[Any] = (),
) -> JSONResponse:
    check_format(request)
    page: Paging = paging(request)
    conditions = [*_conditions(request, resource_type, supported), access.readable_episodes(caller), *only]
    async with db.transaction() as session:
        total = int(await session.scalar(select(func.count()).select_from(Episode).where(*conditions)) or 0)
        episodes: Sequence[Episode] = []
        if page.count and page.offset < total:
            query: Select[tuple[Episode]] = (
                select(Episode)
                .where(*conditions)
                .order_by(Episode.opened_at, Episode.id)
                .offset(page.offset)
                .limit(page.count)
            )
            episodes = (await session.scalars(query)).all()
        resources = await build(session, episodes, now)
        _audit(session, caller, AuditAction.SEARCH, episodes, resource_type)
    return fhir_response(searchset(request, resources, base=fhir_base(request), total=total, page=page))


@router.get("/EpisodeOfCare/{episode_id}", summary="Read an EpisodeOfCare (an episode)")
async def read_episode_of_care(
    episode_id: str,
    request: Request,
    db: DatabaseDep,
    now: NowDep,
    caller: Caller = requires("careplan:read"),
) -> JSONResponse:
    async def build(session: AsyncSession, episode: Episode, now: datetime) -> dict[str, Any]:
        return (await _episodes_of_care(session, [episode], now))[0]

    return await _read(request, db, now, caller, "EpisodeOfCare", episode_id, build)


@router.get(
    "/EpisodeOfCare",
    summary="Search EpisodeOfCare: _id, patient, status, incoming-referral, date (when opened)",
)
async def search_episode_of_care(
    request: Request, db: DatabaseDep, now: NowDep, caller: Caller = requires("careplan:read")
) -> JSONResponse:
    return await _search(request, db, now, caller, "EpisodeOfCare", EPISODE_OF_CARE_PARAMS, _episodes_of_care)


@router.get("/CarePlan/{care_plan_id}", summary="Read a CarePlan (an episode's care plan; same id)")
async def read_care_plan(
    care_plan_id: str,
    request: Request,
    db: DatabaseDep,
    now: NowDep,
    caller: Caller = requires("careplan:read"),
) -> JSONResponse:
    async def build(session: AsyncSession, episode: Episode, now: datetime) -> dict[str, Any] | None:
        plans = await _care_plans(session, [episode])
        return plans[0] if plans else None

    return await _read(request, db, now, caller, "CarePlan", care_plan_id, build)


@router.get("/CarePlan", summary="Search CarePlan: _id, patient, status")
async def search_care_plan(
    request: Request, db: DatabaseDep, now: NowDep, caller: Caller = requires("careplan:read")
) -> JSONResponse:
    async def build(
        session: AsyncSession, episodes: Sequence[Episode], now: datetime
    ) -> list[dict[str, Any]]:
        return await _care_plans(session, episodes)

    return await _search(request, db, now, caller, "CarePlan", CARE_PLAN_PARAMS, build, only=[_HAS_PLAN])
