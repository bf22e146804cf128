"""Triage's lifecycle events as careplan receives them (the issue 17 contract), registry
practitioners and memberships, and the tokens the careplan tests write with."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from services.careplan import store
from services.careplan.models import Episode
from shared.events import CloudEvent, make_event
from tests.careplan.conftest import Careplan
from tests.support import mint_token
from tests.triage.support import registry_events


def _team(key: str) -> str:
    return next(
        e.data["id"]
        for e in registry_events(kinds=("team",))
        if e.data["timeline"][0]["attributes"]["key"] == key
    )


TEAM = _team("central-lancashire-front-door-primary")
OTHER_TEAM = _team("central-lancashire-focused-support-adult-mh")


def token(scopes: str = "careplan:read careplan:write", **kw: Any) -> dict[str, str]:
    kw.setdefault("client_id", "lscft")
    kw.setdefault("organisation", "RW5")
    kw.setdefault("kind", "crisis_app")
    return {"Authorization": f"Bearer {mint_token(scopes, **kw)}"}


WRITER = token()
CLINICIAN = {**WRITER, "X-End-User-Id": "staff-7001", "X-End-User-Role": "mental_health_nurse"}
READER = token("careplan:read", client_id="reader", kind="admin")


def facts(
    referral_id: str,
    *,
    received_at: datetime,
    person: str = "person-1",
    team: str = TEAM,
    version: int = 2,
    age: int = 40,
) -> dict[str, Any]:
    """Triage's `_event_facts` for a referral."""
    return {
        "referral_id": referral_id, "person_id": person, "received_at": received_at.isoformat(), "source": "gp",
        "referring_organisation": "P81001", "crisis": False, "age": age, "place": "lancashire", "network_id": "n",
        "team_id": team, "pathway": "adult-mh", "priority": 3, "status": "routed", "version": version,
    }  # fmt: skip


def routed(
    referral_id: str,
    *,
    received_at: datetime,
    decided_at: datetime | None = None,
    route: str = "front_door_primary",
    reaccess_episode_id: str | None = None,
    named_worker_id: str | None = None,
    **kw: Any,
) -> CloudEvent:
    return make_event(
        "triage", "referral", "routed",
        {
            **facts(referral_id, received_at=received_at, **kw), "route": route, "decision": "accept",
            "decided_by": "triage-app", "end_user_id": "triager-1", "end_user_role": "triage_practitioner",
            "decided_at": decided_at.isoformat() if decided_at else None, "automatic": route == "reaccess",
            "reaccess_episode_id": reaccess_episode_id, "named_worker_id": named_worker_id,
        },
    )  # fmt: skip


def transferred(
    referral_id: str,
    *,
    received_at: datetime,
    decided_at: datetime,
    team: str = OTHER_TEAM,
    previous_team: str = TEAM,
    route: str = "focused_support",
    version: int = 3,
    **kw: Any,
) -> CloudEvent:
    return make_event(
        "triage", "referral", "transferred",
        {
            **facts(referral_id, received_at=received_at, team=team, version=version, **kw), "route": route,
            "previous_route": "front_door_primary", "previous_team_id": previous_team,
            "reason": "Needs longer-term support", "decided_by": "triage-app", "end_user_id": "lead-3",
            "end_user_role": "team_lead", "decided_at": decided_at.isoformat(),
        },
    )  # fmt: skip


def closed(
    referral_id: str,
    *,
    received_at: datetime,
    decided_at: datetime,
    episode_rule: str = "end_episode",
    version: int = 4,
    **kw: Any,
) -> CloudEvent:
    return make_event(
        "triage", "referral", "closed",
        {
            **facts(referral_id, received_at=received_at, version=version, **kw), "status": "closed",
            "decision": "close", "episode_rule": episode_rule, "reason": "Duplicate of an open referral",
            "decided_by": "triage-app", "end_user_id": "lead-3", "end_user_role": "team_lead",
            "decided_at": decided_at.isoformat(),
        },
    )  # fmt: skip


async def apply(careplan: Careplan, *events: CloudEvent) -> None:
    """Each event through careplan's lifecycle consumer's handler, one transaction each."""
    for event in events:
        async with careplan.app.state.db.transaction() as session:
            await store.apply_referral_event(session, event)


async def episodes(careplan: Careplan, person: str | None = None) -> list[Episode]:
    async with careplan.app.state.db.session() as session:
        query = select(Episode).order_by(Episode.opened_at, Episode.id)
        if person is not None:
            query = query.where(Episode.person_id == person)
        return list((await session.scalars(query)).all())


async def add_member(careplan: Careplan, practitioner_id: str, team_id: str) -> None:
    """A practitioner of a team in careplan's registry read-model."""
    timeline = lambda attributes: [{"valid_from": "2020-01-01", "valid_to": None, "attributes": attributes}]  # noqa: E731
    async with careplan.app.state.db.transaction() as session:
        await store.apply_registry_event(
            session,
            make_event(
                "registry", "practitioner", "upserted",
                {"id": practitioner_id, "kind": "practitioner", "version": 1,
                 "timeline": timeline({"staff_id": f"S-{practitioner_id}", "name": "A Worker"})},
            ),
        )  # fmt: skip
        await store.apply_registry_event(
            session,
            make_event(
                "registry", "membership", "upserted",
                {"id": f"m-{practitioner_id}-{team_id}", "kind": "membership", "version": 1,
                 "timeline": timeline({"practitioner_id": practitioner_id, "team_id": team_id})},
            ),
        )  # fmt: skip
