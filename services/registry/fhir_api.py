"""FHIR R4 (UK Core) views of the registry under `/registry/fhir/`: read by id and search by
identifier for Organization, HealthcareService (teams), Location (places) and PractitionerRole
(team memberships and leadership roles). Answers are `application/fhir+json`; errors are
OperationOutcome, as FHIR clients expect."""

from __future__ import annotations

import json
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from services.registry import fhir, store
from services.registry.models import RegistryRow
from services.registry.schemas import Kind, RecordOut
from shared.auth import Caller, requires
from shared.deps import DatabaseDep
from shared.fhir import (
    check_format,
    fhir_base,
    fhir_response,
    invalid,
    not_found,
    paging,
    resource_response,
    searchset,
)

router = APIRouter(prefix="/registry/fhir", tags=["registry FHIR"])


def _split_identifier(identifier: str) -> tuple[str | None, str]:
    system, bar, value = identifier.partition("|")
    return (system or None, value) if bar else (None, identifier)


async def _current(session: AsyncSession, kind: Kind, record_id: str) -> RecordOut | None:
    try:
        found = await store.timeline(session, kind, record_id)
    except store.NotFound:
        return None
    return store.row_out(found.current(store.today()), found.record.version)


def _out(row: RegistryRow, version: int, day: date) -> RecordOut:
    return store.row_out(row, version, day)


async def _coverage_places(session: AsyncSession, team: RecordOut, day: date) -> list[str]:
    rows, _ = await store.live_rows_at(session, Kind.PLACE, day)
    coverage = set(team.attributes.get("coverage", []))
    return [
        row.record_id for row, _v in rows if coverage & set(json.loads(row.attributes)["postcode_districts"])
    ]


async def _role_resource(session: AsyncSession, role: RecordOut) -> dict[str, Any] | None:
    practitioner = await _current(session, Kind.PRACTITIONER, role.attributes["practitioner_id"])
    if practitioner is None:
        return None
    if role.kind is Kind.MEMBERSHIP:
        team = await _current(session, Kind.TEAM, role.attributes["team_id"])
        return fhir.practitioner_role_for_membership(role, practitioner, team) if team else None
    network_id, pathway_id = role.attributes.get("network_id"), role.attributes.get("pathway_id")
    led = (
        await _current(session, Kind.NETWORK, network_id)
        if network_id
        else await _current(session, Kind.PATHWAY, pathway_id)
        if pathway_id
        else None
    )
    return fhir.practitioner_role_for_leadership(role, practitioner, led=led)


def _base(request: Request) -> str:
    return fhir_base(request)


@router.get("/Organization/{record_id}", summary="Read an Organization")
async def read_organization(
    record_id: str, request: Request, db: DatabaseDep, caller: Caller = requires("registry:read")
) -> JSONResponse:
    check_format(request)
    async with db.session() as session:
        record = await _current(session, Kind.ORGANISATION, record_id)
    if record is None:
        raise not_found("Organization", record_id)
    return resource_response(fhir.organization(record))


@router.get("/HealthcareService/{record_id}", summary="Read a HealthcareService (a team)")
async def read_healthcare_service(
    record_id: str, request: Request, db: DatabaseDep, caller: Caller = requires("registry:read")
) -> JSONResponse:
    check_format(request)
    async with db.session() as session:
        team = await _current(session, Kind.TEAM, record_id)
        if team is None:
            raise not_found("HealthcareService", record_id)
        places = await _coverage_places(session, team, store.today())
    return resource_response(fhir.healthcare_service(team, coverage_place_ids=places))


@router.get("/Location/{record_id}", summary="Read a Location (a place)")
async def read_location(
    record_id: str, request: Request, db: DatabaseDep, caller: Caller = requires("registry:read")
) -> JSONResponse:
    check_format(request)
    async with db.session() as session:
        place = await _current(session, Kind.PLACE, record_id)
    if place is None:
        raise not_found("Location", record_id)
    return resource_response(fhir.location_for_place(place))


@router.get("/PractitionerRole/{record_id}", summary="Read a PractitionerRole")
async def read_practitioner_role(
    record_id: str, request: Request, db: DatabaseDep, caller: Caller = requires("registry:read")
) -> JSONResponse:
    check_format(request)
    async with db.session() as session:
        role = await _current(session, Kind.MEMBERSHIP, record_id) or await _current(
            session, Kind.LEADERSHIP_ROLE, record_id
        )
        resource = await _role_resource(session, role) if role else None
    if resource is None:
        raise not_found("PractitionerRole", record_id)
    return resource_response(resource)


SEARCHABLE: dict[str, tuple[Kind, dict[str, str | None]]] = {
    # resource type: (kind searched, identifier system → organisation code_system it means)
    "Organization": (
        Kind.ORGANISATION,
        {url: system.value for system, url in fhir.IDENTIFIER_SYSTEMS.items()},
    ),
    "HealthcareService": (Kind.TEAM, {fhir.TEAM_SYSTEM: None}),
    "Location": (Kind.PLACE, {fhir.PLACE_SYSTEM: None}),
    "PractitionerRole": (Kind.PRACTITIONER, {fhir.STAFF_SYSTEM: None}),
}


async def _resources_for(
    session: AsyncSession, resource_type: str, record: RecordOut, day: date
) -> list[dict[str, Any]]:
    if resource_type == "Organization":
        return [fhir.organization(record)]
    if resource_type == "Location":
        return [fhir.location_for_place(record)]
    if resource_type == "HealthcareService":
        return [
            fhir.healthcare_service(record, coverage_place_ids=await _coverage_places(session, record, day))
        ]
    # A practitioner's roles: team memberships and leadership roles held today.
    resources = []
    for role_kind in (Kind.MEMBERSHIP, Kind.LEADERSHIP_ROLE):
        rows, _ = await store.live_rows_at(session, role_kind, day)
        for row, version in rows:
            if json.loads(row.attributes)["practitioner_id"] == record.id:
                resource = await _role_resource(session, _out(row, version, day))
                if resource is not None:
                    resources.append(resource)
    return resources


@router.get("/{resource_type}", summary="Search by identifier (system|value)")
async def search(
    resource_type: str,
    request: Request,
    db: DatabaseDep,
    caller: Caller = requires("registry:read"),
    identifier: Annotated[str | None, Query(max_length=200)] = None,
) -> JSONResponse:
    check_format(request)
    if resource_type not in SEARCHABLE:
        raise invalid(f"{resource_type} is not served here", status=404, code="not-supported")
    unknown = set(request.query_params) - {"identifier", "_count", "_offset", "_format"}
    if unknown:
        raise invalid(f"unsupported search parameters: {', '.join(sorted(unknown))}")
    page = paging(request)
    kind, systems = SEARCHABLE[resource_type]
    if identifier is None and resource_type != "Location":
        raise invalid("search by identifier=system|value", code="required")
    system, value = _split_identifier(identifier) if identifier else (None, None)
    base = _base(request)
    if system is not None and system not in systems:
        return fhir_response(searchset(request, [], base=base, total=0, page=page))
    if value is not None and not value:
        raise invalid("identifier needs a value", code="value")
    day = store.today()
    resources: list[dict[str, Any]] = []
    async with db.session() as session:
        code = value.upper() if value is not None and kind is Kind.ORGANISATION else value
        rows, _ = await store.live_rows_at(session, kind, day, code=code)
        for row, version in rows:
            record = _out(row, version, day)
            if system is not None and systems[system] not in (None, record.attributes.get("code_system")):
                continue  # the same digits in another organisation numbering
            resources.extend(await _resources_for(session, resource_type, record, day))
    chosen = resources[page.offset : page.offset + page.count]
    return fhir_response(searchset(request, chosen, base=base, total=len(resources), page=page))
