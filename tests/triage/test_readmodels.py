"""Triage's in-memory screening models follow the directory's events: a published service is
signposted, a changed one is signposted as it now is, a withdrawn one is not (and cannot be
chosen), late or repeated events change nothing, and another replica sees the same."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from typing import Any

import pytest

from services.triage import readmodels, store
from shared.events import make_event
from tests.support import eventually
from tests.triage.support import CLINICIAN, Triage, referral

HOUSING_SERVICE = "6f1c1a52-0000-4000-8000-000000000001"


def service_event(verb: str, version: int, **changes: Any) -> Any:
    data = {
        "service_id": HOUSING_SERVICE,
        "version": version,
        "name": "Preston Housing Advice",
        "organization_name": "Preston Advice Ltd",
        "status": "active",
        "needs": [{"code": "housing", "name": "Housing"}],
        "service_areas": [{"name": "Preston", "extent": "PR1, PR2"}],
        "slots": [],
        **changes,
    }
    if verb == "withdrawn":  # a withdrawal names the service and its version, nothing more
        data = {"service_id": HOUSING_SERVICE, "version": version}
    return make_event("directory", "service", verb, data, subject=HOUSING_SERVICE)


async def apply(triage: Triage, *events: Any) -> None:
    async with triage.app.state.db.transaction() as session:
        for event in events:
            await readmodels.apply_directory_event(session, event)


async def signposted(triage: Triage) -> list[str]:
    submitted = await triage.submit(referral(needs=["housing"], person={"nhs_number": None}))
    assert submitted.status_code == 201, submitted.text
    return [s["name"] for s in submitted.json()["suggestion"]["signposts"]]


async def test_screening_follows_published_changed_and_withdrawn_services(triage: Triage) -> None:
    assert await signposted(triage) == []
    await apply(triage, service_event("published", 1))
    assert await signposted(triage) == ["Preston Housing Advice"]

    await apply(triage, service_event("published", 2, name="Preston Housing and Money Advice"))
    assert await signposted(triage) == ["Preston Housing and Money Advice"]

    # A service that stops covering the person's district is no longer offered to them.
    await apply(triage, service_event("published", 3, service_areas=[{"name": "Lancaster", "extent": "LA1"}]))
    assert await signposted(triage) == []
    await apply(triage, service_event("published", 4))
    assert await signposted(triage) == ["Preston Housing Advice"]

    await apply(triage, service_event("withdrawn", 5))
    assert await signposted(triage) == []
    # A late copy of an earlier publication does not bring a withdrawn service back...
    await apply(triage, service_event("published", 4), service_event("published", 5))
    assert await signposted(triage) == []
    # ...a newer publication does.
    await apply(triage, service_event("published", 6))
    assert await signposted(triage) == ["Preston Housing Advice"]


async def test_a_withdrawn_service_cannot_be_chosen_as_a_signpost(triage: Triage) -> None:
    await apply(triage, service_event("published", 1))
    submitted = (await triage.submit(referral(needs=["housing"], person={"nhs_number": None}))).json()
    await apply(triage, service_event("withdrawn", 2))
    chosen = await triage.client.post(
        f"/triage/referrals/{submitted['id']}/decisions",
        json={
            "action": "override",
            "route": "vcfse_signpost",
            "signposts": [HOUSING_SERVICE],
            "reason": "Housing",
        },
        headers=CLINICIAN,
    )
    assert chosen.status_code == 422 and "signposts" in chosen.text


async def test_another_replica_and_a_fresh_start_see_the_same_services(triage: Triage) -> None:
    """A second process's models (another replica, or this one restarted) load what is there and
    then catch up on changes the first replica's consumer applied."""
    await apply(triage, service_event("published", 1))
    assert await signposted(triage) == ["Preston Housing Advice"]
    other = readmodels.ScreeningModels()
    async with triage.app.state.db.transaction() as session:
        _, index = await other.current(session, store.london_date(store.utcnow()))
        assert len(index) == 1
    await apply(triage, service_event("published", 2, status="inactive"))
    async with triage.app.state.db.transaction() as session:
        _, index = await other.current(session, store.london_date(store.utcnow()))
        assert len(index) == 0
    assert await signposted(triage) == []


async def test_the_index_is_rebuilt_once_and_only_when_the_places_change(
    triage: Triage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new day (midnight, or a referral dated yesterday) with the same places keeps the index;
    referrals arriving while it is rebuilt wait for the one rebuild rather than each doing it."""
    await apply(triage, service_event("published", 1))
    models = readmodels.ScreeningModels()
    rebuilds = 0
    original = readmodels.ScreeningModels._rebuild

    async def counted(self: readmodels.ScreeningModels, session: Any, snapshot: Any) -> None:
        nonlocal rebuilds
        rebuilds += self is models  # not the service's own models, warming up beside this test
        await asyncio.sleep(0.05)  # long enough for the others to arrive
        await original(self, session, snapshot)

    monkeypatch.setattr(readmodels.ScreeningModels, "_rebuild", counted)

    async def current(day: date) -> readmodels.DirectoryIndex:
        async with triage.app.state.db.transaction() as session:
            return (await models.current(session, day))[1]

    today = date(2026, 11, 25)
    indexes = await asyncio.gather(*(current(today) for _ in range(5)))
    assert rebuilds == 1 and all(index is indexes[0] for index in indexes)
    assert await current(today + timedelta(days=1)) is indexes[0]
    assert await current(today - timedelta(days=30)) is indexes[0]
    assert rebuilds == 1


async def test_the_models_are_built_when_the_service_starts(triage: Triage) -> None:
    """The first referral after a start does not pay for reading the whole directory."""
    engine = triage.app.state.db.engine.sync_engine

    async def built() -> bool:
        models = readmodels._models.get(engine)
        return models is not None and models._index is not None

    await eventually(built)
