"""Triage's referral lifecycle applied to episodes (issue 17), on SQLite and PostgreSQL, by calling
careplan's consumer handler with CloudEvents: an episode opens at the decision's time; a second
referral at the same team is linked, not opened; a re-access goes back to the named worker with
the plan clock started and shows on the worklist; a transfer moves the episode with both clocks
unchanged and the named worker only if they belong to the new team; a close ends the episode
(referral_closed) or, with no episode yet, stops a late routed or transferred event opening one;
older versions and redeliveries change nothing; and who made each change is kept."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from fhir.resources.R4B import get_fhir_model_class
from sqlalchemy import select

from contracts.clocks import TARGET_DAYS, calendar_days
from services.careplan.models import EpisodeRecord, ReferralState
from shared.events import CloudEvent, make_event
from tests.careplan.conftest import Careplan
from tests.careplan.support import (
    CLINICIAN,
    OTHER_TEAM,
    READER,
    TEAM,
    WRITER,
    add_member,
    apply,
    closed,
    episodes,
    facts,
    routed,
    transferred,
)
from tests.support import outbox_events

NOW = datetime.now(UTC)
RECEIVED = NOW - timedelta(days=10)
DECIDED = RECEIVED + timedelta(hours=3)


async def _records(careplan: Careplan, episode_id: str) -> list[dict]:
    response = await careplan.client.get(f"/careplan/episodes/{episode_id}", headers=READER)
    assert response.status_code == 200, response.text
    return response.json()["records"]  # type: ignore[no-any-return]


async def test_an_episode_opens_at_the_decision_not_when_the_event_is_processed(careplan: Careplan) -> None:
    await apply(careplan, routed("r-open", received_at=RECEIVED, decided_at=DECIDED))
    [episode] = await episodes(careplan)
    assert episode.opened_at == DECIDED and episode.referral_version == 2
    journey = (await careplan.client.get("/careplan/people/person-1/journey", headers=READER)).json()
    opened = next(e for e in journey["entries"] if e["kind"] == "episode_opened")
    assert opened["at"] == DECIDED.isoformat()
    # Without a decision time the event's own time stands, never the time it is applied.
    event = routed("r-open-2", received_at=RECEIVED, person="person-2")
    await apply(careplan, event)
    [second] = await episodes(careplan, "person-2")
    assert second.opened_at == event.time


async def test_a_second_referral_at_the_same_team_is_linked_not_a_second_episode(careplan: Careplan) -> None:
    await apply(careplan, routed("r-first", received_at=RECEIVED, decided_at=DECIDED))
    later = RECEIVED + timedelta(days=2)
    again = routed("r-again", received_at=later, decided_at=later + timedelta(hours=1))
    await apply(careplan, again, again)  # redelivered too
    [episode] = await episodes(careplan)
    assert episode.status == "open" and episode.referral_id == "r-first"
    linked = await outbox_events(careplan.app, "cmh.careplan.episode.linked")
    assert len(linked) == 1 and linked[0]["data"]["linked_referral_id"] == "r-again"
    assert linked[0]["data"]["episode_id"] == episode.id
    records = await _records(careplan, episode.id)
    [new] = [r for r in records if r["kind"] == "new_referral"]
    assert new["data"]["linked_referral_id"] == "r-again" and new["recorded_by"] == "triage-app"
    assert new["asserted_end_user"] == {"id": "triager-1", "role": "triage_practitioner", "asserted": True}
    journey = (await careplan.client.get("/careplan/people/person-1/journey", headers=READER)).json()
    assert any(
        e["kind"] == "new_referral" and e["linked_referral_id"] == "r-again" for e in journey["entries"]
    )
    # At another team it is an episode of its own.
    await apply(careplan, routed("r-elsewhere", received_at=later, decided_at=later, team=OTHER_TEAM))
    assert sorted(e.team_id for e in await episodes(careplan)) == sorted([TEAM, OTHER_TEAM])
    # Closing the linked referral leaves the episode it informed (another referral's) open.
    await apply(careplan, closed("r-again", received_at=later, decided_at=NOW))
    assert {e.referral_id: e.status for e in await episodes(careplan)}["r-first"] == "open"


async def test_a_transfer_into_a_team_holding_the_persons_open_episode_joins_it(careplan: Careplan) -> None:
    """Never two open episodes for one person at one team (HAZ-043): the transferred referral
    becomes new information in the receiving team's episode, and its own episode ends."""
    await apply(careplan, routed("r-there", received_at=RECEIVED, decided_at=DECIDED, team=OTHER_TEAM))
    await apply(careplan, routed("r-moving", received_at=RECEIVED, decided_at=DECIDED))
    assert sorted(e.team_id for e in await episodes(careplan)) == sorted([TEAM, OTHER_TEAM])
    moved = transferred("r-moving", received_at=RECEIVED, decided_at=DECIDED + timedelta(days=1))
    await apply(careplan, moved, moved)  # redelivered too
    found = {e.referral_id: e for e in await episodes(careplan)}
    assert found["r-there"].status == "open" and found["r-there"].team_id == OTHER_TEAM
    assert found["r-moving"].status == "discharged" and found["r-moving"].discharge_reason == "transferred"
    assert [e.team_id for e in found.values() if e.status == "open"] == [OTHER_TEAM]
    linked = await outbox_events(careplan.app, "cmh.careplan.episode.linked")
    assert [(e["data"]["episode_id"], e["data"]["linked_referral_id"]) for e in linked] == [
        (found["r-there"].id, "r-moving")
    ]
    [ended] = await outbox_events(careplan.app, "cmh.careplan.episode.discharged")
    assert ended["data"]["episode_id"] == found["r-moving"].id and ended["data"]["reason"] == "transferred"
    records = await _records(careplan, found["r-moving"].id)
    [discharge] = [r for r in records if r["kind"] == "discharge"]
    assert discharge["data"]["joined_episode_id"] == found["r-there"].id
    # Closing the moved referral now leaves the episode it joined open.
    await apply(careplan, closed("r-moving", received_at=RECEIVED, decided_at=NOW, version=5))
    assert {e.referral_id: e.status for e in await episodes(careplan)}["r-there"] == "open"


async def test_a_reaccess_goes_back_to_the_named_worker_with_the_plan_clock_started(
    careplan: Careplan,
) -> None:
    await add_member(careplan, "pr-kim", TEAM)
    await apply(
        careplan,
        routed(
            "r-before", received_at=RECEIVED - timedelta(days=100), decided_at=RECEIVED - timedelta(days=99)
        ),
    )
    [previous] = await episodes(careplan)
    put = await careplan.client.put(
        f"/careplan/episodes/{previous.id}/named-worker",
        json={"practitioner_id": "pr-kim"},
        headers=CLINICIAN,
    )
    assert put.status_code == 200, put.text
    discharge = {
        "at": (RECEIVED - timedelta(days=20)).isoformat(),
        "reason": "persons_choice",
        "without_plan_reason": "declined",
    }
    assert (
        await careplan.client.post(
            f"/careplan/episodes/{previous.id}/discharge", json=discharge, headers=WRITER
        )
    ).status_code == 200
    await apply(
        careplan,
        routed("r-back", received_at=RECEIVED, decided_at=RECEIVED, route="reaccess",
               reaccess_episode_id=previous.id, named_worker_id="pr-kim"),
    )  # fmt: skip
    second = next(e for e in await episodes(careplan) if e.referral_id == "r-back")
    assert second.previous_episode_id == previous.id and second.named_worker_id == "pr-kim"
    assert second.team_id == TEAM and second.first_assessment_completed_at == second.opened_at == RECEIVED
    opened = [
        e
        for e in await outbox_events(careplan.app, "cmh.careplan.episode.opened")
        if e["data"]["episode_id"] == second.id
    ]
    assert opened[0]["data"]["reaccess"] is True and opened[0]["data"]["named_worker_id"] == "pr-kim"
    assert opened[0]["data"]["previous_episode_id"] == previous.id
    worklist = (
        await careplan.client.get("/careplan/worklist", params={"team_id": TEAM}, headers=READER)
    ).json()
    [item] = [i for i in worklist["items"] if i["episode_id"] == second.id]
    assert item["reaccess"] is True and item["previous_episode_id"] == previous.id
    assert item["named_worker_id"] == "pr-kim" and item["state"] == "running"
    assert item["days_remaining"] == TARGET_DAYS - calendar_days(RECEIVED, NOW)
    # The named worker carried over is a kept assignment, made by triage's automatic routing.
    [assignment] = [r for r in await _records(careplan, second.id) if r["kind"] == "named_worker"]
    assert (
        assignment["data"]["linked_from_episode_id"] == previous.id
        and assignment["recorded_by"] == "triage-app"
    )


async def test_a_transfer_moves_the_episode_and_both_clocks_continue(careplan: Careplan) -> None:
    await add_member(careplan, "pr-both", TEAM)
    await add_member(careplan, "pr-both", OTHER_TEAM)
    await add_member(careplan, "pr-first-only", TEAM)
    for referral, worker in (("r-keep", "pr-both"), ("r-clear", "pr-first-only")):
        await apply(
            careplan, routed(referral, received_at=RECEIVED, decided_at=DECIDED, person=f"p-{referral}")
        )
        [episode] = await episodes(careplan, f"p-{referral}")
        path = f"/careplan/episodes/{episode.id}"
        assessed = {
            "started_at": (DECIDED + timedelta(days=1)).isoformat(),
            "completed_at": (DECIDED + timedelta(days=1)).isoformat(),
        }
        assert (
            await careplan.client.post(f"{path}/assessments", json=assessed, headers=WRITER)
        ).status_code == 200
        assert (
            await careplan.client.put(
                f"{path}/named-worker", json={"practitioner_id": worker}, headers=WRITER
            )
        ).status_code == 200
        before = (await careplan.client.get(f"{path}/clocks", headers=READER)).json()
        await apply(
            careplan,
            transferred(
                referral, received_at=RECEIVED, decided_at=NOW - timedelta(days=1), person=f"p-{referral}"
            ),
        )
        after = (await careplan.client.get(f"{path}/clocks", headers=READER)).json()
        assert after["plan"] == before["plan"] and after["national"] == before["national"]  # unchanged
        [moved] = await episodes(careplan, f"p-{referral}")
        assert moved.team_id == OTHER_TEAM and moved.route == "focused_support" and moved.owner_org == "RW5"
        assert moved.opened_at == DECIDED and moved.referral_version == 3
        [transfer] = [r for r in await _records(careplan, episode.id) if r["kind"] == "transfer"]
        assert transfer["data"]["from_team_id"] == TEAM and transfer["data"]["to_team_id"] == OTHER_TEAM
        assert transfer["data"]["transfer_reason"] == "Needs longer-term support"
        assert transfer["asserted_end_user"] == {"id": "lead-3", "role": "team_lead", "asserted": True}
        if worker == "pr-both":
            assert moved.named_worker_id == "pr-both" and transfer["data"]["named_worker_cleared"] is None
        else:
            assert (
                moved.named_worker_id is None and transfer["data"]["named_worker_cleared"] == "pr-first-only"
            )
    events = await outbox_events(careplan.app, "cmh.careplan.episode.transferred")
    assert [e["data"]["previous_team_id"] for e in events] == [TEAM, TEAM]
    assert [e["data"]["named_worker_cleared"] for e in events] == [False, True]
    # Triage's free-text reason stays in the transfer record: no consumer of the event reads it.
    assert all(e["data"]["team_id"] == OTHER_TEAM and "reason" not in e["data"] for e in events)
    journey = (await careplan.client.get("/careplan/people/p-r-keep/journey", headers=READER)).json()
    assert any(e["kind"] == "transfer" and e["to_team_id"] == OTHER_TEAM for e in journey["entries"])


async def test_older_and_redelivered_transfers_change_nothing(careplan: Careplan) -> None:
    await apply(careplan, routed("r-v", received_at=RECEIVED, decided_at=DECIDED))
    newer = transferred("r-v", received_at=RECEIVED, decided_at=NOW, version=5, team=OTHER_TEAM)
    older = transferred(
        "r-v", received_at=RECEIVED, decided_at=NOW, version=4, team=TEAM, previous_team=OTHER_TEAM
    )
    await apply(careplan, newer, newer, older)
    [episode] = await episodes(careplan)
    assert episode.team_id == OTHER_TEAM and episode.referral_version == 5
    assert len(await outbox_events(careplan.app, "cmh.careplan.episode.transferred")) == 1


async def test_a_transfer_before_any_episode_opens_one_and_a_discharged_episode_is_left(
    careplan: Careplan,
) -> None:
    await apply(careplan, transferred("r-t", received_at=RECEIVED, decided_at=DECIDED, version=3))
    [episode] = await episodes(careplan)
    assert (
        episode.team_id == OTHER_TEAM and episode.opened_at == DECIDED and episode.route == "focused_support"
    )
    await apply(
        careplan, routed("r-t", received_at=RECEIVED, decided_at=DECIDED - timedelta(hours=1))
    )  # late
    assert len(await episodes(careplan)) == 1
    plan = {"at": NOW.isoformat(), "reason": "moved_away", "without_plan_reason": "moved away"}
    assert (
        await careplan.client.post(f"/careplan/episodes/{episode.id}/discharge", json=plan, headers=WRITER)
    ).status_code == 200
    await apply(careplan, transferred("r-t", received_at=RECEIVED, decided_at=NOW, version=6, team=TEAM))
    [after] = await episodes(careplan)
    assert after.team_id == OTHER_TEAM and after.status == "discharged"
    assert not [r for r in await _records(careplan, episode.id) if r["kind"] == "transfer"]


async def test_closing_a_routed_referral_ends_its_episode_and_stops_the_clocks(careplan: Careplan) -> None:
    await apply(careplan, routed("r-c", received_at=RECEIVED, decided_at=DECIDED))
    [episode] = await episodes(careplan)
    assessed = {
        "started_at": (DECIDED + timedelta(days=1)).isoformat(),
        "completed_at": (DECIDED + timedelta(days=1)).isoformat(),
    }
    await careplan.client.post(f"/careplan/episodes/{episode.id}/assessments", json=assessed, headers=WRITER)
    ended_at = NOW - timedelta(days=2)
    event = closed("r-c", received_at=RECEIVED, decided_at=ended_at)
    await apply(careplan, event, event)
    [ended] = await episodes(careplan)
    assert ended.status == "discharged" and ended.discharge_reason == "referral_closed"
    assert ended.discharged_at == ended_at and ended.reaccess_until == ended_at  # no re-access window
    [discharged] = await outbox_events(careplan.app, "cmh.careplan.episode.discharged")
    assert discharged["data"]["reason"] == "referral_closed"
    assert discharged["data"]["discharged_at"] == ended_at.isoformat()
    clocks = (await careplan.client.get(f"/careplan/episodes/{episode.id}/clocks", headers=READER)).json()
    assert clocks["plan"]["days_elapsed"] == calendar_days(DECIDED + timedelta(days=1), ended_at)  # frozen
    [record] = [r for r in await _records(careplan, episode.id) if r["kind"] == "discharge"]
    assert record["data"] == {"reason": "referral_closed", "triage_reason": "Duplicate of an open referral"}
    assert record["recorded_by"] == "triage-app" and record["asserted_end_user"]["id"] == "lead-3"
    assert "Duplicate" not in json.dumps(
        (await careplan.client.get("/careplan/people/person-1/journey", headers=READER)).json()
    )
    # A clinician cannot give the reason triage's closing gives.
    await apply(careplan, routed("r-c2", received_at=RECEIVED, decided_at=DECIDED, person="p-c2"))
    [other] = await episodes(careplan, "p-c2")
    body = {"at": NOW.isoformat(), "reason": "referral_closed", "without_plan_reason": "x"}
    refused = await careplan.client.post(
        f"/careplan/episodes/{other.id}/discharge", json=body, headers=WRITER
    )
    assert refused.status_code == 422 and "referral_closed" in refused.text


async def test_a_close_without_end_episode_leaves_the_episode_open(careplan: Careplan) -> None:
    await apply(careplan, routed("r-n", received_at=RECEIVED, decided_at=DECIDED))
    await apply(careplan, closed("r-n", received_at=RECEIVED, decided_at=NOW, episode_rule="none"))
    [episode] = await episodes(careplan)
    assert episode.status == "open"


async def test_a_referral_closed_first_never_opens_an_episode_later(careplan: Careplan) -> None:
    await apply(
        careplan,
        closed("r-x", received_at=RECEIVED, decided_at=NOW, episode_rule="end_episode", version=4),
        routed("r-x", received_at=RECEIVED, decided_at=DECIDED, version=2),  # out of order
        transferred("r-x", received_at=RECEIVED, decided_at=DECIDED, version=3),
        closed("r-y", received_at=RECEIVED, decided_at=NOW, episode_rule="none", version=2, person="p-y"),
        routed("r-y", received_at=RECEIVED, decided_at=DECIDED, version=1, person="p-y"),
    )
    assert await episodes(careplan) == []
    assert await outbox_events(careplan.app, "cmh.careplan.episode.opened") == []
    async with careplan.app.state.db.session() as session:
        states = (await session.scalars(select(ReferralState).order_by(ReferralState.referral_id))).all()
    assert [(s.referral_id, s.closed_at is not None, s.episode_id) for s in states] == [
        ("r-x", True, None), ("r-y", True, None),
    ]  # fmt: skip


async def test_every_record_keeps_the_client_and_the_asserted_end_user(careplan: Careplan) -> None:
    await apply(careplan, routed("r-who", received_at=RECEIVED, decided_at=DECIDED))
    [episode] = await episodes(careplan)
    path = f"/careplan/episodes/{episode.id}"
    at = (DECIDED + timedelta(days=1)).isoformat()
    plan = {"at": at, "needs": ["Sleep"], "goals": ["Sleep well"], "crisis_plan": "Call", "contingency_plan": "Duty",
            "review_date": (NOW + timedelta(days=30)).date().isoformat()}  # fmt: skip
    for sub, body, headers in (
        ("contacts", {"at": at, "attended": True, "mechanism": "video"}, CLINICIAN),
        ("plans", plan, CLINICIAN),
        ("plans/agreement", {"agreed_at": at, "how_agreed": "in_person"}, WRITER),
    ):
        response = await careplan.client.post(f"{path}/{sub}", json=body, headers=headers)
        assert response.status_code == 200, response.text
    records = await _records(careplan, episode.id)
    by_kind = {r["kind"]: r for r in records}
    assert by_kind["contact"]["recorded_by"] == "lscft"
    assert by_kind["contact"]["asserted_end_user"] == {
        "id": "staff-7001",
        "role": "mental_health_nurse",
        "asserted": True,
    }
    assert by_kind["plan_agreement"]["asserted_end_user"] is None  # none asserted
    assert all(r["recorded_at"] for r in records)
    async with careplan.app.state.db.session() as session:
        stored = (await session.scalars(select(EpisodeRecord).where(EpisodeRecord.kind == "plan"))).one()
    assert (stored.end_user_id, stored.end_user_role) == ("staff-7001", "mental_health_nurse")
    care_plan = (await careplan.client.get(f"/careplan/fhir/CarePlan/{episode.id}", headers=READER)).json()
    get_fhir_model_class("CarePlan").model_validate(care_plan)
    [user, client] = care_plan["contributor"]
    assert user["identifier"]["value"] == "staff-7001" and "asserted by client lscft" in user["display"]
    assert client["type"] == "Device" and client["identifier"]["value"] == "lscft"


async def test_a_change_of_priority_reaches_the_open_episode_and_never_blocks_routing(
    careplan: Careplan,
) -> None:
    def prioritised(referral_id: str, priority: int, version: int) -> CloudEvent:
        data = {
            **facts(referral_id, received_at=RECEIVED, version=version),
            "priority": priority,
            "overridden": True,
        }
        return make_event("triage", "referral", "prioritised", data)

    # One decision publishes `prioritised` and `routed` with the same version: routing still opens.
    await apply(
        careplan, prioritised("r-prio", 2, 2), routed("r-prio", received_at=RECEIVED, decided_at=DECIDED)
    )
    [episode] = await episodes(careplan)
    assert episode.status == "open"
    await apply(careplan, prioritised("r-prio", 4, 3))
    [episode] = await episodes(careplan)
    assert episode.priority == 4
    await apply(careplan, prioritised("r-prio", 3, 1))  # an older change is overtaken
    [episode] = await episodes(careplan)
    assert episode.priority == 4
