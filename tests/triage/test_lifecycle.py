"""The referral lifecycle: the state machine as data in the domain module (pure, property-tested),
and through triage's HTTP API on SQLite and PostgreSQL with a real nats-server: a decision the
status does not allow is a 409 that publishes nothing; a transfer after routing is explicit;
closing a routed referral ends its episode by rule; crisis referrals are never off the crisis
queue until contact or a downgrade with a reason; re-access goes straight back; a second
referral for the same person is linked; every decision records who made it (natively and as FHIR
Provenance); a back-dated receipt needs a reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fhir.resources.R4B.provenance import Provenance
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from services.careplan.domain import CLINICAL_ROUTES
from services.registry.seed import REFERENCE, desired_records
from services.triage.domain import (
    EPISODE_ROUTES,
    INTAKE,
    LIFECYCLE,
    DecisionAction,
    ReferralStatus,
    Route,
    TransitionRefused,
    intake_step,
    next_step,
)
from services.triage.models import CrisisChange, Discharge, Episode
from shared.events import make_event
from tests.support import eventually
from tests.triage.support import CLINICIAN, EHR, OTHER_EHR, Triage, nhs_number, referral

FOCUSED = "central-lancashire-focused-support-adult-mh"
FYLDE_FOCUSED = "f6ed4bdc-7110-5237-be89-44e03ca2938f"  # fylde-coast-focused-support-adult-mh
FYLDE_NETWORK = next(
    r.attributes["network_id"]
    for r in desired_records(json.loads(REFERENCE.read_text()))
    if r.id == FYLDE_FOCUSED
)

# --- the state machine (pure) -------------------------------------------------------------------

KNOWN_EVENTS = {"received", "prioritised", "routed", "signposted", "transferred", "closed"}


def test_the_lifecycle_names_every_status_and_only_known_events() -> None:
    assert set(LIFECYCLE) == set(ReferralStatus)
    assert LIFECYCLE[ReferralStatus.CLOSED] == {}  # a closed referral takes no decision
    for transitions in LIFECYCLE.values():
        for transition in transitions.values():
            assert set(transition.events) <= KNOWN_EVENTS
    for _status, events in INTAKE.values():
        assert set(events) <= KNOWN_EVENTS


def test_episode_routes_are_careplans_clinical_routes() -> None:
    # Triage decides which routes have an episode; careplan opens one for exactly those.
    assert {route.value for route in EPISODE_ROUTES} == set(CLINICAL_ROUTES)


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (ReferralStatus.ROUTED, DecisionAction.ACCEPT),  # seen: a second accept published a second routed
        (ReferralStatus.ROUTED, DecisionAction.OVERRIDE),  # seen: moved the Task, not the episode
        (ReferralStatus.ROUTED, DecisionAction.DECLINE),  # seen: revoked the request, episode left open
        (ReferralStatus.RECEIVED, DecisionAction.TRANSFER),
        (ReferralStatus.CLOSED, DecisionAction.ACCEPT),
        (ReferralStatus.CLOSED, DecisionAction.CLOSE),
    ],
)
def test_decisions_the_status_does_not_allow_are_refused(
    status: ReferralStatus, action: DecisionAction
) -> None:
    with pytest.raises(TransitionRefused):
        next_step(status, action, Route.FOCUSED_SUPPORT)


@given(
    st.lists(
        st.tuples(st.sampled_from(DecisionAction), st.one_of(st.none(), st.sampled_from(Route))), max_size=12
    ),
    st.booleans(),
)
def test_any_sequence_of_decisions_follows_the_table(
    decisions: list[tuple[DecisionAction, Route | None]], reaccess: bool
) -> None:
    status, events = intake_step(reaccess)
    assert "received" in events and ("routed" in events) == reaccess
    for action, route in decisions:
        transition = LIFECYCLE[status].get(action)
        try:
            step = next_step(status, action, route)
        except TransitionRefused:
            assert transition is None
            continue
        assert transition is not None and step.source is status
        if step.target is ReferralStatus.CLOSED:
            assert step.events == ("closed",) and step.ends_episode == (status is ReferralStatus.ROUTED)
        elif step.target is ReferralStatus.SIGNPOSTED and status is not ReferralStatus.SIGNPOSTED:
            assert route == Route.VCFSE_SIGNPOST and step.events == ("signposted",)
        elif step.target is status:  # a transfer or a change of priority: the status stands
            assert step.events in (("transferred",), ("prioritised",))
        else:
            assert not step.ends_episode
        if status is ReferralStatus.CLOSED:
            raise AssertionError("a closed referral took a decision")
        status = step.target


# --- through the API ----------------------------------------------------------------------------


def _clinician(user: str = "dr.jones", role: str = "triage_practitioner") -> dict[str, str]:
    return {**CLINICIAN, "X-End-User-Id": user, "X-End-User-Role": role}


async def _decide(
    triage: Triage, referral_id: str, body: dict[str, Any], headers: dict[str, str] | None = None
):
    return await triage.client.post(
        f"/triage/referrals/{referral_id}/decisions", json=body, headers=headers or _clinician()
    )


async def _lifecycle_events(triage: Triage, referral_id: str) -> list[str]:
    return [
        e["type"].rsplit(".", 1)[-1]
        for e in await triage.events()
        if e["type"].startswith("cmh.triage.referral.") and e["data"].get("referral_id") == referral_id
    ]


async def test_a_second_accept_is_409_and_publishes_nothing(triage: Triage) -> None:
    body = (await triage.submit(referral())).json()
    assert (await _decide(triage, body["id"], {"action": "accept"})).status_code == 200
    before = await _lifecycle_events(triage, body["id"])
    again = await _decide(triage, body["id"], {"action": "accept"})
    assert again.status_code == 409 and again.json()["type"].endswith("/referral-state")
    assert "accepted already" in again.json()["detail"]
    assert await _lifecycle_events(triage, body["id"]) == before
    assert before.count("routed") == 1


async def test_after_routing_an_override_is_refused_and_a_transfer_moves_the_team(triage: Triage) -> None:
    body = (await triage.submit(referral())).json()
    routed = (await _decide(triage, body["id"], {"action": "accept"})).json()
    old_team = routed["suggestion"]["team"]["id"]
    override = await _decide(
        triage,
        body["id"],
        {"action": "override", "route": "focused_support", "reason": "complex", "team_id": FOCUSED},
    )
    assert override.status_code == 409 and "transfer" in override.json()["detail"]
    no_team = await _decide(
        triage, body["id"], {"action": "transfer", "route": "focused_support", "reason": "x"}
    )
    assert no_team.status_code == 422
    to_signpost = await _decide(
        triage,
        body["id"],
        {"action": "transfer", "route": "vcfse_signpost", "team_id": FOCUSED, "reason": "x"},
    )
    assert to_signpost.status_code == 422 and "route" in str(to_signpost.json()["errors"])
    moved = await _decide(
        triage,
        body["id"],
        {
            "action": "transfer",
            "route": "focused_support",
            "team_id": "fylde-coast-focused-support-adult-mh",
            "reason": "Complex needs",
        },
        _clinician("dr.patel", "team_lead"),
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["status"] == "routed" and moved.json()["route"] == "focused_support"
    transferred = (await triage.events("cmh.triage.referral.transferred"))[0]["data"]
    # Named by key or id, kept by id, with the team's own network (the place is the person's).
    assert transferred["previous_team_id"] == old_team and transferred["team_id"] == FYLDE_FOCUSED
    assert (
        transferred["network_id"] == FYLDE_NETWORK
        and transferred["network_id"] != routed["suggestion"]["network"]["id"]
    )
    assert transferred["previous_route"] == "front_door_primary" and transferred["route"] == "focused_support"
    assert (transferred["end_user_id"], transferred["end_user_role"]) == ("dr.patel", "team_lead")
    task = (await triage.client.get(f"/triage/fhir/Task/{body['id']}", headers=CLINICIAN)).json()
    assert task["owner"]["reference"] == f"HealthcareService/{FYLDE_FOCUSED}"
    unknown = await _decide(
        triage,
        body["id"],
        {"action": "transfer", "route": "focused_support", "team_id": "no-such-team", "reason": "x"},
    )
    assert unknown.status_code == 422 and "team_id" in str(unknown.json()["errors"])


async def test_closing_a_routed_referral_ends_its_episode_by_rule(triage: Triage) -> None:
    body = (await triage.submit(referral())).json()
    await _decide(triage, body["id"], {"action": "accept"})
    declined = await _decide(
        triage, body["id"], {"action": "decline", "route": "staying_well", "reason": "x"}
    )
    assert declined.status_code == 409
    closed = await _decide(triage, body["id"], {"action": "close", "reason": "Moved out of the area"})
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    event = (await triage.events("cmh.triage.referral.closed"))[0]["data"]
    assert event["episode_rule"] == "end_episode" and event["reason"] == "Moved out of the area"
    # Closed before routing: there is no episode to end.
    second = (await triage.submit(referral(person={"nhs_number": nhs_number("401023213")}))).json()
    await _decide(triage, second["id"], {"action": "close", "reason": "Duplicate"})
    rules = [e["data"]["episode_rule"] for e in await triage.events("cmh.triage.referral.closed")]
    assert sorted(rules) == ["end_episode", "none"]


async def test_a_crisis_referral_without_coded_risk_stays_on_the_queue_until_downgraded(
    triage: Triage,
) -> None:
    raised = await triage.submit(referral(risks=[]), path="/triage/crisis/referrals", headers=CLINICIAN)
    assert raised.status_code == 201
    body = raised.json()
    assert body["priority"] == 2 and body["deadline_at"] is not None  # at least urgent
    assert "P2-crisis-path" in [rule["id"] for rule in body["rules"]]
    queue = (await triage.client.get("/triage/crisis/queue", headers=CLINICIAN)).json()
    assert [e["referral_id"] for e in queue["entries"]] == [body["id"]]
    no_reason = await _decide(triage, body["id"], {"action": "reprioritise", "priority": 3})
    assert no_reason.status_code == 422
    downgraded = await _decide(
        triage,
        body["id"],
        {"action": "reprioritise", "priority": 3, "reason": "Spoke to GP: no current risk"},
    )
    assert downgraded.status_code == 200 and downgraded.json()["deadline_at"] is None
    queue = (await triage.client.get("/triage/crisis/queue", headers=CLINICIAN)).json()
    assert queue["entries"] == []
    async with triage.app.state.db.session() as session:
        changes = (
            await session.scalars(select(CrisisChange.change).where(CrisisChange.referral_id == body["id"]))
        ).all()
    assert list(changes) == ["new", "downgraded"]  # the stream tells every app it left the queue


async def test_re_access_within_the_window_is_routed_at_intake_and_after_it_is_context(
    triage: Triage,
) -> None:
    first = (await triage.submit(referral())).json()
    team_id = first["suggestion"]["team"]["id"]
    now = datetime.now(UTC)
    discharged = make_event(
        "careplan", "episode", "discharged",
        {
            "episode_id": "episode-old", "referral_id": first["id"], "person_id": first["person_id"],
            "team_id": team_id, "named_worker_id": "practitioner-7", "status": "discharged", "version": 4,
            "discharged_at": (now - timedelta(days=800)).isoformat(),
            "reaccess_until": (now - timedelta(days=435)).isoformat(),
        },
    )  # fmt: skip
    js = await triage.app.state.broker.wait_connected()
    await js.publish(discharged.type, discharged.to_json())

    async def seen() -> bool:
        async with triage.app.state.db.session() as session:
            return await session.get(Discharge, "episode-old") is not None

    await eventually(seen)
    again = (await triage.submit(referral())).json()
    rule = next(r for r in again["rules"] if r["id"] == "R-reaccess-window-ended")
    assert "practitioner-7" in rule["text"] and team_id in rule["text"]
    assert (
        again["status"] == "received"
        and again["suggestion"]["previous_episode"]["within_reaccess_window"] is False
    )


async def test_a_second_referral_awaiting_triage_is_linked_and_an_open_episode_is_context(
    triage: Triage,
) -> None:
    first = (await triage.submit(referral())).json()
    second = (await triage.submit(referral(needs_text="Worse this week"))).json()
    assert second["awaiting_referral_id"] == first["id"]
    assert "D-awaiting-triage" in [rule["id"] for rule in second["rules"]]
    received = [e["data"] for e in await triage.events("cmh.triage.referral.received")]
    assert [r["possible_duplicate"] for r in received] == [False, True]
    opened = make_event(
        "careplan", "episode", "opened",
        {"episode_id": "episode-9", "referral_id": first["id"], "person_id": first["person_id"],
         "team_id": "team-x", "status": "open", "version": 1},
    )  # fmt: skip
    js = await triage.app.state.broker.wait_connected()
    await js.publish(opened.type, opened.to_json())

    async def seen() -> bool:
        async with triage.app.state.db.session() as session:
            return await session.get(Episode, "episode-9") is not None

    await eventually(seen)
    third = (await triage.submit(referral(needs_text="Again"))).json()
    assert third["open_episode_id"] == "episode-9"
    assert "D-open-episode" in [rule["id"] for rule in third["rules"]]


async def test_every_decision_records_who_made_it_natively_and_as_provenance(triage: Triage) -> None:
    body = (await triage.submit(referral())).json()
    await _decide(triage, body["id"], {"action": "accept"}, _clinician("dr.jones", "triage_practitioner"))
    await _decide(triage, body["id"], {"action": "close", "reason": "Withdrawn by the person"}, CLINICIAN)
    history = (await triage.client.get(f"/triage/referrals/{body['id']}/history", headers=EHR)).json()
    items = history["items"]
    assert [i["action"] for i in items] == ["received", "accept", "close"]
    assert [(i["from_status"], i["to_status"]) for i in items] == [
        (None, "received"),
        ("received", "routed"),
        ("routed", "closed"),
    ]
    assert items[1]["end_user"] == {"id": "dr.jones", "role": "triage_practitioner", "asserted": True}
    assert items[1]["client_id"] == "spa-clinician" and items[2]["end_user"] is None
    assert items[2]["reason"] == "Withdrawn by the person"
    bundle = (
        await triage.client.get(
            "/triage/fhir/Provenance", params={"target": f"Task/{body['id']}"}, headers=EHR
        )
    ).json()
    resources = [entry["resource"] for entry in bundle["entry"]]
    assert [r["activity"]["text"] for r in resources] == ["received", "accept", "close"]
    author = resources[1]["agent"][0]
    assert (
        author["who"]["identifier"]["value"] == "dr.jones"
        and author["role"][0]["text"] == "triage_practitioner"
    )
    for resource in resources:
        Provenance.model_validate(resource)
    # Another organisation learns nothing.
    foreign = await triage.client.get(f"/triage/referrals/{body['id']}/history", headers=OTHER_EHR)
    assert foreign.status_code == 404
    empty = (
        await triage.client.get(
            "/triage/fhir/Provenance", params={"target": f"Task/{body['id']}"}, headers=OTHER_EHR
        )
    ).json()
    assert empty["total"] == 0 and not empty.get("entry")


async def test_a_back_dated_receipt_needs_a_reason_and_authored_is_kept_apart(triage: Triage) -> None:
    long_ago = (datetime.now(UTC) - timedelta(days=45)).isoformat()
    refused = await triage.submit(referral(received_at=long_ago))
    assert refused.status_code == 422 and "backdated_reason" in str(refused.json()["errors"])
    accepted = await triage.submit(
        referral(received_at=long_ago, backdated_reason="Paper referral found in post")
    )
    assert accepted.status_code == 201
    future = await triage.submit(
        referral(
            received_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat(), person={"nhs_number": None}
        )
    )
    assert future.status_code == 422
    received = datetime.now(UTC) - timedelta(hours=2)
    authored_after = await triage.submit(
        referral(received_at=received.isoformat(), authored_at=(received + timedelta(hours=1)).isoformat())
    )
    assert authored_after.status_code == 422
    written = received - timedelta(days=2)
    body = (
        await triage.submit(referral(received_at=received.isoformat(), authored_at=written.isoformat()))
    ).json()
    assert datetime.fromisoformat(body["authored_at"]) == written
    assert datetime.fromisoformat(body["received_at"]) == received
    request = (await triage.client.get(f"/triage/fhir/ServiceRequest/{body['id']}", headers=EHR)).json()
    task = (await triage.client.get(f"/triage/fhir/Task/{body['id']}", headers=EHR)).json()
    # FHIR dateTimes here are to the second.
    assert datetime.fromisoformat(request["authoredOn"].replace("Z", "+00:00")) == written.replace(
        microsecond=0
    )
    assert datetime.fromisoformat(task["authoredOn"].replace("Z", "+00:00")) == received.replace(
        microsecond=0
    )
