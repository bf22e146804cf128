"""The triage service in process, migrated, its registry read-model loaded from the seed's events."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from services.triage.app import create_app
from shared.settings import Settings
from tests.support import running_service
from tests.triage.support import Triage, load_registry


@pytest.fixture
async def triage(make_settings: Callable[..., Settings]) -> AsyncIterator[Triage]:
    async with running_service("triage", create_app, make_settings()) as (client, app):
        await load_registry(app)
        yield Triage(client, app)
