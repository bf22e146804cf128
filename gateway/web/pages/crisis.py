"""Crisis practitioners' pages: the crisis queue by deadline (time remaining in words, rendered
here), one crisis referral, and recording the first face-to-face contact.

The queue is `GET /triage/crisis/queue` as the person. It stays live where JavaScript runs:
`static/crisis-live.js` listens to `/app/crisis/live`, which relays triage's event stream
(`GET /triage/crisis/stream`, as the person, resumable with Last-Event-ID) and, on each change,
fetches the queue's table again from `/app/crisis/queue-table` (rendered here, as on the page).
Without JavaScript the page works the same with its Refresh link (no `meta refresh`: it moves a
screen reader's place without warning)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from starlette.types import Message, Scope

from contracts.timezones import LONDON
from gateway.state import gateway_state
from gateway.web import render
from gateway.web.api import PersonApi
from gateway.web.pages.triage import (
    code_words,
    field_errors,
    person_rows,
    priority_tag,
    referral_rows,
    route_words,
    source_words,
    when,
)
from gateway.web.people import SignedInPerson
from gateway.web.roles import Role
from gateway.web.signin import SignedIn, check_csrf
from gateway.web.site import NOT_A_PAGE, Task, person_page, person_problem
from shared.http import UNKNOWN_ADDRESS, client_address, public_base

PREFIX = "/app/crisis"
router = APIRouter(prefix=PREFIX, include_in_schema=False, dependencies=[Depends(check_csrf)])

TASKS = [
    Task(
        PREFIX,
        "Crisis queue",
        "Open crisis referrals, soonest deadline first, and recording the first face-to-face contact.",
        frozenset({Role.CRISIS_PRACTITIONER}),
    ),
]
# A relayed stream ends after this long; the browser reconnects (from the last event) and the
# session is checked again.
RELAY_SECONDS = 300.0
_TIME = re.compile(r"^([01]?[0-9]|2[0-3])[:.]([0-5][0-9])$")


def api_for(request: Request, person: SignedInPerson) -> PersonApi | None:
    if not person.has(Role.CRISIS_PRACTITIONER):
        return None
    return PersonApi(request, person, Role.CRISIS_PRACTITIONER)


def not_crisis(request: Request, person: SignedInPerson) -> Response:
    return person_problem(
        request,
        person,
        {
            "title": "You cannot use this page",
            "detail": "The crisis queue is for crisis practitioners. Your role does not include responding to crises.",
            "required_scopes": ["crisis:respond"],
        },
        403,
    )


def duration(minutes: int) -> str:
    """`80` -> `1 hour 20 minutes`."""
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    parts = []
    for count, unit in ((days, "day"), (hours, "hour"), (mins, "minute")):
        if count:
            parts.append(f"{count} {unit}{'' if count == 1 else 's'}")
    return " ".join(parts[:2]) or "0 minutes"


def time_remaining(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The time left to the first face-to-face contact, in words, and how pressing it is."""
    minutes = entry.get("minutes_remaining")
    if minutes is None:
        return {"text": "No deadline", "colour": "grey", "overdue": False}
    minutes = int(minutes)
    if minutes < 0:
        return {"text": f"Overdue by {duration(-minutes)}", "colour": "red", "overdue": True}
    if minutes < 1:
        return {"text": "Less than a minute left", "colour": "red", "overdue": False}
    return {
        "text": f"{duration(minutes)} left",
        "colour": "orange" if minutes <= 60 else "blue",
        "overdue": False,
    }


def queue_rows(entries: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "id": entry["referral_id"],
            "remaining": time_remaining(entry),
            "deadline": when(entry.get("deadline_at")),
            "priority": priority_tag(entry.get("priority_name")),
            "source": source_words(entry.get("source")),
            "received": when(entry.get("received_at")),
            "route": route_words(entry.get("route")),
        }
        for entry in entries
    ]


async def _queue(request: Request, person: SignedInPerson, api: PersonApi) -> dict[str, Any] | Response:
    answer = await api.get("/triage/crisis/queue")
    if not answer.ok:
        return person_problem(request, person, answer.problem, answer.status)
    return {
        "rows": queue_rows(answer.body["entries"]),
        "as_of": when(answer.body.get("as_of")),
        "last_event_id": answer.body.get("last_event_id", 0),
    }


DONE = {"contact": "The first face-to-face contact is recorded. The referral has left the queue."}


@router.get("")
async def queue(request: Request, person: SignedIn, done: str | None = None) -> Response:
    api = api_for(request, person)
    if api is None:
        return not_crisis(request, person)
    found = await _queue(request, person, api)
    if isinstance(found, Response):
        return found
    return person_page(
        request, person, "pages/crisis/queue.html", {**found, "done": DONE.get(done or "")}, current=PREFIX
    )


@router.get("/queue-table", tags=[NOT_A_PAGE])
async def queue_table(request: Request, person: SignedIn) -> Response:
    """The queue's table alone, for crisis-live.js to put in place of the one on the page."""
    api = api_for(request, person)
    if api is None:
        return not_crisis(request, person)
    found = await _queue(request, person, api)
    if isinstance(found, Response):
        return found
    return render.page(request, "pages/crisis/_queue.html", found)


# --- the live relay ------------------------------------------------------------------------------


def _peer(request: Request) -> str:
    """The person's address as the gateway believes it, as PersonApi gives it to its calls."""
    address = client_address(request.scope, gateway_state(request).settings)
    return address if address != UNKNOWN_ADDRESS else "127.0.0.1"


class _Upstream:
    """One API call through the gateway's own front door, in process, whose answer is read as it
    comes (httpx's ASGI transport holds the whole answer first, so it cannot carry a stream)."""

    def __init__(self, request: Request, path: str, headers: Mapping[str, str]) -> None:
        base = public_base(gateway_state(request).settings, request.scope)
        scheme, _, host = base.partition("://")
        self.scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": scheme,
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", host.encode()),
                *((k.lower().encode(), v.encode()) for k, v in headers.items()),
            ],
            "client": (_peer(request), 0),
            "server": (host.rsplit(":", 1)[0], 0),
        }
        self.app = request.app
        self.messages: asyncio.Queue[Message] = asyncio.Queue(maxsize=16)
        self.gone = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.status = 502
        self.body_done = False
        self.asked = False

    async def _receive(self) -> Message:
        if not self.asked:
            self.asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: Message) -> None:
        await self.messages.put(message)

    async def _next(self) -> Message | None:
        assert self.task is not None
        getter = asyncio.ensure_future(self.messages.get())
        await asyncio.wait({getter, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            return getter.result()
        getter.cancel()
        return None if self.messages.empty() else self.messages.get_nowait()

    async def start(self) -> int:
        self.task = asyncio.create_task(self.app(self.scope, self._receive, self._send))
        message = await self._next()
        if message is not None and message["type"] == "http.response.start":
            self.status = int(message["status"])
        return self.status

    async def chunks(self) -> AsyncIterator[bytes]:
        while not self.body_done:
            message = await self._next()
            if message is None or message["type"] != "http.response.body":
                return
            self.body_done = not message.get("more_body", False)
            if message.get("body"):
                yield bytes(message["body"])

    async def close(self) -> None:
        self.gone.set()
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


def _relayed(block: str) -> bytes | None:
    """One event of triage's stream as the page's script hears it: its id (to resume from) and
    the referral that changed, and how; comments and retry hints pass as they are."""
    fields: dict[str, str] = {}
    for line in block.split("\n"):
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")
    if "data" not in fields:
        return (block + "\n\n").encode() if block.startswith((":", "retry")) else None
    try:
        entry = json.loads(fields["data"])
    except ValueError:
        return None
    data = {"referral_id": entry.get("referral_id"), "change": fields.get("event", "message")}
    return f"id: {fields.get('id', '')}\nevent: changed\ndata: {json.dumps(data)}\n\n".encode()


@router.get("/live", tags=[NOT_A_PAGE])
async def live(request: Request, person: SignedIn) -> Response:
    """Triage's crisis stream relayed as the person (server-sent events)."""
    api = api_for(request, person)
    if api is None:
        return not_crisis(request, person)
    extra = {"Accept": "text/event-stream"}
    last = request.headers.get("last-event-id")
    if last:
        extra["Last-Event-ID"] = last
    upstream = _Upstream(request, "/triage/crisis/stream", await api.request_headers(extra))
    status = await upstream.start()
    if status != 200:
        body = b"".join([chunk async for chunk in upstream.chunks()])
        await upstream.close()
        try:
            problem = json.loads(body)
        except ValueError:
            problem = {"title": "The crisis stream is not available"}
        return person_problem(request, person, problem, status)

    async def events() -> AsyncIterator[bytes]:
        ends = time.monotonic() + RELAY_SECONDS
        pending = ""
        try:
            async for chunk in upstream.chunks():
                pending += chunk.decode()
                while "\n\n" in pending:
                    block, pending = pending.split("\n\n", 1)
                    relayed = _relayed(block)
                    if relayed is not None:
                        yield relayed
                if time.monotonic() > ends:
                    return
        finally:
            await upstream.close()

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={**render.page_headers(), "Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# --- one crisis referral and its first contact ------------------------------------------------------


def _now_fields() -> dict[str, str]:
    now = datetime.now(UTC).astimezone(LONDON)
    return {"day": str(now.day), "month": str(now.month), "year": str(now.year), "time": f"{now:%H:%M}"}


async def _referral_page(
    request: Request,
    person: SignedInPerson,
    api: PersonApi,
    referral_id: str,
    *,
    errors: Mapping[str, str] | None = None,
    values: Mapping[str, str] | None = None,
    status: int = 200,
) -> Response:
    answer = await api.get(f"/triage/referrals/{referral_id}")
    if not answer.ok:
        return person_problem(request, person, answer.problem, answer.status)
    referral = answer.body
    shown = person_rows(referral.get("person") or referral.get("person_as_referred"))
    entry = {
        "minutes_remaining": None
        if referral.get("first_contact_at") or not referral.get("deadline_at")
        else _minutes_to(referral["deadline_at"]),
    }
    messages = dict(errors or {})
    targets = {"date": "contact-day", "time": "contact-time", "form": "contact-day"}
    return person_page(
        request,
        person,
        "pages/crisis/referral.html",
        {
            "referral": referral,
            "who": shown[0]["value"] if shown else "a person",
            "person_rows": shown,
            "referral_rows": referral_rows(referral),
            "priority": priority_tag(referral.get("priority_name")),
            "remaining": time_remaining(entry),
            "deadline": when(referral.get("deadline_at")),
            "first_contact": when(referral.get("first_contact_at"))
            if referral.get("first_contact_at")
            else None,
            "route": route_words(referral.get("route") or (referral.get("suggestion") or {}).get("route")),
            "rules": referral.get("rules") or [],
            "values": values or _now_fields(),
            "errors": [{"href": f"#{targets.get(k, 'contact-day')}", "text": v} for k, v in messages.items()]
            or None,
            "messages": messages,
            "response": duration(int(referral["response_minutes"]))
            if referral.get("response_minutes") is not None
            else None,
            "code_words": code_words,
        },
        status,
        current=PREFIX,
    )


def _minutes_to(deadline: str) -> int | None:
    try:
        moment = datetime.fromisoformat(deadline)
    except ValueError:
        return None
    return int((moment - datetime.now(UTC)).total_seconds() // 60)


@router.get("/referrals/{referral_id}")
async def referral(request: Request, person: SignedIn, referral_id: str) -> Response:
    api = api_for(request, person)
    if api is None:
        return not_crisis(request, person)
    return await _referral_page(request, person, api, referral_id)


def contact_moment(values: Mapping[str, str]) -> tuple[datetime | None, dict[str, str]]:
    """The contact's date and time as typed (UK time), or what is wrong with them."""
    errors: dict[str, str] = {}
    moment = None
    try:
        day, month, year = (int(values[k]) for k in ("day", "month", "year"))
        datetime(year, month, day)
    except (ValueError, KeyError):
        errors["date"] = "Enter the date of the contact as a real date, for example 27 3 2026"
        day = month = year = 0
    found = _TIME.match(values.get("time", "").strip())
    if not found:
        errors["time"] = "Enter the time of the contact in 24-hour time, for example 14:05"
    if not errors and found:
        moment = datetime(year, month, day, int(found.group(1)), int(found.group(2)), tzinfo=LONDON)
    return moment, errors


@router.post("/referrals/{referral_id}/contact")
async def record_contact(request: Request, person: SignedIn, referral_id: str) -> Response:
    api = api_for(request, person)
    if api is None:
        return not_crisis(request, person)
    form = await request.form()
    values = {k: str(form.get(k) or "").strip() for k in ("day", "month", "year", "time")}
    moment, errors = contact_moment(values)
    if moment is None:
        return await _referral_page(
            request, person, api, referral_id, errors=errors, values=values, status=422
        )
    answer = await api.post(
        f"/triage/crisis/referrals/{referral_id}/contact",
        json={"contact_at": moment.isoformat(), "mechanism": "face_to_face"},
    )
    if answer.ok:
        return RedirectResponse(f"{PREFIX}?done=contact", status_code=303)
    if answer.status in (401, 403, 404):
        return person_problem(request, person, answer.problem, answer.status)
    refused = field_errors(answer.problem, ("contact_at",))
    errors = {"date" if k == "contact_at" else "form": v for k, v in refused.items()}
    return await _referral_page(
        request, person, api, referral_id, errors=errors, values=values,
        status=answer.status if answer.status in (409, 422) else 422,
    )  # fmt: skip
