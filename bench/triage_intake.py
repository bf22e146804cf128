"""Referral intake latency in process: `POST /triage/referrals` through the triage app (ASGI,
token verification, validation, identity matching, screening, the transaction with its outbox
events and audit), on SQLite and PostgreSQL, with the bundled nats-server.

    .venv/bin/python -m bench.triage_intake [--referrals 500] [--postgres URL]

Prints p50/p95/p99 in milliseconds. Not part of `make test`.
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

from cmh.migrations import migrate
from services.triage.app import create_app
from shared.nats_server import EmbeddedNatsServer
from shared.settings import Settings
from tests.support import mint_token, trust_test_key
from tests.triage.support import load_registry, nhs_number


def body(index: int) -> dict[str, Any]:
    first_nine = f"{400000000 + index * 7:09d}"
    try:
        number = nhs_number(first_nine)
    except AssertionError:
        number = None
    return {
        "person": {
            "nhs_number": number, "given_name": f"Person{index}", "family_name": "Bench",
            "birth_date": "1980-01-01", "postcode": ["PR1 3BQ", "BB2 2DH", "FY1 1EJ", "LA9 4DL"][index % 4],
        },
        "source": "gp",
        "needs": ["low_mood", "housing"] if index % 3 else ["anxiety"],
        "risks": ["suicidal_ideation"] if index % 10 == 0 else [],
        "consent_to_share": True,
    }  # fmt: skip


async def run(settings: Settings, count: int) -> dict[str, float]:
    await migrate(
        "triage", settings.database_url_for("triage"), schema=settings.database_schema_for("triage")
    )
    app = create_app(settings)
    token = mint_token("referral:submit", client_id="bench-gp", organisation="P81001", kind="partner_ehr")
    samples: list[float] = []
    async with app.router.lifespan_context(app):
        trust_test_key(app)
        await load_registry(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://triage") as client:
            for index in range(count + 20):
                headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": f"bench-{index}"}
                started = time.perf_counter()
                response = await client.post("/triage/referrals", json=body(index), headers=headers)
                elapsed = (time.perf_counter() - started) * 1000
                assert response.status_code == 201, response.text
                if index >= 20:  # warm-up excluded
                    samples.append(elapsed)
        # Until the relay has published everything: what JetStream's sync costs shows here.
        drained_from = time.perf_counter()
        while await app.state.relay.backlog():  # noqa: ASYNC110 - a count in the database, no event to wait on
            await asyncio.sleep(0.01)
        drain_seconds = time.perf_counter() - drained_from
    samples.sort()
    return {
        "referrals": count,
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
        "--durability",
        action="store_true",
        help="SQLite only, twice: synchronous=NORMAL with JetStream's default sync, then the "
        "defaults (synchronous=FULL, sync_interval: always): what durability costs",
    )
    args = parser.parse_args()
    if args.durability:
        print(json.dumps(durability_cost(args.referrals), indent=2))
        return
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        nats = EmbeddedNatsServer(Path(folder) / "nats")
        nats.start()
        try:
            base = {"nats_url": nats.url, "var_dir": Path(folder) / "var"}
            report["sqlite"] = asyncio.run(
                run(
                    Settings(database_url=f"sqlite+aiosqlite:///{folder}/{{service}}.db", **base),
                    args.referrals,
                )
            )
            if args.postgres:
                prefix = f"bench{int(time.time())}_"
                report["postgresql"] = asyncio.run(
                    run(
                        Settings(database_url=args.postgres, database_schema_prefix=prefix, **base),
                        args.referrals,
                    )
                )
        finally:
            nats.stop()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
