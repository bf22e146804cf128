"""The careplan service in process, with the registry's teams and provider in its read-model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from services.careplan import store
from services.careplan.app import create_app
from shared.settings import Settings
from tests.support import running_service
from tests.triage.support import registry_events


class Careplan:
    def __init__(self, client: Any, app: Any) -> None:
        self.client = client
        self.app = app


@pytest.fixture
async def careplan(make_settings: Callable[..., Settings]) -> AsyncIterator[Careplan]:
    async with running_service("careplan", create_app, make_settings(careplan_clock_scan_seconds=3600)) as (
        client,
        app,
    ):
        for worker in app.state.workers:  # the tests drive the clock scans themselves, at chosen times
            await worker.stop()
        async with app.state.db.transaction() as session:
            for event in registry_events(kinds=("team", "organisation")):
                await store.apply_registry_event(session, event)
        yield Careplan(client, app)
