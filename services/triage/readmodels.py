"""What triage keeps from other services' events, so screening never calls them:

- the registry's places, networks, pathways and teams (whole timelines: screening uses the rows
  valid on the referral's date) → a coverage `Snapshot`;
- the directory's published partner services → `DirectoryServiceView`s for signposting;
- careplan's discharges → who may re-access their named worker's team, until when.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Mapping
from datetime import date, datetime, time
from typing import Any

from fastapi import FastAPI
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.coverage import PlaceView, Snapshot, snapshot_from
from contracts.events import (
    EpisodeDischarged,
    EpisodeFacts,
    RegistryRecordChanged,
    ServicePublished,
    ServiceWithdrawn,
)
from contracts.timezones import london_date
from services.triage.domain import DirectoryIndex, DirectoryServiceView
from services.triage.domain import Discharge as DischargeView
from services.triage.events import referral_facts
from services.triage.models import (
    DirectoryService,
    Discharge,
    Episode,
    ReadModelGeneration,
    Referral,
    RegistryRecord,
)
from shared import registry_events
from shared.background import BackgroundWorker
from shared.broker import backoff_delay
from shared.consumer import Subscription
from shared.deps import service_state
from shared.events import CloudEvent, make_event
from shared.outbox import add_event
from shared.service import refreeze_after_replacing
from shared.sqltypes import utcnow

SERVICE = "triage"
log = logging.getLogger("cmh.triage.readmodels")

REGISTRY_KINDS = ("place", "network", "pathway", "team")
DAY_INDEX = {"MO": 0, "TU": 1, "WE": 2, "TH": 3, "FR": 4, "SA": 5, "SU": 6}


# --- generations ---------------------------------------------------------------------------------

REGISTRY, DIRECTORY = "registry", "directory"


async def bump_generation(session: AsyncSession, name: str) -> int:
    """Advance a read-model's generation in the transaction applying a change to it. The row lock
    holds until commit, so a reader that sees generation g also sees every change numbered ≤ g."""
    generation = await session.scalar(
        update(ReadModelGeneration)
        .where(ReadModelGeneration.name == name)
        .values(generation=ReadModelGeneration.generation + 1)
        .returning(ReadModelGeneration.generation)
    )
    if generation is None:  # a database migrated without its seed rows: start the counter
        session.add(ReadModelGeneration(name=name, generation=1))
        generation = 1
    return int(generation)


# --- registry ------------------------------------------------------------------------------------


async def apply_registry_event(session: AsyncSession, event: CloudEvent) -> None:
    await registry_events.apply_registry_event(session, RegistryRecord, event.data or {}, REGISTRY_KINDS)
    await bump_generation(session, REGISTRY)


async def _snapshot(session: AsyncSession, day: date) -> Snapshot:
    records: dict[str, list[tuple[str, Mapping[str, Any]]]] = {kind: [] for kind in REGISTRY_KINDS}
    for record in (await session.scalars(select(RegistryRecord))).all():
        attributes = registry_events.valid_on(json.loads(record.timeline), day)
        if attributes is not None:
            records[record.kind].append((record.id, attributes))
    return snapshot_from(records)


# --- directory -----------------------------------------------------------------------------------


async def apply_directory_event(session: AsyncSession, event: CloudEvent) -> None:
    data = event.data or {}
    service = await session.get(DirectoryService, data["service_id"])
    version = data.get("version", 0)
    withdrawn = event.type.endswith(".withdrawn")
    if service is not None and service.version >= version and not (withdrawn and not service.withdrawn):
        return  # older, or already applied (a withdrawal without a version still withdraws)
    if service is None:
        if withdrawn:
            return  # never seen published: nothing to withdraw
        service = DirectoryService(service_id=data["service_id"], data="{}")
        session.add(service)
    service.version = max(version, service.version or 0)
    service.withdrawn = withdrawn
    if not withdrawn:
        service.data = json.dumps(data)
    service.generation = await bump_generation(session, DIRECTORY)


def directory_view(data: Mapping[str, Any], snapshot: Snapshot) -> DirectoryServiceView:
    """A published service as screening sees it; service areas naming a place cover its districts."""
    places = {place.key: place for place in snapshot.places}
    names = {place.name.lower(): place for place in snapshot.places}
    districts: set[str] = set()
    for area in data.get("service_areas", []):
        if area.get("extent"):
            districts.update(d.strip().upper() for d in area["extent"].split(",") if d.strip())
        uri = area.get("uri") or ""
        place = places.get(uri.rsplit("/place/", 1)[-1]) if "/place/" in uri else None
        place = place or names.get((area.get("name") or "").lower())
        if place is not None:
            districts.update(place.districts)
    slots = tuple(
        (DAY_INDEX[slot["day"]], time.fromisoformat(slot["opens"]), time.fromisoformat(slot["closes"]))
        for slot in data.get("slots", [])
        if slot.get("day") in DAY_INDEX
    )
    return DirectoryServiceView(
        service_id=data["service_id"],
        name=data["name"],
        organization_name=data.get("organization_name", ""),
        needs=frozenset(n["code"] for n in data.get("needs", []) if n.get("code")),
        districts=frozenset(districts),
        has_service_area=bool(data.get("service_areas")),
        minimum_age=data.get("minimum_age"),
        maximum_age=data.get("maximum_age"),
        slots=slots,
        active=data.get("status", "active") == "active",
    )


DIRECTORY_DURABLE = "triage-directory"


# --- what screening reads ------------------------------------------------------------------------


class ScreeningModels:
    """The coverage snapshot (by day) and the indexed partner services that screening reads, kept
    in memory between referrals. Whether they are current is one primary-key read of the
    generations, so every replica sees what any replica's consumer applied; a changed directory
    is caught up by reading only the services changed since. The index depends on the registry
    only through its places (a service area naming a place takes the place's districts), so it is
    rebuilt only when the places change, not when the day does (at 50,000 services a rebuild is
    seconds of CPU: at midnight, or for a referral dated yesterday, that stalled intake). One
    rebuild or catch-up at a time: concurrent referrals wait for it rather than each doing it."""

    def __init__(self) -> None:
        # By day: (registry generation, the snapshot, its places: all the index depends on).
        self._snapshots: dict[date, tuple[int, Snapshot, frozenset[PlaceView]]] = {}
        self._index: DirectoryIndex | None = None
        self._index_places: frozenset[PlaceView] | None = None
        self._index_generation = -1
        self._updating = asyncio.Lock()

    def _stale(self, places: frozenset[PlaceView], directory: int) -> bool:
        # A generation going back means another database (restored, or replaced): start again.
        return self._index is None or self._index_places != places or directory < self._index_generation

    async def current(self, session: AsyncSession, day: date) -> tuple[Snapshot, DirectoryIndex]:
        rows = await session.execute(select(ReadModelGeneration.name, ReadModelGeneration.generation))
        generations = {name: generation for name, generation in rows.all()}
        registry = int(generations.get(REGISTRY, 0))
        cached = self._snapshots.get(day)
        if cached is None or cached[0] != registry:  # a changed (or another) registry
            if len(self._snapshots) > 8:
                self._snapshots.clear()
            built = await _snapshot(session, day)
            cached = (registry, built, frozenset(built.places))
            self._snapshots[day] = cached
        _, snapshot, places = cached
        directory = int(generations.get(DIRECTORY, 0))
        if self._stale(places, directory) or directory != self._index_generation:
            async with self._updating:  # whoever held it may have done this already
                if self._stale(places, directory):
                    await self._rebuild(session, snapshot)
                    self._index_places = places
                elif directory > self._index_generation:
                    await self._catch_up(session, snapshot)
                # Generations are numbered in commit order: every change up to the one read is applied.
                self._index_generation = max(self._index_generation, directory)
        assert self._index is not None
        return snapshot, self._index

    async def _rebuild(self, session: AsyncSession, snapshot: Snapshot) -> None:
        rows = (
            await session.execute(
                select(DirectoryService.data, DirectoryService.generation).where(
                    DirectoryService.withdrawn.is_(False)
                )
            )
        ).all()
        self._index = DirectoryIndex(directory_view(json.loads(data), snapshot) for data, _ in rows)
        refreeze_after_replacing()  # the index is long-lived: keep full collections from walking it
        self._index_generation = max((generation for _, generation in rows), default=0)

    async def _catch_up(self, session: AsyncSession, snapshot: Snapshot) -> None:
        assert self._index is not None
        rows = (
            await session.execute(
                select(
                    DirectoryService.service_id,
                    DirectoryService.withdrawn,
                    DirectoryService.data,
                    DirectoryService.generation,
                ).where(DirectoryService.generation > self._index_generation)
            )
        ).all()
        for service_id, withdrawn, data, generation in rows:
            if withdrawn:
                self._index.remove(service_id)
            else:
                self._index.put(directory_view(json.loads(data), snapshot))
            self._index_generation = max(self._index_generation, generation)


# --- careplan ------------------------------------------------------------------------------------


async def apply_discharge_event(session: AsyncSession, event: CloudEvent) -> None:
    discharged = event.payload_as(EpisodeDischarged)
    discharge = await session.get(Discharge, discharged.episode_id)
    if discharge is None:
        discharge = Discharge(episode_id=discharged.episode_id)
        session.add(discharge)
    discharge.person_id = discharged.person_id
    discharge.team_id = discharged.team_id
    discharge.named_worker_id = discharged.named_worker_id
    discharge.discharged_at = discharged.discharged_at
    discharge.reaccess_until = discharged.reaccess_until
    await apply_episode_event(session, event)


async def apply_episode_event(session: AsyncSession, event: CloudEvent) -> None:
    """Careplan's episodes as triage needs them: open or not, at which team, for whom. The
    episode's `version` orders its events, so a late redelivery never undoes a newer state. The
    row is locked first: the discharge and the other episode events come on two consumers, and
    which referrals an episode carries must not be missed between them."""
    facts = event.payload_as(EpisodeFacts)
    episode = await session.get(Episode, facts.episode_id, with_for_update=True)
    version = facts.version or 0
    if episode is None:
        episode = Episode(episode_id=facts.episode_id, version=-1)
        session.add(episode)
    if not (version and version < episode.version):
        episode.referral_id = facts.referral_id
        episode.person_id = facts.person_id
        episode.team_id = facts.team_id
        episode.named_worker_id = facts.named_worker_id
        episode.status = facts.status or "open"
        episode.version = version
    # Whatever its order, an event names a referral this episode carries: the one it was opened
    # for, or one linked to it as new information.
    carried = [facts.referral_id]
    linked = (event.data or {}).get("linked_referral_id")
    if isinstance(linked, str):
        carried.append(linked)
    await _follow_care(session, episode, carried)


async def _follow_care(session: AsyncSession, episode: Episode, carried: list[str]) -> None:
    """Tie the referrals to the episode their care is in, and once that episode has ended mark
    each routed one's care ended (a new version, and `cmh.triage.referral.completed`): its
    ServiceRequest is then `completed`, not `active` for ever."""
    referrals = (
        await session.scalars(select(Referral).where(Referral.id.in_(carried), Referral.episode_id.is_(None)))
    ).all()
    for referral in referrals:
        referral.episode_id = episode.episode_id
    if episode.status != "discharged":
        return
    await session.flush()
    discharge = await session.get(Discharge, episode.episode_id)
    ended_at = discharge.discharged_at if discharge is not None else utcnow()
    ending = (
        await session.scalars(
            select(Referral)
            .where(
                Referral.episode_id == episode.episode_id,
                Referral.care_ended_at.is_(None),
                Referral.status == "routed",
            )
            .order_by(Referral.id)
            .with_for_update()
        )
    ).all()
    for referral in ending:
        referral.care_ended_at = ended_at
        referral.version += 1
        referral.updated_at = utcnow()
        data = {**referral_facts(referral), "episode_id": episode.episode_id}
        add_event(session, make_event(SERVICE, "referral", "completed", data))


async def previous_discharge(session: AsyncSession, person_id: str, at: datetime) -> DischargeView | None:
    """The person's most recent discharge before `at`: inside its re-access window it routes the
    referral straight back; after it, it is context for the clinician."""
    row = await session.scalar(
        select(Discharge)
        .where(Discharge.person_id == person_id, Discharge.discharged_at <= at)
        .order_by(Discharge.discharged_at.desc())
        .limit(1)
    )
    if row is None:
        return None
    return DischargeView(
        episode_id=row.episode_id,
        team_id=row.team_id,
        named_worker_id=row.named_worker_id,
        discharged_at=row.discharged_at,
        reaccess_until=row.reaccess_until,
    )


async def open_episode(session: AsyncSession, person_id: str) -> Episode | None:
    """The person's open episode, if careplan has one (the most recently seen)."""
    return await session.scalar(
        select(Episode)
        .where(Episode.person_id == person_id, Episode.status == "open")
        .order_by(Episode.version.desc())
        .limit(1)
    )


SUBSCRIPTIONS = (
    Subscription(
        durable="triage-registry",
        subjects=[
            f"cmh.registry.{kind}.{verb}" for kind in REGISTRY_KINDS for verb in ("upserted", "retired")
        ],
        handler=apply_registry_event,
        model=RegistryRecordChanged,
    ),
    Subscription(
        durable=DIRECTORY_DURABLE,
        subjects=["cmh.directory.service.published", "cmh.directory.service.withdrawn"],
        handler=apply_directory_event,
        model=(ServicePublished, ServiceWithdrawn),
    ),
    Subscription(
        durable="triage-discharges",
        subjects=["cmh.careplan.episode.discharged"],
        handler=apply_discharge_event,
        model=EpisodeDischarged,
    ),
    Subscription(
        durable="triage-episodes",
        subjects=[f"cmh.careplan.episode.{verb}" for verb in ("opened", "transferred", "linked")],
        handler=apply_episode_event,
        model=EpisodeFacts,
    ),
)


# One set of models per database (the engine a session is bound to), never shared between two.
_models: weakref.WeakKeyDictionary[Any, ScreeningModels] = weakref.WeakKeyDictionary()


def screening_models(session: AsyncSession) -> ScreeningModels:
    engine = session.get_bind()
    models = _models.get(engine)
    if models is None:
        models = _models[engine] = ScreeningModels()
    return models


async def screening(session: AsyncSession, day: date) -> tuple[Snapshot, DirectoryIndex]:
    """What screening reads on `day`: the coverage snapshot and the indexed partner services."""
    return await screening_models(session).current(session, day)


class ScreeningWarmup(BackgroundWorker):
    """Builds the screening models when the service starts, so the first referral does not wait
    for the whole directory to be read and indexed (seconds at 50,000 services). Referrals that
    arrive meanwhile wait for this build rather than starting their own."""

    task_name = "triage-screening-warmup"

    def __init__(self, app: FastAPI) -> None:
        super().__init__()
        self.app = app

    async def run(self) -> None:
        attempt = 0
        while not self.stopping:
            attempt += 1
            try:
                state = service_state(self.app)
                async with state.db.transaction() as session:
                    with self.busy():
                        await screening(session, london_date(state.now()))
                return
            except Exception as exc:  # the database not there yet: try again shortly
                log.warning("screening warm-up failed; retrying", extra={"error": type(exc).__name__})
                await asyncio.sleep(backoff_delay(attempt, cap=30))
