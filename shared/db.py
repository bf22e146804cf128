"""Async database engines and sessions: SQLite (WAL, foreign keys on) and PostgreSQL.

Each service owns its data. On PostgreSQL that is a schema named after the service (or a schema
given explicitly, as the tests do for isolation) put first on the search path of every pooled
connection; on SQLite it is a file of its own.
"""

from __future__ import annotations

import abc
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from shared.tracing import instrument_engine

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# FULL: see _configure_sqlite. Only `bench.triage_intake --durability` sets NORMAL, to measure
# what durability costs; nothing else may.
SQLITE_SYNCHRONOUS = "FULL"
# Without a setting (the command-line tools, migrations): SQLite's wait for a lock.
DEFAULT_BUSY_TIMEOUT_SECONDS = 15.0
# PostgreSQL conditions that end as soon as the other work does: a lock not granted in time, a
# deadlock or serialization victim, no connection slot, the server starting or stopping.
_RETRYABLE_SQLSTATES = frozenset({"55P03", "40P01", "40001", "53300", "57P01", "57P02", "57P03"})
# Class 08, connection exception: the connection went (a restart, a failover) as the work ran.
_CONNECTION_SQLSTATES = "08"
_SQLITE_BUSY = ("database is locked", "database table is locked")


def normalise_url(url: str) -> URL:
    """Accept plain `postgresql://` and `sqlite://` URLs and pick the async drivers we ship."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql" and parsed.get_driver_name() != "asyncpg":
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif backend == "sqlite" and parsed.get_driver_name() != "aiosqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif backend not in ("postgresql", "sqlite"):
        raise ValueError(f"unsupported database backend {backend!r}: use SQLite or PostgreSQL")
    return parsed


def is_sqlite(url: str | URL) -> bool:
    return (make_url(url) if isinstance(url, str) else url).get_backend_name() == "sqlite"


def check_schema_name(schema: str) -> str:
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"invalid schema name {schema!r}")
    return schema


def database_busy(exc: BaseException) -> bool:
    """Whether a failure is the database being busy or briefly away, so the same request a moment
    later may well succeed: answered 503 with Retry-After (RequestContextMiddleware), not 500."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, PoolTimeout | ConnectionError):
            return True  # no connection slot, or the server refused or dropped the connection
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True  # SQLAlchemy saw a disconnect (it replaces the pool's connections)
        sqlstate = getattr(current, "sqlstate", None)
        if sqlstate in _RETRYABLE_SQLSTATES or str(sqlstate).startswith(_CONNECTION_SQLSTATES):
            return True
        if type(current).__name__ == "OperationalError" and str(current).startswith(_SQLITE_BUSY):
            return True
        current = current.__cause__ or current.__context__ or getattr(current, "orig", None)
    return False


_SYNCHRONOUS_PRAGMAS = {"FULL": "PRAGMA synchronous=FULL", "NORMAL": "PRAGMA synchronous=NORMAL"}


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so that every transaction can start with
        # BEGIN IMMEDIATE (below): a deferred transaction that later writes can fail with
        # SQLITE_BUSY under WAL instead of waiting for the lock.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # FULL: a commit is on disk before it is acknowledged (NORMAL, under WAL, can lose the
        # last commits on power loss or an OS crash: an answered 201 gone).
        cursor.execute(_SYNCHRONOUS_PRAGMAS[SQLITE_SYNCHRONOUS])
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(
    url: str, *, schema: str | None = None, pool_size: int = 10, busy_timeout: float | None = None
) -> AsyncEngine:
    """`busy_timeout`: how long a statement waits for a lock and a checkout for a connection
    (serving processes set it, so a locked database is a prompt 503); None keeps the defaults
    (migrations wait for their locks)."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # The driver's timeout is SQLite's busy handler: how long a statement waits for a lock.
        engine = create_async_engine(
            parsed, connect_args={"timeout": busy_timeout or DEFAULT_BUSY_TIMEOUT_SECONDS}
        )
        _configure_sqlite(engine)
        return engine
    server_settings: dict[str, str] = {}
    if schema:
        server_settings["search_path"] = check_schema_name(schema)
    pool_options: dict[str, Any] = {}
    if busy_timeout is not None:
        server_settings["lock_timeout"] = str(int(busy_timeout * 1000))
        pool_options["pool_timeout"] = busy_timeout
    engine = create_async_engine(
        parsed,
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_args={"server_settings": server_settings} if server_settings else {},
        **pool_options,
    )
    _ping_when_idle(engine)
    return engine


# A pooled connection unused for longer than this is checked before it is handed out.
IDLE_PING_SECONDS = 5.0


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Check a pooled connection before use only if it has sat idle: one the server dropped
    (a restart, a failover, an idle timeout) is replaced rather than failing a request.

    SQLAlchemy's `pool_pre_ping` checks every checkout, and asyncpg's ping is three round trips
    (BEGIN, a query, ROLLBACK): under load that was a large share of every transaction's cost,
    for connections used milliseconds before. A server gone while connections are busy still
    fails the statements in flight; SQLAlchemy then invalidates the whole pool, so the retry
    (or the next request) gets a new connection."""
    pool = engine.sync_engine.pool

    @event.listens_for(pool, "checkin")
    def _idle_from(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _check_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool discards this connection and checks out another (a fresh one if need be).
            raise DisconnectionError("pooled connection no longer usable") from exc


class RefusedWithRecord(Exception, abc.ABC):
    """A refusal whose record must be kept although the work it refused is rolled back (a denied
    access is audited: shared/audit.py `AccessDenied`)."""

    def __init__(self, problem: Exception) -> None:
        super().__init__(str(problem))
        self.problem = problem

    @abc.abstractmethod
    def stage(self, session: AsyncSession) -> None:
        """Add the record to `session` (committed by `Database`)."""


class Database:
    """One service's engine and session factory."""

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        pool_size: int = 10,
        busy_timeout: float | None = None,
        process: str | None = None,
    ) -> None:
        """`process`: the serving process whose traces its statements belong to (database spans,
        when spans are recorded: shared/tracing.py)."""
        self.url = url
        self.schema = schema if not is_sqlite(url) else None
        self.engine = create_engine(url, schema=self.schema, pool_size=pool_size, busy_timeout=busy_timeout)
        if process is not None:
            instrument_engine(self.engine, process)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        try:
            async with self.sessionmaker() as session:
                yield session
        except RefusedWithRecord as refused:
            await self._keep(refused)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error. A
        `RefusedWithRecord` rolls the work back, keeps its record in a transaction of its own
        (after the rollback released any lock), then answers with its problem."""
        try:
            async with self.sessionmaker() as session, session.begin():
                yield session
        except RefusedWithRecord as refused:
            await self._keep(refused)

    async def _keep(self, refused: RefusedWithRecord) -> None:
        async with self.sessionmaker() as session, session.begin():
            refused.stage(session)
        raise refused.problem from None

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
