"""The notify service: partners' FHIR Subscriptions and signed webhook deliveries."""

from __future__ import annotations

from fastapi import FastAPI

from contracts.events import EpisodeFacts, ReferralEvent
from services.notify import store
from services.notify.delivery import DeliveryWorker
from services.notify.fhir_api import router
from services.notify.models import Base
from shared.consumer import Subscription
from shared.service import ServiceSpec, create_service_app
from shared.settings import Settings

SPEC = ServiceSpec(
    name="notify",
    title="Partner notifications",
    description="FHIR Subscriptions (rest-hook) for partner systems, delivered as signed webhooks.",
    metadata=Base.metadata,
    routers=[router],
    subscriptions=(
        Subscription(
            durable="notify-events",
            subjects=list(store.EVENT_SUBJECTS),
            handler=store.on_event,
            prepare=store.prepare_batch,
            model=(ReferralEvent, EpisodeFacts),
        ),
    ),
    # Woken after a commit that queued deliveries, and sends them.
    workers=(DeliveryWorker.for_app,),
)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(SPEC, settings)
