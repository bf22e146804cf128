"""Tables owned by the careplan service (its own database, or its own PostgreSQL schema).

An episode is opened once per routed referral. What clinicians record is kept as dated records
(the clinical time the caller gives, and when it was recorded), and the first-of timestamps the
clocks need are kept on the episode. The journey is one timeline per person, built from this
service's records and from triage's and the directory's events.

Every record keeps who made it: the client (`recorded_by`) and the end user that client asserts
(`end_user_id`, `end_user_role`: asserted by the calling system, not verified here).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Integer, String, Text, event
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from contracts.timezones import london_date
from shared.migrations import migrations_beside, new_metadata
from shared.sqltypes import BigIntegerKey, UTCDateTime, utcnow

# This package's Alembic history (`cmh.migrations` maps every owner to one of these).
MIGRATIONS = migrations_beside(__file__)


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
    # The last triage `version` of this episode's referral applied here: an older event is ignored.
    referral_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The Europe/London day (date.toordinal()) the running plan clock started, NULL when no plan
    # clock runs (not started, or stopped by an agreed plan): the worklist orders by it in SQL.
    # Kept by `_keep_plan_clock_day` on every flush, so it never disagrees with the timestamps.
    plan_clock_day: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)


def plan_clock_day(
    first_assessment_completed_at: datetime | None, plan_agreed_at: datetime | None
) -> int | None:
    if first_assessment_completed_at is None or plan_agreed_at is not None:
        return None
    return london_date(first_assessment_completed_at).toordinal()


@event.listens_for(Episode, "before_insert")
@event.listens_for(Episode, "before_update")
def _keep_plan_clock_day(_mapper: Any, _connection: Any, episode: Episode) -> None:
    episode.plan_clock_day = plan_clock_day(episode.first_assessment_completed_at, episode.plan_agreed_at)


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
    # The end user the calling system asserts made it (X-End-User-Id / -Role, or triage's event).
    end_user_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    end_user_role: Mapped[str | None] = mapped_column(String(64), nullable=True)
    data: Mapped[str] = mapped_column(Text)


class ClockEventSent(Base):
    """At most one at-risk and one breach event per episode, whichever replica's scheduler sees it;
    `withdrawn_at` once a late entry showed it no longer holds (`cmh.careplan.clock.corrected`)."""

    __tablename__ = "careplan_clock_events"

    episode_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    event: Mapped[str] = mapped_column(String(16), primary_key=True)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ReferralState(Base):
    """What careplan has applied of each triage referral's lifecycle (routed, transferred,
    closed): the episode it opened, or the open episode at the same team it was linked to as new
    information (`linked`), whether triage closed it (so that a late or redelivered routed or
    transferred event never opens an episode for it), and the last triage `version` applied. Every
    lifecycle handler claims this row first, so two replicas applying events of one referral
    take turns."""

    __tablename__ = "careplan_referrals"

    referral_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    person_id: Mapped[str] = mapped_column(String(36), index=True)
    episode_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    linked: Mapped[bool] = mapped_column(Boolean, default=False)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class JourneyEntry(Base):
    """One step of a person's journey; `source_id` (an event id or record key) makes it once-only."""

    __tablename__ = "careplan_journey"

    seq: Mapped[int] = mapped_column(BigIntegerKey, primary_key=True, autoincrement=True)
    source_id: Mapped[str] = mapped_column(String(160), unique=True)
    person_id: Mapped[str] = mapped_column(String(36), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)  # the clinical time
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)  # when it was entered
    kind: Mapped[str] = mapped_column(String(48))
    summary: Mapped[str] = mapped_column(Text)  # JSON: ids, codes and short facts, never free text


class RegistryRecord(Base):
    """Registry teams, organisations, practitioners and memberships (whole timelines, from events)."""

    __tablename__ = "careplan_registry_records"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    version: Mapped[int] = mapped_column(Integer)
    timeline: Mapped[str] = mapped_column(Text)
