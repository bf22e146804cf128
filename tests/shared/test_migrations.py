"""Every service's migrations apply, match its models, and roll back, on both backends."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from cmh.migrations import migrate, migrate_all
from shared.db import Database
from shared.messaging_models import MessagingBase
from shared.migrations import is_managed
from shared.settings import SERVICES, Settings


@pytest.mark.parametrize("service", SERVICES)
async def test_migrations_match_models_and_roll_back(
    service: str, make_settings: Callable[..., Settings]
) -> None:
    from importlib import import_module

    settings = make_settings()
    url, schema = settings.database_url_for(service), settings.database_schema_for(service)
    await migrate(service, url, schema=schema)
    await migrate(service, url, schema=schema)  # idempotent
    models = import_module(f"services.{service}.models")
    db = Database(url, schema=schema)
    try:
        async with db.engine.connect() as connection:

            def diff(sync_connection):  # type: ignore[no-untyped-def]
                context = MigrationContext.configure(
                    sync_connection, opts={"compare_type": True, "include_name": is_managed}
                )
                return compare_metadata(context, [models.Base.metadata, MessagingBase.metadata])

            assert await connection.run_sync(diff) == []
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
            assert {"outbox", "inbox", "alembic_version"} <= tables

        await migrate(service, url, schema=schema, revision="base")
        async with db.engine.connect() as connection:
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
            assert tables <= {"alembic_version"}
    finally:
        await db.dispose()


async def test_services_never_share_tables(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    await migrate_all(settings)
    locations = {(settings.database_url_for(s), settings.database_schema_for(s)) for s in SERVICES}
    assert len(locations) == len(SERVICES)
