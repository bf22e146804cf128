"""Identity through triage's HTTP API, on SQLite and PostgreSQL: a referral never rewrites the
person on file; an NHS number matching someone whose date of birth or name disagrees is flagged
for identity review (on the referral, in the worklist, on the FHIR Task) and screened on the date
of birth as referred, saying so; changing a person is an explicit, versioned, audited act; near
matches are flagged, never merged; names with control or invisible characters are refused."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sqlalchemy import func, select

from services.triage import fhir
from services.triage.models import Person, PersonVersion, Referral
from shared.fhir_terms import NHS_NUMBER_SYSTEM
from tests.triage.support import CLINICIAN, EHR, OTHER_EHR, OTHER_GP, Triage, nhs_number, referral
from tests.triage.test_fhir import fhir_json, outcome, post
from tests.triage.test_fhir_mapping import contained_patient, service_request_body
from tests.triage.test_readmodels import apply, service_event

CLINICIAN_AS = {**CLINICIAN, "X-End-User-Id": "uuid-clin-7", "X-End-User-Role": "R8000"}
OTHER_PERSON = {  # the seen defect: the same NHS number, someone else's name, birth date, postcode
    "given_name": "Margaret",
    "family_name": "Thwaite",
    "birth_date": "1948-11-23",
    "postcode": "LA9 4DL",
    "contact": {"phone": "07700 900999"},
    "sex": "female",
}


async def _count(triage: Triage, model: Any) -> int:
    async with triage.app.state.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def _read(triage: Triage, referral_id: str, headers: dict[str, str]) -> dict[str, Any]:
    response = await triage.client.get(f"/triage/referrals/{referral_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def _worklist(triage: Triage, **params: str) -> list[str]:
    response = await triage.client.get("/triage/referrals", params=params, headers=CLINICIAN)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def test_nhs_match_with_other_demographics_is_flagged(triage: Triage) -> None:
    first = (await triage.submit(referral())).json()
    response = await triage.submit(referral(person=OTHER_PERSON), OTHER_EHR)
    assert response.status_code == 201, response.text
    second = response.json()
    assert second["person_id"] == first["person_id"]  # linked by NHS number, never merged
    review = second["identity_review"]
    assert review["status"] == "open" and review["matched_by"] == "nhs_number"
    assert review["reasons"] == ["birth_date", "name", "postcode"]
    assert review["kinds"] == {"birth_date": ["different"], "name": ["different"], "postcode": ["different"]}
    assert first["identity_review"] is None
    # Screened on the date of birth as referred, and it says so.
    assert second["age"] >= 77 and second["suggestion"]["pathway"] == "older-adult-mh"
    rule = next(r for r in second["rules"] if r["id"] == "I-identity-review")
    assert "screened on the date of birth as referred" in rule["text"] and "to be confirmed" in rule["text"]
    assert "Margaret" not in json.dumps(second) and "1948" not in json.dumps(second["rules"])

    # The person on file is unchanged; each referral shows the person as it referred them.
    on_file = (await triage.client.get(f"/triage/people/{first['person_id']}", headers=CLINICIAN)).json()
    assert (on_file["given_name"], on_file["birth_date"], on_file["postcode"]) == (
        "Sam",
        "1990-04-02",
        "PR1 3BQ",
    )
    assert on_file["version"] == 1
    earlier = await _read(triage, first["id"], EHR)
    assert earlier["person_as_referred"]["given_name"] == "Sam" and earlier["person"]["postcode"] == "PR1 3BQ"
    clinician_view = await _read(triage, second["id"], CLINICIAN)
    assert clinician_view["person_as_referred"]["given_name"] == "Margaret"
    assert clinician_view["person_as_referred"]["birth_date"] == "1948-11-23"
    assert clinician_view["person"]["given_name"] == "Sam"  # beside the person on file
    # The other organisation sees what it sent, not the person its NHS number matched.
    theirs = await _read(triage, second["id"], OTHER_EHR)
    assert theirs["person"] is None and theirs["person_as_referred"]["family_name"] == "Thwaite"
    assert "Sam" not in json.dumps(theirs) and "PR1 3BQ" not in json.dumps(theirs)
    patient = await triage.client.get(f"/triage/fhir/Patient/{first['person_id']}", headers=OTHER_EHR)
    assert patient.status_code == 404
    person = await triage.client.get(f"/triage/people/{first['person_id']}", headers=OTHER_EHR)
    assert person.status_code == 404
    async with triage.app.state.db.session() as session:
        stored = await session.get(Person, first["person_id"])
        assert stored is not None and json.loads(stored.details)["given_name"] == "Sam"
    assert await triage.events("cmh.triage.person.updated") == []

    # The worklist finds it, and the Task tells FHIR callers.
    assert await _worklist(triage, identity_review="true") == [second["id"]]
    assert await _worklist(triage, identity_review="false") == [first["id"]]
    task = fhir_json(await triage.client.get(f"/triage/fhir/Task/{second['id']}", headers=OTHER_EHR))
    assert {"url": fhir.IDENTITY_REVIEW_EXTENSION, "valueBoolean": True} in task["extension"]
    inputs = [i["valueCodeableConcept"]["coding"][0]["code"] for i in task["input"]]
    assert inputs == ["birth_date", "name", "postcode"]
    assert "identity to be confirmed" in task["note"][0]["text"].lower()
    plain = fhir_json(await triage.client.get(f"/triage/fhir/Task/{first['id']}", headers=EHR))
    assert "extension" not in plain and "input" not in plain


async def test_transposed_birth_date_on_an_nhs_match_is_a_review(triage: Triage) -> None:
    await triage.submit(referral())
    swapped = (await triage.submit(referral(person={"birth_date": "1990-02-04"}))).json()
    assert swapped["identity_review"]["reasons"] == ["birth_date"]
    assert swapped["identity_review"]["kinds"] == {"birth_date": ["day_month_transposed"]}
    rule = next(r for r in swapped["rules"] if r["id"] == "I-identity-review")
    assert "day and month transposed" in rule["text"]


async def test_a_postcode_only_difference_is_information(triage: Triage) -> None:
    first = (await triage.submit(referral())).json()
    moved = (await triage.submit(referral(person={"postcode": "BB2 2DH"}))).json()
    assert moved["person_id"] == first["person_id"] and moved["identity_review"] is None
    assert "I-postcode-differs" in [r["id"] for r in moved["rules"]]
    assert moved["suggestion"]["identity"]["differs"] == ["postcode"]
    person = (await triage.client.get(f"/triage/people/{first['person_id']}", headers=EHR)).json()
    assert person["postcode"] == "PR1 3BQ" and person["version"] == 1  # not rewritten
    assert (await _read(triage, moved["id"], EHR))["person_as_referred"]["postcode"] == "BB2 2DH"
    assert await _worklist(triage, identity_review="true") == []


async def test_explicit_person_update_is_versioned_and_audited(triage: Triage) -> None:
    first = (await triage.submit(referral())).json()
    path = f"/triage/people/{first['person_id']}"
    change = {"postcode": "bb2 2dh", "reason": "Confirmed with the person by phone: moved house"}
    assert (await triage.client.patch(path, json=change, headers=CLINICIAN)).status_code == 428
    assert (
        await triage.client.patch(path, json=change, headers={**EHR, "If-Match": '"1"'})
    ).status_code == 403
    stale = await triage.client.patch(path, json=change, headers={**CLINICIAN, "If-Match": '"7"'})
    assert stale.status_code == 412
    no_reason = await triage.client.patch(
        path, json={"postcode": "BB2 2DH"}, headers={**CLINICIAN, "If-Match": '"1"'}
    )
    assert no_reason.status_code == 422 and "reason" in json.dumps(no_reason.json()["errors"])
    removing = await triage.client.patch(
        path, json={"given_name": None, "reason": "x"}, headers={**CLINICIAN, "If-Match": '"1"'}
    )
    assert removing.status_code == 422
    updated = await triage.client.patch(path, json=change, headers={**CLINICIAN_AS, "If-Match": '"1"'})
    assert updated.status_code == 200, updated.text
    assert updated.headers["etag"] == '"2"' and updated.json()["postcode"] == "BB2 2DH"
    assert updated.json()["given_name"] == "Sam"  # the rest as it was

    versions = (await triage.client.get(f"{path}/versions", headers=CLINICIAN)).json()
    assert versions["version"] == 2 and [v["version"] for v in versions["items"]] == [1, 2]
    created, changed = versions["items"]
    assert created["referral_id"] == first["id"] and created["previous"] is None
    assert created["new"]["given_name"] == "Sam" and created["changed_by"]["client_id"] == "gp-ehr"
    assert changed["fields"] == ["postcode"] and changed["reason"].startswith("Confirmed with the person")
    assert changed["previous"] == {"postcode": "PR1 3BQ"} and changed["new"] == {"postcode": "BB2 2DH"}
    assert changed["changed_by"] == {
        "client_id": "spa-clinician", "organisation": "RW5", "end_user_id": "uuid-clin-7", "end_user_role": "R8000",
    }  # fmt: skip
    assert (await triage.client.get(f"{path}/versions", headers=EHR)).status_code == 403

    # The earlier referral still shows the person as it referred them.
    earlier = await _read(triage, first["id"], EHR)
    assert (
        earlier["person_as_referred"]["postcode"] == "PR1 3BQ" and earlier["person"]["postcode"] == "BB2 2DH"
    )

    events = await triage.events("cmh.triage.person.updated")
    assert len(events) == 1 and events[0]["subject"] == first["person_id"]
    assert events[0]["data"]["fields"] == ["postcode"] and events[0]["data"]["version"] == 2
    assert "BB2" not in json.dumps(events[0]) and "PR1" not in json.dumps(events[0])  # no values in events
    audits = [e["data"] for e in await triage.events("cmh.triage.audit.recorded")]
    update = [a for a in audits if a["action"] == "update" and a["resource_type"] == "Person"]
    assert len(update) == 1 and update[0]["person_ids"] == [first["person_id"]]
    assert update[0]["end_user_id"] == "uuid-clin-7"
    assert any(a["action"] == "read" and a["resource_type"] == "PersonVersion" for a in audits)

    # Retried with the version it moved from: refused, nothing doubled.
    again = await triage.client.patch(path, json=change, headers={**CLINICIAN, "If-Match": '"1"'})
    assert again.status_code == 412 and await _count(triage, PersonVersion) == 2

    # An NHS number held by another person is refused (people are never merged here).
    other = (
        await triage.submit(referral(person={"nhs_number": nhs_number("401023213"), "given_name": "Jo"}))
    ).json()
    clash = await triage.client.patch(
        f"/triage/people/{other['person_id']}",
        json={"nhs_number": "9434765919", "reason": "typed from the letter"},
        headers={**CLINICIAN, "If-Match": '"1"'},
    )
    assert clash.status_code == 409
    bad_name = await triage.client.patch(
        path,
        json={"family_name": "Ex\u202eample", "reason": "spelling"},
        headers={**CLINICIAN, "If-Match": '"2"'},
    )
    assert bad_name.status_code == 422 and "family_name" in json.dumps(bad_name.json()["errors"])
    # A name change re-keys the matching: the next self-referral under the new name matches.
    renamed = await triage.client.patch(
        path,
        json={"family_name": "Example-Smith", "reason": "Name changed on marriage, seen on ID"},
        headers={**CLINICIAN, "If-Match": '"2"'},
    )
    assert renamed.status_code == 200 and renamed.json()["version"] == 3


SELF = {
    "nhs_number": None,
    "given_name": "Robert",
    "family_name": "Smith-Jones",
    "birth_date": "1985-07-03",
    "postcode": "LA9 4DL",
}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"birth_date": "1985-03-07"}, "day_month_transposed"),
        ({"given_name": "Robert James"}, "middle_name"),
        ({"family_name": "Jones", "postcode": "FY1 1EJ"}, "hyphenated_surname"),
        ({"given_name": "Bob"}, "nickname"),
        ({"given_name": "Smith-Jones", "family_name": "Robert"}, "given_family_swapped"),
    ],
)
async def test_near_matches_are_flagged_never_merged(
    triage: Triage, change: dict[str, str], reason: str
) -> None:
    first = (await triage.submit(referral(source="self", person=SELF))).json()
    near = (await triage.submit(referral(source="self", person={**SELF, **change}))).json()
    assert near["person_id"] != first["person_id"]  # never merged
    assert near["possible_duplicates"] == [first["person_id"]]
    flagged = near["suggestion"]["identity"]["possible_duplicates"]
    assert flagged[0]["person_id"] == first["person_id"] and reason in flagged[0]["reasons"]
    assert "I-possible-duplicate" in [r["id"] for r in near["rules"]]
    assert await _worklist(triage, possible_duplicate="true") == [near["id"]]
    assert await _count(triage, Person) == 2


async def test_an_exact_self_referral_still_matches(triage: Triage) -> None:
    first = (await triage.submit(referral(source="self", person=SELF))).json()
    again = (
        await triage.submit(referral(source="self", person={**SELF, "family_name": "smith jones"}))
    ).json()
    assert again["person_id"] == first["person_id"] and again["possible_duplicates"] == []
    assert again["identity_review"] is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("given_name", "S\u0000am"),
        ("family_name", "Ex\u202eelpma"),
        ("given_name", "S\u200bam"),
        ("family_name", "Example\u2066"),
        ("given_name", "Sa\u0085m"),
        ("given_name", "Sa\u0007m"),
    ],
)
async def test_names_with_control_characters_are_refused(triage: Triage, field: str, value: str) -> None:
    response = await triage.submit(referral(person={field: value}))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    errors = response.json()["errors"]
    assert any(e["location"][-1] == field and "not allowed" in e["message"] for e in errors)
    assert value not in response.text
    assert await _count(triage, Person) == 0 and await _count(triage, Referral) == 0


async def test_a_lone_surrogate_in_a_name_is_refused(triage: Triage) -> None:
    # Valid JSON (an escaped lone surrogate) that neither database could store as text.
    body = json.dumps(referral(person={"family_name": "Exa\ud800mple"}))
    response = await triage.client.post(
        "/triage/referrals",
        content=body,
        headers={**EHR, "Content-Type": "application/json", "Idempotency-Key": "surrogate"},
    )
    assert response.status_code == 422, response.text
    assert any(e["location"][-1] == "family_name" for e in response.json()["errors"])
    assert await _count(triage, Person) == 0


async def test_zero_width_joiner_in_a_name_is_accepted(triage: Triage) -> None:
    name = "\u0915\u094d\u200d\u0937\u093e"  # a Devanagari conjunct written with ZWJ
    response = await triage.submit(referral(person={"given_name": name, "family_name": "Example\u200c"}))
    assert response.status_code == 201, response.text
    read = await _read(triage, response.json()["id"], EHR)
    assert read["person_as_referred"]["given_name"] == name and read["person"]["given_name"] == name


@pytest.mark.parametrize("value", ["S\u0000am", "S\u202eam", "S\u200bam"])
async def test_fhir_names_with_control_characters_are_refused(triage: Triage, value: str) -> None:
    patient = contained_patient(name=[{"use": "official", "given": [value], "family": "Example"}])
    body = outcome(await post(triage, service_request_body(patient=patient)), 422, "invalid")
    assert any("ServiceRequest.contained[Patient].name.given" in i["diagnostics"] for i in body["issue"])
    assert value not in json.dumps(body)
    assert await _count(triage, Person) == 0


async def test_fhir_referral_with_a_mismatched_nhs_number_is_flagged_on_its_task(triage: Triage) -> None:
    await triage.submit(referral())
    patient = contained_patient(
        identifier=[{"system": NHS_NUMBER_SYSTEM, "value": "9434765919"}],
        name=[{"use": "official", "given": ["Margaret"], "family": "Thwaite"}],
        birthDate="1948-11-23",
    )
    created = fhir_json(
        await post(triage, service_request_body(patient=patient, organisation=OTHER_GP), OTHER_EHR), 201
    )
    task = fhir_json(await triage.client.get(f"/triage/fhir/Task/{created['id']}", headers=OTHER_EHR))
    assert {"url": fhir.IDENTITY_REVIEW_EXTENSION, "valueBoolean": True} in task["extension"]
    assert [i["valueCodeableConcept"]["coding"][0]["code"] for i in task["input"]] == ["birth_date", "name"]


async def test_a_handover_under_identity_review_carries_the_person_as_referred(triage: Triage) -> None:
    await apply(triage, service_event("published", 1))
    await triage.submit(referral())  # Sam Example, on file
    wrong = {**OTHER_PERSON, "postcode": "PR1 3BQ"}
    flagged = (await triage.submit(referral(needs=["housing"], person=wrong), OTHER_EHR)).json()
    assert flagged["identity_review"]["reasons"] == ["birth_date", "name"]
    assert flagged["suggestion"]["signposts"], flagged["rules"]
    decided = await triage.client.post(
        f"/triage/referrals/{flagged['id']}/decisions", json={"action": "accept"}, headers=CLINICIAN
    )
    assert decided.status_code == 200, decided.text
    handovers = await triage.events("cmh.triage.handover.requested")
    assert len(handovers) == 1
    person = handovers[0]["data"]["person"]
    assert person["name"] == "Margaret Thwaite" and person["phone"] == "07700 900999"
    assert "Sam" not in json.dumps(handovers[0])


async def test_two_updates_from_one_version_make_one_version(triage: Triage) -> None:
    first = (await triage.submit(referral())).json()
    path = f"/triage/people/{first['person_id']}"
    answers = await asyncio.gather(
        *(
            triage.client.patch(
                path, json={"postcode": code, "reason": "moved"}, headers={**CLINICIAN, "If-Match": '"1"'}
            )
            for code in ("BB2 2DH", "FY1 1EJ")
        )
    )
    assert sorted(a.status_code for a in answers) == [200, 412]
    versions = (await triage.client.get(f"{path}/versions", headers=CLINICIAN)).json()["items"]
    assert [v["version"] for v in versions] == [1, 2]
    assert len(await triage.events("cmh.triage.person.updated")) == 1


async def test_a_referral_in_identity_review_is_not_routed_until_settled(triage: Triage) -> None:
    """Routing would open an episode under the person on file: it waits for the review (a crisis
    does not); settling it is explicit, audited and in the decision history."""
    first = (await triage.submit(referral())).json()
    second = (await triage.submit(referral(person=OTHER_PERSON), OTHER_EHR)).json()
    path = f"/triage/referrals/{second['id']}"
    held = await triage.client.post(f"{path}/decisions", json={"action": "accept"}, headers=CLINICIAN)
    assert held.status_code == 409 and "identity" in held.json()["detail"]
    no_reason = await triage.client.post(f"{path}/identity", json={"outcome": "confirmed"}, headers=CLINICIAN)
    assert no_reason.status_code == 422
    partner = await triage.client.post(
        f"{path}/identity", json={"outcome": "different_person", "reason": "x"}, headers=OTHER_EHR
    )
    assert partner.status_code == 403
    settled = await triage.client.post(
        f"{path}/identity",
        json={"outcome": "different_person", "reason": "Spoke to the practice: wrong NHS number keyed"},
        headers={**CLINICIAN, "X-End-User-Id": "spa.nurse"},
    )
    assert settled.status_code == 200, settled.text
    body = settled.json()
    assert body["person_id"] != first["person_id"] and body["identity_review"]["status"] == "different_person"
    async with triage.app.state.db.session() as session:
        moved = await session.get(Person, body["person_id"])
        assert (
            moved is not None
            and moved.nhs_number is None
            and json.loads(moved.details)["given_name"] == "Margaret"
        )
        on_file = await session.get(Person, first["person_id"])
        assert on_file is not None and json.loads(on_file.details)["given_name"] == "Sam"  # untouched
    again = await triage.client.post(
        f"{path}/identity", json={"outcome": "confirmed", "reason": "x"}, headers=CLINICIAN
    )
    assert again.status_code == 409
    routed = await triage.client.post(f"{path}/decisions", json={"action": "accept"}, headers=CLINICIAN)
    assert routed.status_code == 200 and routed.json()["status"] == "routed"
    history = (await triage.client.get(f"{path}/history", headers=CLINICIAN)).json()["items"]
    assert [i["action"] for i in history] == ["received", "identity_relinked", "accept"]
    assert history[1]["end_user"]["id"] == "spa.nurse"
    settled_event = (await triage.events("cmh.triage.referral.identity_settled"))[0]["data"]
    assert settled_event["previous_person_id"] == first["person_id"] and "Margaret" not in json.dumps(
        settled_event
    )


async def test_a_crisis_in_identity_review_is_routed_regardless(triage: Triage) -> None:
    await triage.submit(referral())
    crisis = (
        await triage.submit(
            referral(person=OTHER_PERSON, risks=["suicidal_intent"]),
            path="/triage/crisis/referrals",
            headers=CLINICIAN,
        )
    ).json()
    assert crisis["identity_review"]["status"] == "open"
    routed = await triage.client.post(
        f"/triage/referrals/{crisis['id']}/decisions", json={"action": "accept"}, headers=CLINICIAN
    )
    assert routed.status_code == 200 and routed.json()["identity_review"]["status"] == "open"
