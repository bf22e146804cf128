"""The four-week worklist ordered and paged in the database, on SQLite and PostgreSQL (issue 17):
with more than 2,000 open episodes the most breached case is first on page 1, pages cover every
open episode once, and the SQL order equals `domain.order_worklist` over all of them (random
sets with ties on the start day, the opening and clocks not started, stopped or started "tomorrow"
within the clock-skew allowance, at a London midnight on a clock-change day)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete

from contracts.clocks import plan_clock
from contracts.timezones import LONDON
from services.careplan import store
from services.careplan.domain import WorklistItem, order_worklist
from services.careplan.models import Episode
from tests.careplan.conftest import Careplan
from tests.careplan.support import READER, TEAM

# 23:58 in London on the spring clock change (BST from 01:00 that morning).
NOW = datetime(2026, 3, 29, 23, 58, tzinfo=LONDON).astimezone(UTC)


def _episode(
    *, started: datetime | None, opened: datetime, agreed: datetime | None = None, team: str = TEAM
) -> Episode:
    return Episode(
        id=str(uuid.uuid4()), referral_id=str(uuid.uuid4()), person_id=str(uuid.uuid4()), team_id=team,
        network_id="n", place_key="lancashire", owner_org="RW5", pathway="adult-mh", route="front_door_primary",
        priority=3, status="open", opened_at=opened, referral_received_at=opened - timedelta(days=1),
        spell_started_at=opened - timedelta(days=1), age_at_referral=40, first_assessment_completed_at=started,
        plan_agreed_at=agreed, version=1,
    )  # fmt: skip


async def _store(careplan: Careplan, episodes: list[Episode]) -> None:
    async with careplan.app.state.db.transaction() as session:
        await session.execute(delete(Episode))
        session.add_all(episodes)


async def _pages(careplan: Careplan, per_page: int, **params: Any) -> tuple[list[dict[str, Any]], int]:
    items: list[dict[str, Any]] = []
    page, total = 1, None
    while True:
        response = await careplan.client.get(
            "/careplan/worklist", params={"page": page, "per_page": per_page, **params}, headers=READER
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["page"] == page and body["per_page"] == per_page
        total = body["total"]
        items += body["items"]
        if not body["items"]:
            return items, total
        page += 1


def _expected(episodes: list[Episode]) -> list[str]:
    items = []
    for episode in episodes:
        clock = plan_clock(store.facts(episode), NOW)
        items.append(WorklistItem(episode.id, clock.days_remaining, clock.state, episode.opened_at))
    return [item.episode_id for item in order_worklist(items)]


async def test_the_most_breached_case_is_on_page_one_among_thousands(careplan: Careplan) -> None:
    careplan.app.state.clock = lambda: NOW
    rng = random.Random(7)
    opened = NOW - timedelta(days=45)
    many = [
        _episode(started=NOW - timedelta(days=rng.randint(0, 20)) if i % 10 else None, opened=opened)
        for i in range(2_100)
    ]
    worst = _episode(started=NOW - timedelta(days=40), opened=opened + timedelta(days=1))  # stored last
    await _store(careplan, [*many, worst])
    first = (await careplan.client.get("/careplan/worklist", params={"per_page": 25}, headers=READER)).json()
    assert first["total"] == 2_101 and len(first["items"]) == 25
    assert first["items"][0]["episode_id"] == worst.id
    assert first["items"][0]["breached"] is True and first["items"][0]["days_remaining"] == -12
    items, total = await _pages(careplan, 500)
    assert total == 2_101 and len({i["episode_id"] for i in items}) == 2_101  # every one, once
    assert [i["episode_id"] for i in items] == _expected([*many, worst])


@pytest.mark.parametrize("seed", range(6))
async def test_the_sql_order_is_the_domain_order(careplan: Careplan, seed: int) -> None:
    careplan.app.state.clock = lambda: NOW
    rng = random.Random(seed)
    openings = [NOW - timedelta(days=d, hours=h) for d, h in ((30, 0), (30, 0), (12, 5), (3, 1))]
    episodes = []
    for _ in range(70):
        kind = rng.random()
        if kind < 0.15:
            started = None  # no assessment yet
        elif kind < 0.25:
            started = NOW + timedelta(minutes=rng.randint(1, 5))  # London tomorrow, within the skew
        else:
            # Whole days and hours back, so several share a London start day.
            started = NOW - timedelta(days=rng.randint(0, 40), hours=rng.choice((0, 0, 3, 23)))
        agreed = started + timedelta(days=2) if started is not None and rng.random() < 0.15 else None
        episodes.append(_episode(started=started, opened=rng.choice(openings), agreed=agreed))
    await _store(careplan, episodes)
    items, total = await _pages(careplan, 9)
    assert total == len(episodes)
    assert [i["episode_id"] for i in items] == _expected(episodes)
    # Filtered pulls keep the same order.
    filtered, _ = await _pages(careplan, 9, team_id=TEAM)
    assert [i["episode_id"] for i in filtered] == _expected(episodes)
