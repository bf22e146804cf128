"""The VCFSE partner directory service."""

from __future__ import annotations

from fastapi import FastAPI

from services.directory import api, handovers, partner_api
from services.directory.events import SUBSCRIPTIONS
from services.directory.models import Base
from shared.service import ServiceSpec, create_service_app
from shared.settings import Settings

SPEC = ServiceSpec(
    name="directory",
    title="VCFSE partner directory",
    description="Open Referral UK (HSDS 3.0) directory of VCFSE partner services, and warm handovers.",
    metadata=Base.metadata,
    routers=[api.router, partner_api.partner, partner_api.moderation, handovers.router],
    subscriptions=SUBSCRIPTIONS,
)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(SPEC, settings)
