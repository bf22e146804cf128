"""What the directory consumes: registry places (service areas name them) and triage signposts
(warm handovers, in `handovers`)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from contracts.events import RegistryRecordChanged
from services.directory import store
from services.directory.handovers import SIGNPOST_SUBSCRIPTION
from shared.consumer import Subscription
from shared.events import CloudEvent

PLACE_SUBJECTS = ("cmh.registry.place.upserted", "cmh.registry.place.retired")


async def apply_place(session: AsyncSession, event: CloudEvent) -> None:
    await store.apply_place(session, event.data or {})


PLACES_SUBSCRIPTION = Subscription(
    durable="directory-places",
    subjects=list(PLACE_SUBJECTS),
    handler=apply_place,
    model=RegistryRecordChanged,
)
SUBSCRIPTIONS = (PLACES_SUBSCRIPTION, SIGNPOST_SUBSCRIPTION)
