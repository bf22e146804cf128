"""A grouped four-week pull over 1,000,000 synthetic episodes on PostgreSQL, beside the same
query in raw SQL.

    .venv/bin/python -m bench.reporting_pull --postgres URL [--episodes 1000000] [--schema NAME]

Loads pseudonymised episode and referral projections with COPY into a fresh schema, then times
`aggregates.four_week_waits` (what `GET /reporting/four-week-waits` runs, minus HTTP) grouped by
place and by ethnicity over five years, and the compiled SQL run directly through asyncpg.
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


def rows(count: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    rng = random.Random(3)
    episodes, referrals = [], []
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
        referrals.append(
            (
                rid,
                f"k{index % 400000:031d}",
                received,
                "gp",
                3,
                place,
                ethnicity,
                "female",
                "18-25",
                "routed",
                False,
                now,
            )
        )
    return episodes, referrals


async def load(url: str, schema: str, count: int) -> float:
    await migrate("reporting", url, schema=schema)
    episodes, referrals = rows(count)
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
                     "status", "crisis", "updated_at"],
        )  # fmt: skip
        for table in ("reporting_episodes", "reporting_referrals"):
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
            driver = raw_connection.driver_connection
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
