"""FHIR's generic rules through the gateway, generated from the CapabilityStatement so a resource
or parameter added there is covered without anyone remembering to (issue 20):

- every interaction claimed for a resource works, and one not claimed is refused (405/404), so
  `vread`, `update` or `delete` is claimed exactly where it is served;
- every search parameter listed is taken, one not listed is refused by name (400, coded
  MSG_PARAM_UNKNOWN, the parameter as the issue's expression), or with `Prefer: handling=lenient`
  ignored and named in an outcome entry of the Bundle;
- `_summary`, `_elements`, `_total` and `_pretty` shape every read and search.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from shared.errors import OUTCOME_CODES
from shared.fhir_results import element_facts
from shared.fhir_terms import SUBSETTED_TAG
from tests.e2e.conftest import Suite
from tests.e2e.test_fhir_partner import FHIR_JSON, service_request
from tests.fhir_conformance import valid
from tests.support import eventually

SAMPLE_VALUES = {
    "token": "x",
    "reference": "Patient/x",
    "date": "2025-01-01",
    "uri": "https://example.org/x",
    "string": "x",
}


@pytest.fixture
def suite_overrides() -> dict[str, Any]:
    # Hundreds of probes from one client in a minute: above the default rate limits by design
    # (the client's, and the per-address one of public reads such as the published terminology).
    return {"rate_limit_per_minute": 100_000, "public_rate_limit_per_minute": 100_000}


def _codes(outcome: dict[str, Any]) -> set[str]:
    return {
        coding["code"]
        for issue in outcome.get("issue", [])
        for coding in issue.get("details", {}).get("coding", [])
        if coding.get("system") == OUTCOME_CODES
    }


async def _samples(http: httpx.AsyncClient, suite: Suite, gp: dict[str, str]) -> dict[str, str]:
    """One resource of each type the caller may read: its id."""
    created = await http.post(
        "/fhir/ServiceRequest",
        json=service_request("P81001", "GENERIC-1"),
        headers={**gp, "Content-Type": FHIR_JSON},
    )
    assert created.status_code == 201, created.text
    referral = created.json()
    decided = await http.post(
        f"/triage/referrals/{referral['id']}/decisions",
        json={"action": "accept"},
        headers=await suite.bearer("crisis-app"),
    )
    assert decided.status_code == 200, decided.text

    async def episode() -> str | None:
        found = (
            await http.get(
                "/fhir/EpisodeOfCare", params={"patient": referral["subject"]["reference"]}, headers=gp
            )
        ).json()
        return str(found["entry"][0]["resource"]["id"]) if found.get("total") else None

    episode_id = await eventually(episode, timeout=15)
    # A CarePlan exists once the episode's team records a plan.
    plan = {"at": datetime.now(UTC).isoformat(), "needs": ["Sleep"], "goals": ["Back to work"],
            "crisis_plan": "Call the crisis line", "contingency_plan": "Named worker visits", "review_date": "2027-01-01"}  # fmt: skip
    planned = await http.post(
        f"/careplan/episodes/{episode_id}/plans", json=plan, headers=await suite.bearer("lscft-clinician")
    )
    assert planned.status_code == 200, planned.text
    routed = (await http.get(f"/fhir/ServiceRequest/{referral['id']}", headers=gp)).json()
    team_id = routed["performer"][0]["reference"].removeprefix("HealthcareService/")
    admin = await suite.bearer("registry-admin")
    practitioner = await http.post(
        "/registry/practitioners",
        json={
            "attributes": {
                "staff_id": "S-GENERIC-1",
                "name": "Alex Example",
                "profession": "mental_health_nurse",
            }
        },
        headers=admin,
    )
    assert practitioner.status_code == 201, practitioner.text
    membership = await http.post(
        "/registry/memberships",
        json={"attributes": {"practitioner_id": practitioner.json()["id"], "team_id": team_id}},
        headers=admin,
    )
    assert membership.status_code == 201, membership.text
    samples = {
        "ServiceRequest": referral["id"],
        "Task": referral["id"],
        "Patient": referral["subject"]["reference"].removeprefix("Patient/"),
        "EpisodeOfCare": episode_id,
        "CarePlan": episode_id,
        "HealthcareService": team_id,
    }
    for kind in ("Organization", "Location", "PractitionerRole", "CodeSystem", "ValueSet", "ConceptMap"):
        found = (
            await http.get(f"/fhir/{kind}", params={**_required(kind, samples), "_count": 1}, headers=gp)
        ).json()
        assert found.get("entry"), (kind, found)
        samples[kind] = found["entry"][0]["resource"]["id"]
    return samples


def _required(kind: str, samples: dict[str, str]) -> dict[str, str]:
    """What a search of this type needs to find anything at all."""
    return {
        "Provenance": {"target": f"ServiceRequest/{samples.get('ServiceRequest')}"},
        "Organization": {"identifier": "https://fhir.nhs.uk/Id/ods-organization-code|RW5"},
        "HealthcareService": {"identifier": "https://cmh-suite.nhs.uk/Id/team|x"},
        "PractitionerRole": {"identifier": "https://cmh-suite.nhs.uk/Id/staff|S-GENERIC-1"},
    }.get(kind, {})


async def test_every_claimed_interaction_works_and_no_other_is_served(suite: Suite) -> None:
    from tests.e2e.conftest import read_models_filled

    await eventually(lambda: read_models_filled(suite.triage_app), timeout=30)
    async with httpx.AsyncClient(base_url=suite.url, timeout=15) as http:
        gp = await suite.bearer("gp-ehr")
        statement = valid((await http.get("/fhir/metadata")).json())
        samples = await _samples(http, suite, gp)
        subscription = {
            "resourceType": "Subscription", "status": "requested", "reason": "Generic test",
            "criteria": "ServiceRequest",
            "channel": {"type": "rest-hook", "endpoint": "https://ehr.example.nhs.uk/hook", "payload": FHIR_JSON},
        }  # fmt: skip
        checked = 0
        for entry in statement["rest"][0]["resource"]:
            kind = entry["type"]
            claimed = {i["code"] for i in entry["interaction"]}
            sample = samples.get(kind)
            for interaction in ("create", "read", "vread", "update", "search-type", "delete"):
                if interaction == "search-type":
                    answer = await http.get(f"/fhir/{kind}", params=_required(kind, samples), headers=gp)
                    works = answer.status_code == 200 and answer.json()["type"] == "searchset"
                elif interaction == "create":
                    body = (
                        subscription
                        if kind == "Subscription"
                        else (
                            service_request("P81001", "GENERIC-2")
                            if kind == "ServiceRequest"
                            else {"resourceType": kind}
                        )
                    )
                    answer = await http.post(
                        f"/fhir/{kind}", json=body, headers={**gp, "Content-Type": FHIR_JSON}
                    )
                    works = answer.status_code == 201
                    if kind == "Subscription" and works:
                        samples["Subscription"] = sample = answer.json()["id"]
                elif sample is None:
                    assert interaction not in claimed, (kind, interaction, "no sample to try it on")
                    continue
                elif interaction == "read":
                    answer = await http.get(f"/fhir/{kind}/{sample}", headers=gp)
                    works = answer.status_code == 200 and answer.json()["id"] == sample
                    if works:
                        assert answer.headers.get("etag") and answer.headers.get("last-modified"), kind
                elif interaction == "vread":
                    current = (await http.get(f"/fhir/{kind}/{sample}", headers=gp)).json()
                    version = current.get("meta", {}).get("versionId", "1")
                    answer = await http.get(f"/fhir/{kind}/{sample}/_history/{version}", headers=gp)
                    works = answer.status_code == 200 and answer.json()["meta"]["versionId"] == version
                elif interaction == "update":
                    current = (await http.get(f"/fhir/{kind}/{sample}", headers=gp)).json()
                    answer = await http.put(
                        f"/fhir/{kind}/{sample}", json=current,
                        headers={**gp, "Content-Type": FHIR_JSON, "If-Match": f'W/"{current.get("meta", {}).get("versionId", "1")}"'},
                    )  # fmt: skip
                    works = answer.status_code == 200
                else:  # delete: last, so the sample is used up only after everything else
                    answer = await http.delete(f"/fhir/{kind}/{sample}", headers=gp)
                    works = answer.status_code in (200, 204)
                if interaction in claimed:
                    assert works, (kind, interaction, answer.status_code, answer.text[:300])
                else:
                    assert answer.status_code in (404, 405), (
                        kind,
                        interaction,
                        answer.status_code,
                        answer.text[:300],
                    )
                    assert answer.headers["content-type"].startswith(FHIR_JSON), (kind, interaction)
                checked += 1
        assert checked >= 6 * len(statement["rest"][0]["resource"]) - 8


async def test_search_parameters_and_result_parameters_hold_on_every_resource(suite: Suite) -> None:
    from tests.e2e.conftest import read_models_filled

    await eventually(lambda: read_models_filled(suite.triage_app), timeout=30)
    async with httpx.AsyncClient(base_url=suite.url, timeout=15) as http:
        gp = await suite.bearer("gp-ehr")
        statement = (await http.get("/fhir/metadata")).json()
        samples = await _samples(http, suite, gp)
        lenient = {**gp, "Prefer": "handling=lenient"}
        for entry in statement["rest"][0]["resource"]:
            kind = entry["type"]
            if not any(i["code"] == "search-type" for i in entry["interaction"]):
                continue
            required = _required(kind, samples)

            # Every listed parameter is taken (its value may still be refused, but not the name).
            for parameter in entry["searchParam"]:
                value = "1" if parameter["type"] == "number" else SAMPLE_VALUES[parameter["type"]]
                answer = await http.get(
                    f"/fhir/{kind}", params={**required, parameter["name"]: value}, headers=gp
                )
                assert answer.status_code in (200, 400), (kind, parameter, answer.text[:300])
                if answer.status_code == 400:
                    assert "MSG_PARAM_UNKNOWN" not in _codes(answer.json()), (kind, parameter)

            # One not listed: refused by name, or with Prefer: handling=lenient ignored and named.
            refused = await http.get(f"/fhir/{kind}", params={**required, "colour": "blue"}, headers=gp)
            assert refused.status_code == 400, (kind, refused.text)
            outcome = valid(refused.json())
            assert "MSG_PARAM_UNKNOWN" in _codes(outcome) and outcome["issue"][0]["expression"] == ["colour"]
            plain = (await http.get(f"/fhir/{kind}", params=required, headers=gp)).json()
            answered = await http.get(f"/fhir/{kind}", params={**required, "colour": "blue"}, headers=lenient)
            bundle = valid(answered.json())
            assert answered.status_code == 200 and bundle["total"] == plain["total"], kind
            outcomes = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
            assert len(outcomes) == 1 and outcomes[0]["resource"]["issue"][0]["expression"] == ["colour"]

            # _summary=count: the total alone; _total=none: no total.
            counted = valid(
                (await http.get(f"/fhir/{kind}", params={**required, "_summary": "count"}, headers=gp)).json()
            )
            assert counted["total"] == plain["total"] and "entry" not in counted, kind
            untotalled = valid(
                (await http.get(f"/fhir/{kind}", params={**required, "_total": "none"}, headers=gp)).json()
            )
            assert "total" not in untotalled and len(untotalled.get("entry", [])) == len(
                plain.get("entry", [])
            )

            # _elements and _summary=true: a subset, marked, mandatory elements kept.
            mandatory = element_facts()[kind]["mandatory"]
            for params in ({"_elements": "identifier"}, {"_summary": "true"}, {"_summary": "text"}):
                shaped = valid(
                    (await http.get(f"/fhir/{kind}", params={**required, **params}, headers=gp)).json()
                )
                for match in (
                    e["resource"] for e in shaped.get("entry", []) if e["search"]["mode"] == "match"
                ):
                    assert SUBSETTED_TAG in match["meta"]["tag"] and "profile" not in match["meta"], (
                        kind,
                        params,
                    )
                    assert mandatory <= set(match), (kind, params, sorted(match))
                    if "_elements" in params:
                        assert set(match) <= {
                            "resourceType",
                            "id",
                            "meta",
                            "identifier",
                            "modifierExtension",
                            *mandatory,
                        }

        # On a read too; _pretty indents; a value FHIR does not define is refused, naming it.
        read = await http.get(
            f"/fhir/ServiceRequest/{samples['ServiceRequest']}",
            params={"_elements": "status", "_pretty": "true"},
            headers=gp,
        )
        assert read.status_code == 200 and read.text.startswith('{\n  "') and read.headers["etag"]
        assert set(valid(read.json())) == {"resourceType", "id", "meta", "status", "intent", "subject"}
        for params in ({"_summary": "some"}, {"_total": "all"}, {"_pretty": "yes"}, {"_elements": "a.b.c"}):
            refused = await http.get("/fhir/ServiceRequest", params=params, headers=gp)
            outcome = valid(refused.json())
            assert refused.status_code == 400 and outcome["issue"][0]["expression"] == [next(iter(params))]
            assert "MSG_PARAM_INVALID" in _codes(outcome)
