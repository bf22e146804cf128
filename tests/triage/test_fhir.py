"""The triage FHIR facade through its HTTP API, on SQLite and PostgreSQL: creating referrals as
ServiceRequests (idempotent by key and by conditional create), reading them, their triage Tasks and
the people referred, organisation binding, searches with paging, and errors as OperationOutcome
(every answer validates against the R4B models of `fhir.resources`)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from sqlalchemy import func, select

from services.triage import fhir
from services.triage.models import Person, Referral
from shared.deps import service_state
from shared.fhir_terms import NHS_NUMBER_SYSTEM, ODS_SYSTEM
from shared.http import public_url
from tests.support import mint_token
from tests.triage.support import CLINICIAN, EHR, GP, OTHER_EHR, OTHER_GP, Triage, nhs_number
from tests.triage.test_fhir_mapping import PARTNER_SYSTEM, contained_patient, service_request_body, valid

BASE = "/triage/fhir"
OTHER_NHS = nhs_number("401023213")


async def _count(triage: Triage, model: Any) -> int:
    async with triage.app.state.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def post(triage: Triage, body: Any, headers: dict[str, str] = EHR, **extra: str) -> httpx.Response:
    content = body if isinstance(body, str) else json.dumps(body)
    return await triage.client.post(
        f"{BASE}/ServiceRequest",
        content=content,
        headers={"Content-Type": "application/fhir+json", **headers, **extra},
    )


def public_fhir(triage: Triage) -> str:
    """The FHIR base links and Locations name, called directly: the public `/fhir`, never triage's
    own `/triage/fhir` (internal) nor the Host header."""
    return public_url(service_state(triage.app).settings, "/fhir")


async def get(triage: Triage, path: str, headers: dict[str, str] = EHR, **params: Any) -> httpx.Response:
    """A path under triage's FHIR base, or a link it gave (at the public base, which the gateway
    would send on to triage's own)."""
    if "://" in path:
        assert path.startswith(public_fhir(triage) + "/"), path
        url = BASE + path.removeprefix(public_fhir(triage))
    else:
        url = f"{BASE}/{path}"
    return await triage.client.get(url, params=params or None, headers=headers)  # a link keeps its query


def fhir_json(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    """The body, checked: the status, FHIR JSON, and valid R4B (a Bundle's entries too)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    return valid(response.json())


def outcome(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    body = fhir_json(response, status)
    assert body["resourceType"] == "OperationOutcome"
    assert code in {issue["code"] for issue in body["issue"]}, body
    return body


def ids(bundle: dict[str, Any]) -> list[str]:
    return [entry["resource"]["id"] for entry in bundle.get("entry", [])]


def for_person(nhs: str, **overrides: Any) -> dict[str, Any]:
    patient = contained_patient(identifier=[{"system": NHS_NUMBER_SYSTEM, "value": nhs}])
    return service_request_body(patient=patient, **overrides)


async def test_create_then_read_the_service_request_its_task_and_patient(triage: Triage) -> None:
    response = await post(triage, service_request_body(risks=("suicidal_ideation",)))
    created = fhir_json(response, 201)
    referral_id = created["id"]
    assert created["meta"]["profile"] == [fhir.SERVICE_REQUEST_PROFILE]
    assert response.headers["location"] == f"{public_fhir(triage)}/ServiceRequest/{referral_id}/_history/1"
    assert response.headers["etag"] == 'W/"1"'
    assert created["status"] == "active" and created["requester"]["identifier"] == {
        "system": ODS_SYSTEM,
        "value": GP,
    }
    assert {"system": PARTNER_SYSTEM, "value": "R-1"} in created["identifier"]
    assert created["subject"]["identifier"]["value"] == "9434765919"
    assert [c["coding"][0]["code"] for c in created["reasonCode"]] == ["low_mood", "anxiety"]
    assert created["contained"][0]["prediction"][0]["outcome"]["coding"][0]["code"] == "suicidal_ideation"
    # The referral was taken in as the native intake takes it: screened, events and audit.
    native = (await triage.client.get(f"/triage/referrals/{referral_id}", headers=EHR)).json()
    assert native["source"] == "gp" and native["details"]["needs"] == ["low_mood", "anxiety"]
    assert native["details"]["partner_identifiers"] == [{"system": PARTNER_SYSTEM, "value": "R-1"}]
    assert created["priority"] == fhir.FHIR_PRIORITY[native["priority"]]
    types = [e["type"] for e in await triage.events() if ".audit." not in e["type"]]
    assert types == ["cmh.triage.referral.received", "cmh.triage.referral.prioritised"]

    assert fhir_json(await get(triage, response.headers["location"])) == created  # vread
    outcome(await get(triage, f"ServiceRequest/{referral_id}/_history/7"), 404, "not-found")
    read = await get(triage, f"ServiceRequest/{referral_id}")
    assert fhir_json(read) == created and read.headers["etag"] == 'W/"1"'

    task = fhir_json(await get(triage, f"Task/{referral_id}"))
    assert task["status"] == "requested" and task["businessStatus"]["text"] == "awaiting-triage"
    assert task["focus"]["reference"] == f"ServiceRequest/{referral_id}"
    assert task["owner"]["reference"] == f"HealthcareService/{native['suggestion']['team']['id']}"

    patient = fhir_json(await get(triage, created["subject"]["reference"]))
    assert [(i["system"], i["value"]) for i in patient["identifier"]] == [(NHS_NUMBER_SYSTEM, "9434765919")]
    assert patient["name"][0]["given"] == ["Sam"] and patient["address"][0]["postalCode"] == "PR1 3BQ"

    # Through the gateway, links and fullUrls name its base.
    gateway = {**EHR, "X-Forwarded-Fhir-Base": "https://api.example.nhs.uk/fhir"}
    bundle = fhir_json(await get(triage, "ServiceRequest", gateway))
    assert bundle["entry"][0]["fullUrl"] == f"https://api.example.nhs.uk/fhir/ServiceRequest/{referral_id}"
    assert bundle["link"][0]["url"].startswith("https://api.example.nhs.uk/fhir/ServiceRequest?")

    audits = [e["data"] for e in await triage.events("cmh.triage.audit.recorded")]
    assert {(a["action"], a["resource_type"]) for a in audits} >= {
        ("create", "Referral"),
        ("read", "Referral"),
        ("search", "Referral"),
        ("read", "Patient"),
    }
    assert all("Sam" not in json.dumps(a) and "9434765919" not in json.dumps(a) for a in audits)


async def test_decisions_complete_the_task_and_a_decline_revokes_the_request(triage: Triage) -> None:
    accepted = fhir_json(await post(triage, service_request_body()), 201)["id"]
    decided = await triage.client.post(
        f"/triage/referrals/{accepted}/decisions", json={"action": "accept"}, headers=CLINICIAN
    )
    assert decided.status_code == 200, decided.text
    read = await get(triage, f"ServiceRequest/{accepted}")
    request = fhir_json(read)
    # Routed to a team: the request stands while its episode of care is open (test_care_ended.py).
    assert request["status"] == "active" and read.headers["etag"] == 'W/"2"'
    assert request["performer"] == [
        {"reference": f"HealthcareService/{decided.json()['suggestion']['team']['id']}"}
    ]
    task = fhir_json(await get(triage, f"Task/{accepted}"))
    assert task["status"] == "completed" and task["businessStatus"]["coding"][0]["code"] == "accept"
    outputs = {o["type"]["coding"][0]["code"]: o["valueCodeableConcept"] for o in task["output"]}
    assert outputs["route"]["coding"][0]["code"] == "front_door_primary"
    assert outputs["priority"]["coding"][0]["code"] == "3"

    declined = fhir_json(await post(triage, for_person(OTHER_NHS, partner_id="R-2")), 201)["id"]
    refused = await triage.client.post(
        f"/triage/referrals/{declined}/decisions",
        json={"action": "decline", "route": "staying_well", "reason": "Better met by staying well"},
        headers=CLINICIAN,
    )
    assert refused.status_code == 200, refused.text
    assert fhir_json(await get(triage, f"ServiceRequest/{declined}"))["status"] == "revoked"
    task = fhir_json(await get(triage, f"Task/{declined}"))
    assert task["status"] == "completed" and task["businessStatus"]["text"] == "decline"
    assert task["statusReason"]["text"] == "Better met by staying well"


async def test_idempotency_key_and_conditional_create_make_one_referral(triage: Triage) -> None:
    body = service_request_body(partner_id="R-77")
    first = await post(triage, body, **{"Idempotency-Key": "k-1"})
    created = fhir_json(first, 201)
    replay = await post(triage, body, **{"Idempotency-Key": "k-1"})
    assert fhir_json(replay, 201)["id"] == created["id"] and replay.headers["idempotent-replayed"] == "true"
    condition = {"If-None-Exist": f"identifier={PARTNER_SYSTEM}|R-77"}
    again = await post(triage, body, **condition)
    assert fhir_json(again)["id"] == created["id"]  # 200: the existing one, nothing new
    assert again.headers["location"].endswith(f"/ServiceRequest/{created['id']}/_history/1")
    assert await _count(triage, Referral) == 1
    # Identifiers are scoped to the organisation, and case-sensitive.
    other = await post(
        triage, service_request_body(organisation=OTHER_GP, partner_id="R-77"), OTHER_EHR, **condition
    )
    assert fhir_json(other, 201)["id"] != created["id"]
    lower = await post(
        triage,
        service_request_body(partner_id="r-77"),
        **{"If-None-Exist": f"identifier={PARTNER_SYSTEM}|r-77"},
    )
    assert fhir_json(lower, 201)["id"] != created["id"]
    assert await _count(triage, Referral) == 3
    # The condition must name one of the resource's own identifiers (else a retry could never match).
    outcome(
        await post(triage, body, **{"If-None-Exist": f"identifier={PARTNER_SYSTEM}|R-78"}), 400, "invalid"
    )
    outcome(await post(triage, body, **{"If-None-Exist": "patient=Patient/x"}), 400, "not-supported")
    # Two referrals under one identifier (plain creates may repeat one): the condition is ambiguous.
    for _ in range(2):
        fhir_json(await post(triage, service_request_body(partner_id="R-88")), 201)
    ambiguous = {"If-None-Exist": f"identifier={PARTNER_SYSTEM}|R-88"}
    outcome(await post(triage, service_request_body(partner_id="R-88"), **ambiguous), 412, "multiple-matches")
    assert await _count(triage, Referral) == 5
    # Two retries racing under one condition: one creates, the other finds it.
    racing = service_request_body(partner_id="R-99")
    answers = await asyncio.gather(
        *(post(triage, racing, **{"If-None-Exist": f"identifier={PARTNER_SYSTEM}|R-99"}) for _ in range(2))
    )
    assert sorted(a.status_code for a in answers) == [200, 201]
    assert len({fhir_json(a, a.status_code)["id"] for a in answers}) == 1
    assert await _count(triage, Referral) == 6


async def test_search_parameters(triage: Triage) -> None:
    async def make(
        nhs: str, authored: str, partner_id: str | None, headers: dict[str, str] = EHR
    ) -> dict[str, Any]:
        organisation = GP if headers is EHR else OTHER_GP
        body = for_person(nhs, authoredOn=authored, partner_id=partner_id, organisation=organisation)
        return fhir_json(await post(triage, body, headers), 201)

    r1 = await make("9434765919", "2025-03-01T10:00:00Z", "A-1")
    r2 = await make(OTHER_NHS, "2025-03-02T23:30:00Z", "A-2")
    r3 = await make("9434765919", "2025-06-10T23:30:00Z", None)  # 00:30 on 11 June in London (BST)
    r4 = await make(nhs_number("401023221"), "2025-04-01T09:00:00Z", "A-1", OTHER_EHR)
    decided = await triage.client.post(
        f"/triage/referrals/{r2['id']}/decisions",
        json={"action": "decline", "route": "staying_well", "reason": "Better met by staying well"},
        headers=CLINICIAN,
    )
    assert decided.status_code == 200
    person_a, person_b = (r["subject"]["reference"] for r in (r1, r2))

    async def found(path: str, headers: dict[str, str] = EHR, **params: Any) -> list[str]:
        return ids(fhir_json(await get(triage, path, headers, **params)))

    sam = f"{NHS_NUMBER_SYSTEM}|9434765919"
    expected = {"ServiceRequest": [r3["id"], r1["id"]], "Task": [r3["id"], r1["id"]]}
    for resource_type, wanted in expected.items():
        for chain in ("patient.identifier", "patient:identifier", "subject.identifier", "subject:identifier"):
            assert await found(resource_type, **{chain: sam}) == wanted
        assert await found(resource_type, **{"patient.identifier": "9434765919"}) == wanted
        assert await found(resource_type, **{"patient.identifier": "https://other.example|9434765919"}) == []
        assert await found(resource_type, patient=person_a) == wanted
        assert await found(resource_type, patient=f"{person_a},{person_b}") == [r3["id"], r2["id"], r1["id"]]
        assert await found(resource_type, _id=f"{r1['id']},{r2['id']}") == [r2["id"], r1["id"]]
    assert await found("ServiceRequest", **{"requester.identifier": f"{ODS_SYSTEM}|{GP}"}) == [
        r3["id"], r2["id"], r1["id"]
    ]  # fmt: skip
    assert await found("ServiceRequest", **{"requester:identifier": OTHER_GP}) == []  # not theirs to see
    assert await found("ServiceRequest", CLINICIAN, **{"requester:identifier": OTHER_GP.lower()}) == [
        r4["id"]
    ]
    assert await found("ServiceRequest", **{"requester.identifier": f"{fhir.CHARITY_SYSTEM}|{GP}"}) == []
    assert await found("ServiceRequest", status="active") == [r3["id"], r1["id"]]
    assert await found("ServiceRequest", status="completed") == []  # every state: test_care_ended.py
    assert await found("ServiceRequest", status="revoked,completed") == [r2["id"]]
    assert await found("Task", status="requested") == [r3["id"], r1["id"]]
    assert await found("Task", status="completed") == [r2["id"]]
    assert await found("Task", focus=f"ServiceRequest/{r2['id']}") == [r2["id"]]
    assert await found("ServiceRequest", identifier=f"{PARTNER_SYSTEM}|A-1") == [r1["id"]]
    assert await found("ServiceRequest", CLINICIAN, identifier=f"{PARTNER_SYSTEM}|A-1") == [
        r4["id"],
        r1["id"],
    ]
    assert await found("ServiceRequest", identifier="A-2") == [r2["id"]]
    assert await found("ServiceRequest", identifier=f"{PARTNER_SYSTEM}|a-2") == []
    for wildcard in ("A_1", "A%", "%"):  # LIKE wildcards are matched literally
        assert await found("ServiceRequest", identifier=f"{PARTNER_SYSTEM}|{wildcard}") == []
        assert await found("ServiceRequest", identifier=wildcard) == []
    assert await found("ServiceRequest", identifier=f"{fhir.REFERRAL_SYSTEM}|{r3['id']}") == [r3["id"]]
    assert await found("ServiceRequest", identifier=r3["id"]) == [r3["id"]]
    # authored: prefixes, repeats (AND), precision, and days as London days.
    assert await found("ServiceRequest", authored=["ge2025-03-02", "lt2025-06-01"]) == [r2["id"]]
    assert await found("ServiceRequest", authored="2025-03-02") == [r2["id"]]
    assert await found("ServiceRequest", authored="2025-06-11") == [r3["id"]]
    assert await found("ServiceRequest", authored="2025-06-10") == []
    assert await found("ServiceRequest", authored="lt2025-03-02") == [r1["id"]]
    assert await found("ServiceRequest", authored="gt2025-03") == [r3["id"]]
    assert await found("ServiceRequest", authored="ne2025-03") == [r3["id"]]
    assert await found("ServiceRequest", authored="le2025-03-01T10:00:00Z") == [r1["id"]]
    assert await found("ServiceRequest", authored="lt2025-03-01T10:00:00Z") == []
    # Patients by NHS number or id; a partner finds only the people it referred.
    assert await found("Patient", identifier=sam) == [person_a.removeprefix("Patient/")]
    assert await found("Patient", _id=person_b.removeprefix("Patient/")) == [
        person_b.removeprefix("Patient/")
    ]
    assert await found("Patient", identifier=f"{NHS_NUMBER_SYSTEM}|{nhs_number('401023221')}") == []
    assert len(await found("Patient", CLINICIAN, identifier=nhs_number("401023221"))) == 1
    # Anything else is refused, not silently ignored.
    for path, params in (
        ("ServiceRequest", {"_sort": "authored"}),
        ("ServiceRequest", {"subject": person_a}),
        ("ServiceRequest", {"status:not": "active"}),
        ("Task", {"authored": "2025"}),
        ("Patient", {"name": "Sam"}),
    ):
        outcome(await get(triage, path, **params), 400, "not-supported")
    for path, params in (
        ("ServiceRequest", {"authored": "2025-13"}),
        ("ServiceRequest", {"authored": "2025-03-01T10:00"}),
        ("ServiceRequest", {"status": "bogus"}),
        ("ServiceRequest", {"patient": ""}),
        ("ServiceRequest", {"patient": "Group/1"}),
        ("Task", {"focus": "Patient/1"}),
        ("ServiceRequest", {"_count": "-1"}),
    ):
        assert (await get(triage, path, **params)).status_code == 400
    audits = [e["data"] for e in await triage.events("cmh.triage.audit.recorded")]
    assert any(a["action"] == "search" and a["resource_type"] == "Patient" for a in audits)


async def test_paging_links_walk_three_pages(triage: Triage) -> None:
    made = []
    for day in range(1, 6):
        body = service_request_body(authoredOn=f"2025-05-0{day}T12:00:00Z", partner_id=f"P-{day}")
        made.append(fhir_json(await post(triage, body), 201)["id"])
    newest_first = made[::-1]

    def links(bundle: dict[str, Any]) -> dict[str, str]:
        return {link["relation"]: link["url"] for link in bundle["link"]}

    page = fhir_json(await get(triage, "ServiceRequest", status="active", _count=2))
    seen = []
    for number in range(3):
        assert page["total"] == 5
        seen.extend(ids(page))
        relations = links(page)
        assert (
            "_offset=4" in relations["last"]
            and "status=active" in relations["next" if number < 2 else "last"]
        )
        assert ("previous" in relations) == (number > 0) and ("next" in relations) == (number < 2)
        if number == 1:
            assert "_offset=0" in relations["previous"] and "_offset=4" in relations["next"]
        if number < 2:
            page = fhir_json(await get(triage, relations["next"]))
    assert seen == newest_first and len(ids(page)) == 1
    previous = fhir_json(await get(triage, links(page)["previous"]))
    assert ids(previous) == newest_first[2:4]
    summary = fhir_json(await get(triage, "ServiceRequest", _count=0))
    assert summary["total"] == 5 and "entry" not in summary


async def test_refusals_are_operation_outcomes_and_partners_see_only_their_own(triage: Triage) -> None:
    outcome(await get(triage, "ServiceRequest", _format="xml"), 406, "not-supported")
    outcome(await get(triage, "Patient", {**EHR, "Accept": "application/fhir+xml"}), 406, "not-supported")
    outcome(
        await post(triage, service_request_body(), **{"Content-Type": "text/plain"}), 415, "not-supported"
    )
    outcome(await post(triage, "{not json"), 400, "invalid")
    outcome(await post(triage, "[]"), 422, "invalid")
    bad_patient = contained_patient(identifier=[{"system": NHS_NUMBER_SYSTEM, "value": "9434765918"}])
    unknown_need = [{"coding": [{"system": fhir.NEED_CODES, "code": "feeling_blue"}]}]
    cases = [
        (service_request_body(contained=[]), 422, "invalid", "ServiceRequest.subject"),
        (service_request_body(organisation=OTHER_GP), 403, "forbidden", "requester"),
        (service_request_body(reasonCode=unknown_need), 422, "code-invalid", "reasonCode[0]"),
        (service_request_body(patient=bad_patient), 422, "invalid", "Patient].identifier"),
        (service_request_body(status="draft"), 422, "code-invalid", "ServiceRequest.status"),
        (service_request_body(authoredOn="2999-01-01T00:00:00Z"), 422, "business-rule", "authoredOn"),
    ]
    for body, status, code, element in cases:
        answer = outcome(
            await post(triage, body, **{"Idempotency-Key": f"bad-{status}-{code}-{element}"}), status, code
        )
        text = json.dumps(answer)
        assert element in text and "9434765918" not in text and "feeling_blue" not in text
    assert await _count(triage, Referral) == 0 and await _count(triage, Person) == 0
    assert [e for e in await triage.events() if ".audit." not in e["type"]] == []

    # Partners see only what their organisation referred; clinicians see all.
    created = fhir_json(await post(triage, service_request_body()), 201)
    referral_id, person_path = created["id"], created["subject"]["reference"]
    for path in (f"ServiceRequest/{referral_id}", f"Task/{referral_id}", person_path):
        outcome(await get(triage, path, OTHER_EHR), 404, "not-found")
        assert (await get(triage, path, CLINICIAN)).status_code == 200
    nhs = f"{NHS_NUMBER_SYSTEM}|9434765919"
    for path, params in (
        ("ServiceRequest", {}),
        ("ServiceRequest", {"patient.identifier": nhs}),
        ("Task", {}),
        ("Patient", {"identifier": nhs}),
    ):
        assert fhir_json(await get(triage, path, OTHER_EHR, **params))["total"] == 0
        assert fhir_json(await get(triage, path, EHR, **params))["total"] == 1
        assert fhir_json(await get(triage, path, CLINICIAN, **params))["total"] == 1
    # Without the scope, or a token, nothing is stored either.
    reader = {"Authorization": f"Bearer {mint_token('referral:read', organisation=GP, kind='partner_ehr')}"}
    outcome(await post(triage, service_request_body(), reader), 403, "forbidden")
    outcome(await get(triage, "ServiceRequest", {}), 401, "login")
    assert await _count(triage, Referral) == 1
