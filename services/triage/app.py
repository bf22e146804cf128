"""The triage / single point of access service."""

from __future__ import annotations

from fastapi import FastAPI

from services.triage import fhir_api, people_api
from services.triage.api import router
from services.triage.models import Base
from services.triage.readmodels import SUBSCRIPTIONS, ScreeningWarmup
from services.triage.state import TriageState
from shared.service import ServiceSpec, create_service_app
from shared.settings import Settings

SPEC = ServiceSpec(
    name="triage",
    title="Triage / single point of access",
    description=(
        "One way in for every referral: screening with explainable priority and route, clinician "
        "decisions, identity matching, re-access to the named worker, and the live crisis queue."
    ),
    metadata=Base.metadata,
    routers=[router, fhir_api.router, people_api.router],
    subscriptions=SUBSCRIPTIONS,
    workers=(ScreeningWarmup,),
    state=TriageState,
)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(SPEC, settings)
