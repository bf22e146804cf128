"""Clinical time through the API on SQLite and PostgreSQL (issue 17): the journey in clinical-time
order with when each step was entered beside it; a back-dated agreement that keeps the promise
withdraws the breach already sent (`clock.corrected`, once, on the journey beside the breach); a
revised plan after a breached first agreement needs no second reason; and times before the
episode opened refused, except contacts and assessments back to the referral and records linked
from the previous episode."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from services.careplan import store
from services.careplan.models import ClockEventSent
from shared.events import make_event
from tests.careplan.conftest import Careplan
from tests.careplan.support import READER, WRITER, apply, episodes, facts, routed
from tests.support import outbox_events

NOW = datetime.now(UTC).replace(microsecond=0)


def _plan(at: datetime) -> dict[str, Any]:
    return {
        "at": at.isoformat(), "needs": ["Sleep"], "goals": ["Sleep through"], "crisis_plan": "Call the line",
        "contingency_plan": "Duty worker", "review_date": (at + timedelta(days=60)).date().isoformat(),
    }  # fmt: skip


async def _post(
    careplan: Careplan, episode_id: str, sub: str, body: dict[str, Any], status: int = 200
) -> Any:
    response = await careplan.client.post(f"/careplan/episodes/{episode_id}/{sub}", json=body, headers=WRITER)
    assert response.status_code == status, response.text
    return response.json()


async def _journey(careplan: Careplan, person: str = "person-1") -> list[dict[str, Any]]:
    response = await careplan.client.get(f"/careplan/people/{person}/journey", headers=READER)
    assert response.status_code == 200
    return response.json()["entries"]  # type: ignore[no-any-return]


async def test_the_journey_is_in_clinical_time_with_when_each_step_was_entered(careplan: Careplan) -> None:
    received = NOW - timedelta(days=6)
    decided = received + timedelta(days=1)
    # Triage's events, published (and processed) now: the referral stands at its received time.
    received_event = make_event("triage", "referral", "received", facts("r-j", received_at=received))
    routed_event = routed("r-j", received_at=received, decided_at=decided)
    async with careplan.app.state.db.transaction() as session:
        for event in (routed_event, received_event):  # processed out of order
            await store.journey_from_event(session, event)
    await apply(careplan, routed_event)
    [episode] = await episodes(careplan)
    # Entered today in this order, but they happened: the assessment on day 2, the contact on day 1.
    await _post(careplan, episode.id, "assessments", {"started_at": (decided + timedelta(days=2)).isoformat(),
                                                      "completed_at": (decided + timedelta(days=2)).isoformat()})  # fmt: skip
    await _post(careplan, episode.id, "contacts", {"at": (decided + timedelta(days=1)).isoformat(), "attended": True, "mechanism": "telephone"})  # fmt: skip
    same = (decided + timedelta(days=3)).isoformat()
    await _post(careplan, episode.id, "plans", _plan(datetime.fromisoformat(same)))
    await _post(careplan, episode.id, "plans/agreement", {"agreed_at": same, "how_agreed": "in_person"})
    entries = await _journey(careplan)
    assert [e["kind"] for e in entries] == [
        "triage_referral_received", "triage_referral_routed", "episode_opened", "contact", "assessment",
        "plan", "plan_agreement",
    ]  # fmt: skip
    assert (
        entries[0]["at"] == received.isoformat()
        and entries[0]["recorded_at"] == received_event.time.isoformat()
    )
    assert entries[1]["at"] == decided.isoformat()
    assert all(datetime.fromisoformat(e["recorded_at"]) >= datetime.fromisoformat(e["at"]) for e in entries)
    keys = [(e["at"], e["recorded_at"]) for e in entries]
    assert keys == sorted(keys)  # by clinical time, then when entered (the plan before its agreement)
    # The episode's records are in clinical time too, each with when it was entered.
    records = (await careplan.client.get(f"/careplan/episodes/{episode.id}", headers=READER)).json()[
        "records"
    ]
    assert [r["kind"] for r in records] == ["contact", "assessment", "plan", "plan_agreement"]


async def test_a_back_dated_agreement_withdraws_the_breach_already_sent(careplan: Careplan) -> None:
    received = NOW - timedelta(days=40)
    await apply(careplan, routed("r-late", received_at=received, decided_at=received + timedelta(hours=2)))
    [episode] = await episodes(careplan)
    assessed = received + timedelta(days=1)
    await _post(careplan, episode.id, "assessments", {"started_at": assessed.isoformat(), "completed_at": assessed.isoformat()})  # fmt: skip
    assert await store.scan_clocks(careplan.app.state.db, NOW) == 2  # at risk, then breached (day 39)
    # The plan had been agreed on day 25, and is entered only now.
    agreed = assessed + timedelta(days=25)
    await _post(careplan, episode.id, "plans", _plan(agreed - timedelta(days=1)))
    body = await _post(
        careplan, episode.id, "plans/agreement", {"agreed_at": agreed.isoformat(), "how_agreed": "telephone"}
    )
    assert body["clocks"]["plan"]["state"] == "met"
    [corrected] = await outbox_events(careplan.app, "cmh.careplan.clock.corrected")
    assert (
        corrected["data"]["withdrawn"] == "breached" and corrected["data"]["clocks"]["plan"]["state"] == "met"
    )
    assert corrected["data"]["episode_id"] == episode.id
    # Later writes withdraw nothing more; the at-risk event stands (day 21 to 25 without a plan).
    await _post(careplan, episode.id, "reviews", {"at": NOW.isoformat()})
    assert len(await outbox_events(careplan.app, "cmh.careplan.clock.corrected")) == 1
    async with careplan.app.state.db.session() as session:
        sent = {r.event: r.withdrawn_at for r in (await session.scalars(select(ClockEventSent))).all()}
    assert sent["breached"] is not None and sent["at_risk"] is None
    assert await store.scan_clocks(careplan.app.state.db, NOW + timedelta(days=1)) == 0  # never re-sent
    kinds = [e["kind"] for e in await _journey(careplan)]
    assert "clock_breached" in kinds and "clock_corrected" in kinds
    assert kinds.index("clock_breached") < kinds.index("clock_corrected")
    withdrawal = next(e for e in await _journey(careplan) if e["kind"] == "clock_corrected")
    assert withdrawal["withdrawn"] == "breached"


async def test_a_revised_plan_after_a_breached_first_agreement_needs_no_second_reason(
    careplan: Careplan,
) -> None:
    received = NOW - timedelta(days=50)
    await apply(careplan, routed("r-rev", received_at=received, decided_at=received))
    [episode] = await episodes(careplan)
    assessed = received + timedelta(days=1)
    await _post(careplan, episode.id, "assessments", {"started_at": assessed.isoformat(), "completed_at": assessed.isoformat()})  # fmt: skip
    first = assessed + timedelta(days=35)
    await _post(careplan, episode.id, "plans", _plan(first))
    await _post(
        careplan,
        episode.id,
        "plans/agreement",
        {"agreed_at": first.isoformat(), "how_agreed": "in_person"},
        422,
    )
    await _post(careplan, episode.id, "plans/agreement",
                {"agreed_at": first.isoformat(), "how_agreed": "in_person", "breach_reason": "capacity"})  # fmt: skip
    revised = first + timedelta(days=7)
    await _post(careplan, episode.id, "plans", _plan(revised))
    body = await _post(
        careplan, episode.id, "plans/agreement", {"agreed_at": revised.isoformat(), "how_agreed": "video"}
    )
    assert body["clocks"]["plan"]["state"] == "breached"  # the first agreement's outcome stands
    assert len(await outbox_events(careplan.app, "cmh.careplan.plan.agreed")) == 1


async def test_times_before_the_episode_opened(careplan: Careplan) -> None:
    received = NOW - timedelta(days=20)
    opened = received + timedelta(days=5)
    await apply(careplan, routed("r-pre", received_at=received, decided_at=opened))
    [episode] = await episodes(careplan)
    between = (received + timedelta(days=1)).isoformat()  # after the referral, before routing
    before_referral = (received - timedelta(hours=1)).isoformat()
    # The crisis first contact and an assessment legitimately happen between referral and routing.
    await _post(
        careplan, episode.id, "contacts", {"at": between, "attended": True, "mechanism": "face_to_face"}
    )
    await _post(careplan, episode.id, "assessments", {"started_at": between, "completed_at": between})
    refused = await _post(careplan, episode.id, "contacts", {"at": before_referral, "attended": True, "mechanism": "video"}, 422)  # fmt: skip
    assert "before the referral" in refused["detail"]
    for sub, body in (
        ("plans", _plan(datetime.fromisoformat(between))),
        ("outcome-measures", {"at": between, "tool": "PHQ-9", "score": 12}),
        ("interventions", {"at": between, "kind": "psychological"}),
        ("advice", {"at": between}),
        ("reviews", {"at": between}),
        ("discharge", {"at": between, "reason": "persons_choice", "without_plan_reason": "declined"}),
    ):
        refused = await _post(careplan, episode.id, sub, body, 422)
        assert refused["detail"] == "the time is before the episode opened", sub
    future = (datetime.now(UTC) + timedelta(minutes=6)).isoformat()  # now, not when the module loaded
    assert "future" in (await _post(careplan, episode.id, "reviews", {"at": future}, 422))["detail"]


async def test_records_linked_from_the_previous_episode_may_precede_it(careplan: Careplan) -> None:
    first_received = NOW - timedelta(days=200)
    await apply(careplan, routed("r-one", received_at=first_received, decided_at=first_received))
    [previous] = await episodes(careplan)
    await _post(careplan, previous.id, "discharge", {"at": (NOW - timedelta(days=30)).isoformat(), "reason": "persons_choice", "without_plan_reason": "well"})  # fmt: skip
    received = NOW - timedelta(days=3)
    await apply(careplan, routed("r-two", received_at=received, decided_at=received + timedelta(hours=1), route="reaccess", reaccess_episode_id=previous.id))  # fmt: skip
    again = next(e for e in await episodes(careplan) if e.referral_id == "r-two")
    old = (first_received + timedelta(days=10)).isoformat()
    linked = {**_plan(datetime.fromisoformat(old)), "linked_from_episode_id": previous.id}
    await _post(careplan, again.id, "plans", linked)
    await _post(careplan, again.id, "assessments", {"started_at": old, "completed_at": old, "linked_from_episode_id": previous.id})  # fmt: skip
    [after] = [e for e in await episodes(careplan) if e.id == again.id]
    assert after.first_assessment_completed_at == after.opened_at  # linked history never moves the clocks
    assert after.assessment_started_at is None
    refused = await _post(
        careplan, again.id, "plans", {**linked, "linked_from_episode_id": "someone-else"}, 422
    )
    assert refused["errors"][0]["location"] == ["body", "linked_from_episode_id"]
    too_early = {**linked, "at": (first_received - timedelta(days=1)).isoformat()}
    assert "linked episode's referral" in (await _post(careplan, again.id, "plans", too_early, 422))["detail"]
    unlinked = _plan(datetime.fromisoformat(old))
    assert (await _post(careplan, again.id, "plans", unlinked, 422))[
        "detail"
    ] == "the time is before the episode opened"
