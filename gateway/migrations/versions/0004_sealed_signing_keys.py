"""Signing keys sealed at rest: a column for the sealed private key; the plaintext one may be empty.

The data is not moved here: sealing needs the key-encryption key, which the migration Job does
not hold. The gateway seals every plaintext row when it starts (gateway/keys.py).

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
    with op.batch_alter_table("signing_keys") as batch:
        batch.add_column(sa.Column("private_key_sealed", sa.Text(), nullable=True))
        batch.alter_column("private_key_pem", existing_type=sa.Text(), nullable=True)


def downgrade() -> None:
    # Sealed keys cannot be unsealed without the KEK: a downgrade keeps only plaintext rows.
    op.execute("DELETE FROM signing_keys WHERE private_key_pem IS NULL")
    with op.batch_alter_table("signing_keys") as batch:
        batch.alter_column("private_key_pem", existing_type=sa.Text(), nullable=False)
        batch.drop_column("private_key_sealed")
