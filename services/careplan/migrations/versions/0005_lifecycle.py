"""Careplan: the episode lifecycle from triage (issue 17): the last referral version applied, the
running plan clock's London day (the worklist orders by it in SQL), who the calling system says
made each record, when each journey step was entered, withdrawn clock events, and the referrals
linked to another referral's episode or closed before an episode was opened.

Revision ID: 0005
Revises: 0004
"""

from collections import defaultdict
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from contracts.timezones import LONDON
from shared.sqltypes import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _backfill_plan_clock_day() -> None:
    # Open episodes whose plan clock runs: the London day it started (the model keeps it after).
    episodes = sa.table(
        "careplan_episodes",
        sa.column("id", sa.String()),
        sa.column("first_assessment_completed_at", UTCDateTime()),
        sa.column("plan_agreed_at", UTCDateTime()),
        sa.column("plan_clock_day", sa.Integer()),
    )
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(episodes.c.id, episodes.c.first_assessment_completed_at).where(
            episodes.c.first_assessment_completed_at.is_not(None), episodes.c.plan_agreed_at.is_(None)
        )
    ).all()
    by_day: dict[int, list[str]] = defaultdict(list)
    for episode_id, started in rows:
        if isinstance(started, str):  # SQLite without the type's result processing
            started = datetime.fromisoformat(started)
        if started.tzinfo is None:
            started = started.replace(tzinfo=UTC)
        by_day[started.astimezone(LONDON).date().toordinal()].append(episode_id)
    for day, ids in by_day.items():
        for at in range(0, len(ids), 500):
            chunk = ids[at : at + 500]
            bind.execute(episodes.update().where(episodes.c.id.in_(chunk)).values(plan_clock_day=day))


def upgrade() -> None:
    op.add_column(
        "careplan_episodes", sa.Column("referral_version", sa.Integer(), server_default="0", nullable=False)
    )
    op.add_column("careplan_episodes", sa.Column("plan_clock_day", sa.Integer(), nullable=True))
    op.create_index(
        op.f("ix_careplan_episodes_plan_clock_day"), "careplan_episodes", ["plan_clock_day"], unique=False
    )
    _backfill_plan_clock_day()
    op.add_column("careplan_records", sa.Column("end_user_id", sa.String(length=64), nullable=True))
    op.add_column("careplan_records", sa.Column("end_user_role", sa.String(length=64), nullable=True))
    op.add_column("careplan_clock_events", sa.Column("withdrawn_at", UTCDateTime(), nullable=True))
    # Steps kept before this revision were entered when they happened, as far as anyone knows.
    op.add_column("careplan_journey", sa.Column("recorded_at", UTCDateTime(), nullable=True))
    op.execute("UPDATE careplan_journey SET recorded_at = at")
    with op.batch_alter_table("careplan_journey") as batch:
        batch.alter_column("recorded_at", existing_type=UTCDateTime(), nullable=False)
    op.create_table(
        "careplan_referrals",
        sa.Column("referral_id", sa.String(length=36), nullable=False),
        sa.Column("person_id", sa.String(length=36), nullable=False),
        sa.Column("episode_id", sa.String(length=36), nullable=True),
        sa.Column("linked", sa.Boolean(), nullable=False),
        sa.Column("closed_at", UTCDateTime(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("referral_id", name=op.f("pk_careplan_referrals")),
    )
    op.create_index(
        op.f("ix_careplan_referrals_episode_id"), "careplan_referrals", ["episode_id"], unique=False
    )
    op.create_index(
        op.f("ix_careplan_referrals_person_id"), "careplan_referrals", ["person_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_careplan_referrals_person_id"), table_name="careplan_referrals")
    op.drop_index(op.f("ix_careplan_referrals_episode_id"), table_name="careplan_referrals")
    op.drop_table("careplan_referrals")
    # SQLite cannot always drop a column in place: batch mode copies the table where it must.
    with op.batch_alter_table("careplan_journey") as batch:
        batch.drop_column("recorded_at")
    with op.batch_alter_table("careplan_clock_events") as batch:
        batch.drop_column("withdrawn_at")
    with op.batch_alter_table("careplan_records") as batch:
        batch.drop_column("end_user_role")
        batch.drop_column("end_user_id")
    op.drop_index(op.f("ix_careplan_episodes_plan_clock_day"), table_name="careplan_episodes")
    with op.batch_alter_table("careplan_episodes") as batch:
        batch.drop_column("plan_clock_day")
        batch.drop_column("referral_version")
