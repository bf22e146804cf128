"""Alembic, driven programmatically, for every service's own migration history.

Each service (and the gateway) keeps its migrations in `<package>/migrations/` (its `MIGRATIONS`,
in its `models.py`); its `env.py` is one call to `run_env`. `migrate` runs one such directory on an
async engine through Alembic's connection-sharing recipe, so the same code path serves `cmh
migrate`, `cmh run` and the tests, on both backends. Which owner's migrations live where is the
composition root's knowledge (`cmh/migrations.py`): nothing here imports a service.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command, op
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection

from shared.db import check_schema_name, create_engine, is_sqlite
from shared.messaging_models import NAMING_CONVENTION, MessagingBase
from shared.sqltypes import BigIntegerKey, UTCDateTime


def new_metadata() -> MetaData:
    """Metadata for a service's own models, with the naming convention Alembic relies on."""
    return MetaData(naming_convention=NAMING_CONVENTION)


def migrations_beside(module_file: str) -> Path:
    """The `migrations/` directory of the package holding `module_file` (a models module's `__file__`)."""
    return Path(module_file).resolve().parent / "migrations"


def alembic_config(directory: Path) -> Config:
    config = Config()
    config.set_main_option("script_location", str(directory))
    return config


def _advisory_key(owner: str) -> int:
    return int.from_bytes(hashlib.sha256(f"cmh-migrate-{owner}".encode()).digest()[:8], "big", signed=True)


async def migrate(
    owner: str, url: str, *, directory: Path, schema: str | None = None, revision: str = "head"
) -> None:
    """Bring one owner's database (or PostgreSQL schema) to `revision` of the migrations in
    `directory` (the owner's `MIGRATIONS`); safe to run concurrently. By owner name alone:
    `cmh.migrations.migrate`."""
    _run_alembic = _upgrade if revision != "base" else _downgrade
    sqlite = is_sqlite(url)
    schema = None if sqlite else check_schema_name(schema or owner)
    engine = create_engine(url, schema=schema, pool_size=1)
    try:
        async with engine.begin() as connection:
            if not sqlite:
                # Replicas starting together migrate one at a time.
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _advisory_key(owner)}
                )
                await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            await connection.run_sync(_run_alembic, directory, schema, revision)
    finally:
        await engine.dispose()


def _configured(connection: Connection, directory: Path, schema: str | None) -> Config:
    config = alembic_config(directory)
    config.attributes["connection"] = connection
    config.attributes["schema"] = schema
    return config


def _upgrade(connection: Connection, directory: Path, schema: str | None, revision: str) -> None:
    command.upgrade(_configured(connection, directory, schema), revision)


def _downgrade(connection: Connection, directory: Path, schema: str | None, revision: str) -> None:
    command.downgrade(_configured(connection, directory, schema), revision)


def is_managed(name: str | None, type_: str, _parents: Any = None) -> bool:
    """Alembic `include_name`: full-text search tables (`*_fts`, and FTS5's shadow tables
    `*_fts_*`) differ by dialect, so their migrations write them by hand and autogenerate skips them."""
    if type_ != "table" or name is None:
        return True
    return not (name.endswith("_fts") or "_fts_" in name)


def run_env(target_metadata: MetaData) -> None:
    """The whole body of a service's Alembic `env.py`."""
    from alembic import context

    connection: Connection | None = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations with `cmh migrate` (they need the service's connection)")
    schema = context.config.attributes.get("schema")
    context.configure(
        connection=connection,
        target_metadata=[target_metadata, MessagingBase.metadata],
        version_table_schema=schema,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=is_managed,
    )
    with context.begin_transaction():
        context.run_migrations()


# --- frozen operations used by first migrations -----------------------------------------------
# Migrations are history: these helpers must never change. A later change to the messaging tables
# gets a new helper and a new revision in every service.


def create_messaging_tables_v1() -> None:
    """Create the outbox and inbox tables (revision 0001 of every service)."""
    op.create_table(
        "outbox",
        sa.Column("seq", BigIntegerKey, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("published_at", UTCDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_outbox"),
        sa.UniqueConstraint("event_id", name="uq_outbox_event_id"),
    )
    op.create_index(
        "ix_outbox_unpublished",
        "outbox",
        ["seq"],
        postgresql_where=sa.text("published_at IS NULL"),
        sqlite_where=sa.text("published_at IS NULL"),
    )
    op.create_index("ix_outbox_published_at", "outbox", ["published_at"])
    op.create_table(
        "inbox",
        sa.Column("consumer", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("processed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "event_id", name="pk_inbox"),
    )
    op.create_index("ix_inbox_processed_at", "inbox", ["processed_at"])


def drop_messaging_tables_v1() -> None:
    op.drop_index("ix_inbox_processed_at", table_name="inbox")
    op.drop_table("inbox")
    op.drop_index("ix_outbox_published_at", table_name="outbox")
    op.drop_index("ix_outbox_unpublished", table_name="outbox")
    op.drop_table("outbox")


def create_idempotency_table_v1() -> None:
    """Create the Idempotency-Key table (a revision of every service that takes creates)."""
    op.create_table(
        "idempotency_keys",
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "key", name="pk_idempotency_keys"),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def drop_idempotency_table_v1() -> None:
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
