"""Triage through its HTTP API, on SQLite and PostgreSQL with a real nats-server: intake with
screening and its rules, idempotency, bad input storing nothing, identity matching, decisions
(a decline needs an alternative), organisation binding, re-access, and the crisis queue."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from services.triage.models import Person, Referral
from shared.deps import service_state
from shared.events import make_event
from shared.http import public_url
from tests.triage.support import CLINICIAN, EHR, OTHER_EHR, Triage, nhs_number, referral


async def _count(triage: Triage, model: Any) -> int:
    async with triage.app.state.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_a_referral_is_screened_with_its_rules(triage: Triage) -> None:
    response = await triage.submit(referral())
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "received" and body["priority"] == 3 and body["priority_name"] == "routine"
    suggestion = body["suggestion"]
    assert suggestion["route"] == "front_door_primary" and suggestion["pathway"] == "adult-mh"
    assert suggestion["place"]["key"] == "lancashire" and suggestion["team"]["offer"] == "front_door_primary"
    assert body["rules"] and all(rule["id"] and rule["text"] for rule in body["rules"])
    public = public_url(service_state(triage.app).settings, f"/triage/referrals/{body['id']}")
    assert response.headers["location"] == public  # absolute, at the public address
    subjects = [e["type"] for e in await triage.events() if ".audit." not in e["type"]]
    assert subjects == ["cmh.triage.referral.received", "cmh.triage.referral.prioritised"]
    received = (await triage.events("cmh.triage.referral.received"))[0]["data"]
    assert "Sam" not in json.dumps(received) and "9434765919" not in json.dumps(received)  # no PII in events


async def test_idempotent_resubmission_creates_nothing_new(triage: Triage) -> None:
    first = await triage.submit(referral(), key="same-key")
    again = await triage.submit(referral(), key="same-key")
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    different = await triage.submit(referral(needs_text="Something else"), key="same-key")
    assert different.status_code == 409
    assert await _count(triage, Referral) == 1
    missing = await triage.client.post("/triage/referrals", json=referral(), headers=EHR)
    assert missing.status_code == 400 and missing.json()["type"].endswith("/idempotency-key-required")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"person": {"nhs_number": "9434765918"}}, "nhs_number"),
        ({"person": {"birth_date": "2999-01-01"}}, "birth_date"),
        ({"person": {"birth_date": "2020-01-01"}, "received_at": "2019-06-01T10:00:00+00:00"}, "received_at"),
        ({"person": {"postcode": "NOT A CODE"}}, "postcode"),
        ({"needs": ["feeling_blue"]}, "needs"),
        ({"risks": ["gremlins"]}, "risks"),
        ({"source": "telepathy"}, "source"),
        ({"needs_text": "x" * 4001}, "needs_text"),
        ({"consent_to_share": None}, "consent_to_share"),
    ],
)
async def test_bad_input_is_422_naming_the_field_and_stores_nothing(
    triage: Triage, overrides: dict[str, Any], field: str
) -> None:
    response = await triage.submit(referral(**overrides))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in json.dumps(response.json()["errors"])
    assert await _count(triage, Referral) == 0 and await _count(triage, Person) == 0
    assert await triage.events() == []


async def test_identity_matching_never_merges_silently(triage: Triage) -> None:
    first = (await triage.submit(referral())).json()
    by_nhs = (await triage.submit(referral(person={"postcode": "BB2 2DH"}))).json()
    assert by_nhs["person_id"] == first["person_id"]  # same NHS number: same person
    self_referral = {
        "nhs_number": None,
        "given_name": "Jo",
        "family_name": "Bloggs",
        "birth_date": "1985-07-01",
        "postcode": "LA9 4DL",
    }
    one = (await triage.submit(referral(source="self", person=self_referral))).json()
    two = (
        await triage.submit(
            referral(source="self", person={**self_referral, "given_name": " jo ", "family_name": "BLOGGS"})
        )
    ).json()
    assert two["person_id"] == one["person_id"] and two["possible_duplicates"] == []  # name, DOB, postcode
    moved = (
        await triage.submit(referral(source="self", person={**self_referral, "postcode": "FY1 1EJ"}))
    ).json()
    assert moved["person_id"] != one["person_id"] and moved["possible_duplicates"] == [one["person_id"]]
    flagged = (
        await triage.client.get("/triage/referrals", params={"possible_duplicate": "true"}, headers=CLINICIAN)
    ).json()
    assert [item["id"] for item in flagged["items"]] == [moved["id"]]
    other_nhs = (
        await triage.submit(referral(person={**self_referral, "nhs_number": nhs_number("401023213")}))
    ).json()
    assert other_nhs["person_id"] not in (one["person_id"], moved["person_id"])
    assert set(other_nhs["possible_duplicates"]) == {one["person_id"], moved["person_id"]}


async def test_partners_read_only_their_own_referrals_and_reads_are_audited(triage: Triage) -> None:
    mine = (await triage.submit(referral())).json()
    assert (await triage.client.get(f"/triage/referrals/{mine['id']}", headers=OTHER_EHR)).status_code == 404
    assert (await triage.client.get("/triage/referrals", headers=OTHER_EHR)).json()["total"] == 0
    read = await triage.client.get(f"/triage/referrals/{mine['id']}", headers=EHR)
    assert read.status_code == 200 and read.json()["person"]["given_name"] == "Sam"
    audits = [e["data"] for e in await triage.events("cmh.triage.audit.recorded")]
    assert any(a["action"] == "read" and a["person_ids"] == [mine["person_id"]] for a in audits)
    assert all("Sam" not in json.dumps(a) for a in audits)  # audit records hold no clinical content


async def test_decisions_accept_override_and_decline_needs_an_alternative(triage: Triage) -> None:
    body = (await triage.submit(referral())).json()
    path = f"/triage/referrals/{body['id']}/decisions"
    assert (await triage.client.post(path, json={"action": "accept"}, headers=EHR)).status_code == 403
    bare = await triage.client.post(
        path, json={"action": "decline", "reason": "Not for us"}, headers=CLINICIAN
    )
    assert bare.status_code == 422 and "alternative" in bare.json()["detail"]
    no_reason = await triage.client.post(
        path, json={"action": "override", "route": "focused_support"}, headers=CLINICIAN
    )
    assert no_reason.status_code == 422
    accepted = await triage.client.post(path, json={"action": "accept"}, headers=CLINICIAN)
    assert accepted.status_code == 200 and accepted.json()["status"] == "routed"
    routed = await triage.events("cmh.triage.referral.routed")
    assert (
        len(routed) == 1
        and routed[0]["data"]["route"] == "front_door_primary"
        and routed[0]["data"]["team_id"]
    )

    second = (await triage.submit(referral(person={"nhs_number": nhs_number("401023213")}))).json()
    path = f"/triage/referrals/{second['id']}/decisions"
    declined = await triage.client.post(
        path,
        json={"action": "decline", "route": "staying_well", "reason": "Better met by staying well"},
        headers=CLINICIAN,
    )
    assert declined.status_code == 200 and declined.json()["status"] == "closed"
    closed = (await triage.events("cmh.triage.referral.closed"))[0]["data"]
    assert closed["alternative_route"] == "staying_well"
    again = await triage.client.post(path, json={"action": "accept"}, headers=CLINICIAN)
    assert again.status_code == 409  # the lifecycle: a closed referral takes no decision


async def test_signposting_needs_consent_and_known_services(triage: Triage) -> None:
    no_consent = (await triage.submit(referral(needs=["housing"], consent_to_share=False))).json()
    assert no_consent["suggestion"]["route"] == "staying_well"
    path = f"/triage/referrals/{no_consent['id']}/decisions"
    refused = await triage.client.post(
        path,
        json={"action": "override", "route": "vcfse_signpost", "reason": "Housing support"},
        headers=CLINICIAN,
    )
    assert refused.status_code == 422 and "consent_to_share" in json.dumps(refused.json()["errors"])
    unknown = (
        await triage.submit(referral(needs=["housing"], person={"nhs_number": nhs_number("401023213")}))
    ).json()
    bad = await triage.client.post(
        f"/triage/referrals/{unknown['id']}/decisions",
        json={
            "action": "override",
            "route": "vcfse_signpost",
            "signposts": ["no-such-service"],
            "reason": "Housing",
        },
        headers=CLINICIAN,
    )
    assert bad.status_code == 422 and "signposts" in json.dumps(bad.json()["errors"])


async def test_reaccess_goes_to_the_named_workers_team(triage: Triage) -> None:
    first = (await triage.submit(referral())).json()
    team_id = first["suggestion"]["team"]["id"]
    now = datetime.now(UTC)
    discharge = make_event(
        "careplan", "episode", "discharged",
        {
            "episode_id": "episode-1", "referral_id": first["id"], "person_id": first["person_id"], "team_id": team_id,
            "named_worker_id": "practitioner-7", "status": "discharged", "version": 5,
            "discharged_at": (now - timedelta(days=30)).isoformat(), "reaccess_until": (now + timedelta(days=335)).isoformat(),
        },
    )  # fmt: skip
    js = await triage.app.state.broker.wait_connected()
    await js.publish(discharge.type, discharge.to_json())
    from tests.support import eventually

    async def discharged() -> bool:
        from services.triage.models import Discharge

        return await _count(triage, Discharge) == 1

    await eventually(discharged)
    again = (await triage.submit(referral(needs=["anxiety"]))).json()
    assert again["suggestion"]["route"] == "reaccess" and again["suggestion"]["team"]["id"] == team_id
    assert again["suggestion"]["reaccess_episode_id"] == "episode-1"
    assert again["suggestion"]["named_worker_id"] == "practitioner-7"
    # Straight back: routed at intake, without waiting for a triage decision.
    assert again["status"] == "routed" and again["route"] == "reaccess"
    routed = await triage.events("cmh.triage.referral.routed")
    assert [e["data"]["automatic"] for e in routed] == [True]
    assert routed[0]["data"]["named_worker_id"] == "practitioner-7"


async def test_crisis_queue_orders_by_deadline_and_records_contact(triage: Triage) -> None:
    urgent = (
        await triage.submit(
            referral(risks=["suicidal_ideation"]), path="/triage/crisis/referrals", headers=CLINICIAN
        )
    ).json()
    very_urgent = (
        await triage.submit(
            referral(risks=["recent_self_harm"], person={"nhs_number": nhs_number("401023213")}),
            path="/triage/crisis/referrals",
            headers=CLINICIAN,
        )
    ).json()
    assert (urgent["priority"], very_urgent["priority"]) == (2, 4)
    queue = (await triage.client.get("/triage/crisis/queue", headers=CLINICIAN)).json()
    assert [e["referral_id"] for e in queue["entries"]] == [very_urgent["id"], urgent["id"]]
    assert 235 <= queue["entries"][0]["minutes_remaining"] <= 240 and queue["entries"][0]["overdue"] is False
    contact_at = datetime.now(UTC).isoformat()
    contacted = await triage.client.post(
        f"/triage/crisis/referrals/{very_urgent['id']}/contact",
        json={"contact_at": contact_at},
        headers=CLINICIAN,
    )
    assert contacted.status_code == 200 and contacted.json()["response_minutes"] == 0
    queue = (await triage.client.get("/triage/crisis/queue", headers=CLINICIAN)).json()
    assert [e["referral_id"] for e in queue["entries"]] == [urgent["id"]]
    twice = await triage.client.post(
        f"/triage/crisis/referrals/{very_urgent['id']}/contact",
        json={"contact_at": contact_at},
        headers=CLINICIAN,
    )
    assert twice.status_code == 422
    before = await triage.client.post(
        f"/triage/crisis/referrals/{urgent['id']}/contact",
        json={"contact_at": "2000-01-01T00:00:00+00:00"},
        headers=CLINICIAN,
    )
    assert before.status_code == 422
    contacted_events = await triage.events("cmh.triage.referral.contacted")
    assert len(contacted_events) == 1 and contacted_events[0]["data"]["met"] is True
