"""A locked or busy database is a prompt, retryable 503 with Retry-After, never a 500 after a long
wait (issue 21 §6), and nothing is written: the same request, sent again once the lock is gone,
is accepted exactly once."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from services.triage.app import create_app
from shared.db import database_busy
from shared.settings import Settings
from tests.support import running_service
from tests.triage.support import Triage, load_registry, referral

BUSY_TIMEOUT = 0.3


@pytest.fixture
async def impatient_triage(make_settings: Callable[..., Settings]) -> AsyncIterator[tuple[Triage, Settings]]:
    settings = make_settings(database_busy_timeout_seconds=BUSY_TIMEOUT)
    async with running_service("triage", create_app, settings) as (client, app):
        await load_registry(app)
        yield Triage(client, app), settings


@asynccontextmanager
async def referrals_locked(settings: Settings) -> AsyncIterator[None]:
    """Another process holds the lock triage needs to accept a referral."""
    url = make_url(settings.database_url_for("triage"))
    if url.get_backend_name() == "sqlite":
        # In a thread: waiting for the lock in the event loop would stop triage releasing it.
        other = sqlite3.connect(url.database or "", isolation_level=None, timeout=30, check_same_thread=False)
        await asyncio.to_thread(other.execute, "BEGIN IMMEDIATE")  # SQLite's single writer lock
        try:
            yield
        finally:
            await asyncio.to_thread(other.execute, "ROLLBACK")
            other.close()
        return
    other_pg = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        async with other_pg.transaction():
            schema = settings.database_schema_for("triage")
            await other_pg.execute(f'LOCK TABLE "{schema}".triage_referrals IN ACCESS EXCLUSIVE MODE')
            yield
    finally:
        await other_pg.close()


async def test_a_locked_database_is_a_prompt_503_and_the_retry_is_accepted_once(
    impatient_triage: tuple[Triage, Settings],
) -> None:
    triage, settings = impatient_triage
    async with referrals_locked(settings):
        started = time.monotonic()
        refused = await triage.submit(referral(), key="busy-1")
        waited = time.monotonic() - started
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "2"
        assert refused.headers["content-type"].startswith("application/problem+json")
        problem = refused.json()
        assert problem["type"].endswith("/database-busy") and problem["request_id"]
        # No request value in the answer (the person's NHS number, their name).
        assert "9434765919" not in refused.text and "Sam" not in refused.text
        # The wait is the configured busy timeout, not the 15 s a request used to hang for.
        assert waited < BUSY_TIMEOUT + 5
    accepted = await triage.submit(referral(), key="busy-1")
    assert accepted.status_code == 201, accepted.text
    again = await triage.submit(referral(), key="busy-1")
    assert again.status_code == 201 and again.json()["id"] == accepted.json()["id"]
    listed = await triage.events("cmh.triage.referral.received")
    assert len(listed) == 1


def test_what_counts_as_the_database_being_busy() -> None:
    locked = sqlite3.OperationalError("database is locked")
    wrapped = RuntimeError("while accepting")
    wrapped.__cause__ = locked
    assert database_busy(locked) and database_busy(wrapped)
    assert not database_busy(sqlite3.OperationalError("no such table: triage_referrals"))
    assert not database_busy(ValueError("database is locked"))  # only a database's own error says so

    class LockNotAvailable(Exception):
        sqlstate = "55P03"

    class UniqueViolation(Exception):
        sqlstate = "23505"

    assert database_busy(LockNotAvailable()) and not database_busy(UniqueViolation())

    # PostgreSQL restarting or failing over: the connection refused, or dropped as the work ran
    # (the cluster fault suite's restart answered 500 for these until they were counted here).
    class ConnectionDoesNotExist(Exception):
        sqlstate = "08003"

    assert database_busy(ConnectionRefusedError()) and database_busy(ConnectionResetError())
    assert database_busy(ConnectionError("unexpected connection_lost() call"))
    assert database_busy(ConnectionDoesNotExist())
    dropped = DBAPIError("SELECT 1", {}, RuntimeError("connection was closed"), connection_invalidated=True)
    assert database_busy(dropped)
    assert not database_busy(DBAPIError("SELECT 1", {}, RuntimeError("syntax error")))
