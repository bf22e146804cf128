"""Keeping a copy of registry records from their events (`cmh.registry.<kind>.upserted|retired`,
each carrying the record's whole timeline), as triage and careplan do: the one way to apply them
and to read a record as it stood on a day."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession


async def apply_registry_event(
    session: AsyncSession, model: Any, data: dict[str, Any], kinds: Iterable[str]
) -> None:
    """Upsert `model(id, kind, version, timeline)` from an event; an older version arriving late is ignored."""
    if data.get("kind") not in set(kinds):
        return
    record = await session.get(model, data["id"])
    if record is not None and record.version >= data["version"]:
        return
    if record is None:
        record = model(id=data["id"], kind=data["kind"])
        session.add(record)
    record.version = data["version"]
    record.timeline = json.dumps(data["timeline"])


def valid_on(timeline: list[dict[str, Any]], day: date) -> dict[str, Any] | None:
    """The attributes in force on `day` (validity is [valid_from, valid_to)), or None."""
    text = day.isoformat()
    for row in timeline:
        if row["valid_from"] <= text and (row["valid_to"] is None or text < row["valid_to"]):
            return row["attributes"]  # type: ignore[no-any-return]
    return None
