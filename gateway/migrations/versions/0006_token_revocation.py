"""Token revocation: when a client's live tokens were revoked (set on disabling, kept on enabling
again, so tokens issued before a disable stay refused until they expire).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from shared.sqltypes import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("clients", sa.Column("tokens_revoked_before", UTCDateTime(), nullable=True))
    op.create_index("ix_clients_tokens_revoked_before", "clients", ["tokens_revoked_before"])


def downgrade() -> None:
    op.drop_index("ix_clients_tokens_revoked_before", table_name="clients")
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("tokens_revoked_before")
