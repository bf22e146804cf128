"""The registry service in process, migrated and seeded, for API tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from services.registry.app import create_app
from services.registry.seed import seed
from shared.settings import Settings
from tests.registry.support import Registry
from tests.support import running_service


@pytest.fixture
async def registry(make_settings: Callable[..., Settings]) -> AsyncIterator[Registry]:
    async with running_service("registry", create_app, make_settings()) as (client, app):
        async with app.state.db.transaction() as session:
            await seed(session)
        yield Registry(client, app)
