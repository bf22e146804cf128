"""The ICB analyst's pages (`/app/reporting`): the reporting service's aggregate measures under
its disclosure control, drawn as charts and tables with a CSV of each, and the bulk export.

Everything shown is what the reporting API answers the analyst (`reporting:aggregate`,
`reporting:export`): the page filters and lays out the published figures, it never computes a
figure of its own (a chart's bar is a published value, a suppressed value has no bar), so the
small-number rule holds on the page exactly as in the API. The API takes a period and a
`group_by`; a place filter keeps the rows of one place of an answer grouped by place.

The bulk export's jobs belong to the person who started them (the API knows them by the person's
client id, and lists none): the page keeps the ones started in this session to link back to.
"""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from markupsafe import Markup, escape

from contracts.timezones import LONDON, london_date, london_today
from gateway.web.api import ApiAnswer, PersonApi
from gateway.web.people import SignedInPerson
from gateway.web.roles import Role
from gateway.web.sessions import web_session
from gateway.web.signin import SignedIn, check_csrf
from gateway.web.site import NOT_A_PAGE, Task, person_page, person_problem

PREFIX = "/app/reporting"
EXPORTS = f"{PREFIX}/exports"
router = APIRouter(prefix=PREFIX, include_in_schema=False, dependencies=[Depends(check_csrf)])

TASKS: list[Task] = [
    Task(
        PREFIX,
        "Reporting",
        "Referrals, four-week waits, crisis response, re-access, handovers and inequalities, "
        "with disclosure control.",
        frozenset({Role.ICB_ANALYST}),
    ),
    Task(
        EXPORTS,
        "Bulk export",
        "Start a de-identified export of referrals, episodes and handovers, and download its files.",
        frozenset({Role.ICB_ANALYST}),
    ),
]

SUPPRESSED = "*"  # how the API marks a figure it withholds
NOTHING = "\N{EN DASH}"  # a figure with nothing to work out (a percentage of none)

# What the API can group by (services/reporting/domain.py GROUP_FIELDS), in words.
GROUP_FIELDS: dict[str, str] = {
    "place": "Place",
    "network": "Network",
    "team": "Team",
    "pathway": "Pathway",
    "age_band": "Age band",
    "sex": "Sex",
    "ethnicity": "Ethnic group",
    "source": "Referral source",
    "priority": "Priority",
}
ROUTES: dict[str, str] = {
    "crisis_response": "Crisis response",
    "crisis_line": "Crisis line",
    "home_treatment": "Home treatment",
    "front_door_primary": "Front door (primary care)",
    "front_door_secondary": "Front door (secondary care)",
    "focused_support": "Focused support",
    "staying_well": "Staying well",
    "vcfse_signpost": "Signposted to a VCFSE partner",
    "reaccess": "Back to an existing episode",
    "out_of_area": "Out of area",
}


@dataclass(frozen=True)
class MeasureView:
    """How one of the API's measures is shown: its table's columns (field, heading), and the
    figure its chart draws (a percentage is drawn on 0-100, a count against the largest)."""

    name: str
    heading: str
    summary: str
    columns: tuple[tuple[str, str], ...]
    chart_field: str
    chart_label: str

    @property
    def chart_is_percentage(self) -> bool:
        return self.chart_field.endswith("_pct")


MEASURES: tuple[MeasureView, ...] = (
    MeasureView(
        "referrals",
        "Referrals",
        "Referrals received in the period, and how many are still waiting for a triage decision.",
        (("received", "Received"), ("awaiting_decision", "Awaiting a decision")),
        "received",
        "Referrals received",
    ),
    MeasureView(
        "four-week-waits",
        "Four-week waits",
        "Episodes whose referral was received in the period. The plan clock runs from the first "
        "completed assessment to an agreed care plan; the national clock is the MHSDS four-week "
        "wait. Either is met within 28 days.",
        (
            ("episodes", "Episodes"),
            ("plan_met", "Plan clock met"),
            ("plan_breached", "Plan clock breached"),
            ("plan_met_pct", "Plan clock met (%)"),
            ("plan_median_days", "Median days to a plan"),
            ("plan_open_at_risk", "At risk now"),
            ("national_met_pct", "National wait met (%)"),
        ),
        "plan_met_pct",
        "Plan clock met within four weeks (%)",
    ),
    MeasureView(
        "crisis-response",
        "Crisis response",
        "Very urgent, urgent, A&E liaison and emergency referrals received in the period, and "
        "the share seen within their target time.",
        (
            ("crisis_referrals", "Crisis referrals"),
            ("responded", "Responded"),
            ("median_minutes", "Median minutes to respond"),
            ("very_urgent_met_pct", "Very urgent met (%)"),
            ("urgent_met_pct", "Urgent met (%)"),
            ("ae_liaison_met_pct", "A&E liaison met (%)"),
            ("emergency_met_pct", "Emergency met (%)"),
        ),
        "crisis_referrals",
        "Crisis referrals",
    ),
    MeasureView(
        "reaccess",
        "Re-access",
        "Episodes opened for referrals received in the period, and how many were people coming "
        "back to the service.",
        (("episodes", "Episodes"), ("reaccess", "Re-accessing"), ("reaccess_pct", "Re-accessing (%)")),
        "reaccess_pct",
        "Re-accessing (%)",
    ),
    MeasureView(
        "handovers",
        "Handovers to VCFSE partners",
        "Handovers offered to voluntary, community, faith and social enterprise partners in the "
        "period, and what became of them.",
        (
            ("offered", "Offered"),
            ("accepted", "Accepted"),
            ("completed", "Completed"),
            ("declined", "Declined"),
            ("accepted_pct", "Accepted (%)"),
            ("completed_pct", "Completed (%)"),
        ),
        "offered",
        "Handovers offered",
    ),
    MeasureView(
        "inequalities",
        "Inequalities",
        "Each group's share of referrals, and its plan clock performance beside the whole ICB's. "
        "Break the figures down by age band, sex or ethnic group to compare population groups.",
        (
            ("received", "Referrals received"),
            ("share_of_referrals_pct", "Share of referrals (%)"),
            ("plan_met_pct", "Plan clock met (%)"),
            ("all_plan_met_pct", "ICB plan clock met (%)"),
        ),
        "share_of_referrals_pct",
        "Share of referrals (%)",
    ),
)
MEASURE_BY_NAME = {measure.name: measure for measure in MEASURES}

EXPORT_TYPES: dict[str, str] = {
    "Referral": "Referrals",
    "Episode": "Episodes",
    "Handover": "Handovers to VCFSE partners",
}
SESSION_EXPORTS = "reporting_exports"  # web session data: the exports started in this session
KEPT_EXPORTS = 20


# --- the filters --------------------------------------------------------------------------------


@dataclass
class Filters:
    """The dashboard's GET form as the person filled it in, and the query the API gets."""

    period: str = ""
    from_: str = ""
    to: str = ""
    by: str = ""
    then_by: str = ""
    place: str = ""
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, query: Mapping[str, str]) -> Filters:
        filters = cls(
            period=query.get("period", "").strip()[:10],
            from_=query.get("from", "").strip()[:10],
            to=query.get("to", "").strip()[:10],
            by=query.get("by", "").strip(),
            then_by=query.get("then_by", "").strip(),
            place=query.get("place", "").strip()[:100],
        )
        if not (filters.period or filters.from_ or filters.to):
            today = london_today()  # the last twelve months, as the old dashboard showed
            start = date(today.year - 1, today.month, 1) if today.month == 12 else None
            start = start or date(today.year - 1, today.month + 1, 1)
            filters.from_, filters.to = start.isoformat(), today.isoformat()
        for name in ("by", "then_by"):
            if getattr(filters, name) and getattr(filters, name) not in GROUP_FIELDS:
                filters.errors[name] = "Choose a breakdown from the list"
        if filters.then_by and filters.then_by == filters.by:
            filters.errors["then_by"] = "Choose a different second breakdown, or none"
        if not filters.period:
            for name, label in (("from_", "start"), ("to", "end")):
                try:
                    date.fromisoformat(getattr(filters, name))
                except ValueError:
                    filters.errors[name] = f"Enter the {label} date as a real date, like 2026-11-30"
        return filters

    @property
    def group_by(self) -> list[str]:
        fields = [f for f in (self.by, self.then_by) if f in GROUP_FIELDS]
        if self.place and "place" not in fields:
            fields.insert(0, "place")
        return list(dict.fromkeys(fields))

    def api_params(self, group_by: Sequence[str] | None = None) -> dict[str, str]:
        params = {"period": self.period} if self.period else {"from": self.from_, "to": self.to}
        fields = self.group_by if group_by is None else list(group_by)
        if fields:
            params["group_by"] = ",".join(fields)
        return params

    def query(self) -> str:
        """This page's own query, for the CSV links."""
        values = {
            "period": self.period,
            "from": "" if self.period else self.from_,
            "to": "" if self.period else self.to,
            "by": self.by,
            "then_by": self.then_by,
            "place": self.place,
        }
        return urlencode({k: v for k, v in values.items() if v})

    def keep(self, row: Mapping[str, Any]) -> bool:
        return not self.place or str(row.get("place")) == self.place


# --- figures, tables and charts ----------------------------------------------------------------


def shown(value: Any) -> str:
    """A figure as the table shows it: the API's "*" as it is, nothing as a dash."""
    if value is None:
        return NOTHING
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def row_label(row: Mapping[str, Any], group_by: Sequence[str]) -> str:
    return ", ".join(str(row.get(f) if row.get(f) is not None else "unknown") for f in group_by)


def bar_chart(title: str, bars: Sequence[tuple[str, Any]], *, percentage: bool) -> Markup:
    """A bar chart of published figures: each bar's name and figure as text (so they read at any
    size and to a screen reader), its length a small SVG scaled to the width it is given
    (presentation attributes only: the pages allow no inline style). A hidden or empty figure
    has no bar, only its mark; the table below the chart holds the same figures."""
    numbers = [float(v) for _, v in bars if isinstance(v, int | float) and not isinstance(v, bool)]
    if not numbers:
        return Markup(
            '<p class="nhsuk-body-s">Nothing to draw: every figure for this chart is hidden or empty.</p>'
        )
    top = 100.0 if percentage else max(numbers) or 1.0
    parts = [f'<ul class="nhsuk-list" aria-label="{escape(title)}">']
    for label, value in bars:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        mark = shown(value) + ("%" if percentage and number else "")
        if value == SUPPRESSED:
            mark += " (hidden)"
        length = max(0.0, min(1.0, float(value) / top)) * 100 if number else 0.0
        parts.append(
            '<li class="nhsuk-u-margin-bottom-3">'
            f'<span class="nhsuk-u-font-size-16"><span class="nhsuk-u-font-weight-bold">{escape(label)}</span>: '
            f"{escape(mark)}</span>"
            '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 6" preserveAspectRatio="none" '
            'width="100%" height="20" aria-hidden="true" focusable="false">'
            '<rect x="0" y="0" width="100" height="6" fill="#ffffff"/>'
            f'<rect x="0" y="0" width="{length:.2f}" height="6" fill="#005eb8"/></svg></li>'
        )
    parts.append("</ul>")
    end = "100%" if percentage else shown(top)
    parts.append(
        f'<p class="nhsuk-body-s nhsuk-u-secondary-text-colour">The bars run from 0 to {escape(end)}.</p>'
    )
    return Markup("".join(parts))  # noqa: S704 (every text and attribute in it is escaped)


@dataclass
class Section:
    """One measure as the page shows it."""

    measure: MeasureView
    group_by: list[str]
    head: list[str]
    rows: list[list[str]]
    chart: Markup | None
    any_suppressed: bool
    csv_href: str
    extra: list[list[str]] = field(default_factory=list)  # referrals: where they were sent


def section(measure: MeasureView, body: Mapping[str, Any], filters: Filters) -> Section:
    group_by = [str(f) for f in body.get("group_by", [])]
    rows = [row for row in body.get("rows", []) if filters.keep(row)]
    total = body.get("total", {})
    head = [" and ".join(GROUP_FIELDS.get(f, f) for f in group_by) or "Area"]
    head += [heading for _, heading in measure.columns]
    table = [[row_label(row, group_by), *(shown(row.get(f)) for f, _ in measure.columns)] for row in rows]
    table.append(["ICB total", *(shown(total.get(f)) for f, _ in measure.columns)])
    bars = [(row_label(row, group_by), row.get(measure.chart_field)) for row in rows] or [
        ("ICB total", total.get(measure.chart_field))
    ]
    extra = []
    if measure.name == "referrals":
        extra = [[label, shown(total.get(f"route_{route}"))] for route, label in ROUTES.items()]
    return Section(
        measure=measure,
        group_by=group_by,
        head=head,
        rows=table,
        chart=bar_chart(measure.chart_label, bars, percentage=measure.chart_is_percentage),
        any_suppressed=bool(body.get("disclosure", {}).get("any_suppressed")),
        csv_href=f"{PREFIX}/{measure.name}.csv?{filters.query()}",
        extra=extra,
    )


def csv_text(body: Mapping[str, Any], filters: Filters) -> str:
    """Every figure of a pull, as published: the group fields, the measure's figures in the
    API's order, whether the row holds a suppressed figure; the ICB total last."""
    group_by = [str(f) for f in body.get("group_by", [])]
    rows = [row for row in body.get("rows", []) if filters.keep(row)]
    total = body.get("total", {})
    figures: list[str] = []
    for row in [*rows, total]:
        figures += [k for k in row if k not in group_by and k != "suppressed" and k not in figures]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*group_by, *figures, "suppressed"])
    for row in rows:
        writer.writerow(
            [
                *(row.get(f) if row.get(f) is not None else "unknown" for f in group_by),
                *("" if row.get(f) is None else row.get(f) for f in figures),
                "yes" if row.get("suppressed") else "no",
            ]
        )
    writer.writerow(
        [
            *(["ICB total"] * len(group_by)),
            *("" if total.get(f) is None else total.get(f) for f in figures),
            "yes" if total.get("suppressed") else "no",
        ]
    )
    return buffer.getvalue()


def api_errors(answer: ApiAnswer) -> dict[str, str]:
    """The API's 422 as field errors of the filter form."""
    fields = {"period": "period", "from": "from_", "to": "to", "group_by": "by"}
    found: dict[str, str] = {}
    for error in answer.problem.get("errors") or []:
        location = error.get("location") or error.get("loc") or []
        name = fields.get(str(location[-1]) if location else "", "period")
        message = str(error.get("message") or error.get("msg") or "Check this value")
        found.setdefault(name, message[:1].upper() + message[1:])
    if not found:
        found["period"] = str(answer.problem.get("detail") or "Check the period")
    return found


def refused(
    request: Request,
    person: SignedInPerson,
    status: int,
    problem: Mapping[str, Any],
    needs: str = "reporting:aggregate",
) -> Response:
    """The API's refusal as a page. The gateway's own gate (a token with no reporting scope at
    all) names no scope the operation needs, so a 403 here names the one this page's call needs,
    in words the person can act on."""
    problem = dict(problem)
    if status == 403 and str(problem.get("type", "")).endswith("insufficient-scope"):
        problem.setdefault("required_scopes", [needs])
        problem["title"] = (
            "You cannot export reporting data"
            if needs == "reporting:export"
            else "You cannot see reporting figures"
        )
        problem["detail"] = "Reporting is for the ICB's analysts."
    return person_problem(request, person, problem, status)


def analyst_api(request: Request, person: SignedInPerson) -> PersonApi:
    return PersonApi(request, person, Role.ICB_ANALYST if person.has(Role.ICB_ANALYST) else None)


# --- the dashboard -----------------------------------------------------------------------------

FIELD_IDS = {"period": "period", "from_": "from", "to": "to", "by": "by", "then_by": "then_by"}


@router.get("")
async def dashboard(request: Request, person: SignedIn) -> Response:
    filters = Filters.of(request.query_params)
    api = analyst_api(request, person)
    context: dict[str, Any] = {"filters": filters, "group_fields": GROUP_FIELDS, "sections": []}
    if filters.errors:
        return _dashboard(request, person, context, filters.errors, 422)
    # The places the answers carry, for the place filter (the analyst reads no registry).
    places = await api.get("/reporting/referrals", params=filters.api_params(["place"]))
    if not places.ok:
        if places.status == 422:
            return _dashboard(request, person, context, api_errors(places), 422)
        return refused(request, person, places.status, places.problem)
    context["places"] = sorted(
        {str(r.get("place")) for r in places.body.get("rows", [])} | {filters.place} - {""}
    )
    context["period"] = places.body.get("period", {})
    sections = []
    answers = await asyncio.gather(
        *(api.get(f"/reporting/{measure.name}", params=filters.api_params()) for measure in MEASURES)
    )
    for measure, answer in zip(MEASURES, answers, strict=True):
        if not answer.ok:
            if answer.status == 422:
                return _dashboard(request, person, context, api_errors(answer), 422)
            return refused(request, person, answer.status, answer.problem)
        sections.append(section(measure, answer.body, filters))
    context["sections"] = sections
    context["method"] = next((s for s in [places.body.get("disclosure", {}).get("method")] if s), None)
    return _dashboard(request, person, context, {}, 200)


def _dashboard(
    request: Request, person: SignedInPerson, context: dict[str, Any], errors: dict[str, str], status: int
) -> Response:
    context["field_errors"] = errors
    context["errors"] = [{"href": f"#{FIELD_IDS.get(k, k)}", "text": v} for k, v in errors.items()] or None
    context["period_words"] = _period_words(context.get("period") or {})
    return person_page(request, person, "pages/reporting/dashboard.html", context, status, current=PREFIX)


def _period_words(period: Mapping[str, Any]) -> str | None:
    try:
        start = date.fromisoformat(str(period["start"]))
        end = date.fromordinal(date.fromisoformat(str(period["end_exclusive"])).toordinal() - 1)
    except (KeyError, ValueError):
        return None
    return f"{start.day} {start:%B %Y} to {end.day} {end:%B %Y}"


@router.get("/{measure}.csv", tags=[NOT_A_PAGE])
async def measure_csv(request: Request, person: SignedIn, measure: str) -> Response:
    view = MEASURE_BY_NAME.get(measure)
    if view is None:
        return person_problem(request, person, {"title": "Page not found"}, 404)
    filters = Filters.of(request.query_params)
    if filters.errors:
        problem = {"title": "Check the filters", "detail": " ".join(filters.errors.values())}
        return person_problem(request, person, problem, 422)
    answer = await analyst_api(request, person).get(f"/reporting/{measure}", params=filters.api_params())
    if not answer.ok:
        return refused(request, person, answer.status, answer.problem)
    period = answer.body.get("period", {})
    name = f"cmh-{measure}-{period.get('start', 'period')}"
    if filters.group_by:
        name += "-by-" + "-".join(f.replace("_", "-") for f in filters.group_by)
    if filters.place:
        name += "-" + "".join(c for c in filters.place if c.isalnum() or c == "-")[:40]
    return Response(
        csv_text(answer.body, filters),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"', "Cache-Control": "no-store"},
    )


# --- the bulk export ---------------------------------------------------------------------------


def _started(request: Request) -> list[dict[str, Any]]:
    kept = web_session(request).data.get(SESSION_EXPORTS)
    return [entry for entry in kept if isinstance(entry, dict)] if isinstance(kept, list) else []


def when(value: str | None) -> str:
    """An ISO moment as "3 December 2026, 14:05" (London time)."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    local = moment.astimezone(LONDON)
    return f"{local.day} {local:%B %Y, %H:%M}"


def _type_order(output: Mapping[str, Any]) -> int:
    order = list(EXPORT_TYPES)
    kind = str(output.get("type"))
    return order.index(kind) if kind in order else len(order)


def _types_words(types: str) -> str:
    return ", ".join(EXPORT_TYPES.get(t, t).lower() for t in types.split(",") if t).capitalize()


@router.get("/exports")
async def exports(request: Request, person: SignedIn) -> Response:
    if "reporting:export" not in person.scopes:  # the one page that asks the API nothing first
        refusal = {
            "title": "You cannot export reporting data",
            "detail": "Reporting is for the ICB's analysts.",
            "required_scopes": ["reporting:export"],
        }
        return person_problem(request, person, refusal, 403)
    return _exports_page(request, person, {}, {"types": list(EXPORT_TYPES)}, 200)


def _exports_page(
    request: Request, person: SignedInPerson, errors: dict[str, str], values: dict[str, Any], status: int
) -> Response:
    started = [
        {**entry, "when": when(entry.get("started_at")), "what": _types_words(str(entry.get("types", "")))}
        for entry in reversed(_started(request))
    ]
    return person_page(
        request,
        person,
        "pages/reporting/exports.html",
        {
            "export_types": EXPORT_TYPES,
            "started": started,
            "values": values,
            "field_errors": errors,
            "errors": [{"href": f"#{k}", "text": v} for k, v in errors.items()] or None,
            "removed": request.query_params.get("done") == "removed",
        },
        status,
        current=EXPORTS,
    )


@router.post("/exports")
async def start_export(request: Request, person: SignedIn) -> Response:
    form = await request.form()
    types = [str(t) for t in form.getlist("types") if str(t) in EXPORT_TYPES]
    since = str(form.get("since") or "").strip()
    errors: dict[str, str] = {}
    if not types:
        errors["types"] = "Select what to export"
    params: dict[str, str] = {"_type": ",".join(types)}
    if since:
        try:
            params["_since"] = datetime.combine(
                date.fromisoformat(since), datetime.min.time(), UTC
            ).isoformat()
        except ValueError:
            errors["since"] = "Enter the date as a real date, like 2026-11-01"
    if errors:
        return _exports_page(request, person, errors, {"types": types, "since": since}, 422)
    answer = await analyst_api(request, person).post(
        "/reporting/$export", params=params, headers={"Idempotency-Key": uuid.uuid4().hex}
    )
    if not answer.ok:
        return refused(request, person, answer.status, answer.problem, "reporting:export")
    job_id = answer.headers.get("content-location", "").rstrip("/").rsplit("/", 1)[-1]
    if not job_id:
        return person_problem(request, person, {"title": "The export did not start"}, 502)
    started = [e for e in _started(request) if e.get("id") != job_id][-(KEPT_EXPORTS - 1) :]
    started.append({"id": job_id, "types": ",".join(types), "started_at": datetime.now(UTC).isoformat()})
    web_session(request).data[SESSION_EXPORTS] = started
    return RedirectResponse(f"{EXPORTS}/{job_id}?done=started", status_code=303)


def _entry(request: Request, job_id: str) -> dict[str, Any] | None:
    return next((e for e in _started(request) if e.get("id") == job_id), None)


@router.get("/exports/{job_id}")
async def export_status(request: Request, person: SignedIn, job_id: str) -> Response:
    answer = await analyst_api(request, person).get(f"/reporting/$export/jobs/{job_id}")
    entry = _entry(request, job_id) or {}
    context: dict[str, Any] = {
        "job_id": job_id,
        "what": _types_words(str(entry.get("types", ""))),
        "when": when(entry.get("started_at")),
        "just_started": request.query_params.get("done") == "started",
        "files": [],
        "state": "running",
        "progress": None,
        "back_link": EXPORTS,
        "back_label": "Back to bulk export",
    }
    if answer.status == 202:
        context["progress"] = answer.headers.get("x-progress")
    elif answer.status == 200 and isinstance(answer.body, dict):
        context["state"] = "complete"
        context["exported_at"] = when(answer.body.get("transactionTime"))
        context["files"] = [
            {
                "type": str(f.get("type")),
                "label": EXPORT_TYPES.get(str(f.get("type")), str(f.get("type"))),
                "count": f.get("count", 0),
                "href": f"{EXPORTS}/{job_id}/files/{f.get('type')}",
            }
            for f in sorted(answer.body.get("output", []), key=_type_order)
        ]
    elif answer.status == 500 and answer.problem.get("title") == "Export failed":
        context["state"] = "failed"
        context["failure"] = answer.problem.get("detail")
    else:
        return refused(request, person, answer.status, answer.problem, "reporting:export")
    return person_page(request, person, "pages/reporting/export.html", context, current=EXPORTS)


@router.post("/exports/{job_id}/delete")
async def delete_export(request: Request, person: SignedIn, job_id: str) -> Response:
    answer = await analyst_api(request, person).call("DELETE", f"/reporting/$export/jobs/{job_id}")
    if not answer.ok:
        return refused(request, person, answer.status, answer.problem, "reporting:export")
    session = web_session(request)
    session.data[SESSION_EXPORTS] = [e for e in _started(request) if e.get("id") != job_id]
    return RedirectResponse(f"{EXPORTS}?done=removed", status_code=303)


@router.get("/exports/{job_id}/files/{file_type}", tags=[NOT_A_PAGE])
async def export_file(request: Request, person: SignedIn, job_id: str, file_type: str) -> Response:
    """The file as the API streams it to the person, passed on as it comes (never held whole)."""
    api = analyst_api(request, person)
    path = f"/reporting/$export/jobs/{job_id}/files/{file_type}"
    upstream, close = await api.stream("GET", path, headers={"Accept": "application/fhir+ndjson"})
    if upstream.status_code >= 400:
        try:
            await upstream.aread()
            body = upstream.json()
        except ValueError:
            body = {"title": "Error"}
        finally:
            await close()
        return refused(
            request, person, upstream.status_code, body if isinstance(body, dict) else {}, "reporting:export"
        )

    async def chunks() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_bytes():
                yield chunk
        finally:
            await close()

    safe_type = "".join(c for c in file_type if c.isalnum())[:20]
    name = f"cmh-export-{safe_type.lower()}-{london_date(datetime.now(UTC)).isoformat()}.ndjson"
    return StreamingResponse(
        chunks(),
        media_type=upstream.headers.get("content-type", "application/fhir+ndjson"),
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )
