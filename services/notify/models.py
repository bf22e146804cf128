"""Tables owned by the notify service: partner subscriptions and the deliveries made to them."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from shared.migrations import new_metadata


class Base(DeclarativeBase):
    metadata = new_metadata()
