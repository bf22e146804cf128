"""The registry service in process, migrated and seeded, for API tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from services.registry.app import create_app
from services.registry.seed import seed
from shared.migrations import migrate
from shared.settings import Settings
from tests.registry.support import Registry
from tests.support import trust_test_key


@pytest.fixture
async def registry(make_settings: Callable[..., Settings]) -> AsyncIterator[Registry]:
    settings = make_settings()
    await migrate(
        "registry", settings.database_url_for("registry"), schema=settings.database_schema_for("registry")
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        trust_test_key(app)
        async with app.state.db.transaction() as session:
            await seed(session)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
            yield Registry(client, app)
