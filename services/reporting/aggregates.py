"""The ICB's aggregate measures, computed from the projections.

Each measure takes a cohort (rows whose defining moment falls in the period), groups it by the
requested categories and counts; the ICB-wide total row is computed from unrounded counts.
Disclosure control is applied afterwards to the whole table, rows and total together, by
`domain.publish`, with the fields each measure declares in `MEASURES`. The four-week clocks are the same pure functions careplan enforces with
(`services.careplan.domain`), applied to the projected first-of times.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, time
from typing import Any

from sqlalchemy import and_, func, literal, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.clocks import AT_RISK_DAY, TARGET_DAYS, EpisodeFacts, crisis_target_minutes
from contracts.timezones import london_date
from contracts.vocabulary import Priority, Route
from services.reporting.domain import Figures, Period, median, median_of_counts, percentile_of_counts
from services.reporting.models import EpisodeFact, HandoverFact, ReferralFact
from shared.sqltypes import UTCDateTime

ROUTES = tuple(route.value for route in Route)
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


CLOCKS: tuple[tuple[str, bool], ...] = (("plan", True), ("national", False))  # (prefix, warns)
CLOCK_COUNTS = ("started", "met", "breached", "stopped", "open_at_risk", "open")


def _cohort(query: Any, period: Period, group_by: tuple[str, ...]) -> Any:
    # The bounds are written into the SQL, not bound: a reused prepared statement's generic plan
    # guesses any period holds 0.5% of the episodes and reads a five-year pull through the
    # period index, twice as slow as the parallel scan the planner picks seeing the dates.
    start, end = (literal(bound, UTCDateTime, literal_execute=True) for bound in _bounds(period))
    # The referral's categories are joined only when grouping by one of them.
    if any(GROUP_COLUMNS[field].class_ is ReferralFact for field in group_by):
        query = query.join(ReferralFact, ReferralFact.referral_id == EpisodeFact.referral_id, isouter=True)
    return query.where(EpisodeFact.referral_received_at >= start, EpisodeFact.referral_received_at < end)


def clock_statement(
    period: Period, group_by: tuple[str, ...], prefix: str, now: datetime, *, warn: bool
) -> Any:
    """One clock over the cohort as one grouped SQL statement over London day numbers: episodes per
    group and day count (stop - start, NULL until stopped), with what the day count alone cannot
    tell (started, stopped, open and already breached or at risk by `now`).

    Every four-week figure follows from these rows (see `_ClockCounts`), so a pull is one scan per
    clock; the day counts are small integers, so the rows are few and medians exact."""
    today = london_date(now).toordinal()
    start, stop = getattr(EpisodeFact, f"{prefix}_start_day"), getattr(EpisodeFact, f"{prefix}_stop_day")
    days_open = func.coalesce(EpisodeFact.discharged_day, today) - start  # NULL when not started
    running = stop.is_(None)
    at_risk = (
        func.count().filter(and_(running, days_open >= AT_RISK_DAY, days_open <= TARGET_DAYS))
        if warn
        else literal_column("0")  # the national clock is never at risk
    )
    days = (stop - start).label("days")
    columns = [GROUP_COLUMNS[field].label(field) for field in group_by]
    query = select(
        *columns,
        days,
        func.count().label("n"),
        func.count(start).label("started"),
        func.count(stop).label("stopped"),
        func.count().filter(and_(running, days_open > TARGET_DAYS)).label("open_breached"),
        at_risk.label("open_at_risk"),
    ).select_from(EpisodeFact)
    return _cohort(query, period, group_by).group_by(*columns, days)


class _ClockCounts:
    """One clock's counts and stopped-clock day histogram for a group, folded from its rows of
    `clock_statement`: exactly the counts of the per-episode rules (an open clock is breached
    past TARGET_DAYS, at risk from AT_RISK_DAY; a clock stops with stop - start days)."""

    def __init__(self) -> None:
        self.episodes = 0
        self.counts = dict.fromkeys(CLOCK_COUNTS, 0)
        self.days: dict[int, int] = defaultdict(int)

    def add(self, days: int | None, n: int, started: int, stopped: int, breached: int, at_risk: int) -> None:
        self.episodes += n
        self.counts["started"] += started
        self.counts["stopped"] += stopped
        self.counts["breached"] += breached  # open clocks already past the target
        self.counts["open_at_risk"] += at_risk
        if days is None:
            # Not stopped (or stopped without a start, which no projection writes): whatever
            # started here is still running.
            self.counts["open"] += started
            return
        self.days[days] += n
        self.counts["met" if days <= TARGET_DAYS else "breached"] += n

    def merge(self, other: _ClockCounts) -> None:
        self.episodes += other.episodes
        for name, count in other.counts.items():
            self.counts[name] += count
        for days, n in other.days.items():
            self.days[days] += n

    def figures(self, prefix: str) -> dict[str, Any]:
        return {f"{prefix}_{name}": self.counts[name] for name in CLOCK_COUNTS}

    def statistics(self, prefix: str) -> dict[str, Any]:
        return {
            f"{prefix}_median_days": median_of_counts(self.days),
            f"{prefix}_p90_days": percentile_of_counts(self.days, 90),
        }


async def four_week_waits(
    session: AsyncSession, period: Period, group_by: tuple[str, ...], now: datetime
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Plan and national clocks of the episodes whose referral was received in the period,
    counted in the database; the ICB total is summed from the groups' raw counts."""
    width = len(group_by)
    clocks: dict[str, dict[tuple[Any, ...], _ClockCounts]] = {}
    for prefix, warn in CLOCKS:
        groups: dict[tuple[Any, ...], _ClockCounts] = defaultdict(_ClockCounts)
        statement = clock_statement(period, group_by, prefix, now, warn=warn)
        for row in await session.execute(statement):
            days, n, started, stopped, breached, at_risk = row[width:]
            groups[tuple(row[:width])].add(days, n, started, stopped, breached, at_risk)
        clocks[prefix] = groups

    def assemble(parts: dict[str, _ClockCounts]) -> dict[str, Any]:
        row: dict[str, Any] = {"episodes": parts["plan"].episodes}
        for prefix, _warn in CLOCKS:
            row.update(parts[prefix].figures(prefix))
        for prefix, _warn in CLOCKS:
            row.update(parts[prefix].statistics(prefix))
        for prefix, _warn in CLOCKS:
            row[f"{prefix}_decided"] = row[f"{prefix}_met"] + row[f"{prefix}_breached"]
        return row

    if not group_by:
        # Ungrouped is one row even for an empty period, as an ungrouped aggregate is.
        clocks["plan"].setdefault((), _ClockCounts())
    totals = {prefix: _ClockCounts() for prefix, _warn in CLOCKS}
    rows = []
    # Both statements group the same cohort the same way, so they name the same groups.
    for key in clocks["plan"]:
        parts = {prefix: clocks[prefix].get(key) or _ClockCounts() for prefix, _warn in CLOCKS}
        for prefix, part in parts.items():
            totals[prefix].merge(part)
        labels = {
            field: value if value is not None else "unknown"
            for field, value in zip(group_by, key, strict=True)
        }
        rows.append({**labels, **assemble(parts)})
    rows.sort(key=lambda r: tuple(str(r[f]) for f in group_by))
    return rows, assemble(totals)


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
        return Priority(fact.priority or Priority.URGENT).name.lower()

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


# --- the measures ------------------------------------------------------------------------------


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
        self.compute = compute
        self.figures = Figures(counts, percentages or {}, statistics or {})
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
    "referrals": Measure(referrals, ("received", "awaiting_decision", *(f"route_{r}" for r in ROUTES))),
    "four-week-waits": Measure(
        four_week_waits,
        ("episodes", *PLAN[0], *NATIONAL[0]),
        {**PLAN[1], **NATIONAL[1]},
        {**PLAN[2], **NATIONAL[2]},
        needs_now=True,
    ),
    "crisis-response": Measure(
        crisis_response,
        ("crisis_referrals", "responded", *(f"{k}_{f}" for k in CRISIS_KINDS for f in ("count", "met"))),
        {f"{k}_met_pct": (f"{k}_met", f"{k}_count") for k in CRISIS_KINDS},
        {"median_minutes": "responded"},
    ),
    "reaccess": Measure(reaccess, ("episodes", "reaccess"), {"reaccess_pct": ("reaccess", "episodes")}),
    "handovers": Measure(
        handovers,
        ("offered", "accepted", "completed", "declined"),
        {"accepted_pct": ("accepted", "offered"), "completed_pct": ("completed", "offered")},
    ),
    "inequalities": Measure(
        inequalities,
        ("received", "all_received", "plan_met", "plan_stopped", "all_plan_met", "all_plan_stopped"),
        {
            "share_of_referrals_pct": ("received", "all_received"),
            "plan_met_pct": ("plan_met", "plan_stopped"),
            "all_plan_met_pct": ("all_plan_met", "all_plan_stopped"),
        },
        needs_now=True,
    ),
}
