"""The audit store: consumes every service's `cmh.*.audit.recorded` events into append-only
tables, and answers `GET /audit/records` (scope `audit:read`) by person, or by client and time.

Querying the trail is itself an access to person data, so every query is audited too.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.events import AccessRecorded
from gateway.audit_chain import append_audit
from gateway.models import AuditPerson, AuditRecord
from gateway.state import GatewayStateDep
from shared.audit import AUDIT_SUBJECTS, AuditAction, audit_data
from shared.auth import Caller, requires
from shared.consumer import PermanentEventError, Subscription
from shared.db import Database
from shared.errors import Problem, problems
from shared.events import CloudEvent, new_event_id
from shared.params import Cursor
from shared.sqltypes import utcnow

AUDIT_DURABLE = "gateway-audit"
MAX_PAGE = 500

router = APIRouter(prefix="/audit", tags=["audit"], responses=problems(401, 403, 422))


def _record_from(entry: AccessRecorded, *, event_id: str, occurred_at: datetime) -> AuditRecord:
    return AuditRecord(
        event_id=event_id,
        occurred_at=occurred_at,
        recorded_at=utcnow(),
        service=entry.service,
        action=entry.action,
        resource_type=entry.resource_type,
        resource_ids=json.dumps(entry.resource_ids),
        outcome=entry.outcome,
        client_id=entry.client_id,
        organisation=entry.organisation,
        client_kind=entry.client_kind,
        end_user_id=entry.end_user_id,
        end_user_role=entry.end_user_role,
        purpose_of_use=entry.purpose_of_use,
        token_id=entry.token_id,
        request_id=entry.request_id,
        persons=[AuditPerson(person_id=person) for person in sorted(set(entry.person_ids))],
    )


async def store_audit_event(session: AsyncSession, event: CloudEvent) -> None:
    """Consumer handler: one audit row per event (the inbox and a unique event id keep it one).
    The consumer has checked the entry against its contract (`AccessRecorded`) already."""
    entry = event.payload_as(AccessRecorded)
    if entry.service != event.service:
        raise PermanentEventError("audit event names another service than its source")
    await append_audit(session, _record_from(entry, event_id=event.id, occurred_at=event.time))


def audit_subscription() -> Subscription:
    return Subscription(
        durable=AUDIT_DURABLE, subjects=[AUDIT_SUBJECTS], handler=store_audit_event, model=AccessRecorded
    )


async def record_gateway_access(db: Database, caller: Caller, **what: Any) -> None:
    """The gateway's own accesses go straight into its store (it owns it)."""
    data = audit_data(caller, service="gateway", **what)
    async with db.transaction() as session:
        await append_audit(
            session, _record_from(AccessRecorded(**data), event_id=new_event_id(), occurred_at=utcnow())
        )


class AuditEntry(BaseModel):
    id: int
    occurred_at: datetime
    recorded_at: datetime
    service: str
    action: str
    resource_type: str
    resource_ids: list[str]
    person_ids: list[str]
    outcome: str
    client_id: str
    organisation: str
    client_kind: str
    end_user_id: str | None
    end_user_role: str | None
    purpose_of_use: str
    request_id: str | None


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    next_cursor: int | None = Field(description="Pass as `after` to read the next page.")


@router.get("/records", response_model=AuditPage, summary="Query the audit trail")
async def query_audit(
    gateway: GatewayStateDep,
    caller: Caller = requires("audit:read"),
    person_id: Annotated[str | None, Query(max_length=128)] = None,
    client_id: Annotated[str | None, Query(max_length=64)] = None,
    from_: Annotated[datetime | None, Query(alias="from")] = None,
    to: Annotated[datetime | None, Query()] = None,
    after: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> AuditPage:
    if person_id is None and client_id is None:
        raise Problem(
            400,
            "Say whose trail",
            "Query by person_id, or by client_id with a time range.",
            type_slug="audit-query",
        )
    if client_id is not None and person_id is None and (from_ is None or to is None):
        raise Problem(
            400, "Time range needed", "A query by client needs from and to.", type_slug="audit-query"
        )
    for bound in (from_, to):
        if bound is not None and bound.tzinfo is None:
            raise Problem(
                400, "Time zone needed", "from and to must carry a time zone.", type_slug="audit-query"
            )
    query = select(AuditRecord).order_by(AuditRecord.id).limit(limit + 1)
    if person_id is not None:
        query = query.where(
            AuditRecord.id.in_(select(AuditPerson.audit_id).where(AuditPerson.person_id == person_id))
        )
    if client_id is not None:
        query = query.where(AuditRecord.client_id == client_id)
    if from_ is not None:
        query = query.where(AuditRecord.occurred_at >= from_)
    if to is not None:
        query = query.where(AuditRecord.occurred_at < to)
    if after is not None:
        query = query.where(AuditRecord.id > after)
    db = gateway.db
    async with db.session() as session:
        rows = list((await session.scalars(query)).all())
    page, more = rows[:limit], len(rows) > limit
    await record_gateway_access(
        db,
        caller,
        action=AuditAction.SEARCH,
        resource_type="AuditRecord",
        resource_ids=[str(row.id) for row in page][:100],
        person_ids=[person_id] if person_id else [],
    )
    return AuditPage(
        entries=[
            AuditEntry(
                id=row.id,
                occurred_at=row.occurred_at,
                recorded_at=row.recorded_at,
                service=row.service,
                action=row.action,
                resource_type=row.resource_type,
                resource_ids=json.loads(row.resource_ids),
                person_ids=[person.person_id for person in row.persons],
                outcome=row.outcome,
                client_id=row.client_id,
                organisation=row.organisation,
                client_kind=row.client_kind,
                end_user_id=row.end_user_id,
                end_user_role=row.end_user_role,
                purpose_of_use=row.purpose_of_use,
                request_id=row.request_id,
            )
            for row in page
        ],
        next_cursor=page[-1].id if more and page else None,
    )
