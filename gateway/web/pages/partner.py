"""VCFSE partner staff (issue 22): the charity's own directory services and the warm handovers
offered to it, through the directory's partner API as the signed-in person.

- Services: the charity's published services; a service's page with its published details, its
  edits (state, the moderator's reason) and its history; proposing an edit of the fields a page
  shows (the rest stays as published), which is sent for review at once; withdrawing an edit
  that is not yet published.
- Warm handovers: those offered to the charity, by state; a handover's page with what the
  partner may see of the person; accept, decline with a reason, complete.

The API binds everything to the person's organisation: another charity's service, edit or
handover is not found, and the page says so.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from markupsafe import Markup

from gateway.web.api import ApiAnswer, PersonApi
from gateway.web.pages.service_details import (
    EDITABLE,
    LABELS,
    OTHER_LABELS,
    STATUS_NAMES,
    readable,
    term_names,
    when,
)
from gateway.web.pages.service_details import proposal_from_published as from_published
from gateway.web.people import SignedInPerson
from gateway.web.render import STATE_COLOURS, state_label
from gateway.web.roles import Role
from gateway.web.signin import SignedIn, check_csrf
from gateway.web.site import Task, person_page, person_problem

PREFIX = "/app/partner"
SERVICES = f"{PREFIX}/services"
HANDOVERS = f"{PREFIX}/handovers"
router = APIRouter(prefix=PREFIX, include_in_schema=False, dependencies=[Depends(check_csrf)])
TASKS = [
    Task(
        SERVICES,
        "Your services",
        "Check your organisation's services in the directory and send changes for review.",
        frozenset({Role.VCFSE_STAFF}),
    ),
    Task(
        HANDOVERS,
        "Warm handovers",
        "People referred to your services with their consent: accept, decline or complete.",
        frozenset({Role.VCFSE_STAFF}),
    ),
]
OPEN_STATES = ("draft", "pending_review", "rejected")
HANDOVER_STATES = ("offered", "accepted", "declined", "completed")
ACTION_WORDS = {
    "created": "Edit started",
    "revised": "Edit changed",
    "submit": "Sent for review",
    "approve": "Approved and published",
    "reject": "Rejected",
    "withdraw": "Withdrawn",
    "imported": "Imported",
    "service_withdrawn": "Service taken down",
}
SERVICE_DONE = {
    "sent": "Your edit has been sent for review",
    "withdrawn": "Your edit has been withdrawn",
}
HANDOVER_DONE = {
    "accepted": "You have accepted this handover",
    "declined": "You have declined this handover",
    "completed": "You have completed this handover",
}
NOT_YOURS = {
    "title": "Page not found",
    "detail": "This is not one of your organisation's services, or it is no longer published.",
}


def _api(request: Request, person: SignedInPerson) -> PersonApi:
    return PersonApi(request, person, Role.VCFSE_STAFF if person.has(Role.VCFSE_STAFF) else None)


def _link(href: str, text: str) -> Markup:
    return Markup('<a class="nhsuk-link" href="{}">{}</a>').format(href, text)


def _lines(text: str) -> Markup:
    return Markup("<br>").join(text.split("\n"))


def _refused(request: Request, person: SignedInPerson, answer: ApiAnswer) -> Response:
    """The API's refusal; a missing permission in words (error.html names it and who has it)."""
    problem = answer.problem
    if answer.status == 403 and problem.get("required_scopes"):
        problem = {**problem, "title": "These pages are for VCFSE partner staff", "detail": None}
    return person_problem(request, person, problem, answer.status)


def _state_name(state: object) -> str:
    return str(state).replace("_", " ")


def _edit_row(edit: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": edit["id"],
        "state": edit["state"],
        "name": edit["proposal"].get("name"),
        "created": when(edit["created_at"]),
        "updated": when(edit["updated_at"]),
        "reason": edit.get("review_reason"),
        "open": edit["state"] in OPEN_STATES,
    }


async def _own_service(api: PersonApi, service_id: str) -> tuple[ApiAnswer, dict[str, Any] | None]:
    """The partner API's answer listing the person's services, and this one among them."""
    listed = await api.get("/directory/partner/services")
    if not listed.ok:
        return listed, None
    found = next((s for s in listed.body if s["id"] == service_id), None)
    return listed, found


# --- services ------------------------------------------------------------------------------------


@router.get("/services")
async def services(request: Request, person: SignedIn) -> Response:
    api = _api(request, person)
    listed, edits = await asyncio.gather(
        api.get("/directory/partner/services"), api.get("/directory/partner/edits")
    )
    if not listed.ok:
        return _refused(request, person, listed)
    open_edits = {e["service_id"]: e for e in (edits.body if edits.ok else []) if e["state"] in OPEN_STATES}
    rows = []
    for service in listed.body:
        edit = open_edits.get(service["id"])
        rows.append(
            {
                "href": f"{SERVICES}/{service['id']}",
                "name": service["name"],
                "changed": when(service["last_modified"]),
                "edit_state": edit["state"] if edit else None,
            }
        )
    return person_page(request, person, "pages/partner/services.html", {"services": rows}, current=SERVICES)


async def _service_context(api: PersonApi, service_id: str) -> tuple[ApiAnswer | None, dict[str, Any]]:
    """What a service's pages show: (a refusal, or None) and the published document, the
    service's edits (newest first) and its open edit."""
    listed, own = await _own_service(api, service_id)
    if not listed.ok:
        return listed, {}
    if own is None:
        return ApiAnswer(404, NOT_YOURS, listed.headers), {}
    published, edits = await asyncio.gather(
        api.get(f"/directory/services/{service_id}"), api.get("/directory/partner/edits")
    )
    if not published.ok:
        return published, {}
    if not edits.ok:
        return edits, {}
    mine = [e for e in edits.body if e["service_id"] == service_id]
    open_edit = next((e for e in mine if e["state"] in OPEN_STATES), None)
    return None, {"service": own, "document": published.body, "edits": mine, "open_edit": open_edit}


@router.get("/services/{service_id}")
async def service(request: Request, person: SignedIn, service_id: str, done: str | None = None) -> Response:
    api = _api(request, person)
    refusal, found = await _service_context(api, service_id)
    if refusal is not None:
        return _refused(request, person, refusal)
    document = found["document"]
    shown = readable(from_published(document), term_names(document))
    details = [{"key": field.label, "value": _lines(shown[field.name])} for field in EDITABLE]
    details += [
        {"key": label, "value": _lines(shown[name])}
        for name, label in OTHER_LABELS.items()
        if name != "organization"
    ]
    history_answer = await api.get(f"/directory/partner/services/{service_id}/history")
    # A service whose only changes were imports has no edit of the partner's: no history yet.
    history = history_answer.body if history_answer.ok else []
    if not history_answer.ok and history_answer.status != 404:
        return _refused(request, person, history_answer)
    open_edit = found["open_edit"]
    context = {
        "service": found["service"],
        "service_href": f"{SERVICES}/{service_id}",
        "details": details,
        "changed": when(found["service"]["last_modified"]),
        "open_edit": _edit_row(open_edit) if open_edit else None,
        "edits": [
            [
                e["proposal"].get("name") or "",
                (_state_tag(e["state"])),
                when(e["created_at"]),
                when(e["updated_at"]),
                e.get("review_reason") or "",
            ]
            for e in found["edits"]
        ],
        "history": [
            [when(h["at"]), ACTION_WORDS.get(h["action"], h["action"]), h.get("reason") or ""]
            for h in reversed(history)
        ],
        "done": SERVICE_DONE.get(done or ""),
    }
    return person_page(request, person, "pages/partner/service.html", context, current=SERVICES)


def _state_tag(state: str) -> Markup:
    """macros.state_tag, for a table cell built here."""
    return Markup('<strong class="nhsuk-tag nhsuk-tag--{}">{}</strong>').format(
        STATE_COLOURS.get(state, "grey"), state_label(state)
    )


def _form_values(proposal: dict[str, Any]) -> dict[str, str]:
    return {
        field.name: "" if proposal.get(field.name) is None else str(proposal.get(field.name))
        for field in EDITABLE
    }


def _edit_base(found: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The proposal an edit starts from (the open draft or rejected edit, else the published
    service) and the open edit being revised, if any."""
    open_edit = found["open_edit"]
    if open_edit is not None and open_edit["state"] in ("draft", "rejected"):
        return dict(open_edit["proposal"]), open_edit
    return from_published(found["document"]), None


def _edit_page(
    request: Request,
    person: SignedIn,
    found: dict[str, Any],
    values: dict[str, str],
    revising: dict[str, Any] | None,
    key: str,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    service_id = found["service"]["id"]
    context = {
        "service": found["service"],
        "fields": EDITABLE,
        "values": values,
        "errors": errors or None,
        "revising": _edit_row(revising) if revising else None,
        "key": key,
        "statuses": [{"value": value, "text": text} for value, text in STATUS_NAMES.items()],
        "action": f"{SERVICES}/{service_id}/edit",
        "back_link": f"{SERVICES}/{service_id}",
        "back_label": "Back to the service",
    }
    return person_page(request, person, "pages/partner/edit.html", context, status, current=SERVICES)


@router.get("/services/{service_id}/edit")
async def edit_form(request: Request, person: SignedIn, service_id: str) -> Response:
    api = _api(request, person)
    refusal, found = await _service_context(api, service_id)
    if refusal is not None:
        return _refused(request, person, refusal)
    if found["open_edit"] is not None and found["open_edit"]["state"] == "pending_review":
        return person_page(
            request,
            person,
            "pages/partner/edit_waiting.html",
            {
                "service": found["service"],
                "edit": _edit_row(found["open_edit"]),
                "back_link": f"{SERVICES}/{service_id}",
                "back_label": "Back to the service",
            },
            current=SERVICES,
        )
    base, revising = _edit_base(found)
    return _edit_page(request, person, found, _form_values(base), revising, str(uuid.uuid4()))


def _checked(values: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The form's values as proposal fields, and the errors found (field name → message)."""
    errors: dict[str, str] = {}
    fields: dict[str, Any] = {}
    for field in EDITABLE:
        text = values.get(field.name, "").strip()
        values[field.name] = text
        if field.required and not text:
            errors[field.name] = f"Enter the {field.label.lower()}"
            continue
        if field.kind == "age" and text:
            if not text.isdigit() or int(text) > 130:
                errors[field.name] = f"{field.label} must be a whole number of years, like 18"
                continue
            fields[field.name] = int(text)
            continue
        if field.kind == "url" and text and not text.startswith(("https://", "http://")):
            errors[field.name] = "Enter the web page address starting https://"
            continue
        if field.kind == "email" and text and ("@" not in text or " " in text):
            errors[field.name] = "Enter an email address in the correct format, like name@example.org"
            continue
        if field.kind == "status" and text not in STATUS_NAMES:
            errors[field.name] = "Select whether the service is running"
            continue
        fields[field.name] = text or None
    low, high = fields.get("minimum_age"), fields.get("maximum_age")
    if isinstance(low, int) and isinstance(high, int) and high < low:
        errors["maximum_age"] = "Oldest age must be the same as or more than the youngest age"
    return fields, errors


def _api_errors(answer: ApiAnswer) -> dict[str, str]:
    """A 422's field errors by the page's field names (others under the first field)."""
    found: dict[str, str] = {}
    for issue in answer.problem.get("errors") or []:
        location = [str(part) for part in issue.get("location") or []]
        name = next((part for part in reversed(location) if part in LABELS), None)
        target = name if name in {f.name for f in EDITABLE} else "name"
        label = LABELS.get(name or "", "The service")
        found.setdefault(str(target), f"{label}: {issue.get('message', 'is not valid')}")
    if not found:
        found["name"] = str(
            answer.problem.get("detail") or answer.problem.get("title") or "Check the details"
        )
    return found


@router.post("/services/{service_id}/edit")
async def send_edit(request: Request, person: SignedIn, service_id: str) -> Response:
    api = _api(request, person)
    refusal, found = await _service_context(api, service_id)
    if refusal is not None:
        return _refused(request, person, refusal)
    form = await request.form()
    values = {field.name: str(form.get(field.name) or "") for field in EDITABLE}
    key = str(form.get("key") or uuid.uuid4())
    base, revising = _edit_base(found)
    fields, errors = _checked(values)
    if errors:
        return _edit_page(request, person, found, values, revising, key, errors, 422)
    proposal = {**base, **fields}
    if revising is not None:
        answer = await api.call(
            "PUT",
            f"/directory/partner/edits/{revising['id']}",
            json=proposal,
            headers={"If-Match": f'"{revising["version"]}"'},
        )
    else:
        answer = await api.post(
            f"/directory/partner/services/{service_id}/edits",
            json=proposal,
            headers={"Idempotency-Key": key},
        )
    if answer.status == 422:
        return _edit_page(request, person, found, values, revising, key, _api_errors(answer), 422)
    if not answer.ok:
        return _refused(request, person, answer)
    submitted = await api.post(f"/directory/partner/edits/{answer.body['id']}/submit")
    if not submitted.ok and submitted.status != 409:  # 409: a replayed create, sent already
        return _refused(request, person, submitted)
    return RedirectResponse(f"{SERVICES}/{service_id}?done=sent", status_code=303)


@router.post("/edits/{edit_id}/withdraw")
async def withdraw_edit(request: Request, person: SignedIn, edit_id: str) -> Response:
    answer = await _api(request, person).post(f"/directory/partner/edits/{edit_id}/withdraw")
    if not answer.ok:
        return _refused(request, person, answer)
    return RedirectResponse(f"{SERVICES}/{answer.body['service_id']}?done=withdrawn", status_code=303)


# --- warm handovers ------------------------------------------------------------------------------


def _need(code: str, names: dict[str, str]) -> str:
    return names.get(code) or code.replace("-", " ").replace("_", " ").capitalize()


async def _need_names(api: PersonApi) -> dict[str, str]:
    """The directory's needs terms by code (the codes a handover's needs are given in)."""
    answer = await api.get("/directory/taxonomy_terms", params={"per_page": 100})
    if not answer.ok or not isinstance(answer.body, dict):
        return {}
    return {
        str(t["code"]): str(t["name"])
        for t in answer.body.get("contents", [])
        if t.get("code") and t.get("name")
    }


async def _service_names(api: PersonApi) -> dict[str, str]:
    listed = await api.get("/directory/partner/services")
    return {s["id"]: s["name"] for s in listed.body} if listed.ok else {}


@router.get("/handovers")
async def handovers(request: Request, person: SignedIn, state: str | None = None) -> Response:
    api = _api(request, person)
    chosen = state if state in HANDOVER_STATES else None
    answer, names = await asyncio.gather(
        api.get("/directory/handovers", params={"state": chosen} if chosen else None), _service_names(api)
    )
    if not answer.ok:
        return _refused(request, person, answer)
    rows = [
        [
            _link(f"{HANDOVERS}/{h['id']}", (h.get("person") or {}).get("name") or "Person referred"),
            names.get(h["service_id"], "A service no longer published"),
            when(h["offered_at"]),
            (_state_tag(h["state"])),
        ]
        for h in answer.body
    ]
    filters = [
        {"href": HANDOVERS, "label": "All", "current": chosen is None},
        *(
            {"href": f"{HANDOVERS}?state={s}", "label": _state_name(s).capitalize(), "current": chosen == s}
            for s in HANDOVER_STATES
        ),
    ]
    context = {"rows": rows, "state": chosen, "filters": filters}
    return person_page(request, person, "pages/partner/handovers.html", context, current=HANDOVERS)


async def _handover_page(
    request: Request,
    person: SignedInPerson,
    handover_id: str,
    *,
    done: str | None = None,
    reason: str = "",
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    api = _api(request, person)
    answer, names, needs = await asyncio.gather(
        api.get(f"/directory/handovers/{handover_id}"), _service_names(api), _need_names(api)
    )
    if not answer.ok:
        return _refused(request, person, answer)
    handover = answer.body
    contact = handover.get("person") or {}
    details = [
        {"key": "Name", "value": contact.get("name") or "Not given"},
        {"key": "Phone", "value": contact.get("phone") or "Not given"},
        {"key": "Email", "value": contact.get("email") or "Not given"},
        {"key": "Preferred language", "value": contact.get("preferred_language") or "Not given"},
        {"key": "Needs an interpreter", "value": "Yes" if contact.get("interpreter_needed") else "No"},
        {"key": "What they need help with", "value": ", ".join(_need(n, needs) for n in handover.get("needs") or [])
         or "Not given"},
        {"key": "Note from the referral", "value": handover.get("note") or "None"},
    ]  # fmt: skip
    context = {
        "handover": handover,
        "href": f"{HANDOVERS}/{handover_id}",
        "service_name": names.get(handover["service_id"], "A service no longer published"),
        "offered": when(handover["offered_at"]),
        "updated": when(handover["updated_at"]),
        "details": details,
        "done": HANDOVER_DONE.get(done or ""),
        "reason": reason,
        "errors": errors or None,
        "back_link": HANDOVERS,
        "back_label": "Back to warm handovers",
    }
    return person_page(request, person, "pages/partner/handover.html", context, status, current=HANDOVERS)


@router.get("/handovers/{handover_id}")
async def handover(request: Request, person: SignedIn, handover_id: str, done: str | None = None) -> Response:
    return await _handover_page(request, person, handover_id, done=done)


async def _answer(
    request: Request, person: SignedInPerson, handover_id: str, action: str, done: str
) -> Response:
    answer = await _api(request, person).post(f"/directory/handovers/{handover_id}/{action}", json={})
    if not answer.ok:
        return _refused(request, person, answer)
    return RedirectResponse(f"{HANDOVERS}/{handover_id}?done={done}", status_code=303)


@router.post("/handovers/{handover_id}/accept")
async def accept(request: Request, person: SignedIn, handover_id: str) -> Response:
    return await _answer(request, person, handover_id, "accept", "accepted")


@router.post("/handovers/{handover_id}/complete")
async def complete(request: Request, person: SignedIn, handover_id: str) -> Response:
    return await _answer(request, person, handover_id, "complete", "completed")


@router.post("/handovers/{handover_id}/decline")
async def decline(request: Request, person: SignedIn, handover_id: str) -> Response:
    form = await request.form()
    reason = str(form.get("reason") or "").strip()
    if not reason:
        errors = {"reason": "Enter why you are declining, so the referrer can offer something else"}
        return await _handover_page(request, person, handover_id, reason=reason, errors=errors, status=422)
    answer = await _api(request, person).post(
        f"/directory/handovers/{handover_id}/decline", json={"reason": reason}
    )
    if answer.status == 422:
        errors = {"reason": "The reason must be 2000 characters or fewer"}
        return await _handover_page(request, person, handover_id, reason=reason, errors=errors, status=422)
    if not answer.ok:
        return _refused(request, person, answer)
    return RedirectResponse(f"{HANDOVERS}/{handover_id}?done=declined", status_code=303)
