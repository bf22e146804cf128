"""Triage: people, referrals, decisions, the crisis change feed, and read-models of the registry,
the directory and careplan discharges.

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
        "triage_crisis_changes",
        sa.Column("seq", BigIntegerKey, autoincrement=True, nullable=False),
        sa.Column("referral_id", sa.String(length=36), nullable=False),
        sa.Column("change", sa.String(length=20), nullable=False),
        sa.Column("entry", sa.Text(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_triage_crisis_changes")),
    )
    op.create_index(
        op.f("ix_triage_crisis_changes_referral_id"), "triage_crisis_changes", ["referral_id"], unique=False
    )
    op.create_table(
        "triage_decisions",
        sa.Column("seq", BigIntegerKey, autoincrement=True, nullable=False),
        sa.Column("referral_id", sa.String(length=36), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=True),
        sa.Column("route", sa.String(length=32), nullable=True),
        sa.Column("team_id", sa.String(length=64), nullable=True),
        sa.Column("signposts", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_triage_decisions")),
    )
    op.create_index(
        op.f("ix_triage_decisions_referral_id"), "triage_decisions", ["referral_id"], unique=False
    )
    op.create_table(
        "triage_directory_services",
        sa.Column("service_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("service_id", name=op.f("pk_triage_directory_services")),
    )
    op.create_table(
        "triage_discharges",
        sa.Column("episode_id", sa.String(length=64), nullable=False),
        sa.Column("person_id", sa.String(length=36), nullable=False),
        sa.Column("team_id", sa.String(length=64), nullable=False),
        sa.Column("named_worker_id", sa.String(length=64), nullable=True),
        sa.Column("discharged_at", UTCDateTime(), nullable=False),
        sa.Column("reaccess_until", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("episode_id", name=op.f("pk_triage_discharges")),
    )
    op.create_index(op.f("ix_triage_discharges_person_id"), "triage_discharges", ["person_id"], unique=False)
    op.create_table(
        "triage_people",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("nhs_number", sa.String(length=10), nullable=True),
        sa.Column("name_key", sa.String(length=200), nullable=False),
        sa.Column("birth_date", sa.Date(), nullable=False),
        sa.Column("postcode", sa.String(length=8), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_triage_people")),
        sa.UniqueConstraint("nhs_number", name=op.f("uq_triage_people_nhs_number")),
    )
    op.create_index(op.f("ix_triage_people_birth_date"), "triage_people", ["birth_date"], unique=False)
    op.create_index(op.f("ix_triage_people_name_key"), "triage_people", ["name_key"], unique=False)
    op.create_table(
        "triage_referrals",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("person_id", sa.String(length=36), nullable=False),
        sa.Column("referring_org", sa.String(length=32), nullable=False),
        sa.Column("referring_client", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("age", sa.Integer(), nullable=False),
        sa.Column("consent_to_share", sa.Boolean(), nullable=False),
        sa.Column("crisis", sa.Boolean(), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("suggestion", sa.Text(), nullable=False),
        sa.Column("suggested_priority", sa.Integer(), nullable=False),
        sa.Column("suggested_route", sa.String(length=32), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("route", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("place_key", sa.String(length=64), nullable=True),
        sa.Column("network_id", sa.String(length=64), nullable=True),
        sa.Column("team_id", sa.String(length=64), nullable=True),
        sa.Column("pathway", sa.String(length=64), nullable=True),
        sa.Column("possible_duplicates", sa.Text(), nullable=False),
        sa.Column("reaccess_episode_id", sa.String(length=64), nullable=True),
        sa.Column("deadline_at", UTCDateTime(), nullable=True),
        sa.Column("first_contact_at", UTCDateTime(), nullable=True),
        sa.Column("response_minutes", sa.Integer(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_triage_referrals")),
    )
    op.create_index(op.f("ix_triage_referrals_crisis"), "triage_referrals", ["crisis"], unique=False)
    op.create_index(
        op.f("ix_triage_referrals_deadline_at"), "triage_referrals", ["deadline_at"], unique=False
    )
    op.create_index(op.f("ix_triage_referrals_network_id"), "triage_referrals", ["network_id"], unique=False)
    op.create_index(op.f("ix_triage_referrals_person_id"), "triage_referrals", ["person_id"], unique=False)
    op.create_index(op.f("ix_triage_referrals_place_key"), "triage_referrals", ["place_key"], unique=False)
    op.create_index(op.f("ix_triage_referrals_priority"), "triage_referrals", ["priority"], unique=False)
    op.create_index(
        op.f("ix_triage_referrals_received_at"), "triage_referrals", ["received_at"], unique=False
    )
    op.create_index(
        op.f("ix_triage_referrals_referring_org"), "triage_referrals", ["referring_org"], unique=False
    )
    op.create_index(op.f("ix_triage_referrals_status"), "triage_referrals", ["status"], unique=False)
    op.create_index(op.f("ix_triage_referrals_team_id"), "triage_referrals", ["team_id"], unique=False)
    op.create_table(
        "triage_registry_records",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("timeline", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_triage_registry_records")),
    )
    op.create_index(
        op.f("ix_triage_registry_records_kind"), "triage_registry_records", ["kind"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_triage_registry_records_kind"), table_name="triage_registry_records")
    op.drop_table("triage_registry_records")
    op.drop_index(op.f("ix_triage_referrals_team_id"), table_name="triage_referrals")
    op.drop_index(op.f("ix_triage_referrals_status"), table_name="triage_referrals")
    op.drop_index(op.f("ix_triage_referrals_referring_org"), table_name="triage_referrals")
    op.drop_index(op.f("ix_triage_referrals_received_at"), table_name="triage_referrals")
    op.drop_index(op.f("ix_triage_referrals_priority"), table_name="triage_referrals")
    op.drop_index(op.f("ix_triage_referrals_place_key"), table_name="triage_referrals")
    op.drop_index(op.f("ix_triage_referrals_person_id"), table_name="triage_referrals")
    op.drop_index(op.f("ix_triage_referrals_network_id"), table_name="triage_referrals")
    op.drop_index(op.f("ix_triage_referrals_deadline_at"), table_name="triage_referrals")
    op.drop_index(op.f("ix_triage_referrals_crisis"), table_name="triage_referrals")
    op.drop_table("triage_referrals")
    op.drop_index(op.f("ix_triage_people_name_key"), table_name="triage_people")
    op.drop_index(op.f("ix_triage_people_birth_date"), table_name="triage_people")
    op.drop_table("triage_people")
    op.drop_index(op.f("ix_triage_discharges_person_id"), table_name="triage_discharges")
    op.drop_table("triage_discharges")
    op.drop_table("triage_directory_services")
    op.drop_index(op.f("ix_triage_decisions_referral_id"), table_name="triage_decisions")
    op.drop_table("triage_decisions")
    op.drop_index(op.f("ix_triage_crisis_changes_referral_id"), table_name="triage_crisis_changes")
    op.drop_table("triage_crisis_changes")
