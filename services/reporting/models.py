"""Tables owned by the reporting service: pseudonymised projections of every event.

No names, NHS numbers, contact details or free text are stored here: a person appears only as a
keyed hash (`person_key`), with the categories reporting groups by.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.migrations import migrations_beside, new_metadata
from shared.sqltypes import UTCDateTime, utcnow

# This package's Alembic history (`cmh.migrations` maps every owner to one of these).
MIGRATIONS = migrations_beside(__file__)


class Base(DeclarativeBase):
    metadata = new_metadata()


class ReferralFact(Base):
    __tablename__ = "reporting_referrals"

    referral_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    person_key: Mapped[str] = mapped_column(String(32), index=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    source: Mapped[str | None] = mapped_column(String(32), nullable=True)
    priority: Mapped[int | None] = mapped_column(Integer, nullable=True)
    suggested_route: Mapped[str | None] = mapped_column(String(32), nullable=True)
    route: Mapped[str | None] = mapped_column(String(32), nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="received")
    place: Mapped[str | None] = mapped_column(String(64), nullable=True)
    network: Mapped[str | None] = mapped_column(String(64), nullable=True)
    team: Mapped[str | None] = mapped_column(String(64), nullable=True)
    pathway: Mapped[str | None] = mapped_column(String(64), nullable=True)
    age_band: Mapped[str | None] = mapped_column(String(8), nullable=True)
    sex: Mapped[str | None] = mapped_column(String(16), nullable=True)
    ethnicity: Mapped[str | None] = mapped_column(String(32), nullable=True)
    crisis: Mapped[bool] = mapped_column(Boolean, default=False)
    first_contact_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    response_minutes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class EpisodeFact(Base):
    __tablename__ = "reporting_episodes"

    episode_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    referral_id: Mapped[str] = mapped_column(String(64), index=True)
    person_key: Mapped[str] = mapped_column(String(32), index=True)
    place: Mapped[str | None] = mapped_column(String(64), nullable=True)
    network: Mapped[str | None] = mapped_column(String(64), nullable=True)
    team: Mapped[str | None] = mapped_column(String(64), nullable=True)
    pathway: Mapped[str | None] = mapped_column(String(64), nullable=True)
    age_at_referral: Mapped[int] = mapped_column(Integer)
    # The referral's categories, copied when the episode opens: grouped pulls need no join.
    age_band: Mapped[str | None] = mapped_column(String(8), nullable=True)
    sex: Mapped[str | None] = mapped_column(String(16), nullable=True)
    ethnicity: Mapped[str | None] = mapped_column(String(32), nullable=True)
    source: Mapped[str | None] = mapped_column(String(32), nullable=True)
    priority: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reaccess: Mapped[bool] = mapped_column(Boolean, default=False)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    referral_received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    spell_started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    first_assessment_completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    plan_agreed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    first_attended_contact_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    first_outcome_measure_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    first_meaningful_assessment_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    first_intervention_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    assessment_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    advice_or_signposting_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    discharged_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The clocks as Europe/London day numbers (date.toordinal()), so SQL counts met / breached /
    # at risk with integer arithmetic on any engine; kept current as the episode's events arrive.
    plan_start_day: Mapped[int | None] = mapped_column(Integer, nullable=True)
    plan_stop_day: Mapped[int | None] = mapped_column(Integer, nullable=True)
    national_start_day: Mapped[int | None] = mapped_column(Integer, nullable=True)
    national_stop_day: Mapped[int | None] = mapped_column(Integer, nullable=True)
    discharged_day: Mapped[int | None] = mapped_column(Integer, nullable=True)  # an open clock stops counting
    at_risk_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    breached_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class HandoverFact(Base):
    __tablename__ = "reporting_handovers"

    handover_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    referral_id: Mapped[str] = mapped_column(String(64), index=True)
    person_key: Mapped[str] = mapped_column(String(32))
    service_id: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(20))
    offered_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    declined_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class ExportJob(Base):
    """A bulk export (FHIR Bulk Data style): claimed by one replica's worker, files kept until deleted."""

    __tablename__ = "reporting_export_jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128), index=True)
    request_url: Mapped[str] = mapped_column(String(1000))
    types: Mapped[str] = mapped_column(String(200))  # comma separated
    since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending | running | complete | failed
    progress: Mapped[int] = mapped_column(Integer, default=0)  # percent
    transaction_time: Mapped[datetime] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ExportFile(Base):
    __tablename__ = "reporting_export_files"

    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    content: Mapped[str] = mapped_column(Text)  # NDJSON of pseudonymised records
