"""Serving one process (a service or the gateway) under uvicorn, with a graceful stop; and the
process registry: where each process's app factory is (`app_factory_path`), and every process's
durable consumers (`bus_plan`).

On SIGTERM (or Ctrl-C) the process first *drains*: `/ready` answers 503 at once so load balancers
and the gateway stop choosing it, while it keeps serving for `shutdown_drain_seconds`. Then uvicorn
stops listening and lets in-flight requests finish (`shutdown_grace_seconds`), and the lifespan
shutdown lets consumers finish or hand back their events and the outbox publish what the last
requests committed. A second signal skips the drain.
"""

from __future__ import annotations

import importlib
import socket
import time
from types import FrameType

import uvicorn
from fastapi import FastAPI

from shared.metrics import metrics_port, serve_metrics
from shared.service import freeze_long_lived, start_draining
from shared.settings import PROCESSES, Settings
from shared.tracing import configure_tracing, flush_spans


def app_factory_path(name: str) -> str:
    """`module:factory` of a process in shared/settings.py PROCESSES."""
    return "gateway.app:create_app" if name == "gateway" else f"services.{name}.app:create_app"


def bus_plan() -> dict[str, dict[str, list[str]]]:
    """Every process's durable consumers (identity → durable → subjects), as each declares them:
    what the bus provisioner makes and what each identity's NATS permissions allow it to read."""
    plan: dict[str, dict[str, list[str]]] = {}
    for name in PROCESSES:
        module = importlib.import_module(app_factory_path(name).partition(":")[0])
        consumes = getattr(module, "consumes", None) or module.SPEC.consumes
        plan[name] = consumes()
    return plan


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, drain_seconds: float) -> None:
        super().__init__(config)
        self.drain_seconds = drain_seconds
        self.drain_until: float | None = None
        self.app: FastAPI | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.app is not None:
            start_draining(self.app)  # /ready says so, and open event streams end at once
        if self.drain_until is None and self.drain_seconds > 0 and not self.should_exit and self.app:
            self.drain_until = time.monotonic() + self.drain_seconds
            self._captured_signals.append(sig)  # re-raised after shutdown, as uvicorn does
            return
        super().handle_exit(sig, frame)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        freeze_long_lived()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        # Here, not after run(): uvicorn re-raises the stopping signal as run() ends, and the
        # default handler ends the process before anything after it runs.
        flush_spans()  # the last requests' spans

    async def on_tick(self, counter: int) -> bool:
        if self.drain_until is not None and time.monotonic() >= self.drain_until:
            self.should_exit = True
        return await super().on_tick(counter)


def serve(name: str, settings: Settings, *, host: str, port: int) -> None:
    module_name, _, factory_name = app_factory_path(name).partition(":")
    create_app = getattr(importlib.import_module(module_name), factory_name)
    server: DrainingServer

    def build() -> FastAPI:
        app: FastAPI = create_app(settings)
        server.app = app
        return app

    config = uvicorn.Config(
        build,
        factory=True,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_seconds)),
        # Slow clients (issue 18): idle connections close, request heads are bounded, and past
        # the concurrency limit uvicorn answers 503 at once; bodies are timed in the middleware.
        timeout_keep_alive=settings.keep_alive_timeout_seconds,
        h11_max_incomplete_event_size=settings.max_header_bytes,
        limit_concurrency=settings.max_concurrency,
        # The peer stays the peer: X-Forwarded-For is read only from CMH_TRUSTED_PROXIES, by
        # shared/http.py:client_address (uvicorn's own handling trusts whole headers, any hop).
        proxy_headers=False,
    )
    server = DrainingServer(config, drain_seconds=settings.shutdown_drain_seconds)
    configure_tracing(settings)  # spans exported only when an OTLP endpoint is set
    scrape_port = metrics_port(port, settings.metrics_port_offset)
    metrics_server = serve_metrics(host, scrape_port) if scrape_port else None
    try:
        server.run()
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
