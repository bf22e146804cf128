"""Triage: read-model generations, so intake sees a changed registry or directory with one
primary-key read (not a scan of every partner service per referral), and picks up only the
directory services that changed. Withdrawn services are kept as tombstones for that.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    generations = op.create_table(
        "triage_readmodel_generations",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_triage_readmodel_generations")),
    )
    op.bulk_insert(
        generations, [{"name": "registry", "generation": 0}, {"name": "directory", "generation": 0}]
    )
    with op.batch_alter_table("triage_directory_services") as batch:
        batch.add_column(sa.Column("withdrawn", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("generation", sa.BigInteger(), nullable=False, server_default="0"))
    op.create_index(
        op.f("ix_triage_directory_services_generation"),
        "triage_directory_services",
        ["generation"],
        unique=False,
    )


def downgrade() -> None:
    op.execute("DELETE FROM triage_directory_services WHERE withdrawn")
    op.drop_index(op.f("ix_triage_directory_services_generation"), table_name="triage_directory_services")
    with op.batch_alter_table("triage_directory_services") as batch:
        batch.drop_column("generation")
        batch.drop_column("withdrawn")
    op.drop_table("triage_readmodel_generations")
