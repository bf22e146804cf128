"""Reporting applies careplan's clock corrections (issue 17), on SQLite and PostgreSQL: a breach
withdrawn by a late entry is no longer counted, whether the back-dated agreement was projected
before the correction or not; a re-access episode's plan clock starts at its opening."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cmh.migrations import migrate
from services.reporting import aggregates
from services.reporting.domain import parse_period
from services.reporting.models import EpisodeFact
from services.reporting.projections import SUBJECTS, Projector
from shared.db import Database
from shared.events import make_event
from shared.settings import Settings

RECEIVED = datetime(2026, 9, 1, 9, 0, tzinfo=UTC)
ASSESSED = RECEIVED + timedelta(days=1)
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
async def db(database_settings: dict[str, object]) -> AsyncIterator[Database]:
    settings = Settings(**database_settings)  # type: ignore[arg-type]
    url, schema = settings.database_url_for("reporting"), settings.database_schema_for("reporting")
    await migrate("reporting", url, schema=schema)
    database = Database(url, schema=schema)
    try:
        yield database
    finally:
        await database.dispose()


def _episode(n: int) -> dict[str, Any]:
    return {
        "episode_id": f"ep-{n}", "referral_id": f"r-{n}", "person_id": f"person-{n}", "team_id": "t", "network_id": "n",
        "place": "lancashire", "pathway": "adult-mh", "age_at_referral": 40,
        "referral_received_at": RECEIVED.isoformat(), "spell_started_at": RECEIVED.isoformat(),
    }  # fmt: skip


def _corrected(episode: dict[str, Any], agreed: datetime) -> Any:
    plan = {"name": "plan", "state": "met", "start": ASSESSED.isoformat(), "stop": agreed.isoformat()}
    national = {"name": "national", "state": "running", "start": ASSESSED.isoformat()}
    return make_event(
        "careplan", "clock", "corrected",
        {**episode, "withdrawn": "breached", "clocks": {"plan": plan, "national": national}},
    )  # fmt: skip


async def _apply(db: Database, events: list[Any]) -> None:
    projector = Projector(b"test-key")
    for event in events:
        async with db.transaction() as session:
            await projector.apply(session, event)


def test_the_projection_subscribes_to_clock_corrections() -> None:
    assert any(subject in ("cmh.careplan.clock.>", "cmh.careplan.clock.corrected") for subject in SUBJECTS)


async def test_a_withdrawn_breach_is_not_counted(db: Database) -> None:
    agreed = ASSESSED + timedelta(days=25)
    events = []
    for n in (1, 2):
        episode = _episode(n)
        events += [
            make_event("careplan", "episode", "opened", episode),
            make_event("careplan", "assessment", "recorded", {**episode, "at": ASSESSED.isoformat()}),
            make_event("careplan", "clock", "at_risk", episode, time=ASSESSED + timedelta(days=21)),
            make_event("careplan", "clock", "breached", episode, time=ASSESSED + timedelta(days=29)),
        ]
    # Episode 1: the back-dated agreement is projected, then the correction; episode 2: the
    # correction alone (its agreement event not yet projected).
    events += [
        make_event("careplan", "plan", "agreed", {**_episode(1), "agreed_at": agreed.isoformat()}),
        _corrected(_episode(1), agreed),
        _corrected(_episode(2), agreed),
    ]
    await _apply(db, events[:8])
    period = parse_period("2026-09", None, None)
    async with db.session() as session:
        _rows, before = await aggregates.four_week_waits(session, period, (), NOW)
    assert before["plan_breached"] == 2
    await _apply(db, events[8:])
    async with db.session() as session:
        _rows, after = await aggregates.four_week_waits(session, period, (), NOW)
        facts = {
            f.episode_id: f
            for f in (await session.get(EpisodeFact, "ep-1"), await session.get(EpisodeFact, "ep-2"))
        }
    assert after["plan_breached"] == 0 and after["plan_met"] == 2
    assert all(f.breached_at is None and f.at_risk_at is not None for f in facts.values())  # at risk stands


async def test_a_reaccess_plan_clock_starts_at_its_opening(db: Database) -> None:
    opened = RECEIVED + timedelta(hours=2)
    episode = {**_episode(3), "reaccess": True, "plan_clock_started_at": opened.isoformat()}
    await _apply(db, [make_event("careplan", "episode", "opened", episode)])
    async with db.session() as session:
        fact = await session.get(EpisodeFact, "ep-3")
    assert fact is not None and fact.reaccess and fact.first_assessment_completed_at == opened
    assert fact.plan_start_day == opened.date().toordinal()
