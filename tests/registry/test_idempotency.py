"""Idempotency-Key through a real create (the registry's), on SQLite and PostgreSQL: a retry
replays the first result and stores nothing new, a reused key with another body is 409, keys are
per client, errors are not remembered, concurrent retries create once, and keys expire."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, select, update

from shared.messaging_models import IdempotencyRecord
from shared.sqltypes import utcnow
from tests.registry.support import ADMIN, Registry, team_attributes
from tests.support import mint_token

OTHER_ADMIN = {"Authorization": f"Bearer {mint_token('registry:admin', client_id='other-admin')}"}


async def _post(
    registry: Registry, idempotency_key: str, headers: dict[str, str] = ADMIN, **overrides: object
):  # type: ignore[no-untyped-def]
    return await registry.client.post(
        "/registry/teams",
        json={"attributes": team_attributes(**overrides)},
        headers={**headers, "Idempotency-Key": idempotency_key},
    )


async def _keys(registry: Registry) -> int:
    async with registry.app.state.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(IdempotencyRecord)) or 0)


async def test_a_retry_replays_the_first_result_and_creates_nothing(registry: Registry) -> None:
    rows, events = await registry.rows(), len(await registry.events())
    first = await _post(registry, "key-1")
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    again = await _post(registry, "key-1")
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert (again.headers["location"], again.headers["etag"]) == (
        first.headers["location"],
        first.headers["etag"],
    )
    assert again.headers["content-type"] == "application/json"
    assert await registry.rows() == rows + 1 and len(await registry.events()) == events + 1


async def test_a_reused_key_with_another_body_is_409_and_changes_nothing(registry: Registry) -> None:
    assert (await _post(registry, "key-2")).status_code == 201
    rows = await registry.rows()
    reused = await _post(registry, "key-2", key="another-team", name="Another team")
    assert reused.status_code == 409 and reused.headers["content-type"] == "application/problem+json"
    assert reused.json()["type"].endswith("/idempotency-key-reused")
    assert await registry.rows() == rows
    # The same key on another collection is another request too.
    place = await registry.client.post(
        "/registry/places",
        json={"attributes": {"key": "x", "name": "X", "upper_tier_council": "X"}},
        headers={**ADMIN, "Idempotency-Key": "key-2"},
    )
    assert place.status_code == 409


async def test_keys_belong_to_the_client_that_sent_them(registry: Registry) -> None:
    mine = await _post(registry, "shared-key")
    theirs = await _post(registry, "shared-key", OTHER_ADMIN, key="their-team", name="Their team")
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"] and "idempotent-replayed" not in theirs.headers


async def test_an_error_is_not_remembered_so_a_corrected_retry_runs(registry: Registry) -> None:
    refused = await _post(registry, "key-3", network_id="no-such-network")
    assert refused.status_code == 422 and await _keys(registry) == 0
    corrected = await _post(registry, "key-3")
    assert corrected.status_code == 201 and "idempotent-replayed" not in corrected.headers


async def test_concurrent_retries_create_once(registry: Registry) -> None:
    rows = await registry.rows()
    answers = await asyncio.gather(*(_post(registry, "key-4") for _ in range(6)))
    assert {answer.status_code for answer in answers} == {201}
    assert len({answer.json()["id"] for answer in answers}) == 1
    assert sum("idempotent-replayed" in answer.headers for answer in answers) == 5
    assert await registry.rows() == rows + 1 and await _keys(registry) == 1


async def test_bad_or_absent_keys(registry: Registry) -> None:
    bad = await _post(registry, "has spaces in it")
    assert bad.status_code == 400 and bad.json()["type"].endswith("/bad-idempotency-key")
    assert await _keys(registry) == 0
    # Registry creates take a key but do not demand one (admin tooling); referrals will.
    plain = await registry.client.post(
        "/registry/teams", json={"attributes": team_attributes()}, headers=ADMIN
    )
    assert plain.status_code == 201 and await _keys(registry) == 0
    # Unauthenticated: 401 before the key is even read.
    anonymous = await registry.client.post(
        "/registry/teams", json={"attributes": team_attributes()}, headers={"Idempotency-Key": "bad key"}
    )
    assert anonymous.status_code == 401


async def test_keys_expire_and_are_pruned(registry: Registry) -> None:
    assert (await _post(registry, "key-5")).status_code == 201
    retention = timedelta(hours=registry.app.state.settings.idempotency_retention_hours)
    async with registry.app.state.db.transaction() as session:
        await session.execute(
            update(IdempotencyRecord).values(created_at=utcnow() - retention - timedelta(minutes=1))
        )
    # Expired: the key is free again, so a different request under it is a new create, not a 409.
    fresh = await _post(registry, "key-5", key="later-team", name="Later team")
    assert fresh.status_code == 201 and "idempotent-replayed" not in fresh.headers
    assert await _keys(registry) == 1
    async with registry.app.state.db.transaction() as session:
        await session.execute(
            update(IdempotencyRecord).values(created_at=utcnow() - retention - timedelta(minutes=1))
        )
    await registry.app.state.relay.prune()
    assert await _keys(registry) == 0
