"""The whole suite in process for end-to-end tests: the gateway, registry, directory, triage,
careplan and notify under uvicorn on loopback ports, a real nats-server, the reference data seeded (it
reaches the other services as events), and clients registered in the gateway."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from cmh.serving import bus_plan
from gateway.app import create_app as create_gateway
from services.careplan.app import create_app as create_careplan
from services.directory.app import create_app as create_directory
from services.directory.seed import seed as seed_directory
from services.notify.app import create_app as create_notify
from services.registry.app import create_app as create_registry
from services.registry.seed import seed as seed_registry
from services.triage.app import create_app as create_triage
from services.triage.models import DirectoryService, RegistryRecord
from shared.bus_access import prepare_closed_bus
from shared.consumer import provision_bus
from shared.nats_server import EmbeddedNatsServer, free_port
from shared.settings import Settings
from tests.support import eventually, prepare_databases, serve

CLIENTS = {
    "gp-ehr": (
        "P81001",
        "ods",
        "partner_ehr",
        "referral:submit referral:read careplan:read registry:read subscription:manage",
    ),
    "other-gp-ehr": (
        "P81002",
        "ods",
        "partner_ehr",
        "referral:submit referral:read careplan:read registry:read subscription:manage",
    ),
    "crisis-app": ("RW5", "ods", "crisis_app", "referral:submit referral:read triage:decide crisis:respond"),
    "vcfse-partner": (
        "1000001",
        "charity",
        "vcfse_partner",
        "directory:write handover:respond",
    ),  # sample data's
    "other-partner": ("1234567", "charity", "vcfse_partner", "directory:write handover:respond"),
    "lscft-clinician": ("RW5", "ods", "crisis_app", "careplan:read careplan:write referral:read"),
    "other-provider": ("RXN", "ods", "partner_ehr", "careplan:read careplan:write"),
    "registry-admin": ("RW5", "ods", "admin", "registry:read registry:admin"),
}


@pytest.fixture
def bus_credentials(tmp_path: Path) -> Path:
    """End to end, the bus is closed as under `cmh run`: a NATS user per process (bcrypt at its
    lowest cost here; the rounds only slow connecting)."""
    credentials, _ = prepare_closed_bus(tmp_path / "nats", bus_plan(), "CMH", rounds=4)
    return credentials


@pytest.fixture
def nats_server(tmp_path: Path, bus_credentials: Path) -> Iterator[EmbeddedNatsServer]:
    server = EmbeddedNatsServer(tmp_path / "nats", config_file=tmp_path / "nats" / "auth.json")
    server.start()
    try:
        yield server
    finally:
        server.stop(graceful=False)  # its store goes with the test


@dataclass
class Suite:
    url: str
    secrets: dict[str, str]
    apps: dict[str, Any]
    settings: Settings

    @property
    def triage_app(self) -> Any:
        return self.apps["triage"]

    async def token(self, client_id: str) -> str:
        async with httpx.AsyncClient(base_url=self.url) as http:
            response = await http.post(
                "/oauth2/token",
                data={"grant_type": "client_credentials"},
                auth=(client_id, self.secrets[client_id]),
            )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    async def bearer(self, client_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token(client_id)}"}


async def read_models_filled(triage_app: Any) -> bool:
    """Triage's read models hold the seeded registry's teams and the directory's services."""
    async with triage_app.state.db.session() as session:
        teams = await session.scalar(
            select(func.count()).select_from(RegistryRecord).where(RegistryRecord.kind == "team")
        )
        services = await session.scalar(select(func.count()).select_from(DirectoryService))
    return teams == 45 and services == 16


def referral_body(**person: Any) -> dict[str, Any]:
    return {
        "person": {
            "nhs_number": "9434765919", "given_name": "Alex", "family_name": "Example", "birth_date": "1979-03-14",
            "postcode": "PR1 3BQ", "contact": {"phone": "07700 900456"}, **person,
        },
        "source": "gp",
        "needs": ["low_mood"],
        "consent_to_share": True,
    }  # fmt: skip


async def gp_referral(suite: Suite, http: httpx.AsyncClient, idempotency_key: str) -> dict[str, Any]:
    """A GP practice's referral (`referral_body()`), submitted once triage's read models are filled."""
    await eventually(lambda: read_models_filled(suite.triage_app), timeout=30)
    submitted = await http.post(
        "/triage/referrals",
        json=referral_body(),
        headers={**await suite.bearer("gp-ehr"), "Idempotency-Key": idempotency_key},
    )
    assert submitted.status_code == 201, submitted.text
    return dict(submitted.json())


@pytest.fixture
def suite_overrides() -> dict[str, Any]:
    """Settings a test module changes for its suite (override this fixture in the module)."""
    return {}


@pytest.fixture
async def suite(
    make_settings: Callable[..., Settings], suite_overrides: dict[str, Any]
) -> AsyncIterator[Suite]:
    async with running_suite(make_settings, suite_overrides) as started:
        yield started


@contextlib.asynccontextmanager
async def running_suite(
    make_settings: Callable[..., Settings], suite_overrides: dict[str, Any]
) -> AsyncIterator[Suite]:
    """The suite started (what the `suite` fixture yields), for a fixture of a wider scope too."""
    owners = ("gateway", "registry", "directory", "triage", "careplan", "notify")
    ports = {name: free_port() for name in owners}
    settings = make_settings(
        gateway_port=ports["gateway"],
        registry_url=f"http://127.0.0.1:{ports['registry']}",
        directory_url=f"http://127.0.0.1:{ports['directory']}",
        triage_url=f"http://127.0.0.1:{ports['triage']}",
        careplan_url=f"http://127.0.0.1:{ports['careplan']}",
        notify_url=f"http://127.0.0.1:{ports['notify']}",
        careplan_clock_scan_seconds=0.3,
        # Webhook receivers in tests listen on loopback; retries are quick.
        webhook_allow_private_addresses=True,
        webhook_retry_base_seconds=0.1,
        webhook_retry_max_seconds=0.5,
        webhook_poll_seconds=0.1,
        jwks_url=f"http://127.0.0.1:{ports['gateway']}/.well-known/jwks.json",
        jwks_min_refresh_seconds=0,
        **suite_overrides,
    )
    # Services only bind to their durables on a closed bus: the admin makes them first.
    await provision_bus(settings, bus_plan())
    secrets = await prepare_databases(settings, owners, CLIENTS)
    apps = {
        "gateway": create_gateway(settings),
        "registry": create_registry(settings),
        "directory": create_directory(settings),
        "triage": create_triage(settings),
        "careplan": create_careplan(settings),
        "notify": create_notify(settings),
    }
    started = [await serve(app, ports[name]) for name, app in apps.items()]
    try:
        async with apps["registry"].state.db.transaction() as session:
            await seed_registry(session)
        await seed_directory(apps["directory"].state.db)
        yield Suite(f"http://127.0.0.1:{ports['gateway']}", secrets, apps, settings)
    finally:
        for server, task in reversed(started):
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, timeout=10)
