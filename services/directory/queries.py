"""Reading the published directory: the Open Referral UK filters, full-text search ranked by
relevance (FTS5 BM25 on SQLite, ts_rank on PostgreSQL), then distance from a postcode centroid."""

from __future__ import annotations

import csv
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, time
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, literal_column, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.directory.domain import PlanarFrame, search_terms
from services.directory.models import Service, ServiceAtLocation, ServiceDistrict, ServiceSlot, ServiceTerm

CENTROIDS = Path(__file__).parent / "reference" / "uk-outcode-centroids.csv"


@functools.cache
def district_centroids() -> dict[str, tuple[float, float]]:
    """Postcode district → (latitude, longitude): OS Code-Point Open means (see reference/README)."""
    with CENTROIDS.open(newline="") as handle:
        return {
            row["outcode"]: (float(row["latitude"]), float(row["longitude"]))
            for row in csv.DictReader(handle)
        }


@dataclass(frozen=True)
class Filters:
    search: str | None = None
    taxonomy_term_id: str | None = None
    taxonomy_id: str | None = None
    organization_id: str | None = None
    modified_after: datetime | None = None
    minimum_age: float | None = None
    maximum_age: float | None = None
    day: str | None = None
    start_time: time | None = None
    end_time: time | None = None
    district: str | None = None  # service areas must cover it (when a service declares any)
    centre: PlanarFrame | None = None  # distance ordering for service_at_locations
    proximity_m: float | None = None


def _minute(moment: time) -> int:
    return moment.hour * 60 + moment.minute


def _service_conditions(filters: Filters) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    # IN (subquery), not a correlated EXISTS: the engine builds the matching set once.
    if filters.taxonomy_term_id:
        conditions.append(
            Service.id.in_(
                select(ServiceTerm.service_id).where(ServiceTerm.taxonomy_term_id == filters.taxonomy_term_id)
            )
        )
    if filters.taxonomy_id:
        conditions.append(
            Service.id.in_(
                select(ServiceTerm.service_id).where(ServiceTerm.taxonomy_id == filters.taxonomy_id)
            )
        )
    if filters.organization_id:
        conditions.append(Service.organization_id == filters.organization_id)
    if filters.modified_after:
        conditions.append(Service.modified_at >= filters.modified_after)
    if filters.minimum_age is not None:
        conditions.append(func.coalesce(Service.minimum_age, 0) >= filters.minimum_age)
    if filters.maximum_age is not None:
        conditions.append(and_(Service.maximum_age.is_not(None), Service.maximum_age <= filters.maximum_age))
    if filters.day or filters.start_time or filters.end_time:
        slot = []
        if filters.day:
            slot.append(ServiceSlot.day == filters.day)
        if filters.start_time:
            slot.append(ServiceSlot.opens_minute >= _minute(filters.start_time))
        if filters.end_time:
            slot.append(ServiceSlot.closes_minute <= _minute(filters.end_time))
        conditions.append(Service.id.in_(select(ServiceSlot.service_id).where(*slot)))
    if filters.district:
        conditions.append(
            or_(
                Service.has_service_area.is_(False),
                Service.id.in_(
                    select(ServiceDistrict.service_id).where(ServiceDistrict.district == filters.district)
                ),
            )
        )
    return conditions


def _fts(session: AsyncSession, words: list[str]) -> tuple[Any, ColumnElement[Any]]:
    """A subquery (service_id, rank) of services matching every word (as a prefix), best first."""
    fts = text("directory_fts")
    if session.bind.dialect.name == "sqlite":
        match = " ".join(f'"{word}"*' for word in words)  # words are alphanumeric (search_terms)
        # BM25 weights per column: service_id (unindexed), name, description, taxonomy terms.
        subquery = (
            select(
                literal_column("service_id"),
                literal_column("bm25(directory_fts, 0, 10.0, 2.0, 6.0)").label("rank"),
            )
            .select_from(fts)
            .where(text("directory_fts MATCH :match").bindparams(match=match))
            .subquery("matched")
        )
        return subquery, subquery.c.rank.asc()
    query = func.to_tsquery("english", " & ".join(f"{word}:*" for word in words))
    document = literal_column("document")
    subquery = (
        select(literal_column("service_id"), func.ts_rank(document, query).label("rank"))
        .select_from(fts)
        .where(document.op("@@")(query))
        .subquery("matched")
    )
    return subquery, subquery.c.rank.desc()


def _with_search(
    session: AsyncSession, query: Select[Any], filters: Filters
) -> tuple[Select[Any], list[Any]]:
    words = search_terms(filters.search or "")
    if not words:
        return query, []
    matched, order = _fts(session, words)
    return query.join(matched, matched.c.service_id == Service.id), [order]


async def _count(session: AsyncSession, query: Select[Any]) -> int:
    return int(await session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0)


async def services(
    session: AsyncSession, filters: Filters, *, offset: int, limit: int | None
) -> tuple[list[str], int]:
    """Published service documents (JSON text) matching the filters, and how many match.

    The page is chosen by id alone and the documents read afterwards by primary key: sorting
    narrow rows is what keeps a search over tens of thousands of services fast."""
    query, order = _with_search(session, select(Service.id), filters)
    query = query.where(*_service_conditions(filters))
    total = await _count(session, query)
    page = query.order_by(*order, Service.name, Service.id).offset(offset)
    if limit is not None:
        page = page.limit(limit)
    ids = list((await session.scalars(page)).all())
    if not ids:
        return [], total
    documents = dict(
        (await session.execute(select(Service.id, Service.document).where(Service.id.in_(ids)))).all()
    )
    return [documents[service_id] for service_id in ids], total


async def stream_services(session: AsyncSession, filters: Filters) -> AsyncIterator[str]:
    query, order = _with_search(session, select(Service.document), filters)
    query = query.where(*_service_conditions(filters)).order_by(*order, Service.name, Service.id)
    result = await session.stream_scalars(query)
    async for document in result:
        yield document


def _sal_query(
    session: AsyncSession, filters: Filters, *, columns: list[Any] | None = None
) -> tuple[Select[Any], list[Any]]:
    columns = columns or [ServiceAtLocation.document, Service.document]
    distance = None
    if filters.centre is not None:
        centre = filters.centre
        dx = (ServiceAtLocation.longitude - centre.longitude) * centre.longitude_scale
        dy = ServiceAtLocation.latitude - centre.latitude
        distance = dx * dx + dy * dy
    query = select(*columns).join(Service, Service.id == ServiceAtLocation.service_id)
    query, order = _with_search(session, query, filters)
    query = query.where(*_service_conditions(filters))
    if distance is not None:
        if filters.proximity_m is not None:
            assert filters.centre is not None
            query = query.where(
                ServiceAtLocation.latitude.is_not(None),
                distance <= filters.centre.radius_squared(filters.proximity_m),
            )
        # Relevance first when searching; then distance (unlocated last); then name.
        order = [*order, ServiceAtLocation.latitude.is_(None), distance]
    return query, [*order, Service.name, ServiceAtLocation.id]


async def service_at_locations(
    session: AsyncSession, filters: Filters, *, offset: int, limit: int | None
) -> tuple[list[tuple[str, str]], int]:
    query, order = _sal_query(session, filters, columns=[ServiceAtLocation.id, Service.id])
    total = await _count(session, query)
    page = query.order_by(*order).offset(offset)
    if limit is not None:
        page = page.limit(limit)
    keys = [(sal_id, service_id) for sal_id, service_id in (await session.execute(page)).all()]
    if not keys:
        return [], total
    sals = dict(
        (
            await session.execute(
                select(ServiceAtLocation.id, ServiceAtLocation.document).where(
                    ServiceAtLocation.id.in_([k[0] for k in keys])
                )
            )
        ).all()
    )
    services_ = dict(
        (
            await session.execute(
                select(Service.id, Service.document).where(Service.id.in_({k[1] for k in keys}))
            )
        ).all()
    )
    return [(sals[sal_id], services_[service_id]) for sal_id, service_id in keys], total


async def stream_service_at_locations(
    session: AsyncSession, filters: Filters
) -> AsyncIterator[tuple[str, str]]:
    query, order = _sal_query(session, filters)
    result = await session.stream(query.order_by(*order))
    async for sal, service in result:
        yield sal, service
