"""A batch applied with the projector's `prepare` (the consumer's set-based path, issue 23) lands
exactly as the same events applied one by one, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from cmh.migrations import migrate
from services.reporting.models import EpisodeFact, ReferralFact
from services.reporting.projections import Projector
from shared.db import Database
from shared.settings import Settings
from tests.reporting.test_api import referral_events

IGNORED = {"updated_at"}  # stamped when applied


@pytest.fixture
async def dbs(database_settings: dict[str, object]) -> AsyncIterator[tuple[Database, Database]]:
    made = []
    for suffix in ("one_by_one", "batched"):
        fields = dict(database_settings)
        if "database_schema_prefix" in fields:
            fields["database_schema_prefix"] = f"{fields['database_schema_prefix']}{suffix}_"
        else:
            fields["database_url"] = str(fields["database_url"]).replace("{service}", f"{{service}}-{suffix}")
        settings = Settings(**fields)  # type: ignore[arg-type]
        url, schema = settings.database_url_for("reporting"), settings.database_schema_for("reporting")
        await migrate("reporting", url, schema=schema)
        made.append(Database(url, schema=schema))
    try:
        yield made[0], made[1]
    finally:
        for db in made:
            await db.dispose()


async def _rows(db: Database, model: Any) -> list[dict[str, Any]]:
    async with db.session() as session:
        rows = (await session.scalars(select(model))).all()
        columns = [c.key for c in model.__table__.columns if c.key not in IGNORED]
        return sorted(({name: getattr(row, name) for name in columns} for row in rows), key=repr)


async def test_a_prepared_batch_projects_as_one_by_one(dbs: tuple[Database, Database]) -> None:
    one_by_one, batched = dbs
    projector = Projector(b"k" * 32)
    events = referral_events(5, place="lancashire", ethnicity="A") + referral_events(
        3, place="blackpool", ethnicity="B", route="crisis_response"
    )
    for event in events:
        async with one_by_one.transaction() as session:
            await projector.apply(session, event)
    # Two batches, the second touching the facts the first made (found by the prepared query).
    for chunk in (events[:17], events[17:]):
        async with batched.transaction() as session:
            await projector.prepare(session, chunk)
            for event in chunk:
                await projector.apply(session, event)
    for model in (ReferralFact, EpisodeFact):
        expected = await _rows(one_by_one, model)
        assert expected and await _rows(batched, model) == expected
