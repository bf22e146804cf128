"""Warm handovers: triage signposts a person to a partner's service with their consent; the partner
accepts, declines (with a reason, so triage can offer something else) or completes it.

Handovers arrive as `cmh.triage.handover.requested` events (consumed once, whatever the
redelivery) and are offered to the organisation that runs the service. A partner sees only the
handovers offered to it; every read of one (it holds person data) is audited. Each change is a
`cmh.directory.handover.updated` event carrying no person data, for triage and reporting.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.events import HandoverRequested
from services.directory import access
from services.directory.domain import HandoverAction, HandoverState, TransitionRefused, next_handover_state
from services.directory.models import Handover, HandoverHistory, Organization, Service
from services.directory.oruk import link_id
from services.directory.schemas import HandoverDecision, HandoverOut
from shared.audit import AuditAction, readable_or_refused, record_access_to
from shared.auth import Caller, requires
from shared.consumer import Subscription
from shared.db import Database
from shared.deps import DatabaseDep, NowDep
from shared.errors import Problem
from shared.events import CloudEvent, make_event
from shared.outbox import add_event
from shared.preconditions import IfMatch
from shared.sqltypes import utcnow

log = logging.getLogger("cmh.directory.handovers")
router = APIRouter(prefix="/directory/handovers", tags=["directory handovers"])
SERVICE = "directory"
HANDOVER_REQUESTED = "cmh.triage.handover.requested"


def _updated_event(handover: Handover, actor: str) -> dict[str, Any]:
    """The state change only: the partner's free-text reason stays in the handover and its history
    (careplan's journey and reporting, its consumers, read neither it nor any person detail)."""
    return {
        "handover_id": handover.id,
        "referral_id": handover.referral_id,
        "person_id": handover.person_id,
        "service_id": handover.service_id,
        "organization": handover.owner,
        "state": handover.state,
        "version": handover.version,
        "actor": actor,
        "at": handover.updated_at.isoformat(),
    }


async def apply_signpost(session: AsyncSession, event: CloudEvent) -> None:
    """Offer a handover per signposted service, if the person consented to share."""
    requested = event.payload_as(HandoverRequested)
    if not requested.consent_to_share:
        return  # signposted without consent: the person contacts the service themselves
    contact = requested.person.model_dump(mode="json") if requested.person is not None else {}
    for offer in requested.services:
        service_id = offer.service_id
        owner = await session.scalar(
            select(Organization.identifier)
            .join(Service, Service.organization_id == Organization.id)
            .where(Service.id == service_id)
        )
        if owner is None:
            log.warning("signposted service is not published", extra={"service_id": service_id})
            continue
        exists = await session.scalar(
            select(Handover.id).where(
                Handover.referral_id == requested.referral_id, Handover.service_id == service_id
            )
        )
        if exists:
            continue
        now = utcnow()
        handover = Handover(
            id=link_id("handover", requested.referral_id, service_id),
            referral_id=requested.referral_id,
            person_id=requested.person_id,
            service_id=service_id,
            owner=owner,
            state=HandoverState.OFFERED.value,
            details=json.dumps({"person": contact, "needs": requested.needs, "note": requested.note}),
            version=1,
            offered_at=now,
            updated_at=now,
        )
        session.add(handover)
        session.add(HandoverHistory(handover_id=handover.id, state=handover.state, actor="triage", at=now))
        add_event(session, make_event(SERVICE, "handover", "updated", _updated_event(handover, "triage")))


SIGNPOST_SUBSCRIPTION = Subscription(
    durable="directory-handovers",
    subjects=[HANDOVER_REQUESTED],
    handler=apply_signpost,
    model=HandoverRequested,
)


def _out(handover: Handover) -> HandoverOut:
    details = json.loads(handover.details)
    return HandoverOut(
        id=handover.id,
        referral_id=handover.referral_id,
        service_id=handover.service_id,
        state=handover.state,
        reason=handover.reason,
        version=handover.version,
        offered_at=handover.offered_at,
        updated_at=handover.updated_at,
        person=details.get("person", {}),
        needs=details.get("needs", []),
        note=details.get("note"),
    )


@router.get("", response_model=list[HandoverOut], summary="Handovers offered to your organisation")
async def my_handovers(
    db: DatabaseDep,
    caller: Caller = requires("handover:respond"),
    state: Annotated[HandoverState | None, Query()] = None,
) -> list[HandoverOut]:
    query = select(Handover).where(access.own_handovers(caller)).order_by(Handover.offered_at.desc())
    if state:
        query = query.where(Handover.state == state.value)
    async with db.transaction() as session:
        handovers = (await session.scalars(query.limit(500))).all()
        record_access_to(
            session, caller, handovers, service=SERVICE, action=AuditAction.SEARCH, resource_type="Handover"
        )
    return [_out(h) for h in handovers]


async def _own(session: AsyncSession, caller: Caller, handover_id: str, *, lock: bool = False) -> Handover:
    """The caller's handover; another partner's is not found either, and the attempt is audited as
    denied (issue 18: denied reads audited in every service)."""
    return await readable_or_refused(
        session, caller, Handover, handover_id, [access.own_handovers(caller)], service=SERVICE,
        missing=Problem(404, "No such handover", type_slug="not-found"), resource_type="Handover", lock=lock,
    )  # fmt: skip


@router.get("/{handover_id}", response_model=HandoverOut, summary="One handover")
async def read_handover(
    handover_id: str, db: DatabaseDep, caller: Caller = requires("handover:respond")
) -> HandoverOut:
    async with db.transaction() as session:
        handover = await _own(session, caller, handover_id)
        record_access_to(
            session, caller, [handover], service=SERVICE, action=AuditAction.READ, resource_type="Handover"
        )
    return _out(handover)


async def _respond(
    db: Database,
    now: datetime,
    caller: Caller,
    handover_id: str,
    action: HandoverAction,
    body: HandoverDecision,
    if_match: str | None,
) -> HandoverOut:
    async with db.transaction() as session:
        handover = await _own(session, caller, handover_id, lock=True)
        if if_match is not None and if_match.strip().strip('"') not in ("*", str(handover.version)):
            raise Problem(412, "Handover has changed", "Read it again.", type_slug="version-mismatch")
        try:
            target = next_handover_state(HandoverState(handover.state), action, reason=body.reason)
        except TransitionRefused as refusal:
            raise Problem(
                409, "Not allowed in this state", str(refusal), type_slug="invalid-transition"
            ) from None
        handover.state = target.value
        handover.reason = body.reason
        handover.version += 1
        handover.updated_at = now
        session.add(
            HandoverHistory(
                handover_id=handover.id, state=handover.state, actor=caller.client_id, reason=body.reason
            )
        )
        add_event(
            session, make_event(SERVICE, "handover", "updated", _updated_event(handover, caller.client_id))
        )
        record_access_to(
            session, caller, [handover], service=SERVICE, action=AuditAction.UPDATE, resource_type="Handover"
        )
    return _out(handover)


@router.post(
    "/{handover_id}/accept", response_model=HandoverOut, summary="Accept: you will contact the person"
)
async def accept(
    handover_id: str,
    db: DatabaseDep,
    now: NowDep,
    body: HandoverDecision | None = None,
    caller: Caller = requires("handover:respond"),
    if_match: IfMatch = None,
) -> HandoverOut:
    return await _respond(
        db, now, caller, handover_id, HandoverAction.ACCEPT, body or HandoverDecision(), if_match
    )


@router.post("/{handover_id}/decline", response_model=HandoverOut, summary="Decline, with a reason")
async def decline(
    handover_id: str,
    body: HandoverDecision,
    db: DatabaseDep,
    now: NowDep,
    caller: Caller = requires("handover:respond"),
    if_match: IfMatch = None,
) -> HandoverOut:
    return await _respond(db, now, caller, handover_id, HandoverAction.DECLINE, body, if_match)


@router.post("/{handover_id}/complete", response_model=HandoverOut, summary="Complete: support has started")
async def complete(
    handover_id: str,
    db: DatabaseDep,
    now: NowDep,
    body: HandoverDecision | None = None,
    caller: Caller = requires("handover:respond"),
    if_match: IfMatch = None,
) -> HandoverOut:
    return await _respond(
        db, now, caller, handover_id, HandoverAction.COMPLETE, body or HandoverDecision(), if_match
    )
