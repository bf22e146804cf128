"""The edge and the token endpoint (issue 19 §4), through the real path: X-Forwarded-For believed
from trusted proxies only, a failed-attempt limit before any hash, a bounded pool for the old slow
hashes, fast keyed hashes for new secrets, and client assertion audiences from configuration only."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import jwt
import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError
from sqlalchemy import update

import gateway.clients as clients_module
from gateway.clients import (
    ClientRegistryError,
    add_client,
    get_client,
    hash_secret,
    rotate_secret,
    verify_secret,
)
from gateway.models import Client
from gateway.tokens import CLIENT_ASSERTION_TYPE, FailedAttempts
from shared.http import client_address
from shared.settings import Settings
from shared.sqltypes import utcnow
from tests.security.conftest import Stack

JWKS = "/.well-known/jwks.json"  # an open, per-address rate-limited route


def scope(peer: str | None, *forwarded: str) -> dict[str, Any]:
    return {
        "type": "http",
        "client": (peer, 50000) if peer else None,
        "headers": [(b"x-forwarded-for", value.encode()) for value in forwarded],
    }


# --- the caller's address -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded", "expected"),
    [
        ("", "192.0.2.10", ["198.51.100.1"], "192.0.2.10"),  # untrusted peer: the header is ignored
        ("10.0.0.5", "192.0.2.10", ["198.51.100.1"], "192.0.2.10"),
        ("10.0.0.5", "10.0.0.5", ["198.51.100.1"], "198.51.100.1"),
        # Left of the first untrusted hop is the caller's own claim.
        ("10.0.0.0/24", "10.0.0.5", ["203.0.113.9, 198.51.100.1, 10.0.0.7"], "198.51.100.1"),
        ("10.0.0.0/24", "10.0.0.5", ["203.0.113.9", "198.51.100.1"], "198.51.100.1"),  # two fields
        ("10.0.0.0/24", "10.0.0.5", ["10.0.0.8, 10.0.0.7"], "10.0.0.8"),  # all proxies: the first
        ("10.0.0.0/24", "10.0.0.5", ["203.0.113.9, garbage"], "10.0.0.5"),  # broken: nothing believed
        ("10.0.0.0/24", "10.0.0.5", [], "10.0.0.5"),
        ("10.0.0.5", "10.0.0.5", ["198.51.100.1:4711"], "198.51.100.1"),
        ("2001:db8::/64", "2001:db8::1", ["[2001:DB8:1::9]:443"], "2001:db8:1::9"),
        ("10.0.0.5", "::ffff:10.0.0.5", ["198.51.100.1"], "198.51.100.1"),  # v4-mapped peer
        ("", None, ["198.51.100.1"], "unknown"),
    ],
)
def test_client_address(trusted: str, peer: str | None, forwarded: list[str], expected: str) -> None:
    settings = Settings(trusted_proxies=trusted)
    assert client_address(scope(peer, *forwarded), settings) == expected


@pytest.mark.parametrize("value", ["*", "10.0.0.1, *", "0.0.0.0/0", "::/0", "gateway", "10.0.0.300"])
def test_trusting_everyone_or_nonsense_is_refused(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError):
        Settings(trusted_proxies=value)
    monkeypatch.setenv("CMH_TRUSTED_PROXIES", value)
    with pytest.raises(ValidationError):
        Settings()


def test_uvicorn_does_not_rewrite_the_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    from cmh import serving

    seen: list[Any] = []
    monkeypatch.setattr(serving.DrainingServer, "run", lambda self, *a, **k: seen.append(self.config))
    serving.serve("gateway", Settings(metrics_port_offset=0), host="127.0.0.1", port=1)
    assert seen[0].proxy_headers is False


async def test_spoofed_forwarded_for_from_an_untrusted_peer_keeps_the_peers_bucket(
    stack_factory: Any,
) -> None:
    stack: Stack = await stack_factory(public_rate_limit_per_minute=6)  # a burst of one
    async with stack.client() as http:
        first = await http.get(JWKS, headers={"X-Forwarded-For": "198.51.100.1"})
        second = await http.get(JWKS, headers={"X-Forwarded-For": "198.51.100.2"})
    assert first.status_code == 200
    assert second.status_code == 429 and second.headers["retry-after"]


async def test_forwarded_for_from_a_trusted_proxy_names_the_caller(stack_factory: Any) -> None:
    stack: Stack = await stack_factory(public_rate_limit_per_minute=6, trusted_proxies="127.0.0.1")
    async with stack.client() as http:
        a = await http.get(JWKS, headers={"X-Forwarded-For": "198.51.100.1"})
        a_again = await http.get(JWKS, headers={"X-Forwarded-For": "198.51.100.1"})
        b = await http.get(JWKS, headers={"X-Forwarded-For": "198.51.100.2"})
        # What the caller wrote left of the proxy's entry does not make a new bucket.
        b_forged = await http.get(JWKS, headers={"X-Forwarded-For": "203.0.113.77, 198.51.100.2"})
    assert [a.status_code, a_again.status_code, b.status_code, b_forged.status_code] == [200, 429, 200, 429]


# --- secrets: the fast format, the old one --------------------------------------------------------


async def _client(stack: Stack, client_id: str) -> Client:
    async with stack.gateway_db.session() as session:
        return await get_client(session, client_id)


async def _make_legacy(stack: Stack, client_id: str) -> str:
    """Store the client's secret as an Argon2 hash, as before the fast format."""
    secret = stack.secrets[client_id]
    async with stack.gateway_db.transaction() as session:
        await session.execute(
            update(Client)
            .where(Client.client_id == client_id)
            .values(secret_hash=PasswordHasher().hash(secret))
        )
    return secret


async def _token(http: Any, client_id: str, secret: str) -> Any:
    return await http.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )


async def test_new_secrets_use_the_keyed_hash_and_verify(stack: Stack) -> None:
    stored = (await _client(stack, "gp-a81001")).secret_hash
    assert stored is not None
    scheme, salt, digest = stored.split("$")
    assert scheme == "hmac-sha256" and len(salt) == 32 and len(digest) == 64
    int(salt + digest, 16)  # hex
    assert hash_secret("x" * 40) != hash_secret("x" * 40)  # salted
    async with stack.gateway_db.transaction() as session:
        rotated = await rotate_secret(session, "gp-b82002", grace=timedelta(hours=1))
    client = await _client(stack, "gp-b82002")
    assert client.secret_hash is not None and client.secret_hash.startswith("hmac-sha256$")
    assert verify_secret(client, rotated, utcnow()) and verify_secret(
        client, stack.secrets["gp-b82002"], utcnow()
    )
    assert not verify_secret(client, rotated[:-1] + "?", utcnow())
    async with stack.client() as http:
        assert (await _token(http, "gp-a81001", stack.secrets["gp-a81001"])).status_code == 200
        assert (await _token(http, "gp-b82002", rotated)).status_code == 200
        assert (await _token(http, "gp-a81001", stack.secrets["gp-b82002"])).status_code == 401
    async with stack.gateway_db.transaction() as session:
        with pytest.raises(ClientRegistryError, match="at least 32"):
            await add_client(
                session, client_id="weak-secret", name="w", organisation="A81009", organisation_system="ods",
                kind="partner_ehr", scopes="referral:read", secret="password1",
            )  # fmt: skip


async def test_old_argon2_hashes_still_verify_and_are_upgraded(stack: Stack) -> None:
    secret = await _make_legacy(stack, "gp-a81001")
    assert (await _client(stack, "gp-a81001")).secret_hash.startswith("$argon2")  # type: ignore[union-attr]
    async with stack.client() as http:
        wrong = await _token(http, "gp-a81001", "not-the-secret")
        assert wrong.status_code == 401
        assert (await _client(stack, "gp-a81001")).secret_hash.startswith("$argon2")  # type: ignore[union-attr]
        right = await _token(http, "gp-a81001", secret)
        assert right.status_code == 200, right.text
        upgraded = (await _client(stack, "gp-a81001")).secret_hash
        assert upgraded is not None and upgraded.startswith("hmac-sha256$")
        assert (await _token(http, "gp-a81001", secret)).status_code == 200  # and it still works

        # An old hash kept for a rotation's grace period verifies, and only it is upgraded.
        previous = stack.secrets["gp-b82002"]
        current = hash_secret("n" * 43)
        async with stack.gateway_db.transaction() as session:
            await session.execute(
                update(Client)
                .where(Client.client_id == "gp-b82002")
                .values(
                    secret_hash=current,
                    previous_secret_hash=PasswordHasher().hash(previous),
                    previous_secret_expires_at=utcnow() + timedelta(hours=1),
                )
            )
        assert (await _token(http, "gp-b82002", previous)).status_code == 200
        client = await _client(stack, "gp-b82002")
        assert client.secret_hash == current
        assert client.previous_secret_hash is not None
        assert client.previous_secret_hash.startswith("hmac-sha256$")
        assert (await _token(http, "gp-b82002", previous)).status_code == 200


# --- guessing: refused before hashing; the slow pool bounded --------------------------------------


async def test_failed_attempts_are_refused_before_any_hash(
    stack_factory: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stack: Stack = await stack_factory(token_failure_limit=3)
    hashed: list[str] = []
    real = clients_module._hmac_hex
    monkeypatch.setattr(
        clients_module, "_hmac_hex", lambda salt, secret: hashed.append(secret) or real(salt, secret)
    )
    caplog.set_level(logging.WARNING, logger="cmh.gateway.tokens")
    guesses = [f"guess-{n}-{uuid.uuid4().hex}" for n in range(5)]
    async with stack.client() as http:
        for guess in guesses[:3]:
            assert (await _token(http, "gp-a81001", guess)).status_code == 401
        assert len(hashed) == 3
        for attempt in (guesses[3], stack.secrets["gp-a81001"]):  # locked: even the right secret
            refused = await _token(http, "gp-a81001", attempt)
            assert refused.status_code == 429
            assert refused.headers["content-type"] == "application/json"
            assert refused.json()["error"] == "slow_down"
            assert 1 <= int(refused.headers["retry-after"]) <= 60
            assert refused.headers["cache-control"] == "no-store"
        assert len(hashed) == 3  # no hash computed for a refused attempt
        # Unknown ids are limited the same way (no telling them apart); other clients go on.
        for guess in guesses[:3]:
            assert (await _token(http, "nobody-here", guess)).status_code == 401
        assert (await _token(http, "nobody-here", guesses[4])).status_code == 429
        assert (await _token(http, "gp-b82002", stack.secrets["gp-b82002"])).status_code == 200
    failures = [r for r in caplog.records if r.getMessage() == "client authentication failed"]
    assert [r.client_id for r in failures] == ["gp-a81001"] * 3 + ["nobody-here"] * 3  # type: ignore[attr-defined]
    assert {r.client_address for r in failures} == {"127.0.0.1"}  # type: ignore[attr-defined]
    logged = " ".join(str(vars(r)) for r in caplog.records)
    assert not [s for s in (*guesses, stack.secrets["gp-a81001"]) if s in logged]


def test_failed_attempts_slide_and_clear() -> None:
    attempts = FailedAttempts(limit=2, window_seconds=10)
    attempts.record("c", now=0.0)
    assert attempts.retry_after("c", now=1.0) is None
    attempts.record("c", now=1.0)
    assert attempts.retry_after("c", now=2.0) == pytest.approx(8.0)
    assert attempts.retry_after("c", now=10.5) is None  # the first fell out of the window
    assert attempts.retry_after("other", now=2.0) is None
    attempts.clear("c")
    assert attempts.retry_after("c", now=10.6) is None
    bounded = FailedAttempts(limit=1, window_seconds=10, max_keys=100)
    for n in range(1000):
        bounded.record(f"made-up-{n}", now=0.0)
    assert len(bounded._failures) <= 100


class BlockingArgon2:
    """Argon2 whose checks wait until released, so the pool can be seen full."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.real = PasswordHasher()

    def verify(self, stored: str, secret: str) -> bool:
        self.entered.set()
        self.release.wait(10)
        return self.real.verify(stored, secret)


async def test_a_full_verification_pool_answers_at_once(
    stack_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack: Stack = await stack_factory(token_verify_workers=1, token_verify_queue=0)
    secret = await _make_legacy(stack, "gp-a81001")
    other = await _make_legacy(stack, "gp-b82002")
    blocking = BlockingArgon2()
    monkeypatch.setattr(clients_module, "_argon2", blocking)
    async with stack.client() as http:
        first = asyncio.create_task(_token(http, "gp-a81001", secret))
        assert await asyncio.to_thread(blocking.entered.wait, 10)
        full = await _token(http, "gp-b82002", other)
        assert full.status_code == 503, full.text
        assert full.json()["error"] == "temporarily_unavailable" and full.headers["retry-after"] == "1"
        # Answered at once: while the only worker is still held, not after it was let go.
        assert not blocking.release.is_set() and not first.done()
        # Secrets in the current format never wait for the pool.
        assert (await _token(http, "registry-reader", stack.secrets["registry-reader"])).status_code == 200
        blocking.release.set()
        assert (await first).status_code == 200
        assert (await _token(http, "gp-b82002", other)).status_code == 200  # room again; not a failure


# --- client assertion audiences -------------------------------------------------------------------


async def test_assertion_audience_is_configured_never_from_the_host_header(stack_factory: Any) -> None:
    stack: Stack = await stack_factory(public_url="https://api.cmh.example")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    async with stack.gateway_db.transaction() as session:
        await add_client(
            session, client_id="ehr-aud", name="EHR", organisation="A81001", organisation_system="ods",
            kind="partner_ehr", scopes="referral:read", jwks={"keys": [{**public, "kid": "k1"}]},
        )  # fmt: skip

    def form(aud: str) -> dict[str, str]:
        now = int(time.time())
        claims = {
            "iss": "ehr-aud",
            "sub": "ehr-aud",
            "aud": aud,
            "jti": str(uuid.uuid4()),
            "iat": now,
            "exp": now + 60,
        }
        signed = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
        return {
            "grant_type": "client_credentials",
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": signed,
        }

    host = {"Host": "evil.example"}
    async with stack.client() as http:
        forged = await http.post("/oauth2/token", data=form("http://evil.example/oauth2/token"), headers=host)
        assert forged.status_code == 401 and forged.json()["error"] == "invalid_client"
        for aud in (
            f"{stack.settings.gateway_url()}/oauth2/token",
            "https://api.cmh.example/oauth2/token",
            stack.settings.token_issuer,
        ):
            accepted = await http.post("/oauth2/token", data=form(aud), headers=host)
            assert accepted.status_code == 200, (aud, accepted.text)
