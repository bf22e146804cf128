"""Security building blocks: rate limiter, client registry rules, secret rotation, signing keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmh.migrations import migrate
from gateway.access import RateLimiter, is_public_directory_read
from gateway.clients import ClientRegistryError, add_client, get_client, rotate_secret, verify_secret
from gateway.keys import KeyManager
from shared.db import Database
from shared.settings import Settings
from shared.sqltypes import utcnow


@settings(max_examples=200)
@given(
    per_minute=st.integers(1, 10_000),
    gaps=st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=200),
)
def test_rate_limiter_never_admits_more_than_burst_plus_refill(per_minute: int, gaps: list[float]) -> None:
    limiter = RateLimiter()
    now, admitted = 0.0, 0
    for gap in gaps:
        now += gap
        if limiter.take("c", per_minute, now=now) is None:
            admitted += 1
    capacity = max(1.0, per_minute / 6.0)
    assert admitted <= capacity + now * per_minute / 60.0 + 1e-6


def test_rate_limiter_says_when_to_retry() -> None:
    limiter = RateLimiter()
    assert limiter.take("c", 6, now=0.0) is None  # burst of one
    wait = limiter.take("c", 6, now=0.0)
    assert wait == pytest.approx(10.0)
    assert limiter.take("c", 6, now=10.0) is None
    assert limiter.take("other", 6, now=0.0) is None  # buckets are per key


@pytest.mark.parametrize(
    ("method", "path", "public"),
    [
        ("GET", "/directory", True),
        ("GET", "/directory/", True),
        ("GET", "/directory/services", True),
        ("GET", "/directory/services/abc-123", True),
        ("OPTIONS", "/directory/service_at_locations", True),
        ("GET", "/directory/taxonomy_terms/x", True),
        ("GET", "/directory/openapi.json", True),
        ("GET", "/directory/partner/edits", False),
        ("GET", "/directory/moderation/edits", False),
        ("POST", "/directory/services", False),
        ("GET", "/directory/handovers", False),
        ("GET", "/directory/services/abc/edit", False),
        ("GET", "/directoryx", False),
        ("GET", "/triage/referrals", False),
    ],
)
def test_only_open_referral_reads_are_public(method: str, path: str, public: bool) -> None:
    assert is_public_directory_read(method, path) is public


@pytest.fixture
async def gateway_db(make_settings: Callable[..., Settings]) -> AsyncIterator[tuple[Database, Settings]]:
    settings_ = make_settings(signing_key_lead_seconds=0, token_lifetime_seconds=30, token_leeway_seconds=0)
    url, schema = settings_.database_url_for("gateway"), settings_.database_schema_for("gateway")
    await migrate("gateway", url, schema=schema)
    db = Database(url, schema=schema)
    try:
        yield db, settings_
    finally:
        await db.dispose()


@pytest.mark.parametrize(
    ("organisation", "system", "kind", "scopes", "message"),
    [
        ("RW5", "ods", "partner_ehr", "referral:everything", "unknown scopes"),
        ("not an ods", "ods", "partner_ehr", "referral:read", "not a valid ods"),
        ("RW5", "ods", "vcfse_partner", "handover:respond", "charity or company"),
        ("1234", "charity", "vcfse_partner", "handover:respond", "not a valid charity"),
        ("RW5", "nhs", "admin", "audit:read", "organisation system"),
    ],
)
async def test_client_registry_refuses_bad_registrations(
    gateway_db: tuple[Database, Settings],
    organisation: str,
    system: str,
    kind: str,
    scopes: str,
    message: str,
) -> None:
    db, _ = gateway_db
    async with db.session() as session:
        with pytest.raises(ClientRegistryError, match=message):
            await add_client(
                session,
                name="x",
                organisation=organisation,
                organisation_system=system,
                kind=kind,
                scopes=scopes,
            )


async def test_rotated_secret_keeps_the_old_one_for_the_grace_period_only(
    gateway_db: tuple[Database, Settings],
) -> None:
    db, _ = gateway_db
    async with db.transaction() as session:
        created = await add_client(
            session,
            name="GP",
            organisation="A81001",
            organisation_system="ods",
            kind="partner_ehr",
            scopes="referral:read",
        )
        old = created.secret
        assert old is not None
        new = await rotate_secret(session, created.client_id, grace=timedelta(hours=1))
    async with db.session() as session:
        client = await get_client(session, created.client_id)
    assert client.secret_hash is not None and old not in client.secret_hash  # only hashes are stored
    now = utcnow()
    assert verify_secret(client, new, now)
    assert verify_secret(client, old, now)
    assert not verify_secret(client, old, now + timedelta(hours=2))
    assert not verify_secret(client, "guess", now)


async def test_key_rotation_publishes_before_signing_and_retires_after_tokens_expire(
    gateway_db: tuple[Database, Settings],
) -> None:
    db, settings_ = gateway_db
    lead = settings_.model_copy(update={"signing_key_lead_seconds": 3600})
    keys = KeyManager(db, lead, reload_seconds=0)
    await keys.ensure_active()
    first = (await keys.signing_key()).kid

    second = await keys.rotate()
    published = {key["kid"] for key in (await keys.jwks())["keys"]}
    assert published == {first, second}, "the new key is published before it signs"
    assert (await keys.signing_key()).kid == first

    # Lead time over (simulated with a manager whose lead is zero): the new key signs.
    now_keys = KeyManager(db, settings_, reload_seconds=0)
    async with db.transaction() as session:
        from sqlalchemy import update

        from gateway.models import SigningKey

        await session.execute(
            update(SigningKey).where(SigningKey.kid == second).values(activates_at=utcnow())
        )
    await now_keys.reload(force=True)
    assert (await now_keys.signing_key()).kid == second
    states = {key["kid"]: key["status"] for key in await now_keys.describe()}
    assert states == {first: "retiring", second: "active"}
    assert {key["kid"] for key in (await now_keys.jwks())["keys"]} == {first, second}

    # The old key's tokens have expired: it leaves the JWKS.
    async with db.transaction() as session:
        await session.execute(update(SigningKey).where(SigningKey.kid == first).values(retires_at=utcnow()))
    await now_keys.reload(force=True)
    assert {key["kid"] for key in (await now_keys.jwks())["keys"]} == {second}
    assert await now_keys.key_for(first) is None
    assert isinstance(await now_keys.key_for(second), jwt.PyJWK)
