"""The app factory every service uses: database, broker, outbox relay, consumers, errors,
request context, `/health` and `/ready` (`/metrics` has a port of its own: cmh/serving.py).

A service declares what is its own (name, routers, models, subscriptions) in a `ServiceSpec`;
everything else is the same everywhere and lives here once.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import MetaData

from shared.auth import RemoteJwks, TokenVerifier
from shared.background import BackgroundWorker
from shared.broker import Broker
from shared.consumer import EventConsumer, Subscription
from shared.db import Database
from shared.deps import ServiceState, service_state
from shared.errors import install_problem_handlers, problem_response, problem_type
from shared.middleware import (
    ConditionalPublicReads,
    HeadAsGetMiddleware,
    RequestContextMiddleware,
    RequestLimitsMiddleware,
)
from shared.outbox import OutboxRelay
from shared.params import check_path_ids
from shared.revocation import RevocationListener
from shared.settings import Settings, check_production, get_settings


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    title: str
    description: str
    metadata: MetaData
    routers: Sequence[APIRouter] = ()
    subscriptions: Sequence[Subscription] = field(default_factory=tuple)
    # Other background work (schedulers), built once the app's state is set: app -> worker.
    workers: Sequence[Callable[[FastAPI], BackgroundWorker]] = field(default_factory=tuple)
    version: str = "0.1.0"
    # The app's typed state (shared/deps.py): a service with state of its own names its subclass.
    state: type[ServiceState] = ServiceState

    def consumes(self) -> dict[str, list[str]]:
        """Its durable consumers and their subjects, for the bus provisioner."""
        return {sub.durable: list(sub.subjects) for sub in self.subscriptions}


def operational_router(service: str) -> APIRouter:
    """`/health` and `/ready`: for orchestrators, not in the public API.

    `/health` is liveness: the process is up and its event loop answers; nothing else is asked,
    so a dependency's outage never gets a healthy process restarted. `/ready` is readiness: 200
    while the process can accept work, which needs its database. The broker only carries events
    between processes, buffered both ways (the outbox holds what we publish, the stream what we
    consume), so NATS being away is reported as `"nats": "degraded"` and stays 200: a load balancer
    taking every pod out for a broker outage would refuse work the suite could have kept. Every
    service serves its API from its own database (a pure consumer, like reporting's projections,
    still answers reads, only staler), so the rule is one for all. 503 while draining or without
    the database."""
    router = APIRouter(include_in_schema=False)

    @router.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "alive", "service": service}

    @router.get("/ready")
    async def ready(request: Request) -> Response:
        if is_draining(request.app):
            return _draining(service)
        state = service_state(request)
        db, broker = state.db, state.broker
        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(db.ping(), timeout=2)
            checks["database"] = "ok"
        except Exception:
            checks["database"] = "unavailable"
        checks["nats"] = "ok" if await broker.ready() else "degraded"
        if checks["database"] == "ok":
            return JSONResponse({"status": "ready", "service": service, "checks": checks})
        return problem_response(
            503,
            "Service not ready",
            "A dependency is unavailable.",
            type_=problem_type("not-ready"),
            service=service,
            checks=checks,
        )

    return router


def freeze_long_lived() -> None:
    """Move every object alive now (modules, the app, what was built at start) out of the garbage
    collector's reach. A full collection walks every tracked object: in a process holding a large
    read-model (triage's index of 50,000 partner services) that was a pause of 100 ms or more, now
    and then, in the middle of requests. Called once a served process has started (not for apps
    run in process by tests: frozen garbage is never collected)."""
    gc.freeze()


def refreeze_after_replacing() -> None:
    """After a large long-lived structure was replaced in a frozen process: collect what the old
    one left (once, now) and freeze again. Nothing to do where nothing was frozen."""
    if gc.get_freeze_count():
        gc.unfreeze()
        gc.collect()
        gc.freeze()


def is_draining(app: FastAPI) -> bool:
    return bool(getattr(app.state, "draining", False))  # also for an app not built here


def start_draining(app: FastAPI) -> None:
    """From now on /ready answers 503 (load balancers take this process out); requests still run."""
    app.state.draining = True


def _draining(service: str) -> Response:
    return problem_response(
        503, "Draining", "This process is shutting down.", type_=problem_type("draining"), service=service
    )


async def stop_background(
    settings: Settings, workers: Sequence[BackgroundWorker], relay: OutboxRelay | None
) -> None:
    """Graceful order: workers and consumers finish (or hand back) what they hold, then the outbox
    publishes what the last requests committed.

    The relay too finishes the pass it is in (a stop cancels it only while it waits): a task
    cancelled inside a SQLAlchemy transaction on SQLite (aiosqlite) can leave the database's
    write lock held, and the flush below then waited out the whole busy timeout (15 s)."""
    grace = settings.shutdown_grace_seconds
    await asyncio.gather(*(worker.stop(grace=grace) for worker in workers))
    if relay is not None:
        await relay.stop(grace=grace)
        await relay.flush(within=grace)


def create_service_app(spec: ServiceSpec, settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    check_production(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(
            settings.database_url_for(spec.name),
            schema=settings.database_schema_for(spec.name),
            pool_size=settings.database_pool_size,
            busy_timeout=settings.database_busy_timeout_seconds,
            process=spec.name,
        )
        broker = Broker(settings, spec.name)
        relay = OutboxRelay(db, broker, settings, spec.name)
        consumers = [EventConsumer(db, broker, settings, spec.name, sub) for sub in spec.subscriptions]
        jwks = RemoteJwks(
            settings.effective_jwks_url(),
            refresh_seconds=settings.jwks_refresh_seconds,
            min_refresh_seconds=settings.jwks_min_refresh_seconds,
        )
        state = service_state(app)
        state.service_name = spec.name
        state.token_verifier = verifier = TokenVerifier(settings, jwks)
        state.settings = settings
        state.db = db
        state.broker = broker
        state.relay = relay
        state.consumers = consumers
        # `state.clock` is the one injectable "now" (utcnow unless a test set one before start).
        # A disabled client's live tokens are refused here too, within a snapshot interval.
        workers = [*(build(app) for build in spec.workers), RevocationListener(broker, verifier.revocations)]
        state.workers = workers
        broker.start()
        relay.start()
        for consumer in consumers:
            consumer.start()
        for worker in workers:
            worker.start()
        try:
            yield
        finally:
            start_draining(app)
            await stop_background(settings, [*workers, *consumers], relay)
            await broker.close()
            await jwks.close()
            await db.dispose()

    app = FastAPI(
        title=spec.title,
        description=spec.description,
        version=spec.version,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(check_path_ids)],  # one rule for every path id of every route
    )
    app.state = spec.state()  # typed: shared/deps.py ServiceState (or the service's subclass)
    install_problem_handlers(app)
    # Each service defends itself (issue 18): the same limits as the gateway, inside the context.
    # HTTP semantics for every route (issue 20 §5): validators on public reads, HEAD where GET is.
    app.add_middleware(ConditionalPublicReads)
    app.add_middleware(HeadAsGetMiddleware)
    app.add_middleware(
        RequestLimitsMiddleware,
        max_body_bytes=settings.max_body_bytes,
        body_read_timeout_seconds=settings.body_read_timeout_seconds,
    )
    app.add_middleware(RequestContextMiddleware, service=spec.name)
    app.include_router(operational_router(spec.name))
    for router in spec.routers:
        app.include_router(router)
    return app
