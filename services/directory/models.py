"""Tables owned by the directory service (its own database, or its own PostgreSQL schema).

Published data is stored as the HSDS document the API answers with (built once, on publication),
beside the columns and side tables that filters and search need. Partners never write published
rows: they write edits, and a moderator's approval publishes them. Handovers hold the person data
triage shared with consent; every read of them is audited.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.migrations import migrations_beside, new_metadata
from shared.sqltypes import BigIntegerKey, UTCDateTime, utcnow

# This package's Alembic history (`cmh.migrations` maps every owner to one of these).
MIGRATIONS = migrations_beside(__file__)


class Base(DeclarativeBase):
    metadata = new_metadata()


class Organization(Base):
    __tablename__ = "directory_organizations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    identifier: Mapped[str] = mapped_column(String(32), unique=True)  # charity / company number
    identifier_scheme: Mapped[str] = mapped_column(String(16))  # GB-CHC, GB-SC, GB-NIC, GB-COH
    vcfse_category: Mapped[str | None] = mapped_column(String(32), nullable=True)
    document: Mapped[str] = mapped_column(Text)  # HSDS organization, without services
    modified_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class Service(Base):
    __tablename__ = "directory_services"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("directory_organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32))
    minimum_age: Mapped[int | None] = mapped_column(Integer, nullable=True)
    maximum_age: Mapped[int | None] = mapped_column(Integer, nullable=True)
    has_service_area: Mapped[bool] = mapped_column(Boolean, default=False)
    document: Mapped[str] = mapped_column(Text)  # the fully nested HSDS service
    content_hash: Mapped[str] = mapped_column(String(64))  # makes a repeated import a no-op
    version: Mapped[int] = mapped_column(Integer, default=1)
    modified_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

    # Pages are ordered by name, then id: read in this order, no sort, and the id comes with it.
    __table_args__ = (Index("ix_directory_services_name_id", "name", "id"),)


class ServiceTerm(Base):
    __tablename__ = "directory_service_terms"

    service_id: Mapped[str] = mapped_column(ForeignKey("directory_services.id"), primary_key=True)
    taxonomy_term_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    taxonomy_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)

    # The services with a term, from the index alone.
    __table_args__ = (Index("ix_directory_service_terms_term_service", "taxonomy_term_id", "service_id"),)


class ServiceSlot(Base):
    """A weekly opening of the service or one of its locations (for day / time filters)."""

    __tablename__ = "directory_service_slots"

    seq: Mapped[int] = mapped_column(BigIntegerKey, primary_key=True, autoincrement=True)
    service_id: Mapped[str] = mapped_column(ForeignKey("directory_services.id"), index=True)
    day: Mapped[str] = mapped_column(String(2))
    opens_minute: Mapped[int] = mapped_column(Integer)
    closes_minute: Mapped[int] = mapped_column(Integer)

    # Day and time filters answered from the index alone.
    __table_args__ = (
        Index("ix_directory_service_slots_day_time", "day", "opens_minute", "closes_minute", "service_id"),
    )


class ServiceDistrict(Base):
    """A postcode district a service's declared service areas cover."""

    __tablename__ = "directory_service_districts"

    service_id: Mapped[str] = mapped_column(ForeignKey("directory_services.id"), primary_key=True)
    district: Mapped[str] = mapped_column(String(8), primary_key=True, index=True)


class ServiceAtLocation(Base):
    __tablename__ = "directory_service_at_locations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    service_id: Mapped[str] = mapped_column(ForeignKey("directory_services.id"), index=True)
    location_id: Mapped[str] = mapped_column(String(36), index=True)
    latitude: Mapped[float | None] = mapped_column(nullable=True)
    longitude: Mapped[float | None] = mapped_column(nullable=True)
    postcode: Mapped[str | None] = mapped_column(String(10), nullable=True)
    document: Mapped[str] = mapped_column(Text)  # HSDS service_at_location with its location

    __table_args__ = (Index("ix_directory_sal_position", "latitude", "longitude"),)


class Taxonomy(Base):
    __tablename__ = "directory_taxonomies"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    document: Mapped[str] = mapped_column(Text)


class TaxonomyTerm(Base):
    __tablename__ = "directory_taxonomy_terms"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    taxonomy_id: Mapped[str | None] = mapped_column(
        ForeignKey("directory_taxonomies.id"), nullable=True, index=True
    )
    code: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    name: Mapped[str] = mapped_column(String(255))
    parent_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    document: Mapped[str] = mapped_column(Text)


class Place(Base):
    """Read-model of the registry's places (kept from registry events): service areas name them."""

    __tablename__ = "directory_places"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(200))
    districts: Mapped[str] = mapped_column(Text)  # JSON list of postcode districts
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Edit(Base):
    """A partner's proposed version of one service, moving through moderation."""

    __tablename__ = "directory_edits"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    service_id: Mapped[str] = mapped_column(String(36), index=True)
    owner: Mapped[str] = mapped_column(String(32), index=True)  # the partner organisation's number
    state: Mapped[str] = mapped_column(String(20), index=True)
    proposal: Mapped[str] = mapped_column(Text)  # ServiceProposal JSON
    base_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)  # the ETag
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    reviewed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    review_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class EditHistory(Base):
    __tablename__ = "directory_edit_history"

    seq: Mapped[int] = mapped_column(BigIntegerKey, primary_key=True, autoincrement=True)
    edit_id: Mapped[str] = mapped_column(String(36), index=True)
    service_id: Mapped[str] = mapped_column(String(36), index=True)
    action: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Handover(Base):
    """A warm handover offered to a partner from a triage signpost, with the person's consent."""

    __tablename__ = "directory_handovers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    referral_id: Mapped[str] = mapped_column(String(64), index=True)
    person_id: Mapped[str] = mapped_column(String(64), index=True)
    service_id: Mapped[str] = mapped_column(String(36), index=True)
    owner: Mapped[str] = mapped_column(String(32), index=True)  # the partner organisation's number
    state: Mapped[str] = mapped_column(String(20), index=True)
    details: Mapped[str] = mapped_column(Text)  # JSON: person contact, needs, note (person data)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    offered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("referral_id", "service_id", name="uq_directory_handovers_referral"),)


class HandoverHistory(Base):
    __tablename__ = "directory_handover_history"

    seq: Mapped[int] = mapped_column(BigIntegerKey, primary_key=True, autoincrement=True)
    handover_id: Mapped[str] = mapped_column(String(36), index=True)
    state: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
