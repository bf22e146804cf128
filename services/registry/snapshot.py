"""The registry as at a date, in memory, for resolve: rebuilt only when something has changed."""

from __future__ import annotations

import asyncio
import json
from datetime import date, time

from sqlalchemy.ext.asyncio import AsyncSession

from services.registry.domain import Hours, Interval, NetworkView, PathwayBand, PlaceView, Snapshot, TeamView
from services.registry.schemas import Kind
from services.registry.store import generation, live_rows_at


def hours_of(opening_hours: dict[str, object]) -> Hours:
    weekly = {
        day: tuple(
            Interval(time.fromisoformat(i["opens"]), time.fromisoformat(i["closes"])) for i in intervals
        )
        for day, intervals in dict(opening_hours.get("weekly") or {}).items()  # type: ignore[call-overload]
    }
    return Hours(always_open=bool(opening_hours.get("always_open")), weekly=weekly)


async def build_snapshot(session: AsyncSession, day: date) -> Snapshot:
    async def attributes(kind: Kind) -> list[tuple[str, dict[str, object]]]:
        rows, _ = await live_rows_at(session, kind, day)
        return [(row.record_id, json.loads(row.attributes)) for row, _version in rows]

    places = [
        PlaceView(rid, a["key"], a["name"], frozenset(a["postcode_districts"]))  # type: ignore[arg-type]
        for rid, a in await attributes(Kind.PLACE)
    ]
    networks = [
        NetworkView(rid, a["key"], a["name"], a["kind"], frozenset(a["postcode_districts"]))  # type: ignore[arg-type]
        for rid, a in await attributes(Kind.NETWORK)
    ]
    pathways = [
        PathwayBand(a["key"], a["name"], a.get("age_min"), a.get("age_max"))  # type: ignore[arg-type]
        for _rid, a in await attributes(Kind.PATHWAY)
    ]
    teams = [
        TeamView(
            id=rid,
            key=a["key"],  # type: ignore[arg-type]
            name=a["name"],  # type: ignore[arg-type]
            offer=a["service_offer"],  # type: ignore[arg-type]
            network_id=a["network_id"],  # type: ignore[arg-type]
            pathways=frozenset(a.get("pathways") or []),  # type: ignore[arg-type]
            coverage=frozenset(a.get("coverage") or []),  # type: ignore[arg-type]
            hours=hours_of(a["opening_hours"]),  # type: ignore[arg-type]
            mhsds_team_type=a.get("mhsds_team_type"),  # type: ignore[arg-type]
        )
        for rid, a in await attributes(Kind.TEAM)
    ]
    return Snapshot.build(places, networks, pathways, teams)


class SnapshotCache:
    """Snapshots by date, valid while no registry row has been written since they were built."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._snapshots: dict[date, tuple[int, Snapshot]] = {}
        self._lock = asyncio.Lock()

    async def get(self, session: AsyncSession, day: date) -> Snapshot:
        current = await generation(session)
        cached = self._snapshots.get(day)
        if cached and cached[0] == current:
            return cached[1]
        async with self._lock:
            snapshot = await build_snapshot(session, day)
            if len(self._snapshots) >= self.size:
                self._snapshots.pop(next(iter(self._snapshots)))
            self._snapshots[day] = (current, snapshot)
            return snapshot
