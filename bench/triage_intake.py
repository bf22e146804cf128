"""Referral intake latency in process: `POST /triage/referrals` through the triage app (ASGI,
token verification, validation, identity matching, screening, the transaction with its outbox
events and audit), on SQLite and PostgreSQL, with the bundled nats-server.

    .venv/bin/python -m bench.triage_intake [--referrals 500] [--postgres URL] [--split-relay]

Prints p50/p95/p99 in milliseconds, and this process's CPU per referral (`time.process_time`, so
another process's load does not count) and the SQL statements per referral (a cursor listener; an
executemany counts once, as it is one round trip). `--split-relay` also runs intake with the relay
stopped, then drains the outbox alone: intake's own CPU and statements, and the relay's per event.
The in-process client's CPU (httpx) is in the intake figures. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event

from cmh.migrations import migrate
from services.triage.app import create_app
from shared.nats_server import EmbeddedNatsServer
from shared.settings import Settings
from tests.support import mint_token, trust_test_key
from tests.triage.support import load_registry, nhs_number

GIVEN = (
    "Amelia", "Oliver", "Isla", "George", "Ava", "Noah", "Mia", "Arthur", "Ivy", "Muhammad", "Freya",
    "Leo", "Lily", "Harry", "Florence", "Oscar", "Willow", "Archie", "Rosie", "Henry", "Sophia",
    "Theodore", "Isabella", "Jack", "Grace", "Charlie", "Evie", "Thomas", "Poppy", "Jacob", "Ella",
    "Alfie", "Elsie", "Finley", "Daisy", "Tommy", "Sienna", "Ezra", "Phoebe", "Reuben",
)  # fmt: skip
FAMILY = (
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel", "Wright",
    "Robinson", "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall", "Thomas", "Clarke",
    "Jackson", "Wood", "Harris", "Edwards", "Turner", "Martin", "Cooper", "Hill", "Ward", "Hughes",
    "Moore", "Clark", "King", "Harrison", "Lewis", "Baker", "Lee", "Allen", "Morris", "Khan",
    "Scott", "Watson", "Davis", "Parker", "James", "Bennett", "Young", "Phillips", "Richardson", "Mitchell",
)  # fmt: skip
NAMES = "same"  # "same": every person is "Person Bench" (digits fold away), so all share a name


def body(index: int) -> dict[str, Any]:
    first_nine = f"{400000000 + index * 7:09d}"
    try:
        number = nhs_number(first_nine)
    except AssertionError:
        number = None
    given, family = f"Person{index}", "Bench"
    if NAMES == "distinct":  # 2,000 names, each once per 2,000 referrals (one date of birth, as before)
        given, family = GIVEN[index % len(GIVEN)], FAMILY[(index // len(GIVEN)) % len(FAMILY)]
    return {
        "person": {
            "nhs_number": number, "given_name": given, "family_name": family,
            "birth_date": "1980-01-01", "postcode": ["PR1 3BQ", "BB2 2DH", "FY1 1EJ", "LA9 4DL"][index % 4],
        },
        "source": "gp",
        "needs": ["low_mood", "housing"] if index % 3 else ["anxiety"],
        "risks": ["suicidal_ideation"] if index % 10 == 0 else [],
        "consent_to_share": True,
    }  # fmt: skip


class StatementCount:
    """Statements a database's engine sends, by the cursor (an executemany is one)."""

    def __init__(self, engine: Any) -> None:
        self.count = 0
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, *_args: Any) -> None:
        self.count += 1


async def run(settings: Settings, count: int, *, relay_live: bool = True) -> dict[str, Any]:
    """`relay_live` False: the relay is stopped while the referrals come in, then drains alone."""
    await migrate(
        "triage", settings.database_url_for("triage"), schema=settings.database_schema_for("triage")
    )
    app = create_app(settings)
    token = mint_token("referral:submit", client_id="bench-gp", organisation="P81001", kind="partner_ehr")
    samples: list[float] = []
    async with app.router.lifespan_context(app):
        trust_test_key(app)
        await load_registry(app)
        relay = app.state.relay
        statements = StatementCount(app.state.db.engine.sync_engine)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://triage") as client:
            for index in range(count + 20):
                if index == 20:  # warm-up excluded
                    if not relay_live:
                        while await relay.backlog():  # noqa: ASYNC110 - as below
                            await asyncio.sleep(0.01)
                        await relay.stop(grace=5)
                    statements.count = 0
                    cpu_from = time.process_time()
                headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": f"bench-{index}"}
                started = time.perf_counter()
                response = await client.post("/triage/referrals", json=body(index), headers=headers)
                elapsed = (time.perf_counter() - started) * 1000
                assert response.status_code == 201, response.text
                if index >= 20:  # warm-up excluded
                    samples.append(elapsed)
        intake_cpu, intake_statements = time.process_time() - cpu_from, statements.count
        # Until the relay has published everything: what JetStream's sync costs shows here.
        drained_from = time.perf_counter()
        pending = await relay.backlog()
        if relay_live:
            while await relay.backlog():  # noqa: ASYNC110 - a count in the database, no event to wait on
                await asyncio.sleep(0.01)
        else:
            relay_from, statements.count = time.process_time(), 0
            while await relay.relay_once():
                pass
            relay_cpu, relay_statements = time.process_time() - relay_from, statements.count
        drain_seconds = time.perf_counter() - drained_from
        total_cpu = time.process_time() - cpu_from
    samples.sort()
    cpu: dict[str, float] = {
        "cpu_ms_per_referral": round(total_cpu * 1000 / count, 2),
        # Live: the relay's statements are in the count too (it was not reset for the drain).
        "statements_per_referral": round(statements.count / count, 2),
    }
    if not relay_live:
        cpu = {
            "intake_cpu_ms_per_referral": round(intake_cpu * 1000 / count, 2),
            "intake_statements_per_referral": round(intake_statements / count, 2),
            "relay_events": pending,
            "relay_cpu_ms_per_event": round(relay_cpu * 1000 / max(pending, 1), 3),
            "relay_statements": relay_statements,
        }
    return {
        "referrals": count,
        "relay": "live" if relay_live else "stopped during intake, then drained alone",
        **cpu,
        "intake_per_second": round(count / (sum(samples) / 1000), 1),
        "outbox_drained_after_s": round(drain_seconds, 3),
        "p50_ms": round(statistics.median(samples), 2),
        "p95_ms": round(samples[int(len(samples) * 0.95) - 1], 2),
        "p99_ms": round(samples[int(len(samples) * 0.99) - 1], 2),
    }


def durability_cost(count: int) -> dict[str, Any]:
    import shared.db

    report: dict[str, Any] = {}
    for name, synchronous, sync_always in (("before", "NORMAL", False), ("after", "FULL", True)):
        shared.db.SQLITE_SYNCHRONOUS = synchronous
        with tempfile.TemporaryDirectory() as folder:
            nats = EmbeddedNatsServer(Path(folder) / "nats", sync_always=sync_always)
            nats.start()
            try:
                settings = Settings(
                    database_url=f"sqlite+aiosqlite:///{folder}/{{service}}.db",
                    nats_url=nats.url,
                    var_dir=Path(folder) / "var",
                )
                report[name] = {
                    "sqlite_synchronous": synchronous,
                    "jetstream_sync_always": sync_always,
                    **asyncio.run(run(settings, count)),
                }
            finally:
                nats.stop()
    shared.db.SQLITE_SYNCHRONOUS = "FULL"
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--referrals", type=int, default=500)
    parser.add_argument("--postgres")
    parser.add_argument(
        "--schema-prefix", default="bench", help="PostgreSQL: schemas are PREFIX<time>_<service>"
    )
    parser.add_argument(
        "--names",
        choices=("same", "distinct"),
        default="same",
        help="same (as before): every person is named Person Bench once folded, so each referral "
        "matches every earlier one by name and date of birth; distinct: 2,000 real names",
    )
    parser.add_argument(
        "--split-relay",
        action="store_true",
        help="also run with the relay stopped during intake: intake's own CPU and statements, "
        "then the relay's CPU per event draining the outbox alone",
    )
    parser.add_argument(
        "--durability",
        action="store_true",
        help="SQLite only, twice: synchronous=NORMAL with JetStream's default sync, then the "
        "defaults (synchronous=FULL, sync_interval: always): what durability costs",
    )
    args = parser.parse_args()
    global NAMES
    NAMES = args.names
    if args.durability:
        print(json.dumps(durability_cost(args.referrals), indent=2))
        return
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        nats = EmbeddedNatsServer(Path(folder) / "nats")
        nats.start()
        try:
            base: dict[str, Any] = {"nats_url": nats.url, "var_dir": Path(folder) / "var"}
            modes = [("", True), ("_split_relay", False)] if args.split_relay else [("", True)]
            for suffix, relay_live in modes:
                report[f"sqlite{suffix}"] = asyncio.run(
                    run(
                        Settings(database_url=f"sqlite+aiosqlite:///{folder}/{{service}}{suffix}.db", **base),
                        args.referrals,
                        relay_live=relay_live,
                    )
                )
                if args.postgres:
                    prefix = f"{args.schema_prefix}{int(time.time())}{suffix}_"
                    report[f"postgresql{suffix}"] = asyncio.run(
                        run(
                            Settings(database_url=args.postgres, database_schema_prefix=prefix, **base),
                            args.referrals,
                            relay_live=relay_live,
                        )
                    )
        finally:
            nats.stop()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
