"""Tables owned by the careplan service (its own database, or its own PostgreSQL schema)."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from shared.migrations import new_metadata


class Base(DeclarativeBase):
    metadata = new_metadata()
