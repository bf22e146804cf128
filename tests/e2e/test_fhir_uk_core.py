"""FHIR in partners' terms, through the gateway with the whole suite: a GP system's referral coded
in SNOMED CT (UK Core SourceOfServiceRequest, reasons for referral, a PractitionerRole requester)
is accepted, triaged on the suite's own codes, and read back with every coding and element the
partner sent; the maps it was translated by are served at /fhir/ConceptMap; nothing sent
disappears without a word (refused by name, or dropped with a warning under Prefer: lenient)."""

from __future__ import annotations

import copy
from typing import Any

import httpx

from shared.fhir_terms import CMH_CODES, NHS_NUMBER_SYSTEM, ODS_SYSTEM
from shared.terminology import SNOMED_CT
from tests.e2e.conftest import Suite
from tests.e2e.test_fhir_partner import FHIR_JSON, valid

SOURCE_EXTENSION = "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-SourceOfServiceRequest"
GP_SYSTEM_SUPPLIER = "https://gp-system.example.nhs.uk/referrals"


def snomed(code: str, display: str) -> dict[str, str]:
    return {"system": SNOMED_CT, "code": code, "display": display}


def gp_referral(organisation: str, partner_id: str) -> dict[str, Any]:
    """A referral as a GP system sends it: SNOMED CT throughout, the referring GP as a
    PractitionerRole (SDS user and role profile ids at the practice's ODS code)."""
    return {
        "resourceType": "ServiceRequest",
        "contained": [
            {
                "resourceType": "Patient",
                "id": "patient",
                "identifier": [{"system": NHS_NUMBER_SYSTEM, "value": "9434765870"}],
                "name": [{"given": ["Alex"], "family": "Partner"}],
                "birthDate": "1984-02-29",
                "address": [{"postalCode": "LA1 1AA"}],
            },
            {
                "resourceType": "PractitionerRole",
                "id": "gp",
                "identifier": [
                    {"system": "https://fhir.nhs.uk/Id/sds-role-profile-id", "value": "555021935107"}
                ],
                "practitioner": {
                    "identifier": {"system": "https://fhir.nhs.uk/Id/sds-user-id", "value": "555021933103"},
                    "display": "Dr A Example",
                },
                "organization": {"identifier": {"system": ODS_SYSTEM, "value": organisation}},
            },
        ],
        "extension": [
            {
                "url": SOURCE_EXTENSION,
                "valueCodeableConcept": {
                    "coding": [snomed("108161000000109", "Referred by general practitioner")]
                },
            }
        ],
        "identifier": [{"system": GP_SYSTEM_SUPPLIER, "value": partner_id}],
        "status": "active",
        "intent": "order",
        "code": {"coding": [snomed("306136006", "Referral to mental health service")]},
        "priority": "urgent",
        "subject": {"reference": "#patient"},
        "requester": {"reference": "#gp", "display": "Dr A Example"},
        "reasonCode": [
            {"coding": [snomed("366979004", "Depressed mood")], "text": "Low mood"},
            {"coding": [snomed("48694002", "Anxiety")]},
        ],
        "occurrenceDateTime": "2026-12-09T09:00:00+00:00",
        "patientInstruction": "Prefers a phone call after 3pm.",
        "authoredOn": "2026-12-02T10:30:00+00:00",
    }


def codings(concepts: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for concept in concepts for c in concept.get("coding", [])}


async def test_a_snomed_coded_gp_referral_is_accepted_and_read_back_with_its_codings(suite: Suite) -> None:
    async with httpx.AsyncClient(base_url=suite.url, timeout=15) as http:
        gp = {"Authorization": f"Bearer {await suite.token('gp-ehr')}", "Content-Type": FHIR_JSON}
        created = await http.post("/fhir/ServiceRequest", json=gp_referral("P81001", "SNOMED-1"), headers=gp)
        assert created.status_code == 201, created.text
        referral = valid(created.json())

        read = await http.get(f"/fhir/ServiceRequest/{referral['id']}", headers=gp)
        assert read.status_code == 200
        back = valid(read.json())
        # The partner's SNOMED CT codings come back, each beside the suite's code it was read as.
        assert codings(back["reasonCode"]) >= {
            (SNOMED_CT, "366979004"), (CMH_CODES + "need", "low_mood"),
            (SNOMED_CT, "48694002"), (CMH_CODES + "need", "anxiety"),
        }  # fmt: skip
        source = [e for e in back["extension"] if e["url"] == SOURCE_EXTENSION]
        assert source and source[0]["valueCodeableConcept"]["coding"][0]["code"] == "108161000000109"
        assert (CMH_CODES + "referral-source", "gp") in codings(back["category"])
        # The referring clinician, as sent.
        assert back["requester"]["type"] == "PractitionerRole"
        role = next(c for c in back["contained"] if c["resourceType"] == "PractitionerRole")
        assert back["requester"]["reference"] == f"#{role['id']}"
        assert role["practitioner"]["identifier"]["value"] == "555021933103"
        assert role["organization"]["identifier"] == {"system": ODS_SYSTEM, "value": "P81001"}
        # Elements the suite does not read are kept and returned.
        assert back["occurrenceDateTime"] == "2026-12-09T09:00:00+00:00"
        assert back["patientInstruction"] == "Prefers a phone call after 3pm."
        assert (SNOMED_CT, "306136006") in codings([back["code"]])

        # Triage worked on the suite's own codes.
        native = await http.get(f"/triage/referrals/{referral['id']}", headers=gp)
        assert native.status_code == 200, native.text
        assert native.json()["source"] == "gp"
        assert set(native.json()["details"]["needs"]) == {"low_mood", "anxiety"}


async def test_a_referral_made_natively_reads_with_the_snomed_ct_equivalents(suite: Suite) -> None:
    from tests.e2e.test_fhir_partner import service_request

    async with httpx.AsyncClient(base_url=suite.url, timeout=15) as http:
        gp = {"Authorization": f"Bearer {await suite.token('gp-ehr')}", "Content-Type": FHIR_JSON}
        created = await http.post("/fhir/ServiceRequest", json=service_request("P81001", "CMH-1"), headers=gp)
        assert created.status_code == 201, created.text
        back = valid(created.json())
        assert (SNOMED_CT, "366979004") in codings(back["reasonCode"])  # low_mood's equivalent
        source = [e for e in back["extension"] if e["url"] == SOURCE_EXTENSION]
        assert source[0]["valueCodeableConcept"]["coding"][0]["code"] == "108161000000109"


async def test_nothing_a_partner_sends_disappears_silently(suite: Suite) -> None:
    async with httpx.AsyncClient(base_url=suite.url, timeout=15) as http:
        gp = {"Authorization": f"Bearer {await suite.token('gp-ehr')}", "Content-Type": FHIR_JSON}

        async def refused(body: dict[str, Any], element: str) -> None:
            answer = await http.post("/fhir/ServiceRequest", json=body, headers=gp)
            assert answer.status_code == 422, answer.text
            outcome = valid(answer.json())
            assert any(element in issue.get("diagnostics", "") for issue in outcome["issue"]), outcome

        invented = gp_referral("P81001", "SNOMED-2") | {"favouriteColour": "blue"}
        await refused(invented, "ServiceRequest.favouriteColour")
        await refused(
            gp_referral("P81001", "SNOMED-3") | {"performer": [{"display": "Team X"}]},
            "ServiceRequest.performer",
        )
        unmapped = gp_referral("P81001", "SNOMED-4")
        unmapped["reasonCode"] = [{"coding": [snomed("22298006", "Myocardial infarction")]}]
        await refused(unmapped, "ServiceRequest.reasonCode[0]")
        modifier = gp_referral("P81001", "SNOMED-5") | {"implicitRules": "https://example.org/rules"}
        lenient = {**gp, "Prefer": "handling=lenient"}
        answer = await http.post("/fhir/ServiceRequest", json=modifier, headers=lenient)
        assert answer.status_code == 422  # a modifier is never ignorable, lenient or not

        # The person: read, or refused by name; a recorded death is never dropped, lenient or not.
        with_gp = gp_referral("P81001", "SNOMED-6")
        with_gp["contained"][0]["generalPractitioner"] = [{"display": "Dr A Example"}]
        await refused(with_gp, "ServiceRequest.contained[Patient].generalPractitioner")
        deceased = gp_referral("P81001", "SNOMED-7")
        deceased["contained"][0]["deceasedBoolean"] = True
        assert (await http.post("/fhir/ServiceRequest", json=deceased, headers=lenient)).status_code == 422

        # Lenient: accepted, and the answer names exactly what was not kept.
        both = copy.deepcopy(invented)
        both["contained"][0]["generalPractitioner"] = [{"display": "Dr A Example"}]
        answer = await http.post("/fhir/ServiceRequest", json=both, headers=lenient)
        assert answer.status_code == 201, answer.text
        outcome = valid(answer.json())
        assert outcome["resourceType"] == "OperationOutcome"
        assert [i["expression"] for i in outcome["issue"]] == [
            ["ServiceRequest.favouriteColour"], ["ServiceRequest.contained[Patient].generalPractitioner"]
        ]  # fmt: skip
        assert {i["severity"] for i in outcome["issue"]} == {"warning"}
        stored = await http.get(answer.headers["location"], headers=gp)
        assert stored.status_code == 200 and "favouriteColour" not in stored.json()


async def test_the_maps_and_code_systems_are_served_and_listed(suite: Suite) -> None:
    async with httpx.AsyncClient(base_url=suite.url, timeout=15) as http:
        metadata = (await http.get("/fhir/metadata")).json()
        listed = {r["type"]: r for r in metadata["rest"][0]["resource"]}
        for kind in ("CodeSystem", "ValueSet", "ConceptMap"):
            assert {i["code"] for i in listed[kind]["interaction"]} == {"read", "search-type"}
            bundle = await http.get(f"/fhir/{kind}")  # public, like the CapabilityStatement
            assert bundle.status_code == 200, bundle.text
            found = valid(bundle.json())
            assert found["total"] >= 3
            for entry in found["entry"]:
                assert entry["fullUrl"].startswith(suite.url + "/fhir/")
                one = await http.get(f"/fhir/{kind}/{entry['resource']['id']}")
                assert one.status_code == 200 and valid(one.json()) == entry["resource"]
        from_snomed = valid((await http.get("/fhir/ConceptMap", params={"source-system": SNOMED_CT})).json())
        assert {e["resource"]["id"] for e in from_snomed["entry"]} == {
            "snomed-to-cmh-referral-source", "snomed-to-cmh-need"
        }  # fmt: skip
        need = (await http.get("/fhir/CodeSystem", params={"url": CMH_CODES + "need"})).json()
        assert need["total"] == 1 and any(
            c["code"] == "low_mood" for c in need["entry"][0]["resource"]["concept"]
        )
        assert (await http.get("/fhir/CodeSystem/no-such-thing")).status_code == 404
        assert (await http.get("/fhir/ConceptMap", params={"colour": "blue"})).status_code == 400


async def test_an_invalid_nhs_number_in_a_search_is_refused_not_an_empty_bundle(suite: Suite) -> None:
    async with httpx.AsyncClient(base_url=suite.url, timeout=15) as http:
        auth = {"Authorization": f"Bearer {await suite.token('gp-ehr')}"}
        bad_check_digit = f"{NHS_NUMBER_SYSTEM}|9434765918"
        for path, parameter in (
            ("/fhir/Patient", "identifier"),
            ("/fhir/ServiceRequest", "patient.identifier"),
            ("/fhir/Task", "subject:identifier"),
            ("/fhir/EpisodeOfCare", "patient.identifier"),  # resolved at the gateway's fan-in
            ("/fhir/CarePlan", "patient.identifier"),
        ):
            for value in (bad_check_digit, "123", f"{NHS_NUMBER_SYSTEM}|94347659I9"):
                answer = await http.get(path, params={parameter: value}, headers=auth)
                assert answer.status_code == 400, (path, value, answer.text)
                outcome = valid(answer.json())
                assert parameter in outcome["issue"][0]["diagnostics"]
        # A number in another system is not an NHS number: it matches nothing, as before.
        other = await http.get(
            "/fhir/Patient", params={"identifier": "https://other.example|123"}, headers=auth
        )
        assert other.status_code == 200 and other.json()["total"] == 0


async def test_a_correlation_id_is_echoed_on_every_answer(suite: Suite) -> None:
    async with httpx.AsyncClient(base_url=suite.url, timeout=15) as http:
        auth = {"Authorization": f"Bearer {await suite.token('gp-ehr')}"}
        for method, path, headers in (
            ("GET", "/fhir/metadata", {}),
            ("GET", "/fhir/ServiceRequest", {}),  # refused: no token
            ("GET", "/fhir/ServiceRequest", auth),  # proxied to triage
            ("GET", "/registry/organisations", auth),
            ("GET", "/no-such-place", auth),
        ):
            answer = await http.request(method, path, headers={**headers, "X-Correlation-ID": "ehr-trace.42"})
            assert answer.headers.get("x-correlation-id") == "ehr-trace.42", (path, answer.status_code)
            assert answer.headers.get_list("x-correlation-id") == ["ehr-trace.42"]
        ignored = await http.get("/fhir/metadata", headers={"X-Correlation-ID": "x" * 129})  # too long
        assert "x-correlation-id" not in ignored.headers
