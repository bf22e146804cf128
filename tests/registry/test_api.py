"""The registry service through its HTTP API, on SQLite and PostgreSQL with a real nats-server:
the seeded LSC structure, resolve, effective-dated changes and as-at reads, concurrency, the rules
that refuse bad input (and store nothing), and one event per change."""

from __future__ import annotations

from typing import Any

import pytest

from services.registry.seed import seed
from tests.registry.support import ADMIN, NETWORK, READ, Registry, team_attributes
from tests.support import mint_token


async def test_seeded_structure_lists_and_reads(registry: Registry) -> None:
    places = (await registry.client.get("/registry/places", headers=READ)).json()
    assert places["total"] == 4
    assert {p["attributes"]["key"] for p in places["items"]} == {
        "blackburn-with-darwen", "blackpool", "lancashire", "south-cumbria",
    }  # fmt: skip
    rw5 = (await registry.client.get("/registry/organisations", params={"code": "rw5"}, headers=READ)).json()
    assert rw5["total"] == 1 and rw5["items"][0]["attributes"]["kind"] == "provider_trust"
    page = (
        await registry.client.get("/registry/teams", params={"per_page": 10, "page": 2}, headers=READ)
    ).json()
    assert page["total"] == 45 and len(page["items"]) == 10
    one = await registry.client.get(f"/registry/networks/{NETWORK['the-bay']}", headers=READ)
    assert one.status_code == 200 and one.headers["etag"] == '"1"'
    assert one.json()["status"] == "active"


async def test_resolve_through_the_api(registry: Registry) -> None:
    response = await registry.client.get(
        "/registry/resolve",
        params={
            "postcode": "la94dl",
            "age": 70,
            "offer": "crisis_response",
            "at": "2026-11-25T21:59:00+00:00",
        },
        headers=READ,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["postcode"] == "LA9 4DL" and body["place"]["key"] == "south-cumbria"
    assert body["network"]["key"] == "the-bay" and body["pathway"]["key"] == "older-adult-mh"
    assert body["teams"][0]["open"] and body["teams"][0]["reasons"]
    out = await registry.client.get("/registry/resolve", params={"postcode": "SW1A 1AA"}, headers=READ)
    assert out.status_code == 200 and out.json()["out_of_area"] is True
    bad = await registry.client.get("/registry/resolve", params={"postcode": "not a postcode"}, headers=READ)
    assert bad.status_code == 422 and bad.json()["errors"][0]["location"] == ["query", "postcode"]
    naive = await registry.client.get(
        "/registry/resolve", params={"postcode": "BB1 1AA", "at": "2026-01-01T10:00:00"}, headers=READ
    )
    assert naive.status_code == 422


async def test_team_moved_between_networks_reads_as_at_either_side(registry: Registry) -> None:
    created = await registry.create(
        "teams",
        team_attributes(coverage=["LA1", "LA2"], network_id=NETWORK["the-bay"]),
        valid_from="2025-01-01",
    )
    assert created.status_code == 201, created.text
    team_id, tag = created.json()["id"], created.headers["etag"]
    # From 1 April 2026 the team belongs to Pennine Lancashire and covers Blackburn instead.
    moved = await registry.client.put(
        f"/registry/teams/{team_id}",
        json={"attributes": team_attributes(), "effective_from": "2026-04-01"},
        headers={**ADMIN, "If-Match": tag},
    )
    assert moved.status_code == 200, moved.text
    assert moved.headers["etag"] == '"2"'

    before = (
        await registry.client.get(f"/registry/teams/{team_id}", params={"as_at": "2026-03-31"}, headers=READ)
    ).json()
    after = (
        await registry.client.get(f"/registry/teams/{team_id}", params={"as_at": "2026-04-01"}, headers=READ)
    ).json()
    assert before["attributes"]["network_id"] == NETWORK["the-bay"] and before["valid_to"] == "2026-04-01"
    assert (
        after["attributes"]["network_id"] == NETWORK["pennine-lancashire"]
        and after["valid_from"] == "2026-04-01"
    )
    bay_then = await registry.client.get(
        "/registry/teams",
        params={"ref_id": NETWORK["the-bay"], "as_at": "2026-03-31", "name": "drop-in"},
        headers=READ,
    )
    bay_now = await registry.client.get(
        "/registry/teams",
        params={"ref_id": NETWORK["the-bay"], "as_at": "2026-04-01", "name": "drop-in"},
        headers=READ,
    )
    assert bay_then.json()["total"] == 1 and bay_now.json()["total"] == 0
    resolved_before = await registry.client.get(
        "/registry/resolve",
        params={"postcode": "LA1 1AA", "offer": "outreach", "at": "2026-03-31T10:00:00+01:00"},
        headers=READ,
    )
    assert "blackburn-drop-in" in {t["key"] for t in resolved_before.json()["teams"]}
    resolved_after = await registry.client.get(
        "/registry/resolve",
        params={"postcode": "LA1 1AA", "offer": "outreach", "at": "2026-04-02T10:00:00+01:00"},
        headers=READ,
    )
    assert "blackburn-drop-in" not in {t["key"] for t in resolved_after.json()["teams"]}

    history = (await registry.client.get(f"/registry/teams/{team_id}/history", headers=READ)).json()
    assert [(h["change"], h["status"]) for h in history] == [
        ("created", "superseded"), ("updated", "retired"), ("updated", "active"),
    ]  # fmt: skip
    assert history[-1]["recorded_by"] == "registry-admin"


async def test_concurrency_with_etags(registry: Registry) -> None:
    created = await registry.create("teams", team_attributes())
    team_id = created.json()["id"]
    body = {"attributes": team_attributes(caseload_capacity=60)}
    missing = await registry.client.put(f"/registry/teams/{team_id}", json=body, headers=ADMIN)
    assert missing.status_code == 428
    first = await registry.client.put(
        f"/registry/teams/{team_id}", json=body, headers={**ADMIN, "If-Match": '"1"'}
    )
    assert first.status_code == 200 and first.json()["attributes"]["caseload_capacity"] == 60
    stale = await registry.client.put(
        f"/registry/teams/{team_id}",
        json={"attributes": team_attributes(caseload_capacity=70)},
        headers={**ADMIN, "If-Match": '"1"'},
    )
    assert stale.status_code == 412 and stale.headers["etag"] == '"2"'


async def test_retire_sets_valid_to_and_keeps_history(registry: Registry) -> None:
    created = await registry.create("teams", team_attributes(), valid_from="2025-01-01")
    team_id = created.json()["id"]
    retired = await registry.client.post(
        f"/registry/teams/{team_id}/retire",
        json={"valid_to": "2026-01-01"},
        headers={**ADMIN, "If-Match": '"1"'},
    )
    assert retired.status_code == 200 and retired.json()["valid_to"] == "2026-01-01"
    assert retired.json()["status"] == "retired"
    gone = await registry.client.get(
        f"/registry/teams/{team_id}", params={"as_at": "2026-06-01"}, headers=READ
    )
    assert gone.status_code == 404
    still = await registry.client.get(
        f"/registry/teams/{team_id}", params={"as_at": "2025-06-01"}, headers=READ
    )
    assert still.status_code == 200
    history = (await registry.client.get(f"/registry/teams/{team_id}/history", headers=READ)).json()
    assert [h["change"] for h in history] == ["created", "retired"]


async def _practitioner(registry: Registry, staff_id: str = "LSC-001") -> str:
    created = await registry.create(
        "practitioners",
        {
            "staff_id": staff_id,
            "name": "Dr Amina Shah",
            "profession": "psychiatrist",
            "registration": {"body": "GMC", "number": "7012345"},
        },
        valid_from="2024-01-01",
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


@pytest.mark.parametrize(
    ("collection", "attributes", "validity", "field"),
    [
        (
            "organisations",
            {"kind": "gp_practice", "code": "A8100", "code_system": "ods", "name": "Bad practice"},
            {},
            ["body", "attributes"],
        ),
        (
            "organisations",
            {"kind": "provider_trust", "code": "QE1", "code_system": "ods", "name": "Not a trust"},
            {},
            ["body", "attributes"],
        ),
        ("teams", team_attributes(coverage=["BB1", "FY1"]), {}, ["body", "attributes", "coverage"]),
        (
            "teams",
            team_attributes(),
            {"valid_from": "2026-05-01", "valid_to": "2026-04-01"},
            ["body", "valid_to"],
        ),
        ("teams", team_attributes(pathways=["dermatology"]), {}, ["body", "attributes", "pathways"]),
        ("teams", team_attributes(network_id="no-such-network"), {}, ["body", "attributes", "network_id"]),
    ],
)
async def test_bad_input_is_refused_naming_the_field_and_stores_nothing(
    registry: Registry,
    collection: str,
    attributes: dict[str, Any],
    validity: dict[str, str],
    field: list[str],
) -> None:
    rows, events = await registry.rows(), len(await registry.events())
    response = await registry.create(collection, attributes, **validity)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["location"][: len(field)] == field
    assert await registry.rows() == rows and len(await registry.events()) == events


async def test_overlapping_leadership_and_practitioner_in_retired_team_are_refused(
    registry: Registry,
) -> None:
    first = await _practitioner(registry, "LSC-001")
    second = await _practitioner(registry, "LSC-002")
    role = {"role": "medical_director", "network_id": NETWORK["fylde-coast"]}
    held = await registry.create(
        "leadership-roles", {**role, "practitioner_id": first}, valid_from="2024-04-01", valid_to="2026-04-01"
    )
    assert held.status_code == 201, held.text
    clash = await registry.create(
        "leadership-roles", {**role, "practitioner_id": second}, valid_from="2026-03-01"
    )
    assert clash.status_code == 422 and clash.json()["errors"][0]["location"] == ["body", "valid_from"]
    handover = await registry.create(
        "leadership-roles", {**role, "practitioner_id": second}, valid_from="2026-04-01"
    )
    assert handover.status_code == 201  # back to back is fine

    team = (await registry.create("teams", team_attributes(), valid_from="2025-01-01")).json()
    await registry.client.post(
        f"/registry/teams/{team['id']}/retire",
        json={"valid_to": "2026-01-01"},
        headers={**ADMIN, "If-Match": '"1"'},
    )
    rows = await registry.rows()
    joined = await registry.create(
        "memberships", {"practitioner_id": first, "team_id": team["id"]}, valid_from="2026-02-01"
    )
    assert joined.status_code == 422 and joined.json()["errors"][0]["location"] == [
        "body",
        "attributes",
        "team_id",
    ]
    open_ended = await registry.create(
        "memberships", {"practitioner_id": first, "team_id": team["id"]}, valid_from="2025-06-01"
    )
    assert open_ended.status_code == 422  # runs past the team's retirement
    assert await registry.rows() == rows
    bounded = await registry.create(
        "memberships",
        {"practitioner_id": first, "team_id": team["id"]},
        valid_from="2025-06-01",
        valid_to="2026-01-01",
    )
    assert bounded.status_code == 201


async def test_one_event_per_change_with_the_whole_timeline(registry: Registry) -> None:
    before = len(await registry.events("cmh.registry.team.upserted"))
    created = await registry.create("teams", team_attributes(), valid_from="2025-01-01")
    team_id = created.json()["id"]
    same = await registry.client.put(
        f"/registry/teams/{team_id}", json={"attributes": team_attributes(), "effective_from": "2026-01-01"},
        headers={**ADMIN, "If-Match": '"1"'},
    )  # fmt: skip
    assert same.status_code == 200 and same.headers["etag"] == '"1"'  # no change, no version, no event
    await registry.client.put(
        f"/registry/teams/{team_id}", json={"attributes": team_attributes(caseload_capacity=10), "effective_from": "2026-01-01"},
        headers={**ADMIN, "If-Match": '"1"'},
    )  # fmt: skip
    await registry.client.post(
        f"/registry/teams/{team_id}/retire",
        json={"valid_to": "2027-01-01"},
        headers={**ADMIN, "If-Match": '"2"'},
    )
    upserted = [e for e in await registry.events("cmh.registry.team.upserted") if e["subject"] == team_id]
    retired = [e for e in await registry.events("cmh.registry.team.retired") if e["subject"] == team_id]
    assert len(await registry.events("cmh.registry.team.upserted")) == before + 2
    assert [e["data"]["version"] for e in upserted] == [1, 2] and [e["data"]["version"] for e in retired] == [
        3
    ]
    timeline = retired[0]["data"]["timeline"]
    assert [(t["valid_from"], t["valid_to"], t["attributes"]["caseload_capacity"]) for t in timeline] == [
        ("2025-01-01", "2026-01-01", 40), ("2026-01-01", "2027-01-01", 10),
    ]  # fmt: skip
    assert timeline[0]["attributes"]["opening_hours"]["weekly"]["tue"] == [
        {"opens": "17:00:00", "closes": "21:00:00"}
    ]


async def test_reseeding_changes_nothing(registry: Registry) -> None:
    events = len(await registry.events())
    async with registry.app.state.db.transaction() as session:
        report = await seed(session)
    assert (report.created, report.updated, report.unchanged) == (0, 0, 76)
    assert len(await registry.events()) == events


async def test_reading_needs_registry_read_and_writing_registry_admin(registry: Registry) -> None:
    assert (await registry.client.get("/registry/places")).status_code == 401
    other = {"Authorization": f"Bearer {mint_token('referral:read')}"}
    assert (await registry.client.get("/registry/places", headers=other)).status_code == 403
    assert (await registry.create("teams", team_attributes())).status_code == 201
    write = await registry.client.post(
        "/registry/teams", json={"attributes": team_attributes(key="x")}, headers=READ
    )
    assert write.status_code == 403
