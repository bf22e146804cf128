"""Durable JetStream consumers that apply each event once.

Each event is handled in one database transaction together with an inbox row keyed by
(consumer, event id): a redelivery finds the row and is acknowledged without being applied again,
and two replicas racing on the same event collide on the inbox key so only one commits. A fetched
batch is first tried in one transaction (all or nothing); if anything in it fails, its events are
applied one by one, so each gets its own outcome. An event whose data breaks its subject's contract
(`contracts/events.py`, checked before any handler runs) never reaches a handler. A handler that
raises is retried with exponential backoff (negative acknowledgement with a delay); after
`consumer_max_deliveries` tries, or at once for `PermanentEventError`, undecodable messages and
broken contracts, the event is parked on `cmh.deadletter.<durable>` with the reason, acknowledged,
and the consumer goes on with later events. Failures of our own infrastructure (the database
unreachable or restarting) say nothing about the event: they are retried for as long as it
takes, never dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, Header
from opentelemetry.trace import Span, SpanKind
from pydantic import ValidationError
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.events import EventPayload
from shared.background import BackgroundWorker, Every
from shared.broker import Broker, backoff_delay, connect_bus, ensure_stream
from shared.bus_access import ADMIN
from shared.db import Database
from shared.events import CloudEvent, ContractBroken, dead_letter_subject
from shared.messaging_models import InboxMessage
from shared.metrics import CONSUMER_PENDING, CONSUMER_PROGRESS, DEAD_LETTERS, EVENTS_CONSUMED
from shared.settings import Settings
from shared.sqltypes import utcnow
from shared.tracing import span

log = logging.getLogger("cmh.consumer")

EventHandler = Callable[[AsyncSession, CloudEvent], Awaitable[None]]
BatchPreparer = Callable[[AsyncSession, Sequence[CloudEvent]], Awaitable[None]]
_DURABLE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")

DEAD_LETTER_REASON_HEADER = "Cmh-Dead-Letter-Reason"
DEAD_LETTER_CONSUMER_HEADER = "Cmh-Consumer"
DEAD_LETTER_SUBJECT_HEADER = "Cmh-Original-Subject"
DEAD_LETTER_DELIVERIES_HEADER = "Cmh-Deliveries"


class PermanentEventError(Exception):
    """Raised by a handler for an event that can never be applied; the message must hold no PII."""


class Outcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    RETRIED = "retried"
    DEAD_LETTERED = "dead_lettered"


@dataclass(frozen=True)
class Subscription:
    """What one durable consumer listens to, the payload model(s) its handler is written for
    (`contracts/events.py`: every subject it takes must be one of them, which
    `tests/shared/test_event_contracts.py` checks from the subscription table), and how it applies
    an event. `prepare`, if given, runs once per batch applied together, in its transaction before
    the handlers, with the batch's new events: it loads what the handlers will read in a few
    set-based statements instead of a few per event (issue 23). Handlers must give the same result
    without it, since an event applied on its own (a retry, a batch that failed) never has it."""

    durable: str
    subjects: Sequence[str]
    handler: EventHandler
    model: type[EventPayload] | tuple[type[EventPayload], ...] = EventPayload
    prepare: BatchPreparer | None = None

    @property
    def models(self) -> tuple[type[EventPayload], ...]:
        return self.model if isinstance(self.model, tuple) else (self.model,)

    def __post_init__(self) -> None:
        if not _DURABLE.match(self.durable):
            raise ValueError(f"invalid durable name {self.durable!r}")
        if not self.subjects:
            raise ValueError("a subscription needs at least one subject")


class MisattributedEvent(ValueError):
    """An event whose type or source is not the subject it arrived on: on a closed bus the
    subject names the producer (shared/bus_access.py), so such an event claims to be another's."""


def event_from(message: Msg) -> CloudEvent:
    """The CloudEvent a message carries, if it is what its subject says it is."""
    event = CloudEvent.from_json(message.data)
    if event.type != message.subject or event.source != f"/cmh/{event.service}":
        raise MisattributedEvent("the event's type or source does not match the subject it came on")
    return event


def consumer_config(settings: Settings, durable: str, subjects: Sequence[str]) -> ConsumerConfig:
    """The durable consumer a subscription reads through (made by the provisioner on a closed
    bus, by the consumer itself on an open one)."""
    return ConsumerConfig(
        durable_name=durable,
        name=durable,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.consumer_ack_wait_seconds,
        # Redelivery is bounded by our own count (so the reason can be recorded), not the server's.
        max_deliver=-1,
        max_ack_pending=1000,
        filter_subjects=list(subjects),
    )


BusPlan = Mapping[str, Mapping[str, Sequence[str]]]  # identity → durable → subjects


async def provision_bus(settings: Settings, plan: BusPlan) -> int:
    """As the admin: the stream, and every process's durable consumers as they declare them (a
    changed filter is applied to the existing durable). Returns how many durables there are."""
    connection = await connect_bus(settings, ADMIN, connect_timeout=2, max_reconnect_attempts=3)
    try:
        js = connection.jetstream(timeout=10)
        await ensure_stream(js, settings)
        count = 0
        for durables in plan.values():
            for durable, subjects in durables.items():
                await js.add_consumer(settings.stream_name, consumer_config(settings, durable, subjects))
                count += 1
        return count
    finally:
        await connection.close()


def is_transient(exc: BaseException) -> bool:
    """The database (or the network to it) failed, not the event: connection refused or dropped,
    a restart, a timeout."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError | OSError | TimeoutError)


def _safe_reason(exc: BaseException) -> str:
    # Exception text from drivers can echo row values; only our own permanent errors promise none.
    if isinstance(exc, PermanentEventError):
        return f"PermanentEventError: {exc}"[:500]
    return f"{type(exc).__module__}.{type(exc).__qualname__}"[:500]


async def dead_letter_depth(js: Any, stream: str, durable: str) -> int:
    """How many dead letters of a durable the stream holds (one stream-info call, filtered to its
    dead-letter subject, which every identity may make for its own durables)."""
    info = await js.stream_info(stream, subjects_filter=dead_letter_subject(durable))
    return int(sum((info.state.subjects or {}).values()))


class EventConsumer(BackgroundWorker):
    # How often the lag gauges are refreshed from JetStream (a consumer-info and a stream-info
    # call): cheap against a fetch loop that runs every second while idle.
    metrics_interval: float = 10.0

    def __init__(
        self, db: Database, broker: Broker, settings: Settings, service: str, subscription: Subscription
    ) -> None:
        super().__init__()
        self.task_name = f"consumer-{subscription.durable}"
        self.db = db
        self.broker = broker
        self.settings = settings
        self.service = service
        self.subscription = subscription
        self._pull: Any = None
        self._prune = Every(3600)
        self.gauges_due = Every(self.metrics_interval)

    @property
    def durable(self) -> str:
        return self.subscription.durable

    def consumer_config(self) -> ConsumerConfig:
        return consumer_config(self.settings, self.durable, self.subscription.subjects)

    async def stop(self, grace: float = 0.0) -> None:
        await super().stop(grace)
        if self._pull is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pull.unsubscribe(), timeout=2)
            self._pull = None

    async def run(self) -> None:
        failures = 0
        while not self.stopping:
            back = self.broker.next_reconnect()  # before the attempt, as the outbox relay does
            try:
                js = await self.broker.wait_connected()
                if self.settings.bus_closed:
                    # Bound, never made or changed here: what it reads is the provisioner's choice.
                    await js.consumer_info(self.settings.stream_name, self.durable)
                else:
                    await js.add_consumer(self.settings.stream_name, self.consumer_config())
                pull = self._pull = await js.pull_subscribe_bind(
                    durable=self.durable, stream=self.settings.stream_name
                )
                failures = 0
                CONSUMER_PROGRESS.labels(self.service, self.durable).set_to_current_time()
                while not self.stopping:
                    if self.gauges_due.due():
                        await self.refresh_gauges(js)
                    try:
                        messages = await pull.fetch(batch=self.settings.consumer_batch_size, timeout=1)
                    except TimeoutError:
                        with self.busy():  # database work: a stop lets it end rather than cut it
                            await self._maybe_prune()
                        continue
                    with self.busy():
                        if len(messages) > 1 and await self.handle_together(messages):
                            continue
                        for index, message in enumerate(messages):
                            if self.stopping:
                                await self._hand_back(messages[index:])
                                break
                            await self.handle(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = backoff_delay(failures, cap=self.settings.broker_backoff_max_seconds)
                log.warning(
                    "consumer paused",
                    extra={
                        "consumer": self.durable,
                        "error": type(exc).__name__,
                        "retry_in": round(delay, 2),
                    },
                )
                if await self.broker.pause(delay, back):
                    failures = 0  # NATS is back: consume again now, not when the backoff ends

    async def refresh_gauges(self, js: Any) -> None:
        """The consumer's lag and dead-letter depth from JetStream; never fails the loop."""
        try:
            async with asyncio.timeout(2):
                info = await js.consumer_info(self.settings.stream_name, self.durable)
                pending = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
                CONSUMER_PENDING.labels(self.service, self.durable).set(pending)
                if pending == 0:  # caught up: no lag, whenever it last had something to apply
                    CONSUMER_PROGRESS.labels(self.service, self.durable).set_to_current_time()
                depth = await dead_letter_depth(js, self.settings.stream_name, self.durable)
                DEAD_LETTERS.labels(self.service, self.durable).set(depth)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug(
                "consumer gauges not refreshed", extra={"consumer": self.durable, "error": type(exc).__name__}
            )

    def _progressed(self) -> None:
        CONSUMER_PROGRESS.labels(self.service, self.durable).set_to_current_time()

    def _check(self, event: CloudEvent) -> None:
        """The event's payload against its contract and the model(s) the handler reads."""
        payload = event.payload
        if not isinstance(payload, self.subscription.models):
            names = ", ".join(model.__name__ for model in self.subscription.models)
            raise ContractBroken(
                f"{event.type} is a {type(payload).__name__}, not what {self.durable} reads ({names})"
            )

    async def _hand_back(self, messages: Sequence[Msg]) -> None:
        """Shutting down: messages fetched but not applied go back at once (nak, no delay), so another
        replica takes them now instead of after the ack wait."""
        for message in messages:
            with contextlib.suppress(Exception):
                await message.nak()

    async def handle(self, message: Msg) -> Outcome:
        """Apply one delivered message and acknowledge it as its outcome requires."""
        deliveries = message.metadata.num_delivered if message.metadata else 1
        try:
            event = event_from(message)
        except MisattributedEvent as exc:
            return await self._dead_letter(message, None, str(exc), deliveries)
        except (ValidationError, ValueError):
            return await self._dead_letter(message, None, "undecodable CloudEvent", deliveries)
        try:
            self._check(event)
        except ContractBroken as exc:
            return await self._dead_letter(message, event, str(exc), deliveries)

        try:
            outcome = await self.apply(event)
        except Exception as exc:
            reason = _safe_reason(exc)
            log.warning(
                "event handler failed",
                extra={
                    "consumer": self.durable,
                    "event_id": event.id,
                    "error": reason,
                    "deliveries": deliveries,
                },
            )
            if not is_transient(exc) and (
                isinstance(exc, PermanentEventError) or deliveries >= self.settings.consumer_max_deliveries
            ):
                return await self._dead_letter(message, event, reason, deliveries)
            # An outage is retried briskly so work resumes soon after it ends; a failing event slowly.
            cap = 5.0 if is_transient(exc) else 60.0
            delay = backoff_delay(deliveries, base=self.settings.consumer_retry_base_seconds, cap=cap)
            await message.nak(delay=delay)
            EVENTS_CONSUMED.labels(self.service, self.durable, Outcome.RETRIED).inc()
            return Outcome.RETRIED
        await message.ack()
        EVENTS_CONSUMED.labels(self.service, self.durable, outcome).inc()
        self._progressed()
        return outcome

    async def handle_together(self, messages: Sequence[Msg]) -> bool:
        """Apply a fetched batch in one transaction (one inbox read, one inbox insert, one commit,
        instead of each per event: under load most of a consumer's cost). Returns False, having
        changed nothing, if any message cannot be decoded or any handler fails, so the caller
        applies them one by one with the usual retry and dead-letter for each."""
        events: list[CloudEvent] = []
        for message in messages:
            try:
                event = event_from(message)
                self._check(event)  # a broken contract is dead-lettered one by one
            except (ValidationError, ValueError):
                return False
            events.append(event)
        outcomes: list[Outcome] = []
        try:
            async with self.db.transaction() as session:
                seen = set(
                    (
                        await session.scalars(
                            select(InboxMessage.event_id).where(
                                InboxMessage.consumer == self.durable,
                                InboxMessage.event_id.in_({event.id for event in events}),
                            )
                        )
                    ).all()
                )
                new: list[CloudEvent] = []
                for event in events:
                    if event.id not in seen:  # applied before, or twice in this batch
                        seen.add(event.id)
                        new.append(event)
                if new:
                    # One executemany of plain rows (ORM objects for them were a tenth of a batch's
                    # CPU); a racing replica's inbox rows fail here, before any work.
                    now = utcnow()
                    await session.execute(
                        insert(InboxMessage),
                        [
                            {
                                "consumer": self.durable,
                                "event_id": e.id,
                                "subject": e.type,
                                "processed_at": now,
                            }
                            for e in new
                        ],
                    )
                if new and self.subscription.prepare is not None:
                    await self.subscription.prepare(session, new)
                applying = {id(event) for event in new}
                for event in events:
                    if id(event) not in applying:
                        outcomes.append(Outcome.DUPLICATE)
                        continue
                    with self._span(event):
                        await self.subscription.handler(session, event)
                    outcomes.append(Outcome.APPLIED)
        except Exception:
            return False  # rolled back: one by one, each with its own outcome
        for message, outcome in zip(messages, outcomes, strict=True):
            await message.ack()
            EVENTS_CONSUMED.labels(self.service, self.durable, outcome).inc()
        self._progressed()
        return True

    async def apply(self, event: CloudEvent) -> Outcome:
        """Run the handler and record the inbox row in one transaction, unless already applied."""
        with self._span(event):
            return await self._apply(event)

    def _span(self, event: CloudEvent) -> AbstractContextManager[Span]:
        """The consumer's span for one event: a child of the span that made it (the event's
        `traceparent`), so the trace runs on from the request across the bus."""
        return span(
            self.service,
            f"process {event.type}",
            kind=SpanKind.CONSUMER,
            parent=event.traceparent,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "process",
                "messaging.destination.name": event.nats_subject,
                "messaging.consumer.group.name": self.durable,
                "messaging.message.id": event.id,
            },
        )

    async def _apply(self, event: CloudEvent) -> Outcome:
        try:
            async with self.db.transaction() as session:
                if await self._applied(session, event.id):
                    return Outcome.DUPLICATE
                session.add(InboxMessage(consumer=self.durable, event_id=event.id, subject=event.type))
                try:
                    await session.flush()
                except IntegrityError:
                    # Another replica is applying (or has applied) the same event.
                    return Outcome.DUPLICATE
                await self.subscription.handler(session, event)
            return Outcome.APPLIED
        except IntegrityError:
            # The racing replica committed first: our inbox insert lost at commit time.
            async with self.db.session() as session:
                if await self._applied(session, event.id):
                    return Outcome.DUPLICATE
            raise

    async def _applied(self, session: AsyncSession, event_id: str) -> bool:
        found = await session.scalar(
            select(InboxMessage.event_id).where(
                InboxMessage.consumer == self.durable, InboxMessage.event_id == event_id
            )
        )
        return found is not None

    async def _dead_letter(
        self, message: Msg, event: CloudEvent | None, reason: str, deliveries: int
    ) -> Outcome:
        js = await self.broker.wait_connected()
        msg_id = f"{event.id if event else message.metadata.sequence.stream}:{self.durable}:dead-letter"
        await js.publish(
            dead_letter_subject(self.durable),
            message.data,
            headers={
                Header.MSG_ID.value: msg_id,
                DEAD_LETTER_REASON_HEADER: reason,
                DEAD_LETTER_CONSUMER_HEADER: self.durable,
                DEAD_LETTER_SUBJECT_HEADER: message.subject,
                DEAD_LETTER_DELIVERIES_HEADER: str(deliveries),
            },
        )
        await message.ack()
        log.error(
            "event dead-lettered",
            extra={
                "consumer": self.durable,
                "event_id": event.id if event else None,
                "reason": reason,
                "deliveries": deliveries,
            },
        )
        EVENTS_CONSUMED.labels(self.service, self.durable, Outcome.DEAD_LETTERED).inc()
        self._progressed()  # parked, and the consumer goes on: not a stall (cmh_dead_letters says it)
        return Outcome.DEAD_LETTERED

    async def _maybe_prune(self) -> None:
        if not self._prune.due():
            return
        cutoff = utcnow() - timedelta(days=self.settings.inbox_retention_days)
        async with self.db.transaction() as session:
            await session.execute(
                delete(InboxMessage).where(
                    InboxMessage.consumer == self.durable, InboxMessage.processed_at < cutoff
                )
            )
