"""Reading and changing registry records (the I/O edge; rules are in `domain`).

A change runs in the caller's transaction: it checks the cross-record rules, supersedes the rows it
replaces, writes the new timeline, bumps the record's version (its ETag) and stages one event
carrying the record's whole live timeline, so a consumer can keep its read-model by replacing its
copy of the record, without ever calling the registry.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.timezones import london_date
from services.registry.domain import Validity
from services.registry.models import RegistryRecord, RegistryRow
from services.registry.schemas import (
    ATTRIBUTES,
    HistoryEntry,
    Kind,
    LeadershipRoleAttributes,
    MembershipAttributes,
    NetworkAttributes,
    NetworkKind,
    OrganisationAttributes,
    OrganisationKind,
    PlaceAttributes,
    RecordOut,
    TeamAttributes,
)
from shared.events import make_event
from shared.outbox import add_event
from shared.sqltypes import utcnow

SERVICE = "registry"


class RuleBroken(Exception):
    """A change that breaks a registry rule: 422, naming the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class NotFound(Exception):
    pass


class VersionMismatch(Exception):
    def __init__(self, current: int) -> None:
        super().__init__(f"record is at version {current}")
        self.current = current


def today() -> date:
    return london_date(utcnow())


def new_record_id() -> str:
    return str(uuid.uuid4())


def _index_columns(kind: Kind, attributes: BaseModel) -> tuple[str | None, str | None, str | None]:
    """(code, name, ref_id): what searches and filters need, copied out of the JSON."""
    data = attributes.model_dump()
    code = data.get("code") or data.get("key") or data.get("staff_id")
    ref = data.get("parent_id") or data.get("network_id") or data.get("team_id") or data.get("pathway_id")
    if kind is Kind.NETWORK:
        ref = data.get("provider_id")
    return code, data.get("name"), ref


def row_out(row: RegistryRow, record_version: int, day: date | None = None) -> RecordOut:
    day = day or today()
    if row.superseded_at is not None:
        status = "superseded"
    elif row.valid_to is not None and row.valid_to <= day:
        status = "retired"
    elif row.valid_from > day:
        status = "future"
    else:
        status = "active"
    return RecordOut(
        id=row.record_id,
        kind=Kind(row.kind),
        version=record_version,
        valid_from=row.valid_from,
        valid_to=row.valid_to,
        status=status,
        recorded_at=row.recorded_at,
        attributes=json.loads(row.attributes),
    )


@dataclass(frozen=True)
class Timeline:
    record: RegistryRecord
    rows: list[RegistryRow]  # live rows, by valid_from

    def at(self, day: date) -> RegistryRow | None:
        for row in self.rows:
            if Validity(row.valid_from, row.valid_to).contains(day):
                return row
        return None

    def current(self, day: date) -> RegistryRow:
        """The row valid on `day`, else the latest (a retired or future record still reads)."""
        return self.at(day) or self.rows[-1]

    @property
    def last(self) -> RegistryRow:
        return self.rows[-1]


async def timeline(session: AsyncSession, kind: Kind, record_id: str, *, lock: bool = False) -> Timeline:
    query = select(RegistryRecord).where(RegistryRecord.id == record_id, RegistryRecord.kind == kind.value)
    if lock:
        query = query.with_for_update()
    record = await session.scalar(query)
    if record is None:
        raise NotFound(record_id)
    rows = (
        await session.scalars(
            select(RegistryRow)
            .where(RegistryRow.record_id == record_id, RegistryRow.superseded_at.is_(None))
            .order_by(RegistryRow.valid_from)
        )
    ).all()
    return Timeline(record, list(rows))


async def live_rows_at(
    session: AsyncSession,
    kind: Kind,
    day: date,
    *,
    code: str | None = None,
    ref_id: str | None = None,
    name_contains: str | None = None,
    offset: int = 0,
    limit: int | None = None,
) -> tuple[list[tuple[RegistryRow, int]], int]:
    """Rows of a kind valid on `day` (with their record's version), filtered, and how many match."""
    conditions = [
        RegistryRow.kind == kind.value,
        RegistryRow.superseded_at.is_(None),
        RegistryRow.valid_from <= day,
        or_(RegistryRow.valid_to.is_(None), RegistryRow.valid_to > day),
    ]
    if code is not None:
        conditions.append(RegistryRow.code == code)
    if ref_id is not None:
        conditions.append(RegistryRow.ref_id == ref_id)
    if name_contains:
        conditions.append(func.lower(RegistryRow.name).contains(name_contains.lower()))
    total = int(await session.scalar(select(func.count()).select_from(RegistryRow).where(*conditions)) or 0)
    query = (
        select(RegistryRow, RegistryRecord.version)
        .join(RegistryRecord, RegistryRecord.id == RegistryRow.record_id)
        .where(*conditions)
        .order_by(RegistryRow.name, RegistryRow.record_id)
        .offset(offset)
    )
    if limit is not None:
        query = query.limit(limit)
    return [(row, version) for row, version in (await session.execute(query)).all()], total


async def history(session: AsyncSession, kind: Kind, record_id: str) -> list[HistoryEntry]:
    current = await timeline(session, kind, record_id)
    rows = (
        await session.scalars(
            select(RegistryRow).where(RegistryRow.record_id == record_id).order_by(RegistryRow.seq)
        )
    ).all()
    return [
        HistoryEntry(**row_out(row, row.version).model_dump(), change=row.change, recorded_by=row.recorded_by)
        for row in rows
        if current
    ]


# --- rules across records ----------------------------------------------------------------------


async def _live(session: AsyncSession, kind: Kind, record_id: str, day: date, field: str) -> dict[str, Any]:
    try:
        found = await timeline(session, kind, record_id)
    except NotFound:
        raise RuleBroken(field, f"no {kind.value} {record_id}") from None
    row = found.at(day)
    if row is None:
        raise RuleBroken(field, f"{kind.value} {record_id} is not in force on {day.isoformat()}")
    return dict(json.loads(row.attributes))


async def _covers(session: AsyncSession, kind: Kind, record_id: str, validity: Validity, field: str) -> None:
    """The referenced record must be in force for the whole of `validity`."""
    try:
        found = await timeline(session, kind, record_id)
    except NotFound:
        raise RuleBroken(field, f"no {kind.value} {record_id}") from None
    cursor: date | None = validity.valid_from
    for row in found.rows:
        if cursor is None:
            break
        if row.valid_from <= cursor and (row.valid_to is None or row.valid_to > cursor):
            cursor = row.valid_to
            if validity.valid_to is not None and cursor is not None and cursor >= validity.valid_to:
                cursor = None
    if cursor is not None:
        raise RuleBroken(
            field, f"{kind.value} {record_id} is retired or not yet open on {cursor.isoformat()}"
        )


async def _no_overlap(
    session: AsyncSession,
    kind: Kind,
    validity: Validity,
    same: dict[str, Any],
    record_id: str | None,
    field: str,
) -> None:
    rows = (
        await session.scalars(
            select(RegistryRow).where(RegistryRow.kind == kind.value, RegistryRow.superseded_at.is_(None))
        )
    ).all()
    for row in rows:
        if row.record_id == record_id:
            continue
        other = json.loads(row.attributes)
        if all(other.get(key) == value for key, value in same.items()) and validity.overlaps(
            Validity(row.valid_from, row.valid_to)
        ):
            raise RuleBroken(
                field, f"overlaps {kind.value} {row.record_id} valid from {row.valid_from.isoformat()}"
            )


async def _ics_footprint(session: AsyncSession, day: date) -> set[str]:
    districts: set[str] = set()
    for kind in (Kind.PLACE, Kind.NETWORK):
        rows, _ = await live_rows_at(session, kind, day)
        for row, _version in rows:
            districts.update(json.loads(row.attributes).get("postcode_districts", []))
    return districts


async def check_rules(
    session: AsyncSession, kind: Kind, attributes: BaseModel, validity: Validity, record_id: str | None
) -> None:
    day = validity.valid_from
    code, _, _ = _index_columns(kind, attributes)
    if code is not None and kind is not Kind.MEMBERSHIP and kind is not Kind.LEADERSHIP_ROLE:
        field = "code" if kind is Kind.ORGANISATION else ("staff_id" if kind is Kind.PRACTITIONER else "key")
        key_name = {"code": "code", "staff_id": "staff_id"}.get(field, "key")
        await _no_overlap(session, kind, validity, {key_name: code}, record_id, field)
    if isinstance(attributes, OrganisationAttributes) and attributes.parent_id:
        await _live(session, Kind.ORGANISATION, attributes.parent_id, day, "parent_id")
    if isinstance(attributes, PlaceAttributes) and attributes.icb_id:
        parent = await _live(session, Kind.ORGANISATION, attributes.icb_id, day, "icb_id")
        if parent["kind"] != OrganisationKind.ICB:
            raise RuleBroken("icb_id", "a place belongs to an integrated care board")
    if isinstance(attributes, NetworkAttributes):
        if attributes.provider_id:
            await _live(session, Kind.ORGANISATION, attributes.provider_id, day, "provider_id")
        if attributes.kind is NetworkKind.SPECIALIST and attributes.postcode_districts:
            raise RuleBroken(
                "postcode_districts", "a specialist network spans the system: it has no districts"
            )
    if isinstance(attributes, TeamAttributes):
        network = await _live(session, Kind.NETWORK, attributes.network_id, day, "network_id")
        await _covers(session, Kind.NETWORK, attributes.network_id, validity, "network_id")
        allowed = (
            set(network["postcode_districts"])
            if network["kind"] == NetworkKind.LOCALITY
            else await _ics_footprint(session, day)
        )
        outside = sorted(set(attributes.coverage) - allowed)
        if outside:
            raise RuleBroken("coverage", f"{', '.join(outside)} outside the team's network {network['key']}")
        if attributes.provider_id:
            await _live(session, Kind.ORGANISATION, attributes.provider_id, day, "provider_id")
        if attributes.pathways:
            rows, _ = await live_rows_at(session, Kind.PATHWAY, day)
            known = {json.loads(row.attributes)["key"] for row, _version in rows}
            unknown = sorted(set(attributes.pathways) - known)
            if unknown:
                raise RuleBroken("pathways", f"unknown pathways {', '.join(unknown)}")
    if isinstance(attributes, MembershipAttributes):
        await _live(session, Kind.PRACTITIONER, attributes.practitioner_id, day, "practitioner_id")
        await _covers(session, Kind.TEAM, attributes.team_id, validity, "team_id")
        same = {"practitioner_id": attributes.practitioner_id, "team_id": attributes.team_id}
        await _no_overlap(session, Kind.MEMBERSHIP, validity, same, record_id, "valid_from")
    if isinstance(attributes, LeadershipRoleAttributes):
        await _live(session, Kind.PRACTITIONER, attributes.practitioner_id, day, "practitioner_id")
        if attributes.network_id:
            await _covers(session, Kind.NETWORK, attributes.network_id, validity, "network_id")
        if attributes.pathway_id:
            await _covers(session, Kind.PATHWAY, attributes.pathway_id, validity, "pathway_id")
        same = {
            "role": attributes.role.value,
            "network_id": attributes.network_id,
            "pathway_id": attributes.pathway_id,
        }
        await _no_overlap(session, Kind.LEADERSHIP_ROLE, validity, same, record_id, "valid_from")


# --- changes -----------------------------------------------------------------------------------


def _new_row(
    record: RegistryRecord,
    kind: Kind,
    attributes: BaseModel | dict[str, Any],
    validity: Validity,
    change: str,
    actor: str,
) -> RegistryRow:
    model = attributes if isinstance(attributes, BaseModel) else ATTRIBUTES[kind].model_validate(attributes)
    code, name, ref = _index_columns(kind, model)
    return RegistryRow(
        record_id=record.id,
        kind=kind.value,
        version=record.version,
        change=change,
        valid_from=validity.valid_from,
        valid_to=validity.valid_to,
        attributes=model.model_dump_json(),
        code=code,
        name=name,
        ref_id=ref,
        recorded_at=utcnow(),
        recorded_by=actor,
    )


async def _emit(session: AsyncSession, kind: Kind, record: RegistryRecord, verb: str) -> None:
    await session.flush()
    rows = (
        await session.scalars(
            select(RegistryRow)
            .where(RegistryRow.record_id == record.id, RegistryRow.superseded_at.is_(None))
            .order_by(RegistryRow.valid_from)
        )
    ).all()
    data = {
        "id": record.id,
        "kind": kind.value,
        "version": record.version,
        "timeline": [
            {
                "valid_from": row.valid_from.isoformat(),
                "valid_to": row.valid_to.isoformat() if row.valid_to else None,
                "attributes": json.loads(row.attributes),
            }
            for row in rows
        ],
    }
    add_event(session, make_event(SERVICE, kind.value, verb, data, subject=record.id))


def _check_version(record: RegistryRecord, expected: int | None) -> None:
    if expected is not None and expected != record.version:
        raise VersionMismatch(record.version)


async def create(
    session: AsyncSession,
    kind: Kind,
    attributes: BaseModel,
    validity: Validity,
    actor: str,
    record_id: str | None = None,
) -> RecordOut:
    record_id = record_id or new_record_id()
    if await session.get(RegistryRecord, record_id) is not None:
        raise RuleBroken("id", f"record {record_id} exists already")
    await check_rules(session, kind, attributes, validity, None)
    record = RegistryRecord(id=record_id, kind=kind.value, version=1, created_at=utcnow())
    session.add(record)
    row = _new_row(record, kind, attributes, validity, "created", actor)
    session.add(row)
    await _emit(session, kind, record, "upserted")
    return row_out(row, record.version)


async def change(
    session: AsyncSession,
    kind: Kind,
    record_id: str,
    attributes: BaseModel,
    effective_from: date,
    expected_version: int | None,
    actor: str,
) -> RecordOut:
    """New attributes from `effective_from` on; what held before that date stays as it was."""
    found = await timeline(session, kind, record_id, lock=True)
    _check_version(found.record, expected_version)
    last = found.last
    if effective_from < last.valid_from:
        raise RuleBroken("effective_from", f"must be on or after {last.valid_from.isoformat()}")
    if last.valid_to is not None and effective_from >= last.valid_to:
        raise RuleBroken("effective_from", f"the record is retired from {last.valid_to.isoformat()}")
    new_validity = Validity(effective_from, last.valid_to)
    await check_rules(session, kind, attributes, new_validity, record_id)
    if json.loads(last.attributes) == attributes.model_dump(mode="json"):
        return row_out(last, found.record.version)  # nothing changes: no new version, no event
    found.record.version += 1
    last.superseded_at = utcnow()
    if effective_from > last.valid_from:
        session.add(
            _new_row(
                found.record,
                kind,
                json.loads(last.attributes),
                Validity(last.valid_from, effective_from),
                "updated",
                actor,
            )
        )
    row = _new_row(found.record, kind, attributes, new_validity, "updated", actor)
    session.add(row)
    await _emit(session, kind, found.record, "upserted")
    return row_out(row, found.record.version)


async def retire(
    session: AsyncSession,
    kind: Kind,
    record_id: str,
    valid_to: date,
    expected_version: int | None,
    actor: str,
) -> RecordOut:
    found = await timeline(session, kind, record_id, lock=True)
    _check_version(found.record, expected_version)
    last = found.last
    if valid_to <= last.valid_from:
        raise RuleBroken("valid_to", f"must be after {last.valid_from.isoformat()}")
    if last.valid_to is not None and valid_to >= last.valid_to:
        raise RuleBroken("valid_to", f"already retired from {last.valid_to.isoformat()}")
    await _no_dependants(session, kind, record_id, valid_to)
    found.record.version += 1
    last.superseded_at = utcnow()
    row = _new_row(
        found.record, kind, json.loads(last.attributes), Validity(last.valid_from, valid_to), "retired", actor
    )
    session.add(row)
    await _emit(session, kind, found.record, "retired")
    return row_out(row, found.record.version)


async def _no_dependants(session: AsyncSession, kind: Kind, record_id: str, valid_to: date) -> None:
    """A team cannot be retired under its members: end their memberships first."""
    if kind is not Kind.TEAM:
        return
    rows = (
        await session.scalars(
            select(RegistryRow).where(
                RegistryRow.kind == Kind.MEMBERSHIP.value,
                RegistryRow.ref_id == record_id,
                RegistryRow.superseded_at.is_(None),
                or_(RegistryRow.valid_to.is_(None), RegistryRow.valid_to > valid_to),
            )
        )
    ).all()
    if rows:
        raise RuleBroken(
            "valid_to", f"{len(rows)} membership(s) of this team run past {valid_to.isoformat()}"
        )


async def generation(session: AsyncSession) -> int:
    """Changes so far: a cache key for snapshots built from live rows."""
    return int(await session.scalar(select(func.max(RegistryRow.seq))) or 0)
