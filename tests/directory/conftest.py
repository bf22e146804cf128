"""The directory service in process, migrated, with the needs taxonomy and the registry's places."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from services.directory import store
from services.directory.app import create_app
from services.directory.seed import seed
from services.registry.schemas import Kind
from services.registry.seed import REFERENCE, desired_records
from shared.migrations import migrate
from shared.settings import Settings
from tests.directory.support import Directory
from tests.support import trust_test_key


async def load_places(app: object) -> None:
    """The registry's four places, as their `place.upserted` events would bring them."""
    async with app.state.db.transaction() as session:  # type: ignore[attr-defined]
        for desired in desired_records(json.loads(REFERENCE.read_text())):
            if desired.kind is Kind.PLACE:
                timeline = [{"valid_from": "2020-01-01", "valid_to": None, "attributes": desired.attributes}]
                await store.apply_place(session, {"id": desired.id, "timeline": timeline})


@pytest.fixture
async def directory(make_settings: Callable[..., Settings]) -> AsyncIterator[Directory]:
    settings = make_settings()
    await migrate(
        "directory", settings.database_url_for("directory"), schema=settings.database_schema_for("directory")
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        trust_test_key(app)
        await seed(app.state.db, sample=False)
        await load_places(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://directory") as client:
            yield Directory(client, app)
