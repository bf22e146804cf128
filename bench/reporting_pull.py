"""Every reporting measure over 1,000,000 synthetic episodes on PostgreSQL, each beside raw SQL.

    .venv/bin/python -m bench.reporting_pull --postgres URL [--episodes 1000000] [--schema NAME]

Loads pseudonymised episode, referral and handover projections with COPY into a fresh schema,
then times `aggregates.four_week_waits` (what `GET /reporting/four-week-waits` runs, minus HTTP)
grouped by place and by ethnicity over five years, and the compiled SQL run directly through
asyncpg; and every other measure's aggregate (`measure_every`) grouped by place beside a
hand-written PostgreSQL statement computing the same figures, checked to agree.
With `--schema NAME` the data stays in that schema and a later run reuses it (migrated to head,
not reloaded), to time a change without the load; drop it with `DROP SCHEMA NAME CASCADE`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from cmh.migrations import migrate
from contracts.clocks import AE_LIAISON_MINUTES, AE_SOURCE, TARGET_DAYS, TARGET_MINUTES
from contracts.timezones import london_date
from contracts.vocabulary import Priority
from services.reporting import aggregates
from services.reporting.domain import parse_period
from shared.db import Database

PLACES = ["blackburn-with-darwen", "blackpool", "lancashire", "south-cumbria"]
ETHNICITY = [
    "White",
    "Asian or Asian British",
    "Black or Black British",
    "Mixed",
    "Other ethnic group",
    "Not known",
]
START = datetime(2021, 12, 1, tzinfo=UTC)
SOURCES = ["gp"] * 6 + ["self"] * 3 + [AE_SOURCE]
PRIORITIES = (
    [Priority.ROUTINE] * 13 + [Priority.URGENT] * 4 + [Priority.VERY_URGENT] * 2 + [Priority.EMERGENCY]
)
ROUTES: list[str | None] = [*aggregates.ROUTES, None]


def rows(count: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    rng = random.Random(3)
    # The referrals' own figures (priority, source, route, response) and the handovers come from a
    # second generator, so the episodes are the same as before they were added.
    more = random.Random(5)
    episodes, referrals, handovers = [], [], []
    now = datetime.now(UTC)
    for index in range(count):
        received = START + timedelta(minutes=rng.randrange(0, 5 * 365 * 24 * 60 - 60 * 24 * 90))
        rid = f"r{index:09d}"
        start_day = (received + timedelta(days=rng.randint(1, 20))).date().toordinal()
        stop_day = start_day + rng.randint(0, 45) if rng.random() < 0.9 else None
        nat_stop = start_day + rng.randint(-5, 40) if rng.random() < 0.8 else None
        place = rng.choice(PLACES)
        ethnicity = rng.choice(ETHNICITY)
        episodes.append(
            (f"e{index:09d}", rid, f"k{index % 400000:031d}", place, f"net-{place}", f"team-{rng.randrange(45)}", "adult-mh",
             rng.randint(18, 90), ethnicity, "female", "18-25", "gp", 3, rng.random() < 0.05, received, received, received, start_day, stop_day,
             received.date().toordinal(), nat_stop, None, now)
        )  # fmt: skip
        priority = int(more.choice(PRIORITIES))
        crisis = priority != Priority.ROUTINE
        minutes = more.randrange(0, 2000) if crisis and more.random() < 0.85 else None
        referrals.append(
            (rid, f"k{index % 400000:031d}", received, more.choice(SOURCES), priority, place, ethnicity, "female",
             "18-25", "received" if more.random() < 0.1 else "routed", more.choice(ROUTES), crisis, minutes, now)
        )  # fmt: skip
        if index % 8 == 0:
            offered = received + timedelta(days=1)
            accepted = offered + timedelta(days=1) if more.random() < 0.7 else None
            completed = accepted + timedelta(days=3) if accepted and more.random() < 0.6 else None
            declined = offered + timedelta(days=1) if accepted is None and more.random() < 0.7 else None
            handovers.append(
                (f"h{index:09d}", rid, f"k{index % 400000:031d}", f"svc-{more.randrange(500)}", "offered", offered,
                 accepted, completed, declined, 0, now)
            )  # fmt: skip
    return episodes, referrals, handovers


async def load(url: str, schema: str, count: int) -> float:
    await migrate("reporting", url, schema=schema)
    episodes, referrals, handovers = rows(count)
    started = time.perf_counter()
    connection = await asyncpg.connect(plain(url), server_settings={"search_path": schema})
    try:
        await connection.copy_records_to_table(
            "reporting_episodes", records=episodes,
            columns=["episode_id", "referral_id", "person_key", "place", "network", "team", "pathway", "age_at_referral",
                     "ethnicity", "sex", "age_band", "source", "priority",
                     "reaccess", "opened_at", "referral_received_at", "spell_started_at", "plan_start_day", "plan_stop_day",
                     "national_start_day", "national_stop_day", "discharged_day", "updated_at"],
        )  # fmt: skip
        await connection.copy_records_to_table(
            "reporting_referrals", records=referrals,
            columns=["referral_id", "person_key", "received_at", "source", "priority", "place", "ethnicity", "sex", "age_band",
                     "status", "route", "crisis", "response_minutes", "updated_at"],
        )  # fmt: skip
        await connection.copy_records_to_table(
            "reporting_handovers", records=handovers,
            columns=["handover_id", "referral_id", "person_key", "service_id", "state", "offered_at", "accepted_at",
                     "completed_at", "declined_at", "version", "updated_at"],
        )  # fmt: skip
        for table in ("reporting_episodes", "reporting_referrals", "reporting_handovers"):
            await connection.execute(f"ANALYZE {table}")
    finally:
        await connection.close()
    return time.perf_counter() - started


async def measure(url: str, schema: str, group_by: tuple[str, ...], rounds: int) -> dict[str, float]:
    db = Database(url, schema=schema)
    period = parse_period(None, date(2021, 12, 1), date(2026, 11, 24))
    now = datetime(2026, 11, 25, 12, tzinfo=UTC)
    api, raw = [], []
    try:
        for _ in range(rounds):
            async with db.session() as session:
                began = time.perf_counter()
                result, _total = await aggregates.four_week_waits(session, period, group_by, now)
                api.append((time.perf_counter() - began) * 1000)
        # The same statements (one per clock: counts and day histogram), compiled once and run as
        # raw SQL through the driver: the floor for this pull.
        statements = [
            aggregates.clock_statement(period, group_by, prefix, now, warn=warn)
            for prefix, warn in aggregates.CLOCKS
        ]
        compiled = [
            str(s.compile(dialect=db.engine.dialect, compile_kwargs={"literal_binds": True}))
            for s in statements
        ]
        async with db.engine.connect() as connection:
            raw_connection = await connection.get_raw_connection()
            driver: Any = raw_connection.driver_connection  # asyncpg's connection
            for _ in range(rounds):
                began = time.perf_counter()
                for sql in compiled:
                    await driver.fetch(sql)
                raw.append((time.perf_counter() - began) * 1000)
    finally:
        await db.dispose()
    return {
        "groups": len(result),
        "pull_median_ms": round(statistics.median(api), 1),
        "pull_max_ms": round(max(api), 1),
        "raw_sql_median_ms": round(statistics.median(raw), 1),
        "ratio": round(statistics.median(api) / statistics.median(raw), 2),
    }


EPISODE_FIELDS = ("place", "network", "team", "pathway")  # the episode's own; the rest are the referral's


def raw_statements(group: str, lo: str, hi: str, today: int) -> dict[str, str]:
    """Each measure's figures by one category, written by hand for PostgreSQL: what a reporting
    analyst would type, the floor the in-process aggregate is compared with. Only our own column
    names and constants are written into them."""

    def between(column: str) -> str:
        return f"{column} >= '{lo}'::timestamptz AND {column} < '{hi}'::timestamptz"

    routes = ", ".join(f"count(*) FILTER (WHERE r.route = '{x}') AS route_{x}" for x in aggregates.ROUTES)
    not_ae = f"r.source IS DISTINCT FROM '{AE_SOURCE}'"
    kinds = {
        "very_urgent": (
            f"{not_ae} AND r.priority = {Priority.VERY_URGENT:d}",
            TARGET_MINUTES[Priority.VERY_URGENT],
        ),
        "urgent": (f"{not_ae} AND r.priority = {Priority.URGENT:d}", TARGET_MINUTES[Priority.URGENT]),
        "ae_liaison": (f"r.source = '{AE_SOURCE}'", AE_LIAISON_MINUTES),  # liaison's hour is the strictest
        "emergency": (
            f"{not_ae} AND r.priority = {Priority.EMERGENCY:d}",
            TARGET_MINUTES[Priority.EMERGENCY],
        ),
    }
    crisis = ", ".join(
        f"count(*) FILTER (WHERE {where}) AS {name}_count, "
        f"count(*) FILTER (WHERE {where} AND r.response_minutes <= {target}) AS {name}_met"
        for name, (where, target) in kinds.items()
    )
    # Re-access counts an episode under its own place, network, team and pathway and its referral's
    # other categories; the clocks (four-week waits, inequalities) under the copies on the episode.
    on_episode = f"e.{group}" if group in EPISODE_FIELDS else f"r.{group}"
    episodes = "reporting_episodes e" + (
        "" if group in EPISODE_FIELDS else " LEFT JOIN reporting_referrals r USING (referral_id)"
    )
    stop, start, days = "e.plan_stop_day", "e.plan_start_day", "e.plan_stop_day - e.plan_start_day"
    waited = f"coalesce(e.discharged_day, {today}) - {start}"
    return {
        "referrals": f"SELECT r.{group}, count(*) AS received, {routes}, "  # noqa: S608 - our names
        f"count(*) FILTER (WHERE r.status = 'received') AS awaiting_decision "
        f"FROM reporting_referrals r WHERE {between('r.received_at')} GROUP BY r.{group}",
        "crisis-response": f"SELECT r.{group}, count(*) AS crisis_referrals, {crisis}, "  # noqa: S608 - our names
        f"count(r.response_minutes) AS responded, "
        f"percentile_cont(0.5) WITHIN GROUP (ORDER BY r.response_minutes) AS median_minutes "
        f"FROM reporting_referrals r WHERE {between('r.received_at')} AND r.priority IN (1, 2, 4) "
        f"GROUP BY r.{group}",
        "reaccess": f"SELECT {on_episode}, count(*) AS episodes, "  # noqa: S608 - our names
        f"count(*) FILTER (WHERE e.reaccess) AS reaccess "
        f"FROM {episodes} WHERE {between('e.referral_received_at')} GROUP BY {on_episode}",
        "handovers": f"SELECT r.{group}, count(*) AS offered, count(h.accepted_at) AS accepted, "  # noqa: S608 - our names
        f"count(h.completed_at) AS completed, count(h.declined_at) AS declined "
        f"FROM reporting_handovers h LEFT JOIN reporting_referrals r USING (referral_id) "
        f"WHERE {between('h.offered_at')} GROUP BY r.{group}",
        "inequalities": f"WITH counted AS (SELECT r.{group} AS g, count(*) AS received "  # noqa: S608 - our names
        f"FROM reporting_referrals r WHERE {between('r.received_at')} GROUP BY r.{group}), "
        f"clocks AS (SELECT e.{group} AS g, count(*) FILTER (WHERE {days} <= {TARGET_DAYS}) AS met, "
        f"count(*) FILTER (WHERE {days} > {TARGET_DAYS} OR ({stop} IS NULL AND {waited} > {TARGET_DAYS})) "
        f"AS breached FROM reporting_episodes e WHERE {between('e.referral_received_at')} GROUP BY e.{group}) "
        f"SELECT counted.g AS {group}, counted.received, coalesce(clocks.met, 0) AS plan_met, "
        f"coalesce(clocks.met, 0) + coalesce(clocks.breached, 0) AS plan_stopped "
        f"FROM counted LEFT JOIN clocks USING (g)",
    }


def _agrees(group: str, rows: list[dict[str, Any]], raw: list[Any]) -> bool:
    """Whether the hand-written statement's figures are the aggregate's, group by group."""
    by_group = {row[group]: row for row in rows}
    if len(by_group) != len(raw):
        return False
    for record in raw:
        row = by_group.get(record[group] if record[group] is not None else "unknown", {})
        if any(row.get(name) != value for name, value in record.items() if name != group):
            return False
    return True


async def measure_every(url: str, schema: str, group_by: tuple[str, ...], rounds: int) -> dict[str, Any]:
    """Every measure but the four-week waits (`measure`) in process, the real aggregate function,
    beside its hand-written statement (`raw_statements`) over the same data: medians and ratio."""
    (group,) = group_by
    db = Database(url, schema=schema)
    period = parse_period(None, date(2021, 12, 1), date(2026, 11, 24))
    now = datetime(2026, 11, 25, 12, tzinfo=UTC)
    lo, hi = (
        datetime.combine(day, datetime.min.time(), UTC).isoformat() for day in (period.start, period.end)
    )
    statements = raw_statements(group, lo, hi, london_date(now).toordinal())
    results: dict[str, Any] = {}
    try:
        for name, sql in statements.items():
            spec = aggregates.MEASURES[name]
            wall, cpu, raw = [], [], []
            async with db.engine.connect() as connection:
                driver: Any = (await connection.get_raw_connection()).driver_connection  # asyncpg's
                # Alternated round by round, so a neighbour's burst of load falls on both sides.
                for _ in range(rounds):
                    async with db.session() as session:
                        args: list[Any] = [session, period, group_by] + ([now] if spec.needs_now else [])
                        began, began_cpu = time.perf_counter(), time.process_time()
                        pulled, _total = await spec.compute(*args)
                        wall.append((time.perf_counter() - began) * 1000)
                        cpu.append((time.process_time() - began_cpu) * 1000)
                    began = time.perf_counter()
                    records = await driver.fetch(sql)
                    raw.append((time.perf_counter() - began) * 1000)
            results[name] = {
                "groups": len(pulled),
                "agrees_with_raw_sql": _agrees(group, pulled, [dict(r) for r in records]),
                "pull_median_ms": round(statistics.median(wall), 1),
                "pull_cpu_median_ms": round(statistics.median(cpu), 1),
                "raw_sql_median_ms": round(statistics.median(raw), 1),
                "ratio": round(statistics.median(wall) / statistics.median(raw), 2),
            }
    finally:
        await db.dispose()
    return results


async def loaded_episodes(url: str, schema: str) -> int:
    """Episodes already in a kept schema (0 when it is new), after migrating it to head."""
    await migrate("reporting", url, schema=schema)
    connection = await asyncpg.connect(plain(url), server_settings={"search_path": schema})
    try:
        return int(await connection.fetchval("SELECT count(*) FROM reporting_episodes"))
    finally:
        await connection.close()


def plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def main_async(url: str, count: int, rounds: int, keep: str | None = None) -> dict[str, Any]:
    schema = keep or f"bench_reporting_{int(time.time())}"
    try:
        present = await loaded_episodes(url, schema) if keep else 0
        if present not in (0, count):
            raise SystemExit(f"schema {schema} holds {present} episodes, not {count}: drop it first")
        loaded = await load(url, schema, count) if present == 0 else None
        return {
            "episodes": count,
            "load_seconds": round(loaded, 1) if loaded is not None else "reused",
            "by_place": await measure(url, schema, ("place",), rounds),
            "by_ethnicity": await measure(url, schema, ("ethnicity",), rounds),
            "every_measure_by_place": await measure_every(url, schema, ("place",), rounds),
            # The referral's category: re-access and handovers join the referral for it.
            "every_measure_by_ethnicity": await measure_every(url, schema, ("ethnicity",), rounds),
        }
    finally:
        if keep is None:
            connection = await asyncpg.connect(plain(url))
            await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", required=True)
    parser.add_argument("--episodes", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--schema", help="load into this schema and keep it; reuse it when already loaded")
    args = parser.parse_args()
    result = asyncio.run(main_async(args.postgres, args.episodes, args.rounds, args.schema))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
