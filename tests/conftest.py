"""Fixtures for the whole suite: a real nats-server per test, and both database backends.

PostgreSQL tests use CMH_TEST_DATABASE_URL (CI sets it) and skip with a reason when it is unset;
each test gets its own schema prefix so tests never see each other's rows.

Every test is marked by what it needs (`pytest_collection_modifyitems` below; the markers are
declared in pyproject.toml): `e2e`, `faults`, `deploy` and `browser` by their folder (a `browser`
folder anywhere, as tests/web/browser/), `api` when it needs a database or a nats-server (through
the fixtures, or a module that starts them itself), and `unit` otherwise (`make test-unit`: `-m
unit`, no PostgreSQL, no NATS).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shared.nats_server import EmbeddedNatsServer
from shared.settings import Settings

POSTGRES_URL = os.environ.get("CMH_TEST_DATABASE_URL")

# Folders whose tests are marked by the folder's name.
FOLDER_MARKERS = ("e2e", "faults", "deploy", "browser")
# Fixtures that bring a database or a nats-server: a test using any of them is an `api` test.
SERVICE_FIXTURES = frozenset({"backend", "database_settings", "make_settings", "nats_server", "suite"})
# Names a test module imports when it starts a nats-server, a service or PostgreSQL itself.
SERVICE_NAMES = ("EmbeddedNatsServer", "NatsCluster", "POSTGRES_URL", "running_service", "prepare_databases")
TESTS = Path(__file__).parent


def kind_of(item: pytest.Item) -> str:
    """The marker a test gets: its folder's, `api` if it needs services, else `unit`."""
    parts = Path(str(item.path)).relative_to(TESTS).parts
    if parts and parts[0] in FOLDER_MARKERS:
        return parts[0]
    if "browser" in parts[:-1]:  # tests/web/browser/: the pages in a real browser
        return "browser"
    if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
        return "api"
    module = getattr(item, "module", None)
    if module is not None and any(hasattr(module, name) for name in SERVICE_NAMES):
        return "api"
    return "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(kind_of(item))


@pytest.fixture
def bus_credentials() -> Path | None:
    """Where the test bus's passwords are: None, an open bus, unless a conftest closes it."""
    return None


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNatsServer]:
    server = EmbeddedNatsServer(tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.stop(graceful=False)  # its store goes with the test


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql" and not POSTGRES_URL:
        pytest.skip("CMH_TEST_DATABASE_URL is not set: PostgreSQL leg skipped (CI always sets it)")
    return str(request.param)


@pytest.fixture
async def database_settings(backend: str, tmp_path: Path) -> AsyncIterator[dict[str, object]]:
    """Settings fields putting every service's data in a fresh place on the chosen backend."""
    if backend == "sqlite":
        yield {"var_dir": tmp_path / "var", "database_url": f"sqlite+aiosqlite:///{tmp_path}/{{service}}.db"}
        return
    assert POSTGRES_URL is not None
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    yield {"var_dir": tmp_path / "var", "database_url": POSTGRES_URL, "database_schema_prefix": prefix}
    await drop_schemas(POSTGRES_URL, prefix)


async def drop_schemas(url: str, prefix: str) -> None:
    from sqlalchemy import text

    from shared.db import create_engine

    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as connection:
            names = (
                await connection.execute(
                    text("SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE :p"),
                    {"p": prefix.replace("_", r"\_") + "%"},
                )
            ).scalars()
            for name in list(names):
                await connection.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    finally:
        await engine.dispose()


@pytest.fixture
def make_settings(
    database_settings: dict[str, object], nats_server: EmbeddedNatsServer, bus_credentials: Path | None
):
    """Build Settings for a test: fast polling and retries, the test's NATS and database."""
    return lambda **overrides: settings_for_test(nats_server, bus_credentials, database_settings, **overrides)


def settings_for_test(
    nats_server: EmbeddedNatsServer,
    bus_credentials: Path | None,
    database_settings: dict[str, object],
    **overrides: object,
) -> Settings:
    """What `make_settings` builds, for a fixture of a wider scope too (tests/web/browser)."""
    fields: dict[str, object] = {
        "nats_url": nats_server.url,
        "nats_credentials_dir": bus_credentials,
        "outbox_poll_seconds": 0.2,
        "consumer_retry_base_seconds": 0.05,
        "consumer_max_deliveries": 3,
        "broker_backoff_max_seconds": 0.5,
        "consumer_ack_wait_seconds": 5,
        **database_settings,
        **overrides,
    }
    return Settings(**fields)  # type: ignore[arg-type]


@pytest.fixture
def cmh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[object]:
    """Run the `cmh` command in process against a fresh var/ (SQLite): returns (code, out, err)."""
    from cmh.cli import main
    from shared.settings import get_settings

    for name in list(os.environ):
        if name.startswith("CMH_") and name.endswith(("DATABASE_URL", "DATABASE_SCHEMA_PREFIX")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CMH_VAR_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    yield run
    get_settings.cache_clear()
