"""Careplan: episodes remember the organisation that made the referral (partners read their own).

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
    # A nullable column: episodes opened before this revision have no referrer recorded (only the
    # providing organisation sees them through the FHIR views).
    op.add_column("careplan_episodes", sa.Column("referring_org", sa.String(length=32), nullable=True))
    op.create_index(
        op.f("ix_careplan_episodes_referring_org"), "careplan_episodes", ["referring_org"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_careplan_episodes_referring_org"), table_name="careplan_episodes")
    # SQLite cannot always drop a column in place: batch mode copies the table where it must.
    with op.batch_alter_table("careplan_episodes") as batch:
        batch.drop_column("referring_org")
