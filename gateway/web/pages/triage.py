"""Triage practitioners' pages (the single point of access): the referrals awaiting a decision,
one referral with the suggested route and the rules that produced it, the decisions (accept,
override with a reason, decline with an alternative offer, close), and identity review.

Every page is the triage API as the person (`PersonApi`): `GET /triage/referrals`, `GET
/triage/referrals/{id}`, `POST /triage/referrals/{id}/decisions` (with If-Match, the version the
page showed), `POST /triage/referrals/{id}/identity`, `GET /triage/people/{id}`, and the public
directory for the partner services a decline may offer. The words for the API's codes (routes,
sources, needs, risks, priorities) and its times are here too; the crisis pages use them."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from contracts.timezones import LONDON
from contracts.vocabulary import Route
from gateway.web.api import ApiAnswer, PersonApi
from gateway.web.people import SignedInPerson
from gateway.web.roles import Role
from gateway.web.signin import SignedIn, check_csrf
from gateway.web.site import Task, person_page, person_problem

PREFIX = "/app/triage"
router = APIRouter(prefix=PREFIX, include_in_schema=False, dependencies=[Depends(check_csrf)])

TASKS = [
    Task(
        f"{PREFIX}",
        "Referrals to triage",
        "Decide the referrals waiting at the single point of access: accept the suggested route, "
        "choose another, decline with an alternative or close.",
        frozenset({Role.TRIAGE_PRACTITIONER}),
    ),
    Task(
        f"{PREFIX}/identity",
        "Identity review",
        "Referrals whose NHS number matched someone whose details differ, and possible duplicates.",
        frozenset({Role.TRIAGE_PRACTITIONER}),
    ),
]
PER_PAGE = 20

# --- the API's codes in words ---------------------------------------------------------------------

ROUTE_LABELS: dict[str, str] = {
    Route.CRISIS_RESPONSE: "Crisis response",
    Route.CRISIS_LINE: "Crisis line",
    Route.HOME_TREATMENT: "Home treatment",
    Route.FRONT_DOOR_PRIMARY: "Primary care front door",
    Route.FRONT_DOOR_SECONDARY: "Secondary care front door",
    Route.FOCUSED_SUPPORT: "Focused support",
    Route.STAYING_WELL: "Staying well",
    Route.VCFSE_SIGNPOST: "Partner services (signposting)",
    Route.REACCESS: "Back to the named worker's team",
    Route.OUT_OF_AREA: "Out of area: refer on",
}
SOURCE_LABELS: dict[str, str] = {
    "gp": "GP",
    "ae": "A&E",
    "police": "Police",
    "ambulance": "Ambulance service",
    "social_care": "Social care",
    "vcfse": "VCFSE partner",
    "inpatient_discharge": "Inpatient discharge",
    "carer": "Carer",
    "self": "Self-referral",
}
PRIORITY_COLOURS: dict[str, str] = {
    "emergency": "red",
    "very urgent": "orange",
    "urgent": "yellow",
    "routine": "grey",
}
# Most urgent first (the MHSDS codes are not in urgency order).
URGENCY_RANK: dict[str, int] = {"emergency": 0, "very urgent": 1, "urgent": 2, "routine": 3}
SPECIAL_WORDS = {"ocd": "OCD", "lgbtq": "LGBTQ", "ae": "A&E"}
IDENTITY_FIELDS = {"birth_date": "date of birth", "name": "name", "postcode": "postcode"}


def code_words(code: object) -> str:
    """`eating_difficulties` or `peer-support` -> `Eating difficulties`, `Peer support`."""
    words = [SPECIAL_WORDS.get(word, word) for word in str(code).replace("-", "_").split("_") if word]
    text = " ".join(words)
    return text[:1].upper() + text[1:]


def route_words(route: object) -> str:
    return ROUTE_LABELS.get(str(route), code_words(route)) if route else "None"


def source_words(source: object) -> str:
    return SOURCE_LABELS.get(str(source), code_words(source))


def parse_instant(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def when(value: object) -> str:
    """An instant as NHS.UK writes it, in UK time: `3 December 2026, 14:05`."""
    moment = parse_instant(value)
    if moment is None:
        return "Not recorded"
    local = moment.astimezone(LONDON)
    return f"{local.day} {local:%B %Y, %H:%M}"


def day(value: object) -> str:
    """A date (`1979-03-14`) as `14 March 1979`."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    return f"{moment.day} {moment:%B %Y}"


def priority_tag(name: object) -> dict[str, str]:
    text = str(name or "unknown")
    return {"text": text[:1].upper() + text[1:], "colour": PRIORITY_COLOURS.get(text, "grey")}


def _forbidden(request: Request, person: SignedInPerson, scope: str, what: str) -> Response:
    return person_problem(
        request,
        person,
        {"title": "You cannot use this page", "detail": what, "required_scopes": [scope]},
        403,
    )


def api_for(request: Request, person: SignedInPerson) -> PersonApi | None:
    """The API as the person in their triage role; None when they have no triage role."""
    if not person.has(Role.TRIAGE_PRACTITIONER):
        return None
    return PersonApi(request, person, Role.TRIAGE_PRACTITIONER)


def not_triage(request: Request, person: SignedInPerson) -> Response:
    return _forbidden(
        request,
        person,
        "triage:decide",
        "These pages are for triage practitioners at the single point of access. "
        "Your role does not include deciding referrals.",
    )


def differ(reasons: Sequence[str]) -> str:
    """`["birth_date", "name"]` -> `date of birth and name differ`."""
    words = [IDENTITY_FIELDS.get(r, r) for r in reasons] or ["details"]
    listed = words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"
    return f"{listed} {'differs' if len(words) == 1 and words[0] != 'details' else 'differ'}"


def field_errors(problem: Mapping[str, Any], known: Sequence[str]) -> dict[str, str]:
    """The API's refusal as {field: message} for the fields a form has ("form" for the rest)."""
    found: dict[str, str] = {}
    for error in problem.get("errors") or []:
        location = error.get("location") or error.get("loc") or []
        name = str(location[-1]) if location else "form"
        key = name if name in known else "form"
        found.setdefault(key, sentence(str(error.get("message") or error.get("msg") or "Check this")))
    if not found:
        found["form"] = sentence(str(problem.get("detail") or problem.get("title") or "This was refused"))
    return found


def sentence(text: str) -> str:
    text = text.strip()
    return (text[:1].upper() + text[1:]) if text else text


# --- the list ---------------------------------------------------------------------------------------


def _row(referral: Mapping[str, Any], details: Mapping[str, Any] | None) -> dict[str, Any]:
    suggestion = referral.get("suggestion") or {}
    needs = (details or {}).get("needs") if details is not None else None
    return {
        "id": referral["id"],
        "priority": priority_tag(referral.get("priority_name")),
        "rank": URGENCY_RANK.get(str(referral.get("priority_name")), 9),
        "received": when(referral.get("received_at")),
        "received_at": referral.get("received_at") or "",
        "source": source_words(referral.get("source")),
        "needs": ", ".join(code_words(n) for n in needs) if needs else ("None given" if details else None),
        "route": route_words(suggestion.get("route")),
        "identity_review": bool(
            referral.get("identity_review") and referral["identity_review"].get("status") == "open"
        ),
        "duplicates": len(referral.get("possible_duplicates") or []),
        "crisis": bool(referral.get("crisis") or referral.get("deadline_at")),
    }


async def _details(api: PersonApi, referral_id: str) -> dict[str, Any] | None:
    """The needs a list shows are in the referral's details (the worklist answers without them)."""
    answer = await api.get(f"/triage/referrals/{referral_id}")
    if not answer.ok or not isinstance(answer.body, dict):
        return None
    details = answer.body.get("details")
    return details if isinstance(details, dict) else None


DONE = {
    "accepted": "You accepted the suggested route.",
    "overridden": "You chose another route. Your reason is kept with the decision.",
    "declined": "You declined the referral with an alternative offer.",
    "closed": "You closed the referral. Your reason is kept with the decision.",
    "identity": "You settled the identity review. Your reason is kept with the referral.",
}


@router.get("")
async def referrals(request: Request, person: SignedIn, page: int = 1, done: str | None = None) -> Response:
    api = api_for(request, person)
    if api is None:
        return not_triage(request, person)
    page = max(1, min(page, 10_000))
    answer = await api.get(
        "/triage/referrals", params={"status": "received", "page": page, "per_page": PER_PAGE}
    )
    if not answer.ok:
        return person_problem(request, person, answer.problem, answer.status)
    items = answer.body["items"]
    details = await asyncio.gather(*(_details(api, item["id"]) for item in items))
    rows = [_row(item, found) for item, found in zip(items, details, strict=True)]
    # Most urgent first, then the longest waiting (the API pages newest first).
    rows.sort(key=lambda row: (row["rank"], row["received_at"]))
    total = int(answer.body["total"])
    pages = max(1, -(-total // PER_PAGE))
    return person_page(
        request,
        person,
        "pages/triage/referrals.html",
        {
            "rows": rows,
            "total": total,
            "page": page,
            "pages": pages,
            "previous": {"href": f"{PREFIX}?page={page - 1}", "label": f"Page {page - 1} of {pages}"}
            if page > 1
            else None,
            "next": {"href": f"{PREFIX}?page={page + 1}", "label": f"Page {page + 1} of {pages}"}
            if page < pages
            else None,
            "done": DONE.get(done or ""),
        },
        current=PREFIX,
    )


# --- one referral and its decisions ----------------------------------------------------------------


def person_rows(person: Mapping[str, Any] | None) -> list[dict[str, str]]:
    if not person:
        return []
    contact = person.get("contact") or {}
    rows = [
        {"key": "Name", "value": f"{person.get('given_name', '')} {person.get('family_name', '')}".strip()},
        {"key": "NHS number", "value": nhs_number(person.get("nhs_number"))},
        {"key": "Date of birth", "value": day(person.get("birth_date"))},
        {"key": "Postcode", "value": str(person.get("postcode") or "Not given")},
    ]
    if contact.get("phone"):
        rows.append({"key": "Phone", "value": str(contact["phone"])})
    if contact.get("email"):
        rows.append({"key": "Email", "value": str(contact["email"])})
    if contact.get("contact_preference"):
        rows.append({"key": "Prefers contact by", "value": code_words(contact["contact_preference"])})
    if person.get("preferred_language"):
        language = str(person["preferred_language"])
        if person.get("interpreter_needed"):
            language += " (needs an interpreter)"
        rows.append({"key": "Preferred language", "value": language})
    if person.get("accessibility_needs"):
        rows.append({"key": "Accessibility needs", "value": ", ".join(person["accessibility_needs"])})
    return rows


def nhs_number(value: object) -> str:
    text = str(value or "")
    if len(text) == 10 and text.isdigit():
        return f"{text[:3]} {text[3:6]} {text[6:]}"
    return text or "Not given"


def referral_rows(referral: Mapping[str, Any]) -> list[dict[str, Any]]:
    details = referral.get("details") or {}
    rows: list[dict[str, Any]] = [
        {"key": "Received", "value": when(referral.get("received_at"))},
        {
            "key": "Referred by",
            "value": f"{source_words(referral.get('source'))} ({referral.get('referring_organisation', '')})",
        },
        {"key": "Age at referral", "value": str(referral.get("age", ""))},
        {
            "key": "Needs",
            "value": ", ".join(code_words(n) for n in details.get("needs") or []) or "None given",
        },
    ]
    if details.get("needs_text"):
        rows.append({"key": "In the referrer's words", "value": str(details["needs_text"])})
    rows.append(
        {
            "key": "Risks",
            "value": ", ".join(code_words(r) for r in details.get("risks") or []) or "None recorded",
        }
    )
    if details.get("requested_urgency"):
        rows.append(
            {"key": "Urgency the referrer asked for", "value": code_words(details["requested_urgency"])}
        )
    return rows


async def directory_services(api: PersonApi) -> list[dict[str, str]]:
    """The published partner services (the directory's public list), for a decline's offer."""
    answer = await api.get("/directory/services", params={"per_page": 100})
    if not answer.ok or not isinstance(answer.body, dict):
        return []
    found = []
    for item in answer.body.get("contents") or []:
        organisation = (item.get("organization") or {}).get("name")
        name = str(item.get("name") or "")
        found.append(
            {"value": str(item.get("id")), "text": f"{name} ({organisation})" if organisation else name}
        )
    return sorted(found, key=lambda s: s["text"].lower())


ROUTE_OPTIONS = [
    {"value": route.value, "text": ROUTE_LABELS[route]} for route in Route if route is not Route.REACCESS
]


async def _referral_page(
    request: Request,
    person: SignedInPerson,
    api: PersonApi,
    referral_id: str,
    *,
    form: str | None = None,
    errors: Mapping[str, str] | None = None,
    values: Mapping[str, Any] | None = None,
    status: int = 200,
) -> Response:
    answer = await api.get(f"/triage/referrals/{referral_id}")
    if not answer.ok:
        return person_problem(request, person, answer.problem, answer.status)
    referral = answer.body
    suggestion = referral.get("suggestion") or {}
    services = await directory_services(api) if referral["status"] == "received" else []
    summary: list[dict[str, str]] = []
    messages = dict(errors or {})
    if form is not None:
        for name, text in messages.items():
            summary.append({"href": f"#{form}-{name}" if name != "form" else f"#{form}", "text": text})
    suggested_team = suggestion.get("team") or {}
    shown = person_rows(referral.get("person") or referral.get("person_as_referred"))
    return person_page(
        request,
        person,
        "pages/triage/referral.html",
        {
            "referral": referral,
            "who": shown[0]["value"] if shown else "a person",
            "person_rows": shown,
            "referral_rows": referral_rows(referral),
            "priority": priority_tag(referral.get("priority_name")),
            "suggested": {
                "route": route_words(suggestion.get("route")),
                "priority": priority_tag(suggestion.get("priority_name")),
                "team": suggested_team.get("name"),
                "signposts": suggestion.get("signposts") or [],
            },
            "rules": referral.get("rules") or [],
            "decided_route": route_words(referral.get("route")),
            "identity_open": bool(
                referral.get("identity_review") and referral["identity_review"].get("status") == "open"
            ),
            "identity_reasons": differ((referral.get("identity_review") or {}).get("reasons", [])),
            "route_options": [{"value": "", "text": "Choose a route"}, *ROUTE_OPTIONS],
            "services": services,
            "form": form,
            "errors": summary or None,
            "messages": messages,
            "values": values or {},
        },
        status,
        current=PREFIX,
    )


@router.get("/referrals/{referral_id}")
async def referral(request: Request, person: SignedIn, referral_id: str) -> Response:
    api = api_for(request, person)
    if api is None:
        return not_triage(request, person)
    return await _referral_page(request, person, api, referral_id)


DECISIONS = {
    # form name: (API action, the done word, the fields the form has)
    "accept": ("accept", "accepted", ()),
    "override": ("override", "overridden", ("route", "reason")),
    "decline": ("decline", "declined", ("route", "signposts", "reason", "consent_to_share")),
    "close": ("close", "closed", ("reason",)),
}


@router.post("/referrals/{referral_id}/{decision}")
async def decide(request: Request, person: SignedIn, referral_id: str, decision: str) -> Response:
    api = api_for(request, person)
    if api is None:
        return not_triage(request, person)
    if decision == "identity":
        return await _settle_identity(request, person, api, referral_id)
    if decision not in DECISIONS:
        return person_problem(request, person, {"title": "Page not found"}, 404)
    action, done, fields = DECISIONS[decision]
    form = await request.form()
    values: dict[str, Any] = {
        "route": str(form.get("route") or ""),
        "reason": str(form.get("reason") or ""),
        "signposts": [str(s) for s in form.getlist("signposts") if str(s)],
    }
    body: dict[str, Any] = {"action": action}
    if "route" in fields and values["route"]:
        body["route"] = values["route"]
    if "signposts" in fields and values["signposts"]:
        body["signposts"] = values["signposts"]
    if "reason" in fields and values["reason"].strip():
        body["reason"] = values["reason"]
    version = str(form.get("version") or "")
    headers = {"If-Match": f'"{version}"'} if version.isdigit() else {}
    answer = await api.post(f"/triage/referrals/{referral_id}/decisions", json=body, headers=headers)
    if answer.ok:
        return RedirectResponse(f"{PREFIX}?{urlencode({'done': done})}", status_code=303)
    return await _refused(request, person, api, referral_id, decision, answer, fields, values)


async def _refused(
    request: Request,
    person: SignedInPerson,
    api: PersonApi,
    referral_id: str,
    form: str,
    answer: ApiAnswer,
    fields: Sequence[str],
    values: Mapping[str, Any],
) -> Response:
    """A refused decision: the referral again, the form's errors in the summary (422, or the API's
    status for a conflict: it has changed, or its status no longer allows this)."""
    if answer.status in (401, 403, 404):
        return person_problem(request, person, answer.problem, answer.status)
    errors = field_errors(answer.problem, fields)
    if "consent_to_share" in errors:  # said beside the partner services the person did not agree to
        errors["signposts"] = errors.pop("consent_to_share")
    if answer.status == 412:
        errors = {"form": "Someone changed this referral since you opened it. Check it again, then decide."}
    return await _referral_page(
        request, person, api, referral_id, form=form, errors=errors, values=values,
        status=answer.status if answer.status in (409, 412, 422) else 422,
    )  # fmt: skip


# --- identity review ---------------------------------------------------------------------------------


@router.get("/identity")
async def identity_list(request: Request, person: SignedIn, done: str | None = None) -> Response:
    api = api_for(request, person)
    if api is None:
        return not_triage(request, person)
    review, duplicates = await asyncio.gather(
        api.get("/triage/referrals", params={"identity_review": "true", "per_page": 100}),
        api.get(
            "/triage/referrals",
            params={"possible_duplicate": "true", "status": "received", "per_page": 100},
        ),
    )
    for answer in (review, duplicates):
        if not answer.ok:
            return person_problem(request, person, answer.problem, answer.status)

    def rows(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [
            {
                **_row(item, {}),
                "reasons": [
                    IDENTITY_FIELDS.get(r, r) for r in (item.get("identity_review") or {}).get("reasons", [])
                ],
            }
            for item in items
        ]

    return person_page(
        request,
        person,
        "pages/triage/identity_list.html",
        {
            "review": rows(review.body["items"]),
            "duplicates": rows(duplicates.body["items"]),
            "done": DONE.get(done or ""),
        },
        current=f"{PREFIX}/identity",
    )


def compare_rows(
    referred: Mapping[str, Any] | None, others: Sequence[tuple[str, Mapping[str, Any] | None]]
) -> tuple[list[str], list[list[str]]]:
    """Field by field: the person as referred beside each candidate (the person on file, or a
    possible duplicate), for a table."""
    head = ["Detail", "As referred", *[title for title, _ in others]]
    people = [referred, *[other for _, other in others]]

    def value(who: Mapping[str, Any] | None, key: str) -> str:
        if who is None:
            return "Not shown"
        if key == "name":
            return f"{who.get('given_name', '')} {who.get('family_name', '')}".strip()
        if key == "birth_date":
            return day(who.get("birth_date"))
        if key == "nhs_number":
            return nhs_number(who.get("nhs_number"))
        if key == "phone":
            return str((who.get("contact") or {}).get("phone") or "Not given")
        return str(who.get(key) or "Not given")

    rows = [
        [label, *[value(who, key) for who in people]]
        for key, label in (
            ("name", "Name"), ("birth_date", "Date of birth"), ("nhs_number", "NHS number"),
            ("postcode", "Postcode"), ("phone", "Phone"),
        )
    ]  # fmt: skip
    return head, rows


@router.get("/referrals/{referral_id}/identity")
async def identity(request: Request, person: SignedIn, referral_id: str) -> Response:
    api = api_for(request, person)
    if api is None:
        return not_triage(request, person)
    return await _identity_page(request, person, api, referral_id)


async def _identity_page(
    request: Request,
    person: SignedInPerson,
    api: PersonApi,
    referral_id: str,
    *,
    errors: Mapping[str, str] | None = None,
    values: Mapping[str, Any] | None = None,
    status: int = 200,
) -> Response:
    answer = await api.get(f"/triage/referrals/{referral_id}")
    if not answer.ok:
        return person_problem(request, person, answer.problem, answer.status)
    referral = answer.body
    review = referral.get("identity_review") or {}
    in_review = review.get("status") == "open"
    duplicate_ids = [str(p) for p in referral.get("possible_duplicates") or []][:5]
    found = await asyncio.gather(*(api.get(f"/triage/people/{pid}") for pid in duplicate_ids))
    candidates: list[tuple[str, Mapping[str, Any] | None]] = []
    if in_review:
        candidates.append(("On file with this NHS number", referral.get("person")))
    for index, duplicate in enumerate(found, start=1):
        candidates.append((f"Possible duplicate {index}", duplicate.body if duplicate.ok else None))
    head, rows = compare_rows(referral.get("person_as_referred"), candidates)
    messages = dict(errors or {})
    return person_page(
        request,
        person,
        "pages/triage/identity.html",
        {
            "referral": referral,
            "in_review": in_review,
            "received": when(referral.get("received_at")),
            "reasons_text": differ(review.get("reasons", [])),
            "head": head,
            "rows": rows,
            "duplicates": len(duplicate_ids),
            "errors": [
                {"href": f"#{name if name != 'form' else 'outcome'}", "text": text}
                for name, text in messages.items()
            ]
            or None,
            "messages": messages,
            "values": values or {},
        },
        status,
        current=f"{PREFIX}/identity",
    )


async def _settle_identity(
    request: Request, person: SignedInPerson, api: PersonApi, referral_id: str
) -> Response:
    form = await request.form()
    values = {"outcome": str(form.get("outcome") or ""), "reason": str(form.get("reason") or "")}
    errors: dict[str, str] = {}
    if values["outcome"] not in ("confirmed", "different_person"):
        errors["outcome"] = "Select whether this is the person on file"
    if not values["reason"].strip():
        errors["reason"] = "Enter how you established who this is"
    if errors:
        return await _identity_page(
            request, person, api, referral_id, errors=errors, values=values, status=422
        )
    answer = await api.post(
        f"/triage/referrals/{referral_id}/identity",
        json={"outcome": values["outcome"], "reason": values["reason"]},
    )
    if answer.ok:
        return RedirectResponse(f"{PREFIX}/identity?done=identity", status_code=303)
    if answer.status in (401, 403, 404):
        return person_problem(request, person, answer.problem, answer.status)
    return await _identity_page(
        request, person, api, referral_id, errors=field_errors(answer.problem, ("outcome", "reason")),
        values=values, status=answer.status if answer.status in (409, 422) else 422,
    )  # fmt: skip
