"""Care planning end to end through the gateway with a real nats-server: a routed referral opens
an episode; assessment, contact, outcome measure and an agreed plan stop both clocks; an
assessment completed 30 days ago with no plan yields exactly one at-risk and one breach event
and shows breached on the worklist; a discharge then a new referral within the window goes to
the same named worker, and the journey shows both episodes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.e2e.conftest import Suite
from tests.support import eventually, published


async def _published(suite: Suite, subject: str) -> list[dict[str, Any]]:
    return await published(suite.settings, subject)


class People:
    def __init__(self, suite: Suite, http: httpx.AsyncClient) -> None:
        self.suite, self.http = suite, http
        self.headers: dict[str, dict[str, str]] = {}

    async def login(self, *clients: str) -> None:
        for client in clients:
            self.headers[client] = {"Authorization": f"Bearer {await self.suite.token(client)}"}

    async def routed_episode(self, body: dict[str, Any], key: str) -> dict[str, Any]:
        referral = await self.http.post(
            "/triage/referrals", json=body, headers={**self.headers["gp-ehr"], "Idempotency-Key": key}
        )
        assert referral.status_code == 201, referral.text
        if referral.json()["status"] == "received":  # a re-access is routed at intake, undecided
            decided = await self.http.post(
                f"/triage/referrals/{referral.json()['id']}/decisions",
                json={"action": "accept"},
                headers=self.headers["crisis-app"],
            )
            assert decided.status_code == 200, decided.text

        async def opened() -> dict[str, Any] | None:
            found = await self.http.get(
                "/careplan/episodes",
                params={"referral_id": referral.json()["id"]},
                headers=self.headers["lscft-clinician"],
            )
            items = found.json()["items"]
            return items[0] if items else None

        return await eventually(opened, timeout=15)  # type: ignore[no-any-return]

    async def post(self, path: str, body: dict[str, Any], client: str = "lscft-clinician") -> httpx.Response:
        return await self.http.post(path, json=body, headers=self.headers[client])


def _referral(nhs: str, **extra: Any) -> dict[str, Any]:
    return {
        "person": {"nhs_number": nhs, "given_name": "Robin", "family_name": "Example", "birth_date": "1970-05-05", "postcode": "PR1 3BQ"},
        "source": "gp", "needs": ["low_mood"], "consent_to_share": False, **extra,
    }  # fmt: skip


async def _ready(suite: Suite) -> None:
    from tests.e2e.conftest import read_models_filled

    await eventually(lambda: read_models_filled(suite.triage_app), timeout=30)


async def test_referral_to_agreed_plan_stops_both_clocks(suite: Suite) -> None:
    await _ready(suite)
    async with httpx.AsyncClient(base_url=suite.url, timeout=10) as http:
        people = People(suite, http)
        await people.login("gp-ehr", "crisis-app", "lscft-clinician", "other-provider")
        episode = await people.routed_episode(_referral("9434765919"), "plan-1")
        assert (
            episode["clocks"]["plan"]["state"] == "not_started"
            and episode["clocks"]["national"]["state"] == "running"
        )
        path = f"/careplan/episodes/{episode['id']}"
        now = datetime.now(UTC)
        # Another provider cannot tell LSCFT's episode exists, let alone write in it.
        refused = await people.post(
            f"{path}/contacts",
            {"at": now.isoformat(), "attended": True, "mechanism": "face_to_face"},
            "other-provider",
        )
        assert refused.status_code == 404
        for sub, body in (
            ("contacts", {"at": now.isoformat(), "attended": True, "mechanism": "face_to_face"}),
            ("assessments", {"started_at": now.isoformat(), "completed_at": now.isoformat(), "meaningful": True}),
            ("outcome-measures", {"at": now.isoformat(), "tool": "DIALOG", "score": 3.5}),
            ("plans", {
                "at": now.isoformat(), "needs": ["low mood"], "goals": ["Get back to my allotment"],
                "crisis_plan": "Call the crisis line", "contingency_plan": "Named worker visits",
                "review_date": (now + timedelta(days=60)).date().isoformat(),
            }),
            ("plans/agreement", {"agreed_at": now.isoformat(), "how_agreed": "in_person"}),
        ):  # fmt: skip
            response = await people.post(f"{path}/{sub}", body)
            assert response.status_code == 200, (sub, response.text)
        clocks = (await http.get(f"{path}/clocks", headers=people.headers["lscft-clinician"])).json()
        assert clocks["plan"]["state"] == "met" and clocks["plan"]["days_elapsed"] == 0
        assert clocks["national"]["state"] == "met" and clocks["national"]["missing"] == []
        # Clinical times cannot be in the future or before the referral.
        future = await people.post(f"{path}/reviews", {"at": (now + timedelta(days=2)).isoformat()})
        assert future.status_code == 422


async def test_an_overdue_plan_is_flagged_once_and_breached_on_the_worklist(suite: Suite) -> None:
    await _ready(suite)
    async with httpx.AsyncClient(base_url=suite.url, timeout=10) as http:
        people = People(suite, http)
        await people.login("gp-ehr", "crisis-app", "lscft-clinician")
        received = datetime.now(UTC) - timedelta(days=31)
        episode = await people.routed_episode(
            _referral(
                "9876543210", received_at=received.isoformat(), backdated_reason="Entered from the paper log"
            ),
            "late-1",
        )
        assessed = datetime.now(UTC) - timedelta(days=30)
        response = await people.post(
            f"/careplan/episodes/{episode['id']}/assessments",
            {"started_at": assessed.isoformat(), "completed_at": assessed.isoformat()},
        )
        assert response.status_code == 200, response.text

        async def flagged() -> bool:
            at_risk = [
                m
                for m in await _published(suite, "cmh.careplan.clock.at_risk")
                if m["data"]["episode_id"] == episode["id"]
            ]
            breached = [
                m
                for m in await _published(suite, "cmh.careplan.clock.breached")
                if m["data"]["episode_id"] == episode["id"]
            ]
            return len(at_risk) == 1 and len(breached) == 1

        await eventually(flagged, timeout=20)
        # Several more scans (every 0.3 s) send nothing more.
        import asyncio

        await asyncio.sleep(1.5)
        assert await flagged()
        worklist = (await http.get("/careplan/worklist", headers=people.headers["lscft-clinician"])).json()
        mine = next(item for item in worklist["items"] if item["episode_id"] == episode["id"])
        assert mine["breached"] is True and mine["days_remaining"] == -2
        assert worklist["items"][0]["days_remaining"] <= mine["days_remaining"]  # ordered by days remaining
        # Agreeing now needs a breach reason.
        plan = {"at": datetime.now(UTC).isoformat(), "needs": ["x"], "goals": ["y"], "crisis_plan": "z", "contingency_plan": "w",
                "review_date": "2027-01-01"}  # fmt: skip
        assert (await people.post(f"/careplan/episodes/{episode['id']}/plans", plan)).status_code == 200
        late = await people.post(
            f"/careplan/episodes/{episode['id']}/plans/agreement",
            {"agreed_at": datetime.now(UTC).isoformat(), "how_agreed": "telephone"},
        )
        assert late.status_code == 422 and "breach_reason" in late.text
        with_reason = await people.post(
            f"/careplan/episodes/{episode['id']}/plans/agreement",
            {
                "agreed_at": datetime.now(UTC).isoformat(),
                "how_agreed": "telephone",
                "breach_reason": "capacity",
            },
        )
        assert with_reason.status_code == 200 and with_reason.json()["clocks"]["plan"]["state"] == "breached"


async def test_a_re_referral_after_discharge_keeps_the_named_worker_and_one_journey(suite: Suite) -> None:
    await _ready(suite)
    async with httpx.AsyncClient(base_url=suite.url, timeout=10) as http:
        people = People(suite, http)
        await people.login("gp-ehr", "crisis-app", "lscft-clinician", "registry-admin")
        episode = await people.routed_episode(_referral("9434765870"), "journey-1")
        # The registry records a practitioner of the episode's team; careplan learns it from events.
        practitioner = await people.post(
            "/registry/practitioners",
            {
                "attributes": {
                    "staff_id": "LSC-7001",
                    "name": "Kim Nurse",
                    "profession": "mental_health_nurse",
                },
                "valid_from": "2025-01-01",
            },
            "registry-admin",
        )
        assert practitioner.status_code == 201, practitioner.text
        membership = await people.post(
            "/registry/memberships",
            {
                "attributes": {"practitioner_id": practitioner.json()["id"], "team_id": episode["team_id"]},
                "valid_from": "2025-01-01",
            },
            "registry-admin",
        )
        assert membership.status_code == 201, membership.text
        path = f"/careplan/episodes/{episode['id']}"

        async def assigned() -> bool:
            response = await http.put(
                f"{path}/named-worker",
                json={"practitioner_id": practitioner.json()["id"]},
                headers=people.headers["lscft-clinician"],
            )
            return response.status_code == 200

        await eventually(assigned, timeout=15, interval=0.3)
        stranger = await http.put(
            f"{path}/named-worker",
            json={"practitioner_id": "nobody"},
            headers=people.headers["lscft-clinician"],
        )
        assert stranger.status_code == 422
        no_reason = await people.post(
            f"{path}/discharge", {"at": datetime.now(UTC).isoformat(), "reason": "treatment_complete"}
        )
        assert no_reason.status_code == 422  # no agreed plan: a reason is needed
        discharged = await people.post(
            f"{path}/discharge",
            {
                "at": datetime.now(UTC).isoformat(),
                "reason": "persons_choice",
                "without_plan_reason": "Declined further contact",
            },
        )
        assert discharged.status_code == 200 and discharged.json()["reaccess_until"]

        async def reaccessed() -> dict[str, Any] | None:
            from services.triage.models import Discharge

            async with suite.triage_app.state.db.session() as session:
                if await session.get(Discharge, episode["id"]) is None:
                    return None
            return await people.routed_episode(_referral("9434765870"), "journey-2")

        second = await eventually(reaccessed, timeout=15, interval=0.3)
        assert second["route"] == "reaccess" and second["previous_episode_id"] == episode["id"]
        assert (
            second["named_worker_id"] == practitioner.json()["id"] and second["team_id"] == episode["team_id"]
        )

        async def both() -> list[dict[str, Any]] | None:
            journey = (
                await http.get(
                    f"/careplan/people/{episode['person_id']}/journey",
                    headers=people.headers["lscft-clinician"],
                )
            ).json()
            kinds = [entry["kind"] for entry in journey["entries"]]
            return (
                journey["entries"]
                if kinds.count("episode_opened") == 2 and kinds.count("triage_referral_received") == 2
                else None
            )

        entries = await eventually(both, timeout=15)
        kinds = [entry["kind"] for entry in entries]
        assert "discharge" in kinds and "named_worker" in kinds and "triage_referral_routed" in kinds
        assert any(entry.get("linked_episode_id") == episode["id"] for entry in entries)
        assert all("Robin" not in json.dumps(entry) for entry in entries)
