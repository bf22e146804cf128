"""The outbox, relay and durable consumer against a real nats-server, on SQLite and PostgreSQL.

A producing service (triage's database) commits events through the outbox; a consuming service
(careplan's database) applies them through a durable consumer whose handler records each
application in a test table, so a duplicate application would show as a second row.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from nats.js.api import Header
from prometheus_client import REGISTRY
from sqlalchemy import Column, MetaData, String, Table, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from cmh.migrations import migrate
from shared.broker import Broker
from shared.consumer import (
    DEAD_LETTER_DELIVERIES_HEADER,
    DEAD_LETTER_REASON_HEADER,
    EventConsumer,
    PermanentEventError,
    Subscription,
)
from shared.db import Database
from shared.events import CloudEvent, dead_letter_subject, make_event
from shared.messaging_models import InboxMessage, OutboxMessage
from shared.nats_server import EmbeddedNatsServer
from shared.outbox import OutboxRelay, add_event
from shared.settings import Settings
from tests.support import eventually

applied_metadata = MetaData()
applied = Table(
    "test_applied_events",
    applied_metadata,
    Column("event_id", String(128), nullable=False),  # deliberately not unique
    Column("subject", String(255), nullable=False),
)

DURABLE = "test-careplan-triage"


@dataclass
class Suite:
    settings: Settings
    producer_db: Database
    consumer_db: Database
    brokers: list[Broker] = field(default_factory=list)
    relays: list[OutboxRelay] = field(default_factory=list)
    consumers: list[EventConsumer] = field(default_factory=list)
    poison: set[str] = field(default_factory=set)
    permanent: set[str] = field(default_factory=set)
    outage: dict[str, int] = field(default_factory=dict)  # event id -> failures still to come

    def broker(self, name: str) -> Broker:
        broker = Broker(self.settings, name)
        broker.start()
        self.brokers.append(broker)
        return broker

    def start_relay(self, label: str = "triage") -> OutboxRelay:
        relay = OutboxRelay(self.producer_db, self.broker(f"relay-{label}"), self.settings, label)
        relay.start()
        self.relays.append(relay)
        return relay

    def start_consumer(self) -> EventConsumer:
        consumer = EventConsumer(
            self.consumer_db,
            self.broker("consumer"),
            self.settings,
            "careplan",
            Subscription(durable=DURABLE, subjects=["cmh.triage.*.*"], handler=self.handle),
        )
        consumer.start()
        self.consumers.append(consumer)
        return consumer

    async def handle(self, session: AsyncSession, event: CloudEvent) -> None:
        if event.id in self.permanent:
            raise PermanentEventError("referral shape not understood")
        if event.id in self.poison:
            raise RuntimeError("handler bug")
        if self.outage.get(event.id):
            self.outage[event.id] -= 1
            raise OperationalError("INSERT", {}, ConnectionRefusedError("database restarting"))
        await session.execute(applied.insert().values(event_id=event.id, subject=event.type))

    async def emit(self, referral: str, verb: str = "received") -> CloudEvent:
        event = make_event(
            "triage", "referral", verb, {"referral_id": referral, "person_id": "p-1"}, subject=referral
        )
        async with self.producer_db.transaction() as session:
            add_event(session, event)
        return event

    async def applications(self, event_id: str | None = None) -> int:
        query = select(func.count()).select_from(applied)
        if event_id is not None:
            query = query.where(applied.c.event_id == event_id)
        async with self.consumer_db.session() as session:
            return int(await session.scalar(query) or 0)

    async def unpublished(self) -> int:
        async with self.producer_db.session() as session:
            return int(
                await session.scalar(
                    select(func.count())
                    .select_from(OutboxMessage)
                    .where(OutboxMessage.published_at.is_(None))
                )
                or 0
            )

    async def stop(self) -> None:
        for consumer in self.consumers:
            await consumer.stop()
        for relay in self.relays:
            await relay.stop()
        for broker in self.brokers:
            await broker.close()
        await self.producer_db.dispose()
        await self.consumer_db.dispose()


@pytest.fixture
async def suite(make_settings: Callable[..., Settings]) -> AsyncIterator[Suite]:
    settings = make_settings()
    for owner in ("triage", "careplan"):
        await migrate(owner, settings.database_url_for(owner), schema=settings.database_schema_for(owner))
    producer_db = Database(settings.database_url_for("triage"), schema=settings.database_schema_for("triage"))
    consumer_db = Database(
        settings.database_url_for("careplan"), schema=settings.database_schema_for("careplan")
    )
    async with consumer_db.engine.begin() as connection:
        await connection.run_sync(applied_metadata.create_all)
    state = Suite(settings, producer_db, consumer_db)
    try:
        yield state
    finally:
        await state.stop()


async def stream_messages(broker: Broker, subject: str) -> int:
    js = await broker.wait_connected()
    info = await js.stream_info(broker.settings.stream_name, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def test_event_committed_while_nats_is_down_is_delivered_after_restart(
    suite: Suite, nats_server: EmbeddedNatsServer
) -> None:
    suite.start_relay()
    suite.start_consumer()
    first = await suite.emit("ref-1")
    await eventually(lambda: suite.applications(first.id))

    nats_server.stop()
    second = await suite.emit("ref-2")  # committed while the broker is unreachable
    assert await suite.unpublished() == 1
    nats_server.start()

    await eventually(lambda: suite.applications(second.id), timeout=30)
    assert await suite.applications() == 2
    assert await suite.unpublished() == 0


async def test_service_started_while_nats_is_down_catches_up(
    suite: Suite, nats_server: EmbeddedNatsServer
) -> None:
    nats_server.stop()
    suite.start_relay()
    suite.start_consumer()
    events = [await suite.emit(f"ref-{i}") for i in range(5)]
    nats_server.start()
    await eventually(lambda: _count_is(suite, 5), timeout=30)
    for event in events:
        assert await suite.applications(event.id) == 1


async def test_duplicate_delivery_is_applied_once(suite: Suite) -> None:
    suite.start_consumer()
    publisher = suite.broker("publisher")
    js = await publisher.wait_connected()
    event = make_event("triage", "referral", "received", {"referral_id": "ref-dup", "person_id": "p-1"})
    # Two copies under different message ids get past JetStream's own de-duplication, as a
    # redelivery after a crash or a publisher replay beyond the window would.
    for copy in ("a", "b", "c"):
        await js.publish(event.type, event.to_json(), headers={Header.MSG_ID.value: f"{event.id}-{copy}"})
    marker = await suite.emit("ref-after")
    suite.start_relay()
    await eventually(lambda: suite.applications(marker.id))
    assert await suite.applications(event.id) == 1


@pytest.mark.parametrize("window", ["within-dedup-window", "after-dedup-window"])
async def test_relay_killed_between_publish_and_mark_causes_no_duplicate_application(
    suite: Suite, window: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if window == "after-dedup-window":
        # A tiny window so the replay reaches the stream again and only the inbox can stop it.
        suite.settings = suite.settings.model_copy(update={"stream_duplicate_window_seconds": 0.2})
    crashed = asyncio.Event()
    original_mark = OutboxRelay._mark

    async def die_before_marking(self: OutboxRelay, *args: object) -> None:
        crashed.set()
        raise asyncio.CancelledError  # the process is gone: nothing after publishing runs

    monkeypatch.setattr(OutboxRelay, "_mark", die_before_marking)
    consumer = suite.start_consumer()
    events = [await suite.emit(f"ref-{i}") for i in range(3)]
    doomed = suite.start_relay("triage-doomed")
    await asyncio.wait_for(crashed.wait(), timeout=15)
    with contextlib.suppress(asyncio.CancelledError):
        await doomed._task  # type: ignore[misc]
    await eventually(lambda: _count_is(suite, 3))
    assert await suite.unpublished() == 3, "the killed relay never marked its rows"

    if window == "after-dedup-window":
        await asyncio.sleep(0.5)  # let the stream forget the message ids

    monkeypatch.setattr(OutboxRelay, "_mark", original_mark)
    suite.start_relay("triage-restarted")
    await eventually(lambda: _unpublished_is(suite, 0))
    expected_copies = 1 if window == "within-dedup-window" else 2
    await eventually(
        lambda: _stream_has(consumer.broker, "cmh.triage.referral.received", 3 * expected_copies)
    )
    await eventually(lambda: _consumer_idle(consumer))
    for event in events:
        assert await suite.applications(event.id) == 1


async def test_failing_handler_is_dead_lettered_and_consumer_carries_on(suite: Suite) -> None:
    poison = make_event("triage", "referral", "received", {"referral_id": "ref-poison", "person_id": "p-1"})
    suite.poison.add(poison.id)
    consumer = suite.start_consumer()
    suite.start_relay()
    async with suite.producer_db.transaction() as session:
        add_event(session, poison)
    later = await suite.emit("ref-later")

    await eventually(lambda: suite.applications(later.id), timeout=30)
    dead = await _dead_letter(consumer.broker, poison.id)
    assert dead.headers is not None
    assert dead.headers[DEAD_LETTER_DELIVERIES_HEADER] == str(suite.settings.consumer_max_deliveries)
    assert dead.headers[DEAD_LETTER_REASON_HEADER] == "builtins.RuntimeError"
    assert CloudEvent.from_json(dead.data).id == poison.id
    assert await suite.applications(poison.id) == 0


async def test_a_database_outage_is_retried_past_the_dead_letter_limit(suite: Suite) -> None:
    """The database failing says nothing about the event: it is retried, never dead-lettered."""
    event = make_event("triage", "referral", "received", {"referral_id": "ref-outage", "person_id": "p-1"})
    suite.outage[event.id] = suite.settings.consumer_max_deliveries + 2
    consumer = suite.start_consumer()
    suite.start_relay()
    async with suite.producer_db.transaction() as session:
        add_event(session, event)
    await eventually(lambda: suite.applications(event.id), timeout=30)
    assert suite.outage[event.id] == 0 and await suite.applications(event.id) == 1
    assert await stream_messages(consumer.broker, dead_letter_subject(DURABLE)) == 0


async def test_permanent_error_and_undecodable_event_are_dead_lettered_at_once(suite: Suite) -> None:
    rejected = make_event(
        "triage", "referral", "received", {"referral_id": "ref-unknown-shape", "person_id": "p-1"}
    )
    suite.permanent.add(rejected.id)
    consumer = suite.start_consumer()
    publisher = suite.broker("publisher")
    js = await publisher.wait_connected()
    await js.publish(rejected.type, rejected.to_json())
    await js.publish("cmh.triage.referral.received", b"{not json", headers={Header.MSG_ID.value: "garbage-1"})
    good = await suite.emit("ref-good")
    suite.start_relay()
    await eventually(lambda: suite.applications(good.id))

    dead = await _dead_letter(consumer.broker, rejected.id)
    assert dead.headers is not None
    assert dead.headers[DEAD_LETTER_DELIVERIES_HEADER] == "1"
    assert dead.headers[DEAD_LETTER_REASON_HEADER] == "PermanentEventError: referral shape not understood"
    assert await _stream_has(consumer.broker, dead_letter_subject(DURABLE), 2)


async def test_an_event_breaking_its_contract_is_dead_lettered_before_any_handler(suite: Suite) -> None:
    """A payload its subject's model refuses (here: no person id, a priority that is no code) is
    parked at once with the fields named, never their values, and never reaches the handler; the
    events after it are applied."""
    broken = CloudEvent(
        source="/cmh/triage", type="cmh.triage.referral.received",
        data={"referral_id": "ref-broken-9434765919", "priority": 7},
    )  # fmt: skip
    consumer = suite.start_consumer()
    js = await suite.broker("publisher").wait_connected()
    await js.publish(broken.type, broken.to_json())
    good = await suite.emit("ref-after-broken")
    suite.start_relay()
    await eventually(lambda: suite.applications(good.id))

    dead = await _dead_letter(consumer.broker, broken.id)
    assert dead.headers is not None
    reason = dead.headers[DEAD_LETTER_REASON_HEADER]
    assert "does not match its contract" in reason and "person_id: missing" in reason and "priority" in reason
    assert "9434765919" not in reason and dead.headers[DEAD_LETTER_DELIVERIES_HEADER] == "1"
    assert await suite.applications(broken.id) == 0


async def _publish_before_the_consumer_runs(suite: Suite, events: list[CloudEvent], copies: int = 1) -> None:
    """Events waiting in the stream, so the consumer's first fetch takes them as one batch."""
    js = await suite.broker("publisher").wait_connected()
    for event in events:
        for copy in range(copies):
            await js.publish(event.type, event.to_json(), headers={Header.MSG_ID.value: f"{event.id}-{copy}"})


async def test_a_fetched_batch_is_applied_in_one_transaction_each_event_once(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_by_one: list[object] = []
    original = EventConsumer.handle

    async def counting(self: EventConsumer, message: object) -> object:
        one_by_one.append(message)
        return await original(self, message)  # type: ignore[arg-type]

    monkeypatch.setattr(EventConsumer, "handle", counting)
    events = [
        make_event("triage", "referral", "received", {"referral_id": f"ref-b{i}", "person_id": "p-1"})
        for i in range(6)
    ]
    await _publish_before_the_consumer_runs(suite, events[:3])
    async with suite.consumer_db.transaction() as session:  # applied before: a redelivery
        await suite.handle(session, events[0])
        session.add(InboxMessage(consumer=DURABLE, event_id=events[0].id, subject=events[0].type))
    await _publish_before_the_consumer_runs(suite, events[3:], copies=2)  # twice in one batch
    consumer = suite.start_consumer()
    await eventually(lambda: _count_is(suite, 6))
    await eventually(lambda: _consumer_idle(consumer))
    for event in events:
        assert await suite.applications(event.id) == 1
    assert one_by_one == [], "a healthy batch is applied together"


async def test_a_batch_holding_a_failing_event_is_applied_one_by_one(suite: Suite) -> None:
    events = [
        make_event("triage", "referral", "received", {"referral_id": f"ref-f{i}", "person_id": "p-1"})
        for i in range(5)
    ]
    suite.permanent.add(events[2].id)
    await _publish_before_the_consumer_runs(suite, events)
    consumer = suite.start_consumer()
    await eventually(lambda: _count_is(suite, 4))
    dead = await _dead_letter(consumer.broker, events[2].id)
    assert dead.headers is not None and dead.headers[DEAD_LETTER_DELIVERIES_HEADER] == "1"
    await eventually(lambda: _consumer_idle(consumer))
    for event in events:
        assert await suite.applications(event.id) == (0 if event is events[2] else 1)


async def test_concurrent_relays_share_the_outbox_without_double_sending(suite: Suite, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("row claiming with FOR UPDATE SKIP LOCKED is PostgreSQL's; SQLite runs one relay")
    events = []
    async with suite.producer_db.transaction() as session:
        for i in range(300):
            event = make_event(
                "triage", "referral", "received", {"referral_id": f"ref-{i}", "person_id": "p-1"}
            )
            add_event(session, event)
            events.append(event)
    relays = [suite.start_relay(f"replica-{n}") for n in range(3)]
    await eventually(lambda: _unpublished_is(suite, 0), timeout=30)
    published = [await _published_by(relay) for relay in relays]
    assert sum(published) == 300, published


# --- helpers -------------------------------------------------------------------------------


async def _count_is(suite: Suite, expected: int) -> bool:
    return await suite.applications() == expected


async def _unpublished_is(suite: Suite, expected: int) -> bool:
    return await suite.unpublished() == expected


async def _stream_has(broker: Broker, subject: str, expected: int) -> bool:
    return await stream_messages(broker, subject) == expected


async def _consumer_idle(consumer: EventConsumer) -> bool:
    js = await consumer.broker.wait_connected()
    info = await js.consumer_info(consumer.settings.stream_name, consumer.durable)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def _published_by(relay: OutboxRelay) -> int:
    from shared.metrics import OUTBOX_PUBLISHED

    return int(OUTBOX_PUBLISHED.labels(relay.service)._value.get())


async def _dead_letter(broker: Broker, event_id: str):  # type: ignore[no-untyped-def]
    js = await broker.wait_connected()
    subject = dead_letter_subject(DURABLE)

    async def find() -> object | None:
        sub = await js.subscribe(subject, ordered_consumer=True)
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=0.5)
                except TimeoutError:
                    return None
                with contextlib.suppress(ValueError):
                    if json.loads(msg.data).get("id") == event_id:
                        return msg
        finally:
            await sub.unsubscribe()

    return await eventually(find, timeout=30)


# --- the pipeline's gauges (deploy/prometheus/alerts.yaml), set by the real relay and consumer ---


async def _drained(suite: Suite) -> bool:
    return await suite.unpublished() == 0


def _gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_the_relay_reports_its_backlog_and_the_age_of_its_oldest_event(
    suite: Suite, nats_server: EmbeddedNatsServer
) -> None:
    relay = suite.start_relay("gauged")
    await relay.broker.wait_connected()
    await suite.emit("ref-gauged-0")
    await eventually(lambda: _drained(suite))
    await eventually(lambda: _gauge("cmh_outbox_oldest_unpublished_seconds", service="gauged") == 0)

    nats_server.stop()
    await suite.emit("ref-gauged-1")
    await suite.emit("ref-gauged-2")
    # Each failed pass counts what waits, and how long the oldest has (it only grows while away).
    await eventually(lambda: _gauge("cmh_outbox_backlog", service="gauged") == 2)
    first = await eventually(lambda: _gauge("cmh_outbox_oldest_unpublished_seconds", service="gauged"))
    await eventually(lambda: (_gauge("cmh_outbox_oldest_unpublished_seconds", service="gauged") or 0) > first)

    nats_server.start()
    await eventually(lambda: _drained(suite), timeout=30)
    await eventually(lambda: _gauge("cmh_outbox_oldest_unpublished_seconds", service="gauged") == 0)
    assert _gauge("cmh_outbox_backlog", service="gauged") == 0


async def test_the_consumer_reports_its_lag_progress_and_dead_letters(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(EventConsumer, "metrics_interval", 0.3)
    suite.start_relay()
    events = [await suite.emit(f"ref-lag-{i}") for i in range(3)]
    await eventually(lambda: _drained(suite))
    poison = await suite.emit("ref-lag-poison")
    suite.poison.add(poison.id)
    await eventually(lambda: _drained(suite))

    before = time.time()
    consumer = suite.start_consumer()
    labels = {"service": "careplan", "durable": DURABLE}
    # Its first look, before the first fetch: all four wait (JetStream's own count).
    await eventually(lambda: _gauge("cmh_consumer_pending", **labels) == 4, interval=0.02)
    for event in events:
        await eventually(lambda event=event: suite.applications(event.id))
    # The poison one parked: nothing pending, one dead letter, progress recorded after the start.
    await eventually(lambda: _gauge("cmh_dead_letters", **labels) == 1, timeout=30)
    await eventually(lambda: _gauge("cmh_consumer_pending", **labels) == 0)
    assert (_gauge("cmh_consumer_last_progress_timestamp_seconds", **labels) or 0) >= before
    assert await stream_messages(consumer.broker, dead_letter_subject(DURABLE)) == 1
