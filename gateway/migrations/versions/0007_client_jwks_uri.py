"""Partner-hosted keys: a private_key_jwt client names either a static JWKS (`jwks`) or a
`jwks_uri` the gateway fetches and caches (gateway/jwks_fetch.py), so a partner rotates its own
keys. Nullable: every existing client keeps its secret or its static JWKS.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("clients", sa.Column("jwks_uri", sa.String(length=2048), nullable=True))


def downgrade() -> None:
    # A client registered by URI only would be left with no keys at all: refuse rather than
    # silently lock it out (switch it to a static JWKS first: `cmh clients rotate --jwks-file`).
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT count(*) FROM clients WHERE jwks_uri IS NOT NULL")).scalar():
        raise RuntimeError("clients use a jwks_uri: give them a static JWKS before downgrading past 0007")
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("jwks_uri")
