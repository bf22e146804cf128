"""Team pages (issue 22): a team lead's and a named worker's four-week worklist and episodes.

Everything here is careplan's and the registry's API as the signed-in person: the worklist
(`GET /careplan/worklist?team_id=`), an episode with its records and both clocks
(`GET /careplan/episodes/{id}`), the person's journey (`GET /careplan/people/{id}/journey`), and
the writes a team does (a named worker, a contact, an assessment, a care plan and its agreement).

Careplan binds episodes to the organisation providing the team, not to the team itself: another
team of the same trust may read them through the API. These pages show a person only their own
team's episodes (the worklist asks for their team; an episode of another team is "not found").

The named worker is a registry practitioner; a signed-in person is not one (the gateway's mapping
holds no practitioner id), so "me" is the practitioner of the person's team whose registry name
is the person's name, when exactly one is.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from contracts.timezones import LONDON, london_today
from gateway.web.api import ApiAnswer, PersonApi
from gateway.web.people import SignedInPerson
from gateway.web.roles import Role
from gateway.web.signin import SignedIn, check_csrf
from gateway.web.site import Task, person_page, person_problem

PREFIX = "/app/team"
TEAM_ROLES = frozenset({Role.TEAM_LEAD, Role.TEAM_MEMBER})
TARGET_DAYS = 28  # the four-week promise (contracts.clocks.TARGET_DAYS)
PER_PAGE = 20
WORKLIST_BATCH = 500  # careplan's most per page
WORKLIST_MOST = 2000  # a team's open episodes read for one worklist page, at most

TASKS = [
    Task(
        PREFIX,
        "Team worklist",
        "Your team's open episodes by the four-week plan clock, breached and at risk first.",
        TEAM_ROLES,
    )
]

router = APIRouter(prefix=PREFIX, include_in_schema=False, dependencies=[Depends(check_csrf)])

_EPISODE_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")

STATE_FILTERS = (
    ("", "All open episodes"),
    ("breached", "Breached"),
    ("at_risk", "At risk"),
    ("running", "Running"),
    ("not_started", "Not started"),
)
MECHANISMS = (
    ("face_to_face", "Face to face"),
    ("telephone", "Telephone"),
    ("video", "Video"),
    ("other", "Other"),
)
HOW_AGREED = (
    ("in_person", "In person"),
    ("telephone", "By telephone"),
    ("video", "By video"),
    ("letter", "By letter"),
    ("declined_to_sign", "Agreed, but the person declined to sign"),
)
BREACH_REASONS = (
    ("capacity", "Team capacity"),
    ("persons_choice", "The person's choice"),
    ("not_reachable", "The person could not be reached"),
    ("clinical", "Clinical reasons"),
    ("other", "Another reason"),
)
RECORD_NAMES = {
    "contact": "Contact",
    "assessment": "Assessment",
    "outcome_measure": "Outcome measure",
    "intervention": "Intervention",
    "advice": "Advice or signposting",
    "plan": "Care plan written",
    "plan_agreement": "Care plan agreed",
    "review": "Plan review",
    "named_worker": "Named worker assigned",
    "discharge": "Discharged",
    "transfer": "Transferred",
    "linked_referral": "Another referral linked",
}
JOURNEY_NAMES = {
    "triage_referral_received": "Referral received",
    "triage_referral_routed": "Referral accepted and routed",
    "triage_referral_signposted": "Referral signposted",
    "triage_referral_closed": "Referral closed",
    "triage_referral_contacted": "First contact by the crisis team",
    "triage_referral_transferred": "Referral transferred to another team",
    "directory_handover_updated": "Handover to a partner service updated",
    "episode_opened": "Episode opened",
    "clock_at_risk": "Plan clock at risk (day 21)",
    "clock_breached": "Plan clock breached (past day 28)",
    "clock_corrected": "Plan clock warning withdrawn",
    **RECORD_NAMES,
}
# Triage's routes (contracts.vocabulary.Route) in words.
ROUTE_NAMES = {
    "crisis_response": "Crisis response",
    "crisis_line": "Crisis line",
    "home_treatment": "Home treatment",
    "front_door_primary": "Front door (primary care)",
    "front_door_secondary": "Front door (secondary care)",
    "focused_support": "Focused support",
    "staying_well": "Staying well",
    "vcfse_signpost": "Signposted to a partner service",
    "reaccess": "Re-access",
    "out_of_area": "Out of area",
}


# --- formatting -----------------------------------------------------------------------------------


def _instant(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.astimezone(LONDON) if moment.tzinfo else moment


def when(value: str | None) -> str:
    """`3 December 2026, 14:05` (Europe/London), or an empty string."""
    moment = _instant(value)
    return f"{moment.day} {moment:%B %Y, %H:%M}" if moment else ""


def day_of(value: str | date | None) -> str:
    """`3 December 2026` (the Europe/London date of an instant, or a date)."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return f"{value.day} {value:%B %Y}"
    moment = _instant(value) if isinstance(value, str) else None
    return f"{moment.day} {moment:%B %Y}" if moment else ""


def _days(count: int) -> str:
    return f"{count} day" if count == 1 else f"{count} days"


def days_text(state: str, days_remaining: int | None) -> str:
    """What the worklist says of a clock: days left or days over, or why there are none."""
    if state == "not_started":
        return "Not started"
    if state == "met":
        return "Met"
    if days_remaining is None:
        return "Stopped"
    if days_remaining < 0:
        return f"{_days(-days_remaining)} over"
    if days_remaining == 0:
        return "Due today"
    return f"{_days(days_remaining)} left"


def humanise(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def short_id(value: str | None) -> str:
    return (value or "")[:8]


# --- the team and its practitioners -----------------------------------------------------------


@dataclass
class Team:
    id: str
    name: str
    practitioners: dict[str, str] = field(default_factory=dict)  # registry id -> name
    me: str | None = None  # the signed-in person's practitioner id, if the registry names them

    def worker(self, practitioner_id: str | None) -> str:
        if practitioner_id is None:
            return "Not assigned"
        name = self.practitioners.get(practitioner_id, f"Practitioner {short_id(practitioner_id)}")
        return f"{name} (you)" if practitioner_id == self.me else name


async def _team(api: PersonApi, person: SignedInPerson) -> Team:
    team_id = person.team_id or ""
    read = await api.get(f"/registry/teams/{team_id}")
    name = str(read.body.get("attributes", {}).get("name")) if read.ok and isinstance(read.body, dict) else ""
    team = Team(team_id, name or "Your team")
    members = await api.get("/registry/memberships", params={"ref_id": team_id, "per_page": 500})
    ids: list[str] = []
    if members.ok and isinstance(members.body, dict):
        for item in members.body.get("items", []):
            attributes = item.get("attributes", {})
            if attributes.get("team_id") == team_id and attributes.get("practitioner_id") not in ids:
                ids.append(str(attributes["practitioner_id"]))
    answers = await asyncio.gather(*(api.get(f"/registry/practitioners/{pid}") for pid in ids))
    for pid, answer in zip(ids, answers, strict=True):
        if answer.ok and isinstance(answer.body, dict):
            team.practitioners[pid] = str(answer.body.get("attributes", {}).get("name") or pid)
    team.practitioners = dict(sorted(team.practitioners.items(), key=lambda item: item[1].lower()))
    mine = [
        pid for pid, name in team.practitioners.items() if name.strip().lower() == person.name.strip().lower()
    ]
    team.me = mine[0] if len(mine) == 1 else None
    return team


def _api(request: Request, person: SignedInPerson) -> PersonApi:
    role = Role.TEAM_LEAD if person.has(Role.TEAM_LEAD) else Role.TEAM_MEMBER
    return PersonApi(request, person, role)


def _refused(request: Request, person: SignedInPerson) -> HTMLResponse | None:
    """Not a team lead or member, or in no team: a 403 page saying so."""
    if not TEAM_ROLES & set(person.roles):
        return person_problem(
            request,
            person,
            {
                "title": "This page is for team leads and team members",
                "detail": "Your roles do not include team work.",
            },
            403,
        )
    if not person.team_id:
        return person_problem(
            request,
            person,
            {
                "title": "You are not in a team",
                "detail": "Your sign-in is not linked to a team. Ask your organisation's administrator to add your team.",
            },
            403,
        )
    return None


NOT_OURS = {
    "title": "No such episode",
    "detail": "There is no episode of your team at this address.",
}


async def _episode(
    request: Request, person: SignedInPerson, api: PersonApi, episode_id: str
) -> dict[str, Any] | HTMLResponse:
    """The episode if it is one of the person's team's; otherwise the page to show instead."""
    if not _EPISODE_ID.match(episode_id):
        return person_problem(request, person, NOT_OURS, 404)
    answer = await api.get(f"/careplan/episodes/{episode_id}")
    if not answer.ok:
        return person_problem(request, person, answer.problem, answer.status)
    episode: dict[str, Any] = answer.body
    if episode.get("team_id") != person.team_id:
        return person_problem(request, person, NOT_OURS, 404)
    return episode


# --- the worklist ---------------------------------------------------------------------------------


async def _open_episodes(
    api: PersonApi, params: dict[str, Any]
) -> tuple[list[dict[str, Any]], ApiAnswer | None]:
    """Every open episode matching `params`, in careplan's order (breached first, then by days
    left, no clock running last), up to WORKLIST_MOST; or the refusal."""
    items: list[dict[str, Any]] = []
    page = 1
    while len(items) < WORKLIST_MOST:
        answer = await api.get(
            "/careplan/worklist", params={**params, "page": page, "per_page": WORKLIST_BATCH}
        )
        if not answer.ok:
            return [], answer
        batch = answer.body.get("items", [])
        items.extend(batch)
        if len(batch) < WORKLIST_BATCH or len(items) >= int(answer.body.get("total", 0)):
            break
        page += 1
    return items, None


def _page_number(value: str | None) -> int:
    try:
        return max(1, min(int(value or "1"), 100_000))
    except ValueError:
        return 1


@router.get("")
async def worklist(
    request: Request,
    person: SignedIn,
    state: str | None = None,
    worker: str | None = None,
    page: str | None = None,
) -> Response:
    refused = _refused(request, person)
    if refused is not None:
        return refused
    api = _api(request, person)
    team = await _team(api, person)
    state = state if state in {value for value, _ in STATE_FILTERS} else ""
    worker_options = [("", "Anyone")]
    if team.me:
        worker_options.append(("me", "Assigned to me"))
    worker_options.append(("none", "Not assigned"))
    worker_options += [(pid, name) for pid, name in team.practitioners.items() if pid != team.me]
    worker = worker if worker in {value for value, _ in worker_options} else ""
    params: dict[str, Any] = {"team_id": person.team_id}
    if worker == "me":
        params["named_worker_id"] = team.me
    elif worker not in ("", "none"):
        params["named_worker_id"] = worker
    items, refusal = await _open_episodes(api, params)
    if refusal is not None:
        return person_problem(request, person, refusal.problem, refusal.status)
    whole_team = len(items)
    if state:
        items = [item for item in items if item.get("state") == state]
    if worker == "none":
        items = [item for item in items if not item.get("named_worker_id")]
    pages = max(1, -(-len(items) // PER_PAGE))
    number = min(_page_number(page), pages)
    shown = items[(number - 1) * PER_PAGE : number * PER_PAGE]
    episodes = await asyncio.gather(*(api.get(f"/careplan/episodes/{item['episode_id']}") for item in shown))
    rows = []
    for item, episode in zip(shown, episodes, strict=True):
        received = episode.body.get("referral_received_at") if episode.ok else None
        rows.append(
            {
                "href": f"{PREFIX}/episodes/{item['episode_id']}",
                "person": short_id(item.get("person_id")),
                "state": item.get("state"),
                "days": days_text(str(item.get("state")), item.get("days_remaining")),
                "worker": team.worker(item.get("named_worker_id")),
                "received": day_of(received) if received else "Not known",
                "opened": day_of(item.get("opened_at")),
                "reaccess": bool(item.get("reaccess")),
            }
        )
    counts = {
        "breached": sum(1 for i in items if i.get("state") == "breached"),
        "at_risk": sum(1 for i in items if i.get("state") == "at_risk"),
    }

    def href(to_page: int) -> str:
        query = {k: v for k, v in (("state", state), ("worker", worker), ("page", str(to_page))) if v}
        return f"{PREFIX}?{urlencode(query)}"

    return person_page(
        request,
        person,
        "pages/team/worklist.html",
        {
            "team": team,
            "rows": rows,
            "total": len(items),
            "whole_team": whole_team,
            "filtered": bool(state or worker),
            "counts": counts,
            "state": state,
            "worker": worker,
            "state_options": STATE_FILTERS,
            "worker_options": worker_options,
            "is_member": person.has(Role.TEAM_MEMBER),
            "page": number,
            "pages": pages,
            "previous": {"href": href(number - 1), "label": f"Page {number - 1} of {pages}"}
            if number > 1
            else None,
            "next": {"href": href(number + 1), "label": f"Page {number + 1} of {pages}"}
            if number < pages
            else None,
            "today": day_of(london_today()),
        },
        current=PREFIX,
    )


# --- an episode -------------------------------------------------------------------------------------


def clock_rows(clock: Mapping[str, Any], *, enforced: bool) -> list[dict[str, Any]]:
    """A clock as summary list rows: its state, when it started, when it is due, how it stopped."""
    state = str(clock.get("state"))
    start = clock.get("start")
    rows: list[dict[str, Any]] = [{"key": "State", "value": state}]
    if not start:
        needs = ", ".join(clock.get("missing") or [])
        rows.append({"key": "Started", "value": "Not started yet"})
        if needs:
            rows.append({"key": "Starts when", "value": humanise(needs) + " is recorded"})
        return rows
    started = _instant(str(start))
    rows.append({"key": "Started", "value": day_of(str(start))})
    if started is not None:
        rows.append({"key": "Due by", "value": day_of(started.date() + timedelta(days=TARGET_DAYS))})
    if clock.get("stop"):
        outcome = "Met" if state == "met" else "Breached"
        rows.append(
            {
                "key": f"{outcome} on",
                "value": f"{day_of(str(clock['stop']))} (day {clock.get('days_elapsed')})",
            }
        )
    else:
        rows.append({"key": "Days", "value": days_text(state, clock.get("days_remaining"))})
        if enforced and state == "running":
            rows.append(
                {
                    "key": "At risk from",
                    "value": day_of(started.date() + timedelta(days=21)) if started else "",
                }
            )
        needs = ", ".join(clock.get("missing") or [])
        if needs:
            rows.append({"key": "Still needed", "value": humanise(needs)})
    return rows


def record_details(kind: str, data: Mapping[str, Any], team: Team) -> str:
    """A record's facts in words (no free text from a care plan's body beyond its needs)."""
    if kind == "contact":
        mechanism = dict(MECHANISMS).get(str(data.get("mechanism")), str(data.get("mechanism")))
        return f"{mechanism}, {'attended' if data.get('attended') else 'did not attend'}"
    if kind == "assessment":
        parts = [f"Started {when(data.get('started_at'))}"]
        parts.append(
            f"completed {when(data.get('completed_at'))}" if data.get("completed_at") else "not completed"
        )
        if data.get("meaningful"):
            parts.append("meaningful assessment")
        return ", ".join(parts)
    if kind == "plan":
        needs = ", ".join(str(n) for n in data.get("needs", []))
        review = data.get("review_date")
        return f"Needs: {needs}. Review by {day_of(date.fromisoformat(review)) if review else 'not set'}"
    if kind == "plan_agreement":
        text = dict(HOW_AGREED).get(str(data.get("how_agreed")), str(data.get("how_agreed")))
        if data.get("breach_reason"):
            text += f"; late: {dict(BREACH_REASONS).get(str(data['breach_reason']), data['breach_reason'])}"
        return text
    if kind == "named_worker":
        return team.worker(data.get("practitioner_id"))
    if kind == "outcome_measure":
        return f"{data.get('tool')}: {data.get('score')}"
    if kind == "intervention":
        return humanise(str(data.get("kind", "")).replace("_", " "))
    if kind == "discharge":
        return humanise(str(data.get("reason", "")).replace("_", " "))
    return ""


def journey_details(entry: Mapping[str, Any], team: Team, episode_id: str) -> str:
    kind = str(entry.get("kind"))
    parts: list[str] = []
    if entry.get("route"):
        parts.append(ROUTE_NAMES.get(str(entry["route"]), humanise(str(entry["route"]).replace("_", " "))))
    if entry.get("team_id") and kind != "triage_referral_received":
        parts.append("your team" if entry["team_id"] == team.id else "another team")
    if kind == "contact":
        mechanism = dict(MECHANISMS).get(str(entry.get("mechanism")), "")
        parts.append(f"{mechanism}, {'attended' if entry.get('attended') else 'did not attend'}".strip(", "))
    if kind == "plan_agreement" and entry.get("how_agreed"):
        parts.append(dict(HOW_AGREED).get(str(entry["how_agreed"]), str(entry["how_agreed"])))
    if kind == "named_worker" and entry.get("practitioner_id"):
        parts.append(team.worker(str(entry["practitioner_id"])))
    if entry.get("withdrawn"):
        parts.append(
            f"{str(entry['withdrawn']).replace('_', ' ')} withdrawn: a late entry showed the promise was kept"
        )
    if entry.get("reason"):
        parts.append(humanise(str(entry["reason"]).replace("_", " ")))
    if entry.get("episode_id") and entry["episode_id"] != episode_id:
        parts.append("in another episode")
    return "; ".join(p for p in parts if p)


DONE = {
    "named_worker": "The named worker is assigned.",
    "contact": "The contact is recorded.",
    "assessment": "The assessment is recorded.",
    "plan": "The care plan is recorded. Record the person's agreement to stop the plan clock.",
    "agreement": "The person's agreement to the care plan is recorded.",
}


@router.get("/episodes/{episode_id}")
async def episode_page(
    request: Request, person: SignedIn, episode_id: str, done: str | None = None
) -> Response:
    refused = _refused(request, person)
    if refused is not None:
        return refused
    api = _api(request, person)
    found = await _episode(request, person, api, episode_id)
    if isinstance(found, HTMLResponse):
        return found
    episode = found
    team, journey = await asyncio.gather(
        _team(api, person), api.get(f"/careplan/people/{episode['person_id']}/journey")
    )
    records = [
        {
            "at": when(r.get("at")),
            "name": RECORD_NAMES.get(str(r.get("kind")), humanise(str(r.get("kind")).replace("_", " "))),
            "details": record_details(str(r.get("kind")), r.get("data") or {}, team),
            "entered": when(r.get("recorded_at")),
        }
        for r in episode.get("records", [])
    ]
    steps = []
    if journey.ok:
        for entry in journey.body.get("entries", []):
            kind = str(entry.get("kind"))
            steps.append(
                {
                    "at": when(entry.get("at")),
                    "name": JOURNEY_NAMES.get(kind, humanise(kind.replace("_", " "))),
                    "details": journey_details(entry, team, episode["id"]),
                    "entered": when(entry.get("recorded_at")),
                }
            )
    has_plan = any(r.get("kind") == "plan" for r in episode.get("records", []))
    base = f"{PREFIX}/episodes/{episode['id']}"
    clocks = episode.get("clocks", {})
    return person_page(
        request,
        person,
        "pages/team/episode.html",
        {
            "episode": episode,
            "base": base,
            "person_ref": short_id(episode.get("person_id")),
            "team": team,
            "worker": team.worker(episode.get("named_worker_id")),
            "route": ROUTE_NAMES.get(
                str(episode.get("route")), humanise(str(episode.get("route")).replace("_", " "))
            ),
            "received": when(episode.get("referral_received_at")),
            "opened": when(episode.get("opened_at")),
            "discharged": when(episode.get("discharged_at")),
            "plan_clock": clock_rows(clocks.get("plan", {}), enforced=True),
            "plan_state": clocks.get("plan", {}).get("state"),
            "national_clock": clock_rows(clocks.get("national", {}), enforced=False),
            "records": records,
            "journey": steps,
            "journey_refused": None if journey.ok else journey.problem.get("title"),
            "is_open": episode.get("status") == "open",
            "has_plan": has_plan,
            "done": DONE.get(done or ""),
        },
        current=PREFIX,
    )


# --- forms ----------------------------------------------------------------------------------------


@dataclass
class FormState:
    values: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)  # field id -> message

    def error(self, name: str, message: str) -> None:
        self.errors.setdefault(name, message)

    def moment(self, prefix: str, what: str, *, required: bool = True) -> datetime | None:
        """`<prefix>-date` (YYYY-MM-DD) and `<prefix>-time` (HH:MM) as a Europe/London instant."""
        day_text = self.values.get(f"{prefix}-date", "").strip()
        time_text = self.values.get(f"{prefix}-time", "").strip()
        if not day_text and not time_text and not required:
            return None
        day = parse_day(day_text)
        if day is None:
            self.error(
                f"{prefix}-date", f"Enter the date {what}" if not day_text else f"Enter a real date {what}"
            )
            return None
        try:
            moment = time.fromisoformat(time_text) if time_text else None
        except ValueError:
            moment = None
        if moment is None:
            self.error(f"{prefix}-time", f"Enter the time {what}, for example 14:05")
            return None
        # A time given to the minute stands for that whole minute: its last second, or now while
        # it is the current minute (so a record of "14:05" is not before an episode opened at
        # 14:05:30, nor in the future).
        start = datetime.combine(day, moment.replace(second=0, microsecond=0), tzinfo=LONDON)
        now = datetime.now(LONDON)
        return min(start + timedelta(seconds=59), now) if start <= now else start

    def choice(self, name: str, options: Sequence[tuple[str, str]], message: str) -> str | None:
        value = self.values.get(name, "")
        if value not in {v for v, _ in options}:
            self.error(name, message)
            return None
        return value

    def text(self, name: str, message: str, *, required: bool = True, most: int = 2000) -> str | None:
        value = self.values.get(name, "").strip()
        if not value:
            if required:
                self.error(name, message)
            return None
        if len(value) > most:
            self.error(name, f"{message.split(' ', 1)[0]} {most} characters or fewer")
            return None
        return value

    def lines(self, name: str, message: str, *, most: int = 20, longest: int = 500) -> list[str]:
        items = [line.strip() for line in self.values.get(name, "").splitlines() if line.strip()]
        if not items:
            self.error(name, message)
        elif len(items) > most:
            self.error(name, f"Enter {most} lines or fewer")
        elif any(len(item) > longest for item in items):
            self.error(name, f"Keep each line to {longest} characters or fewer")
        return items


def parse_day(text: str) -> date | None:
    """A date as a date field sends it (2026-12-03) or as a person types it (3/12/2026)."""
    text = text.strip()
    try:
        return date.fromisoformat(text)
    except ValueError:
        pass
    try:
        return datetime.strptime(text, "%d/%m/%Y").date()
    except ValueError:
        return None


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str) and key != "csrf_token"}


def _now_values(prefix: str) -> dict[str, str]:
    now = datetime.now(LONDON)
    return {f"{prefix}-date": now.date().isoformat(), f"{prefix}-time": now.strftime("%H:%M")}


@dataclass(frozen=True)
class FormSpec:
    """One of the episode's forms: its page, its heading, and where an API field shows its error."""

    slug: str
    template: str
    title: str
    submit: str
    fields: Mapping[str, str]  # API field -> the form's field id
    first: str  # the field an error the API does not place links to


FORMS = {
    "named-worker": FormSpec(
        "named-worker", "pages/team/named_worker.html", "Assign a named worker", "Assign named worker",
        {"practitioner_id": "practitioner_id"}, "practitioner_id",
    ),
    "contact": FormSpec(
        "contact", "pages/team/contact.html", "Record a contact", "Record contact",
        {"at": "at-date", "attended": "attended", "mechanism": "mechanism"}, "at-date",
    ),
    "assessment": FormSpec(
        "assessment", "pages/team/assessment.html", "Record an assessment", "Record assessment",
        {"started_at": "started-date", "completed_at": "completed-date", "meaningful": "meaningful"}, "started-date",
    ),
    "plan": FormSpec(
        "plan", "pages/team/plan.html", "Write the care plan", "Save care plan",
        {
            "at": "at-date", "needs": "needs", "goals": "goals", "crisis_plan": "crisis_plan",
            "contingency_plan": "contingency_plan", "review_date": "review_date",
        },
        "at-date",
    ),
    "agreement": FormSpec(
        "agreement", "pages/team/agreement.html", "Record the person's agreement to the care plan", "Record agreement",
        {
            "agreed_at": "agreed-date", "how_agreed": "how_agreed", "declined_to_sign_reason": "declined_to_sign_reason",
            "breach_reason": "breach_reason", "breach_text": "breach_text",
        },
        "agreed-date",
    ),
}  # fmt: skip


def api_errors(answer: ApiAnswer, spec: FormSpec) -> dict[str, str]:
    """A refusal's fields as the form's: each error at its field, in the API's words."""
    errors: dict[str, str] = {}
    for issue in answer.problem.get("errors") or []:
        location = [str(part) for part in issue.get("location", [])]
        target = next((spec.fields[part] for part in reversed(location) if part in spec.fields), spec.first)
        errors.setdefault(target, humanise(str(issue.get("message", "Check this answer"))))
    if not errors:
        errors[spec.first] = humanise(
            str(answer.problem.get("detail") or answer.problem.get("title") or "Check your answers")
        )
    return errors


def _form_page(
    request: Request,
    person: SignedInPerson,
    spec: FormSpec,
    episode: Mapping[str, Any],
    team: Team,
    state: FormState,
    status: int = 200,
) -> HTMLResponse:
    base = f"{PREFIX}/episodes/{episode['id']}"
    plan_clock = episode.get("clocks", {}).get("plan", {})
    return person_page(
        request,
        person,
        spec.template,
        {
            "title": spec.title,
            "submit": spec.submit,
            "action": f"{base}/{spec.slug}",
            "back_link": base,
            "back_label": "Back to the episode",
            "episode": episode,
            "person_ref": short_id(episode.get("person_id")),
            "team": team,
            "values": state.values,
            "errors": state.errors or None,
            "practitioners": list(team.practitioners.items()),
            "mechanisms": MECHANISMS,
            "how_agreed": HOW_AGREED,
            "breach_reasons": BREACH_REASONS,
            "plan_state": plan_clock.get("state"),
            "plan_days": plan_clock.get("days_elapsed"),
            "hide_submit": spec.slug == "named-worker" and not team.practitioners,
        },
        status,
        current=PREFIX,
    )


async def _open_form(
    request: Request, person: SignedInPerson, episode_id: str
) -> tuple[PersonApi, dict[str, Any], Team] | HTMLResponse:
    refused = _refused(request, person)
    if refused is not None:
        return refused
    api = _api(request, person)
    found = await _episode(request, person, api, episode_id)
    if isinstance(found, HTMLResponse):
        return found
    if found.get("status") != "open":
        return person_problem(
            request,
            person,
            {
                "title": "This episode is closed",
                "detail": "The person has been discharged: nothing more can be recorded.",
            },
            409,
        )
    return api, found, await _team(api, person)


def _defaults(slug: str, episode: Mapping[str, Any]) -> dict[str, str]:
    if slug == "named-worker":
        return {"practitioner_id": str(episode.get("named_worker_id") or "")}
    if slug == "contact":
        return _now_values("at")
    if slug == "assessment":
        return {**_now_values("started"), **_now_values("completed")}
    if slug == "plan":
        return {**_now_values("at"), "review_date": (london_today() + timedelta(days=90)).isoformat()}
    if slug == "agreement":
        return _now_values("agreed")
    return {}


def _body(slug: str, state: FormState, team: Team) -> tuple[str, dict[str, Any] | None]:
    """The API call a form makes (method and body), from its values; None when they are refused."""
    if slug == "named-worker":
        chosen = state.choice("practitioner_id", list(team.practitioners.items()), "Select the named worker")
        return "PUT", {"practitioner_id": chosen}
    if slug == "contact":
        at = state.moment("at", "of the contact")
        attended = state.choice("attended", [("yes", ""), ("no", "")], "Select whether the person attended")
        mechanism = state.choice("mechanism", MECHANISMS, "Select how the contact happened")
        return "POST", {
            "at": at.isoformat() if at else None,
            "attended": attended == "yes",
            "mechanism": mechanism,
        }
    if slug == "assessment":
        started = state.moment("started", "the assessment started")
        completed = state.moment("completed", "the assessment was completed", required=False)
        meaningful = state.choice(
            "meaningful", [("yes", ""), ("no", "")], "Select whether this was a meaningful assessment"
        )
        return "POST", {
            "started_at": started.isoformat() if started else None,
            "completed_at": completed.isoformat() if completed else None,
            "meaningful": meaningful == "yes",
        }
    if slug == "plan":
        at = state.moment("at", "the plan was written")
        needs = state.lines("needs", "Enter at least one need")
        goals = state.lines("goals", "Enter at least one goal", longest=2000)
        crisis = state.text("crisis_plan", "Enter the crisis plan")
        contingency = state.text("contingency_plan", "Enter the contingency plan")
        review = parse_day(state.values.get("review_date", ""))
        if review is None:
            state.error("review_date", "Enter the date the plan is reviewed by")
        return "POST", {
            "at": at.isoformat() if at else None, "needs": needs, "goals": goals, "crisis_plan": crisis,
            "contingency_plan": contingency, "review_date": review.isoformat() if review else None,
        }  # fmt: skip
    agreed = state.moment("agreed", "the person agreed the plan")
    how = state.choice("how_agreed", HOW_AGREED, "Select how the person agreed the plan")
    declined = state.text("declined_to_sign_reason", "", required=False, most=500)
    if how == "declined_to_sign" and not declined:
        state.error("declined_to_sign_reason", "Enter why the person declined to sign the plan")
    reason = state.values.get("breach_reason", "") or None
    if reason is not None and reason not in dict(BREACH_REASONS):
        state.error("breach_reason", "Select a reason the plan is late")
    breach_text = state.text("breach_text", "", required=False, most=500)
    body: dict[str, Any] = {"agreed_at": agreed.isoformat() if agreed else None, "how_agreed": how}
    for key, value in (
        ("declined_to_sign_reason", declined),
        ("breach_reason", reason),
        ("breach_text", breach_text),
    ):
        if value:
            body[key] = value
    return "POST", body


API_PATHS = {
    "named-worker": "named-worker",
    "contact": "contacts",
    "assessment": "assessments",
    "plan": "plans",
    "agreement": "plans/agreement",
}
DONE_SLUGS = {"named-worker": "named_worker"}


def _spec(slug: str) -> FormSpec | None:
    return FORMS.get(slug)


@router.get("/episodes/{episode_id}/{slug}")
async def form_page(request: Request, person: SignedIn, episode_id: str, slug: str) -> Response:
    spec = _spec(slug)
    if spec is None:
        return person_problem(request, person, {"title": "Page not found"}, 404)
    opened = await _open_form(request, person, episode_id)
    if isinstance(opened, HTMLResponse):
        return opened
    _, episode, team = opened
    return _form_page(request, person, spec, episode, team, FormState(_defaults(slug, episode)))


@router.post("/episodes/{episode_id}/{slug}")
async def form_post(request: Request, person: SignedIn, episode_id: str, slug: str) -> Response:
    spec = _spec(slug)
    if spec is None:
        return person_problem(request, person, {"title": "Page not found"}, 404)
    opened = await _open_form(request, person, episode_id)
    if isinstance(opened, HTMLResponse):
        return opened
    api, episode, team = opened
    state = FormState(await _form(request))
    method, body = _body(slug, state, team)
    if state.errors or body is None:
        return _form_page(request, person, spec, episode, team, state, 422)
    answer = await api.call(method, f"/careplan/episodes/{episode['id']}/{API_PATHS[slug]}", json=body)
    if answer.status in (400, 422):
        state.errors = api_errors(answer, spec)
        return _form_page(request, person, spec, episode, team, state, 422)
    if not answer.ok:
        return person_problem(request, person, answer.problem, answer.status)
    done = DONE_SLUGS.get(slug, slug)
    return RedirectResponse(f"{PREFIX}/episodes/{episode['id']}?done={done}", status_code=303)
