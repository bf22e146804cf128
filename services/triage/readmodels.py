"""What triage keeps from other services' events, so screening never calls them:

- the registry's places, networks, pathways and teams (whole timelines: screening uses the rows
  valid on the referral's date) → a coverage `Snapshot`;
- the directory's published partner services → `DirectoryServiceView`s for signposting;
- careplan's discharges → who may re-access their named worker's team, until when.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, datetime, time
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.triage.domain import DirectoryServiceView
from services.triage.domain import Discharge as DischargeView
from services.triage.models import DirectoryService, Discharge, RegistryRecord
from shared import registry_events
from shared.consumer import Subscription
from shared.coverage import Snapshot, snapshot_from
from shared.events import CloudEvent
from shared.messaging_models import InboxMessage

REGISTRY_KINDS = ("place", "network", "pathway", "team")
DAY_INDEX = {"MO": 0, "TU": 1, "WE": 2, "TH": 3, "FR": 4, "SA": 5, "SU": 6}


# --- registry ------------------------------------------------------------------------------------


async def apply_registry_event(session: AsyncSession, event: CloudEvent) -> None:
    await registry_events.apply_registry_event(session, RegistryRecord, event.data or {}, REGISTRY_KINDS)


class SnapshotCache:
    """Coverage snapshots by day, rebuilt when the read-model changes (checked with one cheap
    query, so every replica sees what any replica's consumer applied)."""

    def __init__(self) -> None:
        self._cached: dict[date, tuple[tuple[int, int], Snapshot]] = {}

    async def get(self, session: AsyncSession, day: date) -> Snapshot:
        count, versions = (
            await session.execute(select(func.count(), func.coalesce(func.sum(RegistryRecord.version), 0)))
        ).one()
        generation = (int(count), int(versions))
        cached = self._cached.get(day)
        if cached and cached[0] == generation:
            return cached[1]
        records: dict[str, list[tuple[str, Mapping[str, Any]]]] = {kind: [] for kind in REGISTRY_KINDS}
        for record in (await session.scalars(select(RegistryRecord))).all():
            attributes = registry_events.valid_on(json.loads(record.timeline), day)
            if attributes is not None:
                records[record.kind].append((record.id, attributes))
        snapshot = snapshot_from(records)
        if len(self._cached) > 8:
            self._cached.clear()
        self._cached[day] = (generation, snapshot)
        return snapshot


# --- directory -----------------------------------------------------------------------------------


async def apply_directory_event(session: AsyncSession, event: CloudEvent) -> None:
    data = event.data or {}
    service = await session.get(DirectoryService, data["service_id"])
    if event.type.endswith(".withdrawn"):
        if service is not None:
            await session.delete(service)
        return
    if service is not None and service.version >= data.get("version", 0):
        return
    if service is None:
        service = DirectoryService(service_id=data["service_id"])
        session.add(service)
    service.version = data.get("version", 0)
    service.data = json.dumps(data)


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


class DirectoryViewCache:
    """Published partner services as screening sees them, rebuilt only when the read-model changed
    or the coverage snapshot did: intake must not parse every partner service for every referral
    (at 5,000 services that alone held intake to a few referrals a second). A change is seen with
    one cheap query (row count, version sum, the last directory event applied), so every replica
    sees what any replica's consumer applied."""

    def __init__(self) -> None:
        self._cached: tuple[tuple[Any, ...], Snapshot, list[DirectoryServiceView]] | None = None

    async def get(self, session: AsyncSession, snapshot: Snapshot) -> list[DirectoryServiceView]:
        count, versions = (
            await session.execute(select(func.count(), func.coalesce(func.sum(DirectoryService.version), 0)))
        ).one()
        last_applied = await session.scalar(
            select(func.max(InboxMessage.processed_at)).where(InboxMessage.consumer == DIRECTORY_DURABLE)
        )
        generation = (int(count), int(versions), last_applied)
        cached = self._cached
        if cached is not None and cached[0] == generation and cached[1] is snapshot:
            return cached[2]
        rows = (await session.scalars(select(DirectoryService.data))).all()
        views = [directory_view(json.loads(row), snapshot) for row in rows]
        self._cached = (generation, snapshot, views)
        return views


# --- careplan ------------------------------------------------------------------------------------


async def apply_discharge_event(session: AsyncSession, event: CloudEvent) -> None:
    data = event.data or {}
    discharge = await session.get(Discharge, data["episode_id"])
    if discharge is None:
        discharge = Discharge(episode_id=data["episode_id"])
        session.add(discharge)
    discharge.person_id = data["person_id"]
    discharge.team_id = data["team_id"]
    discharge.named_worker_id = data.get("named_worker_id")
    discharge.discharged_at = datetime.fromisoformat(data["discharged_at"])
    discharge.reaccess_until = datetime.fromisoformat(data["reaccess_until"])


async def live_discharge(session: AsyncSession, person_id: str, at: datetime) -> DischargeView | None:
    """The person's most recent discharge whose re-access window is still open at `at`."""
    row = await session.scalar(
        select(Discharge)
        .where(Discharge.person_id == person_id, Discharge.reaccess_until > at, Discharge.discharged_at <= at)
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


SUBSCRIPTIONS = (
    Subscription(
        durable="triage-registry",
        subjects=[
            f"cmh.registry.{kind}.{verb}" for kind in REGISTRY_KINDS for verb in ("upserted", "retired")
        ],
        handler=apply_registry_event,
    ),
    Subscription(
        durable=DIRECTORY_DURABLE,
        subjects=["cmh.directory.service.published", "cmh.directory.service.withdrawn"],
        handler=apply_directory_event,
    ),
    Subscription(
        durable="triage-discharges",
        subjects=["cmh.careplan.episode.discharged"],
        handler=apply_discharge_event,
    ),
)
