"""`/registry`: list, read, create, change, retire and history of every kind of record (typed per
kind), `as_at` reads, ETag / If-Match concurrency, and `/registry/resolve`."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field, create_model
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.coverage import Resolution, resolve
from contracts.postcodes import InvalidPostcode
from contracts.timezones import london_date
from services.registry import store
from services.registry.domain import Validity
from services.registry.schemas import (
    ATTRIBUTES,
    COLLECTIONS,
    HistoryEntry,
    Kind,
    Page,
    RecordOut,
    ServiceOffer,
)
from services.registry.state import RegistryStateDep
from shared.auth import Caller, requires
from shared.deps import DatabaseDep, NowDep
from shared.errors import Problem, problems, rule_broken
from shared.http import request_public_url
from shared.idempotency import OptionalIdempotency, create_once
from shared.params import PageNumber
from shared.preconditions import ANY, RequiredIfMatch, etag, expected_version, precondition_failed

router = APIRouter(prefix="/registry", tags=["registry"], responses=problems(401, 403, 422))


def rule_problem(field: str, message: str, location: tuple[str, ...] = ("body",)) -> Problem:
    return rule_broken("registry", field, message, location)


async def _guard(work: Awaitable[RecordOut], location: tuple[str, ...] = ("body", "attributes")) -> RecordOut:
    """Map store outcomes to HTTP problems (the transaction rolls back on any of them)."""
    try:
        return await work
    except store.RuleBroken as broken:
        where = ("body",) if broken.field in {"valid_from", "valid_to", "effective_from", "id"} else location
        raise rule_problem(broken.field, broken.message, where) from None
    except store.NotFound:
        raise Problem(404, "No such record", type_slug="not-found") from None
    except store.VersionMismatch as mismatch:
        raise precondition_failed(
            mismatch.current, "Record has changed", "Read it again and re-apply your change."
        ) from None


class RetireRequest(BaseModel):
    valid_to: date | None = Field(default=None, description="First day it no longer holds (default: today)")


def _register(collection: str, kind: Kind) -> None:
    attributes_model = ATTRIBUTES[kind]
    title = "".join(part.capitalize() for part in kind.value.split("_"))
    create_body = create_model(
        f"{title}Create",
        attributes=(attributes_model, ...),
        valid_from=(date | None, Field(default=None, description="Default: today (Europe/London)")),
        valid_to=(date | None, None),
    )
    change_body = create_model(
        f"{title}Change",
        attributes=(attributes_model, ...),
        effective_from=(date | None, Field(default=None, description="Default: today (Europe/London)")),
    )

    async def list_records(
        db: DatabaseDep,
        caller: Caller = requires("registry:read"),
        as_at: Annotated[date | None, Query(description="Records in force on this date")] = None,
        code: Annotated[str | None, Query(max_length=64, description="ODS code, key or staff id")] = None,
        ref_id: Annotated[str | None, Query(max_length=64, description="Parent, network or team id")] = None,
        name: Annotated[str | None, Query(max_length=100)] = None,
        page: PageNumber = 1,
        per_page: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> Page:
        day = as_at or store.today()
        async with db.session() as session:
            rows, total = await store.live_rows_at(
                session,
                kind,
                day,
                code=code.upper() if code and kind is Kind.ORGANISATION else code,
                ref_id=ref_id,
                name_contains=name,
                offset=(page - 1) * per_page,
                limit=per_page,
            )
        return Page(
            items=[store.row_out(row, version, day) for row, version in rows],
            page=page,
            per_page=per_page,
            total=total,
        )

    async def read_record(
        record_id: str,
        db: DatabaseDep,
        response: Response,
        caller: Caller = requires("registry:read"),
        as_at: Annotated[date | None, Query()] = None,
    ) -> RecordOut:
        async with db.session() as session:
            try:
                found = await store.timeline(session, kind, record_id)
            except store.NotFound:
                raise Problem(404, "No such record", type_slug="not-found") from None
        row = found.at(as_at) if as_at else found.current(store.today())
        if row is None:
            raise Problem(404, "Not in force on that date", type_slug="not-in-force")
        response.headers["ETag"] = etag(found.record.version)
        return store.row_out(row, found.record.version, as_at)

    async def record_history(
        record_id: str, db: DatabaseDep, caller: Caller = requires("registry:read")
    ) -> list[HistoryEntry]:
        async with db.session() as session:
            try:
                return await store.history(session, kind, record_id)
            except store.NotFound:
                raise Problem(404, "No such record", type_slug="not-found") from None

    async def create_record(
        body: Any,
        request: Request,
        *,
        caller: Caller = requires("registry:admin"),  # authenticated before the key is looked at
        idempotency: OptionalIdempotency,
    ) -> Response:
        try:
            validity = Validity(body.valid_from or store.today(), body.valid_to)
        except ValueError as exc:
            raise rule_problem("valid_to", str(exc)) from None

        async def create(session: AsyncSession) -> Response:
            created = await _guard(store.create(session, kind, body.attributes, validity, caller.client_id))
            return Response(
                created.model_dump_json(),
                status_code=201,
                media_type="application/json",
                headers={
                    "ETag": etag(created.version),
                    "Location": request_public_url(request, f"/registry/{collection}/{created.id}"),
                },
            )

        return await create_once(request, caller, idempotency, create)

    async def change_record(
        record_id: str,
        body: Any,
        db: DatabaseDep,
        response: Response,
        caller: Caller = requires("registry:admin"),
        if_match: RequiredIfMatch = None,
    ) -> RecordOut:
        expected = expected_version(if_match, noun="record")
        async with db.transaction() as session:
            changed = await _guard(
                store.change(
                    session,
                    kind,
                    record_id,
                    body.attributes,
                    body.effective_from or store.today(),
                    None if expected == ANY else expected,
                    caller.client_id,
                )
            )
        response.headers["ETag"] = etag(changed.version)
        return changed

    async def retire_record(
        record_id: str,
        body: RetireRequest,
        db: DatabaseDep,
        response: Response,
        caller: Caller = requires("registry:admin"),
        if_match: RequiredIfMatch = None,
    ) -> RecordOut:
        expected = expected_version(if_match, noun="record")
        async with db.transaction() as session:
            retired = await _guard(
                store.retire(
                    session,
                    kind,
                    record_id,
                    body.valid_to or store.today(),
                    None if expected == ANY else expected,
                    caller.client_id,
                )
            )
        response.headers["ETag"] = etag(retired.version)
        return retired

    create_record.__annotations__["body"] = create_body
    change_record.__annotations__["body"] = change_body
    label = kind.value.replace("_", " ")
    router.add_api_route(
        f"/{collection}",
        list_records,
        methods=["GET"],
        response_model=Page,
        summary=f"List {label}s",
        name=f"list_{kind.value}",
    )
    router.add_api_route(
        f"/{collection}",
        create_record,
        methods=["POST"],
        response_model=RecordOut,
        status_code=201,
        responses=problems(400, 409, _400="Idempotency-Key malformed", _409="Idempotency-Key reused"),
        summary=f"Create a {label}",
        name=f"create_{kind.value}",
    )
    router.add_api_route(
        f"/{collection}/{{record_id}}",
        read_record,
        methods=["GET"],
        response_model=RecordOut,
        responses=problems(404, _404="No such record, or not in force on that date"),
        summary=f"Read a {label}",
        name=f"read_{kind.value}",
    )
    router.add_api_route(
        f"/{collection}/{{record_id}}",
        change_record,
        methods=["PUT"],
        response_model=RecordOut,
        responses=problems(400, 404, 412, 428, _400="Bad If-Match"),
        summary=f"Change a {label} from a date",
        name=f"change_{kind.value}",
    )
    router.add_api_route(
        f"/{collection}/{{record_id}}/retire",
        retire_record,
        methods=["POST"],
        response_model=RecordOut,
        responses=problems(400, 404, 412, 428, _400="Bad If-Match"),
        summary=f"Retire a {label}",
        name=f"retire_{kind.value}",
    )
    router.add_api_route(
        f"/{collection}/{{record_id}}/history",
        record_history,
        methods=["GET"],
        response_model=list[HistoryEntry],
        responses=problems(404),
        summary=f"Change history of a {label}",
        name=f"history_{kind.value}",
    )


# --- resolve -----------------------------------------------------------------------------------


class NamedRef(BaseModel):
    id: str
    key: str
    name: str


class TeamMatch(BaseModel):
    id: str
    key: str
    name: str
    network_id: str
    mhsds_team_type: str | None
    open: bool
    reasons: list[str]


class ResolveOut(BaseModel):
    postcode: str
    district: str
    at: datetime
    out_of_area: bool
    place: NamedRef | None
    network: NamedRef | None
    pathway: NamedRef | None
    alongside: list[str]
    offer: ServiceOffer | None
    teams: list[TeamMatch]
    reasons: list[str]


def resolution_out(resolution: Resolution, at: datetime) -> ResolveOut:
    def named(view: Any) -> NamedRef | None:
        return NamedRef(id=getattr(view, "id", view.key), key=view.key, name=view.name) if view else None

    return ResolveOut(
        postcode=resolution.postcode,
        district=resolution.district,
        at=at,
        out_of_area=resolution.out_of_area,
        place=named(resolution.place),
        network=named(resolution.network),
        pathway=named(resolution.pathway),
        alongside=[p.key for p in resolution.alongside],
        offer=ServiceOffer(resolution.offer) if resolution.offer else None,
        teams=[
            TeamMatch(
                id=c.team.id,
                key=c.team.key,
                name=c.team.name,
                network_id=c.team.network_id,
                mhsds_team_type=c.team.mhsds_team_type,
                open=c.open,
                reasons=list(c.reasons),
            )
            for c in resolution.teams
        ],
        reasons=list(resolution.reasons),
    )


@router.get("/resolve", response_model=ResolveOut, summary="Place, network, pathway and teams for a postcode")
async def resolve_postcode(
    state: RegistryStateDep,
    now: NowDep,
    postcode: Annotated[str, Query(min_length=2, max_length=16)],
    caller: Caller = requires("registry:read"),
    age: Annotated[int | None, Query(ge=0, le=130)] = None,
    offer: ServiceOffer | None = None,
    at: Annotated[datetime | None, Query(description="When (with a time zone); default now")] = None,
) -> ResolveOut:
    moment = at or now
    if moment.tzinfo is None:
        raise rule_problem("at", "give the time with a time zone offset", ("query",))
    async with state.db.session() as session:
        snapshot = await state.snapshots.get(session, london_date(moment))
    try:
        resolution = resolve(snapshot, postcode, age, offer.value if offer else None, moment)
    except InvalidPostcode as exc:
        raise rule_problem("postcode", str(exc), ("query",)) from None
    return resolution_out(resolution, moment)


for _collection, _kind in COLLECTIONS.items():
    _register(_collection, _kind)
