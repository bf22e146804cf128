"""Issue 17 (sections 3-7), end to end through the gateway with a real nats-server, on SQLite and
PostgreSQL: one test per defect seen, each showing it no longer reproduces. A referral's
lifecycle is a state machine (a decision its status does not allow is a 409 and publishes
nothing); a transfer moves the open episode and a close ends it; a crisis referral without coded
risk stays on the queue until contact or a reasoned downgrade; a re-access is routed at intake;
repeat referrals are linked, not duplicated; every decision and record keeps the end user the
calling system asserted; a back-dated receipt needs its reason.

Every assertion is on what the gateway answers or what JetStream carries. Two waits look inside
triage's read-model (as test_care_journey does), only to know when careplan's events have reached
it, so the next referral is not submitted too early."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select

from services.registry.schemas import Kind
from services.registry.seed import seed_id
from services.triage.models import Discharge
from services.triage.models import Episode as TriageEpisode
from tests.e2e.conftest import Suite, read_models_filled
from tests.e2e.test_referral_flow import _published
from tests.support import eventually

FRONT_DOOR = seed_id(Kind.TEAM, "central-lancashire-front-door-primary")  # covers PR1, adults
FOCUSED = seed_id(Kind.TEAM, "central-lancashire-focused-support-adult-mh")
STATE_CONFLICT = "/referral-state"
CLINICIAN = {"X-End-User-Id": "clin-042", "X-End-User-Role": "triage_nurse"}


def nhs_number(stem: int) -> str:
    """A valid NHS number (modulus 11) from a nine-digit stem; the next stem if it has none."""
    while True:
        digits = f"{stem:09d}"
        check = 11 - sum(int(d) * (10 - i) for i, d in enumerate(digits)) % 11
        if check != 10:
            return digits + str(0 if check == 11 else check)
        stem += 1


def referral_body(nhs: str, **extra: Any) -> dict[str, Any]:
    return {
        "person": {"nhs_number": nhs, "given_name": "Sam", "family_name": "Example", "birth_date": "1980-02-02",
                   "postcode": "PR1 3BQ"},
        "source": "gp", "needs": ["low_mood"], "consent_to_share": False, **extra,
    }  # fmt: skip


class Flow:
    """The calling systems, through the gateway."""

    def __init__(self, suite: Suite, http: httpx.AsyncClient) -> None:
        self.suite, self.http = suite, http
        self.auth: dict[str, dict[str, str]] = {}

    @classmethod
    async def start(cls, suite: Suite, http: httpx.AsyncClient, *clients: str) -> Flow:
        await eventually(lambda: read_models_filled(suite.triage_app), timeout=30)
        flow = cls(suite, http)
        for client in ("gp-ehr", "crisis-app", "lscft-clinician", *clients):
            flow.auth[client] = {"Authorization": f"Bearer {await suite.token(client)}"}
        return flow

    async def get(self, path: str, client: str = "crisis-app", **params: Any) -> httpx.Response:
        return await self.http.get(path, params=params, headers=self.auth[client])

    async def post(
        self, path: str, body: dict[str, Any], client: str, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return await self.http.post(path, json=body, headers={**self.auth[client], **(headers or {})})

    async def refer(self, body: dict[str, Any], key: str, *, crisis: bool = False) -> dict[str, Any]:
        path, client = (
            ("/triage/crisis/referrals", "crisis-app") if crisis else ("/triage/referrals", "gp-ehr")
        )
        response = await self.post(path, body, client, {"Idempotency-Key": key})
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    async def decide(
        self, referral_id: str, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return await self.post(f"/triage/referrals/{referral_id}/decisions", body, "crisis-app", headers)

    async def episodes(self, **params: str) -> list[dict[str, Any]]:
        found = await self.get("/careplan/episodes", "lscft-clinician", **params)
        assert found.status_code == 200, found.text
        return found.json()["items"]  # type: ignore[no-any-return]

    async def episode_of(self, referral_id: str) -> dict[str, Any]:
        async def opened() -> list[dict[str, Any]]:
            return await self.episodes(referral_id=referral_id)

        return (await eventually(opened, timeout=15))[0]  # type: ignore[no-any-return]

    async def episode(self, episode_id: str) -> dict[str, Any]:
        read = await self.get(f"/careplan/episodes/{episode_id}", "lscft-clinician")
        assert read.status_code == 200, read.text
        return read.json()  # type: ignore[no-any-return]

    async def fhir(self, path: str, **params: str) -> dict[str, Any]:
        read = await self.get(f"/fhir/{path}", "gp-ehr", **params)
        assert read.status_code == 200, read.text
        return read.json()  # type: ignore[no-any-return]

    async def history(self, referral_id: str) -> list[dict[str, Any]]:
        read = await self.get(f"/triage/referrals/{referral_id}/history")
        assert read.status_code == 200, read.text
        return read.json()["items"]  # type: ignore[no-any-return]

    async def events(
        self, verb: str, referral_id: str, kind: str = "triage.referral"
    ) -> list[dict[str, Any]]:
        messages = await _published(self.suite.settings, f"cmh.{kind}.{verb}")
        return [m["data"] for m in messages if m["data"].get("referral_id") == referral_id]


def refused_by_state(response: httpx.Response) -> bool:
    return response.status_code == 409 and response.json()["type"].endswith(STATE_CONFLICT)


async def test_accepting_twice_is_refused_and_routes_once(suite: Suite) -> None:
    """Defect: a second accept re-routed the referral and opened a second episode."""
    async with httpx.AsyncClient(base_url=suite.url, timeout=10) as http:
        flow = await Flow.start(suite, http)
        referral = await flow.refer(referral_body(nhs_number(943476101)), "twice")
        first = await flow.decide(referral["id"], {"action": "accept"})
        assert first.status_code == 200 and first.json()["status"] == "routed"
        second = await flow.decide(referral["id"], {"action": "accept"})
        assert refused_by_state(second), second.text
        assert "accepted already" in second.json()["detail"]
        episode = await flow.episode_of(referral["id"])
        await asyncio.sleep(1.0)  # the outbox relays within 0.2 s: anything the 409 published is out
        assert len(await flow.events("routed", referral["id"])) == 1
        assert [e["id"] for e in await flow.episodes(referral_id=referral["id"])] == [episode["id"]]
        assert [d["action"] for d in await flow.history(referral["id"])] == ["received", "accept"]
        assert (await flow.get(f"/triage/referrals/{referral['id']}")).json()["version"] == 2


async def test_override_after_routing_is_refused_and_a_transfer_moves_the_episode(suite: Suite) -> None:
    """Defect: an override after routing changed triage's team while careplan's episode stayed put."""
    async with httpx.AsyncClient(base_url=suite.url, timeout=10) as http:
        flow = await Flow.start(suite, http)
        referral = await flow.refer(referral_body(nhs_number(943476102)), "transfer")
        assert referral["suggestion"]["team"]["id"] == FRONT_DOOR
        assert (await flow.decide(referral["id"], {"action": "accept"})).status_code == 200
        before = await flow.episode_of(referral["id"])
        assert before["team_id"] == FRONT_DOOR
        override = await flow.decide(
            referral["id"],
            {"action": "override", "route": "focused_support", "team_id": FOCUSED, "reason": "Longer term"},
        )
        assert refused_by_state(override) and "transfer" in override.json()["detail"]
        transfer = await flow.decide(
            referral["id"],
            {
                "action": "transfer",
                "team_id": FOCUSED,
                "route": "focused_support",
                "reason": "Needs longer term",
            },
        )
        assert transfer.status_code == 200, transfer.text
        assert transfer.json()["status"] == "routed" and transfer.json()["route"] == "focused_support"
        assert len(await flow.events("transferred", referral["id"])) == 1

        async def moved() -> dict[str, Any] | None:
            episode = await flow.episode(before["id"])
            return episode if episode["team_id"] == FOCUSED else None

        after = await eventually(moved, timeout=15)
        assert after["status"] == "open" and after["route"] == "focused_support"
        moves = [r for r in after["records"] if r["kind"] == "transfer"]
        assert len(moves) == 1
        assert moves[0]["data"]["from_team_id"] == FRONT_DOOR and moves[0]["data"]["to_team_id"] == FOCUSED
        # Both four-week clocks continue unchanged: the same starts, nothing stopped.
        for clock in ("plan", "national"):
            assert after["clocks"][clock]["start"] == before["clocks"][clock]["start"]
            assert after["clocks"][clock]["state"] == before["clocks"][clock]["state"]
        transferred = await eventually(
            lambda: flow.events("transferred", referral["id"], "careplan.episode"), timeout=15
        )
        assert transferred[0]["team_id"] == FOCUSED and transferred[0]["previous_team_id"] == FRONT_DOOR
        # The FHIR views agree: the Task's owner is the new team; the EpisodeOfCare is the same,
        # still active, episode and names no other team.
        task = await flow.fhir(f"Task/{referral['id']}")
        assert task["owner"] == {"reference": f"HealthcareService/{FOCUSED}"}
        service_request = await flow.fhir(f"ServiceRequest/{referral['id']}")
        assert service_request["performer"] == [{"reference": f"HealthcareService/{FOCUSED}"}]
        found = await flow.fhir("EpisodeOfCare", **{"incoming-referral": f"ServiceRequest/{referral['id']}"})
        assert found["total"] == 1
        episode_of_care = found["entry"][0]["resource"]
        assert episode_of_care["id"] == before["id"] and episode_of_care["status"] == "active"
        assert FRONT_DOOR not in json.dumps(episode_of_care)


async def test_decline_after_routing_is_refused_and_a_close_ends_the_episode(suite: Suite) -> None:
    """Defect: closing a routed referral revoked the ServiceRequest but left the EpisodeOfCare
    active with its clock running."""
    async with httpx.AsyncClient(base_url=suite.url, timeout=10) as http:
        flow = await Flow.start(suite, http)
        referral = await flow.refer(referral_body(nhs_number(943476103)), "close")
        assert (await flow.decide(referral["id"], {"action": "accept"})).status_code == 200
        episode = await flow.episode_of(referral["id"])
        decline = await flow.decide(
            referral["id"], {"action": "decline", "route": "staying_well", "reason": "Not for us"}
        )
        assert refused_by_state(decline) and "Close it" in decline.json()["detail"]
        closed = await flow.decide(referral["id"], {"action": "close", "reason": "Moved out of the area"})
        assert closed.status_code == 200 and closed.json()["status"] == "closed"
        [event] = await eventually(lambda: flow.events("closed", referral["id"]), timeout=15)
        assert event["episode_rule"] == "end_episode"

        async def ended() -> dict[str, Any] | None:
            read = await flow.episode(episode["id"])
            return read if read["status"] == "discharged" else None

        discharged = await eventually(ended, timeout=15)
        [record] = [r for r in discharged["records"] if r["kind"] == "discharge"]
        assert record["data"]["reason"] == "referral_closed"
        assert discharged["discharged_at"] and discharged["clocks"]["plan"]["state"] == "not_started"
        worklist = (await flow.get("/careplan/worklist", "lscft-clinician")).json()
        assert episode["id"] not in {item["episode_id"] for item in worklist["items"]}
        # The FHIR views agree: the request revoked, the triage task done, the episode finished.
        assert (await flow.fhir(f"ServiceRequest/{referral['id']}"))["status"] == "revoked"
        assert (await flow.fhir(f"Task/{referral['id']}"))["status"] == "completed"
        episode_of_care = await flow.fhir(f"EpisodeOfCare/{episode['id']}")
        assert episode_of_care["status"] == "finished" and episode_of_care["period"].get("end")


async def test_a_crisis_referral_without_coded_risk_stays_on_the_queue_until_downgraded(suite: Suite) -> None:
    """Defect: a crisis referral with no coded risk was routine, with no deadline, and never
    reached the crisis queue."""
    async with httpx.AsyncClient(base_url=suite.url, timeout=10) as http:
        flow = await Flow.start(suite, http)
        body = referral_body(nhs_number(943476104), source="self")
        referral = await flow.refer(body, "crisis-no-risk", crisis=True)
        assert referral["priority"] == 2 and referral["deadline_at"] is not None
        assert "P2-crisis-path" in {rule["id"] for rule in referral["rules"]}
        queue = (await flow.get("/triage/crisis/queue")).json()
        [entry] = [e for e in queue["entries"] if e["referral_id"] == referral["id"]]
        assert entry["deadline_at"] is not None and entry["priority"] == 2
        silent = await flow.decide(referral["id"], {"action": "reprioritise", "priority": 3})
        assert silent.status_code == 422 and "reason" in silent.text
        downgraded = await flow.decide(
            referral["id"],
            {"action": "reprioritise", "priority": 3, "reason": "Spoke to the person: routine is right"},
        )
        assert downgraded.status_code == 200, downgraded.text
        assert downgraded.json()["priority"] == 3 and downgraded.json()["deadline_at"] is None
        queue_after = (await flow.get("/triage/crisis/queue")).json()
        assert referral["id"] not in {e["referral_id"] for e in queue_after["entries"]}
        # The crisis stream tells every app: the next change after the queue was read is a downgrade.
        async with http.stream(
            "GET",
            "/triage/crisis/stream",
            headers={**flow.auth["crisis-app"], "Last-Event-ID": str(queue["last_event_id"])},
        ) as stream:
            async for line in stream.aiter_lines():
                if line.startswith("event: "):
                    assert line == "event: downgraded"
                    break
        [decision] = [d for d in await flow.history(referral["id"]) if d["action"] == "reprioritise"]
        assert decision["reason"].startswith("Spoke to the person") and decision["priority"] == 3


async def test_a_re_referral_after_discharge_is_routed_back_at_intake(suite: Suite) -> None:
    """Defect: a re-referral inside the re-access window waited for triage like a new one."""
    async with httpx.AsyncClient(base_url=suite.url, timeout=10) as http:
        flow = await Flow.start(suite, http, "registry-admin")
        nhs = nhs_number(943476105)
        first = await flow.refer(referral_body(nhs), "before")
        assert (await flow.decide(first["id"], {"action": "accept"})).status_code == 200
        episode = await flow.episode_of(first["id"])
        practitioner = await flow.post(
            "/registry/practitioners",
            {"attributes": {"staff_id": "LSC-7101", "name": "Kim Nurse", "profession": "mental_health_nurse"},
             "valid_from": "2025-01-01"},
            "registry-admin",
        )  # fmt: skip
        assert practitioner.status_code == 201, practitioner.text
        worker = practitioner.json()["id"]
        membership = await flow.post(
            "/registry/memberships",
            {
                "attributes": {"practitioner_id": worker, "team_id": episode["team_id"]},
                "valid_from": "2025-01-01",
            },
            "registry-admin",
        )
        assert membership.status_code == 201, membership.text
        path = f"/careplan/episodes/{episode['id']}"

        async def assigned() -> bool:
            put = await http.put(
                f"{path}/named-worker", json={"practitioner_id": worker}, headers=flow.auth["lscft-clinician"]
            )
            return put.status_code == 200

        await eventually(assigned, timeout=15, interval=0.3)
        discharged = await flow.post(
            f"{path}/discharge",
            {"at": datetime.now(UTC).isoformat(), "reason": "persons_choice", "without_plan_reason": "Wished to stop"},
            "lscft-clinician",
        )  # fmt: skip
        assert discharged.status_code == 200, discharged.text

        async def triage_knows() -> bool:  # careplan's discharge event has reached triage
            async with suite.triage_app.state.db.session() as session:
                return await session.get(Discharge, episode["id"]) is not None

        await eventually(triage_knows, timeout=15)
        again = await flow.refer(referral_body(nhs), "after")
        assert again["status"] == "routed" and again["intake"] == "reaccess"
        assert again["route"] == "reaccess" and again["suggestion"]["team"]["id"] == episode["team_id"]
        [routed] = await eventually(lambda: flow.events("routed", again["id"]), timeout=15)
        assert routed["automatic"] is True and routed["route"] == "reaccess"
        # No triage decision awaited: the history is the automatic routing alone.
        [intake] = await flow.history(again["id"])
        assert intake["action"] == "reaccess" and intake["from_status"] is None
        assert intake["to_status"] == "routed"
        second = await flow.episode_of(again["id"])
        assert second["previous_episode_id"] == episode["id"] and second["team_id"] == episode["team_id"]
        assert second["named_worker_id"] == worker and second["status"] == "open"
        # Accepting it as if it still awaited triage is refused, and opens nothing more.
        assert refused_by_state(await flow.decide(again["id"], {"action": "accept"}))
        assert len(await flow.episodes(person_id=first["person_id"])) == 2


async def test_repeat_referrals_are_linked_and_open_no_second_episode(suite: Suite) -> None:
    """Defect: a second referral for someone awaiting triage, or already in care at the team,
    was screened as new and opened a second episode."""
    async with httpx.AsyncClient(base_url=suite.url, timeout=10) as http:
        flow = await Flow.start(suite, http)
        nhs = nhs_number(943476106)
        first = await flow.refer(referral_body(nhs), "one")
        waiting = await flow.refer(referral_body(nhs, source="carer"), "two")
        assert waiting["person_id"] == first["person_id"] and waiting["awaiting_referral_id"] == first["id"]
        assert "D-awaiting-triage" in {rule["id"] for rule in waiting["rules"]}
        assert (await flow.decide(first["id"], {"action": "accept"})).status_code == 200
        episode = await flow.episode_of(first["id"])

        async def triage_knows() -> bool:  # careplan's episode event has reached triage
            async with suite.triage_app.state.db.session() as session:
                known = await session.scalar(
                    select(TriageEpisode).where(TriageEpisode.episode_id == episode["id"])
                )
            return known is not None and known.status == "open"

        await eventually(triage_knows, timeout=15)
        third = await flow.refer(referral_body(nhs, source="social_care"), "three")
        assert third["open_episode_id"] == episode["id"]
        assert "D-open-episode" in {rule["id"] for rule in third["rules"]}
        assert third["suggestion"]["team"]["id"] == episode["team_id"]
        assert (await flow.decide(third["id"], {"action": "accept"})).status_code == 200

        async def linked() -> list[dict[str, Any]]:
            messages = await _published(suite.settings, "cmh.careplan.episode.linked")
            return [m["data"] for m in messages if m["data"].get("linked_referral_id") == third["id"]]

        [event] = await eventually(linked, timeout=15)
        assert event["episode_id"] == episode["id"] and event["team_id"] == episode["team_id"]
        records = (await flow.episode(episode["id"]))["records"]
        assert [r["data"]["linked_referral_id"] for r in records if r["kind"] == "new_referral"] == [
            third["id"]
        ]
        assert [e["id"] for e in await flow.episodes(person_id=first["person_id"])] == [episode["id"]]
        assert await flow.episodes(referral_id=third["id"]) == []


async def test_the_asserted_end_user_is_kept_with_every_decision_and_record(suite: Suite) -> None:
    """Defect: decisions and records kept only the calling system, not the clinician it named."""
    async with httpx.AsyncClient(base_url=suite.url, timeout=10) as http:
        flow = await Flow.start(suite, http)
        referral = await flow.refer(referral_body(nhs_number(943476107)), "who")
        accepted = await flow.decide(referral["id"], {"action": "accept"}, CLINICIAN)
        assert accepted.status_code == 200, accepted.text
        history = await flow.history(referral["id"])
        [decision] = [d for d in history if d["action"] == "accept"]
        assert decision["client_id"] == "crisis-app" and decision["from_status"] == "received"
        assert decision["to_status"] == "routed"
        assert decision["end_user"] == {"id": "clin-042", "role": "triage_nurse", "asserted": True}
        # One Provenance per decision; the accept's names the clinician (as asserted) and the system.
        provenance = await flow.fhir("Provenance", target=f"Task/{referral['id']}")
        assert provenance["total"] == len(history) == 2
        [accept] = [
            e["resource"] for e in provenance["entry"] if e["resource"]["activity"]["text"] == "accept"
        ]
        author = next(a for a in accept["agent"] if a["type"]["coding"][0]["code"] == "author")
        assert author["who"]["identifier"]["value"] == "clin-042"
        assert author["role"] == [{"text": "triage_nurse"}]
        enterer = next(a for a in accept["agent"] if a["type"]["coding"][0]["code"] == "enterer")
        assert enterer["who"]["identifier"]["value"] == "crisis-app"
        [routed] = await eventually(lambda: flow.events("routed", referral["id"]), timeout=15)
        assert routed["end_user_id"] == "clin-042" and routed["end_user_role"] == "triage_nurse"
        # A careplan write keeps the end user its client asserts, labelled as asserted.
        episode = await flow.episode_of(referral["id"])
        contact = await flow.post(
            f"/careplan/episodes/{episode['id']}/contacts",
            {"at": datetime.now(UTC).isoformat(), "attended": True, "mechanism": "face_to_face"},
            "lscft-clinician",
            {"X-End-User-Id": "worker-7", "X-End-User-Role": "mental_health_nurse"},
        )
        assert contact.status_code == 200, contact.text
        transfer = await flow.decide(
            referral["id"],
            {"action": "transfer", "team_id": FOCUSED, "route": "focused_support", "reason": "Longer term"},
            CLINICIAN,
        )
        assert transfer.status_code == 200, transfer.text

        async def recorded() -> dict[str, dict[str, Any]] | None:
            records = {r["kind"]: r for r in (await flow.episode(episode["id"]))["records"]}
            return records if {"contact", "transfer"} <= set(records) else None

        records = await eventually(recorded, timeout=15)
        assert records["contact"]["recorded_by"] == "lscft-clinician"
        assert records["contact"]["asserted_end_user"] == {
            "id": "worker-7", "role": "mental_health_nurse", "asserted": True,
        }  # fmt: skip
        # The transfer careplan applied from triage's event keeps triage's decision maker.
        assert records["transfer"]["recorded_by"] == "crisis-app"
        assert records["transfer"]["asserted_end_user"] == {
            "id": "clin-042", "role": "triage_nurse", "asserted": True,
        }  # fmt: skip
        assert [d["end_user"] for d in await flow.history(referral["id"])][1:] == [decision["end_user"]] * 2


async def test_a_back_dated_receipt_needs_its_reason(suite: Suite) -> None:
    """Defect: a referral could be recorded as received months ago, silently starting its clocks
    in the past; and the referrer's authored time was taken for the receipt."""
    async with httpx.AsyncClient(base_url=suite.url, timeout=10) as http:
        flow = await Flow.start(suite, http)
        now = datetime.now(UTC).replace(microsecond=0)
        received, authored = now - timedelta(days=35), now - timedelta(days=40)
        body = referral_body(nhs_number(943476108), received_at=received.isoformat())
        refused = await flow.post("/triage/referrals", body, "gp-ehr", {"Idempotency-Key": "late-1"})
        assert refused.status_code == 422
        assert [e["location"] for e in refused.json()["errors"]] == [["body", "backdated_reason"]]
        blank = await flow.post(
            "/triage/referrals", {**body, "backdated_reason": "  "}, "gp-ehr", {"Idempotency-Key": "late-2"}
        )
        assert blank.status_code == 422
        assert (await flow.get("/triage/referrals", "gp-ehr")).json()["total"] == 0  # nothing stored
        recent = await flow.refer(
            referral_body(nhs_number(943476109), received_at=(now - timedelta(days=10)).isoformat()), "recent"
        )
        assert recent["status"] == "received"  # within the bound, no reason is asked for
        kept = await flow.refer(
            {
                **body,
                "authored_at": authored.isoformat(),
                "backdated_reason": "Letter found in a closed inbox",
            },
            "late-3",
        )
        assert datetime.fromisoformat(kept["received_at"]) == received
        assert datetime.fromisoformat(kept["authored_at"]) == authored
        [intake] = await flow.history(kept["id"])
        assert intake["reason"] == "Letter found in a closed inbox"
        # FHIR keeps the two apart: the referrer wrote it then; the single point of access got it now.
        service_request = await flow.fhir(f"ServiceRequest/{kept['id']}")
        assert datetime.fromisoformat(service_request["authoredOn"]) == authored
        task = await flow.fhir(f"Task/{kept['id']}")
        assert datetime.fromisoformat(task["authoredOn"]) == received
