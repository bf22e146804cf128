"""People who sign in (their provider identity mapped to an organisation and roles) and their
server-side sessions (issue 22).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

from shared.sqltypes import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "people",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column("issuer", sa.String(length=500), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("organisation", sa.String(length=16), nullable=False),
        sa.Column("organisation_system", sa.String(length=16), nullable=False),
        sa.Column("roles", sa.String(length=500), nullable=False),
        sa.Column("team_id", sa.String(length=64), nullable=True),
        sa.Column("mapped_from", sa.String(length=16), nullable=False, server_default="local"),
        sa.Column("disabled_at", UTCDateTime(), nullable=True),
        sa.Column("tokens_revoked_before", UTCDateTime(), nullable=True),
        sa.Column("last_signed_in_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("issuer", "subject", name="uq_people_identity"),
    )
    op.create_index("ix_people_organisation", "people", ["organisation"])
    op.create_index("ix_people_tokens_revoked_before", "people", ["tokens_revoked_before"])
    op.create_table(
        "web_sessions",
        sa.Column("key_hash", sa.String(length=64), primary_key=True),
        sa.Column("person_id", sa.String(length=32), nullable=True),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("id_token", sa.Text(), nullable=True),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_web_sessions_person_id", "web_sessions", ["person_id"])
    op.create_index("ix_web_sessions_last_seen_at", "web_sessions", ["last_seen_at"])


def downgrade() -> None:
    op.drop_table("web_sessions")
    op.drop_table("people")
