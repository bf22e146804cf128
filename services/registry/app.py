"""The Organisational registry service."""

from __future__ import annotations

from fastapi import FastAPI

from services.registry.models import Base
from shared.service import ServiceSpec, create_service_app
from shared.settings import Settings

SPEC = ServiceSpec(
    name="registry",
    title="Organisational registry",
    description="The ICS organisation, effective-dated: ICB, places, trusts, networks, pathways, teams, coverage and practitioners.",
    metadata=Base.metadata,
)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(SPEC, settings)
