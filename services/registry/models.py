"""Tables owned by the registry service.

Every record is a series of immutable rows, each valid over [valid_from, valid_to). A change never
edits a row: it marks the rows it replaces as superseded (transaction time) and writes the new
timeline. So "as at" reads use the live rows, and the change history is every row ever written.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.migrations import migrations_beside, new_metadata
from shared.sqltypes import BigIntegerKey, UTCDateTime, utcnow

# This package's Alembic history (`cmh.migrations` maps every owner to one of these).
MIGRATIONS = migrations_beside(__file__)


class Base(DeclarativeBase):
    metadata = new_metadata()


class RegistryRecord(Base):
    __tablename__ = "registry_records"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    version: Mapped[int] = mapped_column(Integer)  # the ETag: bumped by every change
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RegistryRow(Base):
    __tablename__ = "registry_rows"

    seq: Mapped[int] = mapped_column(BigIntegerKey, primary_key=True, autoincrement=True)
    record_id: Mapped[str] = mapped_column(ForeignKey("registry_records.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)  # the change that wrote this row
    change: Mapped[str] = mapped_column(String(16))  # created | updated | retired
    valid_from: Mapped[date] = mapped_column(Date)
    valid_to: Mapped[date | None] = mapped_column(Date, nullable=True)
    attributes: Mapped[str] = mapped_column(Text)  # JSON of the kind's attribute model
    code: Mapped[str | None] = mapped_column(String(64), nullable=True)  # identifier searched by FHIR
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    ref_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # parent / network / team
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    recorded_by: Mapped[str] = mapped_column(String(64))
    superseded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        Index(
            "ix_registry_rows_live",
            "kind",
            "valid_from",
            postgresql_where=text("superseded_at IS NULL"),
            sqlite_where=text("superseded_at IS NULL"),
        ),
        Index("ix_registry_rows_code", "kind", "code"),
        Index("ix_registry_rows_ref_id", "ref_id"),
        UniqueConstraint("record_id", "version", "valid_from", name="uq_registry_rows_record_id"),
    )
