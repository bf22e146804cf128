"""Notify end to end on SQLite and PostgreSQL, with a real nats-server and a loopback receiver:
signed notifications in version order for the partner's own referrals only, an outage survived in
order and exactly once per delivery id, error after repeated failure and resumption, abandonment
past the window, duplicates absorbed, organisation binding, and refusal of invalid Subscriptions."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.subscription import Subscription
from sqlalchemy import func, select

from services.notify.app import create_app
from services.notify.models import NotifyAttempt, NotifyDelivery, NotifySubscription
from shared.settings import Settings
from tests.notify.conftest import (
    OTHER_HEADERS,
    PARTNER_HEADERS,
    Notify,
    Receiver,
    delivery_state,
    episode,
    referral,
    secret_of,
    subscription_body,
)
from tests.support import eventually, outbox_events, running_service

BASE = "/notify/fhir/Subscription"


def assert_in_order_exactly_once(receiver: Receiver, expected: dict[str, list[int]]) -> None:
    """Per resource: each delivery id answered 2xx exactly once, versions ascending as expected, and
    no request for a version went out before every earlier version of that resource was delivered."""
    delivered = receiver.delivered
    assert len({r.delivery_id for r in delivered}) == len(delivered)
    versions: dict[str, list[int]] = defaultdict(list)
    for request in delivered:
        versions[request.key].append(request.version)
    assert dict(versions) == expected
    done: dict[str, set[int]] = defaultdict(set)
    for request in receiver.requests:
        assert all(v in done[request.key] for v in expected[request.key] if v < request.version), request.key
        if 200 <= request.answered < 300:
            done[request.key].add(request.version)


async def count(notify: Notify, model: Any, *where: Any) -> int:
    async with notify.app.state.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def state_when(
    notify: Notify, subscription_id: str, condition: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The Subscription's delivery state once it meets `condition` (the worker records each answer
    just after the receiver has seen the request)."""

    async def check() -> dict[str, Any] | None:
        state = delivery_state((await notify.read(subscription_id)).json())
        return state if condition(state) else None

    return await eventually(check)  # type: ignore[no-any-return]


async def counted(notify: Notify, expected: int, model: Any, *where: Any) -> bool:
    return await count(notify, model, *where) == expected


async def test_signed_notifications_in_version_order_for_the_partners_own_referrals(
    notify: Notify, receiver: Receiver
) -> None:
    created = await notify.subscribe(
        receiver.url, "ServiceRequest", header=["Authorization: Bearer partner-inbound-token"]
    )
    secret = secret_of(created)
    Subscription.model_validate(created)
    assert created["status"] == "active" and created["channel"]["header"] == ["Authorization: ***"]
    read = (await notify.read(created["id"])).json()
    Subscription.model_validate(read)
    assert not any(e["url"].endswith("/webhook-secret") for e in read["extension"])  # shown once only
    assert "partner-inbound-token" not in json.dumps(read)

    duplicate = referral("received", "ref-a", 1, "received")
    await notify.publish(
        duplicate,
        referral("prioritised", "ref-a", 1, "received"),  # same version: nothing new
        duplicate,  # the same event again
        referral("received", "ref-b", 1, "received"),
        referral("received", "ref-other", 1, "received", organisation="RXN"),  # another organisation's
        referral("received", "ref-nobody", 1, "received", organisation=None),
        referral("routed", "ref-a", 2, "routed"),
        referral("received", "ref-a", 1, "received"),  # late: older than what was queued
        referral("closed", "ref-b", 2, "closed"),
    )
    await eventually(lambda: len(receiver.delivered) == 4)
    await asyncio.sleep(0.3)  # nothing more comes
    assert_in_order_exactly_once(receiver, {"ServiceRequest/ref-a": [1, 2], "ServiceRequest/ref-b": [1, 2]})
    assert await count(notify, NotifyDelivery) == 4

    now = time.time()
    for number, request in enumerate(receiver.delivered, start=1):
        assert secret.startswith("whsec_")
        assert request.signed_with(secret)
        assert request.headers["webhook-id"] == request.delivery_id == request.bundle["id"]
        assert request.signature.startswith("v1,")
        assert not request.signed_with(
            "whsec_" + base64.b64encode(b"another-secret-key-of-32-bytes!!").decode()
        )
        assert abs(int(request.timestamp) - now) < 60
        assert request.headers["content-type"] == "application/fhir+json"
        assert request.headers["authorization"] == "Bearer partner-inbound-token"
        assert request.event_number == str(number)
        bundle = request.bundle
        Bundle.model_validate(bundle)
        assert bundle["id"] == request.delivery_id
        assert bundle["entry"][0]["resource"]["id"] == request.delivery_id
        assert bundle["entry"][1]["fullUrl"] == f"https://api.cmh.example.nhs.uk/fhir/{request.key}"
        assert request.focus["subject"] == {"reference": "Patient/person-1"}
        assert "anxiety" not in request.body.decode() and "lancashire" not in request.body.decode()
    statuses = [(r.key, r.focus["status"]) for r in receiver.delivered]
    assert ("ServiceRequest/ref-a", "completed") in statuses and (
        "ServiceRequest/ref-b",
        "revoked",
    ) in statuses

    state = await state_when(notify, created["id"], lambda s: s["pending"] == 0)
    assert state["eventsSinceStart"] == 4 and state["failedAttempts"] == 0 and state["abandoned"] == 0
    assert state["lastDeliveredAt"]


async def test_an_outage_is_survived_in_order_and_exactly_once_per_delivery_id(
    notify: Notify, receiver: Receiver
) -> None:
    receiver.down = True
    created = await notify.subscribe(receiver.url)
    statuses = ["received", "routed", "closed", "received"]
    await notify.publish(
        *(referral("prioritised", "ref-a", v, statuses[v - 1]) for v in range(1, 5)),
        *(referral("received", "ref-b", v, "received") for v in range(1, 3)),
    )
    await eventually(lambda: len(receiver.requests) >= 8)
    assert not receiver.delivered
    state = await state_when(notify, created["id"], lambda s: s["failedAttempts"] >= 8)
    assert state["pending"] == 6 and "http 503" in state["lastError"]
    assert await count(notify, NotifyAttempt, NotifyAttempt.outcome == "http 503") >= 8
    receiver.down = False
    await eventually(lambda: len(receiver.delivered) == 6)
    assert_in_order_exactly_once(
        receiver, {"ServiceRequest/ref-a": [1, 2, 3, 4], "ServiceRequest/ref-b": [1, 2]}
    )
    retried = {r.delivery_id for r in receiver.requests if r.answered == 503}
    assert retried & {r.delivery_id for r in receiver.delivered}  # retries carry the same id
    secret = secret_of(created)
    assert all(r.signed_with(secret) for r in receiver.requests)
    state = await state_when(notify, created["id"], lambda s: s["pending"] == 0)
    assert state["failedAttempts"] == 0 and "lastError" not in state


async def test_repeated_failure_puts_the_subscription_in_error_and_active_resumes_it(
    notify_settings: Callable[..., Settings], receiver: Receiver
) -> None:
    settings = notify_settings(webhook_failures_to_disable=3)
    async with running_service("notify", create_app, settings) as (client, app):
        notify = Notify(client, app)
        receiver.down = True
        created = await notify.subscribe(
            receiver.url, "ServiceRequest?status=active,revoked", header=["Authorization: Bearer kept"]
        )
        await notify.publish(
            referral("received", "ref-a", 1, "received"),
            referral("routed", "ref-a", 2, "routed"),  # completed: not in the filter
            referral("closed", "ref-a", 3, "closed"),
            referral("received", "ref-late", 2, "routed"),  # completed: not in the filter
            referral("received", "ref-late", 1, "received"),  # late and older: not sent either
        )

        async def in_error() -> dict[str, Any] | None:
            body = (await notify.read(created["id"])).json()
            return body if body["status"] == "error" else None

        errored = await eventually(in_error)
        Subscription.model_validate(errored)
        assert errored["error"] == "3 consecutive delivery failures; last: http 503"
        state = delivery_state(errored)
        assert state["failedAttempts"] == 3 and state["pending"] == 2
        seen = len(receiver.requests)
        assert seen == 3
        status = await client.get(f"{BASE}/{created['id']}/$status", headers=PARTNER_HEADERS)
        assert status.status_code == 200
        Bundle.model_validate(status.json())
        parameters = {p["name"]: p for p in status.json()["entry"][0]["resource"]["parameter"]}
        assert (
            parameters["status"]["valueCode"] == "error" and parameters["type"]["valueCode"] == "query-status"
        )
        assert parameters["error"]["valueCodeableConcept"]["text"] == errored["error"]
        # Paused, not lost: new changes keep queueing, nothing is sent.
        await notify.publish(referral("received", "ref-a", 4, "received"))
        await eventually(lambda: counted(notify, 3, NotifyDelivery))
        await asyncio.sleep(0.3)
        assert len(receiver.requests) == seen

        receiver.down = False
        change = {**errored, "status": "active"}
        change.pop("error")
        stale = await client.put(
            f"{BASE}/{created['id']}", json=change, headers={**PARTNER_HEADERS, "If-Match": 'W/"1"'}
        )
        assert stale.status_code == 412
        OperationOutcome.model_validate(stale.json())
        version = errored["meta"]["versionId"]
        resumed = await client.put(
            f"{BASE}/{created['id']}", json=change, headers={**PARTNER_HEADERS, "If-Match": f'W/"{version}"'}
        )
        assert resumed.status_code == 200, resumed.text
        Subscription.model_validate(resumed.json())
        assert resumed.json()["status"] == "active" and "error" not in resumed.json()
        assert resumed.headers["etag"] == f'W/"{int(version) + 1}"'
        await eventually(lambda: len(receiver.delivered) == 3)
        assert_in_order_exactly_once(receiver, {"ServiceRequest/ref-a": [1, 3, 4]})
        assert [r.focus["status"] for r in receiver.delivered] == ["active", "revoked", "active"]
        # The masked header sent back with the change kept its stored value.
        assert receiver.delivered[-1].headers["authorization"] == "Bearer kept"
        state = await state_when(notify, created["id"], lambda s: s["pending"] == 0)
        assert state["failedAttempts"] == 0


async def test_deliveries_past_the_window_are_abandoned_and_the_next_goes(
    notify_settings: Callable[..., Settings], receiver: Receiver
) -> None:
    settings = notify_settings(webhook_retry_window_seconds=0.5)
    async with running_service("notify", create_app, settings) as (client, app):
        notify = Notify(client, app)
        receiver.down = True
        created = await notify.subscribe(receiver.url)
        await notify.publish(
            referral("received", "ref-a", 1, "received"), referral("routed", "ref-a", 2, "routed")
        )

        state = await state_when(notify, created["id"], lambda s: s["abandoned"] == 2)
        assert state["pending"] == 0
        assert await count(notify, NotifyDelivery, NotifyDelivery.state == "abandoned") == 2
        receiver.down = False
        await notify.publish(referral("closed", "ref-a", 3, "closed"))
        await eventually(lambda: len(receiver.delivered) == 1)
        assert receiver.delivered[0].version == 3 and receiver.delivered[0].event_number == "3"


async def test_care_episodes_and_plans(notify: Notify, receiver: Receiver) -> None:
    episodes = await notify.subscribe(receiver.url, "EpisodeOfCare")
    plans = await notify.subscribe(receiver.url, "CarePlan?status=completed")
    await notify.publish(
        episode("episode", "opened", "ep-1", 1, "open", plan_agreed=False),
        episode("plan", "agreed", "ep-1", 2, "open", plan_agreed=True),
        episode("episode", "discharged", "ep-1", 3, "discharged", plan_agreed=True),
        episode("episode", "opened", "ep-2", None, "open"),  # no version yet: taken as 0
        episode("episode", "opened", "ep-2", None, "open"),
    )
    await eventually(lambda: len(receiver.delivered) == 4)
    await asyncio.sleep(0.3)
    got = [
        (r.key, r.focus["status"], r.bundle["entry"][0]["resource"]["parameter"][0])
        for r in receiver.delivered
    ]
    by_subscription: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for key, status, parameter in got:
        by_subscription[parameter["valueReference"]["reference"]].append((key, status))
    assert sorted(by_subscription[f"Subscription/{episodes['id']}"]) == [
        ("EpisodeOfCare/ep-1", "active"), ("EpisodeOfCare/ep-1", "finished"), ("EpisodeOfCare/ep-2", "active"),
    ]  # fmt: skip
    assert by_subscription[f"Subscription/{plans['id']}"] == [("CarePlan/ep-1", "completed")]
    for request in receiver.delivered:
        Bundle.model_validate(request.bundle)


async def test_subscriptions_are_bound_to_the_organisation_and_idempotent(
    notify: Notify, receiver: Receiver
) -> None:
    body = subscription_body(receiver.url)
    first = await notify.client.post(BASE, json=body, headers={**PARTNER_HEADERS, "Idempotency-Key": "k-1"})
    again = await notify.client.post(BASE, json=body, headers={**PARTNER_HEADERS, "Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 201
    assert again.headers.get("idempotent-replayed") == "true" and again.json() == first.json()
    created = first.json()
    # At the public FHIR base (CMH_PUBLIC_URL here), never notify's own /notify/fhir.
    assert first.headers["location"] == f"https://api.cmh.example.nhs.uk/fhir/Subscription/{created['id']}"
    assert first.headers["etag"] == 'W/"1"'
    assert await count(notify, NotifySubscription) == 1

    missing = await notify.read(created["id"], OTHER_HEADERS)
    assert missing.status_code == 404
    OperationOutcome.model_validate(missing.json())
    listed = await notify.client.get(BASE, headers=OTHER_HEADERS)
    assert listed.status_code == 200 and listed.json()["total"] == 0
    for method in ("put", "delete"):
        kwargs = {"json": body} if method == "put" else {}
        refused = await getattr(notify.client, method)(
            f"{BASE}/{created['id']}", headers=OTHER_HEADERS, **kwargs
        )
        assert refused.status_code == 404
    # Every refused attempt on another partner's subscription is audited as denied (issue 18).
    denied = [
        a["data"] for a in await outbox_events(notify.app, "cmh.notify.audit.recorded")
        if a["data"]["outcome"] == "denied"
    ]  # fmt: skip
    assert [d["action"] for d in denied] == ["read", "update", "update"]
    assert all(d["resource_ids"] == [created["id"]] and d["person_ids"] == [] for d in denied)

    await notify.subscribe(receiver.url, "CarePlan")
    page = (await notify.client.get(BASE, params={"_count": 1}, headers=PARTNER_HEADERS)).json()
    Bundle.model_validate(page)
    assert page["total"] == 2 and len(page["entry"]) == 1
    assert any(link["relation"] == "next" for link in page["link"])
    for entry in page["entry"]:
        Subscription.model_validate(entry["resource"])
    assert (await notify.client.get(BASE, params={"status": "off"}, headers=PARTNER_HEADERS)).json()[
        "total"
    ] == 0
    bad_search = await notify.client.get(BASE, params={"status": "paused"}, headers=PARTNER_HEADERS)
    assert bad_search.status_code == 400
    OperationOutcome.model_validate(bad_search.json())

    receiver.down = True
    await notify.publish(referral("received", "ref-a", 1, "received"))
    await eventually(lambda: counted(notify, 1, NotifyDelivery, NotifyDelivery.state == "pending"))
    deleted = await notify.client.delete(f"{BASE}/{created['id']}", headers=PARTNER_HEADERS)
    assert deleted.status_code == 204
    stopped = (await notify.read(created["id"])).json()
    assert stopped["status"] == "off" and delivery_state(stopped)["abandoned"] == 1
    assert (await notify.client.get(BASE, params={"status": "off"}, headers=PARTNER_HEADERS)).json()[
        "total"
    ] == 1
    await notify.publish(referral("routed", "ref-a", 2, "routed"))  # off: nothing queued
    await asyncio.sleep(0.3)
    assert await count(notify, NotifyDelivery) == 1

    audits = await eventually(lambda: outbox_events(notify.app, "cmh.notify.audit.recorded"))
    actions = {a["data"]["action"] for a in audits}
    assert {"create", "read", "search", "update"} <= actions
    assert all(a["data"]["resource_type"] == "Subscription" and a["data"]["person_ids"] == [] for a in audits)


async def test_invalid_subscriptions_are_refused_and_private_addresses_never_reached(
    notify_settings: Callable[..., Settings], receiver: Receiver
) -> None:
    settings = notify_settings(webhook_allow_private_addresses=False)
    async with running_service("notify", create_app, settings) as (client, app):
        notify = Notify(client, app)
        good = subscription_body("https://ehr.example.nhs.uk/hook")
        cases: list[tuple[dict[str, Any] | str, int, str]] = [
            ({**good, "criteria": "Patient"}, 422, "Subscription.criteria"),
            ({**good, "criteria": "ServiceRequest?status=draft"}, 422, "Subscription.criteria"),
            ({**good, "criteria": "ServiceRequest?_id=1"}, 422, "Subscription.criteria"),
            ({**good, "channel": {**good["channel"], "type": "email"}}, 422, "Subscription.channel.type"),
            ({**good, "channel": {**good["channel"], "endpoint": receiver.url}}, 422, "https"),
            ({**good, "channel": {**good["channel"], "endpoint": "https://127.0.0.1/hook"}}, 422, "loopback"),
            ({**good, "channel": {**good["channel"], "payload": "application/xml"}}, 422, "channel.payload"),
            (
                {**good, "channel": {**good["channel"], "header": ["X-Key: a\r\nX-Evil: b"]}},
                400,
                "channel.header[0]",
            ),
            (
                {**good, "channel": {**good["channel"], "header": [f"X-K{i}: v" for i in range(11)]}},
                400,
                "at most 10",
            ),
            ({**good, "status": "off"}, 400, "Subscription.status"),
            ({**good, "end": "2001-01-01T00:00:00Z"}, 422, "Subscription.end"),
            ({**good, "end": "tomorrow"}, 400, "Subscription.end"),
            ({k: v for k, v in good.items() if k != "reason"}, 400, "Subscription.reason"),
            ({**good, "resourceType": "Patient"}, 400, "resourceType"),
            ("not json", 400, "JSON"),
        ]
        for body, status, says in cases:
            if isinstance(body, str):
                response = await client.post(
                    BASE, content=body, headers={**PARTNER_HEADERS, "Content-Type": "application/fhir+json"}
                )
            else:
                response = await client.post(BASE, json=body, headers=PARTNER_HEADERS)
            assert response.status_code == status, (body, response.text)
            assert response.headers["content-type"].startswith("application/fhir+json")
            outcome = response.json()
            OperationOutcome.model_validate(outcome)
            assert says in outcome["issue"][0]["diagnostics"], outcome
            assert "X-Evil" not in response.text
        assert (
            await client.post(BASE, json=good, headers={**PARTNER_HEADERS, "Accept": "application/xml"})
        ).status_code == 406
        assert await count(notify, NotifySubscription) == 0

        # A name that resolves to loopback is refused when connecting (checked on the resolved
        # address, not only when the Subscription was made): stored directly, as if DNS changed.
        created = (await client.post(BASE, json=good, headers=PARTNER_HEADERS)).json()
        async with app.state.db.transaction() as session:
            row = await session.get(NotifySubscription, created["id"])
            row.endpoint = f"https://localhost:{receiver.port}/hook"
        await notify.publish(referral("received", "ref-a", 1, "received"))
        await eventually(
            lambda: counted(notify, 1, NotifyAttempt, NotifyAttempt.outcome == "refused address")
        )
        assert receiver.requests == []
