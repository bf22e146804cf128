"""Triage: identity. A referral keeps the person as it gave them (`person_as_referred`) and, when
its NHS number matched someone whose date of birth or name disagrees, why identity is to be
confirmed (`identity_review`, `identity_review_open`). People carry a version (changed only by an
explicit, audited update, each version kept in `triage_person_versions`) and a family-name key,
indexed with the birth date (and the postcode indexed) so near matches are found without a scan.

Referrals taken before this revision have no `person_as_referred` (null): what they gave was not
kept. People on file start at version 1.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from shared.sqltypes import BigIntegerKey, UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("triage_people") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("family_key", sa.String(length=100), nullable=False, server_default=""))
    # The family key is the part of name_key before "|" (name_key is "family|given").
    if op.get_bind().dialect.name == "postgresql":
        op.execute("UPDATE triage_people SET family_key = split_part(name_key, '|', 1)")
    else:
        op.execute("UPDATE triage_people SET family_key = substr(name_key, 1, instr(name_key, '|') - 1)")
    op.create_index(
        "ix_triage_people_family_key_birth_date", "triage_people", ["family_key", "birth_date"], unique=False
    )
    op.create_index(op.f("ix_triage_people_postcode"), "triage_people", ["postcode"], unique=False)

    op.create_table(
        "triage_person_versions",
        sa.Column("seq", BigIntegerKey, autoincrement=True, nullable=False),
        sa.Column("person_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("changed_at", UTCDateTime(), nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("organisation", sa.String(length=32), nullable=False),
        sa.Column("end_user_id", sa.String(length=128), nullable=True),
        sa.Column("end_user_role", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("referral_id", sa.String(length=36), nullable=True),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("previous", sa.Text(), nullable=True),
        sa.Column("new", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_triage_person_versions")),
        sa.UniqueConstraint("person_id", "version", name=op.f("uq_triage_person_versions_person_id")),
    )
    op.create_index(
        op.f("ix_triage_person_versions_person_id"), "triage_person_versions", ["person_id"], unique=False
    )

    with op.batch_alter_table("triage_referrals") as batch:
        batch.add_column(sa.Column("person_as_referred", sa.Text(), nullable=True))
        batch.add_column(sa.Column("identity_review", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("identity_review_open", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_index(
        op.f("ix_triage_referrals_identity_review_open"),
        "triage_referrals",
        ["identity_review_open"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_triage_referrals_identity_review_open"), table_name="triage_referrals")
    with op.batch_alter_table("triage_referrals") as batch:
        batch.drop_column("identity_review_open")
        batch.drop_column("identity_review")
        batch.drop_column("person_as_referred")
    op.drop_index(op.f("ix_triage_person_versions_person_id"), table_name="triage_person_versions")
    op.drop_table("triage_person_versions")
    op.drop_index(op.f("ix_triage_people_postcode"), table_name="triage_people")
    op.drop_index("ix_triage_people_family_key_birth_date", table_name="triage_people")
    with op.batch_alter_table("triage_people") as batch:
        batch.drop_column("family_key")
        batch.drop_column("version")
