"""The clock and journey rules of issue 17 through the gateway with a real nats-server, on SQLite
and PostgreSQL: a revised plan after a breached first agreement needs no second breach reason; a
late entry that shows the promise was kept withdraws the breach already sent (a correction
event, the journey showing both, the worklist no longer breached); the journey is in clinical
time with when each step was entered beside it; clinical times before the episode opened are
refused.

Careplan's clock is the service's injectable `app.state.clock`: moving it thirty days on lets the
scheduler find the breach without waiting a month."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.e2e.conftest import Suite
from tests.e2e.test_care_journey import People, _published, _ready, _referral
from tests.support import eventually


def _plan(at: datetime) -> dict[str, Any]:
    return {
        "at": at.isoformat(), "needs": ["low mood"], "goals": ["Back to work"], "crisis_plan": "Call the line",
        "contingency_plan": "Duty worker", "review_date": (at + timedelta(days=60)).date().isoformat(),
    }  # fmt: skip


async def _breached(suite: Suite, episode_id: str) -> bool:
    sent = await _published(suite, "cmh.careplan.clock.breached")
    return any(m["data"]["episode_id"] == episode_id for m in sent)


async def test_a_revised_plan_after_a_breached_first_agreement_needs_no_second_reason(suite: Suite) -> None:
    await _ready(suite)
    async with httpx.AsyncClient(base_url=suite.url, timeout=30) as http:
        people = People(suite, http)
        await people.login("gp-ehr", "crisis-app", "lscft-clinician")
        episode = await people.routed_episode(_referral("9434765919"), "revised-1")
        path = f"/careplan/episodes/{episode['id']}"
        start = datetime.now(UTC)
        assessed = {"started_at": start.isoformat(), "completed_at": start.isoformat()}
        assert (await people.post(f"{path}/assessments", assessed)).status_code == 200
        later = start + timedelta(days=31)
        suite.apps["careplan"].state.clock = lambda: later
        assert (await people.post(f"{path}/plans", _plan(later))).status_code == 200
        first = await people.post(
            f"{path}/plans/agreement",
            {"agreed_at": later.isoformat(), "how_agreed": "in_person", "breach_reason": "capacity"},
        )
        assert first.status_code == 200 and first.json()["clocks"]["plan"]["state"] == "breached"
        revised_at = later + timedelta(minutes=1)
        suite.apps["careplan"].state.clock = lambda: revised_at + timedelta(minutes=1)
        assert (await people.post(f"{path}/plans", _plan(revised_at))).status_code == 200
        revised = await people.post(
            f"{path}/plans/agreement", {"agreed_at": revised_at.isoformat(), "how_agreed": "telephone"}
        )
        assert revised.status_code == 200, revised.text  # seen: 422 asking for a second breach reason


async def test_a_late_entry_withdraws_the_breach_and_the_journey_shows_both(suite: Suite) -> None:
    await _ready(suite)
    async with httpx.AsyncClient(base_url=suite.url, timeout=30) as http:
        people = People(suite, http)
        await people.login("gp-ehr", "crisis-app", "lscft-clinician")
        episode = await people.routed_episode(_referral("9876543210"), "late-entry-1")
        path = f"/careplan/episodes/{episode['id']}"
        opened = datetime.fromisoformat(episode["opened_at"])
        start = datetime.now(UTC)
        assessed = {"started_at": start.isoformat(), "completed_at": start.isoformat()}
        assert (await people.post(f"{path}/assessments", assessed)).status_code == 200
        # Before the episode opened: refused (an assessment may precede routing; a review may not).
        early = await people.post(f"{path}/reviews", {"at": (opened - timedelta(days=1)).isoformat()})
        assert early.status_code == 422 and "before the episode opened" in early.text

        # Thirty days on, with no plan recorded: the scheduler sends the breach.
        later = start + timedelta(days=30)
        suite.apps["careplan"].state.clock = lambda: later
        await eventually(lambda: _breached(suite, episode["id"]), timeout=20)

        # Then the plan agreed on day 2 is entered late: the promise was kept after all.
        agreed = start + timedelta(days=2)
        assert (await people.post(f"{path}/plans", _plan(agreed - timedelta(hours=1)))).status_code == 200
        entered = await people.post(
            f"{path}/plans/agreement", {"agreed_at": agreed.isoformat(), "how_agreed": "in_person"}
        )
        assert entered.status_code == 200, entered.text
        assert entered.json()["clocks"]["plan"]["state"] == "met"

        async def corrected() -> list[dict[str, Any]]:
            sent = await _published(suite, "cmh.careplan.clock.corrected")
            return [m for m in sent if m["data"]["episode_id"] == episode["id"]]

        corrections = await eventually(corrected, timeout=15)
        assert {c["data"]["withdrawn"] for c in corrections} >= {"breached"}

        async def journey() -> list[dict[str, Any]] | None:
            found = await http.get(
                f"/careplan/people/{episode['person_id']}/journey", headers=people.headers["lscft-clinician"]
            )
            entries = found.json()["entries"]
            kinds = [e["kind"] for e in entries]
            return entries if "clock_breached" in kinds and "clock_corrected" in kinds else None

        entries = await eventually(journey, timeout=15)
        kinds = [e["kind"] for e in entries]
        # In clinical time: the agreement (day 2) before the breach the scheduler saw (day 30) and its
        # withdrawal, each with when it was entered beside it.
        assert kinds.index("plan_agreement") < kinds.index("clock_breached") <= kinds.index("clock_corrected")
        times = [datetime.fromisoformat(e["at"]) for e in entries]
        assert times == sorted(times)
        agreement = next(e for e in entries if e["kind"] == "plan_agreement")
        assert datetime.fromisoformat(agreement["at"]) == agreed and agreement["recorded_at"]
        worklist = (await http.get("/careplan/worklist", headers=people.headers["lscft-clinician"])).json()
        assert all(item["episode_id"] != episode["id"] for item in worklist["items"] if item["breached"])
