"""The ICB's aggregate measures, computed from the projections.

Each measure takes a cohort (rows whose defining moment falls in the period), groups it by the
requested categories and counts; percentages are computed from raw counts. Disclosure control is
applied afterwards, per grouped row (see `domain.disclose`); the ICB-wide total row is computed
from unrounded counts. The four-week clocks are the same pure functions careplan enforces with
(`services.careplan.domain`), applied to the projected first-of times.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, time
from typing import Any

from sqlalchemy import and_, case, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.reporting.domain import Period, median, percentile
from services.reporting.models import EpisodeFact, HandoverFact, ReferralFact
from shared.clocks import AT_RISK_DAY, TARGET_DAYS, EpisodeFacts, crisis_target_minutes
from shared.timezones import london_date

ROUTES = (
    "crisis_response", "crisis_line", "home_treatment", "front_door_primary", "front_door_secondary", "focused_support",
    "staying_well", "vcfse_signpost", "reaccess", "out_of_area",
)  # fmt: skip
CATEGORY_OF = {"network": "network", "team": "team", "place": "place", "pathway": "pathway"}


def _bounds(period: Period) -> tuple[datetime, datetime]:
    return datetime.combine(period.start, time(), UTC), datetime.combine(period.end, time(), UTC)


def _key(values: dict[str, Any], group_by: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(values.get(field) or "unknown" for field in group_by)


def _referral_categories(fact: ReferralFact) -> dict[str, Any]:
    return {
        "place": fact.place, "network": fact.network, "team": fact.team, "pathway": fact.pathway,
        "age_band": fact.age_band, "sex": fact.sex, "ethnicity": fact.ethnicity, "source": fact.source,
        "priority": fact.priority,
    }  # fmt: skip


def _grouped(
    rows: Iterable[tuple[dict[str, Any], Any]], group_by: tuple[str, ...]
) -> dict[tuple[Any, ...], list[Any]]:
    groups: dict[tuple[Any, ...], list[Any]] = defaultdict(list)
    for categories, row in rows:
        groups[_key(categories, group_by)].append(row)
    return groups


def _rows(
    groups: dict[tuple[Any, ...], list[Any]],
    group_by: tuple[str, ...],
    measure: Callable[[list[Any]], dict[str, Any]],
) -> list[dict[str, Any]]:
    return [
        {**dict(zip(group_by, key, strict=True)), **measure(members)}
        for key, members in sorted(groups.items(), key=lambda item: tuple(str(v) for v in item[0]))
    ]


async def referrals(
    session: AsyncSession, period: Period, group_by: tuple[str, ...]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    start, end = _bounds(period)
    facts = (
        await session.scalars(
            select(ReferralFact).where(ReferralFact.received_at >= start, ReferralFact.received_at < end)
        )
    ).all()

    def measure(members: list[ReferralFact]) -> dict[str, Any]:
        row: dict[str, Any] = {"received": len(members)}
        for route in ROUTES:
            row[f"route_{route}"] = sum(1 for m in members if m.route == route)
        row["awaiting_decision"] = sum(1 for m in members if m.status == "received")
        return row

    return _rows(
        _grouped(((_referral_categories(f), f) for f in facts), group_by), group_by, measure
    ), measure(list(facts))


def episode_facts(fact: EpisodeFact) -> EpisodeFacts:
    return EpisodeFacts(
        referral_received_at=fact.referral_received_at,
        age_at_referral=fact.age_at_referral,
        spell_started_at=fact.spell_started_at,
        discharged_at=fact.discharged_at,
        first_assessment_completed_at=fact.first_assessment_completed_at,
        plan_agreed_at=fact.plan_agreed_at,
        first_attended_contact_at=fact.first_attended_contact_at,
        first_outcome_measure_at=fact.first_outcome_measure_at,
        first_meaningful_assessment_at=fact.first_meaningful_assessment_at,
        first_intervention_at=fact.first_intervention_at,
        assessment_started_at=fact.assessment_started_at,
        advice_or_signposting_at=fact.advice_or_signposting_at,
    )


async def _episodes(session: AsyncSession, period: Period) -> list[tuple[EpisodeFact, ReferralFact | None]]:
    start, end = _bounds(period)
    rows = (
        await session.execute(
            select(EpisodeFact, ReferralFact)
            .join(ReferralFact, ReferralFact.referral_id == EpisodeFact.referral_id, isouter=True)
            .where(EpisodeFact.referral_received_at >= start, EpisodeFact.referral_received_at < end)
        )
    ).all()
    return [(episode, referral) for episode, referral in rows]


def _episode_categories(episode: EpisodeFact, referral: ReferralFact | None) -> dict[str, Any]:
    categories = _referral_categories(referral) if referral else {}
    return {
        **categories,
        "place": episode.place,
        "network": episode.network,
        "team": episode.team,
        "pathway": episode.pathway,
    }


GROUP_COLUMNS: dict[str, Any] = {
    "place": EpisodeFact.place, "network": EpisodeFact.network, "team": EpisodeFact.team, "pathway": EpisodeFact.pathway,
    "age_band": EpisodeFact.age_band, "sex": EpisodeFact.sex, "ethnicity": EpisodeFact.ethnicity,
    "source": EpisodeFact.source, "priority": EpisodeFact.priority,
}  # fmt: skip


def _clock_sql(prefix: str, start: Any, stop: Any, until: Any, *, warn: bool) -> list[Any]:
    """Counts for one clock as SQL over London day numbers (integer arithmetic on any engine)."""
    started = start.is_not(None)
    days_open = until - start
    met = and_(stop.is_not(None), stop - start <= TARGET_DAYS)
    breached = and_(
        started,
        or_(
            and_(stop.is_not(None), stop - start > TARGET_DAYS), and_(stop.is_(None), days_open > TARGET_DAYS)
        ),
    )
    at_risk = (
        and_(started, stop.is_(None), days_open >= AT_RISK_DAY, days_open <= TARGET_DAYS)
        if warn
        else literal(False)
    )
    count = lambda condition: func.sum(case((condition, 1), else_=0))  # noqa: E731
    return [
        count(started).label(f"{prefix}_started"),
        count(met).label(f"{prefix}_met"),
        count(breached).label(f"{prefix}_breached"),
        count(stop.is_not(None)).label(f"{prefix}_stopped"),
        count(at_risk).label(f"{prefix}_open_at_risk"),
        count(and_(started, stop.is_(None))).label(f"{prefix}_open"),
    ]


def _cohort(query: Any, period: Period, group_by: tuple[str, ...]) -> Any:
    start, end = _bounds(period)
    # The referral's categories are joined only when grouping by one of them.
    if any(GROUP_COLUMNS[field].class_ is ReferralFact for field in group_by):
        query = query.join(ReferralFact, ReferralFact.referral_id == EpisodeFact.referral_id, isouter=True)
    return query.where(EpisodeFact.referral_received_at >= start, EpisodeFact.referral_received_at < end)


def four_week_waits_statement(period: Period, group_by: tuple[str, ...], now: datetime) -> Any:
    """The four-week counts as one grouped SQL statement over London day numbers: additive, so the
    ICB total is the sum of the groups, and the engine can aggregate in parallel."""
    today = london_date(now).toordinal()
    until = func.coalesce(EpisodeFact.discharged_day, today)
    measures = [
        func.count().label("episodes"),
        *_clock_sql("plan", EpisodeFact.plan_start_day, EpisodeFact.plan_stop_day, until, warn=True),
        *_clock_sql(
            "national", EpisodeFact.national_start_day, EpisodeFact.national_stop_day, until, warn=False
        ),
    ]
    columns = [GROUP_COLUMNS[field].label(field) for field in group_by]
    query = _cohort(select(*columns, *measures).select_from(EpisodeFact), period, group_by)
    return query.group_by(*columns) if columns else query


def days_histogram_statement(period: Period, group_by: tuple[str, ...], prefix: str) -> Any:
    """How many stopped clocks took each number of days, per group: medians and percentiles come
    exactly from this small table (days are small integers), without sorting every episode."""
    start_day, stop_day = (
        getattr(EpisodeFact, f"{prefix}_start_day"),
        getattr(EpisodeFact, f"{prefix}_stop_day"),
    )
    days = (stop_day - start_day).label("days")
    columns = [GROUP_COLUMNS[field].label(field) for field in group_by]
    query = _cohort(
        select(*columns, days, func.count().label("n")).select_from(EpisodeFact), period, group_by
    )
    return query.where(stop_day.is_not(None)).group_by(*columns, days)


def _spread(histogram: dict[int, int]) -> list[int]:
    values: list[int] = []
    for day in sorted(histogram):
        values.extend([day] * histogram[day])
    return values


async def four_week_waits(
    session: AsyncSession, period: Period, group_by: tuple[str, ...], now: datetime
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Plan and national clocks of the episodes whose referral was received in the period,
    counted in the database; the ICB total is summed from the groups' raw counts."""
    rows = [
        dict(row)
        for row in (await session.execute(four_week_waits_statement(period, group_by, now))).mappings()
    ]
    if rows:
        counted = [key for key in rows[0] if key not in group_by]
        total: dict[str, Any] = {key: sum(int(row[key] or 0) for row in rows) for key in counted}
    else:  # nothing in the period: the ungrouped statement names every measure (all zero)
        total = dict((await session.execute(four_week_waits_statement(period, (), now))).mappings().one())
    for prefix in ("plan", "national"):
        histograms: dict[tuple[Any, ...], dict[int, int]] = defaultdict(dict)
        overall: dict[int, int] = defaultdict(int)
        for row in (await session.execute(days_histogram_statement(period, group_by, prefix))).mappings():
            key = tuple(row[field] for field in group_by)
            histograms[key][int(row["days"])] = int(row["n"])
            overall[int(row["days"])] += int(row["n"])
        for row in rows:
            values = _spread(histograms.get(tuple(row[field] for field in group_by), {}))
            row[f"{prefix}_median_days"], row[f"{prefix}_p90_days"] = median(values), percentile(values, 90)
        values = _spread(overall)
        total[f"{prefix}_median_days"], total[f"{prefix}_p90_days"] = median(values), percentile(values, 90)
    for row in (*rows, total):
        for key, value in list(row.items()):
            if value is None and not key.endswith("_days") and key not in group_by:
                row[key] = 0
        for prefix in ("plan", "national"):
            row[f"{prefix}_decided"] = int(row.get(f"{prefix}_met", 0)) + int(
                row.get(f"{prefix}_breached", 0)
            )
    for row in rows:
        for field in group_by:
            row[field] = row.get(field) if row.get(field) is not None else "unknown"
    rows.sort(key=lambda r: tuple(str(r[f]) for f in group_by))
    return rows, total


async def crisis_response(
    session: AsyncSession, period: Period, group_by: tuple[str, ...]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    start, end = _bounds(period)
    facts = (
        await session.scalars(
            select(ReferralFact).where(
                ReferralFact.received_at >= start,
                ReferralFact.received_at < end,
                ReferralFact.priority.in_((1, 2, 4)),
            )
        )
    ).all()

    def category(fact: ReferralFact) -> str:
        if fact.source == "ae":
            return "ae_liaison"
        return {1: "emergency", 4: "very_urgent", 2: "urgent"}[fact.priority or 2]

    def measure(members: list[ReferralFact]) -> dict[str, Any]:
        row: dict[str, Any] = {"crisis_referrals": len(members)}
        for name in ("very_urgent", "urgent", "ae_liaison", "emergency"):
            chosen = [m for m in members if category(m) == name]
            met = 0
            for m in chosen:
                target = crisis_target_minutes(m.priority or 2, m.source or "")
                if m.response_minutes is not None and target is not None and m.response_minutes <= target:
                    met += 1
            row[f"{name}_count"] = len(chosen)
            row[f"{name}_met"] = met
        minutes = [m.response_minutes for m in members if m.response_minutes is not None]
        row["responded"] = len(minutes)
        row["median_minutes"] = median(minutes)
        return row

    return _rows(
        _grouped(((_referral_categories(f), f) for f in facts), group_by), group_by, measure
    ), measure(list(facts))


async def reaccess(
    session: AsyncSession, period: Period, group_by: tuple[str, ...]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    pairs = await _episodes(session, period)

    def measure(members: list[EpisodeFact]) -> dict[str, Any]:
        return {"episodes": len(members), "reaccess": sum(1 for m in members if m.reaccess)}

    grouped = _grouped(((_episode_categories(e, r), e) for e, r in pairs), group_by)
    return _rows(grouped, group_by, measure), measure([e for e, _ in pairs])


async def handovers(
    session: AsyncSession, period: Period, group_by: tuple[str, ...]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    start, end = _bounds(period)
    rows = (
        await session.execute(
            select(HandoverFact, ReferralFact)
            .join(ReferralFact, ReferralFact.referral_id == HandoverFact.referral_id, isouter=True)
            .where(HandoverFact.offered_at >= start, HandoverFact.offered_at < end)
        )
    ).all()

    def measure(members: list[HandoverFact]) -> dict[str, Any]:
        return {
            "offered": len(members),
            "accepted": sum(1 for m in members if m.accepted_at is not None),
            "completed": sum(1 for m in members if m.completed_at is not None),
            "declined": sum(1 for m in members if m.declined_at is not None),
        }

    grouped = _grouped(((_referral_categories(r) if r else {}, h) for h, r in rows), group_by)
    return _rows(grouped, group_by, measure), measure([h for h, _ in rows])


async def inequalities(
    session: AsyncSession, period: Period, group_by: tuple[str, ...], now: datetime
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each group's share of referrals and its plan-clock performance beside the whole's."""
    referral_rows, referral_total = await referrals(session, period, group_by)
    wait_rows, wait_total = await four_week_waits(session, period, group_by, now)
    waits = {tuple(row.get(f) for f in group_by): row for row in wait_rows}
    rows = []
    for row in referral_rows:
        key = tuple(row.get(f) for f in group_by)
        wait = waits.get(key, {})
        rows.append(
            {
                **{f: row[f] for f in group_by},
                "received": row["received"],
                "all_received": referral_total["received"],
                "plan_met": wait.get("plan_met", 0),
                "plan_stopped": wait.get("plan_met", 0) + wait.get("plan_breached", 0),
                "all_plan_met": wait_total["plan_met"],
                "all_plan_stopped": wait_total["plan_met"] + wait_total["plan_breached"],
            }
        )
    total = {
        "received": referral_total["received"],
        "plan_met": wait_total["plan_met"],
        "plan_stopped": wait_total["plan_met"] + wait_total["plan_breached"],
    }
    return rows, total
