"""Reporting: bulk export jobs and their NDJSON files.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from shared.sqltypes import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reporting_export_files",
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "type", name=op.f("pk_reporting_export_files")),
    )
    op.create_table(
        "reporting_export_jobs",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("request_url", sa.String(length=1000), nullable=False),
        sa.Column("types", sa.String(length=200), nullable=False),
        sa.Column("since", UTCDateTime(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("transaction_time", UTCDateTime(), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reporting_export_jobs")),
    )
    op.create_index(
        op.f("ix_reporting_export_jobs_client_id"), "reporting_export_jobs", ["client_id"], unique=False
    )
    op.create_index(
        op.f("ix_reporting_export_jobs_status"), "reporting_export_jobs", ["status"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_reporting_export_jobs_status"), table_name="reporting_export_jobs")
    op.drop_index(op.f("ix_reporting_export_jobs_client_id"), table_name="reporting_export_jobs")
    op.drop_table("reporting_export_jobs")
    op.drop_table("reporting_export_files")
