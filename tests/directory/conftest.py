"""The directory service in process, migrated, with the needs taxonomy and the registry's places."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import pytest

from services.directory import store
from services.directory.app import create_app
from services.directory.seed import seed
from services.registry.schemas import Kind
from services.registry.seed import REFERENCE, desired_records
from shared.settings import Settings
from tests.directory.support import Directory
from tests.support import running_service


async def load_places(app: object) -> None:
    """The registry's four places, as their `place.upserted` events would bring them."""
    async with app.state.db.transaction() as session:  # type: ignore[attr-defined]
        for desired in desired_records(json.loads(REFERENCE.read_text())):
            if desired.kind is Kind.PLACE:
                timeline = [{"valid_from": "2020-01-01", "valid_to": None, "attributes": desired.attributes}]
                await store.apply_place(session, {"id": desired.id, "timeline": timeline})


@pytest.fixture
async def directory(make_settings: Callable[..., Settings]) -> AsyncIterator[Directory]:
    async with running_service("directory", create_app, make_settings()) as (client, app):
        await seed(app.state.db, sample=False)
        await load_places(app)
        yield Directory(client, app)
