"""Issue 3 through the real path: the token endpoint, the gateway's gate and the service's own
check, key rotation under traffic, rate and body limits, CORS, and the audit trail."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import delete, text, update

from gateway.clients import add_client, disable_client
from gateway.keys import KeyManager
from gateway.models import AuditRecord
from tests.security.conftest import PERSON, Stack
from tests.support import eventually


def bearer(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


# --- the token endpoint -------------------------------------------------------------------------


async def test_client_secret_basic_and_post(stack: Stack) -> None:
    async with stack.client() as http:
        basic = await http.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=("gp-a81001", stack.secrets["gp-a81001"]),
        )
        post = await http.post(
            "/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "gp-a81001",
                "client_secret": stack.secrets["gp-a81001"],
            },
        )
    for response in (basic, post):
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        body = response.json()
        assert body["token_type"] == "Bearer" and body["expires_in"] == 300
        assert body["scope"] == "referral:read referral:submit"
        header = jwt.get_unverified_header(body["access_token"])
        assert header["alg"] == "RS256" and header["kid"]
        claims = jwt.decode(body["access_token"], options={"verify_signature": False})
        assert claims["cmh_org"] == "A81001" and claims["cmh_kind"] == "partner_ehr"


async def test_private_key_jwt_client_assertion(stack: Stack) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    async with stack.gateway_db.transaction() as session:
        await add_client(
            session,
            client_id="ehr-pkjwt",
            name="EHR with keys",
            organisation="A81001",
            organisation_system="ods",
            kind="partner_ehr",
            scopes="referral:read",
            jwks={"keys": [{**public, "kid": "ehr-key-1", "use": "sig"}]},
        )

    def assertion(**overrides: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": "ehr-pkjwt",
            "sub": "ehr-pkjwt",
            "aud": f"{stack.gateway_url}/oauth2/token",
            "jti": str(uuid.uuid4()),
            "iat": now,
            "exp": now + 60,
            **overrides,
        }
        return jwt.encode(claims, key, algorithm="RS512", headers={"kid": "ehr-key-1"})

    def form(signed: str) -> dict[str, str]:
        return {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": signed,
        }

    async with stack.client() as http:
        good = assertion()
        first = await http.post("/oauth2/token", data=form(good))
        assert first.status_code == 200, first.text
        replay = await http.post("/oauth2/token", data=form(good))
        assert replay.status_code == 401 and replay.json()["error"] == "invalid_client"
        assert "used already" in replay.json()["error_description"]
        for bad in (
            assertion(aud="https://elsewhere.example/token"),
            assertion(exp=int(time.time()) + 3600),
            assertion(sub="someone-else"),
            assertion(exp=int(time.time()) - 120, iat=int(time.time()) - 200),
        ):
            refused = await http.post("/oauth2/token", data=form(bad))
            assert refused.status_code == 401, refused.text
            assert refused.headers["content-type"] == "application/json"
            assert refused.headers["www-authenticate"] == 'Bearer realm="cmh-suite"'
        too_long = await http.post("/oauth2/token", data=form(assertion(padding="x" * 9000)))
        assert too_long.status_code == 400 and too_long.json()["error"] == "invalid_request"
        assert "too long" in too_long.json()["error_description"]
        assert "8192" in too_long.json()["error_description"]
        token = first.json()["access_token"]
        read = await http.get("/triage/probe/referrals/r-1", headers=bearer(token))
        assert read.status_code == 200


@pytest.mark.parametrize(
    ("data", "auth", "status", "error"),
    [
        ({"grant_type": "client_credentials"}, ("gp-a81001", "wrong"), 401, "invalid_client"),
        ({"grant_type": "client_credentials"}, ("nobody", "x"), 401, "invalid_client"),
        ({"grant_type": "client_credentials"}, None, 401, "invalid_client"),
        ({"grant_type": "password", "username": "u", "password": "p"}, "good", 400, "unsupported_grant_type"),
        ({"grant_type": "client_credentials", "scope": "registry:admin"}, "good", 400, "invalid_scope"),
    ],
)
async def test_token_requests_refused(
    stack: Stack, data: dict[str, str], auth: Any, status: int, error: str
) -> None:
    if auth == "good":
        auth = ("gp-a81001", stack.secrets["gp-a81001"])
    async with stack.client() as http:
        response = await http.post("/oauth2/token", data=data, auth=auth)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"  # RFC 6749 §5.2, not problem+json
    assert set(response.json()) == {"error", "error_description"}
    assert response.json()["error"] == error
    if status == 401:
        assert response.headers["www-authenticate"] == 'Basic realm="cmh-suite"'
    assert stack.secrets["gp-a81001"] not in response.text


async def test_requested_scopes_are_narrowed_and_disabled_clients_refused(stack: Stack) -> None:
    token = await stack.token("gp-a81001", scope="referral:read registry:admin audit:read")
    assert jwt.decode(token, options={"verify_signature": False})["scope"] == "referral:read"
    async with stack.gateway_db.transaction() as session:
        await disable_client(session, "gp-a81001")
    async with stack.client() as http:
        refused = await http.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=("gp-a81001", stack.secrets["gp-a81001"]),
        )
    assert refused.status_code == 401


# --- bad tokens: refused at the gateway, and by the service with the gateway bypassed -------------


async def _forged_tokens(stack: Stack) -> dict[str, str]:
    good = await stack.token("gp-a81001")
    claims = jwt.decode(good, options={"verify_signature": False})
    kid = jwt.get_unverified_header(good)["kid"]
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys = KeyManager(stack.gateway_db, stack.settings)
    signing = await keys.signing_key()
    now = int(time.time())
    header, payload, signature = good.split(".")
    escalated = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(payload).replace(b'"referral:read referral:submit"', b'"triage:decide"')
    ).decode()
    return {
        "expired": jwt.encode(
            {**claims, "iat": now - 4000, "nbf": now - 4000, "exp": now - 3600},
            signing.private_key,
            algorithm="RS256",
            headers={"kid": kid},
        ),
        "tampered": f"{header}.{escalated}.{signature}",
        "wrong audience": jwt.encode(
            {**claims, "aud": "another-api"}, signing.private_key, algorithm="RS256", headers={"kid": kid}
        ),
        "wrong key": jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": kid}),
        "unsigned": jwt.encode(claims, None, algorithm="none"),
    }


async def test_bad_tokens_refused_by_gateway_and_by_service(stack: Stack) -> None:
    forged = await _forged_tokens(stack)
    async with stack.client() as gateway, stack.service() as service:
        for name, token in forged.items():
            for http in (gateway, service):
                response = await http.get("/triage/probe/referrals/r-1", headers=bearer(token))
                assert response.status_code == 401, (name, http.base_url, response.text)
                assert response.headers["content-type"] == "application/problem+json"
        for http in (gateway, service):
            missing = await http.get("/triage/probe/referrals/r-1")
            assert missing.status_code == 401
    assert stack.probe.calls == []


async def test_scope_escalation_refused_by_gateway_and_by_service(stack: Stack) -> None:
    reader = await stack.token("registry-reader")  # no triage scope at all
    gp = await stack.token("gp-a81001")  # triage scopes, but not triage:decide
    async with stack.client() as gateway, stack.service() as service:
        at_gateway = await gateway.get("/triage/probe/referrals/r-1", headers=bearer(reader))
        assert at_gateway.status_code == 403
        assert at_gateway.json()["type"].endswith("/insufficient-scope")
        at_service = await service.get("/triage/probe/referrals/r-1", headers=bearer(reader))
        assert at_service.status_code == 403
        for http in (gateway, service):
            decide = await http.post("/triage/probe/decisions", headers=bearer(gp), content=b"{}")
            assert decide.status_code == 403
            assert decide.json()["required_scopes"] == ["triage:decide"]
    assert stack.probe.calls == []


# --- key rotation under traffic -------------------------------------------------------------------


async def test_key_rotation_during_traffic_fails_no_request(stack_factory: Any) -> None:
    # Rate limits out of the way: with fast secret checks the traffic outruns the default ones.
    stack: Stack = await stack_factory(
        signing_key_lead_seconds=1.5,
        jwks_refresh_seconds=0.5,
        rate_limit_per_minute=1_000_000,
        public_rate_limit_per_minute=1_000_000,
    )
    keys = KeyManager(stack.gateway_db, stack.settings, reload_seconds=0)
    first_kid = (await keys.signing_key()).kid
    statuses: list[int] = []
    kids: set[str] = set()
    stop = asyncio.Event()

    async def traffic(worker: int) -> None:
        async with stack.client() as http:
            while not stop.is_set():
                token = await stack.token("crisis-rw5")
                kids.add(jwt.get_unverified_header(token)["kid"])
                for _ in range(3):
                    response = await http.get(
                        "/triage/probe/referrals/r-1", headers=bearer(token, **{"X-Request-ID": f"w{worker}"})
                    )
                    statuses.append(response.status_code)

    workers = [asyncio.create_task(traffic(n)) for n in range(3)]
    await eventually(lambda: len(statuses) > 20)
    new_kid = await keys.rotate()
    await eventually(lambda: new_kid in kids, timeout=30)  # the new key signs tokens now
    await eventually(lambda: len(statuses) > 150, timeout=60)
    stop.set()
    await asyncio.gather(*workers)
    assert {first_kid, new_kid} <= kids
    # The crisis client (RW5) is not the referrer (A81001): every answer is the 403 of the
    # organisation binding, reached only by a verified token. Any 401 would be a rotation failure.
    assert set(statuses) == {403}, {s: statuses.count(s) for s in set(statuses)}


# --- limits and CORS ------------------------------------------------------------------------------


async def test_rate_limit_gives_429_with_retry_after(stack: Stack) -> None:
    token = await stack.token("slow-lane")  # 6 requests a minute, burst of one
    async with stack.client() as http:
        first = await http.get("/triage/probe/referrals/r-1", headers=bearer(token))
        second = await http.get("/triage/probe/referrals/r-1", headers=bearer(token))
    assert first.status_code == 403  # reached the service (other organisation)
    assert second.status_code == 429
    assert second.headers["content-type"] == "application/problem+json"
    assert 1 <= int(second.headers["retry-after"]) <= 10


async def test_body_limit_gives_413_declared_or_streamed(stack_factory: Any) -> None:
    stack: Stack = await stack_factory(max_body_bytes=4096)
    token = await stack.token("crisis-rw5")

    async def chunks() -> Any:
        for _ in range(10):
            yield b"x" * 1024

    async with stack.client() as http:
        small = await http.post("/triage/probe/decisions", headers=bearer(token), content=b"y" * 1000)
        assert small.status_code == 200 and small.json() == {"received": 1000}
        declared = await http.post("/triage/probe/decisions", headers=bearer(token), content=b"y" * 5000)
        assert declared.status_code == 413
        assert declared.headers["content-type"] == "application/problem+json"
        streamed = await http.post("/triage/probe/decisions", headers=bearer(token), content=chunks())
        assert streamed.status_code == 413
    assert stack.probe.calls == ["decide:crisis-rw5"]


async def test_cors_open_only_for_public_directory_reads(stack: Stack) -> None:
    origin = {"Origin": "https://partner.example"}
    async with stack.client() as http:
        preflight = await http.options(
            "/directory/services", headers={**origin, "Access-Control-Request-Method": "GET"}
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "*"
        public = await http.get("/directory/services", headers=origin)
        assert public.headers["access-control-allow-origin"] == "*"  # whatever the upstream said
        private = await http.get("/triage/probe/referrals/r-1", headers=origin)
        assert private.status_code == 401
        assert "access-control-allow-origin" not in private.headers
        token = await http.post("/oauth2/token", data={"grant_type": "client_credentials"}, headers=origin)
        assert "access-control-allow-origin" not in token.headers
        # Every answer on a public path, the gateway's own refusals included, is readable by a
        # browser app: a 401 for a method the feed does not take, a 404, a 429.
        for method, path in (
            ("POST", "/directory/services"),
            ("GET", "/directory/no-such-feed"),
            ("GET", "/fhir/CodeSystem/no-such-system"),
        ):
            answer = await http.request(method, path, headers=origin)
            assert answer.status_code >= 400 and answer.headers["access-control-allow-origin"] == "*", (
                method,
                path,
                answer.status_code,
            )
        partner = await http.get("/directory/partner/services", headers=origin)
        assert partner.status_code == 401 and "access-control-allow-origin" not in partner.headers


# --- audit ----------------------------------------------------------------------------------------


async def test_person_data_read_is_audited_and_the_trail_cannot_be_altered(stack: Stack) -> None:
    gp = await stack.token("gp-a81001")
    other_gp = await stack.token("gp-b82002")
    auditor = await stack.token("auditor")
    async with stack.client() as http:
        read = await http.get(
            "/triage/probe/referrals/r-1",
            headers=bearer(
                gp, **{"X-End-User-Id": "555000111222", "X-End-User-Role": "R8000", "X-Request-ID": "rq-1"}
            ),
        )
        assert read.status_code == 200
        # Another organisation's client is refused, and the refusal is audited too.
        refused = await http.get("/triage/probe/referrals/r-1", headers=bearer(other_gp))
        assert refused.status_code == 403
        assert refused.json()["type"].endswith("/organisation-mismatch")

        async def trail() -> list[dict[str, Any]] | None:
            response = await http.get("/audit/records", params={"person_id": PERSON}, headers=bearer(auditor))
            assert response.status_code == 200, response.text
            # The auditor's own queries are in this person's trail too: keep the service's entries.
            entries = [entry for entry in response.json()["entries"] if entry["service"] == "triage"]
            return entries if len(entries) == 2 else None

        entries = await eventually(trail, timeout=30, interval=0.25)
        success, denied = sorted(entries, key=lambda e: e["outcome"], reverse=True)
        assert success["outcome"] == "success" and denied["outcome"] == "denied"
        assert success["client_id"] == "gp-a81001" and success["organisation"] == "A81001"
        assert success["end_user_id"] == "555000111222" and success["end_user_role"] == "R8000"
        assert success["purpose_of_use"] == "TREAT" and success["request_id"] == "rq-1"
        assert success["service"] == "triage" and success["action"] == "read"
        assert success["resource_type"] == "Referral" and success["resource_ids"] == ["r-1"]
        assert success["person_ids"] == [PERSON]
        assert denied["client_id"] == "gp-b82002"
        gateway_entries = await http.get(
            "/audit/records", params={"person_id": PERSON}, headers=bearer(auditor)
        )
        searches = [e for e in gateway_entries.json()["entries"] if e["service"] == "gateway"]
        assert searches and all(e["action"] == "search" and e["client_id"] == "auditor" for e in searches)

        # No API alters the trail.
        for method in ("PUT", "PATCH", "DELETE", "POST"):
            attempt = await http.request(method, "/audit/records", headers=bearer(auditor), json={})
            assert attempt.status_code == 405, method
        # Nor can the database, whatever code asks.
        for statement in (update(AuditRecord).values(outcome="success"), delete(AuditRecord)):
            with pytest.raises(Exception, match="append-only"):
                async with stack.gateway_db.transaction() as session:
                    await session.execute(statement)
        if stack.gateway_db.dialect == "postgresql":
            with pytest.raises(Exception, match="append-only"):
                async with stack.gateway_db.transaction() as session:
                    await session.execute(text("TRUNCATE audit_records CASCADE"))

        # Querying the trail is itself audited, and needs audit:read.
        by_client = await http.get(
            "/audit/records",
            params={"client_id": "auditor", "from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"},
            headers=bearer(auditor),
        )
        assert by_client.status_code == 200
        assert any(e["resource_type"] == "AuditRecord" for e in by_client.json()["entries"])
        forbidden = await http.get("/audit/records", params={"person_id": PERSON}, headers=bearer(gp))
        assert forbidden.status_code == 403


async def test_audit_query_must_say_whose_trail(stack: Stack) -> None:
    auditor = await stack.token("auditor")
    async with stack.client() as http:
        nothing = await http.get("/audit/records", headers=bearer(auditor))
        unbounded = await http.get(
            "/audit/records", params={"client_id": "gp-a81001"}, headers=bearer(auditor)
        )
    assert nothing.status_code == 400 and unbounded.status_code == 400
