"""The team pages (issue 22): a team lead's four-week worklist of their team's open episodes,
breached and at risk first; an episode with both clocks, its records and the person's journey;
assigning a named worker, recording a contact, an assessment, a care plan and its agreement
through the pages (the plan clock then met); a named worker's "assigned to me"; and nobody of
another team or organisation seeing any of it.

Episodes are opened as the suite opens them (tests/e2e): a GP practice refers, the single point
of access accepts, triage routes the referral to the team covering the person's postcode (PR1:
the demo team, Central Lancashire focused support, as the decision names it), and careplan
opens the episode."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from contracts.timezones import LONDON
from gateway.web.demo_people import DEMO_TEAM_ID
from gateway.web.roles import Role
from tests.e2e.test_care_journey import People, _ready, _referral
from tests.support import eventually
from tests.web.conftest import WebSuite
from tests.web.test_frontend import _check_page

LEAD = "lee.lead@lscft.example"
WORKER = "nadia.worker@lscft.example"
OTHER_LEAD = "olu.lead@lscft.example"
RXN_LEAD = "rhys.lead@other-trust.example"
OTHER_TEAM = "00000000-0000-5000-8000-000000000001"


async def _episode(people: People, nhs: str, key: str, *, received_days_ago: int = 0) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if received_days_ago:
        received = datetime.now(UTC) - timedelta(days=received_days_ago)
        extra = {"received_at": received.isoformat(), "backdated_reason": "Entered from the paper log"}
    referral = await people.http.post(
        "/triage/referrals",
        json=_referral(nhs, **extra),
        headers={**people.headers["gp-ehr"], "Idempotency-Key": key},
    )
    assert referral.status_code == 201, referral.text
    decided = await people.http.post(
        f"/triage/referrals/{referral.json()['id']}/decisions",
        json={"action": "accept", "route": "focused_support", "team_id": DEMO_TEAM_ID},
        headers=people.headers["crisis-app"],
    )
    assert decided.status_code == 200, decided.text

    async def opened() -> dict[str, Any] | None:
        found = await people.http.get(
            "/careplan/episodes",
            params={"referral_id": referral.json()["id"]},
            headers=people.headers["lscft-clinician"],
        )
        items = found.json()["items"]
        return dict(items[0]) if items else None

    episode: dict[str, Any] = await eventually(opened, timeout=15)
    assert episode["team_id"] == DEMO_TEAM_ID, episode["team_id"]
    return episode


async def _assessed(people: People, episode: dict[str, Any], days_ago: int) -> None:
    at = (datetime.now(UTC) - timedelta(days=days_ago)).isoformat()
    answer = await people.post(
        f"/careplan/episodes/{episode['id']}/assessments", {"started_at": at, "completed_at": at}
    )
    assert answer.status_code == 200, answer.text


async def _practitioner(people: People, name: str, staff_id: str) -> str:
    made = await people.post(
        "/registry/practitioners",
        {
            "attributes": {"staff_id": staff_id, "name": name, "profession": "mental_health_nurse"},
            "valid_from": "2025-01-01",
        },
        "registry-admin",
    )
    assert made.status_code == 201, made.text
    member = await people.post(
        "/registry/memberships",
        {
            "attributes": {"practitioner_id": made.json()["id"], "team_id": DEMO_TEAM_ID},
            "valid_from": "2025-01-01",
        },
        "registry-admin",
    )
    assert member.status_code == 201, member.text
    return str(made.json()["id"])


def _london_now() -> dict[str, str]:
    now = datetime.now(LONDON)
    return {"date": now.date().isoformat(), "time": now.strftime("%H:%M")}


def _positions(html: str, *episode_ids: str) -> list[int]:
    return [html.index(f"/app/team/episodes/{episode_id}") for episode_id in episode_ids]


async def test_a_team_lead_works_the_four_week_worklist(web_suite: WebSuite) -> None:
    suite = web_suite.suite
    await _ready(suite)
    await web_suite.person(
        LEAD, [Role.TEAM_LEAD], organisation="RW5", name="Lee Parkinson", team_id=DEMO_TEAM_ID
    )
    await web_suite.person(
        WORKER, [Role.TEAM_MEMBER], organisation="RW5", name="Nadia Hussain", team_id=DEMO_TEAM_ID
    )
    async with httpx.AsyncClient(base_url=suite.url, timeout=15) as http:
        people = People(suite, http)
        await people.login("gp-ehr", "crisis-app", "lscft-clinician", "registry-admin")
        # Breached: assessed 30 days ago, no plan. At risk: assessed 23 days ago. Not started: new.
        breached = await _episode(people, "9876543210", "team-breached", received_days_ago=31)
        await _assessed(people, breached, 30)
        at_risk = await _episode(people, "9434765919", "team-at-risk", received_days_ago=24)
        await _assessed(people, at_risk, 23)
        fresh = await _episode(people, "9434765870", "team-fresh")
        nadia = await _practitioner(people, "Nadia Hussain", "LSC-7101")

    async with web_suite.browser() as browser:
        await browser.sign_in(LEAD)
        home = await browser.get("/app/")
        assert 'href="/app/team"' in home.text and "Team worklist" in home.text

        worklist = await browser.get("/app/team")
        assert worklist.status_code == 200, worklist.text[:500]
        html = worklist.text
        _check_page(html)  # well formed, no inline script or style
        assert "Four-week worklist" in html and "Central Lancashire" in html
        first, second, third = _positions(html, breached["id"], at_risk["id"], fresh["id"])
        assert first < second < third  # breached, then at risk, then no clock running
        assert "2 days over" in html and "5 days left" in html and "Not started" in html
        assert ">Breached<" in html and ">At risk<" in html
        received = datetime.now(LONDON) - timedelta(days=31)
        assert f"{received.day} {received:%B %Y}" in html  # the referral's received date
        assert "Not assigned" in html

        only_breached = await browser.get("/app/team?state=breached")
        assert breached["id"] in only_breached.text and at_risk["id"] not in only_breached.text

        # The breached episode: both clocks, the records, the journey.
        page = await browser.get(f"/app/team/episodes/{breached['id']}")
        assert page.status_code == 200, page.text[:500]
        assert "Plan clock" in page.text and "National four-week wait" in page.text
        plan_clock = page.text.split("Plan clock", 1)[1].split("National four-week wait", 1)[0]
        assert ">Breached<" in plan_clock and "2 days over" in plan_clock and "Due by" in plan_clock
        assert "Assessment" in page.text
        assert "Referral received" in page.text and "Episode opened" in page.text

        # Agreeing a late plan without saying why is refused, with the error at its field.
        plan_page = f"/app/team/episodes/{breached['id']}/plan"
        now = _london_now()
        plan = {
            "at-date": now["date"], "at-time": now["time"], "needs": "Low mood\nSleep",
            "goals": "Walk the dog every morning", "crisis_plan": "Call the crisis line",
            "contingency_plan": "The duty worker calls", "review_date": "2027-06-01",
        }  # fmt: skip
        saved = await browser.submit(plan_page, plan_page, plan)
        assert saved.status_code == 303, saved.text[:500]
        agreement_page = f"/app/team/episodes/{breached['id']}/agreement"
        late = await browser.submit(
            agreement_page,
            agreement_page,
            {
                "agreed-date": now["date"],
                "agreed-time": now["time"],
                "how_agreed": "in_person",
                "breach_reason": "",
            },
        )
        assert late.status_code == 422, late.text[:500]
        assert "There is a problem" in late.text and 'href="#breach_reason"' in late.text
        assert "<title>Error: " in late.text
        _check_page(late.text)

        # The at-risk episode, worked through the pages.
        base = f"/app/team/episodes/{at_risk['id']}"

        async def assigned() -> bool:
            answer = await browser.submit(
                f"{base}/named-worker", f"{base}/named-worker", {"practitioner_id": nadia}
            )
            return answer.status_code == 303

        await eventually(assigned, timeout=20, interval=0.5)  # careplan learns the team's practitioners
        done = await browser.get(f"{base}?done=named_worker")
        assert "The named worker is assigned." in done.text and "Nadia Hussain" in done.text

        missing = await browser.submit(
            f"{base}/contact", f"{base}/contact", {"at-date": now["date"], "at-time": ""}
        )
        assert missing.status_code == 422
        assert 'href="#at-time"' in missing.text and 'href="#attended"' in missing.text
        assert 'href="#mechanism"' in missing.text
        contact = await browser.submit(
            f"{base}/contact",
            f"{base}/contact",
            {"at-date": now["date"], "at-time": now["time"], "attended": "yes", "mechanism": "telephone"},
        )
        assert contact.status_code == 303, contact.text[:500]
        assert contact.headers["location"] == f"{base}?done=contact"
        future = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
        refused = await browser.submit(
            f"{base}/contact",
            f"{base}/contact",
            {"at-date": future, "at-time": "10:00", "attended": "yes", "mechanism": "video"},
        )
        assert refused.status_code == 422 and 'href="#at-date"' in refused.text
        assert "The time is in the future" in refused.text

        saved = await browser.submit(f"{base}/plan", f"{base}/plan", plan)
        assert saved.status_code == 303, saved.text[:500]
        agreed = await browser.submit(
            f"{base}/agreement",
            f"{base}/agreement",
            {
                "agreed-date": now["date"],
                "agreed-time": now["time"],
                "how_agreed": "in_person",
                "breach_reason": "",
            },
        )
        assert agreed.status_code == 303, agreed.text[:500]
        page = await browser.get(agreed.headers["location"])
        assert "agreement to the care plan is recorded" in page.text
        plan_clock = page.text.split("Plan clock", 1)[1].split("National four-week wait", 1)[0]
        assert ">Met<" in plan_clock and "(day 23)" in plan_clock
        records = page.text.split("Records in this episode", 1)[1]
        assert records.index("Assessment") < records.index("Contact") < records.index("Care plan agreed")
        assert "Telephone, attended" in records

        met = await browser.get("/app/team")
        assert at_risk["id"] in met.text  # still open, its clock stopped

    async with web_suite.browser() as browser:
        await browser.sign_in(WORKER)
        mine = await browser.get("/app/team?worker=me")
        assert mine.status_code == 200 and "Assigned to me" in mine.text
        assert at_risk["id"] in mine.text and breached["id"] not in mine.text and fresh["id"] not in mine.text
        assert "Nadia Hussain (you)" in mine.text


async def test_another_team_or_organisation_sees_none_of_the_teams_episodes(web_suite: WebSuite) -> None:
    suite = web_suite.suite
    await _ready(suite)
    await web_suite.person(OTHER_LEAD, [Role.TEAM_LEAD], organisation="RW5", team_id=OTHER_TEAM)
    await web_suite.person(RXN_LEAD, [Role.TEAM_LEAD], organisation="RXN", team_id=OTHER_TEAM)
    await web_suite.person("tara.triage@lscft.example", [Role.TRIAGE_PRACTITIONER], organisation="RW5")
    async with httpx.AsyncClient(base_url=suite.url, timeout=15) as http:
        people = People(suite, http)
        await people.login("gp-ehr", "crisis-app", "lscft-clinician")
        episode = await _episode(people, "9434765919", "team-private")
    address = f"/app/team/episodes/{episode['id']}"
    for subject in (OTHER_LEAD, RXN_LEAD):
        async with web_suite.browser() as browser:
            await browser.sign_in(subject)
            worklist = await browser.get("/app/team")
            assert worklist.status_code == 200, worklist.text[:500]
            assert episode["id"] not in worklist.text and "No open episodes yet" in worklist.text
            for path in (address, f"{address}/contact", f"{address}/named-worker"):
                refused = await browser.get(path)
                assert refused.status_code == 404, (subject, path, refused.status_code)
                assert "No such episode" in refused.text and episode["id"] not in refused.text
            home = await browser.get("/app/")
            written = await browser.post(
                f"{address}/contact",
                data={
                    "csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', home.text).group(1),  # type: ignore[union-attr]
                    "at-date": _london_now()["date"], "at-time": _london_now()["time"],
                    "attended": "yes", "mechanism": "telephone",
                },
            )  # fmt: skip
            assert written.status_code == 404
    async with web_suite.browser() as browser:
        await browser.sign_in("tara.triage@lscft.example")
        assert "Team worklist" not in (await browser.get("/app/")).text
        refused = await browser.get("/app/team")
        assert refused.status_code == 403 and "team leads and team members" in refused.text
    async with httpx.AsyncClient(base_url=suite.url, timeout=15) as http:
        # The episode itself is untouched by the refused write.
        people = People(suite, http)
        await people.login("lscft-clinician")
        read = await http.get(
            f"/careplan/episodes/{episode['id']}", headers=people.headers["lscft-clinician"]
        )
        assert read.json()["records"] == []
