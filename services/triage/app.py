"""The Triage / single point of access service."""

from __future__ import annotations

from fastapi import FastAPI

from services.triage.models import Base
from shared.service import ServiceSpec, create_service_app
from shared.settings import Settings

SPEC = ServiceSpec(
    name="triage",
    title="Triage / single point of access",
    description="One way in for every referral: screening, explainable routing, the crisis queue and re-access to the named worker.",
    metadata=Base.metadata,
)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(SPEC, settings)
