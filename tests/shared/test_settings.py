"""Settings: CMH_ prefix, per-service database URLs with a global fallback."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.db import normalise_url
from shared.settings import DATABASE_OWNERS, Settings


def test_default_is_a_sqlite_file_per_service_under_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CMH_DATABASE_URL", raising=False)
    settings = Settings(var_dir=Path("/tmp/cmh-var"))
    urls = {owner: settings.database_url_for(owner) for owner in DATABASE_OWNERS}
    assert urls["triage"] == "sqlite+aiosqlite:////tmp/cmh-var/triage.db"
    assert len(set(urls.values())) == len(DATABASE_OWNERS)


def test_per_service_url_wins_over_the_global_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMH_DATABASE_URL", "postgresql://db.example/cmh")
    monkeypatch.setenv("CMH_REPORTING_DATABASE_URL", "postgresql://reporting.example/warehouse")
    settings = Settings()
    assert settings.database_url_for("triage") == "postgresql://db.example/cmh"
    assert settings.database_url_for("reporting") == "postgresql://reporting.example/warehouse"
    assert settings.database_schema_for("triage") == "triage"


def test_service_placeholder_and_schema_prefix() -> None:
    settings = Settings(database_url="sqlite:///data/{service}.sqlite", database_schema_prefix="ci_")
    assert settings.database_url_for("careplan") == "sqlite:///data/careplan.sqlite"
    assert settings.database_schema_for("careplan") == "ci_careplan"


def test_unknown_owner_is_refused() -> None:
    with pytest.raises(ValueError):
        Settings().database_url_for("billing")


def test_service_urls_default_to_local_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMH_TRIAGE_PORT", "9101")
    monkeypatch.setenv("CMH_REGISTRY_URL", "http://registry.internal:80/")
    settings = Settings()
    assert settings.service_url("triage") == "http://127.0.0.1:9101"
    assert settings.service_url("registry") == "http://registry.internal:80"


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgresql://u@h/db", "postgresql+asyncpg"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg"),
        ("sqlite:///x.db", "sqlite+aiosqlite"),
    ],
)
def test_urls_get_the_async_drivers(given: str, driver: str) -> None:
    assert normalise_url(given).drivername == driver


def test_other_backends_are_refused() -> None:
    with pytest.raises(ValueError):
        normalise_url("mysql://u@h/db")
