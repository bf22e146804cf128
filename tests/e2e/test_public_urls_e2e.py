"""Every absolute URL is the public one (issue 20), through the gateway with the whole suite: a
caller sending `Host: evil.example` (and an `X-Forwarded-Host` it has no standing to send) is given
only `CMH_PUBLIC_URL` addresses, in every answer that carries one: native create `Location`s
(triage, registry, directory), the FHIR ServiceRequest and Subscription create `Location`s, a
searchset Bundle's links and fullUrls, the reporting bulk export's `Content-Location` and manifest,
and the directory's `openapi_url`. Never a service's own address, never the caller's Host. The
services' own FHIR bases are internal: 404 at the gateway, and not in the merged OpenAPI."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from services.reporting.app import create_app as create_reporting
from shared.db import Database
from shared.nats_server import free_port
from shared.settings import SERVICES, Settings
from tests.directory.support import proposal
from tests.e2e.conftest import Suite, gp_referral
from tests.e2e.test_fhir_partner import FHIR_JSON, service_request
from tests.support import eventually, migrate_for_test, register_clients, serve

PUBLIC = "https://cmh.example.nhs.uk"
HOSTILE = {"Host": "evil.example", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http"}
EXPORTER = ("QE1", "ods", "reporting", "reporting:export")


@pytest.fixture
def reporting_port() -> int:
    return free_port()


@pytest.fixture
def make_settings(make_settings: Callable[..., Settings], reporting_port: int) -> Callable[..., Settings]:
    """The suite's settings with a public address configured, and reporting where it will listen."""
    return lambda **overrides: make_settings(
        **{"public_url": PUBLIC, "reporting_url": f"http://127.0.0.1:{reporting_port}", **overrides}
    )


@contextlib.asynccontextmanager
async def reporting(suite: Suite, port: int) -> AsyncIterator[dict[str, str]]:
    """Reporting beside the suite (the suite fixture leaves it out), and an exporter client of the
    gateway's: its credentials."""
    await migrate_for_test("reporting", suite.settings)
    db = Database(
        suite.settings.database_url_for("gateway"), schema=suite.settings.database_schema_for("gateway")
    )
    try:
        async with db.transaction() as session:
            secrets = await register_clients(session, {"icb-exporter": EXPORTER})
    finally:
        await db.dispose()
    server, task = await serve(create_reporting(suite.settings), port)
    try:
        yield secrets
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, timeout=10)


class Seen:
    """Every URL an answer handed out, and every answer's text, for the checks at the end."""

    def __init__(self, suite: Suite) -> None:
        self.urls: list[tuple[str, str]] = []
        self.texts: list[tuple[str, str]] = []
        self.forbidden = (
            ["evil.example"]
            + [urlsplit(url).netloc for service in SERVICES for url in suite.settings.service_urls(service)]
            + [urlsplit(suite.url).netloc]
        )  # the gateway's own address too: a public one is configured

    def url(self, what: str, value: Any) -> None:
        assert isinstance(value, str) and value, (what, value)
        self.urls.append((what, value))

    def answer(self, what: str, response: httpx.Response) -> httpx.Response:
        headers = "\n".join(f"{name}: {value}" for name, value in response.headers.items())
        self.texts.append((what, headers + "\n" + response.text))
        return response

    def bundle(self, what: str, bundle: dict[str, Any]) -> None:
        assert bundle["resourceType"] == "Bundle" and bundle["link"], bundle
        for link in bundle["link"]:
            self.url(f"{what} link {link['relation']}", link["url"])
        for entry in bundle.get("entry", []):
            self.url(f"{what} fullUrl", entry["fullUrl"])

    def check(self) -> None:
        for what, url in self.urls:
            assert url.startswith(PUBLIC + "/"), (what, url)
        for what, text in self.texts:
            for address in self.forbidden:
                assert address not in text, (what, address, text[:2000])


async def test_every_absolute_url_handed_out_is_the_public_one(suite: Suite, reporting_port: int) -> None:
    seen = Seen(suite)
    async with (
        reporting(suite, reporting_port) as exporter,
        httpx.AsyncClient(base_url=suite.url, timeout=20) as http,
    ):
        gp = {**await suite.bearer("gp-ehr"), **HOSTILE}

        # Native creates: absolute Locations at the public address.
        referral = await gp_referral(suite, http, "public-urls-1")  # the read models are filled
        again = seen.answer(
            "native referral",
            await http.post(
                "/triage/referrals",
                json={"person": {**_person(), "nhs_number": "9434765870"}, **_referral_rest()},
                headers={**gp, "Idempotency-Key": "public-urls-2"},
            ),
        )
        assert again.status_code == 201, again.text
        seen.url("native referral Location", again.headers["location"])
        assert again.headers["location"] == f"{PUBLIC}/triage/referrals/{again.json()['id']}"
        assert referral["id"]

        admin = {**await suite.bearer("registry-admin"), **HOSTILE}
        record = seen.answer(
            "registry record",
            await http.post(
                "/registry/practitioners",
                json={
                    "attributes": {
                        "staff_id": "LSC-7100",
                        "name": "Sam Nurse",
                        "profession": "mental_health_nurse",
                    },
                    "valid_from": "2025-01-01",
                },
                headers=admin,
            ),
        )
        assert record.status_code == 201, record.text
        seen.url("registry record Location", record.headers["location"])
        assert record.headers["location"] == f"{PUBLIC}/registry/practitioners/{record.json()['id']}"

        partner = {**await suite.bearer("vcfse-partner"), **HOSTILE}
        edit = seen.answer(
            "directory edit", await http.post("/directory/partner/services", json=proposal(), headers=partner)
        )
        assert edit.status_code == 201, edit.text
        seen.url("directory edit Location", edit.headers["location"])
        assert edit.headers["location"] == f"{PUBLIC}/directory/partner/edits/{edit.json()['id']}"

        # FHIR: the create's Location, a searchset's links and fullUrls, a Subscription's Location.
        fhir = {**gp, "Content-Type": FHIR_JSON}
        for number in (1, 2):
            created = seen.answer(
                "ServiceRequest create",
                await http.post(
                    "/fhir/ServiceRequest", json=service_request("P81001", f"URL-{number}"), headers=fhir
                ),
            )
            assert created.status_code == 201, created.text
            seen.url("ServiceRequest Location", created.headers["location"])
            assert created.headers["location"].startswith(
                f"{PUBLIC}/fhir/ServiceRequest/{created.json()['id']}"
            )
        search = seen.answer(
            "ServiceRequest search", await http.get("/fhir/ServiceRequest?_count=1", headers=gp)
        )
        assert search.status_code == 200, search.text
        bundle = search.json()
        assert bundle["total"] >= 2 and {link["relation"] for link in bundle["link"]} >= {
            "self",
            "next",
            "last",
        }
        seen.bundle("ServiceRequest searchset", bundle)
        following = seen.answer(
            "ServiceRequest next page",
            await http.get(
                _at_gateway(next(link["url"] for link in bundle["link"] if link["relation"] == "next")),
                headers=gp,
            ),
        )
        assert following.status_code == 200, following.text
        seen.bundle("ServiceRequest next page", following.json())
        tasks = seen.answer("Task search", await http.get("/fhir/Task", headers=gp))
        assert tasks.status_code == 200 and tasks.json()["entry"], tasks.text
        seen.bundle("Task searchset", tasks.json())

        subscription = seen.answer(
            "Subscription create",
            await http.post(
                "/fhir/Subscription",
                json={
                    "resourceType": "Subscription",
                    "status": "requested",
                    "reason": "Tell our EHR what became of our referrals",
                    "criteria": "ServiceRequest",
                    "channel": {
                        "type": "rest-hook",
                        "endpoint": "http://127.0.0.1:9/hooks",
                        "payload": FHIR_JSON,
                    },
                },
                headers=fhir,
            ),
        )
        assert subscription.status_code == 201, subscription.text
        seen.url("Subscription Location", subscription.headers["location"])
        assert subscription.headers["location"] == f"{PUBLIC}/fhir/Subscription/{subscription.json()['id']}"
        listed = seen.answer("Subscription search", await http.get("/fhir/Subscription", headers=gp))
        seen.bundle("Subscription searchset", listed.json())

        # The directory's root names its OpenAPI at the public address.
        about = seen.answer("directory root", await http.get("/directory/", headers=HOSTILE))
        assert about.status_code == 200, about.text
        seen.url("directory openapi_url", about.json()["openapi_url"])
        assert about.json()["openapi_url"] == f"{PUBLIC}/directory/openapi.json"

        # Reporting's bulk export: the job, the manifest's request and every file.
        token = await http.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=("icb-exporter", exporter["icb-exporter"]),
        )
        assert token.status_code == 200, token.text
        icb = {"Authorization": f"Bearer {token.json()['access_token']}", **HOSTILE}
        kick = seen.answer(
            "export kick-off", await http.post("/reporting/$export?_type=Referral", headers=icb)
        )
        assert kick.status_code == 202, kick.text
        job = kick.headers["content-location"]
        seen.url("export Content-Location", job)
        assert job.startswith(f"{PUBLIC}/reporting/$export/jobs/")

        async def manifest() -> httpx.Response | None:
            polled = await http.get(_at_gateway(job), headers=icb)
            return polled if polled.status_code == 200 else None

        done = seen.answer("export manifest", await eventually(manifest, timeout=30, interval=0.3))
        seen.url("export manifest request", done.json()["request"])
        assert done.json()["output"], done.json()
        for output in done.json()["output"]:
            seen.url(f"export file {output['type']}", output["url"])

        # The services' own FHIR bases are internal, and not documented.
        for path in ("/triage/fhir/metadata", "/careplan/fhir/EpisodeOfCare", "/notify/fhir/Subscription"):
            hidden = await http.get(path, headers=gp)
            assert hidden.status_code == 404, (path, hidden.text)
            assert hidden.headers["content-type"].startswith("application/problem+json")
        document = (await http.get("/openapi.json")).json()
        internal = [
            path
            for path in document["paths"]
            for service in SERVICES
            if path == f"/{service}/fhir" or path.startswith(f"/{service}/fhir/")
        ]
        assert internal == [] and "/fhir/ServiceRequest" in document["paths"]
        assert (await http.get("/fhir/metadata", headers=gp)).status_code == 200

    seen.check()
    assert len(seen.urls) >= 15, seen.urls


def _at_gateway(url: str) -> str:
    """A public URL, asked of the gateway under test (which stands for the public address here)."""
    assert url.startswith(PUBLIC + "/"), url
    return url.removeprefix(PUBLIC)


def _person() -> dict[str, Any]:
    return {
        "given_name": "Jo", "family_name": "Example", "birth_date": "1985-07-01",
        "postcode": "PR1 3BQ", "contact": {"phone": "07700 900457"},
    }  # fmt: skip


def _referral_rest() -> dict[str, Any]:
    return {"source": "gp", "needs": ["low_mood"], "consent_to_share": True}
