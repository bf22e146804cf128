"""Careplan's FHIR R4 views (EpisodeOfCare, CarePlan) on SQLite and PostgreSQL: every resource and
Bundle validates against the R4 models of `fhir.resources` (R4B's EpisodeOfCare, CarePlan, Bundle
and OperationOutcome are R4's); the referring partner and the provider read an episode, another
partner finds nothing; searches, paging, the plan's lifecycle, errors as OperationOutcome, and the
events partners are notified from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from contracts.clocks import calendar_days
from services.careplan import fhir, store
from services.careplan.models import Episode, EpisodeRecord
from shared.deps import service_state
from shared.events import make_event
from shared.http import public_url
from tests.careplan.conftest import Careplan
from tests.fhir_conformance import valid
from tests.support import mint_token, outbox_events
from tests.triage.support import registry_events

REFERRER_ORG = "P81001"  # a GP practice


def _token(
    kind: str, organisation: str, scopes: str = "careplan:read", client_id: str = "c"
) -> dict[str, str]:
    token = mint_token(scopes, client_id=client_id, organisation=organisation, kind=kind)
    return {"Authorization": f"Bearer {token}"}


PROVIDER = _token("crisis_app", "RW5", "careplan:read careplan:write", "lscft")  # writes, sees all
PROVIDER_EHR = _token("partner_ehr", "RW5", client_id="lscft-ehr")  # bound, but provides the team
REFERRER = _token("partner_ehr", REFERRER_ORG, client_id="gp-ehr")
OTHER = _token("partner_ehr", "RXN", client_id="rxn-ehr")
OTHER_VCFSE = _token("vcfse_partner", "X9Z9Z", client_id="charity")
TEAM = next(
    e.data["id"]
    for e in registry_events(kinds=("team",))
    if e.data["timeline"][0]["attributes"]["key"] == "central-lancashire-front-door-primary"
)
BASE = "http://careplan/careplan/fhir"


def outcome(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = valid(response.json())
    assert body["resourceType"] == "OperationOutcome"
    return body


async def _open(
    careplan: Careplan,
    referral_id: str,
    *,
    person: str = "person-1",
    referrer: str | None = REFERRER_ORG,
    received_at: datetime | None = None,
    opened_at: datetime | None = None,
) -> str:
    received_at = received_at or datetime.now(UTC) - timedelta(days=10)
    data = {
        "referral_id": referral_id, "person_id": person, "received_at": received_at.isoformat(),
        # Triage routed it an hour after receipt: the episode opens then (plans cannot precede it).
        "decided_at": (received_at + timedelta(hours=1)).isoformat(),
        "route": "front_door_primary", "team_id": TEAM, "network_id": "n", "place": "lancashire",
        "pathway": "adult-mh", "priority": 3, "age": 40, "status": "routed", "version": 2,
    }  # fmt: skip
    if referrer is not None:
        data["referring_organisation"] = referrer
    async with careplan.app.state.db.transaction() as session:
        await store.open_from_routed(session, make_event("triage", "referral", "routed", data))
    async with careplan.app.state.db.transaction() as session:
        episode = await session.scalar(select(Episode).where(Episode.referral_id == referral_id))
        assert episode is not None
        if opened_at is not None:
            episode.opened_at = opened_at
        return episode.id


async def _get(careplan: Careplan, path: str, headers: dict[str, str], **params: Any) -> Any:
    return await careplan.client.get(f"/careplan/fhir/{path}", params=params, headers=headers)


async def _ok(careplan: Careplan, path: str, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = await _get(careplan, path, headers, **params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    return valid(response.json())


def _ids(bundle: dict[str, Any]) -> list[str]:
    return [entry["resource"]["id"] for entry in bundle.get("entry", [])]


async def _post(careplan: Careplan, episode_id: str, sub: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await careplan.client.post(
        f"/careplan/episodes/{episode_id}/{sub}", json=body, headers=PROVIDER
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _plan(at: datetime) -> dict[str, Any]:
    return {
        "at": at.isoformat(),
        "needs": ["Sleep", "Work"],
        "goals": ["To get back to my allotment", "Sleep through the night"],
        "crisis_plan": "Call the crisis line; my sister knows the plan.",
        "contingency_plan": "If my worker is away, the duty worker calls me.",
        "responsibilities": [
            {"who": "Named worker", "what": "Weekly call"},
            {"who": "Allotment society", "what": "Wednesday sessions", "partner_service_id": "svc-42"},
        ],
        "review_date": (at + timedelta(days=90)).date().isoformat(),
    }


# --- EpisodeOfCare: who sees it ------------------------------------------------------------------


async def test_the_referrer_and_the_provider_read_the_episode_another_partner_finds_nothing(
    careplan: Careplan,
) -> None:
    episode_id = await _open(careplan, "ref-seen", person="person-seen")
    response = await _get(careplan, f"EpisodeOfCare/{episode_id}", REFERRER)
    assert response.status_code == 200 and response.headers["etag"] == 'W/"1"'
    episode = valid(response.json())
    assert episode["resourceType"] == "EpisodeOfCare" and episode["id"] == episode_id
    assert episode["status"] == "active" and "statusHistory" not in episode
    assert episode["meta"]["versionId"] == "1" and episode["meta"]["lastUpdated"].endswith("+00:00")
    assert episode["identifier"] == [{"system": fhir.EPISODE_SYSTEM, "value": episode_id}]
    assert episode["patient"] == {"reference": "Patient/person-seen"}
    assert episode["referralRequest"] == [{"reference": "ServiceRequest/ref-seen"}]
    assert episode["managingOrganization"] == {
        "type": "Organization",
        "identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "RW5"},
    }
    assert [t["coding"][0]["code"] for t in episode["type"]] == ["front_door_primary", "adult-mh"]
    assert [t["coding"][0]["system"] for t in episode["type"]] == [fhir.ROUTE_CODES, fhir.PATHWAY_CODES]
    assert set(episode["period"]) == {"start"} and "careManager" not in episode
    (clock,) = episode["extension"]
    assert clock["url"] == fhir.PLAN_CLOCK_EXTENSION
    assert clock["extension"] == [
        {"url": "state", "valueCoding": {"system": fhir.CLOCK_STATE_CODES, "code": "not_started", "display": "Not started"}}
    ]  # fmt: skip

    for headers in (PROVIDER, PROVIDER_EHR):  # the provider's clinicians, and its own EHR (owner)
        assert (await _ok(careplan, f"EpisodeOfCare/{episode_id}", headers))["id"] == episode_id
    for headers in (OTHER, OTHER_VCFSE):
        body = outcome(await _get(careplan, f"EpisodeOfCare/{episode_id}", headers), 404)
        assert body["issue"][0]["code"] == "not-found"
        assert (await _ok(careplan, "EpisodeOfCare", headers, patient="Patient/person-seen"))["total"] == 0
        assert (await _ok(careplan, "EpisodeOfCare", headers))["total"] == 0
    bundle = await _ok(careplan, "EpisodeOfCare", REFERRER, patient="Patient/person-seen")
    assert bundle["total"] == 1 and _ids(bundle) == [episode_id]
    public = public_url(service_state(careplan.app).settings, "/fhir")  # never careplan's own base
    assert bundle["entry"][0]["fullUrl"] == f"{public}/EpisodeOfCare/{episode_id}"

    audits = [a["data"] for a in await outbox_events(careplan.app, "cmh.careplan.audit.recorded")]
    reads = [a for a in audits if a["resource_type"] == "EpisodeOfCare" and a["action"] == "read"]
    assert {(a["client_id"], a["outcome"]) for a in reads} == {
        ("gp-ehr", "success"), ("lscft", "success"), ("lscft-ehr", "success"),
        ("rxn-ehr", "denied"), ("charity", "denied"),
    }  # fmt: skip
    assert all(a["resource_ids"] == [episode_id] and a["person_ids"] == ["person-seen"] for a in reads)
    searches = [a for a in audits if a["resource_type"] == "EpisodeOfCare" and a["action"] == "search"]
    assert [a["resource_ids"] for a in searches if a["client_id"] == "gp-ehr"] == [[episode_id]]
    assert all(a["resource_ids"] == [] for a in searches if a["client_id"] == "rxn-ehr")


async def test_an_episode_without_a_known_referrer_is_the_providers_alone(careplan: Careplan) -> None:
    episode_id = await _open(careplan, "ref-anon", person="person-anon", referrer=None)
    assert (await _get(careplan, f"EpisodeOfCare/{episode_id}", REFERRER)).status_code == 404
    assert (await _get(careplan, f"EpisodeOfCare/{episode_id}", PROVIDER_EHR)).status_code == 200
    outcome(await _get(careplan, "EpisodeOfCare/no-such-episode", PROVIDER), 404)


# --- EpisodeOfCare: searching --------------------------------------------------------------------


async def test_episode_of_care_search_by_patient_status_referral_date_and_id(careplan: Careplan) -> None:
    day = lambda d: datetime(2026, 3, d, 12, 0, tzinfo=UTC)  # noqa: E731
    received = datetime(2026, 2, 20, 9, 0, tzinfo=UTC)
    a = await _open(careplan, "ref-a", person="pa", received_at=received, opened_at=day(1))
    b = await _open(careplan, "ref-b", person="pb", received_at=received, opened_at=day(2))
    c = await _open(careplan, "ref-c", person="pc", received_at=received, opened_at=day(3), referrer="RXN")
    async with careplan.app.state.db.transaction() as session:
        episode = await session.get(Episode, b)
        assert episode is not None
        episode.status, episode.discharged_at = "discharged", day(4)

    async def ids(headers: dict[str, str] = PROVIDER, **params: Any) -> list[str]:
        return _ids(await _ok(careplan, "EpisodeOfCare", headers, **params))

    assert await ids() == [a, b, c]  # in the order they opened
    assert await ids(REFERRER) == [a, b]  # the referrer's own only
    assert await ids(patient="Patient/pa,Patient/pc") == [a, c]  # comma: any of
    assert await ids(patient=f"{BASE}/Patient/pb") == [b]  # an absolute reference
    assert await ids(patient="pc") == [c]  # a bare id
    assert await ids(patient=["Patient/pa", "Patient/pb"]) == []  # repeated: all of
    assert await ids(status="active") == [a, c]
    assert await ids(status="finished") == [b]
    assert await ids(status=f"{fhir.EPISODE_OF_CARE_STATUS_SYSTEM}|finished,planned") == [b]
    assert await ids(status="https://example.org/other|active") == []
    assert await ids(status="cancelled") == []  # a valid status the suite never uses
    assert await ids(**{"incoming-referral": "ServiceRequest/ref-c"}) == [c]
    assert await ids(REFERRER, **{"incoming-referral": "ServiceRequest/ref-c"}) == []
    assert await ids(_id=f"{a},{c}") == [a, c]
    assert await ids(date="2026-03-02") == [b]  # opened that (London) day
    assert await ids(date="ge2026-03-02") == [b, c]
    assert await ids(date="lt2026-03-02") == [a]
    assert await ids(date="ne2026-03-02") == [a, c]
    assert await ids(date=["gt2026-03-01", "le2026-03-02"]) == [b]
    assert await ids(date="2026-03") == [a, b, c]
    assert await ids(date="eq2026-03-03T12:00:00Z") == [c]
    assert await ids(date="2026-04,2026-03-01") == [a]
    # Discharged: finished, with its active history, and period end.
    finished = await _ok(careplan, f"EpisodeOfCare/{b}", PROVIDER)
    assert finished["status"] == "finished" and finished["period"]["end"] == day(4).isoformat()
    assert finished["statusHistory"] == [
        {"status": "active", "period": {"start": day(2).isoformat(), "end": day(4).isoformat()}}
    ]


async def test_paging_links_follow_the_callers_base(careplan: Careplan) -> None:
    opened = [await _open(careplan, f"ref-page-{n}", person=f"pp{n}") for n in range(5)]
    gateway = {**PROVIDER, "X-Forwarded-Fhir-Base": "https://api.example.nhs.uk/fhir"}
    first = await _ok(careplan, "EpisodeOfCare", gateway, _count=2)
    assert first["total"] == 5 and len(first["entry"]) == 2
    links = {link["relation"]: link["url"] for link in first["link"]}
    assert set(links) == {"self", "first", "next", "last"}
    assert links["next"] == "https://api.example.nhs.uk/fhir/EpisodeOfCare?_count=2&_offset=2"
    assert links["last"].endswith("_offset=4")
    assert first["entry"][0]["fullUrl"].startswith("https://api.example.nhs.uk/fhir/EpisodeOfCare/")
    seen = _ids(first)
    offset: int | None = 2
    while offset is not None:
        page = await _ok(careplan, "EpisodeOfCare", PROVIDER, _count=2, _offset=offset)
        seen += _ids(page)
        relations = {link["relation"]: link["url"] for link in page["link"]}
        assert "previous" in relations
        offset = int(relations["next"].rsplit("=", 1)[1]) if "next" in relations else None
    assert seen == opened
    counted = await _ok(careplan, "EpisodeOfCare", PROVIDER, _count=0)
    assert counted["total"] == 5 and not counted.get("entry")
    beyond = await _ok(careplan, "EpisodeOfCare", PROVIDER, _offset=50)
    assert beyond["total"] == 5 and not beyond.get("entry")


# --- CarePlan: the plan's lifecycle --------------------------------------------------------------


async def test_care_plan_is_absent_then_draft_then_active_then_completed(careplan: Careplan) -> None:
    now = datetime.now(UTC)
    episode_id = await _open(careplan, "ref-plan", person="person-plan", received_at=now - timedelta(days=10))
    path = f"CarePlan/{episode_id}"
    outcome(await _get(careplan, path, REFERRER), 404)
    assert (await _ok(careplan, "CarePlan", REFERRER, patient="Patient/person-plan"))["total"] == 0

    await _post(careplan, episode_id, "assessments", {
        "started_at": (now - timedelta(days=6)).isoformat(), "completed_at": (now - timedelta(days=5)).isoformat(),
    })  # fmt: skip
    await _post(careplan, episode_id, "plans", _plan(now - timedelta(days=4)))
    response = await _get(careplan, path, REFERRER)
    assert response.status_code == 200 and response.headers["etag"] == 'W/"3"'
    draft = valid(response.json())
    assert draft["status"] == "draft" and draft["intent"] == "plan" and draft["id"] == episode_id
    assert draft["title"] == "Personalised care plan" and "period" not in draft and "extension" not in draft
    assert draft["category"][0]["coding"][0] == {
        "system": fhir.CARE_PLAN_CATEGORY_CODES, "code": "personalised-care-plan", "display": "Personalised care plan",
    }  # fmt: skip
    assert draft["subject"] == {"reference": "Patient/person-plan"}
    assert draft["supportingInfo"] == [{"reference": f"EpisodeOfCare/{episode_id}"}]
    assert draft["author"]["identifier"]["value"] == "RW5"
    assert draft["created"] == (now - timedelta(days=4)).isoformat(timespec="seconds")
    assert [n["text"] for n in draft["note"]] == [
        "Need: Sleep", "Need: Work", "Goal: To get back to my allotment", "Goal: Sleep through the night",
        "Crisis plan: Call the crisis line; my sister knows the plan.",
        "Contingency plan: If my worker is away, the duty worker calls me.",
    ]  # fmt: skip
    details = [a["detail"] for a in draft["activity"]]
    assert [d.get("description") for d in details] == [
        "Named worker: Weekly call", "Allotment society: Wednesday sessions",
        "Review of the care plan with the person",
    ]  # fmt: skip
    assert {d["status"] for d in details} == {"not-started"}
    assert details[1]["performer"][0]["identifier"] == {
        "system": fhir.DIRECTORY_SERVICE_SYSTEM,
        "value": "svc-42",
    }
    review_day = (now - timedelta(days=4) + timedelta(days=90)).date().isoformat()
    assert details[2]["scheduledPeriod"] == {"start": review_day, "end": review_day}

    agreed_at = now - timedelta(days=3)
    await _post(
        careplan, episode_id, "plans/agreement", {"agreed_at": agreed_at.isoformat(), "how_agreed": "video"}
    )
    active = await _ok(careplan, path, REFERRER)
    assert active["status"] == "active" and active["meta"]["versionId"] == "4"
    assert active["period"] == {"start": agreed_at.isoformat(timespec="seconds")}
    assert active["extension"] == [
        {
            "url": fhir.PLAN_AGREEMENT_EXTENSION,
            "extension": [
                {"url": "howAgreed", "valueCoding": {"system": fhir.HOW_AGREED_CODES, "code": "video", "display": "Video"}},
                {"url": "agreed", "valueDateTime": agreed_at.isoformat(timespec="seconds")},
            ],
        }
    ]  # fmt: skip
    assert {a["detail"]["status"] for a in active["activity"][:2]} == {"in-progress"}
    episode = await _ok(careplan, f"EpisodeOfCare/{episode_id}", REFERRER)
    clock = {part["url"]: part for part in episode["extension"][0]["extension"]}
    assert clock["state"]["valueCoding"]["code"] == "met"
    assert clock["daysElapsed"]["valueInteger"] == calendar_days(now - timedelta(days=5), agreed_at)

    # A review after the plan moves the next review date.
    await _post(
        careplan,
        episode_id,
        "reviews",
        {"at": (now - timedelta(days=2)).isoformat(), "next_review": "2030-01-31"},
    )
    reviewed = await _ok(careplan, path, REFERRER)
    assert reviewed["activity"][-1]["detail"]["scheduledPeriod"] == {
        "start": "2030-01-31",
        "end": "2030-01-31",
    }

    discharged_at = now - timedelta(days=1)
    await _post(
        careplan, episode_id, "discharge", {"at": discharged_at.isoformat(), "reason": "treatment_complete"}
    )
    completed = await _ok(careplan, path, REFERRER)
    assert completed["status"] == "completed" and completed["meta"]["versionId"] == "6"
    assert completed["period"]["end"] == discharged_at.isoformat(timespec="seconds")
    assert {a["detail"]["status"] for a in completed["activity"]} == {"unknown", "cancelled"}
    finished = await _ok(careplan, f"EpisodeOfCare/{episode_id}", REFERRER)
    assert finished["status"] == "finished" and finished["meta"]["versionId"] == "6"

    # Searches, bound like reads.
    assert _ids(await _ok(careplan, "CarePlan", REFERRER, status="completed")) == [episode_id]
    assert _ids(await _ok(careplan, "CarePlan", REFERRER, status="active,draft")) == []
    assert _ids(await _ok(careplan, "CarePlan", PROVIDER, _id=episode_id, patient="Patient/person-plan")) == [
        episode_id
    ]
    assert (await _ok(careplan, "CarePlan", OTHER))["total"] == 0
    outcome(await _get(careplan, path, OTHER), 404)
    audits = [a["data"] for a in await outbox_events(careplan.app, "cmh.careplan.audit.recorded")]
    assert any(
        a["resource_type"] == "CarePlan" and a["action"] == "read" and a["client_id"] == "gp-ehr"
        for a in audits
    )
    assert any(a["resource_type"] == "CarePlan" and a["action"] == "search" for a in audits)


async def test_a_plan_never_agreed_is_revoked_at_discharge_and_searches_find_each_status(
    careplan: Careplan,
) -> None:
    now = datetime.now(UTC)
    ids = {}
    for name in ("draft", "active", "revoked", "none"):
        ids[name] = await _open(
            careplan, f"ref-{name}", person=f"p-{name}", received_at=now - timedelta(days=10)
        )
        if name != "none":
            await _post(careplan, ids[name], "plans", _plan(now - timedelta(days=4)))
    await _post(careplan, ids["active"], "plans/agreement", {
        "agreed_at": (now - timedelta(days=3)).isoformat(), "how_agreed": "declined_to_sign",
        "declined_to_sign_reason": "prefers not to sign",
    })  # fmt: skip
    await _post(careplan, ids["revoked"], "discharge", {
        "at": (now - timedelta(days=1)).isoformat(), "reason": "moved_away", "without_plan_reason": "moved away",
    })  # fmt: skip
    revoked = await _ok(careplan, f"CarePlan/{ids['revoked']}", REFERRER)
    assert revoked["status"] == "revoked" and set(revoked["period"]) == {"end"}
    assert {a["detail"]["status"] for a in revoked["activity"]} == {"cancelled"}
    everything = await _ok(careplan, "CarePlan", PROVIDER)
    assert everything["total"] == 3 and set(_ids(everything)) == {ids["draft"], ids["active"], ids["revoked"]}
    for status in ("draft", "active", "revoked"):
        assert _ids(await _ok(careplan, "CarePlan", PROVIDER, status=status)) == [ids[status]]
    assert _ids(await _ok(careplan, "CarePlan", PROVIDER, status="on-hold")) == []
    assert _ids(
        await _ok(careplan, "CarePlan", PROVIDER, status=f"{fhir.CARE_PLAN_STATUS_SYSTEM}|active")
    ) == [ids["active"]]
    outcome(await _get(careplan, f"CarePlan/{ids['none']}", PROVIDER), 404)


async def test_the_named_worker_is_the_care_manager_by_staff_id(careplan: Careplan) -> None:
    def upserted(record_id: str, kind: str, attributes: dict[str, Any]) -> Any:
        timeline = [{"valid_from": "2020-01-01", "valid_to": None, "attributes": attributes}]
        return make_event(
            "registry", kind, "upserted", {"id": record_id, "kind": kind, "version": 1, "timeline": timeline}
        )

    async with careplan.app.state.db.transaction() as session:
        await store.apply_registry_event(
            session, upserted("prac-1", "practitioner", {"staff_id": "LSC-0042", "name": "Alex Worker"})
        )
        await store.apply_registry_event(
            session,
            upserted(
                "mem-1",
                "membership",
                {"practitioner_id": "prac-1", "team_id": TEAM, "role": "care_coordinator"},
            ),
        )
    episode_id = await _open(careplan, "ref-worker", person="person-worker")
    response = await careplan.client.put(
        f"/careplan/episodes/{episode_id}/named-worker", json={"practitioner_id": "prac-1"}, headers=PROVIDER
    )
    assert response.status_code == 200, response.text
    episode = await _ok(careplan, f"EpisodeOfCare/{episode_id}", REFERRER)
    assert episode["careManager"] == {
        "type": "Practitioner",
        "identifier": {"system": fhir.STAFF_SYSTEM, "value": "LSC-0042"},
    }
    assert episode["meta"]["versionId"] == "2"


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("EpisodeOfCare", {"_format": "xml"}, 406, "not-supported"),
        ("CarePlan", {"_format": "application/fhir+xml"}, 406, "not-supported"),
        ("EpisodeOfCare/anything", {"_format": "xml"}, 406, "not-supported"),
        ("EpisodeOfCare", {"name": "Sam"}, 400, "invalid"),
        ("EpisodeOfCare", {"patient:missing": "true"}, 400, "invalid"),
        ("CarePlan", {"date": "2026"}, 400, "invalid"),  # not a CarePlan parameter here
        ("CarePlan", {"incoming-referral": "ServiceRequest/x"}, 400, "invalid"),
        ("EpisodeOfCare", {"status": "open"}, 400, "code-invalid"),  # the native word, not FHIR's
        ("CarePlan", {"status": "finished"}, 400, "code-invalid"),
        ("EpisodeOfCare", {"patient": "Practitioner/x"}, 400, "invalid"),
        ("EpisodeOfCare", {"patient": "Patient/a,"}, 400, "invalid"),
        ("EpisodeOfCare", {"patient": ""}, 400, "invalid"),
        ("EpisodeOfCare", {"patient": "Patient/a b"}, 400, "invalid"),
        ("EpisodeOfCare", {"incoming-referral": "Task/x"}, 400, "invalid"),
        ("EpisodeOfCare", {"date": "yesterday"}, 400, "invalid"),
        ("EpisodeOfCare", {"date": "2026-02-30"}, 400, "invalid"),
        ("EpisodeOfCare", {"date": "ap2026"}, 400, "invalid"),
        ("EpisodeOfCare", {"_count": "many"}, 400, "invalid"),
        ("EpisodeOfCare", {"_offset": "-1"}, 400, "invalid"),
        ("CarePlan", {"_id": "CarePlan/a,EpisodeOfCare/b"}, 400, "invalid"),
    ],
)
async def test_bad_requests_are_operation_outcomes(
    careplan: Careplan, path: str, params: dict[str, str], status: int, code: str
) -> None:
    body = outcome(await _get(careplan, path, PROVIDER, **params), status)
    assert body["issue"][0]["code"] == code
    for value in params.values():
        if len(value) > 3:
            assert value not in body["issue"][0]["diagnostics"]  # never echoed


async def test_accept_xml_and_no_token_are_refused_as_operation_outcomes(careplan: Careplan) -> None:
    xml = {**PROVIDER, "Accept": "application/fhir+xml"}
    outcome(await careplan.client.get("/careplan/fhir/CarePlan", headers=xml), 406)
    outcome(await careplan.client.get("/careplan/fhir/CarePlan"), 401)
    no_scope = _token("partner_ehr", REFERRER_ORG, "referral:read")
    outcome(await careplan.client.get("/careplan/fhir/EpisodeOfCare", headers=no_scope), 403)
    # JSON asked for in any of its spellings is served.
    assert (await _get(careplan, "EpisodeOfCare", PROVIDER, _format="json")).status_code == 200
    fhir_json = {**PROVIDER, "Accept": "application/fhir+json"}
    assert (await careplan.client.get("/careplan/fhir/EpisodeOfCare", headers=fhir_json)).status_code == 200


# --- the events partners are told from -----------------------------------------------------------


async def test_events_carry_the_referrer_version_status_and_whether_the_plan_is_agreed(
    careplan: Careplan,
) -> None:
    now = datetime.now(UTC)
    episode_id = await _open(
        careplan, "ref-events", person="person-events", received_at=now - timedelta(days=10)
    )
    (opened,) = await outbox_events(careplan.app, "cmh.careplan.episode.opened")
    assert {k: opened["data"][k] for k in ("referring_organisation", "version", "status", "plan_agreed")} == {
        "referring_organisation": REFERRER_ORG, "version": 1, "status": "open", "plan_agreed": False,
    }  # fmt: skip
    await _post(careplan, episode_id, "plans", _plan(now - timedelta(days=4)))
    await _post(
        careplan,
        episode_id,
        "plans/agreement",
        {"agreed_at": (now - timedelta(days=3)).isoformat(), "how_agreed": "in_person"},
    )
    (agreed,) = await outbox_events(careplan.app, "cmh.careplan.plan.agreed")
    assert {k: agreed["data"][k] for k in ("referring_organisation", "version", "status", "plan_agreed")} == {
        "referring_organisation": REFERRER_ORG, "version": 3, "status": "open", "plan_agreed": True,
    }  # fmt: skip
    await _post(
        careplan,
        episode_id,
        "discharge",
        {"at": (now - timedelta(days=1)).isoformat(), "reason": "treatment_complete"},
    )
    (discharged,) = await outbox_events(careplan.app, "cmh.careplan.episode.discharged")
    assert (discharged["data"]["version"], discharged["data"]["status"]) == (4, "discharged")
    # Every record's event carries the episode's version after it; the CarePlan shows the same.
    recorded = [
        e["data"]["version"]
        for e in await outbox_events(careplan.app)
        if e["type"].endswith(".recorded") and "episode_id" in e["data"]
    ]
    assert recorded == [2, 3, 4]
    plan = await _ok(careplan, f"CarePlan/{episode_id}", REFERRER)
    assert plan["meta"]["versionId"] == "4"


# --- pure ----------------------------------------------------------------------------------------


def test_no_plan_no_care_plan_and_periods_never_run_backwards() -> None:
    opened = datetime(2026, 3, 5, 9, 0, tzinfo=UTC)
    episode = Episode(
        id="e1", referral_id="r1", person_id="p1", route="staying_well", priority=3, status="discharged",
        opened_at=opened, referral_received_at=opened - timedelta(days=9), spell_started_at=opened,
        age_at_referral=30, version=7, discharged_at=opened - timedelta(days=1),  # a late entry
    )  # fmt: skip
    assert fhir.care_plan(episode, None, None, last_updated=opened) is None
    resource = valid(fhir.episode_of_care(episode, last_updated=opened))
    assert resource["period"] == {"start": "2026-03-04T09:00:00+00:00", "end": "2026-03-04T09:00:00+00:00"}
    assert "managingOrganization" not in resource and [t["coding"][0]["code"] for t in resource["type"]] == [
        "staying_well"
    ]
    plan = EpisodeRecord(
        seq=1,
        episode_id="e1",
        kind="plan",
        at=opened,
        recorded_by="x",
        data='{"crisis_plan": "c", "contingency_plan": "d"}',
    )
    minimal = valid(fhir.care_plan(episode, plan, None, last_updated=opened) or {})
    assert minimal["status"] == "revoked" and "activity" not in minimal and len(minimal["note"]) == 2
