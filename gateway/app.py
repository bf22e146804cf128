"""The gateway: the suite's only public entry.

It issues tokens (`/oauth2/token`, `/.well-known/jwks.json`), gates every other route (token,
scopes, rate limit, body size, CORS), proxies `/triage`, `/careplan`, `/registry`, `/directory`,
`/reporting` and `/notify` to their services, serves one FHIR R4 base at `/fhir` in front of them
(`gateway/fhir.py`), keeps the append-only audit trail, and serves one merged OpenAPI document
with its docs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Literal

import httpx
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from gateway import audit, fhir, tokens
from gateway.access import AccessControlMiddleware, RateLimiter
from gateway.clients import revoked_since
from gateway.docs import docs_router
from gateway.keys import KeyManager
from gateway.openapi import OpenApiMerger
from gateway.proxy import Upstreams, new_upstream_client, new_upstream_pool, proxy_router, upstream_timeouts
from gateway.state import GatewayState, GatewayStateDep, gateway_state
from gateway.tokens import TokenService
from gateway.web.pages import PAGE_MODULES
from gateway.web.sessions import SessionMiddleware
from gateway.web.site import install_pages
from shared.auth import TokenVerifier
from shared.broker import Broker
from shared.consumer import EventConsumer
from shared.db import Database
from shared.errors import install_problem_handlers, problem_response, problem_type
from shared.middleware import (
    ConditionalPublicReads,
    HeadAsGetMiddleware,
    RequestContextMiddleware,
    RequestLimitsMiddleware,
)
from shared.params import check_path_ids
from shared.revocation import RevocationPublisher
from shared.service import is_draining, start_draining, stop_background
from shared.settings import SERVICES, Settings, check_production, get_settings

VERSION = "0.1.0"


async def _replica_state(client: httpx.AsyncClient, base: str) -> str:
    try:
        response = await client.get(f"{base}/ready", timeout=2.0)
    except httpx.HTTPError:
        return "unreachable"
    if response.status_code != 200:
        return "not_ready"
    try:
        checks = response.json().get("checks", {})
    except (ValueError, AttributeError):
        checks = {}
    # Ready, but something it leans on is away (NATS): it takes work, events wait in its outbox.
    return "degraded" if any(value != "ok" for value in checks.values()) else "ready"


async def _service_state(client: httpx.AsyncClient, settings: Settings, service: str) -> str:
    """The best of its replicas (the proxy skips the ones that do not answer)."""
    states = await asyncio.gather(*(_replica_state(client, base) for base in settings.service_urls(service)))
    for state in ("ready", "degraded", "not_ready"):
        if state in states:
            return state
    return "unreachable"


# What may be reported without making the gateway unready: taking work, with something degraded.
_SERVING = frozenset({"ready", "degraded"})


def operational_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/health")
    async def health() -> dict[str, str]:
        """Liveness only: the process is up and its event loop answers."""
        return {"status": "alive", "service": "gateway"}

    @router.get("/ready")
    async def ready(request: Request, scope: Literal["suite", "self"] = "suite") -> Response:
        """`scope=self`, what an orchestrator's readiness probe asks: can this gateway serve? Its
        database (clients, audit) and an active signing key (tokens) must be there. NATS is not
        needed to serve (the audit consumer and the revocation snapshot catch up when it is back;
        the gateway refuses revoked clients from its own database), so its loss is reported as
        `degraded` and the answer stays 200. `scope=suite` (the default, what `cmh run` and
        the compose file wait for) asks every service's `/ready` as well: a service unreachable
        or answering 503 makes it 503; a service that is ready but degraded is reported, not fatal.
        """
        if is_draining(request.app):
            return problem_response(
                503, "Draining", "The gateway is shutting down.", type_=problem_type("draining")
            )
        state = gateway_state(request)
        services: dict[str, str] = {}
        if scope == "suite":
            states = await asyncio.gather(
                *(_service_state(state.upstream, state.settings, service) for service in SERVICES)
            )
            services = dict(zip(SERVICES, states, strict=True))
        nats = "ready" if await state.broker.ready() else "degraded"
        try:
            await asyncio.wait_for(state.db.ping(), timeout=2)
            database = "ready"
        except Exception:
            database = "unreachable"
        try:
            await asyncio.wait_for(state.key_manager.signing_key(), timeout=2)
            keys = "ready"
        except Exception:
            keys = "unavailable"
        body: dict[str, object] = {"nats": nats, "database": database, "keys": keys}
        if scope == "suite":
            body["services"] = services
        if database == "ready" and keys == "ready" and set(services.values()) <= _SERVING:
            return JSONResponse({"status": "ready", **body})
        return problem_response(
            503,
            "Suite not ready" if scope == "suite" else "Gateway not ready",
            "A service or dependency is not ready.",
            type_=problem_type("not-ready"),
            **body,
        )

    @router.get("/openapi.json")
    async def openapi(gateway: GatewayStateDep) -> JSONResponse:
        return JSONResponse(await gateway.openapi.document())

    return router


def consumes() -> dict[str, list[str]]:
    """Its durable consumer (the audit trail), for the bus provisioner."""
    subscription = audit.audit_subscription()
    return {subscription.durable: list(subscription.subjects)}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    check_production(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(
            settings.database_url_for("gateway"),
            schema=settings.database_schema_for("gateway"),
            pool_size=settings.database_pool_size,
            busy_timeout=settings.database_busy_timeout_seconds,
            process="gateway",
        )
        keys = KeyManager(db, settings)
        await keys.ensure_active()
        upstream = new_upstream_client(settings)
        upstream_pool = new_upstream_pool(settings)
        broker = Broker(settings, "gateway")
        audit_consumer = EventConsumer(db, broker, settings, "gateway", audit.audit_subscription())
        verifier = TokenVerifier(settings, keys)

        async def revocations_since(cutoff: float) -> dict[str, float]:
            async with db.session() as session:
                return await revoked_since(session, datetime.fromtimestamp(cutoff, UTC))

        # The registry is here: the gateway refuses at once and tells every service (shared/revocation.py).
        revocation_publisher = RevocationPublisher(broker, verifier.revocations, revocations_since)
        state = gateway_state(app)
        state.settings = settings
        state.db = db
        state.key_manager = keys
        state.token_service = TokenService(db, keys, settings)
        state.token_verifier = verifier
        state.upstream = upstream
        state.upstream_pool = upstream_pool
        state.upstream_timeouts = upstream_timeouts(settings)
        state.upstreams = Upstreams(settings)
        state.broker = broker
        state.openapi = OpenApiMerger(app, settings, upstream)
        broker.start()
        audit_consumer.start()
        revocation_publisher.start()
        try:
            yield
        finally:
            start_draining(app)
            await stop_background(settings, [audit_consumer, revocation_publisher], None)
            await broker.close()
            await upstream.aclose()
            await upstream_pool.aclose()
            state.token_service.close()
            await db.dispose()

    app = FastAPI(
        title="CMH Suite gateway",
        version=VERSION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(check_path_ids)],  # the gateway's own routes (FHIR ids included)
    )
    app.state = GatewayState()  # typed: gateway/state.py
    install_problem_handlers(app)
    # The pages' server-side sessions, innermost: the pages pass access control by path.
    limiter = RateLimiter()  # one set of buckets: API calls by client, pages by person or address
    app.add_middleware(SessionMiddleware, settings=settings, limiter=limiter)
    # Added last runs first: the request context wraps everything, access control wraps routing.
    app.add_middleware(ConditionalPublicReads)
    app.add_middleware(AccessControlMiddleware, settings=settings, limiter=limiter)
    app.add_middleware(HeadAsGetMiddleware)  # outside access control: a HEAD is judged as its GET
    # Header hygiene, body size and read time, no-store/nosniff: before authentication.
    app.add_middleware(
        RequestLimitsMiddleware,
        max_body_bytes=settings.max_body_bytes,
        body_read_timeout_seconds=settings.body_read_timeout_seconds,
    )
    app.add_middleware(RequestContextMiddleware, service="gateway")
    app.include_router(operational_router())
    app.include_router(docs_router())
    install_pages(app, PAGE_MODULES)  # the front door for people at /app (gateway/web/site.py)
    app.include_router(tokens.router)
    app.include_router(audit.router)
    app.include_router(fhir.router)
    app.include_router(proxy_router())
    return app
