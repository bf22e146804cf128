"""Triage, careplan and the FHIR views tell the same story, whatever happens to a referral.

A hypothesis state machine drives random sequences of submit / decide (accept, override,
decline, close, transfer, reprioritise) / re-refer the same person / discharge the episode, through
the gateway, against the whole suite with a real nats-server, on SQLite and PostgreSQL. The
expected answer of each decision comes from a table written here independently of the triage
domain's (a decision the status does not allow is a 409, and changes nothing). After every step,
once the events have flowed, it checks for the people that step touched (and once at the end
for everyone) that:

- the ServiceRequest and the Task say what triage's referral says (status, and the Task's owner is
  the referral's team);
- careplan has at most one episode per referral; a referral routed to a clinical team has its
  episode, or was linked to the person's episode as new information; a closed referral has no
  open episode;
- the EpisodeOfCare is active exactly when careplan's episode is open;
- nobody has two open episodes at one team.

Hypothesis runs the machine in a worker thread; each HTTP call is run on the suite's event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Coroutine
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from services.registry.seed import REFERENCE, desired_records
from shared.fhir_terms import TRIAGE_TASK_STATUS, service_request_status
from tests.e2e.conftest import Suite
from tests.triage.support import nhs_number

EPISODE_ROUTES = {
    "crisis_response", "home_treatment", "front_door_primary", "front_door_secondary", "focused_support",
    "staying_well", "reaccess",
}  # fmt: skip
# What each decision is allowed from, written from the issue, not from the triage domain module.
ALLOWED = {
    "accept": {"received"},
    "override": {"received", "signposted"},
    "decline": {"received"},
    "close": {"received", "routed", "signposted"},
    "transfer": {"routed"},
    "reprioritise": {"received", "routed", "signposted"},
}
TEAMS = [
    record.id
    for record in desired_records(json.loads(REFERENCE.read_text()))
    if record.kind.value == "team"
    and record.attributes.get("service_offer") in ("focused_support", "front_door_primary", "home_treatment")
][:4]


def _valid(first_nine: str) -> bool:
    total = sum(int(d) * w for d, w in zip(first_nine, range(10, 1, -1), strict=True))
    return 11 - total % 11 != 10


_numbers = (nhs_number(f"5{n:08d}") for n in itertools.count(1000) if _valid(f"5{n:08d}"))


class Runner:
    """Runs the suite's coroutines on its own loop from hypothesis's thread, as three clients
    (tokens last five minutes: a refused token is renewed once)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, http: httpx.AsyncClient, suite: Suite) -> None:
        self.loop, self.http, self.suite = loop, http, suite
        self.tokens: dict[str, str] = {}

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def call(self, method: str, path: str, client: str, **kwargs: Any) -> httpx.Response:
        extra = kwargs.pop("headers", {})
        for attempt in range(2):
            if client not in self.tokens or attempt:
                self.tokens[client] = self.run(self.suite.token(client))
            headers = {"Authorization": f"Bearer {self.tokens[client]}", **extra}
            response: httpx.Response = self.run(self.http.request(method, path, headers=headers, **kwargs))
            if response.status_code != 401:
                break
        return response

    def read(self, path: str, client: str, **kwargs: Any) -> dict[str, Any]:
        response = self.call("GET", path, client, **kwargs)
        assert response.status_code == 200, (path, response.text)
        return dict(response.json())


class Lifecycle(RuleBasedStateMachine):
    runner: Runner
    referrals = Bundle("referrals")

    def __init__(self) -> None:
        super().__init__()
        self.known: dict[str, dict[str, Any]] = {}  # referral id → {nhs, status}
        self.keys = itertools.count()
        # The people a step touched: only their referrals can have changed, so the check after a
        # step reads theirs (reading every referral after every step made the test quadratic);
        # the teardown reads them all once.
        self.touched: set[str] = set()

    # --- steps ----------------------------------------------------------------------------------

    def _submit(self, nhs: str, crisis: bool, needs: list[str]) -> str:
        body = {
            "person": {"nhs_number": nhs, "given_name": "Alex", "family_name": "Stateful", "birth_date": "1985-02-03",
                       "postcode": "PR1 3BQ"},
            "source": "gp", "needs": needs, "consent_to_share": True, "risks": [],
        }  # fmt: skip
        path = "/triage/crisis/referrals" if crisis else "/triage/referrals"
        response = self.runner.call(
            "POST", path, "crisis-app" if crisis else "gp-ehr",
            json=body, headers={"Idempotency-Key": f"stateful-{id(self)}-{next(self.keys)}"},
        )  # fmt: skip
        assert response.status_code == 201, response.text
        referral = response.json()
        self.known[referral["id"]] = {"nhs": nhs, "status": referral["status"]}
        self.touched.add(nhs)
        return str(referral["id"])

    @initialize(target=referrals)
    def first(self) -> str:
        """Every story starts with one referral routed to a team, so what follows routing is reached."""
        referral = self._submit(next(_numbers), False, ["low_mood"])
        self.decide(referral, "accept", "front_door_primary", TEAMS[0], 3)
        return referral

    @rule(
        target=referrals,
        crisis=st.booleans(),
        needs=st.sampled_from([["low_mood"], ["psychosis"], ["housing"]]),
    )
    def submit(self, crisis: bool, needs: list[str]) -> str:
        return self._submit(next(_numbers), crisis, needs)

    @rule(target=referrals, earlier=referrals)
    def refer_again(self, earlier: str) -> str:
        """The same person again: linked to what is waiting, or to the episode they are in."""
        return self._submit(self.known[earlier]["nhs"], False, ["anxiety"])

    @rule(
        referral=referrals,
        # Up to four decisions about the same referral in a row, so that what follows routing
        # (transfer, close, discharge), where services can disagree, is reached often.
        first=st.sampled_from(["accept", "accept", "accept", "override", "decline", "close", "reprioritise"]),
        then=st.lists(
            st.sampled_from(
                ["transfer", "transfer", "close", "reprioritise", "accept", "override", "decline"]
            ),
            max_size=3,
        ),
        route=st.sampled_from(["focused_support", "front_door_primary", "home_treatment", "staying_well"]),
        teams=st.lists(st.sampled_from(TEAMS), min_size=4, max_size=4),
        priority=st.sampled_from([1, 2, 3, 4]),
    )
    def decide_in_turn(
        self, referral: str, first: str, then: list[str], route: str, teams: list[str], priority: int
    ) -> None:
        for action, team in zip([first, *then], teams, strict=False):
            self.decide(referral, action, route, team, priority)

    def decide(self, referral: str, action: str, route: str, team: str, priority: int) -> None:
        self.touched.add(self.known[referral]["nhs"])
        current = self.runner.read(f"/triage/referrals/{referral}", "crisis-app")
        body: dict[str, Any] = {"action": action, "reason": "stateful test"}
        if action in ("override", "transfer"):
            body.update(route=route, team_id=team)
        elif action == "decline":
            body["route"] = "staying_well"
        elif action == "reprioritise":
            body["priority"] = priority if priority != current["priority"] else (3 if priority != 3 else 2)
        response = self.runner.call(
            "POST", f"/triage/referrals/{referral}/decisions", "crisis-app", json=body,
            headers={"X-End-User-Id": "clinician-1", "X-End-User-Role": "triage_practitioner"},
        )  # fmt: skip
        if current["status"] not in ALLOWED[action]:
            assert response.status_code == 409, (action, current["status"], response.text)
            after = self.runner.read(f"/triage/referrals/{referral}", "crisis-app")
            assert after["version"] == current["version"]  # refused: nothing changed
            return
        if response.status_code == 409:
            # Allowed by status, refused by what careplan has told triage: a discharged episode
            # cannot be transferred.
            assert action == "transfer" and "discharged" in response.json()["detail"], response.text
            return
        assert response.status_code in (200, 422), response.text
        if response.status_code == 422:
            # Only for a transfer to the same team and route.
            assert action == "transfer", response.text
            return
        self.known[referral]["status"] = response.json()["status"]

    @rule(referral=referrals)
    def discharge(self, referral: str) -> None:
        self.touched.add(self.known[referral]["nhs"])
        episodes = self._episodes(referral)
        if not episodes or episodes[0]["status"] != "open":
            return
        response = self.runner.call(
            "POST", f"/careplan/episodes/{episodes[0]['id']}/discharge", "lscft-clinician",
            json={"at": _now(), "reason": "persons_choice", "without_plan_reason": "Declined further contact"},
        )  # fmt: skip
        assert response.status_code in (200, 403, 422), response.text

    # --- the story every view tells --------------------------------------------------------------

    def _episodes(self, referral: str) -> list[dict[str, Any]]:
        found = self.runner.read("/careplan/episodes", "lscft-clinician", params={"referral_id": referral})
        return list(found["items"])

    def _person_episodes(self, person_id: str) -> list[dict[str, Any]]:
        found = self.runner.read("/careplan/episodes", "lscft-clinician", params={"person_id": person_id})
        return list(found["items"])

    def _linked_to(self, referral_id: str, person_id: str) -> list[dict[str, Any]]:
        """The person's episodes this referral was linked to as new information."""
        linked = []
        for episode in self._person_episodes(person_id):
            records = self.runner.read(f"/careplan/episodes/{episode['id']}", "lscft-clinician")["records"]
            if any(
                r["kind"] == "new_referral" and r["data"].get("linked_referral_id") == referral_id
                for r in records
            ):
                linked.append(episode)
        return linked

    def _disagreements(self, nhs_numbers: set[str] | None = None) -> list[str]:
        """What the views disagree on, for the referrals of these people (everyone by default)."""
        problems: list[str] = []
        people: set[str] = set()
        for referral_id, known in self.known.items():
            if nhs_numbers is not None and known["nhs"] not in nhs_numbers:
                continue
            referral = self.runner.read(f"/triage/referrals/{referral_id}", "crisis-app")
            status, route = referral["status"], referral["route"]
            people.add(referral["person_id"])
            request = self.runner.read(f"/fhir/ServiceRequest/{referral_id}", "crisis-app")
            task = self.runner.read(f"/fhir/Task/{referral_id}", "crisis-app")
            episodes = self._episodes(referral_id)
            carrying = episodes or (
                self._linked_to(referral_id, referral["person_id"])
                if status == "routed" and route in EPISODE_ROUTES
                else []
            )
            # Its care has ended once every episode carrying it is discharged.
            ended = bool(carrying) and all(e["status"] == "discharged" for e in carrying)
            wanted = service_request_status(status, route, ended)
            if request.get("status") != wanted:
                problems.append(
                    f"{referral_id}: ServiceRequest {request.get('status')} for {status}, {route}"
                )
            if status == "routed" and (referral["care_ended_at"] is not None) != ended:
                problems.append(
                    f"{referral_id}: care_ended_at {referral['care_ended_at']}, episodes {carrying}"
                )
            if task.get("status") != TRIAGE_TASK_STATUS[status]:
                problems.append(f"{referral_id}: Task {task.get('status')} for {status}")
            if len(episodes) > 1:
                problems.append(f"{referral_id}: {len(episodes)} episodes")
            if status == "closed" and any(e["status"] == "open" for e in episodes):
                problems.append(f"{referral_id}: closed in triage, episode still open")
            if status == "routed" and route in EPISODE_ROUTES:
                # Its own episode, or the person's episode it was linked to as new information.
                if not carrying:
                    problems.append(f"{referral_id}: routed to {route}, careplan has no episode")
                for episode in episodes:
                    if episode["status"] == "open" and episode["team_id"] != task.get("owner", {}).get(
                        "reference", ""
                    ).removeprefix("HealthcareService/"):
                        problems.append(
                            f"{referral_id}: episode at {episode['team_id']}, Task owner {task.get('owner')}"
                        )
            for episode in episodes:
                view = self.runner.read(f"/fhir/EpisodeOfCare/{episode['id']}", "lscft-clinician")
                wanted = "active" if episode["status"] == "open" else "finished"
                if view.get("status") != wanted:
                    problems.append(
                        f"{episode['id']}: EpisodeOfCare {view.get('status')} for {episode['status']}"
                    )
        for person_id in people:
            open_teams = [e["team_id"] for e in self._person_episodes(person_id) if e["status"] == "open"]
            if len(open_teams) != len(set(open_teams)):
                problems.append(f"{person_id}: two open episodes at one team ({open_teams})")
        return problems

    def _agree(self, nhs_numbers: set[str] | None) -> None:
        # Events flow between the services: the views agree once they have been applied.
        deadline = time.monotonic() + 10
        while (problems := self._disagreements(nhs_numbers)) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert not problems, problems

    @invariant()
    def every_view_agrees(self) -> None:
        touched, self.touched = self.touched, set()
        self._agree(touched)

    def teardown(self) -> None:
        # Once more over everyone: a step must not have changed a person it did not touch.
        if self.known:
            self._agree(None)


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat()


async def test_triage_careplan_and_fhir_tell_the_same_story(suite: Suite) -> None:
    assert TEAMS, "the seed has clinical teams to transfer to"
    async with httpx.AsyncClient(base_url=suite.url, timeout=30) as http:
        # The machine checks the lifecycle, not rate limits (tests/security has those): each step's
        # check reads every view of every referral, far more than a client's per-minute rate.
        suite.settings.rate_limit_per_minute = 100_000
        Lifecycle.runner = Runner(asyncio.get_running_loop(), http, suite)
        await asyncio.to_thread(
            run_state_machine_as_test,
            Lifecycle,
            settings=settings(
                max_examples=6,
                stateful_step_count=15,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=False,
                database=None,
                # No shrinking: each replay of a failing story waits out the settle time; the
                # story that failed (at most fifteen steps) is printed as it was.
                phases=[Phase.generate],
            ),
        )
