"""Directory search over 50,000 services, in process, on SQLite and PostgreSQL.

    .venv/bin/python -m bench.directory_search [--services 50000] [--postgres URL] [--queries 400]
        [--sqlite-file PATH] [--schema NAME] [--skip-sqlite]

`--sqlite-file` and `--schema` keep the loaded database (an SQLite file; a PostgreSQL schema that
is then not dropped) and reuse it on the next run when it already holds the services: loading
50,000 services takes minutes, measuring seconds.

Loads a synthetic directory through the real publish path (`store.publish`, batched per
transaction), then times the read handlers' queries (`queries.services` and
`queries.service_at_locations`) for a mix of searches, filters and proximity, reporting p50/p99 in
milliseconds. Not part of `make test`; figures go in the issue note and docs/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from cmh.migrations import migrate
from services.directory import queries, store
from services.directory.domain import PlanarFrame
from services.directory.schemas import ServiceProposal
from services.directory.seed import needs_taxonomy
from shared.db import Database

WORDS = [
    "peer",
    "support",
    "group",
    "housing",
    "advice",
    "debt",
    "money",
    "carers",
    "cafe",
    "crisis",
    "walking",
    "football",
    "art",
    "music",
    "bereavement",
    "counselling",
    "women",
    "men",
    "young",
    "older",
    "lgbtq",
    "recovery",
    "alcohol",
    "drugs",
    "food",
    "bank",
    "digital",
    "skills",
    "employment",
    "volunteering",
    "garden",
    "cooking",
    "faith",
    "mosque",
    "church",
    "temple",
    "community",
    "hub",
    "drop-in",
]
TOWNS = [
    (53.7447, -2.4950),
    (53.7605, -2.7011),
    (53.8153, -3.0470),
    (54.3262, -2.7455),
    (54.0466, -2.8007),
    (53.8175, -2.2184),
]


# Descriptions mix a long tail of ordinary words (Zipf-like over 5,000 tokens) with a few
# domain words, as real service descriptions do; names are made of domain words.
FILLER = [f"w{n}" for n in range(5000)]
FILLER_WEIGHTS = [1 / (rank + 1) for rank in range(len(FILLER))]


def synthetic(index: int, terms: list[str], rng: random.Random) -> tuple[str, ServiceProposal]:
    lat, lon = rng.choice(TOWNS)
    words = rng.sample(WORDS, 4)
    description = rng.choices(FILLER, weights=FILLER_WEIGHTS, k=30) + rng.sample(WORDS, 3)
    rng.shuffle(description)
    body = {
        "name": f"{words[0].capitalize()} {words[1]} {index}",
        "description": " ".join(description),
        "minimum_age": rng.choice([None, 11, 16, 18, 65]),
        "taxonomy_term_ids": rng.sample(terms, 2),
        "schedules": [
            {
                "byday": rng.choice(["MO", "TU,TH", "SA"]),
                "opens_at": "10:00",
                "closes_at": rng.choice(["13:00", "16:00", "21:00"]),
            }
        ],
        "locations": [
            {
                "name": f"Venue {index}",
                "latitude": lat + rng.uniform(-0.08, 0.08),
                "longitude": lon + rng.uniform(-0.12, 0.12),
            }
        ],
        "organization": {
            "name": f"Charity {index % 2000}",
            "description": "Synthetic benchmark organisation.",
        },
    }
    return f"{1_100_000 + index % 2000}", ServiceProposal.model_validate(body).with_ids()


async def load(db: Database, count: int) -> float:
    started = time.perf_counter()
    async with db.transaction() as session:
        await store.load_taxonomy(session, needs_taxonomy())
    terms = [t["id"] for t in needs_taxonomy()["taxonomy_terms"]]
    rng = random.Random(7)
    batch = 500
    for start in range(0, count, batch):
        async with db.transaction() as session:
            for index in range(start, min(count, start + batch)):
                identifier, proposal = synthetic(index, terms, rng)
                await store.publish(session, proposal, identifier=identifier, scheme="GB-CHC", actor="bench")
    return time.perf_counter() - started


async def measure(db: Database, rounds: int) -> dict[str, dict[str, float]]:
    rng = random.Random(11)
    terms = [t["id"] for t in needs_taxonomy()["taxonomy_terms"]]
    cases: dict[str, Any] = {
        "search one word": lambda: queries.Filters(search=rng.choice(WORDS)),
        "search two words": lambda: queries.Filters(search=" ".join(rng.sample(WORDS, 2))),
        "taxonomy term + age": lambda: queries.Filters(taxonomy_term_id=rng.choice(terms), minimum_age=16),
        "day and time": lambda: queries.Filters(day="TU", start_time=None, end_time=None),
        "search + proximity 5 km (service_at_locations)": lambda: queries.Filters(
            search=rng.choice(WORDS), centre=PlanarFrame(*rng.choice(TOWNS)), proximity_m=5000
        ),
        "nearest first, no search (service_at_locations)": lambda: queries.Filters(
            centre=PlanarFrame(*rng.choice(TOWNS))
        ),
    }
    results: dict[str, dict[str, float]] = {}
    for name, make in cases.items():
        samples = []
        for _ in range(rounds):
            filters = make()
            started = time.perf_counter()
            async with db.session() as session:
                if "service_at_locations" in name:
                    await queries.service_at_locations(session, filters, offset=0, limit=50)
                else:
                    await queries.services(session, filters, offset=0, limit=50)
            samples.append((time.perf_counter() - started) * 1000)
        samples.sort()
        results[name] = {
            "p50_ms": round(statistics.median(samples), 2),
            "p99_ms": round(samples[int(len(samples) * 0.99) - 1], 2),
            "max_ms": round(samples[-1], 2),
        }
    return results


async def run(url: str, schema: str | None, count: int, rounds: int) -> dict[str, Any]:
    await migrate("directory", url, schema=schema)
    db = Database(url, schema=schema)
    try:
        async with db.session() as session:
            present = (await store.counts(session)).get("services", 0)
        seconds = 0.0
        if present < count:  # a kept database already loaded is reused as it is
            if present:
                raise SystemExit(f"the kept database holds {present} services, not {count}: remove it")
            seconds = await load(db, count)
            await analyze(url, schema)
        async with db.session() as session:
            loaded = await store.counts(session)
        return {"loaded": loaded, "load_seconds": round(seconds, 1), "queries": await measure(db, rounds)}
    finally:
        await db.dispose()


async def analyze(url: str, schema: str | None) -> None:
    """On PostgreSQL, what autovacuum does soon after a bulk load: planner statistics and the
    visibility map (index-only scans). SQLite is measured as loaded, without ANALYZE."""
    if schema is None:
        return
    from sqlalchemy import text

    db = Database(url, schema=schema)
    try:
        async with db.engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            tables = await autocommit.scalars(
                text("SELECT tablename FROM pg_tables WHERE schemaname = :schema"), {"schema": schema}
            )
            for table in tables.all():
                await autocommit.execute(text(f'VACUUM ANALYZE "{schema}"."{table}"'))
    finally:
        await db.dispose()


async def drop_schema(url: str, schema: str) -> None:
    from sqlalchemy import text

    db = Database(url)
    try:
        async with db.transaction() as session:
            await session.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--postgres", help="PostgreSQL URL (a fresh schema is used, unless --schema)")
    parser.add_argument("--sqlite-file", type=Path, help="keep (and reuse) the SQLite database here")
    parser.add_argument("--schema", help="keep (and reuse) this PostgreSQL schema")
    parser.add_argument("--skip-sqlite", action="store_true", help="measure PostgreSQL only")
    args = parser.parse_args()
    report: dict[str, Any] = {}
    if not args.skip_sqlite:
        if args.sqlite_file:
            url = f"sqlite+aiosqlite:///{args.sqlite_file.resolve()}"
            report["sqlite"] = asyncio.run(run(url, None, args.services, args.queries))
        else:
            with tempfile.TemporaryDirectory() as folder:
                url = f"sqlite+aiosqlite:///{Path(folder) / 'directory.db'}"
                report["sqlite"] = asyncio.run(run(url, None, args.services, args.queries))
    if args.postgres:
        schema = args.schema or f"bench_directory_{int(time.time())}"
        try:
            report["postgresql"] = asyncio.run(run(args.postgres, schema, args.services, args.queries))
        finally:
            if not args.schema:
                asyncio.run(drop_schema(args.postgres, schema))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
