"""A ServiceRequest's status in FHIR's meaning (issue 20): `active` while the care it asked for is
under way, `completed` when the episode of care it is in ends (its own, or the open one it was
linked to as new information), whichever order careplan's events arrive in; and a search by status
finds exactly what a read shows, for every state a referral can be in."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import update

from contracts.vocabulary import Route
from services.triage import readmodels
from services.triage.domain.decisions import ReferralStatus
from services.triage.models import Referral
from shared.events import make_event
from shared.fhir_terms import SERVICE_REQUEST_STATUSES, service_request_status
from tests.triage.support import CLINICIAN, EHR, Triage, referral

BASE = "/triage/fhir"


async def _routed(triage: Triage, **body: Any) -> dict[str, Any]:
    created = (await triage.submit(referral(**body))).json()
    decided = await triage.client.post(
        f"/triage/referrals/{created['id']}/decisions", json={"action": "accept"}, headers=CLINICIAN
    )
    assert decided.status_code == 200, decided.text
    return dict(decided.json())


async def _request(triage: Triage, referral_id: str) -> tuple[dict[str, Any], str]:
    read = await triage.client.get(f"{BASE}/ServiceRequest/{referral_id}", headers=EHR)
    assert read.status_code == 200, read.text
    return read.json(), read.headers["etag"]


async def _careplan(triage: Triage, verb: str, **data: Any) -> None:
    """One of careplan's episode events, applied as triage's consumer applies it."""
    event = make_event("careplan", "episode", verb, data)
    async with triage.app.state.db.transaction() as session:
        if verb == "discharged":
            await readmodels.apply_discharge_event(session, event)
        else:
            await readmodels.apply_episode_event(session, event)


def _episode(referral: dict[str, Any], episode_id: str, version: int, status: str) -> dict[str, Any]:
    return {
        "episode_id": episode_id, "referral_id": referral["id"], "person_id": referral["person_id"],
        "team_id": referral.get("team_id", "team-x"), "status": status, "version": version,
    }  # fmt: skip


def _discharge(at: datetime) -> dict[str, Any]:
    return {"discharged_at": at.isoformat(), "reaccess_until": (at + timedelta(days=365)).isoformat()}


async def test_routed_care_is_active_until_its_episode_ends_and_then_completed(triage: Triage) -> None:
    routed = await _routed(triage)
    linked = await _routed(triage, needs_text="New information from the GP")
    request, etag = await _request(triage, routed["id"])
    assert request["status"] == "active" and etag == 'W/"2"'

    await _careplan(triage, "opened", **_episode(routed, "episode-1", 1, "open"))
    await _careplan(
        triage, "linked", **_episode(routed, "episode-1", 2, "open"), linked_referral_id=linked["id"]
    )
    assert (await _request(triage, routed["id"]))[0]["status"] == "active"

    at = datetime.now(UTC).replace(microsecond=0)
    await _careplan(triage, "discharged", **_episode(routed, "episode-1", 3, "discharged"), **_discharge(at))
    for referral_id in (routed["id"], linked["id"]):
        request, etag = await _request(triage, referral_id)
        # A new version: a partner holding the old one sees the change (and a stale If-Match fails).
        assert request["status"] == "completed" and etag == 'W/"3"', (referral_id, request, etag)
        native = (await triage.client.get(f"/triage/referrals/{referral_id}", headers=EHR)).json()
        assert native["episode_id"] == "episode-1" and datetime.fromisoformat(native["care_ended_at"]) == at
    completed = [e["data"] for e in await triage.events("cmh.triage.referral.completed")]
    assert sorted(e["referral_id"] for e in completed) == sorted([routed["id"], linked["id"]])
    assert {(e["status"], e["route"], e["version"], e["episode_id"]) for e in completed} == {
        ("routed", "front_door_primary", 3, "episode-1")
    }

    # Redelivered, the discharge changes nothing more.
    await _careplan(triage, "discharged", **_episode(routed, "episode-1", 3, "discharged"), **_discharge(at))
    assert (await _request(triage, routed["id"]))[1] == 'W/"3"'
    assert len(await triage.events("cmh.triage.referral.completed")) == 2


async def test_the_discharge_may_arrive_before_the_episode_events(triage: Triage) -> None:
    """Discharges and the other episode events come on two consumers: either order ends the care."""
    routed = await _routed(triage)
    linked = await _routed(triage, needs_text="More from the GP")
    at = datetime.now(UTC).replace(microsecond=0)
    await _careplan(triage, "discharged", **_episode(routed, "episode-2", 3, "discharged"), **_discharge(at))
    await _careplan(triage, "opened", **_episode(routed, "episode-2", 1, "open"))
    await _careplan(
        triage, "linked", **_episode(routed, "episode-2", 2, "open"), linked_referral_id=linked["id"]
    )
    for referral_id in (routed["id"], linked["id"]):
        assert (await _request(triage, referral_id))[0]["status"] == "completed"


async def test_a_closed_referral_stays_revoked_when_its_episode_ends(triage: Triage) -> None:
    routed = await _routed(triage)
    await _careplan(triage, "opened", **_episode(routed, "episode-3", 1, "open"))
    closed = await triage.client.post(
        f"/triage/referrals/{routed['id']}/decisions",
        json={"action": "close", "reason": "Moved away"},
        headers=CLINICIAN,
    )
    assert closed.status_code == 200, closed.text
    at = datetime.now(UTC)
    await _careplan(triage, "discharged", **_episode(routed, "episode-3", 2, "discharged"), **_discharge(at))
    request, etag = await _request(triage, routed["id"])
    assert request["status"] == "revoked" and etag == 'W/"3"'  # the close's version, nothing after
    assert await triage.events("cmh.triage.referral.completed") == []


async def test_a_search_by_status_finds_exactly_what_a_read_shows(triage: Triage) -> None:
    """Every (status, route, care ended) a referral can have: read, and searched by each status."""
    states = list(
        itertools.product(
            [status.value for status in ReferralStatus], [None, *(r.value for r in Route)], (False, True)
        )
    )
    ids = []
    for index, (status, route, ended) in enumerate(states):
        created = (await triage.submit(referral(needs_text=f"State {index}"))).json()
        ids.append(created["id"])
        async with triage.app.state.db.transaction() as session:
            await session.execute(
                update(Referral)
                .where(Referral.id == created["id"])
                .values(status=status, route=route, care_ended_at=datetime.now(UTC) if ended else None)
            )
    found: dict[str, set[str]] = {}
    for fhir_status in SERVICE_REQUEST_STATUSES:
        bundle = (
            await triage.client.get(
                f"{BASE}/ServiceRequest", params={"status": fhir_status, "_count": 500}, headers=EHR
            )
        ).json()
        found[fhir_status] = {entry["resource"]["id"] for entry in bundle.get("entry", [])}
    for referral_id, (status, route, ended) in zip(ids, states, strict=True):
        wanted = service_request_status(status, route, ended)
        assert (await _request(triage, referral_id))[0]["status"] == wanted
        assert {s for s, members in found.items() if referral_id in members} == {wanted}, (
            status,
            route,
            ended,
        )
