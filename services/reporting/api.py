"""`/reporting`: aggregate pulls for the ICB (`reporting:aggregate`), with a period (`period=2026-11`,
`period=2026-Q3`, or `from`/`to`) and `group_by` any of place, network, team, pathway, age band,
sex, ethnicity, source, priority. Every figure, the ICB total included, goes through
`domain.publish` (the MHSDS small-number rule with secondary suppression, `DISCLOSURE_METHOD`);
`unsuppressed=true` needs `reporting:unsuppressed` and gives raw figures. JSON by default, CSV
(with an "ICB total" row) with `Accept: text/csv`."""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from services.reporting.aggregates import MEASURES, Measure
from services.reporting.domain import (
    DISCLOSURE_METHOD,
    parse_group_by,
    parse_period,
    publish,
)
from services.reporting.schemas import AggregateOut
from shared.auth import Caller, requires
from shared.deps import DatabaseDep, NowDep
from shared.errors import Problem, problems

router = APIRouter(prefix="/reporting", tags=["reporting"], responses=problems(401, 403, 422))
CSV_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/csv": {"schema": {"type": "string"}}},
        "description": "The figures (JSON, or CSV)",
    }
}


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


def _pull(name: str, measure: Measure) -> Callable[..., Awaitable[Response | dict[str, Any]]]:
    async def pull(
        request: Request,
        db: DatabaseDep,
        now: NowDep,
        caller: Caller = requires("reporting:aggregate"),
        period: Annotated[str | None, Query(max_length=10, description="2026-11 or 2026-Q3")] = None,
        from_: Annotated[date | None, Query(alias="from")] = None,
        to: date | None = None,
        group_by: Annotated[str | None, Query(max_length=200)] = None,
        unsuppressed: bool = False,
    ) -> Response | dict[str, Any]:
        if unsuppressed and not caller.has("reporting:unsuppressed"):
            raise Problem(
                403,
                "Unsuppressed figures need their own scope",
                "Ask for reporting:unsuppressed.",
                type_slug="insufficient-scope",
            )
        # A PeriodError or GroupByError is the one Refusal: 422 naming the query parameter.
        chosen_period, fields = parse_period(period, from_, to), parse_group_by(group_by)
        async with db.session() as session:
            args: list[Any] = [session, chosen_period, fields]
            if measure.needs_now:
                args.append(now)
            rows, total = await measure.compute(*args)
        shown, total_row = publish(rows, total, measure.figures, fields, unsuppressed=unsuppressed)
        if "text/csv" in request.headers.get("accept", ""):
            return _csv([*shown, {**total_row, **{f: "ICB total" for f in fields}}])
        return {
            "measure": name,
            "period": {
                "start": chosen_period.start.isoformat(),
                "end_exclusive": chosen_period.end.isoformat(),
            },
            "group_by": list(fields),
            "disclosure": {
                "applied": not unsuppressed,
                "method": None if unsuppressed else DISCLOSURE_METHOD,
                "any_suppressed": any(r["suppressed"] for r in [*shown, total_row]),
            },
            "rows": shown,
            "total": total_row,
        }

    pull.__name__ = f"pull_{name.replace('-', '_')}"
    return pull


for _name, _measure in MEASURES.items():
    router.add_api_route(
        f"/{_name}",
        _pull(_name, _measure),
        methods=["GET"],
        response_model=AggregateOut,
        responses=CSV_ANSWER,
        summary=f"Aggregate: {_name.replace('-', ' ')}",
    )
