"""Triage: the referral lifecycle made accountable and linked. Each decision keeps the status it
moved from and to and the clinician the calling system asserted; a referral keeps when the
referrer wrote it apart from when the single point of access received it (with the reason for a
back-dated receipt), how it entered (screened, or straight back to the named worker's team), and
its links to another referral awaiting triage and to the person's open episode; careplan's
episodes are kept as a read-model.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from shared.sqltypes import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("triage_referrals") as batch:
        batch.add_column(sa.Column("authored_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("backdated_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("intake", sa.String(length=16), nullable=False, server_default="screened"))
        batch.add_column(sa.Column("awaiting_referral_id", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("open_episode_id", sa.String(length=64), nullable=True))
    op.create_index(
        op.f("ix_triage_referrals_awaiting_referral_id"),
        "triage_referrals",
        ["awaiting_referral_id"],
        unique=False,
    )
    with op.batch_alter_table("triage_decisions") as batch:
        batch.add_column(sa.Column("from_status", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("to_status", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("end_user_id", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("end_user_role", sa.String(length=64), nullable=True))
    op.create_table(
        "triage_episodes",
        sa.Column("episode_id", sa.String(length=64), nullable=False),
        sa.Column("referral_id", sa.String(length=36), nullable=False),
        sa.Column("person_id", sa.String(length=36), nullable=False),
        sa.Column("team_id", sa.String(length=64), nullable=True),
        sa.Column("named_worker_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("episode_id", name=op.f("pk_triage_episodes")),
    )
    op.create_index(op.f("ix_triage_episodes_referral_id"), "triage_episodes", ["referral_id"], unique=False)
    op.create_index(op.f("ix_triage_episodes_person_id"), "triage_episodes", ["person_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_triage_episodes_person_id"), table_name="triage_episodes")
    op.drop_index(op.f("ix_triage_episodes_referral_id"), table_name="triage_episodes")
    op.drop_table("triage_episodes")
    with op.batch_alter_table("triage_decisions") as batch:
        for column in ("end_user_role", "end_user_id", "to_status", "from_status"):
            batch.drop_column(column)
    op.drop_index(op.f("ix_triage_referrals_awaiting_referral_id"), table_name="triage_referrals")
    with op.batch_alter_table("triage_referrals") as batch:
        for column in (
            "open_episode_id",
            "awaiting_referral_id",
            "intake",
            "backdated_reason",
            "authored_at",
        ):
            batch.drop_column(column)
