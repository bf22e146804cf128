"""Careplan: episodes, their records, clock events sent, the journey, and the registry read-model.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from shared.sqltypes import BigIntegerKey, UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "careplan_clock_events",
        sa.Column("episode_id", sa.String(length=36), nullable=False),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("episode_id", "event", name=op.f("pk_careplan_clock_events")),
    )
    op.create_table(
        "careplan_episodes",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("referral_id", sa.String(length=36), nullable=False),
        sa.Column("person_id", sa.String(length=36), nullable=False),
        sa.Column("team_id", sa.String(length=64), nullable=True),
        sa.Column("network_id", sa.String(length=64), nullable=True),
        sa.Column("place_key", sa.String(length=64), nullable=True),
        sa.Column("owner_org", sa.String(length=32), nullable=True),
        sa.Column("pathway", sa.String(length=64), nullable=True),
        sa.Column("route", sa.String(length=32), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("opened_at", UTCDateTime(), nullable=False),
        sa.Column("referral_received_at", UTCDateTime(), nullable=False),
        sa.Column("spell_started_at", UTCDateTime(), nullable=False),
        sa.Column("age_at_referral", sa.Integer(), nullable=False),
        sa.Column("named_worker_id", sa.String(length=64), nullable=True),
        sa.Column("previous_episode_id", sa.String(length=36), nullable=True),
        sa.Column("first_assessment_completed_at", UTCDateTime(), nullable=True),
        sa.Column("plan_agreed_at", UTCDateTime(), nullable=True),
        sa.Column("first_attended_contact_at", UTCDateTime(), nullable=True),
        sa.Column("first_outcome_measure_at", UTCDateTime(), nullable=True),
        sa.Column("first_meaningful_assessment_at", UTCDateTime(), nullable=True),
        sa.Column("first_intervention_at", UTCDateTime(), nullable=True),
        sa.Column("assessment_started_at", UTCDateTime(), nullable=True),
        sa.Column("advice_or_signposting_at", UTCDateTime(), nullable=True),
        sa.Column("discharged_at", UTCDateTime(), nullable=True),
        sa.Column("discharge_reason", sa.String(length=32), nullable=True),
        sa.Column("reaccess_until", UTCDateTime(), nullable=True),
        sa.Column("plan_breach_reason", sa.String(length=32), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_careplan_episodes")),
        sa.UniqueConstraint("referral_id", name=op.f("uq_careplan_episodes_referral_id")),
    )
    op.create_index(
        op.f("ix_careplan_episodes_named_worker_id"), "careplan_episodes", ["named_worker_id"], unique=False
    )
    op.create_index(
        op.f("ix_careplan_episodes_network_id"), "careplan_episodes", ["network_id"], unique=False
    )
    op.create_index(op.f("ix_careplan_episodes_owner_org"), "careplan_episodes", ["owner_org"], unique=False)
    op.create_index(op.f("ix_careplan_episodes_person_id"), "careplan_episodes", ["person_id"], unique=False)
    op.create_index(op.f("ix_careplan_episodes_place_key"), "careplan_episodes", ["place_key"], unique=False)
    op.create_index(op.f("ix_careplan_episodes_status"), "careplan_episodes", ["status"], unique=False)
    op.create_index(op.f("ix_careplan_episodes_team_id"), "careplan_episodes", ["team_id"], unique=False)
    op.create_table(
        "careplan_journey",
        sa.Column("seq", BigIntegerKey, autoincrement=True, nullable=False),
        sa.Column("source_id", sa.String(length=160), nullable=False),
        sa.Column("person_id", sa.String(length=36), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("kind", sa.String(length=48), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_careplan_journey")),
        sa.UniqueConstraint("source_id", name=op.f("uq_careplan_journey_source_id")),
    )
    op.create_index(op.f("ix_careplan_journey_at"), "careplan_journey", ["at"], unique=False)
    op.create_index(op.f("ix_careplan_journey_person_id"), "careplan_journey", ["person_id"], unique=False)
    op.create_table(
        "careplan_records",
        sa.Column("seq", BigIntegerKey, autoincrement=True, nullable=False),
        sa.Column("episode_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.Column("recorded_by", sa.String(length=128), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_careplan_records")),
    )
    op.create_index(op.f("ix_careplan_records_episode_id"), "careplan_records", ["episode_id"], unique=False)
    op.create_table(
        "careplan_registry_records",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("timeline", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_careplan_registry_records")),
    )
    op.create_index(
        op.f("ix_careplan_registry_records_kind"), "careplan_registry_records", ["kind"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_careplan_registry_records_kind"), table_name="careplan_registry_records")
    op.drop_table("careplan_registry_records")
    op.drop_index(op.f("ix_careplan_records_episode_id"), table_name="careplan_records")
    op.drop_table("careplan_records")
    op.drop_index(op.f("ix_careplan_journey_person_id"), table_name="careplan_journey")
    op.drop_index(op.f("ix_careplan_journey_at"), table_name="careplan_journey")
    op.drop_table("careplan_journey")
    op.drop_index(op.f("ix_careplan_episodes_team_id"), table_name="careplan_episodes")
    op.drop_index(op.f("ix_careplan_episodes_status"), table_name="careplan_episodes")
    op.drop_index(op.f("ix_careplan_episodes_place_key"), table_name="careplan_episodes")
    op.drop_index(op.f("ix_careplan_episodes_person_id"), table_name="careplan_episodes")
    op.drop_index(op.f("ix_careplan_episodes_owner_org"), table_name="careplan_episodes")
    op.drop_index(op.f("ix_careplan_episodes_network_id"), table_name="careplan_episodes")
    op.drop_index(op.f("ix_careplan_episodes_named_worker_id"), table_name="careplan_episodes")
    op.drop_table("careplan_episodes")
    op.drop_table("careplan_clock_events")
