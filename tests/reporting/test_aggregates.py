"""The four-week pull on SQLite and PostgreSQL against a per-episode reference: every count, median
and 90th percentile, by group and in total, for clocks in every state (stopped within and past
the target, open and at risk or breached by now or at discharge, never started), and the period
index and day statistics of migration 0005."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.dialects import postgresql, sqlite

from cmh.migrations import migrate
from contracts.clocks import AT_RISK_DAY, TARGET_DAYS
from contracts.timezones import london_date
from services.reporting import aggregates
from services.reporting.domain import Period, median, parse_period, percentile
from services.reporting.models import EpisodeFact
from shared.db import Database
from shared.settings import Settings

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
TODAY = london_date(NOW).toordinal()
QUARTER = parse_period("2026-Q3", None, None)
PLACES = ["blackpool", "lancashire", None]


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


def _episodes(count: int) -> list[EpisodeFact]:
    rng = random.Random(11)
    facts = []
    for index in range(count):
        # Some just outside the quarter on either side, so the period bounds are exercised.
        received = datetime(2026, 6, 25, tzinfo=UTC) + timedelta(hours=rng.randrange(0, 24 * 105))
        first = received.date().toordinal()
        plan_start = first + rng.randint(0, 10) if rng.random() < 0.85 else None
        plan_stop = plan_start + rng.randint(0, 40) if plan_start and rng.random() < 0.6 else None
        national_stop = first + rng.randint(-3, 45) if rng.random() < 0.5 else None
        discharged = first + rng.randint(5, 60) if rng.random() < 0.3 else None
        place = rng.choice(PLACES)
        facts.append(
            EpisodeFact(
                episode_id=f"e{index}", referral_id=f"r{index}", person_key=f"k{index}", place=place,
                network=f"net-{place}" if place else None, team=f"team-{index % 3}", pathway="adult-mh",
                age_at_referral=30, ethnicity=rng.choice(["White", "Mixed", None]), priority=rng.choice([2, 3]),
                reaccess=False, opened_at=received, referral_received_at=received, spell_started_at=received,
                plan_start_day=plan_start, plan_stop_day=plan_stop, national_start_day=first,
                national_stop_day=national_stop, discharged_day=discharged, updated_at=received,
            )
        )  # fmt: skip
    return facts


def _reference(facts: list[EpisodeFact], period: Period, group_by: tuple[str, ...]) -> tuple[list[Any], Any]:
    """The figures episode by episode, as the clock rules state them."""
    start = datetime.combine(period.start, datetime.min.time(), UTC)
    end = datetime.combine(period.end, datetime.min.time(), UTC)
    cohort = [f for f in facts if start <= f.referral_received_at < end]

    def figures(members: list[EpisodeFact]) -> dict[str, Any]:
        row: dict[str, Any] = {"episodes": len(members)}
        days: dict[str, list[int]] = {}
        for prefix in ("plan", "national"):
            started = stopped = met = breached = at_risk = running = 0
            taken = []
            for fact in members:
                first, stop = getattr(fact, f"{prefix}_start_day"), getattr(fact, f"{prefix}_stop_day")
                if stop is not None:
                    stopped += 1
                if first is None:
                    continue
                started += 1
                if stop is not None:
                    taken.append(stop - first)
                    met, breached = (
                        met + (stop - first <= TARGET_DAYS),
                        breached + (stop - first > TARGET_DAYS),
                    )
                    continue
                running += 1
                waited = (fact.discharged_day or TODAY) - first
                breached += waited > TARGET_DAYS
                at_risk += prefix == "plan" and AT_RISK_DAY <= waited <= TARGET_DAYS
            days[prefix] = taken
            row.update({f"{prefix}_started": started, f"{prefix}_met": met, f"{prefix}_breached": breached,
                        f"{prefix}_stopped": stopped, f"{prefix}_open_at_risk": at_risk, f"{prefix}_open": running})  # fmt: skip
        for prefix in ("plan", "national"):
            row[f"{prefix}_median_days"] = median(days[prefix])
            row[f"{prefix}_p90_days"] = percentile(days[prefix], 90)
        for prefix in ("plan", "national"):
            row[f"{prefix}_decided"] = row[f"{prefix}_met"] + row[f"{prefix}_breached"]
        return row

    groups: dict[tuple[Any, ...], list[EpisodeFact]] = defaultdict(list)
    for fact in cohort:
        groups[tuple(getattr(fact, field) for field in group_by)].append(fact)
    if not group_by:
        groups.setdefault((), [])  # an ungrouped pull is one row, even of nothing
    rows = [
        {**{f: v if v is not None else "unknown" for f, v in zip(group_by, key, strict=True)}, **figures(m)}
        for key, m in groups.items()
    ]
    rows.sort(key=lambda r: tuple(str(r[f]) for f in group_by))
    return rows, figures(cohort)


@pytest.mark.parametrize("group_by", [(), ("place",), ("ethnicity", "priority"), ("team", "network")])
async def test_four_week_waits_equal_the_per_episode_rules(db: Database, group_by: tuple[str, ...]) -> None:
    facts = _episodes(400)
    async with db.transaction() as session:
        session.add_all(facts)
    for period in (QUARTER, parse_period("2026-09", None, None), parse_period("2025-01", None, None)):
        async with db.session() as session:
            rows, total = await aggregates.four_week_waits(session, period, group_by, NOW)
        expected_rows, expected_total = _reference(facts, period, group_by)
        assert rows == expected_rows and total == expected_total
        # Same field order too: the CSV's columns follow it.
        assert [list(row) for row in rows] == [list(row) for row in expected_rows]
        assert list(total) == list(expected_total)
    assert sum(row["episodes"] for row in _reference(facts, QUARTER, ())[0]) > 300


def test_the_period_is_written_into_the_statement() -> None:
    # A bound period would let a reused prepared statement plan for a guessed share of episodes.
    statement = aggregates.clock_statement(QUARTER, ("place",), "plan", NOW, warn=True)
    for dialect, written in (
        (postgresql.dialect(), "2026-07-01 00:00:00+00:00"),
        (sqlite.dialect(), "2026-07-01 00:00:00.000000"),
    ):
        compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
        assert f"referral_received_at >= '{written}'" in str(compiled)


async def test_migration_indexes_the_period_and_counts_the_days(db: Database) -> None:
    async with db.engine.connect() as connection:
        indexes = await connection.run_sync(lambda sync: inspect(sync).get_indexes("reporting_episodes"))
        columns = {index["name"]: index["column_names"] for index in indexes}
        assert columns["ix_reporting_episodes_referral_received_at"] == ["referral_received_at"]
        if db.dialect == "postgresql":
            names = (
                await connection.execute(
                    text(
                        "SELECT stxname FROM pg_statistic_ext WHERE stxnamespace::regnamespace::text = current_schema()"
                    )
                )
            ).scalars()
            assert {"stx_reporting_episodes_national_days", "stx_reporting_episodes_plan_days"} <= set(names)
