"""Tables owned by the careplan service (its own database, or its own PostgreSQL schema).

An episode is opened once per routed referral. What clinicians record is kept as dated records
(the clinical time the caller gives, and when it was recorded), and the first-of timestamps the
clocks need are kept on the episode. The journey is one timeline per person, built from this
service's records and from triage's and the directory's events.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.migrations import new_metadata
from shared.sqltypes import BigIntegerKey, UTCDateTime, utcnow


class Base(DeclarativeBase):
    metadata = new_metadata()


class Episode(Base):
    __tablename__ = "careplan_episodes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    referral_id: Mapped[str] = mapped_column(String(36), unique=True)
    person_id: Mapped[str] = mapped_column(String(36), index=True)
    team_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    network_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    place_key: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    owner_org: Mapped[str | None] = mapped_column(
        String(32), nullable=True, index=True
    )  # the team's provider
    referring_org: Mapped[str | None] = mapped_column(
        String(32), nullable=True, index=True
    )  # the referrer's ODS code (partners read the episodes of their own referrals)
    pathway: Mapped[str | None] = mapped_column(String(64), nullable=True)
    route: Mapped[str] = mapped_column(String(32))
    priority: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)  # open | discharged
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    referral_received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    spell_started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    age_at_referral: Mapped[int] = mapped_column(Integer)
    named_worker_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    previous_episode_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    first_assessment_completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    plan_agreed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    first_attended_contact_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    first_outcome_measure_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    first_meaningful_assessment_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    first_intervention_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    assessment_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    advice_or_signposting_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    discharged_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    discharge_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    reaccess_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    plan_breach_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)


class EpisodeRecord(Base):
    """Something recorded in an episode: a contact, assessment, outcome measure, intervention, plan,
    agreement, review, named-worker assignment or discharge (data as JSON)."""

    __tablename__ = "careplan_records"

    seq: Mapped[int] = mapped_column(BigIntegerKey, primary_key=True, autoincrement=True)
    episode_id: Mapped[str] = mapped_column(String(36), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    recorded_by: Mapped[str] = mapped_column(String(128))
    data: Mapped[str] = mapped_column(Text)


class ClockEventSent(Base):
    """At most one at-risk and one breach event per episode, whichever replica's scheduler sees it."""

    __tablename__ = "careplan_clock_events"

    episode_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    event: Mapped[str] = mapped_column(String(16), primary_key=True)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class JourneyEntry(Base):
    """One step of a person's journey; `source_id` (an event id or record key) makes it once-only."""

    __tablename__ = "careplan_journey"

    seq: Mapped[int] = mapped_column(BigIntegerKey, primary_key=True, autoincrement=True)
    source_id: Mapped[str] = mapped_column(String(160), unique=True)
    person_id: Mapped[str] = mapped_column(String(36), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    kind: Mapped[str] = mapped_column(String(48))
    summary: Mapped[str] = mapped_column(Text)  # JSON: ids, codes and short facts, never free text


class RegistryRecord(Base):
    """Registry teams, organisations, practitioners and memberships (whole timelines, from events)."""

    __tablename__ = "careplan_registry_records"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    version: Mapped[int] = mapped_column(Integer)
    timeline: Mapped[str] = mapped_column(Text)
