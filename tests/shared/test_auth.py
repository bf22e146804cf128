"""The shared auth dependency, with the gateway bypassed: every bad token is refused by the
service itself, before the handler runs; scopes and organisation binding are enforced."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import APIRouter, FastAPI
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Column, MetaData, String, Table, select

from shared.auth import (
    Caller,
    ClientKind,
    PurposeOfUse,
    StaticKeys,
    TokenVerifier,
    ensure_organisation,
    owned_by_caller,
    requires,
)
from shared.errors import Problem
from shared.migrations import new_metadata
from shared.service import ServiceSpec, create_service_app
from shared.settings import Settings

SETTINGS = Settings(nats_url="nats://127.0.0.1:1", database_url="sqlite+aiosqlite:///:memory:")


def new_key(kid: str) -> tuple[Any, dict[str, Any]]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_jwk = jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return private, {**public_jwk, "kid": kid, "use": "sig", "alg": "RS256"}


KEY, JWK = new_key("k1")
OTHER_KEY, _ = new_key("k1")  # same kid, different key: a forgery


def mint(
    key: Any = KEY,
    kid: str = "k1",
    alg: str = "RS256",
    headers: dict[str, Any] | None = None,
    **overrides: Any,
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": SETTINGS.token_issuer,
        "aud": SETTINGS.token_audience,
        "sub": "client-gp-1",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,  # minted at collection: must outlive a whole suite run
        "jti": str(uuid.uuid4()),
        "scope": "referral:read referral:submit",
        "cmh_org": "A81001",
        "cmh_kind": "partner_ehr",
        **overrides,
    }
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid, **(headers or {})})


handled: list[str] = []
probe = APIRouter(prefix="/triage/probe")


@probe.get("/referrals")
async def read_referrals(caller: Caller = requires("referral:read")) -> dict[str, Any]:
    handled.append(caller.client_id)
    return {
        "client": caller.client_id,
        "organisation": caller.organisation,
        "kind": caller.kind,
        "purpose": caller.purpose,
        "end_user": caller.end_user_id,
    }


@probe.post("/decisions")
async def decide(caller: Caller = requires("triage:decide")) -> dict[str, str]:
    handled.append(caller.client_id)
    return {"ok": "yes"}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    spec = ServiceSpec(name="triage", title="t", description="", metadata=new_metadata(), routers=[probe])
    app: FastAPI = create_service_app(spec, SETTINGS)
    async with app.router.lifespan_context(app):
        app.state.token_verifier = TokenVerifier(SETTINGS, StaticKeys({"keys": [JWK]}))
        handled.clear()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            yield http


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_valid_token_exposes_the_caller(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/triage/probe/referrals", headers={**bearer(mint()), "X-End-User-Id": "555123456789"}
    )
    assert response.status_code == 200
    assert response.json() == {
        "client": "client-gp-1",
        "organisation": "A81001",
        "kind": "partner_ehr",
        "purpose": "TREAT",
        "end_user": "555123456789",
    }


def _tampered() -> str:
    header, payload, signature = mint().split(".")
    forged_payload = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(payload).replace(b"referral:read", b"registry:admin")
    ).decode()
    return f"{header}.{forged_payload}.{signature}"


@pytest.mark.parametrize(
    ("name", "headers", "reason"),
    [
        ("none", {}, "required"),
        ("not bearer", {"Authorization": "Basic dXNlcjpwYXNz"}, "Bearer"),
        ("malformed", bearer("not.a.jwt"), "malformed"),
        ("expired", bearer(mint(exp=int(time.time()) - 3600, iat=int(time.time()) - 4000)), "expired"),
        ("tampered", bearer(_tampered()), "not valid"),
        ("wrong audience", bearer(mint(aud="someone-else")), "not for this API"),
        ("wrong issuer", bearer(mint(iss="https://evil.example")), "not valid"),
        ("wrong key", bearer(mint(key=OTHER_KEY)), "not valid"),
        ("unknown kid", bearer(mint(kid="k-unknown")), "not signed"),
        ("no jti", bearer(mint(jti=None)), "not valid"),
        ("bad kind", bearer(mint(cmh_kind="superuser")), "not valid"),
        (
            "hmac confusion",
            bearer(jwt.encode({"sub": "x"}, "secret-key-of-32-bytes-at-least!", "HS256", {"kid": "k1"})),
            "not signed",
        ),
    ],
)
async def test_bad_tokens_never_reach_the_handler(
    client: httpx.AsyncClient, name: str, headers: dict[str, str], reason: str
) -> None:
    response = await client.get("/triage/probe/referrals", headers=headers)
    assert response.status_code == 401, name
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert reason in response.json()["detail"]
    assert handled == []


async def test_missing_scope_is_forbidden(client: httpx.AsyncClient) -> None:
    response = await client.post("/triage/probe/decisions", headers=bearer(mint()))
    assert response.status_code == 403
    assert response.json()["required_scopes"] == ["triage:decide"]
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    assert handled == []


async def test_purpose_of_use_and_asserted_headers_are_checked(client: httpx.AsyncClient) -> None:
    ok = await client.get("/triage/probe/referrals", headers={**bearer(mint()), "X-Purpose-Of-Use": "etreat"})
    assert ok.json()["purpose"] == "ETREAT"
    bad = await client.get(
        "/triage/probe/referrals", headers={**bearer(mint()), "X-Purpose-Of-Use": "MARKETING"}
    )
    assert bad.status_code == 400
    evil = await client.get(
        "/triage/probe/referrals", headers={**bearer(mint()), "X-End-User-Id": "a b<script>"}
    )
    assert evil.status_code == 400
    assert handled == ["client-gp-1"]


def test_requires_refuses_unknown_scopes() -> None:
    with pytest.raises(ValueError):
        requires("referral:everything")


# --- organisation binding -----------------------------------------------------------------------

referrals = Table(
    "referrals",
    MetaData(),
    Column("id", String, primary_key=True),
    Column("referrer_org", String),
)


def caller(org: str) -> Caller:
    return Caller(
        client_id="c",
        organisation=org,
        kind=ClientKind.PARTNER_EHR,
        scopes=frozenset({"referral:read"}),
        token_id="t",
        purpose=PurposeOfUse.TREAT,
    )


async def test_owned_by_caller_keeps_only_the_callers_rows() -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine("sqlite+aiosqlite:///:memory:")
    async with engine.begin() as connection:
        await connection.run_sync(referrals.metadata.create_all)
        await connection.execute(
            referrals.insert(),
            [{"id": "r1", "referrer_org": "A81001"}, {"id": "r2", "referrer_org": "B82002"}],
        )
        rows = await connection.execute(
            select(referrals.c.id).where(owned_by_caller(caller("A81001"), referrals.c.referrer_org))
        )
        assert rows.scalars().all() == ["r1"]
    await engine.dispose()


@given(st.text(min_size=1, max_size=8), st.lists(st.text(min_size=1, max_size=8), max_size=4))
def test_ensure_organisation_allows_exactly_the_bound_organisations(org: str, owners: list[str]) -> None:
    if org in owners:
        ensure_organisation(caller(org), owners)
    else:
        with pytest.raises(Problem) as refused:
            ensure_organisation(caller(org), owners)
        assert refused.value.status == 403


class SwappableKeys:
    """A key source whose published keys a test changes (a key withdrawn, replaced)."""

    def __init__(self, jwk: dict[str, Any]) -> None:
        self.keys = StaticKeys({"keys": [jwk]})

    async def key_for(self, kid: str) -> jwt.PyJWK | None:
        return await self.keys.key_for(kid)


async def test_a_remembered_token_is_checked_again_on_every_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """Verified tokens are remembered (issue 23: signature checks were most of authentication's
    cost), but expiry, the key still being published and revocation apply to every use."""
    keys = SwappableKeys(JWK)
    verifier = TokenVerifier(SETTINGS, keys)
    token = mint(exp=int(time.time()) + 60)
    first = await verifier.verify(token)
    first["scope"] = "changed by a caller"  # each use gets its own copy
    again = await verifier.verify(token)
    assert again["scope"] == "referral:read referral:submit" and again["sub"] == "client-gp-1"

    keys.keys = StaticKeys({"keys": []})  # the key withdrawn
    with pytest.raises(Problem) as refused:
        await verifier.verify(token)
    assert refused.value.detail == "The access token is not signed by this suite."
    keys.keys = StaticKeys({"keys": [JWK]})
    assert (await verifier.verify(token))["sub"] == "client-gp-1"

    later = time.time() + 60 + SETTINGS.token_leeway_seconds + 1
    with monkeypatch.context() as clock:
        clock.setattr(time, "time", lambda: later)
        clock.setattr(jwt.api_jwt, "datetime", _FrozenDatetime(later))
        with pytest.raises(Problem) as refused:
            await verifier.verify(token)
        assert refused.value.detail == "The access token has expired."

    other = mint(sub="client-gp-2")
    assert (await verifier.verify(other))["sub"] == "client-gp-2"
    verifier.revocations.replace({"client-gp-2": time.time()})
    with pytest.raises(Problem) as refused:
        await verifier.verify(other)
    assert refused.value.detail == "The access token has been revoked."


class _FrozenDatetime:
    """`datetime` as PyJWT reads the time, at `epoch`."""

    def __init__(self, epoch: float) -> None:
        self.epoch = epoch

    def now(self, tz: Any = None) -> Any:
        from datetime import UTC, datetime

        return datetime.fromtimestamp(self.epoch, UTC)
