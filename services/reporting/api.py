"""`/reporting`: aggregate pulls for the ICB (`reporting:aggregate`), with a period (`period=2026-11`,
`period=2026-Q3`, or `from`/`to`) and `group_by` any of place, network, team, pathway, age band,
sex, ethnicity, source, priority. Grouped rows have NHS statistical disclosure control applied
(counts under 5 → `*`, others to the nearest 5; percentages `*` when either side is under 5);
the ICB-wide total is computed from unrounded counts. `unsuppressed=true` needs
`reporting:unsuppressed`. JSON by default, CSV with `Accept: text/csv`."""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from services.reporting import aggregates
from services.reporting.domain import (
    GroupByError,
    Period,
    PeriodError,
    disclose,
    parse_group_by,
    parse_period,
)
from shared.auth import Caller, requires
from shared.errors import Problem

router = APIRouter(prefix="/reporting", tags=["reporting"])
METHOD = "NHS statistical disclosure control (MHSDS): counts under 5 shown as *, others rounded to the nearest 5; percentages * when numerator or denominator is under 5"


class Measure:
    """How one pull is computed and which of its fields are counts, percentages and statistics."""

    def __init__(
        self,
        compute: Callable[..., Awaitable[tuple[list[dict[str, Any]], dict[str, Any]]]],
        counts: tuple[str, ...],
        percentages: dict[str, tuple[str, str]] | None = None,
        statistics: dict[str, str] | None = None,
        needs_now: bool = False,
    ) -> None:
        self.compute, self.counts = compute, counts
        self.percentages = percentages or {}
        self.statistics = statistics or {}
        self.needs_now = needs_now


def _clock_fields(prefix: str) -> tuple[tuple[str, ...], dict[str, tuple[str, str]], dict[str, str]]:
    counts = tuple(
        f"{prefix}_{name}"
        for name in ("started", "met", "breached", "stopped", "decided", "open_at_risk", "open")
    )
    return (
        counts,
        {f"{prefix}_met_pct": (f"{prefix}_met", f"{prefix}_decided")},
        {f"{prefix}_median_days": f"{prefix}_stopped", f"{prefix}_p90_days": f"{prefix}_stopped"},
    )


PLAN = _clock_fields("plan")
NATIONAL = _clock_fields("national")
CRISIS_KINDS = ("very_urgent", "urgent", "ae_liaison", "emergency")
MEASURES: dict[str, Measure] = {
    "referrals": Measure(
        aggregates.referrals, ("received", "awaiting_decision", *(f"route_{r}" for r in aggregates.ROUTES))
    ),
    "four-week-waits": Measure(
        aggregates.four_week_waits,
        ("episodes", *PLAN[0], *NATIONAL[0]),
        {**PLAN[1], **NATIONAL[1]},
        {**PLAN[2], **NATIONAL[2]},
        needs_now=True,
    ),
    "crisis-response": Measure(
        aggregates.crisis_response,
        ("crisis_referrals", "responded", *(f"{k}_{f}" for k in CRISIS_KINDS for f in ("count", "met"))),
        {f"{k}_met_pct": (f"{k}_met", f"{k}_count") for k in CRISIS_KINDS},
        {"median_minutes": "responded"},
    ),
    "reaccess": Measure(
        aggregates.reaccess, ("episodes", "reaccess"), {"reaccess_pct": ("reaccess", "episodes")}
    ),
    "handovers": Measure(
        aggregates.handovers,
        ("offered", "accepted", "completed", "declined"),
        {"accepted_pct": ("accepted", "offered"), "completed_pct": ("completed", "offered")},
    ),
    "inequalities": Measure(
        aggregates.inequalities,
        ("received", "all_received", "plan_met", "plan_stopped", "all_plan_met", "all_plan_stopped"),
        {
            "share_of_referrals_pct": ("received", "all_received"),
            "plan_met_pct": ("plan_met", "plan_stopped"),
            "all_plan_met_pct": ("all_plan_met", "all_plan_stopped"),
        },
        needs_now=True,
    ),
}


def _period(period: str | None, from_: date | None, to: date | None) -> Period:
    try:
        return parse_period(period, from_, to)
    except PeriodError as error:
        raise Problem(422, "Bad period", str(error), type_slug="validation",
                      errors=[{"location": ["query", "period"], "message": str(error), "type": "value_error"}]) from None  # fmt: skip


def _group_by(text: str | None) -> tuple[str, ...]:
    try:
        return parse_group_by(text)
    except GroupByError as error:
        raise Problem(422, "Bad group_by", str(error), type_slug="validation",
                      errors=[{"location": ["query", "group_by"], "message": str(error), "type": "value_error"}]) from None  # fmt: skip


def _csv(rows: list[dict[str, Any]]) -> Response:
    buffer = io.StringIO()
    fields: list[str] = []
    for row in rows:
        fields += [key for key in row if key not in fields]
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    return Response(buffer.getvalue(), media_type="text/csv; charset=utf-8")


def _pull(name: str, measure: Measure) -> Callable[..., Awaitable[Response]]:
    async def pull(
        request: Request,
        caller: Caller = requires("reporting:aggregate"),
        period: Annotated[str | None, Query(max_length=10, description="2026-11 or 2026-Q3")] = None,
        from_: Annotated[date | None, Query(alias="from")] = None,
        to: date | None = None,
        group_by: Annotated[str | None, Query(max_length=200)] = None,
        unsuppressed: bool = False,
    ) -> Response:
        if unsuppressed and not caller.has("reporting:unsuppressed"):
            raise Problem(
                403,
                "Unsuppressed figures need their own scope",
                "Ask for reporting:unsuppressed.",
                type_slug="insufficient-scope",
            )
        chosen_period, fields = _period(period, from_, to), _group_by(group_by)
        async with request.app.state.db.session() as session:
            args: list[Any] = [session, chosen_period, fields]
            if measure.needs_now:
                args.append(request.app.state.clock())
            rows, total = await measure.compute(*args)
        shown = [
            disclose(
                row,
                measure.counts,
                measure.percentages,
                unsuppressed=unsuppressed,
                icb_level=False,
                statistic_fields=measure.statistics,
            )
            for row in rows
        ]
        total_row = disclose(
            total,
            measure.counts,
            measure.percentages,
            unsuppressed=True,
            icb_level=True,
            statistic_fields=measure.statistics,
        )
        if "text/csv" in request.headers.get("accept", ""):
            return _csv([*shown, {**total_row, **{f: "ICB total" for f in fields}}])
        return JSONResponse(
            {
                "measure": name,
                "period": {
                    "start": chosen_period.start.isoformat(),
                    "end_exclusive": chosen_period.end.isoformat(),
                },
                "group_by": list(fields),
                "disclosure": {
                    "applied": not unsuppressed,
                    "method": None if unsuppressed else METHOD,
                    "any_suppressed": any(r["suppressed"] for r in shown),
                },
                "rows": shown,
                "total": total_row,
            }
        )

    pull.__name__ = f"pull_{name.replace('-', '_')}"
    return pull


for _name, _measure in MEASURES.items():
    router.add_api_route(
        f"/{_name}", _pull(_name, _measure), methods=["GET"], summary=f"Aggregate: {_name.replace('-', ' ')}"
    )
