"""Idempotency-Key table.

Revision ID: 0003
Revises: 0002
"""

from shared.migrations import create_idempotency_table_v1, drop_idempotency_table_v1

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_idempotency_table_v1()


def downgrade() -> None:
    drop_idempotency_table_v1()
