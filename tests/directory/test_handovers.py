"""Warm handovers through NATS: triage's signpost event (with consent) becomes a handover offered
to the partner running the service, once however often it is delivered; the partner accepts,
declines (with a reason) or completes it; another partner never sees it; reads are audited."""

from __future__ import annotations

from typing import Any

from nats.js.api import Header
from sqlalchemy import func, select

from services.directory import store
from services.directory.models import Handover, Place
from services.directory.schemas import ServiceProposal
from shared.events import make_event
from tests.directory.support import A, B, Directory, proposal
from tests.support import eventually


async def _service(directory: Directory) -> str:
    body = ServiceProposal.model_validate(proposal()).with_ids()
    async with directory.app.state.db.transaction() as session:
        await store.publish(session, body, identifier="1000001", scheme="GB-CHC", actor="test")
    return str(body.id)


async def _signpost(
    directory: Directory, service_id: str, *, consent: bool, copies: int = 1, referral: str = "ref-1"
) -> None:
    event = make_event(
        "triage",
        "handover",
        "requested",
        {
            "referral_id": referral,
            "person_id": "person-1",
            "consent_to_share": consent,
            "services": [{"service_id": service_id}],
            "person": {"name": "Sam Example", "phone": "07700 900123", "preferred_language": "English"},
            "needs": ["peer-support"],
            "note": "Would like to meet others with similar experiences.",
        },
    )
    js = await directory.app.state.broker.wait_connected()
    for copy in range(copies):
        # Distinct message ids: JetStream's de-duplication must not be what saves us here.
        await js.publish(event.type, event.to_json(), headers={Header.MSG_ID.value: f"{event.id}-{copy}"})


async def _count(directory: Directory) -> int:
    async with directory.app.state.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Handover)) or 0)


async def test_signposts_become_handovers_once_and_only_with_consent(directory: Directory) -> None:
    service_id = await _service(directory)
    await _signpost(directory, service_id, consent=False, referral="no-consent")
    await _signpost(directory, service_id, consent=True, copies=3)
    offered = await eventually(lambda: _list(directory, A))
    assert len(offered) == 1 and offered[0]["state"] == "offered" and offered[0]["referral_id"] == "ref-1"
    assert offered[0]["person"]["name"] == "Sam Example" and offered[0]["needs"] == ["peer-support"]
    await eventually(lambda: directory.events("cmh.directory.handover.updated"))
    assert await _count(directory) == 1


async def _list(directory: Directory, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = await directory.client.get("/directory/handovers", headers=headers)
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


async def test_partner_lifecycle_and_binding(directory: Directory) -> None:
    service_id = await _service(directory)
    await _signpost(directory, service_id, consent=True)
    handover = (await eventually(lambda: _list(directory, A)))[0]
    path = f"/directory/handovers/{handover['id']}"

    # Another partner sees nothing and can do nothing.
    assert await _list(directory, B) == []
    assert (await directory.client.get(path, headers=B)).status_code == 404
    assert (await directory.client.post(f"{path}/accept", headers=B)).status_code == 404
    # Both attempts are audited as denied, naming the handover and its person (issue 18).
    denied = [
        a["data"]
        for a in await directory.events("cmh.directory.audit.recorded")
        if a["data"]["outcome"] == "denied"
    ]
    assert [(d["action"], d["resource_ids"], d["person_ids"]) for d in denied] == [
        ("read", [handover["id"]], ["person-1"]), ("update", [handover["id"]], ["person-1"]),
    ]  # fmt: skip

    assert (await directory.client.post(f"{path}/complete", headers=A)).status_code == 409  # not accepted yet
    no_reason = await directory.client.post(f"{path}/decline", json={}, headers=A)
    assert no_reason.status_code == 409 and "reason" in no_reason.json()["detail"]
    accepted = await directory.client.post(f"{path}/accept", headers={**A, "If-Match": '"1"'})
    assert accepted.status_code == 200 and accepted.json()["state"] == "accepted"
    stale = await directory.client.post(f"{path}/complete", headers={**A, "If-Match": '"1"'})
    assert stale.status_code == 412
    completed = await directory.client.post(
        f"{path}/complete", json={"reason": "First session held"}, headers=A
    )
    assert completed.json()["state"] == "completed" and completed.json()["version"] == 3

    updates = [e["data"] for e in await directory.events("cmh.directory.handover.updated")]
    assert [u["state"] for u in updates] == ["offered", "accepted", "completed"]
    assert all("person" not in u and "Sam" not in str(u) for u in updates)  # no person data in events
    audits = await directory.events("cmh.directory.audit.recorded")
    assert any(
        a["data"]["resource_type"] == "Handover" and a["data"]["person_ids"] == ["person-1"] for a in audits
    )


async def test_decline_with_a_reason(directory: Directory) -> None:
    service_id = await _service(directory)
    await _signpost(directory, service_id, consent=True)
    handover = (await eventually(lambda: _list(directory, A)))[0]
    declined = await directory.client.post(
        f"/directory/handovers/{handover['id']}/decline",
        json={"reason": "Group is full until January"},
        headers=A,
    )
    assert declined.json()["state"] == "declined"
    assert declined.json()["reason"] == "Group is full until January"
    last = (await directory.events("cmh.directory.handover.updated"))[-1]["data"]
    # The partner's free text stays with the handover: the event's consumers read only the state.
    assert last["state"] == "declined" and "reason" not in last


async def test_registry_place_events_redraw_service_areas(directory: Directory) -> None:
    """A place's districts come from the registry's events; a service area naming the place follows."""
    body = ServiceProposal.model_validate(
        proposal(name="Blackpool only", service_areas=[{"name": "Blackpool", "place": "blackpool"}])
    ).with_ids()
    async with directory.app.state.db.transaction() as session:
        await store.publish(session, body, identifier="1000001", scheme="GB-CHC", actor="test")

    async def names(postcode: str) -> list[str]:
        page = (await directory.get("/service_at_locations", postcode=postcode)).json()
        return [item["service"]["name"] for item in page["contents"]]

    assert await names("FY1 1EJ") == ["Blackpool only"] and await names("LA9 4DL") == []
    # The registry moves LA9 into Blackpool's place (a restructure, for the test's sake).
    async with directory.app.state.db.session() as session:
        place = await session.scalar(select(Place).where(Place.key == "blackpool"))
        assert place is not None
    attributes = {
        "key": "blackpool",
        "name": "Blackpool",
        "upper_tier_council": "Blackpool",
        "postcode_districts": ["FY1", "LA9"],
    }
    event = make_event(
        "registry", "place", "upserted",
        {"id": place.id, "kind": "place", "version": 2, "timeline": [{"valid_from": "2020-01-01", "valid_to": None, "attributes": attributes}]},
        subject=place.id,
    )  # fmt: skip
    js = await directory.app.state.broker.wait_connected()
    await js.publish(event.type, event.to_json(), headers={Header.MSG_ID.value: event.id})
    await eventually(lambda: names("LA9 4DL"))
    assert await names("LA9 4DL") == ["Blackpool only"]
