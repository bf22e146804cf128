"""The triage service in process, migrated, its registry read-model loaded from the seed's events."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from services.triage.app import create_app
from shared.migrations import migrate
from shared.settings import Settings
from tests.support import trust_test_key
from tests.triage.support import Triage, load_registry


@pytest.fixture
async def triage(make_settings: Callable[..., Settings]) -> AsyncIterator[Triage]:
    settings = make_settings()
    await migrate(
        "triage", settings.database_url_for("triage"), schema=settings.database_schema_for("triage")
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        trust_test_key(app)
        await load_registry(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://triage") as client:
            yield Triage(client, app)
