"""Migration 0005 on SQLite and PostgreSQL: episodes already open when it runs get the London day
their running plan clock started (the worklist orders by it), journey steps get an entered time."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text

from cmh.migrations import migrate
from shared.db import Database
from shared.settings import Settings

COLUMNS = (
    "id, referral_id, person_id, route, priority, status, opened_at, referral_received_at, spell_started_at, "
    "age_at_referral, first_assessment_completed_at, plan_agreed_at, version"
)


async def test_open_running_clocks_get_their_start_day(database_settings: dict[str, object]) -> None:
    settings = Settings(**database_settings)  # type: ignore[arg-type]
    url, schema = settings.database_url_for("careplan"), settings.database_schema_for("careplan")
    await migrate("careplan", url, schema=schema, revision="0004")
    db = Database(url, schema=schema)
    opened = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    # 23:30 UTC on 29 March is 00:30 on the 30th in London (BST).
    started = datetime(2026, 3, 29, 23, 30, tzinfo=UTC)
    try:
        async with db.transaction() as session:
            for episode_id, agreed in (("running", None), ("stopped", started), ("none", "no-assessment")):
                await session.execute(
                    text(
                        f"INSERT INTO careplan_episodes ({COLUMNS}) VALUES (:id, :id, 'p', 'front_door_primary', "
                        "3, 'open', :opened, :opened, :opened, 40, :started, :agreed, 1)"
                    ),
                    {
                        "id": episode_id, "opened": opened, "agreed": agreed if isinstance(agreed, datetime) else None,
                        "started": None if agreed == "no-assessment" else started,
                    },
                )  # fmt: skip
            await session.execute(
                text(
                    "INSERT INTO careplan_journey (source_id, person_id, at, kind, summary) "
                    "VALUES ('s', 'p', :at, 'episode_opened', '{}')"
                ),
                {"at": opened},
            )
        await db.dispose()
        await migrate("careplan", url, schema=schema)
        db = Database(url, schema=schema)
        async with db.session() as session:
            days = dict(
                (await session.execute(text("SELECT id, plan_clock_day FROM careplan_episodes"))).all()
            )
            versions = {
                v for (v,) in await session.execute(text("SELECT referral_version FROM careplan_episodes"))
            }
            entered = (await session.execute(text("SELECT recorded_at FROM careplan_journey"))).scalar_one()
        assert days == {"running": datetime(2026, 3, 30).toordinal(), "stopped": None, "none": None}
        assert versions == {0} and entered is not None
    finally:
        await db.dispose()
