"""The registry as at a date, in memory, for resolve: rebuilt only when something has changed."""

from __future__ import annotations

import asyncio
import json
from datetime import date

from sqlalchemy.ext.asyncio import AsyncSession

from contracts.coverage import Snapshot, snapshot_from
from services.registry.schemas import Kind
from services.registry.store import generation, live_rows_at


async def build_snapshot(session: AsyncSession, day: date) -> Snapshot:
    records = {}
    for kind in (Kind.PLACE, Kind.NETWORK, Kind.PATHWAY, Kind.TEAM):
        rows, _ = await live_rows_at(session, kind, day)
        records[kind.value] = [(row.record_id, json.loads(row.attributes)) for row, _version in rows]
    return snapshot_from(records)


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
