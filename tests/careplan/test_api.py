"""Careplan through its API on SQLite and PostgreSQL: one episode per routed referral however
often the event comes, recording bound to the team's provider and checked, the scheduler's
clock events once even with two replicas scanning, worklist order and filters."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from services.careplan import store
from services.careplan.models import Episode
from shared.events import make_event
from tests.careplan.conftest import Careplan
from tests.support import mint_token, outbox_events
from tests.triage.support import registry_events

LSCFT = {
    "Authorization": f"Bearer {mint_token('careplan:read careplan:write', client_id='lscft', organisation='RW5', kind='crisis_app')}"
}
OTHER = {
    "Authorization": f"Bearer {mint_token('careplan:read careplan:write', client_id='rxn', organisation='RXN', kind='partner_ehr')}"
}
REFERRER = {
    "Authorization": f"Bearer {mint_token('careplan:read careplan:write', client_id='gp', organisation='P81001', kind='partner_ehr')}"
}
READER = {
    "Authorization": f"Bearer {mint_token('careplan:read', client_id='reader', organisation='RW5', kind='admin')}"
}
TEAM = next(
    e.data["id"]
    for e in registry_events(kinds=("team",))
    if e.data["timeline"][0]["attributes"]["key"] == "central-lancashire-front-door-primary"
)


def routed(
    referral_id: str,
    *,
    received_at: datetime,
    route: str = "front_door_primary",
    age: int = 40,
    person: str = "person-1",
) -> Any:
    return make_event(
        "triage", "referral", "routed",
        {
            "referral_id": referral_id, "person_id": person, "received_at": received_at.isoformat(), "route": route,
            "team_id": TEAM, "network_id": "n", "place": "lancashire", "pathway": "adult-mh", "priority": 3, "age": age,
            "referring_organisation": "P81001",
        },
    )  # fmt: skip


async def _open(careplan: Careplan, referral_id: str, **kwargs: Any) -> str:
    event = routed(referral_id, **kwargs)
    async with careplan.app.state.db.transaction() as session:
        await store.open_from_routed(session, event)
    async with careplan.app.state.db.session() as session:
        return str(await session.scalar(select(Episode.id).where(Episode.referral_id == referral_id)))


async def test_one_episode_per_routed_referral_and_none_for_signposts(careplan: Careplan) -> None:
    received = datetime.now(UTC) - timedelta(days=1)
    for _ in range(3):  # redelivered
        await _open(careplan, "ref-1", received_at=received)
    await _open(careplan, "ref-2", received_at=received, route="vcfse_signpost")
    async with careplan.app.state.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Episode)) == 1
    opened = await outbox_events(careplan.app, "cmh.careplan.episode.opened")
    assert len(opened) == 1 and opened[0]["data"]["team_id"] == TEAM


async def test_writes_are_bound_to_the_teams_provider_and_checked(careplan: Careplan) -> None:
    received = datetime.now(UTC) - timedelta(days=3)
    episode_id = await _open(careplan, "ref-3", received_at=received)
    path = f"/careplan/episodes/{episode_id}"
    now = datetime.now(UTC)
    contact = {"at": now.isoformat(), "attended": True, "mechanism": "video"}
    # Another organisation cannot tell the episode exists; the referrer reads but may not write.
    assert (await careplan.client.post(f"{path}/contacts", json=contact, headers=OTHER)).status_code == 404
    assert (await careplan.client.post(f"{path}/contacts", json=contact, headers=REFERRER)).status_code == 403
    assert (await careplan.client.get(path, headers=REFERRER)).status_code == 200
    assert (await careplan.client.post(f"{path}/contacts", json=contact, headers=READER)).status_code == 403
    denied = [e["data"] for e in await outbox_events(careplan.app, "cmh.careplan.audit.recorded")]
    assert [(d["organisation"], d["outcome"]) for d in denied if d["outcome"] == "denied"][:2] == [
        ("RXN", "denied"),
        ("P81001", "denied"),
    ]
    assert (await careplan.client.post(f"{path}/contacts", json=contact, headers=LSCFT)).status_code == 200
    bad = [
        ("contacts", {"at": now.replace(tzinfo=None).isoformat(), "attended": True, "mechanism": "video"}),
        (
            "contacts",
            {"at": (received - timedelta(days=1)).isoformat(), "attended": True, "mechanism": "video"},
        ),
        (
            "assessments",
            {"started_at": now.isoformat(), "completed_at": (now - timedelta(hours=1)).isoformat()},
        ),
        ("outcome-measures", {"at": now.isoformat(), "tool": "MADE-UP", "score": 1}),
        ("plans/agreement", {"agreed_at": now.isoformat(), "how_agreed": "in_person"}),  # no plan yet
        ("discharge", {"at": now.isoformat(), "reason": "treatment_complete"}),  # no plan, no reason
    ]
    for sub, body in bad:
        response = await careplan.client.post(f"{path}/{sub}", json=body, headers=LSCFT)
        assert response.status_code == 422, (sub, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    episode = (await careplan.client.get(path, headers=READER)).json()
    assert [r["kind"] for r in episode["records"]] == ["contact"]  # the refusals stored nothing
    audits = await outbox_events(careplan.app, "cmh.careplan.audit.recorded")
    assert any(a["data"]["action"] == "update" for a in audits) and any(
        a["data"]["action"] == "read" for a in audits
    )


async def test_clock_events_once_with_two_replicas_and_an_injected_clock(careplan: Careplan) -> None:
    received = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    episode_id = await _open(careplan, "ref-4", received_at=received)
    async with careplan.app.state.db.transaction() as session:
        episode = await session.get(Episode, episode_id)
        assert episode is not None
        episode.first_assessment_completed_at = datetime(2026, 1, 2, 10, 0, tzinfo=UTC)
    db = careplan.app.state.db
    day = lambda n: datetime(2026, 1, 2, 12, 0, tzinfo=UTC) + timedelta(days=n)  # noqa: E731
    assert await store.scan_clocks(db, day(20)) == 0
    first = await asyncio.gather(store.scan_clocks(db, day(21)), store.scan_clocks(db, day(21)))
    assert sorted(first) == [0, 1]  # two replicas, one at-risk event
    assert await store.scan_clocks(db, day(28)) == 0
    assert sum(await asyncio.gather(store.scan_clocks(db, day(29)), store.scan_clocks(db, day(29)))) == 1
    assert await store.scan_clocks(db, day(40)) == 0
    assert [e["type"] for e in await outbox_events(careplan.app, None) if ".clock." in e["type"]] == [
        "cmh.careplan.clock.at_risk", "cmh.careplan.clock.breached",
    ]  # fmt: skip
    careplan.app.state.clock = lambda: day(29)
    clocks = (await careplan.client.get(f"/careplan/episodes/{episode_id}/clocks", headers=READER)).json()
    assert clocks["plan"]["state"] == "breached" and clocks["plan"]["days_remaining"] == -1
    assert (
        clocks["national"]["state"] == "breached"
        and "first attended contact" in clocks["national"]["missing"]
    )


async def test_worklist_orders_by_days_remaining_and_filters(careplan: Careplan) -> None:
    now = datetime.now(UTC)
    ids = {}
    for name, days in (("fresh", 2), ("late", 25), ("none", None)):
        ids[name] = await _open(
            careplan, f"ref-{name}", received_at=now - timedelta(days=30), person=f"p-{name}"
        )
        if days is not None:
            async with careplan.app.state.db.transaction() as session:
                episode = await session.get(Episode, ids[name])
                assert episode is not None
                episode.first_assessment_completed_at = now - timedelta(days=days)
    items = (await careplan.client.get("/careplan/worklist", headers=READER)).json()["items"]
    assert [i["episode_id"] for i in items] == [ids["late"], ids["fresh"], ids["none"]]
    assert items[0]["at_risk"] is True and items[2]["state"] == "not_started"
    assert (
        await careplan.client.get("/careplan/worklist", params={"team_id": "elsewhere"}, headers=READER)
    ).json()["items"] == []


@pytest.mark.parametrize("params", [{}, {"status": "lost"}])
async def test_finding_episodes_needs_whose(careplan: Careplan, params: dict[str, str]) -> None:
    assert (await careplan.client.get("/careplan/episodes", params=params, headers=READER)).status_code == 422
