"""A partner EHR through the gateway's FHIR R4 base, with the whole suite and a real nats-server:
a ServiceRequest becomes a triaged referral; its status, Task, EpisodeOfCare and the resulting
CarePlan read as FHIR and validate; a second partner cannot read any of it; a webhook receiver on
loopback, down for a while, then up, gets every signed notification, verifiably, in order."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shared.fhir_terms import CMH_CODES, CMH_EXTENSIONS, NHS_NUMBER_SYSTEM, ODS_SYSTEM
from shared.nats_server import free_port
from tests.e2e.conftest import Suite
from tests.fhir_conformance import valid
from tests.support import eventually, serve

FHIR_JSON = "application/fhir+json"
NHS_NUMBER = "9434765919"
PARTNER_SYSTEM = "https://gp-system.example.nhs.uk/referrals"


@dataclass
class Receiver:
    """A partner's webhook endpoint: answers 503 while `down`, records everything it is sent."""

    url: str
    down: bool = True
    seen: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)

    def delivered(self) -> list[tuple[dict[str, str], bytes]]:
        return [(headers, body) for status, headers, body in self.seen if status == 200]


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    port = free_port()
    state = Receiver(url=f"http://127.0.0.1:{port}/hooks")

    async def hook(request: Request) -> Response:
        body = await request.body()
        status = 503 if state.down else 200
        state.seen.append((status, {k.lower(): v for k, v in request.headers.items()}, body))
        return Response(status_code=status)

    server, task = await serve(Starlette(routes=[Route("/hooks", hook, methods=["POST"])]), port)
    try:
        yield state
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, timeout=5)


def verified(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """What the documentation tells a partner to do: the Standard Webhooks library, not the service's code."""
    try:
        Webhook(secret).verify(body, headers, json_parse=False)
    except WebhookVerificationError:
        return False
    return True


def subscription_of(body: bytes) -> str:
    parameters = json.loads(body)["entry"][0]["resource"]["parameter"]
    return str(next(p for p in parameters if p["name"] == "subscription")["valueReference"]["reference"])


def focus_of(body: bytes) -> tuple[str, str, int]:
    """(reference, status, event number) of a notification Bundle, after validating it."""
    bundle = valid(json.loads(body))
    assert bundle["type"] == "history"
    parameters = bundle["entry"][0]["resource"]
    event = next(p for p in parameters["parameter"] if p["name"] == "notification-event")
    number = int(next(p for p in event["part"] if p["name"] == "event-number")["valueString"])
    focus = next(p for p in event["part"] if p["name"] == "focus")["valueReference"]["reference"]
    resource = bundle["entry"][1]["resource"]
    assert set(resource) <= {"resourceType", "id", "meta", "status", "intent", "subject", "patient"}
    return focus, resource["status"], number


def service_request(organisation: str, partner_id: str) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "contained": [
            {
                "resourceType": "Patient",
                "id": "patient",
                "identifier": [{"system": NHS_NUMBER_SYSTEM, "value": NHS_NUMBER}],
                "name": [{"given": ["Robin"], "family": "Example"}],
                "birthDate": "1970-05-05",
                "gender": "female",
                "address": [{"postalCode": "PR1 3BQ"}],
            },
            {
                "resourceType": "RiskAssessment",
                "id": "risk",
                "status": "final",
                "subject": {"reference": "#patient"},
                "prediction": [
                    {"outcome": {"coding": [{"system": CMH_CODES + "risk", "code": "substance_use"}]}}
                ],
            },
        ],
        "identifier": [{"system": PARTNER_SYSTEM, "value": partner_id}],
        "status": "active",
        "intent": "order",
        "category": [{"coding": [{"system": CMH_CODES + "referral-source", "code": "gp"}]}],
        "priority": "routine",
        "subject": {"reference": "#patient"},
        "requester": {"identifier": {"system": ODS_SYSTEM, "value": organisation}},
        "reasonCode": [{"coding": [{"system": CMH_CODES + "need", "code": "low_mood"}]}],
        "note": [{"text": "Low mood for three months, drinking more."}],
        "supportingInfo": [{"reference": "#risk"}],
        "authoredOn": datetime.now(UTC).isoformat(timespec="seconds"),
    }


async def subscribe(
    http: httpx.AsyncClient, auth: dict[str, str], criteria: str, endpoint: str
) -> tuple[str, str]:
    created = await http.post(
        "/fhir/Subscription",
        json={
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "Tell our EHR what became of our referrals",
            "criteria": criteria,
            "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": FHIR_JSON},
        },
        headers={**auth, "Content-Type": FHIR_JSON},
    )
    assert created.status_code == 201, created.text
    body = valid(created.json())
    secret = next(
        e["valueString"] for e in body["extension"] if e["url"] == CMH_EXTENSIONS + "webhook-secret"
    )
    return body["id"], secret


async def test_a_partner_ehr_refers_reads_and_is_notified_through_fhir(suite: Suite) -> None:
    from tests.e2e.conftest import read_models_filled

    await eventually(lambda: read_models_filled(suite.triage_app), timeout=30)
    async with (
        httpx.AsyncClient(base_url=suite.url, timeout=15) as http,
        receiver() as hooks,
        receiver() as other_hooks,
    ):
        tokens = {c: {"Authorization": f"Bearer {await suite.token(c)}"} for c in
                  ("gp-ehr", "other-gp-ehr", "crisis-app", "lscft-clinician")}  # fmt: skip
        gp, other = tokens["gp-ehr"], tokens["other-gp-ehr"]

        # The CapabilityStatement is public and says what is served.
        metadata = await http.get("/fhir/metadata")
        assert metadata.status_code == 200 and metadata.headers["content-type"].startswith(FHIR_JSON)
        assert {r["type"] for r in valid(metadata.json())["rest"][0]["resource"]} >= {
            "ServiceRequest", "Task", "EpisodeOfCare", "CarePlan", "Subscription", "Organization"
        }  # fmt: skip
        assert (await http.get("/fhir/metadata", params={"_format": "xml"})).status_code == 406

        # Both partners subscribe; the first partner's receiver is down to begin with.
        subscription_id, secret = await subscribe(http, gp, "ServiceRequest", hooks.url)
        plan_subscription_id, plan_secret = await subscribe(http, gp, "CarePlan?status=active", hooks.url)
        secrets = {
            f"Subscription/{subscription_id}": secret,
            f"Subscription/{plan_subscription_id}": plan_secret,
        }
        await subscribe(http, other, "ServiceRequest", other_hooks.url)
        other_hooks.down = False

        # A referral as a ServiceRequest; a retry with If-None-Exist makes nothing new.
        body = valid(service_request("P81001", "GP-REF-1"))
        created = await http.post(
            "/fhir/ServiceRequest", json=body, headers={**gp, "Content-Type": FHIR_JSON}
        )
        assert created.status_code == 201, created.text
        referral = valid(created.json())
        assert referral["status"] == "active" and created.headers["location"].startswith(f"{suite.url}/fhir/")
        again = await http.post(
            "/fhir/ServiceRequest",
            json=body,
            headers={
                **gp,
                "Content-Type": FHIR_JSON,
                "If-None-Exist": f"identifier={PARTNER_SYSTEM}|GP-REF-1",
            },
        )
        assert again.status_code == 200 and again.json()["id"] == referral["id"]
        task = valid(
            (
                await http.get("/fhir/Task", params={"focus": f"ServiceRequest/{referral['id']}"}, headers=gp)
            ).json()
        )
        assert task["total"] == 1 and task["entry"][0]["resource"]["status"] == "requested"

        # Triage accepts it (a clinician, through the native API): the referral is routed.
        decided = await http.post(
            f"/triage/referrals/{referral['id']}/decisions",
            json={"action": "accept"},
            headers=tokens["crisis-app"],
        )
        assert decided.status_code == 200, decided.text
        read = await http.get(f"/fhir/ServiceRequest/{referral['id']}", headers=gp)
        # The request stands while its care is under way; the Task carries triage's outcome.
        assert valid(read.json())["status"] == "active" and read.headers["etag"] == 'W/"2"'
        task = valid((await http.get(f"/fhir/Task/{referral['id']}", headers=gp)).json())
        assert task["status"] == "completed"

        # The episode it opened, found by NHS number (resolved at the gateway), then the plan.
        chained = {"patient.identifier": f"{NHS_NUMBER_SYSTEM}|{NHS_NUMBER}"}

        async def episode() -> dict[str, Any] | None:
            found = (await http.get("/fhir/EpisodeOfCare", params=chained, headers=gp)).json()
            return found["entry"][0]["resource"] if found.get("total") else None

        episode_of_care = valid(await eventually(episode, timeout=15))
        assert episode_of_care["status"] == "active"
        assert episode_of_care["referralRequest"][0]["reference"] == f"ServiceRequest/{referral['id']}"
        now = datetime.now(UTC)
        path = f"/careplan/episodes/{episode_of_care['id']}"
        for sub, record in (
            ("assessments", {"started_at": now.isoformat(), "completed_at": now.isoformat(), "meaningful": True}),
            ("plans", {
                "at": now.isoformat(), "needs": ["low mood"], "goals": ["Get back to my allotment"],
                "crisis_plan": "Call the crisis line", "contingency_plan": "Named worker visits",
                "review_date": (now + timedelta(days=60)).date().isoformat(),
            }),
            ("plans/agreement", {"agreed_at": now.isoformat(), "how_agreed": "in_person"}),
        ):  # fmt: skip
            written = await http.post(f"{path}/{sub}", json=record, headers=tokens["lscft-clinician"])
            assert written.status_code == 200, (sub, written.text)
        plans = valid((await http.get("/fhir/CarePlan", params=chained, headers=gp)).json())
        assert plans["total"] == 1 and valid(plans["entry"][0]["resource"])["status"] == "active"
        assert plans["entry"][0]["fullUrl"].startswith(f"{suite.url}/fhir/CarePlan/")

        # The episode ends: the request is fulfilled, as a new version.
        discharged = await http.post(
            f"{path}/discharge",
            json={"at": now.isoformat(), "reason": "treatment_complete"},
            headers=tokens["lscft-clinician"],
        )
        assert discharged.status_code == 200, discharged.text

        async def fulfilled() -> bool:
            read = await http.get(f"/fhir/ServiceRequest/{referral['id']}", headers=gp)
            return bool(read.json()["status"] == "completed" and read.headers["etag"] == 'W/"3"')

        await eventually(fulfilled, timeout=15)

        # Another partner reads none of it.
        for url in (f"/fhir/ServiceRequest/{referral['id']}", f"/fhir/Task/{referral['id']}",
                    f"/fhir/CarePlan/{episode_of_care['id']}", f"/fhir/EpisodeOfCare/{episode_of_care['id']}",
                    f"/fhir/Subscription/{subscription_id}"):  # fmt: skip
            refused = await http.get(url, headers=other)
            assert refused.status_code == 404 and valid(refused.json())["resourceType"] == "OperationOutcome"
        for url in ("/fhir/ServiceRequest", "/fhir/EpisodeOfCare", "/fhir/CarePlan"):
            assert (await http.get(url, params=chained, headers=other)).json()["total"] == 0

        # The receiver was down: retries were made and failed. Now it is up.
        await eventually(lambda: len(hooks.seen) >= 2, timeout=15)
        assert hooks.delivered() == []
        hooks.down = False

        def referral_statuses() -> list[str]:
            return [status for focus, status, _ in map(focus_of, (b for _, b in hooks.delivered()))
                    if focus == f"ServiceRequest/{referral['id']}"]  # fmt: skip

        await eventually(lambda: referral_statuses() == ["active", "active", "completed"], timeout=20)
        await eventually(
            lambda: (
                (f"CarePlan/{episode_of_care['id']}", "active")
                in [focus_of(b)[:2] for _, b in hooks.delivered()]
            ),
            timeout=20,
        )
        delivered = hooks.delivered()
        assert all(verified(secrets[subscription_of(body)], headers, body) for headers, body in delivered)
        headers, body = next(
            (h, b) for h, b in delivered if subscription_of(b) == f"Subscription/{subscription_id}"
        )
        assert not verified(plan_secret, headers, body)  # another subscription's secret does not verify
        assert not verified(secret, headers, body + b" ")  # nor does a changed body
        numbers = [
            focus_of(body)[2]
            for _, body in delivered
            if subscription_of(body) == f"Subscription/{subscription_id}"
        ]
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
        assert len({h["webhook-id"] for h, _ in delivered}) == len(delivered)  # each delivered once
        # The other partner heard nothing about this referral.
        assert all(referral["id"] not in body.decode() for _, _, body in other_hooks.seen)
