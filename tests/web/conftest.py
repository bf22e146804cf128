"""Fixtures for the people's pages: a real OpenID Connect provider, and the whole suite (as in
tests/e2e, with reporting beside it) signed in to through it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass

import httpx
import oidc_provider_mock
import pytest

from gateway.web.people import add_person
from gateway.web.roles import Role
from services.reporting.app import create_app as create_reporting
from shared.db import Database
from shared.nats_server import free_port
from shared.settings import Settings
from tests.e2e.conftest import Suite, bus_credentials, nats_server, suite, suite_overrides  # noqa: F401
from tests.support import migrate_for_test, serve
from tests.web.support import SECRET, Browser


@pytest.fixture
def provider() -> Iterator[str]:
    """A real OpenID Connect provider (oidc-provider-mock): whoever's subject is typed on its form
    signs in (the suite decides what they may do)."""
    with oidc_provider_mock.run_server_in_thread(require_nonce=True) as server:
        yield f"http://127.0.0.1:{server.server_port}"


@pytest.fixture
def reporting_port() -> int:
    return free_port()


@pytest.fixture
def make_settings(
    make_settings: Callable[..., Settings], provider: str, reporting_port: int
) -> Callable[..., Settings]:
    return lambda **overrides: make_settings(
        **{
            "oidc_issuer": provider,
            "oidc_client_secret": SECRET,
            "reporting_url": f"http://127.0.0.1:{reporting_port}",
            **overrides,
        }
    )


@dataclass
class WebSuite:
    suite: Suite
    provider: str

    @property
    def url(self) -> str:
        return self.suite.url

    @property
    def settings(self) -> Settings:
        return self.suite.settings

    async def person(
        self,
        subject: str,
        roles: Sequence[Role],
        *,
        organisation: str,
        organisation_system: str = "ods",
        name: str | None = None,
        team_id: str | None = None,
    ) -> str:
        """Map `subject` (as the provider will name them) to an organisation and roles."""
        db = Database(
            self.settings.database_url_for("gateway"), schema=self.settings.database_schema_for("gateway")
        )
        try:
            async with db.transaction() as tx:
                person = await add_person(
                    tx,
                    issuer=self.provider,
                    subject=subject,
                    name=name or subject.split("@")[0].replace(".", " ").title(),
                    organisation=organisation,
                    organisation_system=organisation_system,
                    roles=list(roles),
                    team_id=team_id,
                )
                return person.id
        finally:
            await db.dispose()

    @contextlib.asynccontextmanager
    async def browser(self) -> AsyncIterator[Browser]:
        async with httpx.AsyncClient(base_url=self.url, timeout=20) as http:
            yield Browser(http)


@pytest.fixture
async def web_suite(suite: Suite, provider: str, reporting_port: int) -> AsyncIterator[WebSuite]:  # noqa: F811
    """The e2e suite, reporting beside it, sign-in through `provider`."""
    async with running_web_suite(suite, provider, reporting_port) as started:
        yield started


@contextlib.asynccontextmanager
async def running_web_suite(suite: Suite, provider: str, reporting_port: int) -> AsyncIterator[WebSuite]:  # noqa: F811
    """Reporting started beside `suite` (what `web_suite` yields), for a fixture of a wider scope too."""
    await migrate_for_test("reporting", suite.settings)
    server, task = await serve(create_reporting(suite.settings), reporting_port)
    try:
        yield WebSuite(suite, provider)
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, timeout=10)
