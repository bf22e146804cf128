"""`/notify/fhir/Subscription`: partners register, read, change and stop FHIR R4 Subscriptions
(rest-hook) about their own organisation's referrals. Reached through the gateway's `/fhir`.

A Subscription is bound to the caller's organisation: another organisation's is 404 and never
listed. The signing secret is made here and shown once, in the create response (extension
`webhook-secret`, in the Standard Webhooks form `whsec_<base64>`, `domain.partner_secret`); channel headers are shown with their values masked. Errors are OperationOutcomes
naming the element at fault and never echo what was sent.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.notify import access
from services.notify.domain import (
    MASK,
    MAX_HEADERS,
    endpoint_allowed,
    masked,
    parse_criteria,
    parse_header,
    partner_secret,
)
from services.notify.models import (
    ABANDONED,
    ACTIVE,
    ERROR,
    OFF,
    PENDING,
    REQUESTED,
    SUBSCRIPTION_STATUSES,
    NotifyDelivery,
    NotifySubscription,
)
from services.notify.store import wake_after_commit
from shared.audit import AuditAction, readable_or_refused, record_access
from shared.auth import Caller, requires
from shared.deps import DatabaseDep, NowDep, SettingsDep
from shared.errors import Problem
from shared.fhir import (
    check_format,
    fhir_base,
    fhir_response,
    invalid,
    not_found,
    paging,
    parse_json_body,
    resource_response,
    searchset,
)
from shared.fhir_terms import CMH_EXTENSIONS, instant
from shared.idempotency import OptionalIdempotency, create_once

SERVICE = "notify"
OWN_BASE = "/notify/fhir"
SECRET_EXTENSION = CMH_EXTENSIONS + "webhook-secret"
DELIVERY_STATE_EXTENSION = CMH_EXTENSIONS + "delivery-state"
REST_HOOK = "rest-hook"
PAYLOAD = "application/fhir+json"
_ETAG = re.compile(r'^(W/)?"(\d{1,18})"$')

router = APIRouter(prefix=OWN_BASE, tags=["notify"])


# --- the incoming Subscription -------------------------------------------------------------------


def _refused(element: str, message: str, *, code: str = "business-rule") -> Problem:
    return invalid(f"Subscription.{element}: {message}", status=422, code=code)


def _bad(element: str, message: str, *, code: str = "invalid") -> Problem:
    return invalid(f"Subscription.{element}: {message}", status=400, code=code)


async def _body(request: Request) -> dict[str, Any]:
    body = parse_json_body(await request.body(), what="the Subscription")
    if not isinstance(body, dict) or body.get("resourceType") != "Subscription":
        raise invalid("the body must be a FHIR Subscription (resourceType Subscription)", code="structure")
    return body


def _text(body: dict[str, Any], element: str, *, required: bool, limit: int) -> str | None:
    value = body.get(element)
    if value is None:
        if required:
            raise _bad(element, "is required", code="required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise _bad(element, "must be a non-empty string")
    if len(value) > limit:
        raise _bad(element, f"is at most {limit} characters")
    return value


def _instant(value: Any) -> datetime:
    if not isinstance(value, str):
        raise _bad("end", "must be a FHIR instant")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _bad("end", "must be a FHIR instant (YYYY-MM-DDThh:mm:ss with a time zone)") from None
    if moment.tzinfo is None or "T" not in value:
        raise _bad("end", "must be a FHIR instant (YYYY-MM-DDThh:mm:ss with a time zone)")
    return moment


class Wanted:
    """A validated Subscription as a partner sent it."""

    def __init__(self, body: dict[str, Any], *, allow_private: bool, now: datetime) -> None:
        status = body.get("status")
        if status is None:
            raise _bad("status", "is required", code="required")
        if status not in SUBSCRIPTION_STATUSES:
            raise _bad("status", "must be requested, active, error or off", code="code-invalid")
        self.status: str = status
        self.reason = _text(body, "reason", required=True, limit=500) or ""
        self.criteria = _text(body, "criteria", required=True, limit=200) or ""
        try:
            self.resource_type, self.statuses = parse_criteria(self.criteria)
        except ValueError as exc:
            raise _refused("criteria", str(exc), code="not-supported") from None
        channel = body.get("channel")
        if channel is None:
            raise _bad("channel", "is required", code="required")
        if not isinstance(channel, dict):
            raise _bad("channel", "must be an object")
        if channel.get("type") is None:
            raise _bad("channel.type", "is required", code="required")
        if channel.get("type") != REST_HOOK:
            raise _refused("channel.type", "only rest-hook is supported", code="not-supported")
        endpoint = channel.get("endpoint")
        if endpoint is None:
            raise _bad("channel.endpoint", "is required for rest-hook", code="required")
        if not isinstance(endpoint, str):
            raise _bad("channel.endpoint", "must be a URL")
        reason = endpoint_allowed(endpoint, allow_private)
        if reason is not None:
            raise _refused("channel.endpoint", reason)
        self.endpoint = endpoint
        payload = channel.get("payload")
        if payload is not None and payload != PAYLOAD:
            raise _refused("channel.payload", f"only {PAYLOAD} is supported", code="not-supported")
        headers = channel.get("header", [])
        if not isinstance(headers, list):
            raise _bad("channel.header", "must be a list of 'Name: value' strings")
        if len(headers) > MAX_HEADERS:
            raise _bad("channel.header", f"at most {MAX_HEADERS} headers")
        parsed: list[tuple[str, str]] = []
        for index, text in enumerate(headers):
            try:
                parsed.append(parse_header(text))
            except ValueError as exc:
                raise _bad(f"channel.header[{index}]", str(exc)) from None
        if len({name.lower() for name, _ in parsed}) != len(parsed):
            raise _bad("channel.header", "each header name at most once")
        self.headers = parsed
        self.end: datetime | None = None
        if body.get("end") is not None:
            self.end = _instant(body["end"])
            if self.end <= now:
                raise _refused("end", "must be in the future")

    def header_lines(self, current: Sequence[str] = ()) -> list[str]:
        """`Name: value` lines to store; a masked value (as reads show it) keeps the stored one."""
        stored = {text.partition(":")[0].lower(): text for text in current}
        lines = []
        for index, (name, value) in enumerate(self.headers):
            if value == MASK:
                if name.lower() not in stored:
                    raise _bad(
                        f"channel.header[{index}]",
                        "a masked value (***) keeps a stored header; give the value",
                    )
                lines.append(stored[name.lower()])
            else:
                lines.append(f"{name}: {value}")
        return lines


# --- the Subscription as shown -------------------------------------------------------------------


class DeliveryState:
    def __init__(self, pending: int = 0, abandoned: int = 0) -> None:
        self.pending = pending
        self.abandoned = abandoned


async def _delivery_states(session: AsyncSession, ids: Sequence[str]) -> dict[str, DeliveryState]:
    states = {subscription_id: DeliveryState() for subscription_id in ids}
    if not ids:
        return states
    rows = await session.execute(
        select(NotifyDelivery.subscription_id, NotifyDelivery.state, func.count())
        .where(NotifyDelivery.subscription_id.in_(ids), NotifyDelivery.state.in_((PENDING, ABANDONED)))
        .group_by(NotifyDelivery.subscription_id, NotifyDelivery.state)
    )
    for subscription_id, state, count in rows:
        if state == PENDING:
            states[subscription_id].pending = int(count)
        else:
            states[subscription_id].abandoned = int(count)
    return states


def subscription_resource(
    row: NotifySubscription, state: DeliveryState, *, secret: str | None = None
) -> dict[str, Any]:
    channel: dict[str, Any] = {"type": REST_HOOK, "endpoint": row.endpoint, "payload": PAYLOAD}
    headers = json.loads(row.headers or "[]")
    if headers:
        channel["header"] = masked(headers)
    delivery: list[dict[str, Any]] = [
        {"url": "eventsSinceStart", "valueInteger": row.events_since_start},
        {"url": "pending", "valueInteger": state.pending},
        {"url": "failedAttempts", "valueInteger": row.consecutive_failures},
        {"url": "abandoned", "valueInteger": state.abandoned},
    ]
    if row.last_delivered_at is not None:
        delivery.append({"url": "lastDeliveredAt", "valueInstant": instant(row.last_delivered_at)})
    if row.last_error and row.consecutive_failures:
        delivery.append({"url": "lastError", "valueString": row.last_error})
    extensions: list[dict[str, Any]] = [{"url": DELIVERY_STATE_EXTENSION, "extension": delivery}]
    if secret is not None:
        extensions.append({"url": SECRET_EXTENSION, "valueString": partner_secret(secret)})
    resource: dict[str, Any] = {
        "resourceType": "Subscription",
        "id": row.id,
        "meta": {"versionId": str(row.version), "lastUpdated": instant(row.updated_at)},
        "extension": extensions,
        "status": row.status,
        "end": instant(row.end) if row.end is not None else None,
        "reason": row.reason,
        "criteria": row.criteria,
        "error": row.last_error if row.status == ERROR and row.last_error else None,
        "channel": channel,
    }
    return {name: value for name, value in resource.items() if value is not None}


async def _owned(
    session: AsyncSession, caller: Caller, subscription_id: str, *, lock: bool = False
) -> NotifySubscription:
    # Another partner's subscription is not found either; the attempt is audited as denied.
    return await readable_or_refused(
        session, caller, NotifySubscription, subscription_id, [access.own_subscriptions(caller)],
        service=SERVICE, missing=not_found("Subscription", subscription_id), resource_type="Subscription",
        lock=lock, person_of=None,
    )  # fmt: skip


def _audit(session: AsyncSession, caller: Caller, action: AuditAction, ids: Sequence[str]) -> None:
    record_access(
        session, caller, service=SERVICE, action=action, resource_type="Subscription", resource_ids=ids
    )


def _expected_version(if_match: str | None) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    match = _ETAG.match(if_match.strip())
    if match is None:
        raise invalid('If-Match must be the ETag you read (W/"<version>")')
    return int(match.group(2))


# --- interactions --------------------------------------------------------------------------------


@router.post("/Subscription", summary="Register a rest-hook Subscription (the secret is shown once)")
async def create_subscription(
    request: Request,
    now: NowDep,
    settings: SettingsDep,
    *,
    caller: Caller = requires("subscription:manage"),
    idempotency: OptionalIdempotency,
) -> Response:
    check_format(request)
    wanted = Wanted(
        await _body(request),
        allow_private=settings.webhook_allow_private_addresses,
        now=now,
    )
    if wanted.status not in (REQUESTED, ACTIVE):
        raise _bad("status", "a new Subscription is requested (or active)", code="code-invalid")
    base = fhir_base(request)

    async def create(session: AsyncSession) -> Response:
        secret = secrets.token_urlsafe(32)
        row = NotifySubscription(
            id=str(uuid.uuid4()),
            owner_org=access.owner_of(caller),
            client_id=caller.client_id,
            status=ACTIVE,  # no handshake: active at once
            criteria=wanted.criteria,
            resource_type=wanted.resource_type,
            status_filter=json.dumps(list(wanted.statuses)) if wanted.statuses else None,
            endpoint=wanted.endpoint,
            headers=json.dumps(wanted.header_lines()),
            secret=secret,
            reason=wanted.reason,
            end=wanted.end,
            events_since_start=0,
            consecutive_failures=0,
            created_at=now,
            updated_at=now,
            version=1,
        )
        session.add(row)
        _audit(session, caller, AuditAction.CREATE, [row.id])
        return resource_response(
            subscription_resource(row, DeliveryState(), secret=secret),
            201,
            location=f"{base}/Subscription/{row.id}",
        )

    return await create_once(request, caller, idempotency, create)


@router.get("/Subscription/{subscription_id}", summary="A Subscription, with its delivery state")
async def read_subscription(
    subscription_id: str, request: Request, db: DatabaseDep, caller: Caller = requires("subscription:manage")
) -> Response:
    check_format(request)
    async with db.transaction() as session:
        row = await _owned(session, caller, subscription_id)
        state = (await _delivery_states(session, [row.id]))[row.id]
        _audit(session, caller, AuditAction.READ, [row.id])
    return resource_response(subscription_resource(row, state))


@router.get("/Subscription/{subscription_id}/$status", summary="A Subscription's status (R4 Backport)")
async def subscription_status(
    subscription_id: str, request: Request, db: DatabaseDep, caller: Caller = requires("subscription:manage")
) -> Response:
    """The Subscriptions Backport's `$status`: a searchset Bundle holding one status `Parameters`
    (the resource each notification's first entry points at)."""
    check_format(request)
    async with db.transaction() as session:
        row = await _owned(session, caller, subscription_id)
        _audit(session, caller, AuditAction.READ, [row.id])
    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"Subscription/{row.id}"}},
        {"name": "status", "valueCode": row.status},
        {"name": "type", "valueCode": "query-status"},
        {"name": "events-since-subscription-start", "valueString": str(row.events_since_start)},
    ]
    if row.status == ERROR and row.last_error:
        parameters.append({"name": "error", "valueCodeableConcept": {"text": row.last_error}})
    status_id = str(uuid.uuid4())
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 1,
        "entry": [
            {
                "fullUrl": f"urn:uuid:{status_id}",
                "resource": {"resourceType": "Parameters", "id": status_id, "parameter": parameters},
                "search": {"mode": "match"},
            }
        ],
    }
    return fhir_response(bundle)


@router.get("/Subscription", summary="Search the caller's organisation's Subscriptions")
async def search_subscriptions(
    request: Request, db: DatabaseDep, caller: Caller = requires("subscription:manage")
) -> Response:
    check_format(request)
    page = paging(request)
    conditions = [access.own_subscriptions(caller)]
    raw = request.query_params.getlist("status")
    if raw:
        for value in raw:
            codes = value.split(",")
            if any(code not in SUBSCRIPTION_STATUSES for code in codes):
                raise invalid("status is requested, active, error or off (comma for any of)")
            conditions.append(NotifySubscription.status.in_(codes))
    async with db.transaction() as session:
        total = int(
            await session.scalar(select(func.count()).select_from(NotifySubscription).where(*conditions)) or 0
        )
        rows = (
            await session.scalars(
                select(NotifySubscription)
                .where(*conditions)
                .order_by(NotifySubscription.created_at, NotifySubscription.id)
                .offset(page.offset)
                .limit(page.count)
            )
        ).all()
        states = await _delivery_states(session, [row.id for row in rows])
        _audit(session, caller, AuditAction.SEARCH, [row.id for row in rows])
    base = fhir_base(request)
    resources = [subscription_resource(row, states[row.id]) for row in rows]
    return fhir_response(searchset(request, resources, base=base, total=total, page=page))


@router.put(
    "/Subscription/{subscription_id}", summary="Change a Subscription (status active resumes one in error)"
)
async def update_subscription(
    subscription_id: str,
    request: Request,
    db: DatabaseDep,
    now: NowDep,
    settings: SettingsDep,
    caller: Caller = requires("subscription:manage"),
    if_match: Annotated[str | None, Header()] = None,
) -> Response:
    check_format(request)
    expected = _expected_version(if_match)
    body = await _body(request)
    if body.get("id") is not None and body.get("id") != subscription_id:
        raise invalid("Subscription.id must be the id in the URL")
    wanted = Wanted(body, allow_private=settings.webhook_allow_private_addresses, now=now)
    async with db.transaction() as session:
        row = await _owned(session, caller, subscription_id, lock=True)
        if expected is not None and expected != row.version:
            raise Problem(
                412,
                "Precondition failed",
                "The Subscription has changed: read it again and re-apply your change.",
                type_slug="version-mismatch",
                fhir_code="conflict",
                headers={"ETag": f'W/"{row.version}"'},
            )
        if wanted.status == ERROR and row.status != ERROR:
            raise _refused(
                "status", "error is set by the server; set active, requested or off", code="code-invalid"
            )
        status = OFF if wanted.status == OFF else (ERROR if wanted.status == ERROR else ACTIVE)
        if status == ACTIVE and row.status != ACTIVE:
            # Resumed: the failure count starts again and what was waiting goes now, in order.
            row.consecutive_failures = 0
            row.last_error = None
            await session.execute(
                update(NotifyDelivery)
                .where(NotifyDelivery.subscription_id == row.id, NotifyDelivery.state == PENDING)
                .values(next_attempt_at=now)
            )
            wake_after_commit(session)
        row.status = status
        row.reason = wanted.reason
        row.criteria = wanted.criteria
        row.resource_type = wanted.resource_type
        row.status_filter = json.dumps(list(wanted.statuses)) if wanted.statuses else None
        row.endpoint = wanted.endpoint
        row.headers = json.dumps(wanted.header_lines(json.loads(row.headers or "[]")))
        row.end = wanted.end
        row.version += 1
        row.updated_at = now
        state = (await _delivery_states(session, [row.id]))[row.id]
        _audit(session, caller, AuditAction.UPDATE, [row.id])
    return resource_response(subscription_resource(row, state))


@router.delete("/Subscription/{subscription_id}", status_code=204, summary="Stop a Subscription")
async def delete_subscription(
    subscription_id: str,
    request: Request,
    db: DatabaseDep,
    now: NowDep,
    caller: Caller = requires("subscription:manage"),
) -> Response:
    check_format(request)
    async with db.transaction() as session:
        row = await _owned(session, caller, subscription_id, lock=True)
        await session.execute(
            update(NotifyDelivery)
            .where(NotifyDelivery.subscription_id == row.id, NotifyDelivery.state == PENDING)
            .values(state=ABANDONED, leased_until=None)
        )
        if row.status != OFF:
            row.status = OFF
            row.version += 1
            row.updated_at = now
        _audit(session, caller, AuditAction.UPDATE, [row.id])
    return Response(status_code=204)
