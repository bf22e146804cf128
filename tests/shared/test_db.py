"""Pooled PostgreSQL connections the server dropped are replaced: an idle one is checked before
use, and a busy one's failure invalidates the pool so the next transaction gets a new one."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from shared import db as db_module
from shared.db import Database
from tests.conftest import POSTGRES_URL

pytestmark = pytest.mark.skipif(
    not POSTGRES_URL, reason="CMH_TEST_DATABASE_URL is not set: PostgreSQL leg skipped (CI always sets it)"
)


async def _backend_pid(database: Database) -> int:
    async with database.transaction() as session:
        return int(await session.scalar(text("SELECT pg_backend_pid()")) or 0)


async def _terminate(pid: int) -> None:
    other = Database(POSTGRES_URL or "")
    try:
        async with other.transaction() as session:
            await session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        await other.dispose()


async def test_an_idle_connection_the_server_dropped_is_replaced_before_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    database = Database(POSTGRES_URL or "", pool_size=1)
    try:
        first = await _backend_pid(database)
        await _terminate(first)
        monkeypatch.setattr(db_module, "IDLE_PING_SECONDS", 0.0)  # it has sat idle long enough
        second = await _backend_pid(database)
        assert second != first
    finally:
        await database.dispose()


async def test_a_recently_used_connection_is_not_pinged_and_a_drop_costs_one_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(db_module, "IDLE_PING_SECONDS", 3600.0)
    database = Database(POSTGRES_URL or "", pool_size=1)
    try:
        first = await _backend_pid(database)
        await _terminate(first)
        with pytest.raises(DBAPIError):
            await _backend_pid(database)
        assert await _backend_pid(database) != first
    finally:
        await database.dispose()
