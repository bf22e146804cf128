"""Organisation binding proved over every route: generated from the merged OpenAPI, so a new
route that touches a referral, an episode or a person is covered without editing this test.

A GP practice refers a person and the single point of access routes them into a care team; then
clients of two other organisations (another GP practice and another trust, with every scope their
kind holds here) call every operation on those records. Each must answer 404 (or a documented
403), carry nothing of the record, and, for a read, leave an audit entry with outcome `denied`.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
from sqlalchemy import select

from services.careplan.models import Episode
from tests.e2e.conftest import Suite, gp_referral
from tests.support import eventually, outbox_events

# Path parameters naming a person-data record, and the record each names. A path parameter not
# here or in NOT_PERSON_DATA fails the test: its author says which it is.
PERSON_RECORD_PARAMS = {
    "referral_id": "referral", "episode_id": "episode", "person_id": "person", "care_plan_id": "episode",
}  # fmt: skip
# FHIR `{resource_id}` by resource type.
FHIR_RECORDS = {
    "ServiceRequest": "referral", "Task": "referral", "Patient": "person",
    "EpisodeOfCare": "episode", "CarePlan": "episode",
}  # fmt: skip
# Records of other kinds, each bound by its own tests (directory handovers and edits, notify
# subscriptions, reporting exports) or not person data (registry, the public directory).
NOT_PERSON_DATA = {
    "handover_id", "edit_id", "service_id", "subscription_id", "job_id", "file_name", "organisation_id",
    "team_id", "practitioner_id", "network_id", "place_key", "kid", "client_id", "id", "code",
    "location_id", "taxonomy_id", "key", "name", "file_type", "ods_code", "organization_id", "sal_id",
    "term_id", "record_id", "resource_type", "version_id",
}  # fmt: skip
# FHIR types whose `{resource_id}` is not person data (the registry), or is bound by its own tests
# (notify's Subscription).
FHIR_NOT_PERSON_DATA = {
    "Organization", "HealthcareService", "Location", "PractitionerRole", "Subscription",
    "CodeSystem", "ValueSet", "ConceptMap",  # the published terminology, public
}  # fmt: skip
INTRUDERS = ("other-gp-ehr", "other-provider")
DOCUMENTED_REFUSALS = {403, 404}


def _operations(document: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    found = []
    for path, item in document["paths"].items():
        params = re.findall(r"{([^}]+)}", path)
        for method in item:
            if method in ("get", "post", "put", "patch", "delete"):
                found.append((method.upper(), path, params))
    return found


def _not_person_data(path: str, param: str) -> bool:
    if param in NOT_PERSON_DATA:
        return True
    parts = path.strip("/").split("/")
    return (
        param == "resource_id" and "fhir" in parts and parts[parts.index("fhir") + 1] in FHIR_NOT_PERSON_DATA
    )


def _record_of(path: str, param: str) -> str | None:
    if param in PERSON_RECORD_PARAMS:
        return PERSON_RECORD_PARAMS[param]
    if param == "resource_id":
        parts = path.strip("/").split("/")
        return FHIR_RECORDS.get(parts[parts.index("fhir") + 1])
    return None


async def _denied(suite: Suite, client_id: str) -> int:
    count = 0
    for name in ("triage", "careplan"):
        for event in await outbox_events(suite.apps[name], f"cmh.{name}.audit.recorded"):
            if event["data"]["client_id"] == client_id and event["data"]["outcome"] == "denied":
                count += 1
    return count


async def test_no_other_organisation_reaches_a_referral_episode_or_person(suite: Suite) -> None:
    gp = await suite.bearer("gp-ehr")
    spa = await suite.bearer("crisis-app")
    async with httpx.AsyncClient(base_url=suite.url, timeout=10) as http:
        referral = await gp_referral(suite, http, "x1")
        decided = await http.post(
            f"/triage/referrals/{referral['id']}/decisions", json={"action": "accept"}, headers=spa
        )
        assert decided.status_code == 200, decided.text

        async def episode_id() -> str | None:
            async with suite.apps["careplan"].state.db.session() as session:
                return await session.scalar(select(Episode.id).where(Episode.referral_id == referral["id"]))

        records = {
            "referral": referral["id"],
            "person": referral["person_id"],
            "episode": await eventually(episode_id, timeout=20),
        }
        person_data = {"9434765919", "Example", "07700 900456"}
        document = (await http.get("/openapi.json")).json()
        operations = _operations(document)
        unknown = sorted(
            {(path, p) for _, path, params in operations for p in params if _record_of(path, p) is None}
            - {(path, p) for _, path, params in operations for p in params if _not_person_data(path, p)}
        )
        assert not unknown, f"say whether these path parameters name person data: {unknown}"
        bound = [
            (method, path, params)
            for method, path, params in operations
            if any(_record_of(path, p) for p in params)
        ]
        assert len(bound) >= 25, [path for _, path, _ in bound]  # the generator found the routes

        for client_id in INTRUDERS:
            headers = {
                "Authorization": f"Bearer {await suite.token(client_id)}",
                "If-Match": '"1"', "Idempotency-Key": f"{client_id}-k",
            }  # fmt: skip
            for method, path, params in bound:
                url = path
                for param in params:
                    url = url.replace("{" + param + "}", records.get(_record_of(path, param) or "", "x"))
                before = await _denied(suite, client_id)
                body = None if method in ("GET", "DELETE") else {}
                response = await http.request(method, url, headers=headers, json=body)
                where = f"{client_id} {method} {path}: {response.status_code}"
                assert response.status_code != 200 and response.status_code < 500, where
                text = response.text
                # Nothing of the record: no person data, no id the caller did not already send.
                secrets = person_data | {value for value in records.values() if value not in url}
                assert not any(secret in text for secret in secrets), f"{where} leaks {text[:300]}"
                if method == "GET":
                    assert response.status_code in DOCUMENTED_REFUSALS, where
                    if response.status_code == 404:
                        after = await _denied(suite, client_id)
                        assert after > before, f"{where}: the refusal was not audited as denied"
                else:
                    # A write's body is validated before its record is loaded: 422 refuses it too.
                    assert response.status_code in {
                        *DOCUMENTED_REFUSALS,
                        400,
                        405,
                        409,
                        412,
                        415,
                        422,
                        428,
                    }, where
        # The owner still reads everything, unchanged.
        again = await http.get(f"/triage/referrals/{referral['id']}", headers=gp)
        assert again.status_code == 200 and json.loads(again.text)["version"] == decided.json()["version"]
