"""Tables owned by the triage service (its own database, or its own PostgreSQL schema).

People and referrals hold person-identifiable data: every read through the API is audited, and
events carry the person's id, never their name, NHS number or contact details (except the
signpost event, and only when the person consented to share with the partner).
Read-models are kept from other services' events, so triage never calls them.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Boolean, Date, Index, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.migrations import migrations_beside, new_metadata
from shared.sqltypes import BigIntegerKey, UTCDateTime, utcnow

# This package's Alembic history (`cmh.migrations` maps every owner to one of these).
MIGRATIONS = migrations_beside(__file__)


class Base(DeclarativeBase):
    metadata = new_metadata()


class Person(Base):
    __tablename__ = "triage_people"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    nhs_number: Mapped[str | None] = mapped_column(String(10), nullable=True, unique=True)
    name_key: Mapped[str] = mapped_column(String(200), index=True)  # normalised "family|given"
    birth_date: Mapped[date] = mapped_column(Date, index=True)
    postcode: Mapped[str | None] = mapped_column(String(8), nullable=True, index=True)
    details: Mapped[str] = mapped_column(Text)  # JSON: names, contact, demographics, access needs
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Identity: a referral never rewrites a person; a change of details is its own act
    # (`PATCH /triage/people/{id}`), versioned (If-Match) and kept in `triage_person_versions`.
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # The family part of `name_key`, with the birth date: near matches are found by an index.
    family_key: Mapped[str] = mapped_column(String(100), default="", server_default="")

    __table_args__ = (Index("ix_triage_people_family_key_birth_date", "family_key", "birth_date"),)


class PersonVersion(Base):
    """Every version of a person's details: version 1 as the first referral gave them, then each
    explicit change with who made it (the client and the end user it asserts), when and why,
    and the previous and new values of the fields that changed."""

    __tablename__ = "triage_person_versions"
    __table_args__ = (UniqueConstraint("person_id", "version"),)

    seq: Mapped[int] = mapped_column(BigIntegerKey, primary_key=True, autoincrement=True)
    person_id: Mapped[str] = mapped_column(String(36), index=True)
    version: Mapped[int] = mapped_column(Integer)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    client_id: Mapped[str] = mapped_column(String(128))
    organisation: Mapped[str] = mapped_column(String(32))
    end_user_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    end_user_role: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    referral_id: Mapped[str | None] = mapped_column(String(36), nullable=True)  # version 1: the referral
    fields: Mapped[str] = mapped_column(Text)  # JSON list of the fields that changed
    previous: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON: those fields before
    new: Mapped[str] = mapped_column(Text)  # JSON: those fields after


class Referral(Base):
    __tablename__ = "triage_referrals"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    person_id: Mapped[str] = mapped_column(String(36), index=True)
    referring_org: Mapped[str] = mapped_column(String(32), index=True)
    referring_client: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(32))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    age: Mapped[int] = mapped_column(Integer)
    consent_to_share: Mapped[bool] = mapped_column(Boolean)
    crisis: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    details: Mapped[str] = mapped_column(Text)  # JSON: needs, free text, risks, requested urgency
    suggestion: Mapped[str] = mapped_column(Text)  # JSON: the screening result with its rules
    suggested_priority: Mapped[int] = mapped_column(Integer)
    suggested_route: Mapped[str] = mapped_column(String(32))
    priority: Mapped[int] = mapped_column(Integer, index=True)
    route: Mapped[str | None] = mapped_column(String(32), nullable=True)
    status: Mapped[str] = mapped_column(String(20), index=True)  # received | routed | signposted | closed
    place_key: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    network_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    team_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    pathway: Mapped[str | None] = mapped_column(String(64), nullable=True)
    possible_duplicates: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of person ids
    reaccess_episode_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    first_contact_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    response_minutes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # When the referrer wrote it (FHIR authoredOn), kept apart from `received_at`, when the single
    # point of access received it (the clocks start then); a back-dated receipt carries its reason.
    authored_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    backdated_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    intake: Mapped[str] = mapped_column(String(16), default="screened", server_default="screened")
    # Another referral of the person's still awaiting triage, and the person's open episode: linked
    # as context, so nobody triages the same person twice or opens a second episode unseen.
    awaiting_referral_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    open_episode_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The episode this referral's care is in (the one opened for it, or the open one it was linked
    # to as new information), and when that episode ended: its ServiceRequest is then completed.
    episode_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    care_ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Identity. The person as this referral gave them (JSON: names, birth date, postcode, NHS
    # number, contact, sex, ethnicity...), kept with the referral and never copied onto the person;
    # null for referrals taken before it was kept.
    person_as_referred: Mapped[str | None] = mapped_column(Text, nullable=True)
    # JSON: why the person's identity is to be confirmed (which fields disagree with the person
    # the NHS number matched, and how), or null when nothing disagrees.
    identity_review: Mapped[str | None] = mapped_column(Text, nullable=True)
    identity_review_open: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false(), index=True
    )


class Decision(Base):
    __tablename__ = "triage_decisions"

    seq: Mapped[int] = mapped_column(BigIntegerKey, primary_key=True, autoincrement=True)
    referral_id: Mapped[str] = mapped_column(String(36), index=True)
    action: Mapped[str] = mapped_column(String(20))
    priority: Mapped[int | None] = mapped_column(Integer, nullable=True)
    route: Mapped[str | None] = mapped_column(String(32), nullable=True)
    team_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    signposts: Mapped[str] = mapped_column(Text, default="[]")
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    actor: Mapped[str] = mapped_column(String(128))  # the calling system's client id
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    from_status: Mapped[str | None] = mapped_column(String(20), nullable=True)
    to_status: Mapped[str | None] = mapped_column(String(20), nullable=True)
    # The clinician the calling system asserts (X-End-User-Id / -Role), recorded as asserted.
    end_user_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    end_user_role: Mapped[str | None] = mapped_column(String(64), nullable=True)


class CrisisChange(Base):
    """Every change to the crisis queue, numbered: the SSE stream replays from `Last-Event-ID`."""

    __tablename__ = "triage_crisis_changes"

    seq: Mapped[int] = mapped_column(BigIntegerKey, primary_key=True, autoincrement=True)
    referral_id: Mapped[str] = mapped_column(String(36), index=True)
    change: Mapped[str] = mapped_column(String(20))  # new | updated | contacted | closed
    entry: Mapped[str] = mapped_column(Text)  # JSON queue entry (no names: ids, priority, times)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# --- read-models ---------------------------------------------------------------------------------


class RegistryRecord(Base):
    """Registry places, networks, pathways and teams, as their events carry them (whole timelines)."""

    __tablename__ = "triage_registry_records"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    version: Mapped[int] = mapped_column(Integer)
    timeline: Mapped[str] = mapped_column(Text)


class DirectoryService(Base):
    """Published partner services (from the directory's events), for signposting. A withdrawn
    service stays as a tombstone, so a cache reading changes since a generation sees it go."""

    __tablename__ = "triage_directory_services"

    service_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    data: Mapped[str] = mapped_column(Text)
    withdrawn: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The directory read-model generation at which this row last changed.
    generation: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0", index=True)


class ReadModelGeneration(Base):
    """A counter per read-model ("registry", "directory"), bumped in the transaction applying a
    change: intake learns whether its cached views are current from one primary-key read. The
    row lock taken by the bump orders generations as the changes commit."""

    __tablename__ = "triage_readmodel_generations"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger)


class Discharge(Base):
    """Discharges from careplan's events: who may re-access their named worker's team, until when."""

    __tablename__ = "triage_discharges"

    episode_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    person_id: Mapped[str] = mapped_column(String(36), index=True)
    team_id: Mapped[str] = mapped_column(String(64))
    named_worker_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    discharged_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reaccess_until: Mapped[datetime] = mapped_column(UTCDateTime)


class Episode(Base):
    """Careplan's episodes, from its events: whether a person has an open episode, and where, so a
    new referral is linked to it as new information."""

    __tablename__ = "triage_episodes"

    episode_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    referral_id: Mapped[str] = mapped_column(String(36), index=True)
    person_id: Mapped[str] = mapped_column(String(36), index=True)
    team_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    named_worker_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # open | discharged
    version: Mapped[int] = mapped_column(Integer, default=0)
