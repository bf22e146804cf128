"""The public Open Referral UK read API under `/directory` (no token; the gateway opens CORS).

Endpoints and parameters follow the HSDS 3.0 API reference and the UK profile: the Page envelope,
cumulative (AND) filters, `format=ndjson` streaming every result unpaginated, `postcode` +
`proximity` on service_at_locations. Local additions carry an `x_` prefix.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy import Select, func, select

from contracts.postcodes import InvalidPostcode, normalise_postcode
from services.directory import oruk, queries
from services.directory.domain import PlanarFrame, ScheduleError, parse_day
from services.directory.models import Organization, Service, ServiceAtLocation, Taxonomy, TaxonomyTerm
from services.directory.schemas import (
    OrukAbout,
    OrukDocument,
    OrukLocatedPage,
    OrukNamed,
    OrukOrganization,
    OrukPage,
)
from shared.db import Database
from shared.deps import DatabaseDep
from shared.errors import Problem, problems
from shared.http import request_public_url

router = APIRouter(prefix="/directory", tags=["directory (Open Referral UK)"])
MAX_PER_PAGE = 200
NDJSON = "application/x-ndjson"
# A list as a page (JSON), or with format=ndjson every result streamed, one a line.
STREAMED: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A page (JSON), or every result (NDJSON)",
        "content": {NDJSON: {"schema": {"type": "string"}}},
    }
}

PUBLISHER = {
    "name": "CMH Suite — Lancashire and South Cumbria community mental health",
    "description": "VCFSE partner services that work with community mental health teams, moderated.",
    "url": "https://cmh-suite.nhs.uk/directory",
}

Page = Annotated[int, Query(ge=1, le=100_000, description="Page number (from 1)")]
PerPage = Annotated[int, Query(ge=1, le=MAX_PER_PAGE, description=f"Items per page (at most {MAX_PER_PAGE})")]
Search = Annotated[str | None, Query(max_length=200, description="Full-text search, ranked by relevance")]
Format = Annotated[Literal["json", "ndjson"], Query(description="`ndjson` streams every result, unpaginated")]


def _not_found(what: str) -> Problem:
    return Problem(404, f"No such {what}", type_slug="not-found")


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _day(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return parse_day(value)
    except ScheduleError as exc:
        raise Problem(
            422,
            "Bad day",
            str(exc),
            type_slug="validation",
            errors=[{"location": ["query", "day"], "message": str(exc), "type": "value_error"}],
        ) from None


async def _document_page(
    db: Database, query: Select[Any], *, page: int, per_page: int, shape: Any = None
) -> dict[str, Any]:
    """A Page of stored documents: `query` selects the document column, already ordered."""
    async with db.session() as session:
        total = int(
            await session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
        )
        rows = (await session.scalars(query.offset((page - 1) * per_page).limit(per_page))).all()
    contents = [json.loads(row) for row in rows]
    return oruk.page(
        [shape(c) for c in contents] if shape else contents, total=total, page_number=page, per_page=per_page
    )


async def _document(db: Database, column: Any, key: Any, value: uuid.UUID, what: str) -> dict[str, Any]:
    async with db.session() as session:
        document = await session.scalar(select(column).where(key == str(value)))
    if document is None:
        raise _not_found(what)
    return json.loads(document)  # type: ignore[no-any-return]


def _ndjson(lines: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        async for item in lines:
            yield json.dumps(item, separators=(",", ":")).encode() + b"\n"

    return StreamingResponse(body(), media_type=NDJSON)


def _filters(
    search: str | None,
    taxonomy_term_id: uuid.UUID | None,
    taxonomy_id: uuid.UUID | None,
    organization_id: uuid.UUID | None,
    modified_after: datetime | None,
    minimum_age: float | None,
    maximum_age: float | None,
    day: str | None,
    start_time: time | None,
    end_time: time | None,
    **place: Any,
) -> queries.Filters:
    """The filters /services and /service_at_locations share (HSDS: cumulative, AND)."""
    return queries.Filters(
        search=search,
        taxonomy_term_id=str(taxonomy_term_id) if taxonomy_term_id else None,
        taxonomy_id=str(taxonomy_id) if taxonomy_id else None,
        organization_id=str(organization_id) if organization_id else None,
        modified_after=_utc(modified_after),
        minimum_age=minimum_age,
        maximum_age=maximum_age,
        day=_day(day),
        start_time=start_time,
        end_time=end_time,
        **place,
    )


@router.get("/", response_model=OrukAbout, summary="About this API (HSDS version, profile, publisher)")
@router.get("", include_in_schema=False)
async def about(request: Request, db: DatabaseDep) -> dict[str, Any]:
    async with db.session() as session:
        services = int(await session.scalar(select(func.count()).select_from(Service)) or 0)
    return {
        "version": oruk.HSDS_VERSION,
        "profile": oruk.UK_PROFILE,
        "openapi_url": request_public_url(request, "/directory/openapi.json"),
        "publisher": PUBLISHER,
        "x_services": services,
    }


@router.get("/openapi.json", summary="The OpenAPI description of this directory API")
async def openapi(request: Request) -> dict[str, Any]:
    document = request.app.openapi()
    paths = {
        path: ops
        for path, ops in document["paths"].items()
        if path.startswith("/directory")
        and "partner" not in path
        and "moderation" not in path
        and "handovers" not in path
    }
    return {**document, "paths": paths}


@router.get(
    "/services",
    response_model=OrukPage,
    responses={**STREAMED, **problems(422)},
    summary="List services",
    description=(
        "Search the directory of community and VCFSE services (Open Referral UK, public, no token): "
        "free text (`search`), taxonomy, organisation, ages, opening day and times, paged. For "
        "example `?search=bereavement&minimum_age=18&day=MO`."
    ),
)
async def list_services(
    db: DatabaseDep,
    search: Search = None,
    page: Page = 1,
    per_page: PerPage = 50,
    taxonomy_term_id: uuid.UUID | None = None,
    taxonomy_id: uuid.UUID | None = None,
    organization_id: uuid.UUID | None = None,
    modified_after: datetime | None = None,
    minimal: bool = False,
    full: bool = False,
    minimum_age: Annotated[float | None, Query(ge=0, le=130)] = None,
    maximum_age: Annotated[float | None, Query(ge=0, le=130)] = None,
    day: Annotated[str | None, Query(max_length=10, description="MO..SU or monday..sunday")] = None,
    start_time: time | None = None,
    end_time: time | None = None,
    format: Format = "json",
) -> Any:
    filters = _filters(
        search, taxonomy_term_id, taxonomy_id, organization_id, modified_after, minimum_age, maximum_age, day,
        start_time, end_time,
    )  # fmt: skip

    def shape(document: dict[str, Any]) -> dict[str, Any]:
        if minimal:
            return oruk.minimal_item(document)
        return document if full else oruk.service_list_item(document)

    if format == "ndjson":

        async def lines() -> AsyncIterator[dict[str, Any]]:
            async with db.session() as session:
                async for document in queries.stream_services(session, filters):
                    yield shape(json.loads(document))

        return _ndjson(lines())
    async with db.session() as session:
        documents, total = await queries.services(
            session, filters, offset=(page - 1) * per_page, limit=per_page
        )
    return oruk.page(
        [shape(json.loads(d)) for d in documents], total=total, page_number=page, per_page=per_page
    )


@router.get(
    "/services/{service_id}",
    response_model=OrukNamed,
    responses=problems(404, 422),
    summary="Read one service, fully nested",
)
async def read_service(service_id: uuid.UUID, db: DatabaseDep) -> JSONResponse:
    return JSONResponse(await _document(db, Service.document, Service.id, service_id, "service"))


@router.get(
    "/organizations",
    response_model=OrukPage,
    responses={**STREAMED, **problems(422)},
    summary="List organisations",
)
async def list_organizations(
    db: DatabaseDep,
    search: Search = None,
    page: Page = 1,
    per_page: PerPage = 50,
    full: bool = False,
    full_service: Annotated[
        bool,
        Query(
            description="Each organisation with its services, each fully nested (as one organisation's read)"
        ),
    ] = False,
    format: Format = "json",
) -> Any:
    query = select(Organization.document)
    if search:
        query = query.where(func.lower(Organization.name).contains(search.strip().lower()))
    query = query.order_by(Organization.name, Organization.id)
    shape = (lambda d: d) if full else oruk.organization_list_item
    if format == "ndjson":

        async def lines() -> AsyncIterator[dict[str, Any]]:
            async with db.session() as session:
                async for document in await session.stream_scalars(query):
                    yield shape(json.loads(document))

        return _ndjson(lines())
    async with db.session() as session:
        total = int(await session.scalar(select(func.count()).select_from(query.subquery())) or 0)
        documents = (await session.scalars(query.offset((page - 1) * per_page).limit(per_page))).all()
        items = [shape(json.loads(d)) for d in documents]
        if full_service and items:
            # One statement for the page's organisations, not one per organisation.
            nested: dict[str, list[dict[str, Any]]] = {item["id"]: [] for item in items}
            rows = await session.execute(
                select(Service.organization_id, Service.document)
                .where(Service.organization_id.in_(list(nested)))
                .order_by(Service.name)
            )
            for organization_id, document in rows:
                nested[organization_id].append(json.loads(document))
            for item in items:
                item["services"] = nested[item["id"]]
    return oruk.page(items, total=total, page_number=page, per_page=per_page)


@router.get(
    "/organizations/{organization_id}",
    response_model=OrukOrganization,
    responses=problems(404, 422),
    summary="Read one organisation with its services",
)
async def read_organization(
    organization_id: uuid.UUID, db: DatabaseDep, full_service: bool = False
) -> JSONResponse:
    async with db.session() as session:
        organization = await session.get(Organization, str(organization_id))
        if organization is None:
            raise _not_found("organization")
        services = (
            await session.scalars(
                select(Service.document)
                .where(Service.organization_id == organization.id)
                .order_by(Service.name)
            )
        ).all()
    document = json.loads(organization.document)
    nested = [json.loads(s) for s in services]
    document["services"] = nested if full_service else [oruk.service_list_item(s) for s in nested]
    return JSONResponse(document)


@router.get("/taxonomies", response_model=OrukPage, responses=problems(422), summary="List taxonomies")
async def list_taxonomies(
    db: DatabaseDep, page: Page = 1, per_page: PerPage = 50, search: Search = None
) -> dict[str, Any]:
    query = select(Taxonomy.document)
    if search:
        query = query.where(func.lower(Taxonomy.name).contains(search.strip().lower()))
    query = query.order_by(Taxonomy.name, Taxonomy.id)
    return await _document_page(db, query, page=page, per_page=per_page)


@router.get(
    "/taxonomies/{taxonomy_id}",
    response_model=OrukNamed,
    responses=problems(404, 422),
    summary="Read one taxonomy",
)
async def read_taxonomy(taxonomy_id: uuid.UUID, db: DatabaseDep) -> JSONResponse:
    return JSONResponse(await _document(db, Taxonomy.document, Taxonomy.id, taxonomy_id, "taxonomy"))


@router.get(
    "/taxonomy_terms", response_model=OrukPage, responses=problems(422), summary="List taxonomy terms"
)
async def list_taxonomy_terms(
    db: DatabaseDep,
    page: Page = 1,
    per_page: PerPage = 50,
    taxonomy_id: uuid.UUID | None = None,
    parent_id: uuid.UUID | None = None,
    top_only: Annotated[bool, Query(description="Only terms that are not a child of another term")] = False,
    search: Search = None,
) -> dict[str, Any]:
    query = select(TaxonomyTerm.document)
    if top_only:
        query = query.where(TaxonomyTerm.parent_id.is_(None))
    if taxonomy_id:
        query = query.where(TaxonomyTerm.taxonomy_id == str(taxonomy_id))
    if parent_id:
        query = query.where(TaxonomyTerm.parent_id == str(parent_id))
    if search:
        query = query.where(func.lower(TaxonomyTerm.name).contains(search.strip().lower()))
    query = query.order_by(TaxonomyTerm.name, TaxonomyTerm.id)
    return await _document_page(db, query, page=page, per_page=per_page)


@router.get(
    "/taxonomy_terms/{term_id}",
    response_model=OrukNamed,
    responses=problems(404, 422),
    summary="Read one taxonomy term",
)
async def read_taxonomy_term(term_id: uuid.UUID, db: DatabaseDep) -> JSONResponse:
    return JSONResponse(await _document(db, TaxonomyTerm.document, TaxonomyTerm.id, term_id, "taxonomy term"))


def _centre(
    postcode: str | None, latitude: float | None, longitude: float | None, proximity: float | None
) -> tuple[str | None, PlanarFrame | None, dict[str, Any] | None]:
    """(district, centre, note): the postcode's district centroid, else the caller's coordinates."""
    if (latitude is None) != (longitude is None):
        raise Problem(422, "Give latitude and longitude together", type_slug="validation")
    district = None
    note: dict[str, Any] | None = None
    centre = PlanarFrame(latitude, longitude) if latitude is not None and longitude is not None else None
    if postcode is not None:
        try:
            formatted, district = normalise_postcode(postcode)
        except InvalidPostcode as exc:
            raise Problem(
                422,
                "Bad postcode",
                str(exc),
                type_slug="validation",
                errors=[{"location": ["query", "postcode"], "message": str(exc), "type": "value_error"}],
            ) from None
        found = queries.district_centroids().get(district)
        note = {"postcode": formatted, "district": district, "centroid_known": found is not None}
        if found is not None:
            centre = PlanarFrame(*found)
            note["centre"] = {"latitude": found[0], "longitude": found[1], "source": "district centroid"}
        elif centre is not None:
            note["centre"] = {"latitude": centre.latitude, "longitude": centre.longitude, "source": "caller"}
        else:
            note["detail"] = "No centroid is known for this postcode district; give latitude and longitude."
    if proximity is not None and centre is None:
        raise Problem(
            422,
            "No centre for proximity",
            "proximity needs a postcode whose district is known, or latitude and longitude.",
            type_slug="validation",
            x_postcode=note,
        )
    return district, centre, note


@router.get(
    "/service_at_locations",
    response_model=OrukLocatedPage,
    response_model_exclude_unset=True,  # x_postcode only when a postcode was given
    responses={**STREAMED, **problems(422)},
    summary="List services at locations (postcode + proximity)",
)
async def list_service_at_locations(
    db: DatabaseDep,
    search: Search = None,
    page: Page = 1,
    per_page: PerPage = 50,
    taxonomy_term_id: uuid.UUID | None = None,
    taxonomy_id: uuid.UUID | None = None,
    organization_id: uuid.UUID | None = None,
    modified_after: datetime | None = None,
    full: bool = False,
    postcode: Annotated[str | None, Query(max_length=10)] = None,
    proximity: Annotated[float | None, Query(gt=0, le=500_000, description="Metres from the centre")] = None,
    latitude: Annotated[
        float | None, Query(ge=-90, le=90, description="Centre when the district is unknown")
    ] = None,
    longitude: Annotated[float | None, Query(ge=-180, le=180)] = None,
    minimum_age: Annotated[float | None, Query(ge=0, le=130)] = None,
    maximum_age: Annotated[float | None, Query(ge=0, le=130)] = None,
    day: Annotated[str | None, Query(max_length=10)] = None,
    start_time: time | None = None,
    end_time: time | None = None,
    format: Format = "json",
) -> Any:
    district, centre, note = _centre(postcode, latitude, longitude, proximity)
    filters = _filters(
        search, taxonomy_term_id, taxonomy_id, organization_id, modified_after, minimum_age, maximum_age, day,
        start_time, end_time, district=district, centre=centre, proximity_m=proximity,
    )  # fmt: skip

    def shape(sal_document: str, service_document: str) -> dict[str, Any]:
        sal, service = json.loads(sal_document), json.loads(service_document)
        location = sal["location"]
        distance = None
        if centre is not None and location.get("latitude") is not None:
            distance = centre.metres(location["latitude"], location["longitude"])
        return oruk.service_at_location_item(sal, service, full=full, distance_m=distance)

    if format == "ndjson":

        async def lines() -> AsyncIterator[dict[str, Any]]:
            async with db.session() as session:
                async for sal, service in queries.stream_service_at_locations(session, filters):
                    yield shape(sal, service)

        return _ndjson(lines())
    async with db.session() as session:
        rows, total = await queries.service_at_locations(
            session, filters, offset=(page - 1) * per_page, limit=per_page
        )
    body = oruk.page(
        [shape(sal, service) for sal, service in rows], total=total, page_number=page, per_page=per_page
    )
    if note is not None:
        body["x_postcode"] = note
    return body


@router.get(
    "/service_at_locations/{sal_id}",
    response_model=OrukDocument,
    responses=problems(404, 422),
    summary="Read one service at a location",
)
async def read_service_at_location(sal_id: uuid.UUID, db: DatabaseDep) -> JSONResponse:
    async with db.session() as session:
        row = (
            await session.execute(
                select(ServiceAtLocation.document, Service.document)
                .join(Service, Service.id == ServiceAtLocation.service_id)
                .where(ServiceAtLocation.id == str(sal_id))
            )
        ).first()
    if row is None:
        raise _not_found("service at location")
    return JSONResponse(oruk.service_at_location_item(json.loads(row[0]), json.loads(row[1]), full=True))
