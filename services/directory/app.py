"""The VCFSE partner directory service."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from services.directory import api, handovers, partner_api
from services.directory.events import SUBSCRIPTIONS
from services.directory.models import Base
from shared.errors import problems
from shared.middleware import DropEmptyQueryParameters
from shared.service import ServiceSpec, create_service_app
from shared.settings import Settings


def _declare_handover_problems(router: APIRouter) -> APIRouter:
    """The problems each handover operation answers (handovers.py keeps its routes as they are):
    401/403/422 everywhere, 404 for one handover, 409 (state) and 412 (If-Match) for a response."""
    for route in router.routes:
        if isinstance(route, APIRoute):
            statuses = [401, 403, 422]
            if "{handover_id}" in route.path:
                statuses.append(404)
            if "POST" in route.methods:
                statuses += [409, 412]
            route.responses = {**problems(*statuses), **route.responses}
    return router


SPEC = ServiceSpec(
    name="directory",
    title="VCFSE partner directory",
    description="Open Referral UK (HSDS 3.0) directory of VCFSE partner services, and warm handovers.",
    metadata=Base.metadata,
    routers=[
        api.router,
        partner_api.partner,
        partner_api.moderation,
        _declare_handover_problems(handovers.router),
    ],
    subscriptions=SUBSCRIPTIONS,
)


def create_app(settings: Settings | None = None) -> FastAPI:
    app = create_service_app(SPEC, settings)
    # Open Referral UK callers build query strings from forms: an empty parameter is an absent one.
    app.add_middleware(DropEmptyQueryParameters)
    return app
