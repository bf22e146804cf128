"""Reporting: pseudonymised projections of referrals, episodes and handovers.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from shared.sqltypes import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reporting_episodes",
        sa.Column("episode_id", sa.String(length=64), nullable=False),
        sa.Column("referral_id", sa.String(length=64), nullable=False),
        sa.Column("person_key", sa.String(length=32), nullable=False),
        sa.Column("place", sa.String(length=64), nullable=True),
        sa.Column("network", sa.String(length=64), nullable=True),
        sa.Column("team", sa.String(length=64), nullable=True),
        sa.Column("pathway", sa.String(length=64), nullable=True),
        sa.Column("age_at_referral", sa.Integer(), nullable=False),
        sa.Column("age_band", sa.String(length=8), nullable=True),
        sa.Column("sex", sa.String(length=16), nullable=True),
        sa.Column("ethnicity", sa.String(length=32), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=True),
        sa.Column("reaccess", sa.Boolean(), nullable=False),
        sa.Column("opened_at", UTCDateTime(), nullable=False),
        sa.Column("referral_received_at", UTCDateTime(), nullable=False),
        sa.Column("spell_started_at", UTCDateTime(), nullable=False),
        sa.Column("first_assessment_completed_at", UTCDateTime(), nullable=True),
        sa.Column("plan_agreed_at", UTCDateTime(), nullable=True),
        sa.Column("first_attended_contact_at", UTCDateTime(), nullable=True),
        sa.Column("first_outcome_measure_at", UTCDateTime(), nullable=True),
        sa.Column("first_meaningful_assessment_at", UTCDateTime(), nullable=True),
        sa.Column("first_intervention_at", UTCDateTime(), nullable=True),
        sa.Column("assessment_started_at", UTCDateTime(), nullable=True),
        sa.Column("advice_or_signposting_at", UTCDateTime(), nullable=True),
        sa.Column("discharged_at", UTCDateTime(), nullable=True),
        sa.Column("plan_start_day", sa.Integer(), nullable=True),
        sa.Column("plan_stop_day", sa.Integer(), nullable=True),
        sa.Column("national_start_day", sa.Integer(), nullable=True),
        sa.Column("national_stop_day", sa.Integer(), nullable=True),
        sa.Column("discharged_day", sa.Integer(), nullable=True),
        sa.Column("at_risk_at", UTCDateTime(), nullable=True),
        sa.Column("breached_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("episode_id", name=op.f("pk_reporting_episodes")),
    )
    op.create_index(
        op.f("ix_reporting_episodes_opened_at"), "reporting_episodes", ["opened_at"], unique=False
    )
    op.create_index(
        op.f("ix_reporting_episodes_person_key"), "reporting_episodes", ["person_key"], unique=False
    )
    op.create_index(
        op.f("ix_reporting_episodes_referral_id"), "reporting_episodes", ["referral_id"], unique=False
    )
    op.create_index(
        op.f("ix_reporting_episodes_updated_at"), "reporting_episodes", ["updated_at"], unique=False
    )
    op.create_table(
        "reporting_handovers",
        sa.Column("handover_id", sa.String(length=64), nullable=False),
        sa.Column("referral_id", sa.String(length=64), nullable=False),
        sa.Column("person_key", sa.String(length=32), nullable=False),
        sa.Column("service_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("offered_at", UTCDateTime(), nullable=False),
        sa.Column("accepted_at", UTCDateTime(), nullable=True),
        sa.Column("completed_at", UTCDateTime(), nullable=True),
        sa.Column("declined_at", UTCDateTime(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("handover_id", name=op.f("pk_reporting_handovers")),
    )
    op.create_index(
        op.f("ix_reporting_handovers_offered_at"), "reporting_handovers", ["offered_at"], unique=False
    )
    op.create_index(
        op.f("ix_reporting_handovers_referral_id"), "reporting_handovers", ["referral_id"], unique=False
    )
    op.create_index(
        op.f("ix_reporting_handovers_updated_at"), "reporting_handovers", ["updated_at"], unique=False
    )
    op.create_table(
        "reporting_referrals",
        sa.Column("referral_id", sa.String(length=64), nullable=False),
        sa.Column("person_key", sa.String(length=32), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=True),
        sa.Column("suggested_route", sa.String(length=32), nullable=True),
        sa.Column("route", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("place", sa.String(length=64), nullable=True),
        sa.Column("network", sa.String(length=64), nullable=True),
        sa.Column("team", sa.String(length=64), nullable=True),
        sa.Column("pathway", sa.String(length=64), nullable=True),
        sa.Column("age_band", sa.String(length=8), nullable=True),
        sa.Column("sex", sa.String(length=16), nullable=True),
        sa.Column("ethnicity", sa.String(length=32), nullable=True),
        sa.Column("crisis", sa.Boolean(), nullable=False),
        sa.Column("first_contact_at", UTCDateTime(), nullable=True),
        sa.Column("response_minutes", sa.Integer(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("referral_id", name=op.f("pk_reporting_referrals")),
    )
    op.create_index(
        op.f("ix_reporting_referrals_person_key"), "reporting_referrals", ["person_key"], unique=False
    )
    op.create_index(
        op.f("ix_reporting_referrals_received_at"), "reporting_referrals", ["received_at"], unique=False
    )
    op.create_index(
        op.f("ix_reporting_referrals_updated_at"), "reporting_referrals", ["updated_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_reporting_referrals_updated_at"), table_name="reporting_referrals")
    op.drop_index(op.f("ix_reporting_referrals_received_at"), table_name="reporting_referrals")
    op.drop_index(op.f("ix_reporting_referrals_person_key"), table_name="reporting_referrals")
    op.drop_table("reporting_referrals")
    op.drop_index(op.f("ix_reporting_handovers_updated_at"), table_name="reporting_handovers")
    op.drop_index(op.f("ix_reporting_handovers_referral_id"), table_name="reporting_handovers")
    op.drop_index(op.f("ix_reporting_handovers_offered_at"), table_name="reporting_handovers")
    op.drop_table("reporting_handovers")
    op.drop_index(op.f("ix_reporting_episodes_updated_at"), table_name="reporting_episodes")
    op.drop_index(op.f("ix_reporting_episodes_referral_id"), table_name="reporting_episodes")
    op.drop_index(op.f("ix_reporting_episodes_person_key"), table_name="reporting_episodes")
    op.drop_index(op.f("ix_reporting_episodes_opened_at"), table_name="reporting_episodes")
    op.drop_table("reporting_episodes")
