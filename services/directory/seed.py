"""The directory's reference data: the needs taxonomy (always) and a SAMPLE directory of fictional
partner services for demonstrations (reference/README.md says where each came from)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.directory import store
from services.directory.importer import ImportReport, import_records, records_in
from services.directory.models import MIGRATIONS, Service
from shared.db import Database

REFERENCE = Path(__file__).parent / "reference"
TAXONOMY = REFERENCE / "needs-taxonomy.json"
SAMPLE = REFERENCE / "sample-directory.json"
SEED_ACTOR = "cmh-seed"


def needs_taxonomy() -> dict[str, Any]:
    return json.loads(TAXONOMY.read_text())  # type: ignore[no-any-return]


def sample_services() -> list[dict[str, Any]]:
    return list(records_in(json.loads(SAMPLE.read_text())))


async def seed(db: Database, *, sample: bool = True) -> ImportReport | None:
    """Load the taxonomy, then (when `sample`) import the sample directory. Idempotent."""
    async with db.transaction() as session:
        await store.load_taxonomy(session, needs_taxonomy())
    if not sample:
        return None
    return await import_records(db, sample_services(), actor=SEED_ACTOR)


async def seed_database(settings: Any, *, only_if_empty: bool = False) -> ImportReport | None:
    """Migrate the directory's database and seed it (the `cmh seed` and first-start path)."""
    from sqlalchemy import func, select

    from shared.migrations import migrate

    url, schema = settings.database_url_for("directory"), settings.database_schema_for("directory")
    await migrate("directory", url, directory=MIGRATIONS, schema=schema)
    db = Database(url, schema=schema, pool_size=2)
    try:
        if only_if_empty:
            async with db.session() as session:
                if int(await session.scalar(select(func.count()).select_from(Service)) or 0):
                    return None
        return await seed(db)
    finally:
        await db.dispose()
