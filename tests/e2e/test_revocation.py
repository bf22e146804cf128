"""Disabling a client ends its live tokens within seconds, at the gateway and in every service, and
its open event stream closes (issue 18 §4), on the closed bus the e2e suite runs on."""

from __future__ import annotations

import asyncio
import time

import httpx
import jwt

from gateway.clients import disable_client, enable_client
from services.triage.api import STREAM_HEARTBEAT_SECONDS
from tests.e2e.conftest import Suite
from tests.support import eventually

RESOLVE = "/registry/resolve?postcode=PR1%203BQ"
# "Within seconds": snapshots go out every second; the bound leaves room for a busy machine and is
# still far inside a token's lifetime (300 s), which is how long a revoked token lived before.
WITHIN_SECONDS = 20


async def _disable(suite: Suite, client_id: str) -> float:
    async with suite.apps["gateway"].state.db.transaction() as session:
        await disable_client(session, client_id)
    return time.monotonic()


async def test_a_disabled_clients_live_token_is_refused_everywhere_within_seconds(suite: Suite) -> None:
    token = await suite.token("gp-ehr")
    headers = {"Authorization": f"Bearer {token}"}
    direct = suite.settings.registry_url
    assert direct
    async with (
        httpx.AsyncClient(base_url=suite.url, timeout=10) as gateway,
        httpx.AsyncClient(timeout=10) as raw,
    ):
        assert (await gateway.get(RESOLVE, headers=headers)).status_code == 200
        assert (await raw.get(f"{direct}{RESOLVE}", headers=headers)).status_code == 200

        disabled = await _disable(suite, "gp-ehr")

        async def refused_everywhere() -> bool:
            through = await gateway.get(RESOLVE, headers=headers)
            straight = await raw.get(f"{direct}{RESOLVE}", headers=headers)
            return through.status_code == 401 and straight.status_code == 401

        await eventually(refused_everywhere, timeout=WITHIN_SECONDS, interval=0.1)
        elapsed = time.monotonic() - disabled
        assert elapsed < WITHIN_SECONDS, elapsed
        # Every process's list has it (a mechanism each service gets from the app factory).
        issued_at = float(jwt.decode(token, options={"verify_signature": False})["iat"])
        for name, app in suite.apps.items():
            assert app.state.token_verifier.revocations.revoked("gp-ehr", issued_at), name
        answer = await gateway.get(RESOLVE, headers=headers)
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert "revoked" in answer.json()["detail"]
        # No new token while disabled.
        refused = await gateway.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=("gp-ehr", suite.secrets["gp-ehr"]),
        )
        assert refused.status_code in (400, 401)

        # Enabled again: a new token works, the old one stays refused until it expires.
        async with suite.apps["gateway"].state.db.transaction() as session:
            await enable_client(session, "gp-ehr")
        await asyncio.sleep(1.1)  # a new token's iat (whole seconds) after the revocation
        fresh = {"Authorization": f"Bearer {await suite.token('gp-ehr')}"}
        assert (await gateway.get(RESOLVE, headers=fresh)).status_code == 200
        assert (await raw.get(f"{direct}{RESOLVE}", headers=fresh)).status_code == 200
        assert (await gateway.get(RESOLVE, headers=headers)).status_code == 401


async def test_an_open_crisis_stream_closes_when_its_client_is_disabled(suite: Suite) -> None:
    headers = {"Authorization": f"Bearer {await suite.token('crisis-app')}"}
    async with (
        httpx.AsyncClient(base_url=suite.url, timeout=30) as http,
        http.stream("GET", "/triage/crisis/stream", headers=headers) as stream,
    ):
        assert stream.status_code == 200
        chunks = stream.aiter_bytes()
        assert (await anext(chunks)).startswith(b"retry:")
        disabled = await _disable(suite, "crisis-app")

        async def drain() -> None:
            async for _ in chunks:
                pass

        await asyncio.wait_for(drain(), timeout=WITHIN_SECONDS)  # the stream ended; it did not hang
        # Before its first heartbeat (15 s): the revocation ended it, not a write that failed.
        assert time.monotonic() - disabled < STREAM_HEARTBEAT_SECONDS - 2
