"""Partners keep their own entries current; moderators publish them.

`/directory/partner/...` (`directory:write`): a partner proposes a new service or an edit of one of
its own, revises it while it is a draft (or after a rejection), submits it for review, or withdraws
it; it can take one of its published services down at once. Everything is bound to the caller's
organisation: another partner's edits and services are not found.

`/directory/moderation/...` (`directory:moderate`): the review queue; approving publishes (the
published directory changes only here), rejecting sends the edit back with the reviewer's reason.
Every step is kept in the service's edit history.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.directory import access, store
from services.directory.domain import (
    EditAction,
    EditState,
    TransitionRefused,
    identifier_scheme,
    next_edit_state,
)
from services.directory.models import Edit, EditHistory, Organization, Service
from services.directory.schemas import (
    EditHistoryOut,
    EditOut,
    PartnerServiceOut,
    ReviewIn,
    ServiceProposal,
    ServiceWithdrawnOut,
    new_id,
)
from shared.auth import Caller, requires
from shared.db import Database
from shared.deps import DatabaseDep, NowDep
from shared.errors import Problem, Refusal, problems
from shared.http import request_public_url
from shared.idempotency import OptionalIdempotency, create_once
from shared.preconditions import RequiredIfMatch, check_if_match, etag

partner = APIRouter(
    prefix="/directory/partner", tags=["directory partners"], responses=problems(401, 403, 422)
)
moderation = APIRouter(
    prefix="/directory/moderation", tags=["directory moderation"], responses=problems(401, 403, 422)
)
IDEMPOTENT_CREATE = problems(400, 409, _400="Idempotency-Key malformed", _409="Idempotency-Key reused")
OPEN_STATES = (EditState.DRAFT.value, EditState.PENDING_REVIEW.value, EditState.REJECTED.value)


def _rule_problem(broken: store.RuleBroken) -> Refusal:
    """The store's refusal as the one `Refusal`: 422 naming the field."""
    return Refusal(store.SERVICE, broken.field, broken.message)


def edit_out(edit: Edit) -> EditOut:
    return EditOut(
        id=edit.id,
        service_id=edit.service_id,
        state=edit.state,
        version=edit.version,
        created_by=edit.created_by,
        created_at=edit.created_at,
        updated_at=edit.updated_at,
        reviewed_by=edit.reviewed_by,
        review_reason=edit.review_reason,
        proposal=ServiceProposal.model_validate_json(edit.proposal),
    )


def _json(model: EditOut, status: int = 200, *, created_for: Request | None = None) -> Response:
    """The edit; a create (`created_for` its request) with the new edit's public `Location`."""
    headers = {"ETag": etag(model.version)}
    if created_for is not None:
        headers["Location"] = request_public_url(created_for, f"/directory/partner/edits/{model.id}")
    return Response(
        model.model_dump_json(), status_code=status, media_type="application/json", headers=headers
    )


async def _check_proposal(session: AsyncSession, caller: Caller, proposal: ServiceProposal) -> None:
    """What can be checked before review: known taxonomy terms, and the organisation's details
    on its first service."""
    try:
        await store.term_documents(session, (str(t) for t in proposal.taxonomy_term_ids))
    except store.RuleBroken as broken:
        raise _rule_problem(broken) from None
    if proposal.organization is None:
        known = await session.scalar(select(Organization.id).where(access.own_organisation(caller)))
        if known is None:
            raise _rule_problem(
                store.RuleBroken(
                    "organization", "give your organisation's name and description with its first service"
                )
            )


def _history(session: AsyncSession, edit: Edit, action: str, actor: str, reason: str | None = None) -> None:
    session.add(
        EditHistory(
            edit_id=edit.id,
            service_id=edit.service_id,
            action=action,
            state=edit.state,
            actor=actor,
            reason=reason,
        )
    )


async def _open_edit(session: AsyncSession, service_id: str) -> Edit | None:
    return await session.scalar(
        select(Edit).where(Edit.service_id == service_id, Edit.state.in_(OPEN_STATES))
    )


async def _own_edit(session: AsyncSession, caller: Caller, edit_id: str, *, lock: bool = False) -> Edit:
    query = select(Edit).where(Edit.id == edit_id, access.own_edits(caller))
    if lock:
        query = query.with_for_update()
    edit = await session.scalar(query)
    if edit is None:
        raise Problem(
            404, "No such edit", type_slug="not-found"
        )  # another partner's edit is not found either
    return edit


async def _own_service(session: AsyncSession, caller: Caller, service_id: str) -> Service:
    service = await session.scalar(
        select(Service)
        .join(Organization, Organization.id == Service.organization_id)
        .where(Service.id == service_id, access.own_organisation(caller))
    )
    if service is None:
        raise Problem(404, "No such service of yours", type_slug="not-found")
    return service


def _expected(if_match: str | None, edit: Edit) -> None:
    check_if_match(
        if_match,
        edit.version,
        noun="edit",
        title="Edit has changed",
        detail="Read it again and re-apply your change.",
    )


# --- partners ------------------------------------------------------------------------------------


@partner.post(
    "/services",
    status_code=201,
    response_model=EditOut,
    responses=IDEMPOTENT_CREATE,
    summary="Propose a new service (a draft)",
)
async def propose_service(
    proposal: ServiceProposal,
    request: Request,
    *,
    caller: Caller = requires("directory:write"),
    idempotency: OptionalIdempotency,
) -> Response:
    async def create(session: AsyncSession) -> Response:
        draft = proposal.with_ids()
        service_id = str(draft.id)
        if await session.get(Service, service_id) or await _open_edit(session, service_id):
            raise Problem(409, "Service id in use", "Leave id out for a new service.", type_slug="conflict")
        await _check_proposal(session, caller, draft)
        edit = Edit(
            id=new_id(),
            service_id=service_id,
            owner=access.owner_of(caller),
            state=EditState.DRAFT.value,
            proposal=draft.model_dump_json(),
            created_by=caller.client_id,
            version=1,
        )
        session.add(edit)
        await session.flush()
        _history(session, edit, "created", caller.client_id)
        return _json(edit_out(edit), 201, created_for=request)

    return await create_once(request, caller, idempotency, create)


@partner.get("/services", response_model=list[PartnerServiceOut], summary="Your published services")
async def my_services(
    db: DatabaseDep, caller: Caller = requires("directory:write")
) -> list[dict[str, object]]:
    async with db.session() as session:
        rows = (
            await session.execute(
                select(Service.id, Service.name, Service.version, Service.modified_at)
                .join(Organization, Organization.id == Service.organization_id)
                .where(access.own_organisation(caller))
                .order_by(Service.name)
            )
        ).all()
    return [
        {"id": r.id, "name": r.name, "version": r.version, "last_modified": r.modified_at.isoformat()}
        for r in rows
    ]


@partner.post(
    "/services/{service_id}/edits",
    status_code=201,
    response_model=EditOut,
    responses=problems(400, 404, 409, _409="An edit is already open, or the Idempotency-Key was reused"),
    summary="Propose a change to your service",
)
async def propose_change(
    service_id: str,
    proposal: ServiceProposal,
    request: Request,
    *,
    caller: Caller = requires("directory:write"),
    idempotency: OptionalIdempotency,
) -> Response:
    async def create(session: AsyncSession) -> Response:
        service = await _own_service(session, caller, service_id)
        if (open_edit := await _open_edit(session, service_id)) is not None:
            raise Problem(
                409,
                "An edit is already open",
                "Revise or withdraw the open edit of this service first.",
                type_slug="edit-open",
                edit_id=open_edit.id,
            )
        draft = proposal.model_copy(update={"id": uuid.UUID(service.id)}).with_ids()
        await _check_proposal(session, caller, draft)
        edit = Edit(
            id=new_id(),
            service_id=service.id,
            owner=access.owner_of(caller),
            state=EditState.DRAFT.value,
            proposal=draft.model_dump_json(),
            base_version=service.version,
            created_by=caller.client_id,
            version=1,
        )
        session.add(edit)
        await session.flush()
        _history(session, edit, "created", caller.client_id)
        return _json(edit_out(edit), 201, created_for=request)

    return await create_once(request, caller, idempotency, create)


@partner.post(
    "/services/{service_id}/withdraw",
    response_model=ServiceWithdrawnOut,
    responses=problems(404),
    summary="Take your published service down now",
)
async def withdraw_service(
    service_id: str, body: ReviewIn, db: DatabaseDep, caller: Caller = requires("directory:write")
) -> dict[str, str]:
    async with db.transaction() as session:
        await _own_service(session, caller, service_id)
        await store.withdraw(session, service_id)
        session.add(
            EditHistory(
                edit_id="-", service_id=service_id, action="service_withdrawn", state=EditState.WITHDRAWN.value,
                actor=caller.client_id, reason=body.reason,
            )
        )  # fmt: skip
    return {"service_id": service_id, "state": "withdrawn"}


@partner.get("/edits", response_model=list[EditOut], summary="Your edits")
async def my_edits(
    db: DatabaseDep,
    caller: Caller = requires("directory:write"),
    state: Annotated[EditState | None, Query()] = None,
) -> list[EditOut]:
    query = select(Edit).where(access.own_edits(caller)).order_by(Edit.updated_at.desc())
    if state:
        query = query.where(Edit.state == state.value)
    async with db.session() as session:
        return [edit_out(edit) for edit in (await session.scalars(query.limit(500))).all()]


@partner.get("/edits/{edit_id}", response_model=EditOut, responses=problems(404), summary="One of your edits")
async def my_edit(edit_id: str, db: DatabaseDep, caller: Caller = requires("directory:write")) -> Response:
    async with db.session() as session:
        return _json(edit_out(await _own_edit(session, caller, edit_id)))


@partner.put(
    "/edits/{edit_id}",
    response_model=EditOut,
    responses=problems(400, 404, 409, 412, 428, _400="Bad If-Match"),
    summary="Revise a draft (or a rejected edit)",
)
async def revise_edit(
    edit_id: str,
    proposal: ServiceProposal,
    db: DatabaseDep,
    now: NowDep,
    caller: Caller = requires("directory:write"),
    if_match: RequiredIfMatch = None,
) -> Response:
    async with db.transaction() as session:
        edit = await _own_edit(session, caller, edit_id, lock=True)
        _expected(if_match, edit)
        if edit.state not in (EditState.DRAFT.value, EditState.REJECTED.value):
            raise TransitionRefused(f"an edit that is {edit.state.replace('_', ' ')} cannot be revised")
        draft = proposal.model_copy(update={"id": uuid.UUID(edit.service_id)}).with_ids()
        await _check_proposal(session, caller, draft)
        edit.proposal = draft.model_dump_json()
        edit.state = EditState.DRAFT.value
        edit.version += 1
        edit.updated_at = now
        _history(session, edit, "revised", caller.client_id)
        return _json(edit_out(edit))


async def _transition(
    db: Database,
    now: datetime,
    caller: Caller,
    edit_id: str,
    action: EditAction,
    *,
    moderator: bool,
    reason: str | None = None,
) -> Response:
    async with db.transaction() as session:
        query = select(Edit).where(Edit.id == edit_id).with_for_update()
        if not moderator:
            query = query.where(access.own_edits(caller))
        edit = await session.scalar(query)
        if edit is None:
            raise Problem(404, "No such edit", type_slug="not-found")
        target = next_edit_state(EditState(edit.state), action, moderator=moderator)  # or TransitionRefused
        if target is EditState.PUBLISHED:
            proposal = ServiceProposal.model_validate_json(edit.proposal)
            try:
                await store.publish(
                    session,
                    proposal,
                    identifier=edit.owner,
                    scheme=identifier_scheme(edit.owner),
                    actor=caller.client_id,
                )
            except store.RuleBroken as broken:
                raise _rule_problem(broken) from None
        edit.state = target.value
        edit.version += 1
        edit.updated_at = now
        if moderator:
            edit.reviewed_by = caller.client_id
            edit.review_reason = reason
        _history(session, edit, action.value, caller.client_id, reason)
        return _json(edit_out(edit))


@partner.post(
    "/edits/{edit_id}/submit",
    response_model=EditOut,
    responses=problems(404, 409),
    summary="Submit a draft for review",
)
async def submit_edit(
    edit_id: str, db: DatabaseDep, now: NowDep, caller: Caller = requires("directory:write")
) -> Response:
    return await _transition(db, now, caller, edit_id, EditAction.SUBMIT, moderator=False)


@partner.post(
    "/edits/{edit_id}/withdraw",
    response_model=EditOut,
    responses=problems(404, 409),
    summary="Withdraw an unpublished edit",
)
async def withdraw_edit(
    edit_id: str, db: DatabaseDep, now: NowDep, caller: Caller = requires("directory:write")
) -> Response:
    return await _transition(db, now, caller, edit_id, EditAction.WITHDRAW, moderator=False)


@partner.get(
    "/services/{service_id}/history",
    response_model=list[EditHistoryOut],
    responses=problems(404),
    summary="Edit history",
)
async def service_history(
    service_id: str, db: DatabaseDep, caller: Caller = requires("directory:write")
) -> list[EditHistoryOut]:
    async with db.session() as session:
        owned = await session.scalar(
            select(Edit.id).where(Edit.service_id == service_id, access.own_edits(caller))
        )
        if owned is None:
            raise Problem(404, "No such service of yours", type_slug="not-found")
        rows = (
            await session.scalars(
                select(EditHistory).where(EditHistory.service_id == service_id).order_by(EditHistory.seq)
            )
        ).all()
    return [
        EditHistoryOut(
            edit_id=r.edit_id, action=r.action, state=r.state, actor=r.actor, reason=r.reason, at=r.at
        )
        for r in rows
    ]


# --- moderators ----------------------------------------------------------------------------------


@moderation.get("/edits", response_model=list[EditOut], summary="The review queue (oldest first)")
async def review_queue(
    db: DatabaseDep,
    caller: Caller = requires("directory:moderate"),
    state: Annotated[EditState, Query()] = EditState.PENDING_REVIEW,
) -> list[EditOut]:
    async with db.session() as session:
        edits = (
            await session.scalars(
                select(Edit).where(Edit.state == state.value).order_by(Edit.updated_at).limit(500)
            )
        ).all()
    return [edit_out(edit) for edit in edits]


@moderation.get(
    "/edits/{edit_id}",
    response_model=EditOut,
    responses=problems(404),
    summary="One edit, with what it would publish",
)
async def review_edit(
    edit_id: str, db: DatabaseDep, caller: Caller = requires("directory:moderate")
) -> Response:
    async with db.session() as session:
        edit = await session.get(Edit, edit_id)
    if edit is None:
        raise Problem(404, "No such edit", type_slug="not-found")
    return _json(edit_out(edit))


@moderation.post(
    "/edits/{edit_id}/approve",
    response_model=EditOut,
    responses=problems(404, 409),
    summary="Approve and publish",
)
async def approve_edit(
    edit_id: str,
    body: ReviewIn,
    db: DatabaseDep,
    now: NowDep,
    caller: Caller = requires("directory:moderate"),
) -> Response:
    return await _transition(db, now, caller, edit_id, EditAction.APPROVE, moderator=True, reason=body.reason)


@moderation.post(
    "/edits/{edit_id}/reject",
    response_model=EditOut,
    responses=problems(404, 409),
    summary="Send back with a reason",
)
async def reject_edit(
    edit_id: str,
    body: ReviewIn,
    db: DatabaseDep,
    now: NowDep,
    caller: Caller = requires("directory:moderate"),
) -> Response:
    return await _transition(db, now, caller, edit_id, EditAction.REJECT, moderator=True, reason=body.reason)
