"""The delivery worker: sends queued notifications to partners' endpoints, signed (Standard Webhooks), retried, in order.

A pending delivery is sendable when its subscription is `active`, it is due (`next_attempt_at`), no
other worker holds its lease, and it is the head of its (subscription, resource) queue: no earlier
delivery for that resource is still pending. Heads are claimed by setting a lease (on PostgreSQL
with `FOR UPDATE SKIP LOCKED`, so every replica can run a worker), then sent: up to
`PARALLEL_SUBSCRIPTIONS` subscriptions at once, each one's claimed heads one after another. A crash
mid-send leaves the lease to expire and the delivery is sent again, under the same id (at least
once; receivers drop an id they have seen).

A 2xx answer delivers. Anything else (another status, a redirect, a timeout, a connection error,
an address refused when the name was resolved) is recorded as an attempt with a short outcome, the
delivery is retried after `next_attempt_delay`, and the subscription's consecutive failures grow:
at `webhook_failures_to_disable` it goes to `error` (nothing is lost: deliveries stay pending and
events keep queueing until the partner sets it active again). A delivery still failing
`webhook_retry_window_seconds` after it was queued is abandoned, and the next one for its resource
may go.

Only globally routable addresses are connected to (unless `webhook_allow_private_addresses`): the
check is made on the addresses a name resolves to at connection time, inside the HTTP client's
network backend, so a name cannot be re-pointed between the check and the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from fastapi import FastAPI
from prometheus_client import Counter
from sqlalchemy import delete, exists, func, or_, select, update
from sqlalchemy.orm import aliased

from services.notify.domain import (
    failure_summary,
    next_attempt_delay,
    should_abandon,
    should_disable,
    signature_headers,
)
from services.notify.models import (
    ABANDONED,
    ACTIVE,
    DELIVERED,
    ERROR,
    PENDING,
    NotifyAttempt,
    NotifyDelivery,
    NotifySubscription,
)
from services.notify.store import DeliveryContext, register_context
from shared.background import BackgroundWorker, Every
from shared.broker import backoff_delay
from shared.db import Database
from shared.deps import service_state
from shared.http import public_url
from shared.metrics import WEBHOOK_BACKLOG, WEBHOOK_OLDEST_PENDING
from shared.outbound import RefusedAddress, guarded_client
from shared.outbox import age_seconds
from shared.settings import Settings

log = logging.getLogger("cmh.notify.delivery")

PARALLEL_SUBSCRIPTIONS = 8
HEADS_PER_SUBSCRIPTION = 10  # claimed at once for one subscription (sent one after another)
CLAIM_BATCH = 200
LEASE_MARGIN_SECONDS = 30.0
RETENTION = timedelta(days=30)  # delivered and abandoned deliveries, and attempts, kept this long
USER_AGENT = "cmh-notify/1.0"
MAX_ANSWER_BYTES = 65_536  # of a receiver's answer, read and thrown away

DELIVERY_ATTEMPTS = Counter(
    "cmh_notify_delivery_attempts_total",
    "Webhook delivery attempts, by outcome (2xx, 4xx, 5xx, timeout, connect error, refused address...)",
    ["outcome"],
)

# Standard Webhooks' headers (webhook-id, webhook-timestamp, webhook-signature) come from
# `signature_headers`; this one is ours.
HEADER_EVENT_NUMBER = "X-CMH-Event-Number"
FHIR_JSON = "application/fhir+json"


def webhook_client(settings: Settings) -> httpx.AsyncClient:
    """The one client every delivery of a process goes through."""
    return guarded_client(
        allow_private=settings.webhook_allow_private_addresses,
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30),
        timeout=settings.webhook_timeout_seconds,
        headers={"User-Agent": USER_AGENT},
    )


async def webhook_summary(db: Database) -> tuple[int, datetime | None]:
    """Deliveries pending (whatever their subscription's status), and when the oldest was queued
    (the gauges `cmh status` scrapes)."""
    async with db.session() as session:
        count, oldest = (
            await session.execute(
                select(func.count(), func.min(NotifyDelivery.created_at)).where(
                    NotifyDelivery.state == PENDING
                )
            )
        ).one()
    return int(count or 0), oldest


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    text: str  # short: "http 204", "http 503", "timeout", "connect error", "refused address"...
    duration_ms: int


def channel_headers(stored: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for text in json.loads(stored or "[]"):
        name, _, value = text.partition(":")
        headers[name.strip()] = value.strip(" \t")
    return headers


async def send(
    client: httpx.AsyncClient,
    *,
    endpoint: str,
    secret: str,
    headers: str,
    delivery: NotifyDelivery,
    timeout_seconds: float,
) -> Outcome:
    """POST one notification and classify what happened (the answer's body is never read)."""
    body = delivery.payload.encode()
    timestamp = int(time.time())
    request_headers = {
        **channel_headers(headers),
        "Content-Type": FHIR_JSON,
        **signature_headers(secret, delivery.id, timestamp, delivery.payload),
        HEADER_EVENT_NUMBER: str(delivery.event_number),
    }
    started = time.monotonic()
    try:
        # Bounded as a whole too (name resolution, connection, TLS, the answer's headers).
        async with asyncio.timeout(timeout_seconds * 2 + 1):
            async with client.stream("POST", endpoint, content=body, headers=request_headers) as response:
                status = response.status_code
                # Drain a short answer so the connection can be reused; a long one is cut off.
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read > MAX_ANSWER_BYTES:
                        break
        text = f"http {status}"
        delivered = 200 <= status < 300
    except (httpx.TimeoutException, TimeoutError):
        text, delivered = "timeout", False
    except httpx.ConnectError as exc:
        text = "refused address" if isinstance(exc.__cause__, RefusedAddress) else "connect error"
        delivered = False
    except httpx.HTTPError:
        text, delivered = "transport error", False
    DELIVERY_ATTEMPTS.labels(f"{text[5]}xx" if text.startswith("http ") else text).inc()
    return Outcome(delivered, text, int((time.monotonic() - started) * 1000))


# --- the worker ----------------------------------------------------------------------------------


class DeliveryWorker(BackgroundWorker):
    task_name = "notify-delivery"
    metrics_interval: float = 10.0  # how often the backlog gauges are counted (one query)

    def __init__(
        self, db: Database, settings: Settings, wake: asyncio.Event, clock: Callable[[], datetime]
    ) -> None:
        super().__init__()
        self.db = db
        self.settings = settings
        self.wake = wake
        self.clock = clock
        self.client: httpx.AsyncClient | None = None
        self.inflight: dict[str, asyncio.Task[None]] = {}
        self._prune = Every(3600)
        self.gauges_due = Every(self.metrics_interval)

    @classmethod
    def for_app(cls, app: FastAPI) -> DeliveryWorker:
        """Built by the app's lifespan: the consumer's context registered with the waker; its time
        is the service state's clock (shared/deps.py), the one the routes see."""
        state = service_state(app)
        wake = asyncio.Event()
        base = public_url(state.settings, "/fhir")  # where the partner reads what changed
        register_context(state.db.engine, DeliveryContext(base, wake))
        return cls(state.db, state.settings, wake, state.now)

    async def run(self) -> None:
        self.client = webhook_client(self.settings)
        failures = 0
        try:
            while not self.stopping:
                try:
                    self.wake.clear()
                    if self.gauges_due.due():
                        await self.refresh_gauges()
                    await self.dispatch()
                    await self._maybe_prune()
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failures += 1
                    delay = backoff_delay(failures, cap=self.settings.broker_backoff_max_seconds)
                    log.warning(
                        "notification delivery paused",
                        extra={"error": type(exc).__name__, "retry_in": round(delay, 2)},
                    )
                    await asyncio.sleep(delay)
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.webhook_poll_seconds):
                        await self.wake.wait()
        finally:
            # A graceful stop lets the sends under way finish (each is `busy`; `stop` cancels us at
            # its deadline); whatever is cut short gives its leases back and is sent again (same ids).
            tasks = list(self.inflight.values())
            current = asyncio.current_task()
            try:
                if tasks and not (current and current.cancelling()):
                    await asyncio.wait(tasks)
            finally:
                for task in tasks:
                    task.cancel()
                with contextlib.suppress(BaseException):
                    if tasks:
                        await asyncio.wait(tasks, timeout=2)
                    await self.client.aclose()

    async def refresh_gauges(self) -> None:
        """`cmh_webhook_backlog` and the age of its oldest delivery, from the table."""
        count, oldest = await webhook_summary(self.db)
        WEBHOOK_BACKLOG.labels("notify").set(count)
        WEBHOOK_OLDEST_PENDING.labels("notify").set(age_seconds(oldest))

    async def dispatch(self) -> int:
        """Claim heads for as many subscriptions as there are free slots and start sending them."""
        free = PARALLEL_SUBSCRIPTIONS - len(self.inflight)
        if free <= 0:
            return 0
        claimed = await self.claim(exclude=set(self.inflight), subscriptions=free)
        for subscription_id, deliveries in claimed.items():
            task = asyncio.create_task(
                self.send_in_order(subscription_id, deliveries), name=f"notify-{subscription_id}"
            )
            self.inflight[subscription_id] = task
            task.add_done_callback(lambda _t, key=subscription_id: self._finished(key))
        return sum(len(d) for d in claimed.values())

    def _finished(self, subscription_id: str) -> None:
        task = self.inflight.pop(subscription_id, None)
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.warning(
                "notification sending failed",
                extra={"subscription_id": subscription_id, "error": type(task.exception()).__name__},
            )
        self.wake.set()  # a slot is free, and the next deliveries may be due now

    def lease_seconds(self) -> float:
        return (self.settings.webhook_timeout_seconds * 2 + 1) * HEADS_PER_SUBSCRIPTION + LEASE_MARGIN_SECONDS

    async def claim(self, *, exclude: set[str], subscriptions: int) -> dict[str, list[NotifyDelivery]]:
        """Lease the due heads of up to `subscriptions` subscriptions (oldest first)."""
        now = self.clock()
        earlier = aliased(NotifyDelivery)
        blocked = exists().where(
            earlier.subscription_id == NotifyDelivery.subscription_id,
            earlier.resource_key == NotifyDelivery.resource_key,
            earlier.state == PENDING,
            earlier.seq < NotifyDelivery.seq,
        )
        query = (
            select(NotifyDelivery)
            .join(NotifySubscription, NotifySubscription.id == NotifyDelivery.subscription_id)
            .where(
                NotifyDelivery.state == PENDING,
                NotifySubscription.status == ACTIVE,
                NotifyDelivery.next_attempt_at <= now,
                or_(NotifyDelivery.leased_until.is_(None), NotifyDelivery.leased_until < now),
                ~blocked,
            )
            .order_by(NotifyDelivery.seq)
            .limit(CLAIM_BATCH)
        )
        if exclude:
            query = query.where(NotifyDelivery.subscription_id.not_in(sorted(exclude)))
        if self.db.dialect == "postgresql":
            query = query.with_for_update(of=NotifyDelivery, skip_locked=True)
        claimed: dict[str, list[NotifyDelivery]] = {}
        async with self.db.transaction() as session:
            for delivery in (await session.scalars(query)).all():
                group = claimed.get(delivery.subscription_id)
                if group is None:
                    if len(claimed) >= subscriptions:
                        continue
                    group = claimed[delivery.subscription_id] = []
                if len(group) < HEADS_PER_SUBSCRIPTION:
                    group.append(delivery)
            seqs = [d.seq for group in claimed.values() for d in group]
            if seqs:
                await session.execute(
                    update(NotifyDelivery)
                    .where(NotifyDelivery.seq.in_(seqs))
                    .values(leased_until=now + timedelta(seconds=self.lease_seconds()))
                )
        return claimed

    async def send_in_order(self, subscription_id: str, deliveries: Sequence[NotifyDelivery]) -> None:
        """Send one subscription's claimed heads one after another; stop at the first failure
        (the endpoint is in trouble: the others wait for their own retry times) or when stopping."""
        assert self.client is not None
        remaining = list(deliveries)
        with self.busy():
            try:
                while remaining and not self.stopping:
                    async with self.db.session() as session:
                        subscription = await session.get(NotifySubscription, subscription_id)
                    if subscription is None or subscription.status != ACTIVE:
                        break
                    delivery = remaining[0]
                    outcome = await send(
                        self.client,
                        endpoint=subscription.endpoint,
                        secret=subscription.secret,
                        headers=subscription.headers,
                        delivery=delivery,
                        timeout_seconds=self.settings.webhook_timeout_seconds,
                    )
                    await self.record(subscription_id, delivery, outcome)
                    remaining.pop(0)
                    if not outcome.delivered:
                        break
            finally:
                if remaining:
                    # Unsent (or sent but not recorded: sent again, same id): free for any worker now.
                    with contextlib.suppress(BaseException):
                        await asyncio.shield(self._release(remaining))

    async def _release(self, deliveries: Sequence[NotifyDelivery]) -> None:
        async with self.db.transaction() as session:
            await session.execute(
                update(NotifyDelivery)
                .where(NotifyDelivery.seq.in_([d.seq for d in deliveries]))
                .values(leased_until=None)
            )

    async def record(self, subscription_id: str, sent: NotifyDelivery, outcome: Outcome) -> None:
        """The attempt, the delivery's new state and the subscription's failure count, together."""
        settings = self.settings
        async with self.db.transaction() as session:
            subscription = await session.scalar(
                select(NotifySubscription)
                .where(NotifySubscription.id == subscription_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
            delivery = await session.get(NotifyDelivery, sent.seq, populate_existing=True)
            if subscription is None or delivery is None:
                return
            now = self.clock()
            session.add(
                NotifyAttempt(
                    delivery_id=delivery.id, at=now, outcome=outcome.text, duration_ms=outcome.duration_ms
                )
            )
            delivery.attempts += 1
            delivery.leased_until = None
            if outcome.delivered:
                if delivery.state == PENDING:
                    delivery.state = DELIVERED
                    delivery.delivered_at = now
                subscription.consecutive_failures = 0
                subscription.last_error = None
                subscription.last_delivered_at = now
                return
            subscription.consecutive_failures += 1
            subscription.last_error = failure_summary(subscription.consecutive_failures, outcome.text)
            if delivery.state == PENDING:
                if should_abandon(delivery.created_at, now, settings.webhook_retry_window_seconds):
                    delivery.state = ABANDONED
                    log.warning(
                        "notification abandoned",
                        extra={"subscription_id": subscription_id, "delivery_id": delivery.id},
                    )
                else:
                    delay = next_attempt_delay(
                        delivery.attempts,
                        settings.webhook_retry_base_seconds,
                        settings.webhook_retry_max_seconds,
                        random.random(),  # noqa: S311 - jitter, not security
                    )
                    delivery.next_attempt_at = now + timedelta(seconds=delay)
            if subscription.status == ACTIVE and should_disable(
                subscription.consecutive_failures, settings.webhook_failures_to_disable
            ):
                subscription.status = ERROR
                subscription.version += 1
                subscription.updated_at = now
                log.warning(
                    "subscription put in error",
                    extra={"subscription_id": subscription_id, "last_outcome": outcome.text},
                )

    async def _maybe_prune(self) -> None:
        if not self._prune.due():
            return
        cutoff = self.clock() - RETENTION
        async with self.db.transaction() as session:
            await session.execute(
                delete(NotifyDelivery).where(
                    NotifyDelivery.state.in_((DELIVERED, ABANDONED)), NotifyDelivery.created_at < cutoff
                )
            )
            await session.execute(delete(NotifyAttempt).where(NotifyAttempt.at < cutoff))
