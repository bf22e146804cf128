"""Notify: partner subscriptions, per-resource cursors, deliveries and their attempts.

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
        "notify_subscriptions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("owner_org", sa.String(length=32), nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("criteria", sa.String(length=200), nullable=False),
        sa.Column("resource_type", sa.String(length=32), nullable=False),
        sa.Column("status_filter", sa.Text(), nullable=True),
        sa.Column("endpoint", sa.String(length=2048), nullable=False),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("secret", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("end", UTCDateTime(), nullable=True),
        sa.Column("events_since_start", sa.Integer(), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.Column("last_delivered_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notify_subscriptions")),
    )
    op.create_index(
        op.f("ix_notify_subscriptions_owner_org"), "notify_subscriptions", ["owner_org"], unique=False
    )
    op.create_table(
        "notify_resource_cursors",
        sa.Column("subscription_id", sa.String(length=36), nullable=False),
        sa.Column("resource_key", sa.String(length=100), nullable=False),
        sa.Column("last_version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("subscription_id", "resource_key", name=op.f("pk_notify_resource_cursors")),
    )
    op.create_table(
        "notify_deliveries",
        sa.Column("seq", BigIntegerKey, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("subscription_id", sa.String(length=36), nullable=False),
        sa.Column("resource_key", sa.String(length=100), nullable=False),
        sa.Column("event_number", sa.Integer(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("leased_until", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_notify_deliveries")),
        sa.UniqueConstraint("id", name=op.f("uq_notify_deliveries_id")),
    )
    op.create_index(
        "ix_notify_deliveries_order",
        "notify_deliveries",
        ["subscription_id", "resource_key", "seq"],
        unique=False,
    )
    op.create_index(
        "ix_notify_deliveries_due", "notify_deliveries", ["state", "next_attempt_at"], unique=False
    )
    op.create_table(
        "notify_attempts",
        sa.Column("seq", BigIntegerKey, autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.String(length=36), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("outcome", sa.String(length=64), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_notify_attempts")),
    )
    op.create_index(op.f("ix_notify_attempts_at"), "notify_attempts", ["at"], unique=False)
    op.create_index(op.f("ix_notify_attempts_delivery_id"), "notify_attempts", ["delivery_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_notify_attempts_delivery_id"), table_name="notify_attempts")
    op.drop_index(op.f("ix_notify_attempts_at"), table_name="notify_attempts")
    op.drop_table("notify_attempts")
    op.drop_index("ix_notify_deliveries_due", table_name="notify_deliveries")
    op.drop_index("ix_notify_deliveries_order", table_name="notify_deliveries")
    op.drop_table("notify_deliveries")
    op.drop_table("notify_resource_cursors")
    op.drop_index(op.f("ix_notify_subscriptions_owner_org"), table_name="notify_subscriptions")
    op.drop_table("notify_subscriptions")
