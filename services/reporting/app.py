"""The ICB reporting service."""

from __future__ import annotations

from fastapi import FastAPI

from services.reporting.models import Base
from shared.service import ServiceSpec, create_service_app
from shared.settings import Settings

SPEC = ServiceSpec(
    name="reporting",
    title="ICB reporting",
    description="Pseudonymised projections of every event: four-week waits, crisis response, inequalities, with NHS statistical disclosure control.",
    metadata=Base.metadata,
)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(SPEC, settings)
