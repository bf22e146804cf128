"""The transactional outbox and its relay to JetStream.

`add_event` writes the event row in the caller's transaction, so a fact is published if and only
if the state change that produced it commits. The relay publishes pending rows in commit order with
`Nats-Msg-Id` = event id (JetStream drops a re-publish inside its duplicate window; the consumers'
inbox drops anything later). It is woken as soon as a session that added events commits, polls as
a fallback for rows committed by other processes, and backs off while NATS is unreachable until
the broker reconnects (`Broker.next_reconnect`), which ends the backoff at once. On
PostgreSQL rows are claimed with `FOR UPDATE SKIP LOCKED`, so every replica can run a relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.js.api import Header
from nats.js.errors import NoStreamResponseError
from opentelemetry.trace import SpanKind
from sqlalchemy import delete, func, select, update
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from shared.background import BackgroundWorker, Every
from shared.broker import Broker, backoff_delay, ensure_stream
from shared.db import Database
from shared.events import CloudEvent
from shared.messaging_models import IdempotencyRecord, OutboxMessage
from shared.metrics import (
    OUTBOX_BACKLOG,
    OUTBOX_OLDEST_UNPUBLISHED,
    OUTBOX_PUBLISH_FAILURES,
    OUTBOX_PUBLISHED,
)
from shared.settings import Settings
from shared.sqltypes import utcnow
from shared.tracing import recording, span

log = logging.getLogger("cmh.outbox")

_PENDING_FLAG = "cmh_outbox_pending"
# Relays keyed by the engine they read from, so a commit wakes the relay of its own database.
_relay_wakers: weakref.WeakKeyDictionary[Any, asyncio.Event] = weakref.WeakKeyDictionary()


def add_event(session: AsyncSession, event: CloudEvent) -> None:
    """Stage an event in the session's transaction (published only if the transaction commits)."""
    session.add(
        OutboxMessage(
            event_id=event.id,
            subject=event.nats_subject,
            payload=event.model_dump_json(),
            created_at=utcnow(),
        )
    )
    session.sync_session.info[_PENDING_FLAG] = True


@sa_event.listens_for(Session, "after_commit")
def _wake_relay_after_commit(session: Session) -> None:
    if not session.info.pop(_PENDING_FLAG, False):
        return
    bind = session.get_bind()
    engine = getattr(bind, "engine", bind)
    waker = _relay_wakers.get(engine)
    if waker is not None:
        waker.set()


@sa_event.listens_for(Session, "after_soft_rollback")
def _forget_after_rollback(session: Session, _previous: Any) -> None:
    session.info.pop(_PENDING_FLAG, None)


def age_seconds(since: datetime | None) -> float:
    """Seconds from `since` (UTC; naive is read as UTC, as SQLite gives it back) to now; 0 for None."""
    if since is None:
        return 0.0
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return max(0.0, (utcnow() - since).total_seconds())


async def outbox_summary(db: Database) -> tuple[int, datetime | None]:
    """A database's outbox: events not yet published, and the commit time of the oldest (the
    gauges `cmh status` scrapes)."""
    async with db.session() as session:
        count, oldest = (
            await session.execute(
                select(func.count(), func.min(OutboxMessage.created_at)).where(
                    OutboxMessage.published_at.is_(None)
                )
            )
        ).one()
    return int(count or 0), oldest


class BrokerUnavailable(Exception):
    """JetStream cannot be reached right now; the relay backs off."""


class OutboxRelay(BackgroundWorker):
    def __init__(self, db: Database, broker: Broker, settings: Settings, service: str) -> None:
        super().__init__()
        self.task_name = f"outbox-relay-{service}"
        self.db = db
        self.broker = broker
        self.settings = settings
        self.service = service
        self.wake = asyncio.Event()
        _relay_wakers[db.engine.sync_engine] = self.wake
        self._prune = Every(3600)

    async def run(self) -> None:
        # Nothing to do until the broker has been reached once; commits keep waiting in the table,
        # and the gauges say how many and since when (a broker never reached is a stall too).
        while not self.broker.connected.is_set() and not self.stopping:
            with self.busy(), contextlib.suppress(Exception):
                await self.refresh_gauges()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(self.settings.outbox_poll_seconds, 1.0)):
                    await self.broker.connected.wait()
        failures = 0
        while not self.stopping:
            # Taken before the attempt: a reconnect while it fails still ends the backoff below.
            back = self.broker.next_reconnect()
            try:
                self.wake.clear()
                with self.busy():  # database work: a stop lets it end rather than cut it
                    published = await self.relay_once()
                    failures = 0
                    if published >= self.settings.outbox_batch_size:
                        continue  # more are waiting
                    await self._maybe_prune()
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can lose a cancellation
                # that races with its own timeout, and the relay would never stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.outbox_poll_seconds):
                        await self.wake.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                with self.busy(), contextlib.suppress(Exception):
                    await self.refresh_gauges()
                delay = backoff_delay(failures, cap=self.settings.broker_backoff_max_seconds)
                log.warning(
                    "outbox relay paused",
                    extra={"service": self.service, "error": type(exc).__name__, "retry_in": round(delay, 2)},
                )
                # Not woken by commits (each would be one more failed try while NATS is away), only
                # by NATS coming back: then at once, and the backoff starts over, so a JetStream
                # still recovering its stream is tried again within a fraction of a second.
                if await self.broker.pause(delay, back):
                    failures = 0

    async def flush(self, within: float) -> int:
        """Shutting down: publish what is still pending (committed by requests that finished while
        draining), within `within` seconds. Whatever is left stays in the table for the next relay."""
        published = 0
        with contextlib.suppress(Exception):
            async with asyncio.timeout(within):
                while self.broker.is_connected():
                    sent = await self.relay_once()
                    published += sent
                    if sent < self.settings.outbox_batch_size:
                        break
        return published

    async def relay_once(self) -> int:
        """Publish one batch of pending events; returns how many were published."""
        if not self.broker.is_connected() or self.broker.js is None:
            raise BrokerUnavailable
        if self.db.dialect == "postgresql":
            # Claim rows for the whole publish so that no other replica sends them concurrently.
            async with self.db.transaction() as session:
                rows = await self._pending(session, lock=True)
                if not rows:
                    self._set_gauges(0, None)
                    return 0
                self._set_gauges(None, rows[0].created_at)
                acked, failed = await self._publish(rows)
                await self._mark(session, acked, failed)
        else:
            # SQLite has one writer at a time: don't hold its lock across network calls. A second
            # relay on the same file could double-send; Nats-Msg-Id and the inbox absorb that.
            async with self.db.transaction() as session:
                rows = await self._pending(session, lock=False)
                if not rows:
                    self._set_gauges(0, None)
                    return 0
                self._set_gauges(None, rows[0].created_at)
            acked, failed = await self._publish(rows)
            async with self.db.transaction() as session:
                await self._mark(session, acked, failed)
        OUTBOX_PUBLISHED.labels(self.service).inc(len(acked))
        if not failed and len(rows) < self.settings.outbox_batch_size:
            self._set_gauges(0, None)  # all it found went out (a later commit wakes it again)
        if failed:
            OUTBOX_PUBLISH_FAILURES.labels(self.service).inc(len(failed))
            if not acked:
                raise BrokerUnavailable(f"{len(failed)} events not acknowledged")
        return len(acked)

    async def _pending(self, session: AsyncSession, *, lock: bool) -> Sequence[OutboxMessage]:
        query = (
            select(OutboxMessage)
            .where(OutboxMessage.published_at.is_(None))
            .order_by(OutboxMessage.seq)
            .limit(self.settings.outbox_batch_size)
        )
        if lock:
            query = query.with_for_update(skip_locked=True)
        return (await session.scalars(query)).all()

    async def _publish(self, rows: Sequence[OutboxMessage]) -> tuple[list[int], dict[int, str]]:
        js = self.broker.js
        assert js is not None
        futures: list[tuple[int, asyncio.Future[Any]]] = []
        failed: dict[int, str] = {}
        try:
            for row in rows:
                # Sent in commit order on one connection, so the stream keeps that order.
                with self._publish_span(row):
                    future = await js.publish_async(
                        row.subject,
                        row.payload.encode(),
                        headers={Header.MSG_ID.value: row.event_id},
                        wait_stall=5,
                    )
                futures.append((row.seq, future))
        except Exception as exc:
            for row in rows[len(futures) :]:
                failed[row.seq] = type(exc).__name__
        acked: list[int] = []
        if futures:
            results = await asyncio.wait_for(
                asyncio.gather(*(f for _, f in futures), return_exceptions=True), timeout=10
            )
            for (seq, _), result in zip(futures, results, strict=True):
                if isinstance(result, BaseException):
                    failed[seq] = type(result).__name__
                    if isinstance(result, NoStreamResponseError):
                        with contextlib.suppress(Exception):
                            await ensure_stream(js, self.settings)
                else:
                    acked.append(seq)
        return acked, failed

    def _publish_span(self, row: OutboxMessage) -> AbstractContextManager[object]:
        """The relay's span for sending one event, in the trace of the span that made it (read
        from the event's `traceparent` only when spans are recorded)."""
        if not recording():
            return contextlib.nullcontext()
        return span(
            self.service,
            f"publish {row.subject}",
            kind=SpanKind.PRODUCER,
            parent=json.loads(row.payload).get("traceparent"),
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "send",
                "messaging.destination.name": row.subject,
                "messaging.message.id": row.event_id,
            },
        )

    async def _mark(self, session: AsyncSession, acked: list[int], failed: dict[int, str]) -> None:
        if acked:
            await session.execute(
                update(OutboxMessage).where(OutboxMessage.seq.in_(acked)).values(published_at=utcnow())
            )
        for seq, error in failed.items():
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.seq == seq)
                .values(attempts=OutboxMessage.attempts + 1, last_error=error[:500])
            )

    async def backlog(self) -> int:
        return (await self.pending_summary())[0]

    async def pending_summary(self) -> tuple[int, datetime | None]:
        """How many events wait, and when the oldest of them was committed (one query)."""
        return await outbox_summary(self.db)

    async def refresh_gauges(self) -> None:
        count, oldest = await self.pending_summary()
        self._set_gauges(count, oldest)

    def _set_gauges(self, count: int | None, oldest: datetime | None) -> None:
        """The backlog (None: unchanged, as after a pass that saw only one batch) and the age of the
        oldest pending event (0 when there is none)."""
        if count is not None:
            OUTBOX_BACKLOG.labels(self.service).set(count)
        OUTBOX_OLDEST_UNPUBLISHED.labels(self.service).set(age_seconds(oldest))

    async def _maybe_prune(self) -> None:
        if self._prune.due():
            await self.prune()

    async def prune(self) -> None:
        """Housekeeping: drop published events and expired Idempotency-Keys past retention."""
        cutoff = utcnow() - timedelta(days=self.settings.outbox_retention_days)
        async with self.db.transaction() as session:
            await session.execute(
                delete(OutboxMessage).where(
                    OutboxMessage.published_at.is_not(None), OutboxMessage.published_at < cutoff
                )
            )
            # Expired Idempotency-Keys go with the same hourly housekeeping.
            await session.execute(
                delete(IdempotencyRecord).where(
                    IdempotencyRecord.created_at
                    < utcnow() - timedelta(hours=self.settings.idempotency_retention_hours)
                )
            )
