"""The ICB reporting service."""

from __future__ import annotations

from dataclasses import replace

from fastapi import FastAPI

from services.reporting import dashboard, export, projections
from services.reporting.api import router
from services.reporting.models import Base
from shared.service import ServiceSpec, create_service_app
from shared.settings import Settings, get_settings

SPEC = ServiceSpec(
    name="reporting",
    title="ICB reporting",
    description="Pseudonymised projections of every event; four-week and crisis performance with disclosure control.",
    metadata=Base.metadata,
    routers=[router, export.router, dashboard.router],
    workers=(export.ExportWorker,),
    state=export.ReportingState,
)


def consumes() -> dict[str, list[str]]:
    """Its durable consumer, for the bus provisioner (the handler needs settings; this does not)."""
    return {projections.DURABLE: list(projections.SUBJECTS)}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    # The projections' subscription carries the pseudonymisation key, which comes from settings.
    return create_service_app(replace(SPEC, subscriptions=(projections.subscription(settings),)), settings)
