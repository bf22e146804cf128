"""How fast each service's durable consumer catches up on a backlog, and what it costs in CPU.

    .venv/bin/python -m bench.consumer_catchup --postgres URL [--referrals 2000] [--consumer NAME ...]

Starts a nats-server of its own (a free port, a temporary store, `sync_interval: always` as in
production), publishes a backlog of realistic events for `referrals` referrals (received,
prioritised, routed, the episode opened, and triage's audit record of the intake: each built with
`make_event`, so it passes its contract), then runs each real consumer (the service's handler
through `shared.consumer.EventConsumer`, on PostgreSQL schemas named `<prefix><service>`) alone,
one after the other, until its pending count is 0. Per consumer: events applied, events/s (wall),
and CPU seconds per 1,000 events of this process (`time.process_time`: the consumer, its driver
and the event loop) and of nats-server (`/proc`). The schemas are dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nats.js.api import Header

from cmh.migrations import migrate
from shared.broker import Broker, ensure_stream
from shared.consumer import EventConsumer, Subscription
from shared.db import Database
from shared.events import CloudEvent, make_event
from shared.nats_server import EmbeddedNatsServer
from shared.settings import Settings

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
TEAMS = [f"team-{index:02d}" for index in range(12)]
PLACES = ["blackburn-with-darwen", "blackpool", "lancashire", "south-cumbria"]


def _subscriptions(settings: Settings) -> dict[str, tuple[str, Subscription]]:
    """Each measured durable: the service (database owner) it runs in and its subscription, as
    the service declares it."""
    from gateway.audit import audit_subscription
    from services.careplan.app import SPEC as CAREPLAN
    from services.notify.app import SPEC as NOTIFY
    from services.reporting.projections import subscription as reporting
    from services.triage.readmodels import SUBSCRIPTIONS as TRIAGE

    found: dict[str, tuple[str, Subscription]] = {
        "reporting-projections": ("reporting", reporting(settings)),
        "gateway-audit": ("gateway", audit_subscription()),
    }
    for service, subs in (("careplan", CAREPLAN.subscriptions), ("notify", NOTIFY.subscriptions)):
        for sub in subs:
            found[sub.durable] = (service, sub)
    for sub in TRIAGE:
        found[sub.durable] = ("triage", sub)
    return found


# The consumers a referral's events reach (the registry and directory ones see none of this backlog).
CONSUMERS = (
    "reporting-projections",
    "notify-events",
    "careplan-episodes",
    "careplan-journey",
    "triage-episodes",
    "gateway-audit",
)


def backlog(referrals: int) -> list[CloudEvent]:
    """A referral's events as triage and careplan publish them, for `referrals` people."""
    events: list[CloudEvent] = []
    start = datetime(2026, 11, 1, tzinfo=UTC)
    for index in range(referrals):
        referral, person = f"ref-{index:07d}", f"person-{index:07d}"
        received = start + timedelta(minutes=index)
        team, place = TEAMS[index % len(TEAMS)], PLACES[index % len(PLACES)]
        facts: dict[str, Any] = {
            "referral_id": referral, "person_id": person, "received_at": received.isoformat(), "source": "gp",
            "referring_organisation": "P81001", "crisis": False, "age": 20 + index % 60, "place": place,
            "network_id": f"net-{place}", "team_id": team, "pathway": "adult-mh", "priority": 3, "sex": "female",
            "ethnicity": "White",
        }  # fmt: skip
        decided = {
            "decided_by": "triage-app", "end_user_id": "triager-1", "end_user_role": "triage_practitioner",
            "decided_at": (received + timedelta(minutes=30)).isoformat(),
        }  # fmt: skip
        events.append(
            make_event("triage", "referral", "received", {**facts, "status": "received", "version": 1})
        )
        events.append(
            make_event(
                "triage", "referral", "prioritised",
                {**facts, **decided, "status": "received", "version": 2, "decision": "prioritise",
                 "suggested_route": "front_door_primary", "rules": ["adult", "routine"]},
            )
        )  # fmt: skip
        events.append(
            make_event(
                "triage", "referral", "routed",
                {**facts, **decided, "status": "routed", "version": 3, "decision": "accept",
                 "route": "front_door_primary"},
            )
        )  # fmt: skip
        episode = str(uuid.UUID(int=index + 1))
        events.append(
            make_event(
                "careplan", "episode", "opened",
                {"episode_id": episode, "referral_id": referral, "person_id": person,
                 "referring_organisation": "P81001", "version": 1, "status": "open", "team_id": team,
                 "network_id": f"net-{place}", "place": place, "pathway": "adult-mh",
                 "route": "front_door_primary", "priority": 3, "age_at_referral": 20 + index % 60,
                 "referral_received_at": received.isoformat(), "spell_started_at": received.isoformat(),
                 "opened_at": (received + timedelta(minutes=31)).isoformat()},
            )
        )  # fmt: skip
        events.append(
            make_event(
                "triage", "audit", "recorded",
                {"service": "triage", "action": "create", "outcome": "success", "resource_type": "Referral",
                 "resource_ids": [referral], "person_ids": [person], "client_id": "lscft",
                 "client_kind": "ehr", "organisation": "RW5", "purpose_of_use": "TREAT",
                 "request_id": uuid.uuid4().hex, "token_id": uuid.uuid4().hex},
            )
        )  # fmt: skip
    return events


def _proc_cpu(pid: int) -> float:
    """A process's user + system CPU seconds from /proc (0 where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _publish(settings: Settings, events: Sequence[CloudEvent]) -> None:
    broker = Broker(settings, "bench-publisher")
    broker.start()
    try:
        js = await broker.wait_connected()
        await ensure_stream(js, settings)
        for offset in range(0, len(events), 500):  # acknowledged in windows, not one round trip each
            chunk = events[offset : offset + 500]
            await asyncio.gather(
                *(
                    js.publish(event.type, event.to_json(), headers={Header.MSG_ID.value: event.id})
                    for event in chunk
                )
            )
    finally:
        await broker.close()


async def _catch_up(
    settings: Settings, service: str, subscription: Subscription, limit_seconds: float, nats_pid: int | None
) -> dict[str, Any]:
    db = Database(settings.database_url_for(service), schema=settings.database_schema_for(service))
    broker = Broker(settings, f"bench-{service}")
    broker.start()
    consumer = EventConsumer(db, broker, settings, service, subscription)
    try:
        js = await broker.wait_connected()
        await js.add_consumer(settings.stream_name, consumer.consumer_config())
        backlog_size = int((await js.consumer_info(settings.stream_name, consumer.durable)).num_pending or 0)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        nats0 = _proc_cpu(nats_pid) if nats_pid else 0.0
        consumer.start()
        deadline = wall0 + limit_seconds
        while True:
            info = await js.consumer_info(settings.stream_name, consumer.durable)
            if int(info.num_pending or 0) + int(info.num_ack_pending or 0) == 0:
                break
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{consumer.durable} did not catch up in {limit_seconds} s")
            await asyncio.sleep(0.02)
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
        nats_cpu = (_proc_cpu(nats_pid) - nats0) if nats_pid else 0.0
    finally:
        await consumer.stop()
        await broker.close()
        await db.dispose()
    per_k = 1000 / backlog_size if backlog_size else 0.0
    return {
        "events": backlog_size,
        "seconds": round(wall, 3),
        "events_per_s": round(backlog_size / wall, 1) if wall else None,
        "cpu_s_per_1000": round(cpu * per_k, 4),
        "nats_cpu_s_per_1000": round(nats_cpu * per_k, 4),
    }


async def measure(
    *,
    postgres_url: str = DEFAULT_URL,
    referrals: int = 2000,
    consumers: Sequence[str] = CONSUMERS,
    schema_prefix: str = "p23con_",
    limit_seconds: float = 600.0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Publish `referrals` referrals' events (5 each) and time each consumer catching up alone.

    Returns {"referrals", "published", "consumers": {durable: {"events", "seconds",
    "events_per_s", "cpu_s_per_1000", "nats_cpu_s_per_1000"}}, "total": {...}}."""
    prefix = f"{schema_prefix}{uuid.uuid4().hex[:6]}_"
    with tempfile.TemporaryDirectory(prefix="cmh-catchup-") as tmp:
        server = EmbeddedNatsServer(Path(tmp) / "nats")
        server.start()
        try:
            settings = Settings(
                nats_url=server.url,
                var_dir=Path(tmp) / "var",
                database_url=postgres_url,
                database_schema_prefix=prefix,
                consumer_ack_wait_seconds=30,
            )
            nats_pid = server.process.pid if server.process else None
            table = _subscriptions(settings)
            for owner in sorted({table[name][0] for name in consumers}):
                await migrate(
                    owner, settings.database_url_for(owner), schema=settings.database_schema_for(owner)
                )
            events = backlog(referrals)
            started = time.perf_counter()
            await _publish(settings, events)
            if progress:
                progress(f"published {len(events)} events in {time.perf_counter() - started:.1f} s")
            results: dict[str, Any] = {}
            for name in consumers:
                service, subscription = table[name]
                results[name] = await _catch_up(settings, service, subscription, limit_seconds, nats_pid)
                if progress:
                    progress(f"{name}: {json.dumps(results[name])}")
        finally:
            server.stop(graceful=False)
            from bench.run import drop_schemas  # the harness's one (bench/run.py imports this module)

            await drop_schemas(postgres_url, prefix)
    total_events = sum(r["events"] for r in results.values())
    total_seconds = sum(r["seconds"] for r in results.values())
    return {
        "referrals": referrals,
        "published": len(events),
        "consumers": results,
        "total": {
            "events": total_events,
            "seconds": round(total_seconds, 3),
            "events_per_s": round(total_events / total_seconds, 1) if total_seconds else None,
            "slowest_events_per_s": min((r["events_per_s"] or 0) for r in results.values())
            if results
            else None,
        },
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default=DEFAULT_URL)
    parser.add_argument("--referrals", type=int, default=2000)
    parser.add_argument("--consumer", action="append", choices=CONSUMERS, help="only these (repeatable)")
    parser.add_argument("--prefix", default="p23con_")
    args = parser.parse_args(argv)
    result = asyncio.run(
        measure(
            postgres_url=args.postgres,
            referrals=args.referrals,
            consumers=args.consumer or CONSUMERS,
            schema_prefix=args.prefix,
            progress=lambda line: print(line, flush=True),
        )
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
