"""The service app factory: problem+json errors, request context, health, readiness (still ready,
NATS degraded, while the broker is away), metrics, and an outbox relay woken by the commit itself
and by the broker coming back."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from prometheus_client import REGISTRY
from pydantic import BaseModel, Field

from cmh.migrations import migrate
from services.triage.app import SPEC
from shared.broker import Broker
from shared.events import make_event
from shared.logs import JsonFormatter
from shared.metrics import metrics_port, render_metrics, serve_metrics
from shared.nats_server import EmbeddedNatsServer, free_port
from shared.outbox import add_event
from shared.service import ServiceSpec, create_service_app
from shared.settings import Settings
from tests.support import eventually, published

NHS_NUMBER = "9434765919"


class PersonIn(BaseModel):
    nhs_number: str = Field(pattern=r"^\d{10}$")
    age: int = Field(ge=0, le=130)


probe = APIRouter(prefix="/triage/probe")


@probe.post("/people")
async def accept_person(person: PersonIn) -> dict[str, str]:
    return {"accepted": "yes"}


@probe.get("/boom/{person_id}")
async def boom(person_id: str) -> dict[str, str]:
    raise RuntimeError(f"database said: duplicate key for {person_id}")


@probe.post("/events")
async def commit_event(request: Request) -> dict[str, str]:
    event = make_event(
        "triage", "referral", "received", {"referral_id": "r-1", "person_id": "p-1"}, subject="r-1"
    )
    async with request.app.state.db.transaction() as session:
        add_event(session, event)
    return {"event_id": event.id}


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://triage") as client:
            yield client


@pytest.fixture
async def settings(make_settings: Callable[..., Settings]) -> Settings:
    settings = make_settings(outbox_poll_seconds=60)  # only a commit can wake the relay in time
    await migrate(
        "triage", settings.database_url_for("triage"), schema=settings.database_schema_for("triage")
    )
    return settings


def probe_app(settings: Settings) -> FastAPI:
    spec = ServiceSpec(
        name=SPEC.name, title=SPEC.title, description="", metadata=SPEC.metadata, routers=[probe]
    )
    return create_service_app(spec, settings)


async def test_health_ready_and_metrics(settings: Settings, nats_server: EmbeddedNatsServer) -> None:
    async with running(probe_app(settings)) as client:
        assert (await client.get("/health")).json()["status"] == "alive"
        ready = await eventually(lambda: _ready(client, nats_ok=True))  # ready first, NATS a moment later
        assert ready.json()["checks"] == {"database": "ok", "nats": "ok"}
        assert _broker_connected("triage") == 1.0

        # The broker away: still ready (the outbox buffers), NATS reported degraded, and the
        # gauge an alert watches says so; /health is liveness and never asks.
        nats_server.stop()
        degraded = await eventually(lambda: _checks(client, nats="degraded"))
        assert degraded.status_code == 200 and degraded.json()["status"] == "ready"
        assert degraded.json()["checks"] == {"database": "ok", "nats": "degraded"}
        assert _broker_connected("triage") == 0.0
        assert (await client.get("/health")).status_code == 200
        nats_server.start()
        await eventually(lambda: _checks(client, nats="ok"), timeout=30)
        # Set by the reconnect callback, which may run a moment after the first call succeeds.
        await eventually(lambda: _broker_connected("triage") == 1.0, timeout=10)

        assert (await client.get("/metrics")).status_code == 404  # not on the API port (issue 18)
        assert (
            'cmh_http_requests_total{method="GET",route="/health",service="triage",status="200"}'
            in render_metrics()[0].decode()
        )


async def test_validation_error_is_problem_json_without_the_input(settings: Settings) -> None:
    async with running(probe_app(settings)) as client:
        response = await client.post(
            "/triage/probe/people", json={"nhs_number": f"{NHS_NUMBER}X", "age": 200}
        )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 422
    assert body["type"].endswith("/validation")
    assert {tuple(e["location"]) for e in body["errors"]} == {("body", "nhs_number"), ("body", "age")}
    assert NHS_NUMBER not in response.text
    assert "200" not in json.dumps(body["errors"])


async def test_unhandled_error_leaks_nothing(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with running(probe_app(settings)) as client:
        response = await client.get(f"/triage/probe/boom/{NHS_NUMBER}", headers={"X-Request-ID": "req-42"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] == "req-42"
    assert response.json()["request_id"] == "req-42"
    assert NHS_NUMBER not in response.text and "duplicate key" not in response.text
    formatter = JsonFormatter("triage")
    # Only the service's own records: the test's httpx client logs its own URL.
    logged = "\n".join(formatter.format(r) for r in caplog.records if not r.name.startswith("httpx"))
    assert NHS_NUMBER not in logged and "duplicate key" not in logged
    assert '"route": "/triage/probe/boom/{person_id}"' in logged


async def test_unknown_route_and_bad_request_id(settings: Settings) -> None:
    async with running(probe_app(settings)) as client:
        response = await client.get("/triage/nothing-here", headers={"X-Request-ID": "bad id\twith spaces"})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] != "bad id\twith spaces"
    assert len(response.headers["x-request-id"]) == 36


async def test_commit_wakes_the_relay_without_waiting_for_the_poll(settings: Settings) -> None:
    watcher = Broker(settings, "watcher")
    watcher.start()
    try:
        async with running(probe_app(settings)) as client:
            await eventually(lambda: _ready(client))
            js = await watcher.wait_connected()
            subscription = await js.subscribe("cmh.triage.referral.received", ordered_consumer=True)
            event_id = (await client.post("/triage/probe/events")).json()["event_id"]
            # The poll interval is 60 s: delivery within the wait below proves the commit woke it.
            message = await subscription.next_msg(timeout=10)
            assert json.loads(message.data)["id"] == event_id
            assert message.headers is not None and message.headers["Nats-Msg-Id"] == event_id
    finally:
        await watcher.close()


async def test_the_relay_resumes_when_nats_is_back_not_when_its_backoff_ends(
    make_settings: Callable[..., Settings], nats_server: EmbeddedNatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """NATS stopped, an event committed: the relay fails and backs off longer each time. Once one
    pause is long (3 s or more), NATS is started again on the same port; the event is on the
    stream before that pause would have ended, within a couple of seconds of the broker being
    back: the reconnect ended the backoff (issue 21: it used to sleep up to 15 s more)."""
    settings = make_settings(outbox_poll_seconds=60, broker_backoff_max_seconds=15)
    await migrate(
        "triage", settings.database_url_for("triage"), schema=settings.database_schema_for("triage")
    )
    caplog.set_level(logging.WARNING, logger="cmh.outbox")
    async with running(probe_app(settings)) as client:
        await eventually(lambda: _checks(client, nats="ok"))
        nats_server.stop()
        await eventually(lambda: _checks(client, nats="degraded"))
        event_id = (await client.post("/triage/probe/events")).json()["event_id"]  # 200: accepted

        def long_pause() -> logging.LogRecord | None:
            pauses = [r for r in caplog.records if r.getMessage() == "outbox relay paused"]
            return next((r for r in pauses if getattr(r, "retry_in", 0) >= 3), None)

        pause = await eventually(long_pause, timeout=20)
        backoff_ends = pause.created + pause.retry_in  # type: ignore[attr-defined]
        nats_server.start()
        back_at = time.time()
        message = await eventually(lambda: _on_stream(settings, event_id), timeout=15, interval=0.1)
        arrived = time.time()
    assert message["id"] == event_id
    assert arrived < backoff_ends, f"arrived {arrived - backoff_ends:.1f}s after the backoff would have ended"
    assert arrived - back_at < 3, f"{arrived - back_at:.1f}s after NATS was back"


async def _on_stream(settings: Settings, event_id: str) -> dict[str, Any] | None:
    with contextlib.suppress(Exception):  # NATS may still be recovering its stream
        for message in await published(settings, "cmh.triage.referral.received"):
            if message["id"] == event_id:
                return message
    return None


async def _checks(client: httpx.AsyncClient, **expected: str) -> httpx.Response | None:
    response = await client.get("/ready")
    checks = response.json().get("checks", {})
    return response if all(checks.get(name) == value for name, value in expected.items()) else None


def _broker_connected(service: str) -> float | None:
    return REGISTRY.get_sample_value("cmh_broker_connected", {"service": service})


async def _ready(client: httpx.AsyncClient, *, nats_ok: bool = False) -> httpx.Response | None:
    response = await client.get("/ready")
    if response.status_code != 200 or (nats_ok and response.json()["checks"].get("nats") != "ok"):
        return None
    return response


def test_metrics_have_a_port_of_their_own() -> None:
    assert metrics_port(8101, 1000) == 9101
    assert metrics_port(8101, 0) is None
    port = free_port()
    server = serve_metrics("127.0.0.1", port)
    try:
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert scraped.status_code == 200
        assert "cmh_http_requests_total" in scraped.text
    finally:
        server.shutdown()
