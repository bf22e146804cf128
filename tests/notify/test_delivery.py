"""The delivery worker's claim (heads only, each by one replica) and a subscription's end, on
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from fhir.resources.R4B.subscription import Subscription
from prometheus_client import REGISTRY
from sqlalchemy import select

from services.notify.delivery import DeliveryWorker
from services.notify.models import NotifyDelivery, NotifySubscription
from shared.db import Database
from shared.sqltypes import utcnow
from tests.notify.conftest import PARTNER_HEADERS, Notify, Receiver, referral
from tests.notify.test_api import count, counted
from tests.support import eventually


async def test_only_heads_are_claimed_and_each_by_one_replica(notify: Notify, receiver: Receiver) -> None:
    worker: DeliveryWorker = notify.app.state.workers[0]
    await worker.stop()  # this test plays both replicas' claims itself
    await notify.subscribe(receiver.url)
    await notify.publish(
        *(referral("received", f"ref-{i}", 1, "received") for i in range(6)),
        referral("routed", "ref-0", 2, "routed"),  # queued behind ref-0's first: not a head
    )
    await eventually(lambda: counted(notify, 7, NotifyDelivery))
    db: Database = notify.app.state.db
    replica_db = Database(db.url, schema=db.schema, pool_size=2)
    try:
        replica = DeliveryWorker(replica_db, worker.settings, asyncio.Event(), utcnow)
        first, second = await asyncio.gather(
            worker.claim(exclude=set(), subscriptions=8), replica.claim(exclude=set(), subscriptions=8)
        )
        mine = [d.resource_key for group in first.values() for d in group]
        theirs = [d.resource_key for group in second.values() for d in group]
        assert not set(mine) & set(theirs)
        assert sorted(mine + theirs) == [f"ServiceRequest/ref-{i}" for i in range(6)]
        assert all(d.event_number != 7 for group in (*first.values(), *second.values()) for d in group)
        # Leased: nobody else takes them until sent or the lease runs out.
        assert await replica.claim(exclude=set(), subscriptions=8) == {}
    finally:
        await replica_db.dispose()
    assert receiver.requests == []


async def test_a_subscription_past_its_end_is_off_and_queues_nothing(
    notify: Notify, receiver: Receiver
) -> None:
    end = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    body = {
        "resourceType": "Subscription",
        "status": "active",
        "reason": "Until the contract ends",
        "criteria": "ServiceRequest",
        "end": end.isoformat().replace("+00:00", "Z"),
        "channel": {"type": "rest-hook", "endpoint": receiver.url},
    }
    created = (
        await notify.client.post("/notify/fhir/Subscription", json=body, headers=PARTNER_HEADERS)
    ).json()
    assert created["end"] == end.isoformat()
    async with notify.app.state.db.transaction() as session:
        row = await session.scalar(select(NotifySubscription).where(NotifySubscription.id == created["id"]))
        assert row is not None
        row.end = datetime.now(UTC) - timedelta(seconds=1)  # as if the end has come
    await notify.publish(referral("received", "ref-a", 1, "received"))

    async def off() -> dict[str, object] | None:
        body = (await notify.read(created["id"])).json()
        return body if body["status"] == "off" else None

    Subscription.model_validate(await eventually(off))
    assert await count(notify, NotifyDelivery) == 0 and receiver.requests == []


async def test_a_stop_lets_the_send_under_way_finish_or_hands_its_deliveries_back(
    notify: Notify, receiver: Receiver
) -> None:
    worker: DeliveryWorker = notify.app.state.workers[0]
    leased = NotifyDelivery.leased_until.is_not(None)
    receiver.delay = 0.5
    await notify.subscribe(receiver.url)
    await notify.publish(*(referral("prioritised", "ref-a", v, "received") for v in (1, 2, 3)))
    await eventually(lambda: len(receiver.requests) == 1)
    await worker.stop(grace=5)  # graceful: the send under way is answered and recorded
    assert await count(notify, NotifyDelivery, NotifyDelivery.state == "delivered") == 1
    assert await count(notify, NotifyDelivery, leased) == 0
    worker.start()
    await eventually(lambda: len(receiver.requests) == 2)
    await worker.stop()  # no grace: cut short, and handed back at once (not left to its lease)
    assert await count(notify, NotifyDelivery, leased) == 0
    assert await count(notify, NotifyDelivery, NotifyDelivery.state == "pending") == 2
    receiver.delay = 0
    worker.start()
    await eventually(lambda: counted(notify, 3, NotifyDelivery, NotifyDelivery.state == "delivered"))
    # At least once: the cut-short one went again under the same id; a receiver drops the repeat.
    first_seen = list(dict.fromkeys((r.delivery_id, r.version) for r in receiver.requests))
    assert [version for _, version in first_seen] == [1, 2, 3]


async def test_the_webhook_backlog_gauges_count_pending_deliveries(
    notify: Notify, receiver: Receiver
) -> None:
    """`cmh_webhook_backlog` and the oldest pending delivery's age, counted by the running worker:
    up while the partner answers 503, back to 0 once it takes them."""
    worker: DeliveryWorker = notify.app.state.workers[0]
    worker.gauges_due.seconds = 0.05
    receiver.down = True
    await notify.subscribe(receiver.url)
    await notify.publish(*(referral("received", f"ref-{i}", 1, "received") for i in range(3)))
    await eventually(lambda: REGISTRY.get_sample_value("cmh_webhook_backlog", {"service": "notify"}) == 3)
    await eventually(
        lambda: (
            (REGISTRY.get_sample_value("cmh_webhook_oldest_pending_seconds", {"service": "notify"}) or 0) > 0
        )
    )
    receiver.down = False
    await eventually(lambda: REGISTRY.get_sample_value("cmh_webhook_backlog", {"service": "notify"}) == 0)
    assert REGISTRY.get_sample_value("cmh_webhook_oldest_pending_seconds", {"service": "notify"}) == 0
