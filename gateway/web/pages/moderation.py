"""Directory moderators (issue 22): the queue of partners' edits waiting for review (oldest
first), an edit's page showing what it changes (field, published value, proposed value, only the
fields that change), and approving it (it is published at once) or rejecting it with a reason the
partner sees. Everything through the directory's moderation API as the signed-in person."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from markupsafe import Markup

from gateway.web.api import ApiAnswer, PersonApi
from gateway.web.pages.service_details import changes, proposal_from_published, term_names, when
from gateway.web.people import SignedInPerson
from gateway.web.roles import Role
from gateway.web.signin import SignedIn, check_csrf
from gateway.web.site import Task, person_page, person_problem

PREFIX = "/app/moderation"
QUEUE = f"{PREFIX}/edits"
router = APIRouter(prefix=PREFIX, include_in_schema=False, dependencies=[Depends(check_csrf)])
TASKS = [
    Task(
        QUEUE,
        "Directory edits to review",
        "Check partners' changes to their directory services, then publish or send them back.",
        frozenset({Role.DIRECTORY_MODERATOR}),
    )
]
DONE = {
    "approved": "The edit has been approved and published",
    "rejected": "The edit has been sent back to the partner with your reason",
}
APPROVED_NOTE = "Approved by a directory moderator"
REASON_MIN = 3


def _api(request: Request, person: SignedInPerson) -> PersonApi:
    role = Role.DIRECTORY_MODERATOR if person.has(Role.DIRECTORY_MODERATOR) else None
    return PersonApi(request, person, role)


def _refused(request: Request, person: SignedInPerson, answer: ApiAnswer) -> Response:
    """The API's refusal; a missing permission in words (error.html names it and who has it)."""
    problem = answer.problem
    if answer.status == 403 and problem.get("required_scopes"):
        problem = {**problem, "title": "You cannot review directory edits", "detail": None}
    return person_problem(request, person, problem, answer.status)


def _lines(text: str) -> Markup:
    return Markup("<br>").join(text.split("\n"))


async def _published(api: PersonApi, service_id: str) -> dict[str, Any] | None:
    """The service as the public directory shows it; none while it has never been published."""
    answer = await api.get(f"/directory/services/{service_id}")
    return answer.body if answer.ok and isinstance(answer.body, dict) else None


def _organisation(edit: dict[str, Any], document: dict[str, Any] | None) -> str:
    proposed = edit["proposal"].get("organization") or {}
    published = (document or {}).get("organization") or {}
    return str(proposed.get("name") or published.get("name") or "Organisation not named")


@router.get("/edits")
async def queue(request: Request, person: SignedIn, done: str | None = None) -> Response:
    api = _api(request, person)
    answer = await api.get("/directory/moderation/edits")
    if not answer.ok:
        return _refused(request, person, answer)
    edits = answer.body
    documents = await asyncio.gather(*(_published(api, e["service_id"]) for e in edits))
    rows = [
        [
            Markup('<a class="nhsuk-link" href="{}">{}</a>').format(
                f"{QUEUE}/{edit['id']}",
                (document or {}).get("name") or edit["proposal"].get("name") or "Unnamed service",
            ),
            _organisation(edit, document),
            "Change to a published service" if document else "New service",
            when(edit["updated_at"]),
        ]
        for edit, document in zip(edits, documents, strict=True)
    ]
    context = {"rows": rows, "done": DONE.get(done or "")}
    return person_page(request, person, "pages/moderation/queue.html", context, current=QUEUE)


async def _edit_page(
    request: Request,
    person: SignedInPerson,
    edit_id: str,
    *,
    done: str | None = None,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    api = _api(request, person)
    answer = await api.get(f"/directory/moderation/edits/{edit_id}")
    if not answer.ok:
        return _refused(request, person, answer)
    edit = answer.body
    document = await _published(api, edit["service_id"])
    current = proposal_from_published(document) if document else None
    found = changes(current, edit["proposal"], term_names(document))
    rows = [
        [
            Markup("{} {}").format(
                change.label,
                Markup('<strong class="nhsuk-tag nhsuk-tag--{}">{}</strong>').format(
                    "blue" if current else "green", "Changed" if current else "New"
                ),
            ),
            _lines(change.current),
            _lines(change.proposed),
        ]
        for change in found
    ]
    context = {
        "edit": edit,
        "href": f"{QUEUE}/{edit_id}",
        "service_name": edit["proposal"].get("name") or "Unnamed service",
        "published_name": (document or {}).get("name"),
        "organisation": _organisation(edit, document),
        "is_new": document is None,
        "sent": when(edit["updated_at"]),
        "started": when(edit["created_at"]),
        "rows": rows,
        "done": DONE.get(done or ""),
        "values": values or {},
        "errors": errors or None,
        "back_link": QUEUE,
        "back_label": "Back to directory edits",
    }
    return person_page(request, person, "pages/moderation/edit.html", context, status, current=QUEUE)


@router.get("/edits/{edit_id}")
async def edit(request: Request, person: SignedIn, edit_id: str, done: str | None = None) -> Response:
    return await _edit_page(request, person, edit_id, done=done)


async def _review(
    request: Request, person: SignedInPerson, edit_id: str, verdict: str, reason: str, done: str
) -> Response:
    answer = await _api(request, person).post(
        f"/directory/moderation/edits/{edit_id}/{verdict}", json={"reason": reason}
    )
    if answer.status == 422:
        field = "reject_reason" if verdict == "reject" else "approve_note"
        errors = {field: "The reason must be 3 to 2000 characters"}
        values = {field: reason}
        return await _edit_page(request, person, edit_id, values=values, errors=errors, status=422)
    if not answer.ok:
        return _refused(request, person, answer)
    return RedirectResponse(f"{QUEUE}/{edit_id}?done={done}", status_code=303)


@router.post("/edits/{edit_id}/approve")
async def approve(request: Request, person: SignedIn, edit_id: str) -> Response:
    form = await request.form()
    note = str(form.get("approve_note") or "").strip()
    if note and len(note) < REASON_MIN:
        errors = {"approve_note": f"The note must be at least {REASON_MIN} characters, or leave it empty"}
        values = {"approve_note": note}
        return await _edit_page(request, person, edit_id, values=values, errors=errors, status=422)
    return await _review(request, person, edit_id, "approve", note or APPROVED_NOTE, "approved")


@router.post("/edits/{edit_id}/reject")
async def reject(request: Request, person: SignedIn, edit_id: str) -> Response:
    form = await request.form()
    reason = str(form.get("reject_reason") or "").strip()
    if len(reason) < REASON_MIN:
        message = (
            "Enter why you are rejecting this edit"
            if not reason
            else f"The reason must be at least {REASON_MIN} characters"
        )
        values = {"reject_reason": reason}
        errors = {"reject_reason": message}
        return await _edit_page(request, person, edit_id, values=values, errors=errors, status=422)
    return await _review(request, person, edit_id, "reject", reason, "rejected")
