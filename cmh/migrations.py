"""Every database owner's migrations, by name: the map `shared.migrations.migrate` is given a
directory from (`cmh migrate`, `cmh run`, the tests and the benchmarks migrate an owner by name)."""

from __future__ import annotations

from pathlib import Path

from gateway import models as gateway
from services.careplan import models as careplan
from services.directory import models as directory
from services.notify import models as notify
from services.registry import models as registry
from services.reporting import models as reporting
from services.triage import models as triage
from shared import migrations
from shared.settings import DATABASE_OWNERS, Settings

MIGRATIONS: dict[str, Path] = {
    "gateway": gateway.MIGRATIONS,
    "triage": triage.MIGRATIONS,
    "careplan": careplan.MIGRATIONS,
    "registry": registry.MIGRATIONS,
    "directory": directory.MIGRATIONS,
    "reporting": reporting.MIGRATIONS,
    "notify": notify.MIGRATIONS,
}
assert set(MIGRATIONS) == set(DATABASE_OWNERS), "every database owner has its migrations here"


def migrations_dir(owner: str) -> Path:
    if owner not in MIGRATIONS:
        raise ValueError(f"unknown database owner {owner!r}")
    return MIGRATIONS[owner]


async def migrate(owner: str, url: str, *, schema: str | None = None, revision: str = "head") -> None:
    """Bring `owner`'s database (or PostgreSQL schema) to `revision`; safe to run concurrently."""
    await migrations.migrate(owner, url, directory=migrations_dir(owner), schema=schema, revision=revision)


async def migrate_all(settings: Settings, owners: tuple[str, ...] = DATABASE_OWNERS) -> None:
    for owner in owners:
        await migrate(owner, settings.database_url_for(owner), schema=settings.database_schema_for(owner))
