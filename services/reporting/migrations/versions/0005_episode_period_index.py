"""Reporting: episodes by referral received time (every episode pull's period filter), and on
PostgreSQL statistics on the clocks' day counts, which the four-week pull groups by.

Without the statistics the planner guesses 200 distinct values per expression, so it expects
100,000 groups where there are a few hundred: a sorted plan and JIT compilation for nothing.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Extended statistics are PostgreSQL only (SQLite's planner has no use for them).
DAY_STATISTICS = {
    "stx_reporting_episodes_plan_days": "plan_stop_day - plan_start_day",
    "stx_reporting_episodes_national_days": "national_stop_day - national_start_day",
}


def upgrade() -> None:
    op.create_index(
        op.f("ix_reporting_episodes_referral_received_at"),
        "reporting_episodes",
        ["referral_received_at"],
        unique=False,
    )
    if op.get_bind().dialect.name == "postgresql":
        for name, expression in DAY_STATISTICS.items():
            op.execute(f"CREATE STATISTICS {name} ON ({expression}) FROM reporting_episodes")
        op.execute("ANALYZE reporting_episodes")  # gathered now, not at the next autovacuum


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in DAY_STATISTICS:
            op.execute(f"DROP STATISTICS {name}")
    op.drop_index(op.f("ix_reporting_episodes_referral_received_at"), table_name="reporting_episodes")
