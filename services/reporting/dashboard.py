"""`/reporting/dashboard`: the four-week and crisis measures by place over time, as a page of
server-drawn SVG charts (no scripts, nothing fetched from elsewhere) with the figures beneath.
Same token and scope as the pulls, and the same published tables (`domain.publish`): a month whose
percentage is suppressed is a gap in the line and `*` in the table; no count is drawn."""

from __future__ import annotations

from datetime import date, datetime
from html import escape
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from services.reporting.aggregates import MEASURES
from services.reporting.domain import Period, month_starts, parse_period, publish
from shared.auth import Caller, requires
from shared.db import Database
from shared.deps import DatabaseDep, NowDep
from shared.errors import Problem, problems

router = APIRouter(prefix="/reporting", tags=["reporting"], responses=problems(401, 403, 422))
COLOURS = ("#005eb8", "#007f3b", "#ed8b00", "#7c2855", "#330072", "#00a499")  # NHS palette
WIDTH, HEIGHT, PAD = 640, 240, 40


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def chart(title: str, months: list[date], series: dict[str, list[float | str | None]]) -> str:
    """An SVG line chart of percentages (0-100) by month; non-numbers are gaps."""
    step = (WIDTH - 2 * PAD) / max(1, len(months) - 1)

    def point(index: int, value: float) -> str:
        return f"{PAD + index * step:.1f},{HEIGHT - PAD - value / 100 * (HEIGHT - 2 * PAD):.1f}"

    parts = [
        f'<svg role="img" aria-label="{escape(title)}" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}">'
    ]
    for percent in (0, 50, 100):
        y = HEIGHT - PAD - percent / 100 * (HEIGHT - 2 * PAD)
        parts.append(f'<line x1="{PAD}" x2="{WIDTH - PAD}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="4" y="{y + 4:.1f}" font-size="10">{percent}%</text>')
    for index, month in enumerate(months):
        parts.append(
            f'<text x="{PAD + index * step:.1f}" y="{HEIGHT - 8}" font-size="9" text-anchor="middle">{month:%b %y}</text>'
        )
    for colour, (name, values) in zip(COLOURS * 3, series.items(), strict=False):
        run: list[str] = []
        for index, value in enumerate([*values, None]):
            if isinstance(value, int | float):
                run.append(point(index, float(value)))
                continue
            if len(run) > 1:
                parts.append(
                    f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(run)}"/>'
                )
            for dot in run:
                x, y = dot.split(",")
                parts.append(
                    f'<circle cx="{x}" cy="{y}" r="3" fill="{colour}"><title>{escape(name)}</title></circle>'
                )
            run = []
    parts.append("</svg>")
    legend = " ".join(
        f'<span style="color:{colour}">&#9632; {escape(name)}</span>'
        for colour, name in zip(COLOURS * 3, series, strict=False)
    )
    return (
        f"<figure><figcaption><strong>{escape(title)}</strong> {legend}</figcaption>{''.join(parts)}</figure>"
    )


def _cell(value: Any) -> str:
    return "<td>&ndash;</td>" if value is None else f"<td>{escape(str(value))}</td>"


def table(months: list[date], series: dict[str, list[Any]]) -> str:
    head = "".join(f"<th>{m:%b %Y}</th>" for m in months)
    rows = "".join(
        f"<tr><th>{escape(name)}</th>{''.join(_cell(v) for v in values)}</tr>"
        for name, values in series.items()
    )
    return f"<table><tr><th>Place</th>{head}</tr>{rows}</table>"


async def _series(db: Database, now: datetime, months: list[date], measure: str) -> dict[str, list[Any]]:
    """Each place's percentage by month, from the same published table the pull answers (so the
    page cannot show a figure, or a suppression pattern, the pull does not)."""
    name, field = (
        ("four-week-waits", "plan_met_pct")
        if measure == "plan"
        else ("crisis-response", "very_urgent_met_pct")
    )
    spec = MEASURES[name]
    series: dict[str, list[Any]] = {}
    async with db.session() as session:
        for index, month in enumerate(months):
            args: list[Any] = [session, Period(month, _next_month(month)), ("place",)]
            if spec.needs_now:
                args.append(now)
            rows, total = await spec.compute(*args)
            shown, _total = publish(rows, total, spec.figures, ("place",), unsuppressed=False)
            for row in shown:
                series.setdefault(str(row["place"]), [None] * len(months))[index] = row[field]
    return series


@router.get(
    "/dashboard", response_class=HTMLResponse, summary="Charts of the four-week and crisis measures by place"
)
async def dashboard(
    db: DatabaseDep,
    now: NowDep,
    caller: Caller = requires("reporting:aggregate"),
    from_: Annotated[date | None, Query(alias="from")] = None,
    to: date | None = None,
) -> HTMLResponse:
    today = now.date()
    start = from_ or date(today.year - 1, today.month, 1)
    try:
        period = parse_period(None, start, to or today)
    except ValueError as error:
        raise Problem(422, "Bad period", str(error), type_slug="validation") from None
    months = month_starts(period)
    plan = await _series(db, now, months, "plan")
    crisis = await _series(db, now, months, "crisis")
    body = (
        "<!doctype html><html lang=en><meta charset=utf-8><title>CMH Suite: four-week and crisis measures</title>"
        "<style>body{font-family:Arial,sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style>"
        f"<h1>Community mental health: four-week and crisis measures</h1><p>{period.start:%d %b %Y} to {months[-1]:%b %Y}, by place. "
        "Disclosure control applied (MHSDS small-number rule): a percentage whose numerator or denominator is suppressed is not shown (*).</p>"
        f"<h2>Plans agreed within four weeks of assessment</h2>{chart('Plan clock met (%)', months, plan)}{table(months, plan)}"
        f"<h2>Very urgent crisis referrals seen within 4 hours</h2>{chart('Very urgent met (%)', months, crisis)}{table(months, crisis)}"
        "</html>"
    )
    return HTMLResponse(
        body,
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
        },
    )
