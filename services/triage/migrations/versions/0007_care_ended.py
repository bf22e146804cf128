"""Triage: a referral knows the episode its care is in and when that episode ended, so its
ServiceRequest stays `active` while care is under way and becomes `completed` when it ends.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from shared.sqltypes import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("triage_referrals") as batch:
        batch.add_column(sa.Column("episode_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("care_ended_at", UTCDateTime(), nullable=True))
    op.create_index(op.f("ix_triage_referrals_episode_id"), "triage_referrals", ["episode_id"], unique=False)
    # Referrals already in an episode: the episodes triage has seen name them.
    op.execute(
        "UPDATE triage_referrals SET episode_id = (SELECT e.episode_id FROM triage_episodes e "
        "WHERE e.referral_id = triage_referrals.id LIMIT 1) WHERE episode_id IS NULL"
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_triage_referrals_episode_id"), table_name="triage_referrals")
    with op.batch_alter_table("triage_referrals") as batch:
        batch.drop_column("care_ended_at")
        batch.drop_column("episode_id")
