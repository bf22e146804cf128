"""Idempotency-Key table.

Revision ID: 0002
Revises: 0001
"""

from shared.migrations import create_idempotency_table_v1, drop_idempotency_table_v1

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_idempotency_table_v1()


def downgrade() -> None:
    drop_idempotency_table_v1()
