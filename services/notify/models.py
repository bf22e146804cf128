"""Tables owned by the notify service: partner subscriptions and the deliveries made to them.

A subscription belongs to the organisation whose client registered it. Each change of a resource
the subscription matches becomes one delivery (a stable id, the signed payload, its state); the
per-(subscription, resource) cursor keeps the highest resource version queued, so a repeated or
late event queues nothing. Every attempt to send a delivery is recorded, with a short outcome only
(never what the receiver answered).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.migrations import migrations_beside, new_metadata
from shared.sqltypes import BigIntegerKey, UTCDateTime, utcnow

# Subscription.status (FHIR R4): `requested` is accepted from partners and stored as `active` (there
# is no handshake); `error` pauses sending but keeps queueing; `off` neither queues nor sends.
REQUESTED, ACTIVE, ERROR, OFF = "requested", "active", "error", "off"
SUBSCRIPTION_STATUSES = (REQUESTED, ACTIVE, ERROR, OFF)
PENDING, DELIVERED, ABANDONED = "pending", "delivered", "abandoned"


# This package's Alembic history (`cmh.migrations` maps every owner to one of these).
MIGRATIONS = migrations_beside(__file__)


class Base(DeclarativeBase):
    metadata = new_metadata()


class NotifySubscription(Base):
    __tablename__ = "notify_subscriptions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner_org: Mapped[str] = mapped_column(String(32), index=True)
    client_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))  # requested | active | error | off
    criteria: Mapped[str] = mapped_column(String(200))  # as the partner gave it
    resource_type: Mapped[str] = mapped_column(String(32))
    status_filter: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON list of FHIR codes
    endpoint: Mapped[str] = mapped_column(String(2048))
    headers: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of "Name: value"
    secret: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(String(500))
    end: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    events_since_start: Mapped[int] = mapped_column(Integer, default=0)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(200), nullable=True)
    last_delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)


class NotifyResourceCursor(Base):
    """The highest version of one resource queued for one subscription."""

    __tablename__ = "notify_resource_cursors"

    subscription_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    resource_key: Mapped[str] = mapped_column(String(100), primary_key=True)  # "<Type>/<id>"
    last_version: Mapped[int] = mapped_column(Integer)


class NotifyDelivery(Base):
    """One notification to one subscription: sent in `seq` order per (subscription, resource)."""

    __tablename__ = "notify_deliveries"
    __table_args__ = (
        Index("ix_notify_deliveries_order", "subscription_id", "resource_key", "seq"),
        Index("ix_notify_deliveries_due", "state", "next_attempt_at"),
    )

    seq: Mapped[int] = mapped_column(BigIntegerKey, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)  # stable across retries
    subscription_id: Mapped[str] = mapped_column(String(36))
    resource_key: Mapped[str] = mapped_column(String(100))
    event_number: Mapped[int] = mapped_column(Integer)
    payload: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))  # pending | delivered | abandoned
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class NotifyAttempt(Base):
    """One try at sending a delivery and its outcome ("http 503", "timeout", "connect error"...)."""

    __tablename__ = "notify_attempts"

    seq: Mapped[int] = mapped_column(BigIntegerKey, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(String(36), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    outcome: Mapped[str] = mapped_column(String(64))
    duration_ms: Mapped[int] = mapped_column(Integer)
