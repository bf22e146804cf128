"""Audit tamper evidence: a hash on every audit row chained to the previous one, back-filled in
id order for the rows already there.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from gateway.audit_chain import CHAINED_FIELDS, GENESIS, chain_hash
from gateway.models import AuditPerson, AuditRecord

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN: a batch rebuild on SQLite would drop the append-only triggers.
    op.add_column("audit_records", sa.Column("chain_hash", sa.String(64), nullable=True))
    bind = op.get_bind()
    records, persons = AuditRecord.__table__, AuditPerson.__table__
    if bind.execute(sa.select(sa.func.count()).select_from(records)).scalar_one() == 0:
        return
    # The back-fill is the one sanctioned UPDATE: lift the guard for it, inside this transaction.
    _guard(bind.dialect.name, enable=False)
    previous = GENESIS
    for row in bind.execute(sa.select(records).order_by(records.c.id)).mappings():
        person_ids = bind.execute(
            sa.select(persons.c.person_id).where(persons.c.audit_id == row["id"])
        ).scalars()
        previous = chain_hash({name: row[name] for name in CHAINED_FIELDS}, list(person_ids), previous)
        bind.execute(sa.update(records).where(records.c.id == row["id"]).values(chain_hash=previous))
    _guard(bind.dialect.name, enable=True)


def _guard(dialect: str, *, enable: bool) -> None:
    if dialect == "postgresql":
        op.execute(
            f"ALTER TABLE audit_records {'ENABLE' if enable else 'DISABLE'} TRIGGER audit_records_append_only"
        )
    elif enable:
        op.execute(
            "CREATE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records "
            "BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END"
        )
    else:
        op.execute("DROP TRIGGER audit_records_no_update")


def downgrade() -> None:
    with op.batch_alter_table("audit_records") as batch:
        batch.drop_column("chain_hash")
