"""The gateway as a reverse proxy (issue 2, must-show 3): request id and trace propagation,
streaming both ways, one merged OpenAPI over every service, 502/504 problem+json for a service that
is stopped or slow, and readiness that names what is not ready (and what is only degraded: a broker
outage leaves every process ready)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, create_model

from cmh.migrations import migrate_all
from gateway.app import create_app as create_gateway
from gateway.proxy import is_internal_fhir_path
from services.careplan.app import create_app as create_careplan
from services.directory.app import create_app as create_directory
from services.notify.app import create_app as create_notify
from services.registry.app import create_app as create_registry
from services.reporting.app import create_app as create_reporting
from services.triage.app import create_app as create_triage
from shared.nats_server import EmbeddedNatsServer, free_port
from shared.settings import SERVICES, Settings
from tests.support import eventually, published, serve
from tests.triage.support import GP, referral

REAL_SERVICES = {
    "triage": create_triage,
    "careplan": create_careplan,
    "registry": create_registry,
    "directory": create_directory,
    "reporting": create_reporting,
    "notify": create_notify,
}


@pytest.fixture
def backend() -> str:
    """Proxying does not depend on the database backend: SQLite only here."""
    return "sqlite"


def echo_app(service: str, delay: float = 0.0) -> FastAPI:
    """A stand-in upstream that reports what reached it."""
    app = FastAPI()
    # The same schema name in every service, with different content.
    thing: type[BaseModel] = create_model("Thing", **{service: (str, ...)})

    @app.api_route(
        f"/{service}/echo/{{rest:path}}", methods=["GET", "POST", "PUT", "DELETE"], include_in_schema=False
    )
    async def echo(rest: str, request: Request) -> Any:
        if delay:
            await asyncio.sleep(delay)
        body = await request.body()
        return {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": dict(request.headers),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "body_length": len(body),
        }

    @app.get(f"/{service}/things", response_model=thing)
    async def things() -> Any:
        return {service: "x"}

    @app.get(f"/{service}/large")
    async def large(megabytes: int = 5) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for index in range(megabytes * 16):
                yield bytes([index % 251]) * 65536

        return StreamingResponse(
            chunks(), media_type="application/octet-stream", headers={"X-Upstream": service}
        )

    @app.get(f"/{service}/fhir/metadata")
    async def own_fhir() -> Any:  # internal: the gateway's /fhir is the public base
        return {"resourceType": "CapabilityStatement"}

    @app.get(f"/{service}/stamped")
    async def stamped() -> Any:
        from fastapi.responses import JSONResponse

        return JSONResponse({"ok": True}, headers={"Date": "Mon, 01 Jan 2024 00:00:00 GMT", "Server": "up"})

    @app.get(f"/{service}/created")
    async def created() -> Any:
        from fastapi.responses import JSONResponse

        response = JSONResponse({"ok": True}, status_code=201, headers={"Location": f"/{service}/things/1"})
        response.set_cookie("a", "1")
        response.set_cookie("b", "2")
        return response

    return app


class Running:
    def __init__(self) -> None:
        self.servers: list[Any] = []

    async def start(self, app: FastAPI, port: int | None = None) -> int:
        port = port or free_port()
        self.servers.append(await serve(app, port))
        return port

    async def stop_all(self) -> None:
        for server, task in reversed(self.servers):
            server.should_exit = True
            await asyncio.wait_for(task, timeout=15)


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    state = Running()
    try:
        yield state
    finally:
        await state.stop_all()


async def start_gateway(
    running: Running,
    make_settings: Callable[..., Settings],
    upstreams: dict[str, FastAPI | None],
    **overrides: Any,
) -> tuple[httpx.AsyncClient, Settings, str]:
    urls: dict[str, str] = {}
    for service in SERVICES:
        app = upstreams.get(service)
        port = await running.start(app) if app is not None else free_port()  # None: nothing listens
        urls[f"{service}_url"] = f"http://127.0.0.1:{port}"
    settings = make_settings(**{**urls, **overrides})
    await migrate_all(settings, ("gateway",))
    gateway_port = overrides.get("gateway_port") or free_port()  # given: services fetch its JWKS
    await running.start(create_gateway(settings), gateway_port)
    return (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway_port}", timeout=30),
        settings,
        urls["triage_url"],
    )


async def token_for(client: httpx.AsyncClient, settings: Settings) -> dict[str, str]:
    from gateway.admin import mint_token
    from gateway.clients import add_client
    from shared.db import Database

    db = Database(settings.database_url_for("gateway"))
    async with db.transaction() as session:
        await add_client(
            session,
            client_id="crisis",
            name="crisis",
            organisation="RW5",
            organisation_system="ods",
            kind="crisis_app",
            scopes="referral:read careplan:read registry:read reporting:aggregate handover:respond",
        )
    await db.dispose()
    return {"Authorization": f"Bearer {await mint_token(settings, 'crisis')}"}


async def test_request_id_and_trace_reach_the_service_and_come_back(
    running: Running, make_settings: Callable[..., Settings]
) -> None:
    client, settings, _ = await start_gateway(running, make_settings, {"triage": echo_app("triage")})
    auth = await token_for(client, settings)
    async with client:
        given = await client.get(
            "/triage/echo/a/b?x=1&y=two",
            headers={
                **auth,
                "X-Request-ID": "partner-req-123",
                "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "X-Forwarded-For": "203.0.113.7",  # from an untrusted peer: not believed
            },
        )
        assert given.status_code == 200
        seen = given.json()
        assert given.headers["x-request-id"] == "partner-req-123"
        assert seen["headers"]["x-request-id"] == "partner-req-123"
        assert seen["headers"]["traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
        assert seen["headers"]["traceparent"] != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        assert seen["path"] == "/triage/echo/a/b" and seen["query"] == "x=1&y=two"
        assert seen["headers"]["authorization"] == auth["Authorization"]  # services verify it again
        assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"

        generated = await client.get("/triage/echo/z", headers=auth)
        request_id = generated.headers["x-request-id"]
        assert len(request_id) == 36
        assert generated.json()["headers"]["x-request-id"] == request_id
        assert len(generated.json()["headers"]["traceparent"].split("-")) == 4


async def test_behind_a_trusted_proxy_the_service_is_told_the_caller_only(
    running: Running, make_settings: Callable[..., Settings]
) -> None:
    client, settings, _ = await start_gateway(
        running, make_settings, {"triage": echo_app("triage")}, trusted_proxies="127.0.0.1"
    )
    auth = await token_for(client, settings)
    async with client:
        given = await client.get(
            "/triage/echo/a", headers={**auth, "X-Forwarded-For": "203.0.113.7, 198.51.100.4"}
        )
    assert given.status_code == 200
    assert given.json()["headers"]["x-forwarded-for"] == "198.51.100.4"


async def test_bodies_stream_both_ways_intact(
    running: Running, make_settings: Callable[..., Settings]
) -> None:
    client, settings, _ = await start_gateway(
        running, make_settings, {"triage": echo_app("triage")}, max_body_bytes=16 * 1024 * 1024
    )
    auth = await token_for(client, settings)
    payload = bytes(range(256)) * 40_000  # ~10 MB

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 100_000):
            yield payload[start : start + 100_000]

    async with client:
        sent = await client.put("/triage/echo/upload", headers=auth, content=chunks())
        assert sent.status_code == 200
        assert sent.json()["body_length"] == len(payload)
        assert sent.json()["body_sha256"] == hashlib.sha256(payload).hexdigest()
        assert sent.json()["method"] == "PUT"
        # A body of declared length (the usual API call) is passed whole, byte for byte.
        declared = await client.post("/triage/echo/declared", headers=auth, content=payload[:900_000])
        assert declared.status_code == 200 and declared.json()["body_length"] == 900_000
        assert declared.json()["body_sha256"] == hashlib.sha256(payload[:900_000]).hexdigest()

        async with client.stream("GET", "/triage/large?megabytes=5", headers=auth) as response:
            assert response.status_code == 200 and response.headers["x-upstream"] == "triage"
            digest, size = hashlib.sha256(), 0
            async for chunk in response.aiter_bytes():
                digest.update(chunk)
                size += len(chunk)
        expected = b"".join(bytes([index % 251]) * 65536 for index in range(5 * 16))
        assert size == len(expected) and digest.hexdigest() == hashlib.sha256(expected).hexdigest()

        created = await client.get("/triage/created", headers=auth)
        assert created.status_code == 201 and created.headers["location"] == "/triage/things/1"
        assert created.headers.get_list("set-cookie") == [
            "a=1; Path=/; SameSite=lax",
            "b=2; Path=/; SameSite=lax",
        ]


async def test_merged_openapi_lists_every_service_and_renames_clashes(
    running: Running, make_settings: Callable[..., Settings]
) -> None:
    client, _, _ = await start_gateway(running, make_settings, {name: echo_app(name) for name in SERVICES})
    async with client:
        document = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    for service in SERVICES:
        assert f"/{service}/things" in document["paths"]
        assert service in {tag["name"] for tag in document["tags"]}
        assert service in document["paths"][f"/{service}/things"]["get"]["tags"]
    assert "/oauth2/token" in document["paths"] and "/audit/records" in document["paths"]
    schemas = document["components"]["schemas"]
    # Five different schemas named Thing: the first keeps the name, the others are prefixed.
    assert "Thing" in schemas and {f"{s.capitalize()}Thing" for s in SERVICES[1:]} <= set(schemas)
    ref = document["paths"]["/careplan/things"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ]
    assert ref == {"$ref": "#/components/schemas/CareplanThing"}
    assert "careplan" in schemas["CareplanThing"]["properties"]
    assert "x-cmh-unavailable" not in document
    # Each service's own FHIR routes are internal: /fhir is the one FHIR base.
    assert not [path for path in document["paths"] if "/fhir" in path and not path.startswith("/fhir")]


async def test_real_services_are_merged_and_ready(
    running: Running, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    await migrate_all(settings)
    apps = {name: factory(settings) for name, factory in REAL_SERVICES.items()}
    client, _, _ = await start_gateway(running, make_settings, apps)
    async with client:
        ready = await eventually(lambda: _status(client, "/ready", 200), timeout=30)
        assert ready.json()["services"] == dict.fromkeys(SERVICES, "ready")
        assert ready.json()["nats"] == "ready"
        document = (await client.get("/openapi.json")).json()
        assert {tag["name"] for tag in document["tags"]} >= set(SERVICES)
        assert "x-cmh-unavailable" not in document


async def test_a_broker_outage_leaves_the_suite_ready_and_taking_referrals(
    running: Running, make_settings: Callable[..., Settings], nats_server: EmbeddedNatsServer
) -> None:
    """Issue 21, item 3: NATS stopped under the whole suite. Every process stays ready (a load
    balancer keeps them all) and says NATS is degraded, the gateway's own readiness and the
    suite's alike; a referral is accepted through the gateway, and once NATS is back everything
    reports it ok and the referral's event reaches the stream from the outbox."""
    gateway_port = free_port()
    settings = make_settings(jwks_url=f"http://127.0.0.1:{gateway_port}/.well-known/jwks.json")
    await migrate_all(settings)
    apps = {name: factory(settings) for name, factory in REAL_SERVICES.items()}
    client, settings, _ = await start_gateway(running, make_settings, apps, gateway_port=gateway_port)
    ehr = await partner_token(settings)
    async with client:
        await eventually(lambda: _suite_says(client, nats="ready", services="ready"), timeout=30)

        nats_server.stop()
        suite = await eventually(
            lambda: _suite_says(client, nats="degraded", services="degraded"), timeout=30
        )
        assert suite.status_code == 200 and suite.json()["status"] == "ready"
        assert suite.json()["database"] == "ready" and suite.json()["keys"] == "ready"
        own = await client.get("/ready", params={"scope": "self"})
        assert own.status_code == 200 and own.json()["nats"] == "degraded"
        async with httpx.AsyncClient(timeout=5) as direct:
            triage = await direct.get(f"{settings.triage_url}/ready")
        assert triage.status_code == 200
        assert triage.json()["checks"] == {"database": "ok", "nats": "degraded"}
        assert (await client.get("/health")).status_code == 200  # liveness never asks about NATS

        submitted = await client.post(
            "/triage/referrals", json=referral(), headers={**ehr, "Idempotency-Key": "during-the-outage"}
        )
        assert submitted.status_code == 201, submitted.text
        referral_id = submitted.json()["id"]

        nats_server.start()
        await eventually(lambda: _suite_says(client, nats="ready", services="ready"), timeout=30)

        async def received() -> bool:
            events = await published(settings, "cmh.triage.referral.received")
            return any(event["data"]["referral_id"] == referral_id for event in events)

        assert await eventually(received, timeout=15)


async def _suite_says(client: httpx.AsyncClient, *, nats: str, services: str) -> httpx.Response | None:
    """The gateway's /ready when it reports `nats` for itself and `services` for every service."""
    response = await client.get("/ready")
    body = response.json()
    if body.get("nats") == nats and set(body.get("services", {}).values()) == {services}:
        return response
    return None


async def partner_token(settings: Settings) -> dict[str, str]:
    from gateway.admin import mint_token
    from gateway.clients import add_client
    from shared.db import Database

    db = Database(settings.database_url_for("gateway"))
    async with db.transaction() as session:
        await add_client(
            session,
            client_id="gp-ehr",
            name="GP EHR",
            organisation=GP,
            organisation_system="ods",
            kind="partner_ehr",
            scopes="referral:submit referral:read",
        )
    await db.dispose()
    return {"Authorization": f"Bearer {await mint_token(settings, 'gp-ehr')}"}


async def test_stopped_service_gives_502_and_slow_one_504(
    running: Running, make_settings: Callable[..., Settings]
) -> None:
    client, settings, _ = await start_gateway(
        running,
        make_settings,
        {"triage": None, "careplan": echo_app("careplan", delay=2)},
        upstream_timeout_seconds=0.5,
    )
    auth = await token_for(client, settings)
    async with client:
        down = await client.get("/triage/echo/x", headers={**auth, "X-Request-ID": "r-502"})
        assert down.status_code == 502
        assert down.headers["content-type"] == "application/problem+json"
        assert down.json()["service"] == "triage" and down.json()["request_id"] == "r-502"
        assert down.json()["type"].endswith("/upstream-unavailable")

        slow = await client.get("/careplan/echo/x", headers=auth)
        assert slow.status_code == 504
        assert slow.headers["content-type"] == "application/problem+json"
        assert slow.json()["type"].endswith("/upstream-timeout") and slow.json()["service"] == "careplan"

        not_ready = await client.get("/ready")
        assert not_ready.status_code == 503
        assert not_ready.headers["content-type"] == "application/problem+json"
        assert not_ready.json()["services"]["triage"] == "unreachable"
        document = (await client.get("/openapi.json")).json()
        assert "triage" in document["x-cmh-unavailable"]


async def _status(client: httpx.AsyncClient, path: str, status: int) -> httpx.Response | None:
    response = await client.get(path)
    return response if response.status_code == status else None


@pytest.mark.parametrize(
    ("path", "unsafe"), [("/triage/../careplan", True), ("/triage/./x", True), ("/triage/a..b/c", False)]
)
def test_dot_segments_are_refused(path: str, unsafe: bool) -> None:
    from gateway.proxy import is_unsafe_path

    assert is_unsafe_path(path) is unsafe


async def test_requests_spread_over_replicas_and_skip_one_that_is_down(
    running: Running, make_settings: Callable[..., Settings]
) -> None:
    """`CMH_TRIAGE_URL` lists three replicas, one of them not listening: every request is answered,
    by the two that are up, in turn, and the gateway reports triage ready."""
    first, second = echo_app("triage"), echo_app("triage")
    seen: list[str] = []
    for name, app in (("first", first), ("second", second)):

        @app.middleware("http")
        async def mark(request: Request, call_next: Any, name: str = name) -> Any:
            seen.append(name)
            return await call_next(request)

    ports = [await running.start(first), free_port(), await running.start(second)]
    replicas = ",".join(f"http://127.0.0.1:{port}" for port in ports)
    client, settings, _ = await start_gateway(running, make_settings, {}, triage_url=replicas)
    async with client:
        auth = await token_for(client, settings)
        answers = [(await client.get(f"/triage/echo/{n}", headers=auth)).status_code for n in range(12)]
    assert answers == [200] * 12
    assert seen.count("first") >= 4 and seen.count("second") >= 4 and len(seen) == 12


async def test_the_gateways_own_readiness_ignores_the_services(
    running: Running, make_settings: Callable[..., Settings]
) -> None:
    """Nothing listens for any service: the suite is not ready, the gateway itself is."""
    client, _, _ = await start_gateway(running, make_settings, {})
    async with client:
        suite = await client.get("/ready")
        own = await client.get("/ready", params={"scope": "self"})
    assert suite.status_code == 503 and suite.json()["services"]["triage"] == "unreachable"
    assert own.status_code == 200 and "services" not in own.json()


@pytest.mark.parametrize(
    ("path", "internal"),
    [
        ("/triage/fhir", True),
        ("/triage/fhir/", True),
        ("/triage/fhir/metadata", True),
        ("/triage/fhirish", False),
        ("/triage/referrals/fhir", False),
        ("/fhir/metadata", False),
    ],
)
def test_only_a_services_own_fhir_prefix_is_internal(path: str, internal: bool) -> None:
    assert is_internal_fhir_path("triage", path) is internal


async def test_services_fhir_paths_are_internal_and_answers_carry_one_date_and_server(
    running: Running, make_settings: Callable[..., Settings]
) -> None:
    client, settings, _ = await start_gateway(
        running, make_settings, {"triage": echo_app("triage")}, public_url="https://api.cmh.example"
    )
    auth = await token_for(client, settings)
    async with client:
        for path in ("/triage/fhir/metadata", "/triage/fhir", "/triage/fhir%2Fmetadata"):
            refused = await client.get(path, headers=auth)
            assert refused.status_code == 404, path
            assert refused.headers["content-type"].startswith("application/problem+json")
        stamped = await client.get("/triage/stamped", headers=auth)
        assert stamped.status_code == 200
        for field in ("date", "server"):
            assert len(stamped.headers.get_list(field)) <= 1, (field, stamped.headers)
        assert stamped.headers.get("server") != "up" and "2024" not in stamped.headers.get("date", "")
        # What the service is told of the public address is the gateway's belief, not the Host sent.
        seen = (await client.get("/triage/echo/x", headers={**auth, "Host": "evil.example"})).json()
        assert seen["headers"]["x-forwarded-host"] == "api.cmh.example"
        assert seen["headers"]["x-forwarded-proto"] == "https"
