"""Every measure grouped in SQL equals the Python aggregation it replaced (kept here as the
oracle: ORM rows loaded and counted one by one), on SQLite and PostgreSQL, for seeded random
projections with missing and empty categories, orphaned episodes and handovers, every priority,
source and route, by every kind of grouping and for empty periods."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cmh.migrations import migrate
from contracts.clocks import crisis_target_minutes
from contracts.vocabulary import Priority
from services.reporting import aggregates
from services.reporting.domain import Period, median, parse_period
from services.reporting.models import EpisodeFact, HandoverFact, ReferralFact
from shared.db import Database
from shared.settings import Settings

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
PERIODS = [
    parse_period("2026-Q3", None, None),
    parse_period("2026-08", None, None),
    parse_period("2025-01", None, None),
]
GROUPINGS: list[tuple[str, ...]] = [
    (),
    ("place",),
    ("ethnicity",),
    ("priority", "source"),
    ("team", "age_band"),
    ("network", "pathway", "sex"),
]


# --- the Python aggregation the SQL replaced, verbatim in what it counts -------------------------


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


def _rows(
    pairs: Iterable[tuple[dict[str, Any], Any]],
    group_by: tuple[str, ...],
    measure: Callable[[list[Any]], dict[str, Any]],
) -> list[dict[str, Any]]:
    groups: dict[tuple[Any, ...], list[Any]] = defaultdict(list)
    for categories, row in pairs:
        groups[_key(categories, group_by)].append(row)
    return [
        {**dict(zip(group_by, key, strict=True)), **measure(members)}
        for key, members in sorted(groups.items(), key=lambda item: tuple(str(v) for v in item[0]))
    ]


async def oracle_referrals(
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
        for route in aggregates.ROUTES:
            row[f"route_{route}"] = sum(1 for m in members if m.route == route)
        row["awaiting_decision"] = sum(1 for m in members if m.status == "received")
        return row

    return _rows(((_referral_categories(f), f) for f in facts), group_by, measure), measure(list(facts))


async def oracle_crisis_response(
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

    return _rows(((_referral_categories(f), f) for f in facts), group_by, measure), measure(list(facts))


async def oracle_reaccess(
    session: AsyncSession, period: Period, group_by: tuple[str, ...]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    start, end = _bounds(period)
    pairs = (
        await session.execute(
            select(EpisodeFact, ReferralFact)
            .join(ReferralFact, ReferralFact.referral_id == EpisodeFact.referral_id, isouter=True)
            .where(EpisodeFact.referral_received_at >= start, EpisodeFact.referral_received_at < end)
        )
    ).all()

    def categories(episode: EpisodeFact, referral: ReferralFact | None) -> dict[str, Any]:
        return {
            **(_referral_categories(referral) if referral else {}),
            "place": episode.place, "network": episode.network, "team": episode.team, "pathway": episode.pathway,
        }  # fmt: skip

    def measure(members: list[EpisodeFact]) -> dict[str, Any]:
        return {"episodes": len(members), "reaccess": sum(1 for m in members if m.reaccess)}

    return _rows(((categories(e, r), e) for e, r in pairs), group_by, measure), measure([e for e, _ in pairs])


async def oracle_handovers(
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

    pairs = ((_referral_categories(r) if r else {}, h) for h, r in rows)
    return _rows(pairs, group_by, measure), measure([h for h, _ in rows])


async def oracle_inequalities(
    session: AsyncSession, period: Period, group_by: tuple[str, ...], now: datetime
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    referral_rows, referral_total = await oracle_referrals(session, period, group_by)
    # The four-week pull was already grouped in SQL (its own per-episode test is test_aggregates).
    wait_rows, wait_total = await aggregates.four_week_waits(session, period, group_by, now)
    waits = {tuple(row.get(f) for f in group_by): row for row in wait_rows}
    rows = []
    for row in referral_rows:
        wait = waits.get(tuple(row.get(f) for f in group_by), {})
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


ORACLES: dict[str, Callable[..., Any]] = {
    "referrals": oracle_referrals,
    "crisis-response": oracle_crisis_response,
    "reaccess": oracle_reaccess,
    "handovers": oracle_handovers,
    "inequalities": oracle_inequalities,
}


# --- generated projections -------------------------------------------------------------------


def _facts(count: int, seed: int) -> list[Any]:
    rng = random.Random(seed)

    def maybe(*values: Any) -> Any:
        return rng.choice([*values, None, None])

    facts: list[Any] = []
    for index in range(count):
        # Around the quarter and beyond it on either side, so the period bounds are exercised.
        received = datetime(2026, 6, 20, tzinfo=UTC) + timedelta(minutes=rng.randrange(0, 60 * 24 * 110))
        place = maybe("blackpool", "lancashire", "")
        day = received.date().toordinal()
        plan_start = day + rng.randint(0, 10) if rng.random() < 0.8 else None
        rid = f"r{index}"
        if rng.random() < 0.9:  # some episodes and handovers have no projected referral
            facts.append(
                ReferralFact(
                    referral_id=rid, person_key=f"k{index % 50}", received_at=received, source=maybe("gp", "self", "ae"),
                    priority=rng.choice([1, 2, 3, 4, None]), route=maybe(*aggregates.ROUTES),
                    status=rng.choice(["received", "routed", "closed"]), place=maybe("blackpool", "lancashire"),
                    network=maybe("net-a", "net-b"), team=maybe("team-1", "team-2"), pathway=maybe("adult-mh"),
                    age_band=maybe("18-25", "26-64", ""), sex=maybe("female", "male"), ethnicity=maybe("White", "Mixed", ""),
                    crisis=False, response_minutes=rng.choice([None, rng.randrange(0, 30), rng.randrange(0, 2000)]),
                    updated_at=received,
                )
            )  # fmt: skip
        if rng.random() < 0.7:
            facts.append(
                EpisodeFact(
                    episode_id=f"e{index}", referral_id=rid, person_key=f"k{index % 50}", place=place,
                    network=maybe("net-a", "net-b"), team=maybe("team-1", "team-3"), pathway=maybe("adult-mh"),
                    age_at_referral=30, age_band=maybe("18-25"), sex=maybe("female"), ethnicity=maybe("White"),
                    source=maybe("gp"), priority=maybe(2, 3), reaccess=rng.random() < 0.3, opened_at=received,
                    referral_received_at=received, spell_started_at=received, plan_start_day=plan_start,
                    plan_stop_day=plan_start + rng.randint(0, 40) if plan_start and rng.random() < 0.6 else None,
                    national_start_day=day, national_stop_day=day + rng.randint(0, 40) if rng.random() < 0.5 else None,
                    discharged_day=day + rng.randint(5, 60) if rng.random() < 0.2 else None, updated_at=received,
                )
            )  # fmt: skip
        if rng.random() < 0.4:
            offered = received + timedelta(hours=rng.randrange(0, 24 * 5))
            facts.append(
                HandoverFact(
                    handover_id=f"h{index}", referral_id=rid if rng.random() < 0.9 else f"gone{index}",
                    person_key=f"k{index % 50}", service_id="svc", state="offered", offered_at=offered,
                    accepted_at=offered if rng.random() < 0.6 else None,
                    completed_at=offered if rng.random() < 0.3 else None,
                    declined_at=offered if rng.random() < 0.2 else None, updated_at=offered,
                )
            )  # fmt: skip
    return facts


@pytest.fixture
async def db(database_settings: dict[str, object]) -> AsyncIterator[Database]:
    settings = Settings(**database_settings)  # type: ignore[arg-type]
    url, schema = settings.database_url_for("reporting"), settings.database_schema_for("reporting")
    await migrate("reporting", url, schema=schema)
    database = Database(url, schema=schema)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.mark.parametrize("seed", [1, 2])
async def test_every_measure_grouped_in_sql_equals_the_python_aggregation(db: Database, seed: int) -> None:
    async with db.transaction() as session:
        session.add_all(_facts(500, seed))
    for name, oracle in ORACLES.items():
        measure = aggregates.MEASURES[name]
        for period in PERIODS:
            for group_by in GROUPINGS:
                args: list[Any] = [period, group_by] + ([NOW] if measure.needs_now else [])
                async with db.session() as session:
                    rows, total = await measure.compute(session, *args)
                async with db.session() as session:
                    expected_rows, expected_total = await oracle(session, *args)
                where = (name, str(period.start), group_by)
                assert rows == expected_rows, where
                assert total == expected_total, where
                # The same field order and value types too: the CSV's columns and JSON follow them.
                assert [list(row.items()) for row in rows] == [list(row.items()) for row in expected_rows], (
                    where
                )
                types = [[type(v) for v in row.values()] for row in [*rows, total]]
                assert types == [
                    [type(v) for v in row.values()] for row in [*expected_rows, expected_total]
                ], where
                if period is PERIODS[0] and not group_by:
                    assert next(iter(total.values())) > 20, where  # the quarter is not empty
