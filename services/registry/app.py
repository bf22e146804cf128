"""The organisational registry service."""

from __future__ import annotations

from fastapi import FastAPI

from services.registry import fhir_api
from services.registry.api import router
from services.registry.models import Base
from services.registry.state import RegistryState
from shared.service import ServiceSpec, create_service_app
from shared.settings import Settings

SPEC = ServiceSpec(
    name="registry",
    title="Organisational registry",
    description=(
        "The ICS organisation, effective-dated: ICB, places, trusts, networks, pathways, teams, "
        "coverage and practitioners."
    ),
    metadata=Base.metadata,
    routers=[router, fhir_api.router],
    state=RegistryState,
)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(SPEC, settings)
