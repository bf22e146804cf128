"""The notify service in process, a loopback webhook receiver, and the partner's tokens."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.notify.app import create_app
from shared.events import CloudEvent, make_event
from shared.nats_server import free_port
from shared.settings import Settings
from tests.support import mint_token, running_service, serve

PARTNER = "RW5"
PARTNER_HEADERS = {
    "Authorization": f"Bearer {mint_token('subscription:manage', client_id='partner-ehr', organisation=PARTNER, kind='partner_ehr')}"
}
OTHER_HEADERS = {
    "Authorization": f"Bearer {mint_token('subscription:manage', client_id='other-ehr', organisation='RXN', kind='partner_ehr')}"
}
# Tiny retry times so a whole outage-and-recovery takes well under a second.
FAST = {
    "webhook_retry_base_seconds": 0.05,
    "webhook_retry_max_seconds": 0.2,
    "webhook_poll_seconds": 0.05,
    "webhook_timeout_seconds": 2.0,
    "webhook_allow_private_addresses": True,
    "webhook_failures_to_disable": 1000,
    "public_url": "https://api.cmh.example.nhs.uk/",  # what fullUrls in notifications name
}


@dataclass
class Received:
    delivery_id: str
    timestamp: str
    signature: str
    event_number: str
    headers: dict[str, str]
    body: bytes
    answered: int

    @property
    def bundle(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]

    @property
    def focus(self) -> dict[str, Any]:
        return self.bundle["entry"][1]["resource"]  # type: ignore[no-any-return]

    @property
    def key(self) -> str:
        return f"{self.focus['resourceType']}/{self.focus['id']}"

    @property
    def version(self) -> int:
        return int(self.focus["meta"]["versionId"])

    def signed_with(self, secret: str) -> bool:
        """Checked here with the Standard Webhooks library, as a partner would, not with the
        service's own code (`secret` is the `whsec_` form the partner was handed)."""
        try:
            Webhook(secret).verify(self.body, self.headers, json_parse=False)
        except WebhookVerificationError:
            return False
        return True


@dataclass
class Receiver:
    """A partner's webhook endpoint on loopback: records every request; `down` answers 503."""

    port: int
    down: bool = False
    delay: float = 0.0  # seconds before answering
    requests: list[Received] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def delivered(self) -> list[Received]:
        return [r for r in self.requests if 200 <= r.answered < 300]

    async def hook(self, request: Request) -> Response:
        answer = 503 if self.down else 204
        self.requests.append(
            Received(
                delivery_id=request.headers.get("webhook-id", ""),
                timestamp=request.headers.get("webhook-timestamp", ""),
                signature=request.headers.get("webhook-signature", ""),
                event_number=request.headers.get("x-cmh-event-number", ""),
                headers=dict(request.headers),
                body=await request.body(),
                answered=answer,
            )
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        return Response(status_code=answer)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver(port=free_port())
    server, task = await serve(Starlette(routes=[Route("/hook", hook.hook, methods=["POST"])]), hook.port)
    try:
        yield hook
    finally:
        server.should_exit = True
        await task


class Notify:
    def __init__(self, client: Any, app: Any) -> None:
        self.client = client
        self.app = app

    async def publish(self, *events: CloudEvent) -> None:
        """Onto the real stream, as triage and careplan would (no Nats-Msg-Id: the inbox dedups)."""
        js = await self.app.state.broker.wait_connected()
        for event in events:
            await js.publish(event.type, event.to_json())

    async def subscribe(
        self, endpoint: str, criteria: str = "ServiceRequest", **channel: Any
    ) -> dict[str, Any]:
        body = subscription_body(endpoint, criteria, **channel)
        response = await self.client.post("/notify/fhir/Subscription", json=body, headers=PARTNER_HEADERS)
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    async def read(self, subscription_id: str, headers: dict[str, str] = PARTNER_HEADERS) -> Any:
        return await self.client.get(f"/notify/fhir/Subscription/{subscription_id}", headers=headers)


def subscription_body(endpoint: str, criteria: str = "ServiceRequest", **channel: Any) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "Keep our referrals' status up to date",
        "criteria": criteria,
        "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json", **channel},
    }


def secret_of(created: dict[str, Any]) -> str:
    return next(e["valueString"] for e in created["extension"] if e["url"].endswith("/webhook-secret"))


def delivery_state(resource: dict[str, Any]) -> dict[str, Any]:
    state = next(e for e in resource["extension"] if e["url"].endswith("/delivery-state"))
    return {e["url"]: next(v for k, v in e.items() if k.startswith("value")) for e in state["extension"]}


def referral(
    verb: str,
    referral_id: str,
    version: int,
    status: str,
    *,
    organisation: str | None = PARTNER,
    person: str = "person-1",
    event_id: str | None = None,
) -> CloudEvent:
    data: dict[str, Any] = {
        "referral_id": referral_id,
        "person_id": person,
        "status": status,
        "version": version,
    }
    data.update({"age": 34, "place": "lancashire"})  # more than a notification may carry
    if organisation is not None:
        data["referring_organisation"] = organisation
    event = make_event("triage", "referral", verb, data, subject=referral_id, event_id=event_id)
    # A field a newer triage might add (consumers tolerate it): notify must not pass it on either.
    return event.model_copy(update={"data": {**event.data, "needs": ["anxiety"]}})


def episode(
    entity: str, verb: str, episode_id: str, version: int | None, status: str, **extra: Any
) -> CloudEvent:
    data: dict[str, Any] = {
        "episode_id": episode_id, "referral_id": f"ref-{episode_id}", "person_id": "person-9", "status": status,
        "referring_organisation": PARTNER, **extra,
    }  # fmt: skip
    if version is not None:
        data["version"] = version
    if (entity, verb) == ("plan", "agreed"):
        data.setdefault("agreed_at", "2026-01-05T10:00:00+00:00")
    if (entity, verb) == ("episode", "discharged"):
        data.setdefault("discharged_at", "2026-02-05T10:00:00+00:00")
        data.setdefault("reaccess_until", "2026-08-05T10:00:00+00:00")
    return make_event("careplan", entity, verb, data, subject=episode_id)


@pytest.fixture
def notify_settings(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    return lambda **overrides: make_settings(**{**FAST, **overrides})


@pytest.fixture
async def notify(notify_settings: Callable[..., Settings]) -> AsyncIterator[Notify]:
    async with running_service("notify", create_app, notify_settings()) as (client, app):
        yield Notify(client, app)
