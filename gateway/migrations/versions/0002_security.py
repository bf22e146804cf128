"""Client registry, signing keys, used client assertions, and the append-only audit trail.

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

APPEND_ONLY = ("audit_records", "audit_record_persons")


def upgrade() -> None:
    op.create_table(
        "clients",
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("organisation", sa.String(16), nullable=False),
        sa.Column("organisation_system", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("auth_method", sa.String(32), nullable=False),
        sa.Column("secret_hash", sa.String(255), nullable=True),
        sa.Column("previous_secret_hash", sa.String(255), nullable=True),
        sa.Column("previous_secret_expires_at", UTCDateTime(), nullable=True),
        sa.Column("jwks", sa.Text(), nullable=True),
        sa.Column("rate_limit_per_minute", sa.Integer(), nullable=True),
        sa.Column("disabled_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("client_id", name="pk_clients"),
    )
    op.create_index("ix_clients_organisation", "clients", ["organisation"])
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("private_key_pem", sa.Text(), nullable=False),
        sa.Column("public_jwk", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("activates_at", UTCDateTime(), nullable=False),
        sa.Column("retires_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("kid", name="pk_signing_keys"),
    )
    op.create_index("ix_signing_keys_status", "signing_keys", ["status"])
    op.create_table(
        "used_client_assertions",
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("jti", sa.String(255), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "jti", name="pk_used_client_assertions"),
    )
    op.create_index("ix_used_client_assertions_expires_at", "used_client_assertions", ["expires_at"])
    op.create_table(
        "audit_records",
        sa.Column("id", BigIntegerKey, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.Column("service", sa.String(32), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_ids", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("organisation", sa.String(16), nullable=False),
        sa.Column("client_kind", sa.String(32), nullable=False),
        sa.Column("end_user_id", sa.String(64), nullable=True),
        sa.Column("end_user_role", sa.String(64), nullable=True),
        sa.Column("purpose_of_use", sa.String(16), nullable=False),
        sa.Column("token_id", sa.String(128), nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_records"),
        sa.UniqueConstraint("event_id", name="uq_audit_records_event_id"),
    )
    op.create_index("ix_audit_records_occurred_at", "audit_records", ["occurred_at"])
    op.create_index("ix_audit_records_client_id", "audit_records", ["client_id"])
    op.create_table(
        "audit_record_persons",
        sa.Column("audit_id", BigIntegerKey, nullable=False),
        sa.Column("person_id", sa.String(128), nullable=False),
        sa.ForeignKeyConstraint(
            ["audit_id"], ["audit_records.id"], name="fk_audit_record_persons_audit_id_audit_records"
        ),
        sa.PrimaryKeyConstraint("audit_id", "person_id", name="pk_audit_record_persons"),
    )
    op.create_index("ix_audit_record_persons_person_id", "audit_record_persons", ["person_id"])
    _forbid_changes()


def _forbid_changes() -> None:
    """The database itself refuses to change or remove audit rows, whatever code asks."""
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(
            """
            CREATE FUNCTION cmh_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'audit records are append-only' USING ERRCODE = 'insufficient_privilege';
            END $$
            """
        )
        for table in APPEND_ONLY:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION cmh_audit_append_only()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION cmh_audit_append_only()"
            )
    else:
        for table in APPEND_ONLY:
            for change in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{change.lower()} BEFORE {change} ON {table} "
                    "BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END"
                )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in APPEND_ONLY:
        if dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS cmh_audit_append_only()")
    op.drop_index("ix_audit_record_persons_person_id", table_name="audit_record_persons")
    op.drop_table("audit_record_persons")
    op.drop_index("ix_audit_records_client_id", table_name="audit_records")
    op.drop_index("ix_audit_records_occurred_at", table_name="audit_records")
    op.drop_table("audit_records")
    op.drop_index("ix_used_client_assertions_expires_at", table_name="used_client_assertions")
    op.drop_table("used_client_assertions")
    op.drop_index("ix_signing_keys_status", table_name="signing_keys")
    op.drop_table("signing_keys")
    op.drop_index("ix_clients_organisation", table_name="clients")
    op.drop_table("clients")
