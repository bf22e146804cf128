"""Reading the published directory: the Open Referral UK filters, full-text search ranked by
relevance (FTS5 BM25 on SQLite, ts_rank on PostgreSQL), then distance from a postcode centroid.

A page is found without ranking or sorting everything that matches, and stays exact:

- Search: the search engine ranks inside itself (`ORDER BY score LIMIT n`) and hands over only
  the matches scoring strictly better than its n-th (so a tie is never split); the other filters
  then apply to those candidates, ordered by score, name, id. Every match left out scores no
  better than every candidate, so when the candidates fill the page it is the page the unbounded
  query gives; otherwise `n` widens and, past `MAX_CANDIDATES` (or, when the filters are
  selective, `MAX_FILTERED_CANDIDATES`), the engine ranks every match joined to the filters.
  Ranking itself still scores every match (FTS5 and ts_rank have no top-k pruning), so a word
  most services match costs a scan of its matches.
- Distance: a latitude/longitude box around the centre (the position index) holds the circle
  `proximity` asks for; nearest-first without a proximity grows a circle until it holds the page
  (every location outside it is farther than every one inside).
- `total_items` stays an exact count (no cap), counted without ranking, and without joining
  what the filters do not need: side-table filters count from their indexes.
- On SQLite, `+column IN (set)` (unary plus: no index on the column) steers the planner to read
  the (name, id) index or the position box in order and test membership, instead of looking up
  every member of a large set.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, time
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    String,
    and_,
    column,
    func,
    intersect,
    literal_column,
    or_,
    select,
    text,
    values,
)
from sqlalchemy.ext.asyncio import AsyncSession

from services.directory.domain import METRES_PER_DEGREE, PlanarFrame, minute_of_day, search_terms
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


def _id_sets(filters: Filters) -> list[Select[Any]]:
    """The filters that side tables answer: each a set of service ids (side-table rows exist only
    for published services)."""
    sets: list[Select[Any]] = []
    if filters.taxonomy_term_id:
        sets.append(
            select(ServiceTerm.service_id).where(ServiceTerm.taxonomy_term_id == filters.taxonomy_term_id)
        )
    if filters.taxonomy_id:
        sets.append(select(ServiceTerm.service_id).where(ServiceTerm.taxonomy_id == filters.taxonomy_id))
    if filters.day or filters.start_time or filters.end_time:
        slot = []
        if filters.day:
            slot.append(ServiceSlot.day == filters.day)
        if filters.start_time:
            slot.append(ServiceSlot.opens_minute >= minute_of_day(filters.start_time))
        if filters.end_time:
            slot.append(ServiceSlot.closes_minute <= minute_of_day(filters.end_time))
        sets.append(select(ServiceSlot.service_id).where(*slot))
    return sets


def _row_conditions(filters: Filters) -> list[ColumnElement[bool]]:
    """The filters the services table itself answers."""
    conditions: list[ColumnElement[bool]] = []
    if filters.organization_id:
        conditions.append(Service.organization_id == filters.organization_id)
    if filters.modified_after:
        conditions.append(Service.modified_at >= filters.modified_after)
    if filters.minimum_age is not None:
        conditions.append(func.coalesce(Service.minimum_age, 0) >= filters.minimum_age)
    if filters.maximum_age is not None:
        conditions.append(and_(Service.maximum_age.is_not(None), Service.maximum_age <= filters.maximum_age))
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


def _service_conditions(filters: Filters, key: Any = None) -> list[ColumnElement[bool]]:
    # IN (subquery), not a correlated EXISTS: the engine builds the matching set once.
    key = Service.id if key is None else key
    return [key.in_(ids) for ids in _id_sets(filters)] + _row_conditions(filters)


def _name_order_key(session: AsyncSession) -> Any:
    """Service.id for `IN (set)` filters on a page in name order. On SQLite, `+id`: the unary
    plus keeps the planner from looking every member of the set up by id and sorting them all;
    it reads the (name, id) index in order instead, testing each id, until the page is full."""
    return literal_column("+directory_services.id") if _sqlite(session) else Service.id


# Candidates taken from the search engine before widening to a full ranking of every match.
FIRST_CANDIDATES = 200
MAX_CANDIDATES = 5_000
MAX_FILTERED_CANDIDATES = 1_000
# SQLite FTS5 BM25 weights per column: service_id (unindexed), name, description, taxonomy terms.
BM25 = "bm25(directory_fts, 0, 10.0, 2.0, 6.0)"
BEST_SQLITE = (
    "SELECT service_id, bm25(directory_fts, 0, 10.0, 2.0, 6.0) AS score FROM directory_fts "
    "WHERE directory_fts MATCH :match ORDER BY score LIMIT :n"
)


def _sqlite(session: AsyncSession) -> bool:
    return session.bind.dialect.name == "sqlite"


def _fts_match(words: list[str]) -> str:
    return " ".join(f'"{word}"*' for word in words)  # words are alphanumeric (search_terms)


def _tsquery(words: list[str]) -> ColumnElement[Any]:
    return func.to_tsquery("english", " & ".join(f"{word}:*" for word in words))


def _fts(session: AsyncSession, words: list[str]) -> tuple[Any, ColumnElement[Any]]:
    """A subquery (service_id, rank) of services matching every word (as a prefix), best first."""
    fts = text("directory_fts")
    if _sqlite(session):
        subquery = (
            select(
                literal_column("service_id"),
                literal_column(BM25).label("rank"),
            )
            .select_from(fts)
            .where(text("directory_fts MATCH :match").bindparams(match=_fts_match(words)))
            .subquery("matched")
        )
        return subquery, subquery.c.rank.asc()
    query = _tsquery(words)
    document = literal_column("document")
    subquery = (
        select(literal_column("service_id"), func.ts_rank(document, query).label("rank"))
        .select_from(fts)
        .where(document.op("@@")(query))
        .subquery("matched")
    )
    return subquery, subquery.c.rank.desc()


def _matching_ids(session: AsyncSession, words: list[str]) -> Select[Any]:
    """service_id of every match, unranked."""
    if _sqlite(session):
        return (
            select(literal_column("service_id"))
            .select_from(text("directory_fts"))
            .where(text("directory_fts MATCH :match").bindparams(match=_fts_match(words)))
        )
    return (
        select(literal_column("service_id"))
        .select_from(text("directory_fts"))
        .where(literal_column("document").op("@@")(_tsquery(words)))
    )


async def _count_matches(session: AsyncSession, words: list[str]) -> int:
    if _sqlite(session):
        query = (
            select(func.count())
            .select_from(text("directory_fts"))
            .where(text("directory_fts MATCH :match").bindparams(match=_fts_match(words)))
        )
    else:
        query = (
            select(func.count())
            .select_from(text("directory_fts"))
            .where(literal_column("document").op("@@")(_tsquery(words)))
        )
    return int(await session.scalar(query) or 0)


async def _best(session: AsyncSession, words: list[str], n: int) -> tuple[list[tuple[str, float]], bool]:
    """The best matches as (service_id, score), lower scores better, ranked by the search engine
    itself: every match scoring better than the n-th (so no tie is split); and whether that is
    every match."""
    if _sqlite(session):
        query = text(BEST_SQLITE).bindparams(match=_fts_match(words), n=n)
    else:
        rank = func.ts_rank(literal_column("document"), _tsquery(words))
        query = (
            select(literal_column("service_id"), (-rank).label("score"))
            .select_from(text("directory_fts"))
            .where(literal_column("document").op("@@")(_tsquery(words)))
            .order_by(rank.desc())
            .limit(n)
        )
    rows = [(service_id, float(score)) for service_id, score in (await session.execute(query)).all()]
    if len(rows) < n:
        return rows, True
    # Matches left out score no better than the last one taken: keep those strictly better.
    boundary = rows[-1][1]
    return [row for row in rows if row[1] < boundary], False


def _candidates(rows: list[tuple[str, float]]) -> Any:
    return values(column("service_id", String), column("score", Float), name="candidates").data(rows).cte()


async def _bounded(
    session: AsyncSession,
    words: list[str],
    *,
    offset: int,
    limit: int | None,
    total: int,
    filtered: bool,
    page: Any,
) -> list[Any] | None:
    """The page from the best-ranked candidates only: `page(candidates)` runs the page query
    (offset and limit applied) on them. None when every match had better be ranked instead."""
    if limit is None:
        return None
    wanted = min(limit, total - offset)  # what the page holds
    if wanted <= 0:
        return []
    need = offset + limit
    n = max(FIRST_CANDIDATES, need * 2)
    if filtered:
        # The filters keep about total/matches of the candidates: ask for enough to fill the page.
        # When that is many, the engine joining the filters to every match does better (it ranks
        # only the matches the filters keep, on PostgreSQL).
        matches = await _count_matches(session, words)
        n = max(n, int(need * 1.5 * matches / max(total, 1)))
        if n > MAX_FILTERED_CANDIDATES:
            return None
    while n <= MAX_CANDIDATES:
        rows, complete = await _best(session, words, n)
        result = await page(_candidates(rows)) if rows else []
        if complete or len(result) >= wanted:
            return result
        n *= 4
    return None


def _with_search(
    session: AsyncSession, query: Select[Any], filters: Filters
) -> tuple[Select[Any], list[Any]]:
    words = search_terms(filters.search or "")
    if not words:
        return query, []
    matched, order = _fts(session, words)
    return query.join(matched, matched.c.service_id == Service.id), [order]


async def _count_services(
    session: AsyncSession, filters: Filters, words: list[str], conditions: list[Any]
) -> int:
    if words and not conditions:
        return await _count_matches(session, words)
    sets = _id_sets(filters)
    if not words and sets:
        # Count from the side tables' indexes (their intersection), and look up only the services
        # in it for the other filters, rather than reading every service.
        ids = (sets[0] if len(sets) == 1 else intersect(*sets)).subquery("ids")
        rows = _row_conditions(filters)
        if not rows:
            query = select(func.count(func.distinct(ids.c.service_id)))
        else:
            unique = select(ids.c.service_id).distinct().subquery("unique_ids")
            query = (
                select(func.count())
                .select_from(unique)
                .join(Service, Service.id == unique.c.service_id)
                .where(*rows)
            )
        return int(await session.scalar(query) or 0)
    query = select(func.count()).select_from(Service).where(*conditions)
    if words:
        query = query.where(Service.id.in_(_matching_ids(session, words)))
    return int(await session.scalar(query) or 0)


# One word's lexeme (the tsquery `'lexeme':*` that to_tsquery makes of it, when it is that), how
# many services hold it, and the next lexeme in "C" order: the first one that could share its prefix.
RANKED_LEXEME = text(
    "WITH q AS (SELECT substring(to_tsquery('english', :query)::text "
    "FROM '^''([^''\\\\]+)'':\\*$') COLLATE \"C\" AS lexeme) "
    "SELECT q.lexeme, "
    "(SELECT count(*) FROM directory_fts_ranks r WHERE r.lexeme = q.lexeme), "
    "(SELECT min(r.lexeme) FROM directory_fts_ranks r WHERE r.lexeme > q.lexeme) FROM q"
)
RANKED_PAGE = text(
    "SELECT service_id FROM directory_fts_ranks WHERE lexeme = :lexeme "
    "ORDER BY score DESC, name, service_id OFFSET :offset LIMIT :limit"
)


async def _ranked_page(
    session: AsyncSession, words: list[str], *, offset: int, limit: int
) -> tuple[list[str], int] | None:
    """A one-word search with no other filter, on PostgreSQL, from the impact-ordered index
    (directory_fts_ranks): the page read in (score, name, id) order, the count from the index.
    Exact when the word's prefix query matches one lexeme only (then every match holds it and its
    stored score is the match's ts_rank); None otherwise, for the ranking of every match."""
    if _sqlite(session) or len(words) != 1:
        return None
    row = (await session.execute(RANKED_LEXEME, {"query": f"{words[0]}:*"})).one()
    lexeme, total, following = row
    if lexeme is None or (following is not None and following.startswith(lexeme)):
        return None
    if offset >= total:
        return [], int(total)
    page = await session.scalars(RANKED_PAGE, {"lexeme": lexeme, "offset": offset, "limit": limit})
    return list(page.all()), int(total)


async def services(
    session: AsyncSession, filters: Filters, *, offset: int, limit: int | None
) -> tuple[list[str], int]:
    """Published service documents (JSON text) matching the filters, and how many match.

    The page is chosen by id alone and the documents read afterwards by primary key: sorting
    narrow rows is what keeps a search over tens of thousands of services fast."""
    words = search_terms(filters.search or "")
    conditions = _service_conditions(filters)
    ranked = None
    if words and not conditions and limit is not None:
        ranked = await _ranked_page(session, words, offset=offset, limit=limit)
    if ranked is not None:
        page_ids, total = ranked
        return await _documents(session, page_ids), total
    total = await _count_services(session, filters, words, conditions)
    if offset >= total:
        return [], total
    ids: list[str] | None = None
    if words:

        async def page(candidates: Any) -> list[Any]:
            query = (
                select(Service.id)
                .join(candidates, candidates.c.service_id == Service.id)
                .where(*conditions)
                .order_by(candidates.c.score, Service.name, Service.id)
                .offset(offset)
                .limit(limit)
            )
            return list((await session.scalars(query)).all())

        ids = await _bounded(
            session, words, offset=offset, limit=limit, total=total, filtered=bool(conditions), page=page
        )
    if ids is None:
        query, order = _with_search(session, select(Service.id), filters)
        if not words:
            conditions = _service_conditions(filters, key=_name_order_key(session))
        query = query.where(*conditions).order_by(*order, Service.name, Service.id).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        ids = list((await session.scalars(query)).all())
    return await _documents(session, ids), total


async def _documents(session: AsyncSession, ids: list[str]) -> list[str]:
    """The documents of the services `ids`, in that order."""
    if not ids:
        return []
    documents = dict(
        (await session.execute(select(Service.id, Service.document).where(Service.id.in_(ids)))).all()
    )
    return [documents[service_id] for service_id in ids]


async def stream_services(session: AsyncSession, filters: Filters) -> AsyncIterator[str]:
    query, order = _with_search(session, select(Service.document), filters)
    query = query.where(*_service_conditions(filters)).order_by(*order, Service.name, Service.id)
    result = await session.stream_scalars(query)
    async for document in result:
        yield document


def _distance(centre: PlanarFrame) -> ColumnElement[Any]:
    dx = (ServiceAtLocation.longitude - centre.longitude) * centre.longitude_scale
    dy = ServiceAtLocation.latitude - centre.latitude
    return dx * dx + dy * dy


def _within(centre: PlanarFrame, metres: float) -> list[ColumnElement[bool]]:
    """Locations within `metres` of the centre: the box around the circle (which the position
    index answers), then the circle."""
    degrees = metres / METRES_PER_DEGREE * (1 + 1e-9)  # the box a little wider than rounding
    across = degrees / max(centre.longitude_scale, 1e-6)
    return [
        ServiceAtLocation.latitude.between(centre.latitude - degrees, centre.latitude + degrees),
        ServiceAtLocation.longitude.between(centre.longitude - across, centre.longitude + across),
        _distance(centre) <= centre.radius_squared(metres),
    ]


def _sal_query(
    session: AsyncSession, filters: Filters, *, columns: list[Any] | None = None
) -> tuple[Select[Any], list[Any]]:
    columns = columns or [ServiceAtLocation.document, Service.document]
    query = select(*columns).join(Service, Service.id == ServiceAtLocation.service_id)
    query, order = _with_search(session, query, filters)
    query = query.where(*_sal_conditions(filters))
    return query, [*order, *_sal_order(filters)]


def _sal_conditions(filters: Filters) -> list[ColumnElement[bool]]:
    conditions = _service_conditions(filters)
    if filters.centre is not None and filters.proximity_m is not None:
        conditions.extend(_within(filters.centre, filters.proximity_m))
    return conditions


def _sal_order(filters: Filters) -> list[Any]:
    """After relevance (when searching): distance (unlocated last), then name."""
    order: list[Any] = []
    if filters.centre is not None:
        order = [ServiceAtLocation.latitude.is_(None), _distance(filters.centre)]
    return [*order, Service.name, ServiceAtLocation.id]


async def _count_sals(session: AsyncSession, filters: Filters, words: list[str]) -> int:
    service_conditions = _service_conditions(filters)
    query = select(func.count()).select_from(ServiceAtLocation)
    if service_conditions:
        query = query.join(Service, Service.id == ServiceAtLocation.service_id).where(*service_conditions)
    if filters.centre is not None and filters.proximity_m is not None:
        query = query.where(*_within(filters.centre, filters.proximity_m))
    if words:
        key: Any = ServiceAtLocation.service_id
        if _sqlite(session) and filters.centre is not None and filters.proximity_m is not None:
            # Test the locations in the box against the set of matches, rather than look up the
            # locations of every match.
            key = literal_column("+directory_service_at_locations.service_id")
        query = query.where(key.in_(_matching_ids(session, words)))
    return int(await session.scalar(query) or 0)


async def _nearest(
    session: AsyncSession, filters: Filters, *, offset: int, limit: int, total: int
) -> list[Any] | None:
    """Nearest first without a search or proximity: a circle around the centre, grown until it
    holds the page. None when it would have to hold nearly everything."""
    assert filters.centre is not None
    wanted = min(limit, total - offset)
    metres = 2_000.0
    while metres <= 256_000:
        query = (
            select(ServiceAtLocation.id, Service.id)
            .join(Service, Service.id == ServiceAtLocation.service_id)
            .where(*_service_conditions(filters), *_within(filters.centre, metres))
            .order_by(*_sal_order(filters))
            .offset(offset)
            .limit(limit)
        )
        rows = list((await session.execute(query)).all())
        if len(rows) >= wanted:
            return rows
        metres *= 4
    return None


async def service_at_locations(
    session: AsyncSession, filters: Filters, *, offset: int, limit: int | None
) -> tuple[list[tuple[str, str]], int]:
    words = search_terms(filters.search or "")
    total = await _count_sals(session, filters, words)
    if offset >= total:
        return [], total
    keys: list[Any] | None = None
    if words:
        conditions = _sal_conditions(filters)

        async def page(candidates: Any) -> list[Any]:
            query = (
                select(ServiceAtLocation.id, Service.id)
                .join(Service, Service.id == ServiceAtLocation.service_id)
                .join(candidates, candidates.c.service_id == Service.id)
                .where(*conditions)
                .order_by(candidates.c.score, *_sal_order(filters))
                .offset(offset)
                .limit(limit)
            )
            return list((await session.execute(query)).all())

        keys = await _bounded(
            session, words, offset=offset, limit=limit, total=total, filtered=bool(conditions), page=page
        )
    elif filters.centre is not None and filters.proximity_m is None and limit is not None:
        keys = await _nearest(session, filters, offset=offset, limit=limit, total=total)
    if keys is None:
        query, order = _sal_query(session, filters, columns=[ServiceAtLocation.id, Service.id])
        query = query.order_by(*order).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        keys = list((await session.execute(query)).all())
    keys = [(sal_id, service_id) for sal_id, service_id in keys]
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
