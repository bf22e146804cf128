"""The wrong-person defect, end to end through the gateway with real services and a real
nats-server: two GP practices ("gp-ehr" and "other-gp-ehr") refer under one NHS number with
different names, birth dates and postcodes. The first practice's person is not rewritten (it reads
what it referred, not the other practice's name and postcode beside its own date of birth), the
second referral is flagged for identity review (native answer, worklist, FHIR Task) and the other
practice cannot read the person the NHS number matched. A clinician then changes the person
explicitly: versioned, and announced on the stream without any of the values."""

from __future__ import annotations

import json
from typing import Any

import httpx

from services.triage import fhir
from shared.fhir_terms import NHS_NUMBER_SYSTEM
from tests.e2e.conftest import Suite, read_models_filled
from tests.e2e.test_referral_flow import _published
from tests.support import eventually
from tests.triage.test_fhir_mapping import valid

NHS = "9434765919"


def _referral(**person: Any) -> dict[str, Any]:
    return {
        "person": {
            "nhs_number": NHS, "given_name": "Alex", "family_name": "Example", "birth_date": "1979-03-14",
            "postcode": "PR1 3BQ", "contact": {"phone": "07700 900456"}, **person,
        },
        "source": "gp",
        "needs": ["low_mood"],
        "consent_to_share": True,
    }  # fmt: skip


async def test_two_practices_one_nhs_number_never_rewrite_the_person(suite: Suite) -> None:
    await eventually(lambda: read_models_filled(suite.triage_app), timeout=30)
    gp = {"Authorization": f"Bearer {await suite.token('gp-ehr')}"}
    other = {"Authorization": f"Bearer {await suite.token('other-gp-ehr')}"}
    clinician = {
        "Authorization": f"Bearer {await suite.token('crisis-app')}",
        "X-End-User-Id": "clin-42",
        "X-End-User-Role": "R8000",
    }
    async with httpx.AsyncClient(base_url=suite.url, timeout=10) as http:
        first = await http.post(
            "/triage/referrals", json=_referral(), headers={**gp, "Idempotency-Key": "a-1"}
        )
        assert first.status_code == 201, first.text
        mine = first.json()
        wrong = _referral(
            given_name="Margaret", family_name="Thwaite", birth_date="1948-11-23", postcode="LA9 4DL"
        )
        second = await http.post("/triage/referrals", json=wrong, headers={**other, "Idempotency-Key": "b-1"})
        assert second.status_code == 201, second.text
        theirs = second.json()

        # Linked by NHS number but flagged, with the fields that disagree.
        assert theirs["person_id"] == mine["person_id"]
        assert theirs["identity_review"]["reasons"] == ["birth_date", "name", "postcode"]
        assert "I-identity-review" in [rule["id"] for rule in theirs["rules"]]

        # The seen defect, fixed: the first practice reads its own person, unchanged.
        read = (await http.get(f"/triage/referrals/{mine['id']}", headers=gp)).json()
        assert read["identity_review"] is None
        for view in (read["person"], read["person_as_referred"]):
            assert (view["given_name"], view["family_name"], view["birth_date"], view["postcode"]) == (
                "Alex", "Example", "1979-03-14", "PR1 3BQ",
            )  # fmt: skip
        # The other practice sees what it sent, and nothing of the person its NHS number matched.
        read_theirs = (await http.get(f"/triage/referrals/{theirs['id']}", headers=other)).json()
        assert read_theirs["person"] is None and read_theirs["person_as_referred"]["given_name"] == "Margaret"
        assert "Alex" not in json.dumps(read_theirs) and "PR1 3BQ" not in json.dumps(read_theirs)
        search = valid(
            (
                await http.get(
                    "/fhir/Patient", params={"identifier": f"{NHS_NUMBER_SYSTEM}|{NHS}"}, headers=other
                )
            ).json()
        )
        assert search.get("total", 0) == 0 and not search.get("entry")
        # FHIR callers see the flag on the Task.
        task = valid((await http.get(f"/fhir/Task/{theirs['id']}", headers=other)).json())
        assert {"url": fhir.IDENTITY_REVIEW_EXTENSION, "valueBoolean": True} in task["extension"]
        assert [i["valueCodeableConcept"]["coding"][0]["code"] for i in task["input"]] == [
            "birth_date", "name", "postcode",
        ]  # fmt: skip
        # The clinician's worklist finds it.
        flagged = (
            await http.get("/triage/referrals", params={"identity_review": "true"}, headers=clinician)
        ).json()
        assert [item["id"] for item in flagged["items"]] == [theirs["id"]]

        # Changing the person is its own act: If-Match, a reason, a new version.
        path = f"/triage/people/{mine['person_id']}"
        person = await http.get(path, headers=clinician)
        assert person.status_code == 200 and person.json()["given_name"] == "Alex"
        moved = await http.patch(
            path,
            json={"postcode": "PR2 5AB", "reason": "Confirmed with Alex at the practice: new address"},
            headers={**clinician, "If-Match": person.headers["etag"]},
        )
        assert moved.status_code == 200, moved.text
        assert moved.json()["version"] == 2 and moved.headers["etag"] == '"2"'
        versions = (await http.get(f"{path}/versions", headers=clinician)).json()
        assert [v["version"] for v in versions["items"]] == [1, 2]
        assert versions["items"][1]["changed_by"]["end_user_id"] == "clin-42"
        after = (await http.get(f"/triage/referrals/{mine['id']}", headers=gp)).json()
        assert (
            after["person"]["postcode"] == "PR2 5AB" and after["person_as_referred"]["postcode"] == "PR1 3BQ"
        )

    published = await eventually(lambda: _published(suite.settings, "cmh.triage.person.updated"), timeout=15)
    assert [m["data"]["fields"] for m in published] == [["postcode"]]
    assert published[0]["data"]["person_id"] == mine["person_id"] and published[0]["data"]["version"] == 2
    assert "PR2" not in json.dumps(published) and "Alex" not in json.dumps(published)  # no PII on the bus
