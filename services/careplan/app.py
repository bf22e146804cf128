"""The Care planning service."""

from __future__ import annotations

from fastapi import FastAPI

from services.careplan.models import Base
from shared.service import ServiceSpec, create_service_app
from shared.settings import Settings

SPEC = ServiceSpec(
    name="careplan",
    title="Care planning",
    description="Episodes, assessments, co-produced care plans, the four-week plan clock and the national referral-spell clock, named workers and the journey timeline.",
    metadata=Base.metadata,
)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(SPEC, settings)
