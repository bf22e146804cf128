"""Effective-dated registry records and their rows.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from shared.sqltypes import BigIntegerKey, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registry_records",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_registry_records"),
    )
    op.create_index("ix_registry_records_kind", "registry_records", ["kind"])
    op.create_table(
        "registry_rows",
        sa.Column("seq", BigIntegerKey, autoincrement=True, nullable=False),
        sa.Column("record_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("change", sa.String(16), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("valid_to", sa.Date(), nullable=True),
        sa.Column("attributes", sa.Text(), nullable=False),
        sa.Column("code", sa.String(64), nullable=True),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("ref_id", sa.String(64), nullable=True),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.Column("recorded_by", sa.String(64), nullable=False),
        sa.Column("superseded_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["record_id"], ["registry_records.id"], name="fk_registry_rows_record_id_registry_records"
        ),
        sa.PrimaryKeyConstraint("seq", name="pk_registry_rows"),
        sa.UniqueConstraint("record_id", "version", "valid_from", name="uq_registry_rows_record_id"),
    )
    op.create_index("ix_registry_rows_record_id", "registry_rows", ["record_id"])
    op.create_index(
        "ix_registry_rows_live",
        "registry_rows",
        ["kind", "valid_from"],
        postgresql_where=sa.text("superseded_at IS NULL"),
        sqlite_where=sa.text("superseded_at IS NULL"),
    )
    op.create_index("ix_registry_rows_code", "registry_rows", ["kind", "code"])
    op.create_index("ix_registry_rows_ref_id", "registry_rows", ["ref_id"])


def downgrade() -> None:
    op.drop_index("ix_registry_rows_ref_id", table_name="registry_rows")
    op.drop_index("ix_registry_rows_code", table_name="registry_rows")
    op.drop_index("ix_registry_rows_live", table_name="registry_rows")
    op.drop_index("ix_registry_rows_record_id", table_name="registry_rows")
    op.drop_table("registry_rows")
    op.drop_index("ix_registry_records_kind", table_name="registry_records")
    op.drop_table("registry_records")
