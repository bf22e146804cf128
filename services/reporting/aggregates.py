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
from sqlalchemy.orm import InstrumentedAttribute

from contracts.clocks import AE_SOURCE, AT_RISK_DAY, TARGET_DAYS, EpisodeFacts, crisis_target_minutes
from contracts.timezones import london_date
from contracts.vocabulary import Priority, Route
from services.reporting.domain import GROUP_FIELDS, Figures, Period, median_of_counts, percentile_of_counts
from services.reporting.models import EpisodeFact, HandoverFact, ReferralFact
from shared.sqltypes import UTCDateTime

ROUTES = tuple(route.value for route in Route)
CATEGORY_OF = {"network": "network", "team": "team", "place": "place", "pathway": "pathway"}


def _bounds(period: Period) -> tuple[datetime, datetime]:
    return datetime.combine(period.start, time(), UTC), datetime.combine(period.end, time(), UTC)


def _label(key: Iterable[Any]) -> tuple[Any, ...]:
    # A missing (or empty) category is reported as "unknown", so NULL and "" are one group.
    return tuple(value or "unknown" for value in key)


def _sorted_rows(
    groups: dict[tuple[Any, ...], Any],
    group_by: tuple[str, ...],
    measure: Callable[[Any], dict[str, Any]],
) -> list[dict[str, Any]]:
    return [
        {**dict(zip(group_by, key, strict=True)), **measure(members)}
        for key, members in sorted(groups.items(), key=lambda item: tuple(str(v) for v in item[0]))
    ]


def _in_period(moment: Any, period: Period) -> Any:
    # The bounds are written into the SQL, not bound: a reused prepared statement's generic plan
    # guesses any period holds 0.5% of the rows and reads a five-year pull through the period
    # index, twice as slow as the parallel scan the planner picks seeing the dates.
    start, end = (literal(bound, UTCDateTime, literal_execute=True) for bound in _bounds(period))
    return and_(moment >= start, moment < end)


REFERRAL_COLUMNS: dict[str, InstrumentedAttribute[Any]] = {
    field: getattr(ReferralFact, field) for field in GROUP_FIELDS
}


def _grouped_statement(
    source: Any,
    moment: Any,
    categories: dict[str, InstrumentedAttribute[Any]],
    period: Period,
    group_by: tuple[str, ...],
    figures: Iterable[Any],
) -> Any:
    """`figures` (aggregates, the cohort's count first) over the rows of `source` whose `moment`
    is in the period, grouped by the requested categories; the referral is joined only when one
    of them is the referral's."""
    columns = [categories[field].label(field) for field in group_by]
    query = select(*columns, *figures).select_from(source)
    if source is not ReferralFact and any(categories[f].class_ is ReferralFact for f in group_by):
        query = query.join(ReferralFact, ReferralFact.referral_id == source.referral_id, isouter=True)
    return query.where(_in_period(moment, period)).group_by(*columns)


async def _counted(
    session: AsyncSession, statement: Any, group_by: tuple[str, ...], names: tuple[str, ...]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows and total of a measure that is only counts, from `_grouped_statement`'s rows (the
    figures in `names` order): as many rows as groups with a member, the total their sum."""
    width = len(group_by)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for row in await session.execute(statement):
        if not row[width]:
            continue  # an ungrouped aggregate over nothing: no group, as before
        sums = groups.setdefault(_label(row[:width]), [0] * len(names))
        for index, count in enumerate(row[width:]):
            sums[index] += count
    totals = [sum(column) for column in zip(*groups.values(), strict=True)] or [0] * len(names)

    def measure(sums: list[int]) -> dict[str, Any]:
        return dict(zip(names, sums, strict=True))

    return _sorted_rows(groups, group_by, measure), measure(totals)


REFERRAL_COUNTS = ("received", *(f"route_{route}" for route in ROUTES), "awaiting_decision")


async def referrals(
    session: AsyncSession, period: Period, group_by: tuple[str, ...]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    figures = [
        func.count(),
        *(func.count().filter(ReferralFact.route == route) for route in ROUTES),
        func.count().filter(ReferralFact.status == "received"),
    ]
    statement = _grouped_statement(
        ReferralFact, ReferralFact.received_at, REFERRAL_COLUMNS, period, group_by, figures
    )
    return await _counted(session, statement, group_by, REFERRAL_COUNTS)


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


GROUP_COLUMNS: dict[str, Any] = {
    "place": EpisodeFact.place, "network": EpisodeFact.network, "team": EpisodeFact.team, "pathway": EpisodeFact.pathway,
    "age_band": EpisodeFact.age_band, "sex": EpisodeFact.sex, "ethnicity": EpisodeFact.ethnicity,
    "source": EpisodeFact.source, "priority": EpisodeFact.priority,
}  # fmt: skip


CLOCKS: tuple[tuple[str, bool], ...] = (("plan", True), ("national", False))  # (prefix, warns)
CLOCK_COUNTS = ("started", "met", "breached", "stopped", "open_at_risk", "open")


def _cohort(query: Any, period: Period, group_by: tuple[str, ...]) -> Any:
    # The referral's categories are joined only when grouping by one of them.
    if any(GROUP_COLUMNS[field].class_ is ReferralFact for field in group_by):
        query = query.join(ReferralFact, ReferralFact.referral_id == EpisodeFact.referral_id, isouter=True)
    return query.where(_in_period(EpisodeFact.referral_received_at, period))


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


async def _clock_pull(
    session: AsyncSession,
    period: Period,
    group_by: tuple[str, ...],
    now: datetime,
    clocks: tuple[tuple[str, bool], ...],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The chosen clocks' figures, one `clock_statement` each; the total summed from the groups."""
    width = len(group_by)
    counted: dict[str, dict[tuple[Any, ...], _ClockCounts]] = {}
    for prefix, warn in clocks:
        groups: dict[tuple[Any, ...], _ClockCounts] = defaultdict(_ClockCounts)
        statement = clock_statement(period, group_by, prefix, now, warn=warn)
        for row in await session.execute(statement):
            days, n, started, stopped, breached, at_risk = row[width:]
            groups[tuple(row[:width])].add(days, n, started, stopped, breached, at_risk)
        counted[prefix] = groups
    first = clocks[0][0]

    def assemble(parts: dict[str, _ClockCounts]) -> dict[str, Any]:
        row: dict[str, Any] = {"episodes": parts[first].episodes}
        for prefix, _warn in clocks:
            row.update(parts[prefix].figures(prefix))
        for prefix, _warn in clocks:
            row.update(parts[prefix].statistics(prefix))
        for prefix, _warn in clocks:
            row[f"{prefix}_decided"] = row[f"{prefix}_met"] + row[f"{prefix}_breached"]
        return row

    if not group_by:
        # Ungrouped is one row even for an empty period, as an ungrouped aggregate is.
        counted[first].setdefault((), _ClockCounts())
    totals = {prefix: _ClockCounts() for prefix, _warn in clocks}
    rows = []
    # Every statement groups the same cohort the same way, so they name the same groups.
    for key in counted[first]:
        parts = {prefix: counted[prefix].get(key) or _ClockCounts() for prefix, _warn in clocks}
        for prefix, part in parts.items():
            totals[prefix].merge(part)
        labels = {
            field: value if value is not None else "unknown"
            for field, value in zip(group_by, key, strict=True)
        }
        rows.append({**labels, **assemble(parts)})
    rows.sort(key=lambda r: tuple(str(r[f]) for f in group_by))
    return rows, assemble(totals)


async def four_week_waits(
    session: AsyncSession, period: Period, group_by: tuple[str, ...], now: datetime
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Plan and national clocks of the episodes whose referral was received in the period,
    counted in the database; the ICB total is summed from the groups' raw counts."""
    return await _clock_pull(session, period, group_by, now, CLOCKS)


CRISIS_PRIORITIES = (Priority.EMERGENCY, Priority.URGENT, Priority.VERY_URGENT)
CRISIS_KINDS = ("very_urgent", "urgent", "ae_liaison", "emergency")


def crisis_kind(priority: int, source: str) -> str:
    """Which crisis response a referral is counted under: A&E liaison, else its priority's."""
    if source == AE_SOURCE:
        return "ae_liaison"
    return Priority(priority or Priority.URGENT).name.lower()


class _CrisisCounts:
    """A group's crisis referrals by kind, those seen within their target, and the response
    minutes as a histogram (minutes -> referrals) for the median."""

    def __init__(self) -> None:
        self.referrals = 0
        self.counts = dict.fromkeys(CRISIS_KINDS, 0)
        self.met = dict.fromkeys(CRISIS_KINDS, 0)
        self.minutes: dict[int, int] = defaultdict(int)

    def add(self, kind: str, target: int | None, minutes: int | None, n: int) -> None:
        """`n` referrals of one kind and target (`crisis_kind`, `crisis_target_minutes`)."""
        self.referrals += n
        if kind in self.counts:
            self.counts[kind] += n
            if minutes is not None and target is not None and minutes <= target:
                self.met[kind] += n
        if minutes is not None:
            self.minutes[minutes] += n

    def merge(self, other: _CrisisCounts) -> None:
        self.referrals += other.referrals
        for kind in CRISIS_KINDS:
            self.counts[kind] += other.counts[kind]
            self.met[kind] += other.met[kind]
        for minutes, n in other.minutes.items():
            self.minutes[minutes] += n

    def figures(self) -> dict[str, Any]:
        row: dict[str, Any] = {"crisis_referrals": self.referrals}
        for kind in CRISIS_KINDS:
            row[f"{kind}_count"] = self.counts[kind]
            row[f"{kind}_met"] = self.met[kind]
        row["responded"] = sum(self.minutes.values())
        row["median_minutes"] = median_of_counts(self.minutes)
        return row


async def crisis_response(
    session: AsyncSession, period: Period, group_by: tuple[str, ...]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Crisis referrals received in the period, in one statement grouped by category and response
    minutes, counting each (priority, from A&E or not) apart: the targets and kinds are then the
    pure rules' (`crisis_kind`, `crisis_target_minutes`), worked out once per bucket."""
    ae = ReferralFact.source == AE_SOURCE
    not_ae = ReferralFact.source.is_distinct_from(AE_SOURCE)
    buckets = [(int(p), source) for p in CRISIS_PRIORITIES for source in (AE_SOURCE, "")]
    rules = [(crisis_kind(p, source), crisis_target_minutes(p or 2, source)) for p, source in buckets]
    figures = [
        ReferralFact.response_minutes,
        *(func.count().filter(ReferralFact.priority == p, ae if source else not_ae) for p, source in buckets),
    ]
    statement = _grouped_statement(
        ReferralFact, ReferralFact.received_at, REFERRAL_COLUMNS, period, group_by, figures
    ).where(ReferralFact.priority.in_([int(p) for p in CRISIS_PRIORITIES]))
    statement = statement.group_by(ReferralFact.response_minutes)
    width = len(group_by)
    groups: dict[tuple[Any, ...], _CrisisCounts] = defaultdict(_CrisisCounts)
    for row in await session.execute(statement):
        counts = groups[_label(row[:width])]
        minutes = row[width]
        for (kind, target), n in zip(rules, row[width + 1 :], strict=True):
            if n:
                counts.add(kind, target, minutes, n)
    total = _CrisisCounts()
    for counts in groups.values():
        total.merge(counts)
    return _sorted_rows(groups, group_by, _CrisisCounts.figures), total.figures()


# An episode's own place, network, team and pathway; its referral's other categories.
EPISODE_CATEGORIES: dict[str, InstrumentedAttribute[Any]] = {
    **REFERRAL_COLUMNS,
    "place": EpisodeFact.place,
    "network": EpisodeFact.network,
    "team": EpisodeFact.team,
    "pathway": EpisodeFact.pathway,
}


async def reaccess(
    session: AsyncSession, period: Period, group_by: tuple[str, ...]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    figures = [func.count(), func.count().filter(EpisodeFact.reaccess)]
    statement = _grouped_statement(
        EpisodeFact, EpisodeFact.referral_received_at, EPISODE_CATEGORIES, period, group_by, figures
    )
    return await _counted(session, statement, group_by, ("episodes", "reaccess"))


async def handovers(
    session: AsyncSession, period: Period, group_by: tuple[str, ...]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    figures = [
        func.count(),
        func.count(HandoverFact.accepted_at),
        func.count(HandoverFact.completed_at),
        func.count(HandoverFact.declined_at),
    ]
    statement = _grouped_statement(
        HandoverFact, HandoverFact.offered_at, REFERRAL_COLUMNS, period, group_by, figures
    )
    return await _counted(session, statement, group_by, ("offered", "accepted", "completed", "declined"))


async def inequalities(
    session: AsyncSession, period: Period, group_by: tuple[str, ...], now: datetime
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each group's share of referrals and its plan-clock performance beside the whole's."""
    received = _grouped_statement(
        ReferralFact, ReferralFact.received_at, REFERRAL_COLUMNS, period, group_by, [func.count()]
    )
    referral_rows, referral_total = await _counted(session, received, group_by, ("received",))
    wait_rows, wait_total = await _clock_pull(session, period, group_by, now, CLOCKS[:1])
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
