"""FHIR R4 (UK Core) facade of triage under `/triage/fhir` (the gateway's `/fhir` forwards here).

- `POST /ServiceRequest` (`referral:submit`): a referral, taken in exactly as the native intake
  takes it; idempotent by `Idempotency-Key` and by conditional create (`If-None-Exist:
  identifier=<your system>|<value>`, matched among the caller's organisation's referrals).
- `GET /ServiceRequest/{id}` (and `/_history/{version}` for the current version), `GET /Task/{id}`,
  `GET /Patient/{id}` and searches of each (`referral:read`): partners see only what their
  organisation referred; clinicians (`triage:decide` / `crisis:respond`) see all. Audited.

Answers are `application/fhir+json`; errors are OperationOutcome (shared.errors, on FHIR paths).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Header, Request, Response
from sqlalchemy import ColumnElement, Select, and_, false, func, not_, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.vocabulary import Route
from services.triage import access, fhir, store
from services.triage.api import SERVICE, _audit
from services.triage.domain.decisions import ReferralStatus
from services.triage.domain.identity import nhs_number_valid
from services.triage.models import Decision, Person, Referral
from shared.audit import AuditAction, record_access
from shared.auth import Caller, requires
from shared.db import Database
from shared.deps import DatabaseDep
from shared.errors import Problem
from shared.fhir import (
    DateRange,
    check_format,
    dropped_warning,
    fhir_base,
    fhir_response,
    invalid,
    lenient_handling,
    not_found,
    paging,
    parse_date,
    parse_json_body,
    reference_id,
    resource_response,
    searchset,
    split_token,
    unknown_search_parameter,
)
from shared.fhir_terms import NHS_NUMBER_SYSTEM, TRIAGE_TASK_STATUS, service_request_status
from shared.idempotency import OptionalIdempotency, create_once

OWN_BASE = "/triage/fhir"
router = APIRouter(prefix=OWN_BASE, tags=["triage FHIR"])
FHIR_MEDIA_TYPES = ("application/fhir+json", "application/json")
# FHIR codes of each status value set, and the triage statuses each one means.
REQUEST_STATUS_CODES = frozenset(
    {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"}
)
TASK_STATUS_CODES = frozenset(
    {
        "draft", "requested", "received", "accepted", "rejected", "ready", "cancelled", "in-progress",
        "on-hold", "failed", "completed", "entered-in-error",
    }
)  # fmt: skip


async def _referral(session: AsyncSession, caller: Caller, resource_type: str, resource_id: str) -> Referral:
    return await _readable(session, caller, Referral, resource_type, resource_id)


async def _readable(
    session: AsyncSession, caller: Caller, model: type[access.Record], resource_type: str, resource_id: str
) -> access.Record:
    """The referral or person behind a FHIR read, or the FHIR not-found (audited if refused)."""
    missing = not_found(resource_type, resource_id)
    return await access.readable_record(
        session, caller, model, resource_id, missing=missing, resource_type=resource_type
    )


async def _decisions(session: AsyncSession, referral_ids: Sequence[str]) -> dict[str, list[Decision]]:
    found: dict[str, list[Decision]] = {referral_id: [] for referral_id in referral_ids}
    if referral_ids:
        rows = await session.scalars(
            select(Decision).where(Decision.referral_id.in_(referral_ids)).order_by(Decision.seq)
        )
        for decision in rows:
            found[decision.referral_id].append(decision)
    return found


async def _people(session: AsyncSession, person_ids: Sequence[str]) -> dict[str, Person]:
    if not person_ids:
        return {}
    rows = await session.scalars(select(Person).where(Person.id.in_(set(person_ids))))
    return {person.id: person for person in rows}


async def _service_requests(session: AsyncSession, referrals: Sequence[Referral]) -> list[dict[str, Any]]:
    decisions = await _decisions(session, [r.id for r in referrals])
    people = await _people(session, [r.person_id for r in referrals])
    return [fhir.service_request(r, people.get(r.person_id), decisions[r.id]) for r in referrals]


async def _tasks(session: AsyncSession, referrals: Sequence[Referral]) -> list[dict[str, Any]]:
    decisions = await _decisions(session, [r.id for r in referrals])
    return [fhir.task_for_triage(r, decisions[r.id]) for r in referrals]


def _location(base: str, resource: dict[str, Any]) -> str:
    return f"{base}/{resource['resourceType']}/{resource['id']}/_history/{resource['meta']['versionId']}"


# --- create ---------------------------------------------------------------------------------------


def _check_content_type(request: Request) -> None:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type not in FHIR_MEDIA_TYPES:
        raise invalid("send the resource as application/fhir+json", status=415, code="not-supported")


async def _resource(request: Request) -> Any:
    return parse_json_body(await request.body())


def _condition(header: str, identifiers: list[dict[str, str]]) -> dict[str, str]:
    """The partner identifier an `If-None-Exist` names; it must be one the resource carries, or a
    retry could never find what the first attempt made."""
    try:
        params = parse_qsl(header.strip(), keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise invalid("If-None-Exist is a search query: identifier=system|value") from None
    if len(params) != 1 or params[0][0] != "identifier":
        raise invalid(
            "If-None-Exist supports exactly one parameter: identifier=system|value", code="not-supported"
        )
    system, value = split_token(params[0][1])
    if not system or not value:
        raise invalid("If-None-Exist needs identifier=system|value (with the system)")
    wanted = {"system": system, "value": value}
    if wanted not in identifiers:
        raise invalid("If-None-Exist must name one of the ServiceRequest's own identifiers (system|value)")
    return wanted


async def _serialise(session: AsyncSession, organisation: str, wanted: dict[str, str]) -> None:
    """Conditional creates of one identifier take turns (PostgreSQL: an advisory lock; SQLite
    write transactions already run one at a time), so two racing retries make one referral."""
    if session.bind.dialect.name == "postgresql":
        key = "\x00".join(("triage-fhir-identifier", organisation, wanted["system"], wanted["value"]))
        digest = hashlib.sha256(key.encode()).digest()
        await session.execute(
            text("SELECT pg_advisory_xact_lock(:lock)"),
            {"lock": int.from_bytes(digest[:8], "big", signed=True)},
        )


def _partner_identifier_matches(session: AsyncSession, fragment: str) -> ColumnElement[bool]:
    """Referrals whose details hold this exact identifier JSON. LIKE (escaped) narrows; on SQLite,
    whose LIKE ignores case, `instr` makes it exact (identifier values are case-sensitive)."""
    condition = Referral.details.contains(fragment, autoescape=True)
    if session.bind.dialect.name == "sqlite":
        condition = and_(condition, func.instr(Referral.details, fragment) > 0)
    return condition


def _refused(refusal: store.Refused) -> Problem:
    element = fhir.element_for([refusal.field])
    return Problem(
        422,
        "Triage rule broken",
        f"{element}: {refusal.message.replace(refusal.field, element.rsplit('.', 1)[-1])}",
        type_slug="triage-rule",
        fhir_code="business-rule",
    )


@router.post("/ServiceRequest", status_code=201, summary="Create a referral (ServiceRequest)")
async def create_service_request(
    request: Request,
    *,
    caller: Caller = requires("referral:submit"),
    idempotency: OptionalIdempotency,
    if_none_exist: Annotated[str | None, Header(alias="If-None-Exist")] = None,
) -> Response:
    check_format(request)
    _check_content_type(request)
    resource = await _resource(request)
    lenient = lenient_handling(request)
    body = fhir.referral_from_service_request(resource, access.owner_of(caller), lenient=lenient)
    identifiers = fhir.partner_identifiers(resource)
    elements = fhir.partner_elements(resource, lenient=lenient)
    wanted = _condition(if_none_exist, identifiers) if if_none_exist is not None else None
    base = fhir_base(request)

    async def create(session: AsyncSession) -> Response:
        if wanted is not None:
            await _serialise(session, access.owner_of(caller), wanted)
            fragment = fhir.partner_identifier_fragment(wanted["system"], wanted["value"])
            matches = (
                await session.scalars(
                    select(Referral)
                    .where(access.own_referrals(caller), _partner_identifier_matches(session, fragment))
                    .limit(2)
                )
            ).all()
            if len(matches) > 1:
                raise Problem(
                    412,
                    "Precondition failed",
                    "If-None-Exist matches more than one ServiceRequest",
                    type_slug="multiple-matches",
                    fhir_code="multiple-matches",
                )
            if matches:
                _audit(session, caller, AuditAction.READ, matches)
                existing = (await _service_requests(session, matches))[0]
                return resource_response(existing, 200, location=_location(base, existing))
        try:
            referral = await store.submit(session, caller, body, crisis=False)
        except store.Refused as refusal:
            raise _refused(refusal) from None
        if identifiers:
            referral.details = fhir.with_partner_identifiers(referral.details, identifiers)
        if elements.kept:
            referral.details = fhir.with_partner_elements_kept(referral.details, elements.kept)
        _audit(session, caller, AuditAction.CREATE, [referral])
        await session.flush()
        created = (await _service_requests(session, [referral]))[0]
        if elements.dropped:
            # Lenient handling: accepted, and the answer says exactly what was not kept.
            return resource_response(
                dropped_warning(elements.dropped), 201, location=_location(base, created)
            )
        return resource_response(created, 201, location=_location(base, created))

    return await create_once(request, caller, idempotency, create)


# --- read -----------------------------------------------------------------------------------------


@router.get("/ServiceRequest/{resource_id}", summary="Read a referral (ServiceRequest)")
async def read_service_request(
    resource_id: str, request: Request, db: DatabaseDep, caller: Caller = requires("referral:read")
) -> Response:
    check_format(request)
    async with db.transaction() as session:
        referral = await _referral(session, caller, "ServiceRequest", resource_id)
        _audit(session, caller, AuditAction.READ, [referral])
        resource = (await _service_requests(session, [referral]))[0]
    return resource_response(resource)


@router.get(
    "/ServiceRequest/{resource_id}/_history/{version_id}",
    summary="Read a version of a ServiceRequest (only the current version is kept)",
)
async def vread_service_request(
    resource_id: str,
    version_id: str,
    request: Request,
    db: DatabaseDep,
    caller: Caller = requires("referral:read"),
) -> Response:
    check_format(request)
    async with db.transaction() as session:
        referral = await _referral(session, caller, "ServiceRequest", resource_id)
        if version_id != str(referral.version):
            raise Problem(
                404,
                "Not found",
                "Only the current version of a ServiceRequest is kept; read it without _history.",
                type_slug="not-found",
                fhir_code="not-found",
            )
        _audit(session, caller, AuditAction.READ, [referral])
        resource = (await _service_requests(session, [referral]))[0]
    return resource_response(resource)


@router.get("/Task/{resource_id}", summary="Read the triage of a referral (Task)")
async def read_task(
    resource_id: str, request: Request, db: DatabaseDep, caller: Caller = requires("referral:read")
) -> Response:
    check_format(request)
    async with db.transaction() as session:
        referral = await _referral(session, caller, "Task", resource_id)
        _audit(session, caller, AuditAction.READ, [referral])
        resource = (await _tasks(session, [referral]))[0]
    return resource_response(resource)


def _audit_people(
    session: AsyncSession, caller: Caller, action: AuditAction, people: Sequence[Person]
) -> None:
    ids = [person.id for person in people]
    record_access(
        session, caller, service=SERVICE, action=action, resource_type="Patient",
        resource_ids=ids, person_ids=sorted(set(ids)),
    )  # fmt: skip


@router.get("/Patient/{resource_id}", summary="Read a person (Patient)")
async def read_patient(
    resource_id: str, request: Request, db: DatabaseDep, caller: Caller = requires("referral:read")
) -> Response:
    check_format(request)
    async with db.transaction() as session:
        person = await _readable(session, caller, Person, "Patient", resource_id)
        _audit_people(session, caller, AuditAction.READ, [person])
        resource = fhir.patient(person)
    return resource_response(resource)


# --- search ---------------------------------------------------------------------------------------


def _parameters(request: Request, resource_type: str) -> list[tuple[str, str]]:
    """The search parameters given, each supported and with a value (else 400)."""
    supported = fhir.SEARCH_PARAMETERS[resource_type]
    given = []
    for name, value in request.query_params.multi_items():
        if name in fhir.CONTROL_PARAMETERS:
            continue
        if name not in supported:
            raise unknown_search_parameter(name, resource_type, "see the CapabilityStatement")
        if not value.strip():
            raise invalid(
                f"search parameter {name} needs a value", expression=name, outcome_code="MSG_PARAM_INVALID"
            )
        given.append((name, value.strip()))
    return given


def _any_of(value: str) -> list[str]:
    """A comma-separated list of values: any of them matches (FHIR `,` is OR)."""
    values = [part.strip() for part in value.split(",")]
    if not all(values):
        raise invalid("a search value list has an empty entry")
    return values


def _ids(value: str) -> list[str]:
    ids = _any_of(value)
    if any(len(i) > 64 for i in ids):
        raise invalid("ids are at most 64 characters")
    return ids


def _nhs_number_token(value: str, parameter: str) -> str | None:
    """The NHS number a token names, or None when the token is in another system (matches nothing).
    A value that cannot be an NHS number (not 10 digits with a good check digit) is refused with
    400, naming the parameter: an empty Bundle would read as "no such person"."""
    system, code = split_token(value)
    if system not in (None, NHS_NUMBER_SYSTEM):
        return None
    number = code.replace(" ", "")
    if not nhs_number_valid(number):
        raise invalid(
            f"search parameter {parameter} is not a valid NHS number (10 digits, check digit)", code="value"
        )
    return number


def _people_with_nhs_numbers(value: str, parameter: str) -> ColumnElement[bool]:
    numbers = [n for n in (_nhs_number_token(v, parameter) for v in _any_of(value)) if n]
    if not numbers:
        return false()
    return Referral.person_id.in_(select(Person.id).where(Person.nhs_number.in_(numbers)))


def _requester(value: str) -> ColumnElement[bool]:
    codes = []
    for token in _any_of(value):
        system, code = split_token(token)
        code = code.upper()
        if system is None or system == fhir.organisation_system(code):
            codes.append(code)
    return Referral.referring_org.in_(codes) if codes else false()


def _identifier(session: AsyncSession, value: str) -> ColumnElement[bool]:
    matches: list[ColumnElement[bool]] = []
    for token in _any_of(value):
        system, code = split_token(token)
        if system in (None, fhir.REFERRAL_SYSTEM):
            matches.append(Referral.id == code)
        if system is None:
            matches.append(_partner_identifier_matches(session, fhir.partner_value_fragment(code)))
        elif system and system != fhir.REFERRAL_SYSTEM:
            matches.append(
                _partner_identifier_matches(session, fhir.partner_identifier_fragment(system, code))
            )
    return or_(*matches) if matches else false()


def _wanted(value: str, codes: frozenset[str]) -> set[str]:
    wanted = set()
    for code in _any_of(value):
        _, code = split_token(code)
        if code not in codes:
            raise invalid("status is not a code of the resource's status value set", code="code-invalid")
        wanted.add(code)
    return wanted


def _task_statuses(value: str) -> ColumnElement[bool]:
    wanted = _wanted(value, TASK_STATUS_CODES)
    statuses = sorted(status for status, code in TRIAGE_TASK_STATUS.items() if code in wanted)
    return Referral.status.in_(statuses) if statuses else false()


def _request_statuses(value: str) -> ColumnElement[bool]:
    """The referrals whose ServiceRequest status is one of those asked for: the SQL is generated
    from `service_request_status` over every (status, route, care ended) it can be given, so the
    search cannot disagree with what a read shows."""
    wanted = _wanted(value, REQUEST_STATUS_CODES)
    routes: list[str | None] = [None, *(route.value for route in Route)]
    terms: list[ColumnElement[bool]] = []
    for status in ReferralStatus:
        for ended in (False, True):
            matching = [
                route for route in routes if service_request_status(status.value, route, ended) in wanted
            ]
            if not matching:
                continue
            care = Referral.care_ended_at.is_not(None) if ended else Referral.care_ended_at.is_(None)
            if len(matching) == len(routes):
                terms.append(and_(Referral.status == status.value, care))
                continue
            named = [route for route in matching if route is not None]
            by_route = (
                or_(Referral.route.in_(named), Referral.route.is_(None))
                if None in matching
                else (Referral.route.in_(named))
            )
            terms.append(and_(Referral.status == status.value, care, by_route))
    return or_(*terms) if terms else false()


def _authored(value: str) -> ColumnElement[bool]:
    wanted: DateRange = parse_date(value)
    column = func.coalesce(Referral.authored_at, Referral.received_at)
    start, end = wanted.start, wanted.end
    if wanted.prefix == "eq":
        return and_(column >= start, column < end)
    if wanted.prefix == "ne":
        return not_(and_(column >= start, column < end))
    if wanted.prefix in ("gt", "sa"):
        return column >= end
    if wanted.prefix == "ge":
        return column >= start
    if wanted.prefix in ("lt", "eb"):
        return column < start
    return column < end  # le


def _referral_conditions(
    session: AsyncSession, request: Request, caller: Caller, resource_type: str
) -> list[ColumnElement[bool]]:
    conditions = access.readable_referrals(caller)
    for name, value in _parameters(request, resource_type):
        if name == "_id":
            conditions.append(Referral.id.in_(_ids(value)))
        elif name == "patient":
            conditions.append(Referral.person_id.in_([reference_id(v, "Patient") for v in _any_of(value)]))
        elif name in fhir.PATIENT_CHAIN_PARAMETERS:
            conditions.append(_people_with_nhs_numbers(value, name))
        elif name == "focus":
            conditions.append(Referral.id.in_([reference_id(v, "ServiceRequest") for v in _any_of(value)]))
        elif name in ("requester.identifier", "requester:identifier"):
            conditions.append(_requester(value))
        elif name == "identifier":
            conditions.append(_identifier(session, value))
        elif name == "status" and resource_type == "Task":
            conditions.append(_task_statuses(value))
        elif name == "status":
            conditions.append(_request_statuses(value))
        elif name == "authored":
            conditions.append(_authored(value))
    return conditions


async def _page(
    session: AsyncSession, query: Select[Any], count_query: Select[Any], request: Request
) -> tuple[list[Any], int, Any]:
    page = paging(request)
    total = int(await session.scalar(count_query) or 0)
    rows: list[Any] = []
    if page.count:
        rows = list((await session.scalars(query.offset(page.offset).limit(page.count))).all())
    return rows, total, page


async def _search_referrals(request: Request, db: Database, caller: Caller, resource_type: str) -> Response:
    check_format(request)
    async with db.transaction() as session:
        conditions = _referral_conditions(session, request, caller, resource_type)
        referrals, total, page = await _page(
            session,
            select(Referral).where(*conditions).order_by(Referral.received_at.desc(), Referral.id),
            select(func.count()).select_from(Referral).where(*conditions),
            request,
        )
        _audit(session, caller, AuditAction.SEARCH, referrals)
        if resource_type == "Task":
            resources = await _tasks(session, referrals)
        else:
            resources = await _service_requests(session, referrals)
    bundle = searchset(request, resources, base=fhir_base(request), total=total, page=page)
    return fhir_response(bundle)


@router.get("/ServiceRequest", summary="Search referrals (ServiceRequest)")
async def search_service_requests(
    request: Request, db: DatabaseDep, caller: Caller = requires("referral:read")
) -> Response:
    return await _search_referrals(request, db, caller, "ServiceRequest")


@router.get("/Task", summary="Search triage tasks (Task)")
async def search_tasks(
    request: Request, db: DatabaseDep, caller: Caller = requires("referral:read")
) -> Response:
    return await _search_referrals(request, db, caller, "Task")


@router.get("/Provenance", summary="Who decided what about a referral, when and why (Provenance)")
async def search_provenance(
    request: Request, db: DatabaseDep, caller: Caller = requires("referral:read")
) -> Response:
    check_format(request)
    targets = [value for name, value in _parameters(request, "Provenance") if name == "target"]
    if len(targets) != 1:
        raise invalid("search Provenance by one target: Task/<id> or ServiceRequest/<id>")
    kind, _, referral_id = targets[0].rpartition("/")
    if kind.rsplit("/", 1)[-1] not in ("Task", "ServiceRequest") or not referral_id or len(referral_id) > 64:
        raise invalid("target is Task/<id> or ServiceRequest/<id>")
    async with db.transaction() as session:
        referral = await session.scalar(
            select(Referral).where(Referral.id == referral_id, *access.readable_referrals(caller))
        )
        referrals = [referral] if referral is not None else []
        decisions = (await _decisions(session, [r.id for r in referrals])).get(referral_id, [])
        _audit(session, caller, AuditAction.SEARCH, referrals)
        resources = [fhir.provenance(referral, d) for d in decisions if referral is not None]
    page = paging(request)
    window = resources[page.offset : page.offset + page.count] if page.count else []
    bundle = searchset(request, window, base=fhir_base(request), total=len(resources), page=page)
    return fhir_response(bundle)


@router.get("/Patient", summary="Search people (Patient) by NHS number")
async def search_patients(
    request: Request, db: DatabaseDep, caller: Caller = requires("referral:read")
) -> Response:
    check_format(request)
    conditions = access.readable_people(caller)
    for name, value in _parameters(request, "Patient"):
        if name == "_id":
            conditions.append(Person.id.in_(_ids(value)))
        else:  # identifier: the NHS number (unique, indexed)
            numbers = [n for n in (_nhs_number_token(v, name) for v in _any_of(value)) if n]
            conditions.append(Person.nhs_number.in_(numbers) if numbers else false())
    async with db.transaction() as session:
        people, total, page = await _page(
            session,
            select(Person).where(*conditions).order_by(Person.created_at, Person.id),
            select(func.count()).select_from(Person).where(*conditions),
            request,
        )
        _audit_people(session, caller, AuditAction.SEARCH, people)
        resources = [fhir.patient(person) for person in people]
    bundle = searchset(request, resources, base=fhir_base(request), total=total, page=page)
    return fhir_response(bundle)
