"""`/triage`: the single point of access.

- `POST /triage/referrals` (`referral:submit`, Idempotency-Key required) and, for mobile crisis
  apps, `POST /triage/crisis/referrals` (`crisis:respond`): screened at once; the answer carries
  the suggested priority and route and the rules that produced them.
- `POST /triage/referrals/{id}/decisions` (`triage:decide`): accept, override (with a reason),
  decline (only with an alternative offer) or close.
- Reads (`referral:read`): one referral, and a worklist; partner clients see only the referrals
  their organisation made; clinicians (`triage:decide` / `crisis:respond`) see all. Audited.
- Crisis (`crisis:respond`): the queue ordered by deadline, first face-to-face contact, and a
  server-sent event stream of queue changes, resumable with `Last-Event-ID`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.vocabulary import PRIORITY_LABELS
from services.triage import access, store
from services.triage.models import CrisisChange, Decision, Person, Referral
from services.triage.schemas import (
    DECISION_EXAMPLE,
    REFERRAL_EXAMPLE,
    ContactIn,
    CrisisQueueOut,
    DecisionIn,
    IdentitySettlementIn,
    ReferralHistoryOut,
    ReferralIn,
    ReferralOut,
    ReferralPageOut,
    ReferralReadOut,
    RuleOut,
)
from services.triage.state import TriageState, TriageStateDep
from shared.audit import AuditAction, record_access, record_access_to
from shared.auth import Caller, requires
from shared.deps import DatabaseDep, NowDep
from shared.errors import Problem, Refusal, problems
from shared.http import request_public_url
from shared.idempotency import RequiredIdempotency, create_once
from shared.params import INT64_MAX, PageNumber, bounded_int
from shared.preconditions import IfMatch, check_if_match
from shared.preconditions import etag as etag_of
from shared.service import is_draining
from shared.settings import Settings

router = APIRouter(prefix="/triage", tags=["triage"], responses=problems(401, 403, 422))
IDEMPOTENT_CREATE = problems(
    400,
    409,
    _400="Idempotency-Key missing or malformed",
    _409="Idempotency-Key reused for a different request",
)
SERVICE = "triage"
STREAM_POLL_SECONDS = 0.25
STREAM_HEARTBEAT_SECONDS = 15.0


def _refused(refusal: store.Refused) -> Refusal:
    """The store's refusal as the one `Refusal`: 422 naming the field."""
    return Refusal(SERVICE, refusal.field, refusal.message)


def not_allowed_now(refusal: store.NotAllowedNow) -> Refusal:
    """409: the referral's status does not allow this decision (the lifecycle in `domain`)."""
    return Refusal(SERVICE, None, refusal.message, status=409, type_slug="referral-state")


def backdate_limit(settings: Settings) -> timedelta:
    return timedelta(days=settings.triage_backdate_limit_days)


def referral_out(referral: Referral, person: Person | None = None, *, full: bool = False) -> dict[str, Any]:
    """A referral as answered. `full` (or a person given): with the person as referred on this
    referral beside the person on file (`person`, None when withheld), and the details."""
    suggestion = json.loads(referral.suggestion)
    out = ReferralOut(
        id=referral.id,
        person_id=referral.person_id,
        status=referral.status,
        source=referral.source,
        referring_organisation=referral.referring_org,
        received_at=referral.received_at,
        crisis=referral.crisis,
        age=referral.age,
        priority=referral.priority,
        priority_name=PRIORITY_LABELS[referral.priority],
        route=referral.route,
        suggestion=suggestion,
        rules=[RuleOut(**rule) for rule in suggestion.get("rules", [])],
        possible_duplicates=json.loads(referral.possible_duplicates),
        deadline_at=referral.deadline_at,
        first_contact_at=referral.first_contact_at,
        response_minutes=referral.response_minutes,
        version=referral.version,
        authored_at=referral.authored_at,
        intake=referral.intake or "screened",
        awaiting_referral_id=referral.awaiting_referral_id,
        open_episode_id=referral.open_episode_id,
        episode_id=referral.episode_id,
        care_ended_at=referral.care_ended_at,
        identity_review=json.loads(referral.identity_review) if referral.identity_review else None,
    ).model_dump(mode="json")
    if person is not None or full:
        out["person"] = store.person_values(person) if person is not None else None
        out["person_as_referred"] = (
            json.loads(referral.person_as_referred) if referral.person_as_referred else None
        )
        out["details"] = json.loads(referral.details)
    return out


def _audit(
    session: AsyncSession,
    caller: Caller,
    action: AuditAction,
    records: Sequence[Any],
    resource: str = "Referral",
) -> None:
    record_access_to(session, caller, records, service=SERVICE, action=action, resource_type=resource)


def _json(
    body: dict[str, Any], status: int = 200, *, etag: int | None = None, created_for: Request | None = None
) -> Response:
    """A JSON answer; a create (`created_for` its request) with the new referral's public `Location`."""
    headers = {"ETag": etag_of(etag)} if etag is not None else {}
    if created_for is not None:
        headers["Location"] = request_public_url(created_for, f"/triage/referrals/{body['id']}")
    return Response(json.dumps(body), status_code=status, media_type="application/json", headers=headers)


async def _intake(
    request: Request, state: TriageState, caller: Caller, body: ReferralIn, idempotency: Any, *, crisis: bool
) -> Response:
    async def create(session: AsyncSession) -> Response:
        try:
            referral = await store.submit(
                session, caller, body, crisis=crisis, backdate_limit=backdate_limit(state.settings)
            )
        except store.Refused as refusal:
            raise _refused(refusal) from None
        _audit(session, caller, AuditAction.CREATE, [referral])
        return _json(referral_out(referral), 201, etag=referral.version, created_for=request)

    response = await create_once(request, caller, idempotency, create)
    if crisis and response.status_code == 201:
        state.crisis_changed.set()
    return response


@router.post(
    "/referrals",
    status_code=201,
    response_model=ReferralOut,
    responses=IDEMPOTENT_CREATE,
    summary="Submit a referral",
    description=(
        "A referral to the single point of access: the person, who refers them, their needs and risks. "
        "It is screened at once (priority and route suggested, identity matched) and joins the triage "
        "worklist; answers 201 with the referral and its ETag. Send a new Idempotency-Key per referral: "
        "a retry with the same key returns the first answer and creates nothing."
    ),
)
async def submit_referral(
    body: Annotated[ReferralIn, Body(openapi_examples={"gp-referral": REFERRAL_EXAMPLE})],
    request: Request,
    state: TriageStateDep,
    *,
    caller: Caller = requires("referral:submit"),
    idempotency: RequiredIdempotency,
) -> Response:
    return await _intake(request, state, caller, body, idempotency, crisis=False)


@router.post(
    "/crisis/referrals",
    status_code=201,
    response_model=ReferralOut,
    responses=IDEMPOTENT_CREATE,
    summary="Raise a crisis referral",
)
async def submit_crisis_referral(
    body: ReferralIn,
    request: Request,
    state: TriageStateDep,
    *,
    caller: Caller = requires("crisis:respond"),
    idempotency: RequiredIdempotency,
) -> Response:
    return await _intake(request, state, caller, body, idempotency, crisis=True)


NO_SUCH_REFERRAL = Problem(404, "No such referral", type_slug="not-found")


async def _readable(
    session: AsyncSession, caller: Caller, referral_id: str, *, lock: bool = False
) -> Referral:
    return await access.readable_record(
        session, caller, Referral, referral_id, missing=NO_SUCH_REFERRAL, lock=lock
    )


@router.get(
    "/referrals/{referral_id}",
    response_model=ReferralReadOut,
    responses=problems(404),
    summary="Read a referral (with the person's details)",
)
async def read_referral(
    referral_id: str, db: DatabaseDep, caller: Caller = requires("referral:read")
) -> Response:
    async with db.transaction() as session:
        referral = await _readable(session, caller, referral_id)
        person = await session.get(Person, referral.person_id)
        if not access.person_on_file_visible(caller, referral):
            person = None
        _audit(session, caller, AuditAction.READ, [referral])
        return _json(referral_out(referral, person, full=True), etag=referral.version)


@router.get("/referrals", response_model=ReferralPageOut, summary="Worklist of referrals")
async def worklist(
    db: DatabaseDep,
    caller: Caller = requires("referral:read"),
    status: Annotated[str | None, Query(pattern="^(received|routed|signposted|closed)$")] = None,
    priority: Annotated[int | None, Query(ge=1, le=4)] = None,
    place: Annotated[str | None, Query(max_length=64)] = None,
    network_id: Annotated[str | None, Query(max_length=64)] = None,
    team_id: Annotated[str | None, Query(max_length=64)] = None,
    received_from: datetime | None = None,
    received_to: datetime | None = None,
    possible_duplicate: bool | None = None,
    identity_review: Annotated[
        bool | None, Query(description="Referrals whose identity is (true) or is not (false) in review")
    ] = None,
    page: PageNumber = 1,
    per_page: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    conditions = access.readable_referrals(caller)
    for column, value in ((Referral.status, status), (Referral.priority, priority), (Referral.place_key, place),
                          (Referral.network_id, network_id), (Referral.team_id, team_id)):  # fmt: skip
        if value is not None:
            conditions.append(column == value)
    if received_from is not None:
        conditions.append(Referral.received_at >= received_from)
    if received_to is not None:
        conditions.append(Referral.received_at < received_to)
    if possible_duplicate is not None:
        conditions.append(
            (Referral.possible_duplicates != "[]")
            if possible_duplicate
            else (Referral.possible_duplicates == "[]")
        )
    if identity_review is not None:
        conditions.append(Referral.identity_review_open.is_(identity_review))
    async with db.transaction() as session:
        total = int(await session.scalar(select(func.count()).select_from(Referral).where(*conditions)) or 0)
        referrals = (
            await session.scalars(
                select(Referral).where(*conditions).order_by(Referral.received_at.desc(), Referral.id)
                .offset((page - 1) * per_page).limit(per_page)
            )
        ).all()  # fmt: skip
        _audit(session, caller, AuditAction.SEARCH, list(referrals), "Referral")
    return {"items": [referral_out(r) for r in referrals], "page": page, "per_page": per_page, "total": total}


@router.post(
    "/referrals/{referral_id}/decisions",
    response_model=ReferralOut,
    summary="Accept, override, decline, close, transfer or reprioritise",
    description=(
        "A clinician's triage decision on a referral: accept the suggested priority and route, override "
        "them (with a reason), decline, close, transfer to a team or reprioritise. Send If-Match with "
        "the referral's ETag so a decision is not made on a referral that has changed since it was read."
    ),
    responses=problems(
        400, 404, 409, 412, _409="The referral's status does not allow this decision", _400="Bad If-Match"
    ),
)
async def decide(
    referral_id: str,
    body: Annotated[DecisionIn, Body(openapi_examples={"accept": DECISION_EXAMPLE})],
    db: DatabaseDep,
    state: TriageStateDep,
    caller: Caller = requires("triage:decide"),
    if_match: IfMatch = None,
) -> Response:
    async with db.transaction() as session:
        referral = await _readable(session, caller, referral_id, lock=True)
        check_if_match(
            if_match, referral.version, noun="referral", title="Referral has changed",
            detail="Read it again.", required=False,
        )  # fmt: skip
        try:
            await store.decide(session, caller, referral, body)
        except store.Refused as refusal:
            raise _refused(refusal) from None
        except store.NotAllowedNow as refusal:
            raise not_allowed_now(refusal) from None
        _audit(session, caller, AuditAction.UPDATE, [referral])
        body_out = referral_out(referral)
    state.crisis_changed.set()
    return _json(body_out, etag=referral.version)


@router.post(
    "/referrals/{referral_id}/identity",
    response_model=ReferralOut,
    summary="Settle a referral's identity review: confirmed, or a different person",
    responses=problems(404, 409, _409="The referral's identity is not in review"),
)
async def settle_identity(
    referral_id: str,
    body: IdentitySettlementIn,
    db: DatabaseDep,
    caller: Caller = requires("triage:decide"),
) -> Response:
    async with db.transaction() as session:
        referral = await _readable(session, caller, referral_id, lock=True)
        try:
            await store.settle_identity(session, caller, referral, body.outcome, body.reason)
        except store.NotAllowedNow as refusal:
            raise not_allowed_now(refusal) from None
        _audit(session, caller, AuditAction.UPDATE, [referral])
        out = referral_out(referral)
    return _json(out, etag=referral.version)


def decision_out(decision: Decision) -> dict[str, Any]:
    return {
        "seq": decision.seq,
        "at": decision.at.isoformat(),
        "action": decision.action,
        "from_status": decision.from_status,
        "to_status": decision.to_status,
        "priority": decision.priority,
        "route": decision.route,
        "team_id": decision.team_id,
        "signposts": json.loads(decision.signposts or "[]"),
        "reason": decision.reason,
        "client_id": decision.actor,
        # As the calling system asserted them: the suite does not authenticate the end user.
        "end_user": {"id": decision.end_user_id, "role": decision.end_user_role, "asserted": True}
        if decision.end_user_id or decision.end_user_role
        else None,
    }


@router.get(
    "/referrals/{referral_id}/history",
    response_model=ReferralHistoryOut,
    responses=problems(404),
    summary="The referral's decisions: who, when, what and why",
)
async def referral_history(
    referral_id: str, db: DatabaseDep, caller: Caller = requires("referral:read")
) -> dict[str, Any]:
    async with db.transaction() as session:
        referral = await _readable(session, caller, referral_id)
        decisions = (
            await session.scalars(
                select(Decision).where(Decision.referral_id == referral.id).order_by(Decision.seq)
            )
        ).all()
        _audit(session, caller, AuditAction.READ, [referral])
    return {
        "referral_id": referral.id,
        "status": referral.status,
        "items": [decision_out(d) for d in decisions],
    }


# --- crisis --------------------------------------------------------------------------------------


@router.get(
    "/crisis/queue", response_model=CrisisQueueOut, summary="Open crisis referrals, soonest deadline first"
)
async def crisis_queue(
    db: DatabaseDep,
    now: NowDep,
    caller: Caller = requires("crisis:respond"),
    place: Annotated[str | None, Query(max_length=64)] = None,
    team_id: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    conditions = list(store.open_crisis_filter())
    if place:
        conditions.append(Referral.place_key == place)
    if team_id:
        conditions.append(Referral.team_id == team_id)
    async with db.transaction() as session:
        referrals = (
            await session.scalars(
                select(Referral).where(*conditions).order_by(Referral.deadline_at).limit(500)
            )
        ).all()
        _audit(session, caller, AuditAction.SEARCH, list(referrals), "CrisisQueue")
        latest = int(await session.scalar(select(func.coalesce(func.max(CrisisChange.seq), 0))) or 0)
    return {
        "as_of": now.isoformat(),
        "last_event_id": latest,
        "entries": [store.queue_entry(r) for r in referrals],
    }


@router.post(
    "/crisis/referrals/{referral_id}/contact",
    response_model=ReferralOut,
    responses=problems(404),
    summary="Record the first face-to-face contact",
)
async def record_contact(
    referral_id: str,
    body: ContactIn,
    db: DatabaseDep,
    state: TriageStateDep,
    caller: Caller = requires("crisis:respond"),
) -> Response:
    async with db.transaction() as session:
        referral = await _readable(session, caller, referral_id, lock=True)
        try:
            await store.record_contact(session, caller, referral, body.contact_at)
        except store.Refused as refusal:
            raise _refused(refusal) from None
        _audit(session, caller, AuditAction.UPDATE, [referral])
        out = referral_out(referral)
    state.crisis_changed.set()
    return _json(out, etag=referral.version)


def _sse(seq: int, change: str, entry: dict[str, Any]) -> bytes:
    return f"id: {seq}\nevent: {change}\ndata: {json.dumps(entry, separators=(',', ':'))}\n\n".encode()


@router.get(
    "/crisis/stream",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Server-sent events: `id` (resume with Last-Event-ID), `event` (the change), "
            "`data` (the queue entry, as in the crisis queue)",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **problems(400, _400="Bad Last-Event-ID"),
    },
    summary="Crisis queue changes as server-sent events",
)
async def crisis_stream(
    request: Request,
    db: DatabaseDep,
    state: TriageStateDep,
    caller: Caller = requires("crisis:respond"),
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    after = bounded_int(last_event_id, least=0, most=INT64_MAX) if last_event_id else None
    if last_event_id and after is None:
        raise Problem(
            400,
            "Bad Last-Event-ID",
            "Last-Event-ID is the id of the last event you received.",
            type_slug="bad-last-event-id",
        )
    async with db.transaction() as session:
        record_access(
            session, caller, service=SERVICE, action=AuditAction.SEARCH, resource_type="CrisisStream"
        )
        if after is None:
            after = int(await session.scalar(select(func.coalesce(func.max(CrisisChange.seq), 0))) or 0)
    changed, verifier = state.crisis_changed, state.token_verifier

    async def events() -> AsyncIterator[bytes]:
        cursor = after
        yield b"retry: 1000\n\n"
        quiet = 0.0
        # The stream ends with its token: expired, or its client disabled (the app reconnects
        # with a new token, from Last-Event-ID); and when this process starts to stop, so the
        # app reconnects to a replica that stays and the graceful stop is not held open.
        while (
            verifier.still_valid(caller)
            and not is_draining(request.app)
            and not await request.is_disconnected()
        ):
            # Cleared before the read, so a change committed while we read still wakes the wait
            # below (cleared after it, that wake-up was lost until the next poll).
            changed.clear()
            async with db.session() as session:
                rows = (
                    await session.scalars(
                        select(CrisisChange)
                        .where(CrisisChange.seq > cursor)
                        .order_by(CrisisChange.seq)
                        .limit(200)
                    )
                ).all()
            for row in rows:
                cursor = row.seq
                yield _sse(row.seq, row.change, json.loads(row.entry))
            if rows:
                quiet = 0.0
                continue
            # Changes made by this replica wake us at once; others are seen at the next poll.
            try:
                await asyncio.wait_for(changed.wait(), timeout=STREAM_POLL_SECONDS)
            except TimeoutError:
                quiet += STREAM_POLL_SECONDS
            if quiet >= STREAM_HEARTBEAT_SECONDS:
                quiet = 0.0
                yield b": keep-alive\n\n"

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
