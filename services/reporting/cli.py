"""`cmh reporting rebuild`: replay the event stream from its start into fresh projections.

For a new pseudonymisation key, a changed projection or a suspected drift: the projections are
emptied and every event still in the stream is applied again, in order, by the same `Projector`
the live consumer uses, so the figures come out identical. Run it with the reporting service
stopped (or accept that events arriving meanwhile are applied twice, which the upserts absorb).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from nats.js.api import ConsumerConfig, DeliverPolicy
from sqlalchemy import delete
from tqdm import tqdm

from services.reporting.models import MIGRATIONS, EpisodeFact, HandoverFact, ReferralFact
from services.reporting.projections import SUBJECTS, Projector, pseudonym_key
from shared.broker import beside_the_suite, connect_bus
from shared.bus_access import ADMIN
from shared.db import Database
from shared.events import CloudEvent
from shared.migrations import migrate
from shared.settings import Settings, get_settings


def bus_settings(settings: Settings) -> Settings:
    """CMH_NATS_URL, else the bundled server a running `cmh run` recorded under var/."""
    settings = beside_the_suite(settings)
    if not settings.nats_url:
        raise SystemExit("no NATS to replay from: set CMH_NATS_URL, or start the suite with `cmh run`")
    return settings


async def rebuild(settings: Settings, *, progress: bool = True) -> int:
    """Empty the projections and replay the stream into them; returns the events applied."""
    url, schema = settings.database_url_for("reporting"), settings.database_schema_for("reporting")
    await migrate("reporting", url, directory=MIGRATIONS, schema=schema)
    db = Database(url, schema=schema, pool_size=2)
    # An ephemeral consumer over the whole stream: the admin's to make, never a service's.
    connection = await connect_bus(bus_settings(settings), ADMIN)
    projector = Projector(pseudonym_key(settings))
    applied = 0
    try:
        js = connection.jetstream()
        info = await js.stream_info(settings.stream_name)
        last = info.state.last_seq
        async with db.transaction() as session:
            for model in (ReferralFact, EpisodeFact, HandoverFact):
                await session.execute(delete(model))
        subscription = await js.pull_subscribe(
            "", durable=None, stream=settings.stream_name,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, filter_subjects=list(SUBJECTS)),
        )  # fmt: skip
        bar = tqdm(total=last, unit="event", desc="replaying", disable=not progress, file=sys.stderr)
        done = False
        while not done:
            try:
                messages = await subscription.fetch(500, timeout=2)
            except TimeoutError:
                break
            async with db.transaction() as session:
                for message in messages:
                    await projector.apply(session, CloudEvent.from_json(message.data))
                    applied += 1
                    sequence = message.metadata.sequence.stream if message.metadata else last
                    bar.n = sequence
                    done = done or sequence >= last
            for message in messages:
                await message.ack()
            bar.refresh()
        bar.close()
        await subscription.unsubscribe()
    finally:
        await connection.close()
        await db.dispose()
    return applied


def cmd_rebuild(args: argparse.Namespace) -> int:
    applied = asyncio.run(rebuild(get_settings(), progress=not args.quiet))
    print(f"reporting projections rebuilt from {applied} events")
    return 0


def register(commands: Any) -> None:
    reporting = commands.add_parser("reporting", help="ICB reporting")
    actions = reporting.add_subparsers(dest="reporting_command", required=True)
    rebuild_parser = actions.add_parser("rebuild", help="replay the event stream into fresh projections")
    rebuild_parser.add_argument("--quiet", action="store_true", help="no progress bar")
    rebuild_parser.set_defaults(func=cmd_rebuild)
