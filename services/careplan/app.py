"""The care planning service."""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI

from contracts.events import HandoverUpdated, ReferralEvent, ReferralFacts, RegistryRecordChanged
from services.careplan import store
from services.careplan.api import router
from services.careplan.fhir_api import router as fhir_router
from services.careplan.models import Base
from shared.background import BackgroundWorker
from shared.consumer import Subscription
from shared.deps import service_state
from shared.metrics import CLOCK_SCAN_INTERVAL, CLOCK_SCAN_LAST_SUCCESS
from shared.service import ServiceSpec, create_service_app
from shared.settings import Settings

log = logging.getLogger("cmh.careplan.clocks")


class ClockScheduler(BackgroundWorker):
    """Checks the plan clocks every `careplan_clock_scan_seconds`; safe in every replica (each
    event is claimed by a row only one transaction can insert). The service state's clock is the
    time (shared/deps.py: the same clock the routes see)."""

    task_name = "careplan-clocks"

    def __init__(self, app: FastAPI) -> None:
        super().__init__()
        self.app = app

    async def run(self) -> None:
        state = service_state(self.app)
        interval = state.settings.careplan_clock_scan_seconds
        CLOCK_SCAN_INTERVAL.labels("careplan").set(interval)
        # The age counts from the start until a first scan completes: one that never does is seen.
        CLOCK_SCAN_LAST_SUCCESS.labels("careplan").set_to_current_time()
        while not self.stopping:
            try:
                with self.busy():
                    await store.scan_clocks(state.db, state.now())
                # What `ClockScanStale` (deploy/prometheus/alerts.yaml) ages against time().
                CLOCK_SCAN_LAST_SUCCESS.labels("careplan").set_to_current_time()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("clock scan failed", extra={"error": type(exc).__name__})
            await asyncio.sleep(interval)


SPEC = ServiceSpec(
    name="careplan",
    title="Care planning",
    description=(
        "Episodes, assessments and co-produced care plans, the four-week plan clock (enforced) and the "
        "national clock (reported), the named worker, and each person's journey."
    ),
    metadata=Base.metadata,
    routers=[router, fhir_router],
    subscriptions=(
        # One durable for a referral's whole lifecycle, so its events are applied in the order
        # triage published them (open, link, transfer, end).
        Subscription(
            durable="careplan-episodes",
            subjects=list(store.LIFECYCLE_SUBJECTS),
            handler=store.apply_referral_event,
            prepare=store.prepare_lifecycle,
            model=ReferralFacts,
        ),
        Subscription(
            durable="careplan-journey",
            subjects=list(store.JOURNEY_SUBJECTS),
            handler=store.journey_from_event,
            prepare=store.prepare_journey,
            model=(ReferralEvent, HandoverUpdated),
        ),
        Subscription(
            durable="careplan-registry",
            subjects=[
                f"cmh.registry.{kind}.{verb}"
                for kind in store.REGISTRY_KINDS
                for verb in ("upserted", "retired")
            ],
            handler=store.apply_registry_event,
            model=RegistryRecordChanged,
        ),
    ),
    workers=(ClockScheduler,),
)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(SPEC, settings)
