"""The notify service: partners' FHIR Subscriptions and signed webhook deliveries."""

from __future__ import annotations

from fastapi import FastAPI

from services.notify.models import Base
from shared.service import ServiceSpec, create_service_app
from shared.settings import Settings

SPEC = ServiceSpec(
    name="notify",
    title="Partner notifications",
    description="FHIR Subscriptions (rest-hook) for partner systems, delivered as signed webhooks.",
    metadata=Base.metadata,
)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(SPEC, settings)
