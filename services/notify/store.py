"""From the suite's events to queued notifications.

`on_event` (the durable consumer `notify-events`) turns a triage or careplan event into the FHIR
resources it changed (ServiceRequest, EpisodeOfCare, CarePlan: ids, version and status) and queues
one delivery per matching subscription of the referring organisation, in the event's transaction
(the consumer's inbox makes a redelivered event harmless). A subscription's row is locked while its
event counter and per-resource cursor move, so replicas applying events concurrently number them
without gaps; a version no higher than the last one queued for that resource queues nothing (several
events share a version; redeliveries and late events arrive). A commit that queued something wakes
this process's delivery worker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from contracts.events import EpisodeFacts, ReferralEvent
from services.notify.domain import Focus, matches, notification_bundle
from services.notify.models import (
    ACTIVE,
    ERROR,
    OFF,
    PENDING,
    NotifyDelivery,
    NotifyResourceCursor,
    NotifySubscription,
)
from shared.consumer import PermanentEventError
from shared.events import CloudEvent
from shared.fhir_terms import EPISODE_OF_CARE_STATUS, care_plan_status, service_request_status
from shared.http import public_url
from shared.settings import get_settings
from shared.sqltypes import utcnow

log = logging.getLogger("cmh.notify")

TRIAGE_VERBS = (
    "received", "prioritised", "routed", "signposted", "closed", "contacted", "transferred", "completed",
)  # fmt: skip
TRIAGE_STATUSES = frozenset({"received", "routed", "signposted", "closed"})
EVENT_SUBJECTS: tuple[str, ...] = (
    *(f"cmh.triage.referral.{verb}" for verb in TRIAGE_VERBS),
    "cmh.careplan.episode.opened",
    "cmh.careplan.episode.transferred",
    "cmh.careplan.episode.discharged",
    "cmh.careplan.plan.agreed",
)
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_QUEUED_FLAG = "cmh_notify_queued"


# --- the process's delivery context (keyed by engine, like the outbox relay's wakers) ------------


@dataclass
class DeliveryContext:
    fhir_base: str  # the gateway's FHIR base: fullUrls in notifications
    wake: asyncio.Event  # the delivery worker's


_contexts: weakref.WeakKeyDictionary[Any, DeliveryContext] = weakref.WeakKeyDictionary()


def register_context(engine: Any, context: DeliveryContext) -> None:
    """Called once per app (by the delivery worker's builder) for the app's database engine."""
    _contexts[getattr(engine, "sync_engine", engine)] = context


def _context(session: AsyncSession) -> DeliveryContext | None:
    bind = session.sync_session.get_bind()
    return _contexts.get(getattr(bind, "engine", bind))


def wake_after_commit(session: AsyncSession) -> None:
    """Mark the session so that, once it commits, this process's delivery worker looks for work."""
    session.sync_session.info[_QUEUED_FLAG] = True


@sa_event.listens_for(Session, "after_commit")
def _wake_worker_after_commit(session: Session) -> None:
    if not session.info.pop(_QUEUED_FLAG, False):
        return
    bind = session.get_bind()
    context = _contexts.get(getattr(bind, "engine", bind))
    if context is not None:
        context.wake.set()


@sa_event.listens_for(Session, "after_soft_rollback")
def _forget_after_rollback(session: Session, _previous: Any) -> None:
    session.info.pop(_QUEUED_FLAG, None)


# --- events to resources -------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """What an event says changed: resources (ids, version, status) of one referring organisation,
    about one person (their id is checked only once a subscription wants it)."""

    organisation: str | None
    foci: tuple[Focus, ...]
    person_id: str


def change_of(event: CloudEvent) -> Change | None:
    """The resources an event changed (person id not yet filled in), or None if it changes nothing a
    partner is notified of."""
    _, service, entity, verb = event.type.split(".")
    if service == "triage" and entity == "referral":
        referral = event.payload_as(ReferralEvent)
        if referral.status not in TRIAGE_STATUSES:
            return None
        status = service_request_status(referral.status, referral.route, referral.care_ended_at is not None)
        focus = Focus("ServiceRequest", referral.referral_id, max(referral.version or 0, 0), status, "")
        return Change(referral.referring_organisation or None, (focus,), referral.person_id)
    if service != "careplan":
        return None
    episode = event.payload_as(EpisodeFacts)
    organisation, version = episode.referring_organisation or None, max(episode.version or 0, 0)
    discharged = episode.status == "discharged" if episode.status else verb == "discharged"
    if entity == "episode" and verb in ("opened", "transferred", "discharged"):
        episode_status = EPISODE_OF_CARE_STATUS["discharged" if discharged else "open"]
        foci = [Focus("EpisodeOfCare", episode.episode_id, version, episode_status, "")]
        if verb == "discharged" and episode.plan_agreed:
            plan_status = care_plan_status(agreed=True, discharged=True)
            foci.append(Focus("CarePlan", episode.episode_id, version, plan_status, ""))
        return Change(organisation, tuple(foci), episode.person_id)
    if entity == "plan" and verb == "agreed":
        plan_status = care_plan_status(agreed=True, discharged=discharged)
        focus = Focus("CarePlan", episode.episode_id, version, plan_status, "")
        return Change(organisation, (focus,), episode.person_id)
    return None


def _usable(value: str, what: str) -> str:
    if not _FHIR_ID.match(value):
        raise PermanentEventError(f"event has no usable {what}")
    return value


# --- queueing ------------------------------------------------------------------------------------

# session.info key: the (organisation, resource type) pairs with a live subscription, read once for
# a batch by `prepare_batch`.
_SUBSCRIBED = "cmh_notify_subscribed"


async def prepare_batch(session: AsyncSession, events: Sequence[CloudEvent]) -> None:
    """Which of a batch's organisations have a live subscription, in one query (the consumer's
    `prepare`): most referring organisations have none, and each event's locking SELECT finding
    nothing was most of this consumer's time (py-spy: `on_event`'s SELECT ... FOR UPDATE 46 %)."""
    organisations = {
        change.organisation for change in map(change_of, events) if change is not None and change.organisation
    }
    pairs: set[tuple[str, str]] = set()
    if organisations:
        rows = await session.execute(
            select(NotifySubscription.owner_org, NotifySubscription.resource_type)
            .where(
                NotifySubscription.owner_org.in_(organisations),
                NotifySubscription.status.in_((ACTIVE, ERROR)),
            )
            .distinct()
        )
        pairs = {(organisation, resource_type) for organisation, resource_type in rows}
    session.info[_SUBSCRIBED] = pairs


async def on_event(session: AsyncSession, event: CloudEvent) -> None:
    """Queue a notification for each subscription this event's changes match (the consumer)."""
    change = change_of(event)
    if change is None or change.organisation is None:
        return
    types = {focus.resource_type for focus in change.foci}
    subscribed: set[tuple[str, str]] | None = session.info.get(_SUBSCRIBED)
    if subscribed is not None and not any((change.organisation, kind) in subscribed for kind in types):
        return  # the batch's one query found no live subscription for these
    now = utcnow()
    # Locked in id order (every writer of a subscription row locks only that row, or these in order).
    subscriptions = (
        await session.scalars(
            select(NotifySubscription)
            .where(
                NotifySubscription.owner_org == change.organisation,
                NotifySubscription.status.in_((ACTIVE, ERROR)),
                NotifySubscription.resource_type.in_(types),
            )
            .order_by(NotifySubscription.id)
            .with_for_update()
        )
    ).all()
    if not subscriptions:
        return
    person_id = _usable(change.person_id, "person_id")
    foci = [
        Focus(f.resource_type, _usable(f.resource_id, "resource id"), f.version, f.status, person_id)
        for f in change.foci
    ]
    context = _context(session)
    base = context.fhir_base if context else public_url(get_settings(), "/fhir")
    queued = 0
    for subscription in subscriptions:
        if subscription.end is not None and subscription.end <= now:
            # Past its end: the subscription is over (FHIR: status off), and queues nothing more.
            subscription.status = OFF
            subscription.version += 1
            subscription.updated_at = now
            continue
        statuses = json.loads(subscription.status_filter) if subscription.status_filter else None
        for focus in foci:
            if focus.resource_type != subscription.resource_type:
                continue
            # The cursor moves whether or not the status filter matches, so a late older version
            # with a status the filter wants is not sent after a newer one it does not.
            if await _advance(session, subscription, focus) and matches(
                subscription.resource_type, statuses, focus
            ):
                _queue(session, subscription, focus, event.time, base, now)
                queued += 1
    if queued:
        wake_after_commit(session)


async def _advance(session: AsyncSession, subscription: NotifySubscription, focus: Focus) -> bool:
    """Move the (subscription, resource) cursor to this version if it is newer; False if not."""
    cursor = await session.get(
        NotifyResourceCursor, (subscription.id, focus.key), with_for_update=True, populate_existing=True
    )
    if cursor is None:
        session.add(
            NotifyResourceCursor(
                subscription_id=subscription.id, resource_key=focus.key, last_version=focus.version
            )
        )
        return True
    if focus.version <= cursor.last_version:
        return False
    cursor.last_version = focus.version
    return True


def _queue(
    session: AsyncSession,
    subscription: NotifySubscription,
    focus: Focus,
    event_time: datetime,
    base: str,
    now: datetime,
) -> None:
    subscription.events_since_start += 1
    delivery_id = str(uuid.uuid4())
    bundle = notification_bundle(
        delivery_id=delivery_id,
        subscription_id=subscription.id,
        events_since_start=subscription.events_since_start,
        event_number=subscription.events_since_start,
        event_time=event_time,
        focus=focus,
        base=base,
        now=now,
    )
    session.add(
        NotifyDelivery(
            id=delivery_id,
            subscription_id=subscription.id,
            resource_key=focus.key,
            event_number=subscription.events_since_start,
            payload=json.dumps(bundle, separators=(",", ":")),
            state=PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )
