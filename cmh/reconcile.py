"""`cmh reconcile`: does every event the suite says it published exist in the stream, and has every
durable consumer applied every event it has acknowledged? (issue 21 §1)

Three records should agree: each process's outbox (rows marked published), the JetStream stream,
and each durable consumer's inbox (events applied). They can disagree only after a fault the
durability settings should prevent (a stream message lost with its fsync, a store restored from
an old backup, a message deleted by hand). The comparison is pure (`missing_from_stream`,
`missed_by_consumer`); reading the three records is at the edges.

With `--repair`, each missing event is published again from the record that still holds it (the
outbox row, or the stream message a consumer missed) under a new message id, so the stream's
duplicate window cannot drop it; consumers apply by event id, so one that already has it records
a duplicate and nothing is applied twice. Output names event ids and subjects only: never a
payload (they carry person data).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, Header
from nats.js.errors import NotFoundError
from sqlalchemy import select

from shared.consumer import DEAD_LETTER_CONSUMER_HEADER
from shared.db import Database
from shared.event_catalogue import subject_matches
from shared.events import DEAD_LETTER_TOKEN, SUBJECT_PREFIX
from shared.messaging_models import InboxMessage, OutboxMessage
from shared.settings import Settings

DEAD_LETTER_PREFIX = f"{SUBJECT_PREFIX}.{DEAD_LETTER_TOKEN}."
REPAIR_SUFFIX = ":reconciled"
# The stream's time is when it stored a message; the outbox marks it published a moment later.
CLOCK_MARGIN = timedelta(minutes=5)
FETCH_BATCH = 1000


# --- the comparison (pure) ------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamEvent:
    seq: int
    subject: str
    event_id: str


def missing_from_stream(published: Iterable[str], in_stream: set[str]) -> list[str]:
    """Event ids the outbox marked published that the stream does not hold, in outbox order."""
    return [event_id for event_id in published if event_id not in in_stream]


def missed_by_consumer(
    stream: Sequence[StreamEvent],
    filters: Sequence[str],
    acknowledged_through: int,
    applied: set[str],
    dead_lettered: set[str],
) -> list[str]:
    """Event ids a durable consumer has acknowledged (stream sequence up to its ack floor) on its
    subjects without applying them or setting them aside as dead letters. Events past the ack
    floor are still to come, not missed."""
    missed: list[str] = []
    for event in stream:
        if event.seq > acknowledged_through or event.event_id in applied or event.event_id in dead_lettered:
            continue
        if (
            any(subject_matches(pattern, event.subject) for pattern in filters)
            and event.event_id not in missed
        ):
            missed.append(event.event_id)
    return missed


@dataclass
class Findings:
    missing_from_stream: dict[str, list[str]] = field(default_factory=dict)  # process → event ids
    missed_by_consumer: dict[str, list[str]] = field(default_factory=dict)  # durable → event ids
    checked_outbox: int = 0
    checked_stream: int = 0

    @property
    def clean(self) -> bool:
        return not any(self.missing_from_stream.values()) and not any(self.missed_by_consumer.values())


# --- reading the records (I/O) --------------------------------------------------------------------


@dataclass(frozen=True)
class StreamMessage:
    event: StreamEvent
    data: bytes
    consumer: str | None  # for a dead letter: the durable that set it aside


async def read_stream(js: JetStreamContext, stream: str, since: datetime) -> list[StreamMessage]:
    """Every message stored since `since`, through an ephemeral consumer that acknowledges
    nothing (reading changes no consumer's position)."""
    subscription = await js.pull_subscribe(
        f"{SUBJECT_PREFIX}.>",
        stream=stream,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME,
            # nats-py sends the field as given; JetStream wants an RFC 3339 string.
            opt_start_time=since.astimezone(UTC).isoformat().replace("+00:00", "Z"),  # type: ignore[arg-type]
            ack_policy=AckPolicy.NONE,
            inactive_threshold=60,
        ),
    )
    out: list[StreamMessage] = []
    try:
        while True:
            info = await subscription.consumer_info()
            if not info.num_pending and out:
                break
            try:
                batch = await subscription.fetch(FETCH_BATCH, timeout=2)
            except TimeoutError:
                break
            for message in batch:
                headers = message.headers or {}
                msg_id = headers.get(Header.MSG_ID.value, "")
                event_id = msg_id.removesuffix(REPAIR_SUFFIX)
                consumer = (
                    headers.get(DEAD_LETTER_CONSUMER_HEADER)
                    if message.subject.startswith(DEAD_LETTER_PREFIX)
                    else None
                )
                if consumer is not None:
                    event_id = msg_id.split(":", 1)[0]
                out.append(
                    StreamMessage(
                        StreamEvent(message.metadata.sequence.stream, message.subject, event_id),
                        message.data,
                        consumer,
                    )
                )
            if (info.num_pending or 0) <= len(batch):
                break
    finally:
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()
    return out


async def _published_rows(db: Database, since: datetime) -> list[OutboxMessage]:
    async with db.session() as session:
        rows = await session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.published_at.is_not(None), OutboxMessage.published_at >= since)
            .order_by(OutboxMessage.seq)
        )
        return list(rows.all())


async def _applied(db: Database, durable: str, since: datetime) -> set[str]:
    async with db.session() as session:
        found = await session.scalars(
            select(InboxMessage.event_id).where(
                InboxMessage.consumer == durable, InboxMessage.processed_at >= since - CLOCK_MARGIN
            )
        )
        return set(found.all())


async def reconcile(
    settings: Settings,
    plan: Mapping[str, Mapping[str, Sequence[str]]],
    *,
    since: datetime,
    repair: bool = False,
    processes: Sequence[str] | None = None,
) -> Findings:
    """Compare every process's outbox and every durable consumer's inbox with the stream since
    `since`; with `repair`, publish each missing event again."""
    from shared.broker import connect_bus

    connection = await connect_bus(settings)
    js = connection.jetstream()
    findings = Findings()
    try:
        messages = await read_stream(js, settings.stream_name, since - CLOCK_MARGIN)
        findings.checked_stream = len(messages)
        events = [m.event for m in messages if m.consumer is None]
        in_stream = {e.event_id for e in events}
        by_id = {m.event.event_id: m for m in messages if m.consumer is None}
        dead_letters: dict[str, set[str]] = {}
        for message in messages:
            if message.consumer is not None:
                dead_letters.setdefault(message.consumer, set()).add(message.event.event_id)
        to_publish: dict[str, tuple[str, bytes]] = {}
        for process in processes or list(plan):
            db = Database(
                settings.database_url_for(process), schema=settings.database_schema_for(process), pool_size=1
            )
            try:
                rows = await _published_rows(db, since)
                findings.checked_outbox += len(rows)
                missing = missing_from_stream((r.event_id for r in rows), in_stream)
                findings.missing_from_stream[process] = missing
                wanted = set(missing)
                for row in rows:
                    if row.event_id in wanted:
                        to_publish[row.event_id] = (row.subject, row.payload.encode())
                for durable, filters in plan.get(process, {}).items():
                    try:
                        floor = (await js.consumer_info(settings.stream_name, durable)).ack_floor
                    except NotFoundError:
                        continue
                    through = floor.stream_seq if floor is not None else 0
                    missed = missed_by_consumer(
                        events,
                        filters,
                        through,
                        await _applied(db, durable, since),
                        dead_letters.get(durable, set()),
                    )
                    findings.missed_by_consumer[durable] = missed
                    for event_id in missed:
                        message = by_id[event_id]
                        to_publish.setdefault(event_id, (message.event.subject, message.data))
            finally:
                await db.dispose()
        if repair:
            for event_id, (subject, data) in to_publish.items():
                await js.publish(subject, data, headers={Header.MSG_ID.value: event_id + REPAIR_SUFFIX})
    finally:
        await connection.close()
    return findings


def report(findings: Findings, *, repaired: bool) -> list[str]:
    lines = [
        f"checked {findings.checked_outbox} published outbox rows and {findings.checked_stream} stream messages"
    ]
    for process, missing in findings.missing_from_stream.items():
        if missing:
            lines.append(
                f"{process}: {len(missing)} published but not in the stream: {', '.join(missing[:20])}"
            )
    for durable, missed in findings.missed_by_consumer.items():
        if missed:
            lines.append(f"{durable}: {len(missed)} acknowledged but not applied: {', '.join(missed[:20])}")
    if findings.clean:
        lines.append("outboxes, stream and inboxes agree")
    elif repaired:
        lines.append("each missing event was published again; run reconcile again to confirm")
    return lines


def run(settings: Settings, *, hours: float, repair: bool, processes: Sequence[str] | None) -> int:
    from cmh.serving import bus_plan

    since = datetime.now(UTC) - timedelta(hours=hours)
    findings = asyncio.run(reconcile(settings, bus_plan(), since=since, repair=repair, processes=processes))
    for line in report(findings, repaired=repair):
        print(line)
    return 0 if findings.clean or repair else 1
