"""Partners rotate their own keys: a private_key_jwt client registered with a `jwks_uri`, its keys
fetched from a real HTTP server on loopback (never a stand-in for the fetch), cached by max-age,
refetched for an unknown kid at most once per 30 s, and any fetch that fails answered
`invalid_client` (gateway/jwks_fetch.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import inspect

from cmh.migrations import migrate
from gateway.clients import (
    ClientRegistryError,
    add_client,
    check_jwks,
    check_jwks_uri,
    client_summary,
    get_client,
    replace_jwks,
    set_jwks_uri,
)
from gateway.jwks_fetch import (
    MAX_JWKS_BYTES,
    REFETCH_INTERVAL_SECONDS,
    cache_seconds,
)
from gateway.models import Base as GatewayBase
from gateway.state import gateway_state
from gateway.tokens import CLIENT_ASSERTION_TYPE
from shared.db import Database
from shared.messaging_models import MessagingBase
from shared.migrations import is_managed
from shared.nats_server import free_port
from shared.settings import Settings
from tests.security.conftest import Stack

# --- a partner's JWKS server ----------------------------------------------------------------------


@dataclass
class Signer:
    kid: str
    key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))

    def public(self) -> dict[str, Any]:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": "RS512"}

    def private(self) -> dict[str, Any]:
        return {**jwt.algorithms.RSAAlgorithm.to_jwk(self.key, as_dict=True), "kid": self.kid}


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    cache_control: str | None = "public, max-age=600"
    content_length: bool = True  # False: no Content-Length, the body ends when the connection does
    location: str | None = None


class JwksServer:
    """A real HTTP server on a loopback port serving a mutable answer, counting the requests."""

    def __init__(self) -> None:
        self.answer = Answer()
        self.hits = 0
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: a body without a length ends at close

            def do_GET(self) -> None:  # the name http.server calls
                with owner._lock:
                    owner.hits += 1
                    answer = owner.answer
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                if answer.cache_control is not None:
                    self.send_header("Cache-Control", answer.cache_control)
                if answer.location is not None:
                    self.send_header("Location", answer.location)
                if answer.content_length:
                    self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                # The gateway may stop reading past its cap and hang up: as meant.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(answer.body)

            def log_message(self, format: str, *args: Any) -> None:  # quiet: the test reads hits, not a log
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/.well-known/jwks.json"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def serve(self, *signers: Signer, **answer: Any) -> None:
        body = json.dumps({"keys": [signer.public() for signer in signers]}).encode()
        self.serve_raw(body, **answer)

    def serve_raw(self, body: bytes, **answer: Any) -> None:
        with self._lock:
            self.answer = Answer(body=body, **answer)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    try:
        yield server
    finally:
        server.close()


async def register(stack: Stack, client_id: str, jwks_uri: str) -> None:
    async with stack.gateway_db.transaction() as session:
        await add_client(
            session,
            client_id=client_id,
            name=client_id,
            organisation="A81001",
            organisation_system="ods",
            kind="partner_ehr",
            scopes="referral:read",
            jwks_uri=jwks_uri,
            environment="development",
        )


def form(stack: Stack, client_id: str, signer: Signer, kid: str | None = None) -> dict[str, str]:
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": f"{stack.gateway_url}/oauth2/token",
        "jti": str(uuid.uuid4()),
        "iat": now,
        "exp": now + 60,
    }
    signed = jwt.encode(claims, signer.key, algorithm="RS512", headers={"kid": kid or signer.kid})
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": signed,
    }


async def post(stack: Stack, data: dict[str, str]) -> httpx.Response:
    async with stack.client() as http:
        return await http.post("/oauth2/token", data=data)


def assert_invalid_client(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["www-authenticate"] == 'Bearer realm="cmh-suite"'
    assert response.json() == {
        "error": "invalid_client",
        "error_description": "Client assertion is not valid.",
    }


# --- rotation, the cache and the refetch limit -----------------------------------------------------


async def test_partner_rotates_its_own_key(stack: Stack, jwks_server: JwksServer) -> None:
    old, new = Signer("partner-key-a"), Signer("partner-key-b")
    jwks_server.serve(old)
    await register(stack, "ehr-rotating", jwks_server.url)

    first = await post(stack, form(stack, "ehr-rotating", old))
    assert first.status_code == 200, first.text
    assert jwks_server.hits == 1
    # Within max-age: the cached set answers, the partner is not asked again.
    second = await post(stack, form(stack, "ehr-rotating", old))
    assert second.status_code == 200, second.text
    assert jwks_server.hits == 1

    # The partner publishes key B (and drops A): an assertion with kid B works at once, with one refetch.
    jwks_server.serve(new)
    rotated = await post(stack, form(stack, "ehr-rotating", new))
    assert rotated.status_code == 200, rotated.text
    assert jwks_server.hits == 2
    again = await post(stack, form(stack, "ehr-rotating", new))
    assert again.status_code == 200 and jwks_server.hits == 2
    # A is gone from the refetched set, and was just refetched: refused without asking again.
    assert_invalid_client(await post(stack, form(stack, "ehr-rotating", old)))
    assert jwks_server.hits == 2

    token = rotated.json()["access_token"]
    async with stack.client() as http:
        read = await http.get("/triage/probe/referrals/r-1", headers={"Authorization": f"Bearer {token}"})
    assert read.status_code == 200


async def test_a_flood_of_unknown_kids_refetches_once(stack: Stack, jwks_server: JwksServer) -> None:
    signer, stranger = Signer("partner-key-a"), Signer("made-up")
    jwks_server.serve(signer)
    await register(stack, "ehr-flooded", jwks_server.url)
    assert (await post(stack, form(stack, "ehr-flooded", signer))).status_code == 200
    assert jwks_server.hits == 1

    started = time.monotonic()
    refused = await asyncio.gather(*(post(stack, form(stack, "ehr-flooded", stranger)) for _ in range(20)))
    for response in refused:
        assert_invalid_client(response)
    assert time.monotonic() - started < REFETCH_INTERVAL_SECONDS  # so the limit is what held it to one
    assert jwks_server.hits == 2  # one refetch for the first unknown kid, none for the other 19
    # The partner's own key still works, from the cache.
    assert (await post(stack, form(stack, "ehr-flooded", signer))).status_code == 200
    assert jwks_server.hits == 2


async def test_max_age_is_honoured_and_clamped(stack: Stack, jwks_server: JwksServer) -> None:
    signer = Signer("partner-key-a")
    jwks_server.serve(signer, cache_control="max-age=5")  # below the floor: kept 60 s
    await register(stack, "ehr-cached", jwks_server.url)
    partner_keys = gateway_state(stack.gateway_app).token_service.partner_keys
    now = [time.monotonic()]
    partner_keys.clock = lambda: now[0]  # the clock only; every fetch still goes to the server

    assert (await post(stack, form(stack, "ehr-cached", signer))).status_code == 200
    assert jwks_server.hits == 1
    now[0] += 30
    assert (await post(stack, form(stack, "ehr-cached", signer))).status_code == 200
    assert jwks_server.hits == 1
    now[0] += 31  # past the 60 s floor
    jwks_server.serve(signer)  # max-age=600 from now on
    assert (await post(stack, form(stack, "ehr-cached", signer))).status_code == 200
    assert jwks_server.hits == 2
    now[0] += 599
    assert (await post(stack, form(stack, "ehr-cached", signer))).status_code == 200
    assert jwks_server.hits == 2
    now[0] += 2
    assert (await post(stack, form(stack, "ehr-cached", signer))).status_code == 200
    assert jwks_server.hits == 3


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, 300),
        ("", 300),
        ("no-store", 300),
        ("public, max-age=600", 600),
        ("max-age=0", 60),
        ("max-age=5, must-revalidate", 60),
        ('max-age="900"', 900),
        ("MAX-AGE=1200", 1200),
        ("max-age=99999999", 86400),
        ("s-maxage=7200", 300),
        ("max-age=ten", 300),
    ],
)
def test_cache_seconds(header: str | None, seconds: float) -> None:
    assert cache_seconds(header) == seconds


# --- a fetch that fails is invalid_client -----------------------------------------------------------


def _oversized(signer: Signer) -> bytes:
    return json.dumps({"keys": [signer.public()], "padding": "x" * (MAX_JWKS_BYTES + 1)}).encode()


FAILURES: dict[str, Callable[[JwksServer, Signer], None]] = {
    "500": lambda server, signer: server.serve(signer, status=500),
    "404": lambda server, signer: server.serve(signer, status=404),
    "redirect": lambda server, signer: server.serve(signer, status=302, location=server.url),
    "oversized": lambda server, signer: server.serve_raw(_oversized(signer)),
    "oversized, no length": lambda server, signer: server.serve_raw(_oversized(signer), content_length=False),
    "not json": lambda server, signer: server.serve_raw(b"<html>keys</html>"),
    "not a jwks": lambda server, signer: server.serve_raw(b'{"keys": []}'),
    "private key": lambda server, signer: server.serve_raw(json.dumps({"keys": [signer.private()]}).encode()),
    # A private key behind one the JWK library cannot use (it skips those): still found.
    "private key behind an unusable one": lambda server, signer: server.serve_raw(
        json.dumps({"keys": [{"kty": "nonsense", "kid": "x"}, signer.private()]}).encode()
    ),
}


@pytest.mark.parametrize("failure", [*FAILURES, "server down"])
async def test_a_fetch_that_fails_is_invalid_client(
    stack: Stack, jwks_server: JwksServer, failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cmh.gateway")
    signer = Signer("partner-key-a")
    if failure == "server down":
        url = f"http://127.0.0.1:{free_port()}/.well-known/jwks.json"  # nothing listens there
    else:
        FAILURES[failure](jwks_server, signer)
        url = jwks_server.url
    await register(stack, "ehr-failing", url)
    data = form(stack, "ehr-failing", signer)

    assert_invalid_client(await post(stack, data))
    if failure != "server down":
        assert jwks_server.hits == 1
    fetch_failures = [r for r in caplog.records if r.getMessage() == "client JWKS fetch failed"]
    assert len(fetch_failures) == 1 and getattr(fetch_failures[0], "client_id", None) == "ehr-failing"
    assert any(r.getMessage() == "client assertion refused" for r in caplog.records)
    logged = " ".join(str(vars(r)) for r in caplog.records)
    assert data["client_assertion"] not in logged
    assert data["client_assertion"].split(".")[2] not in logged  # not even its signature

    # Fixed at the partner's end: tried again only after the refetch interval (no hammering).
    jwks_server.serve(signer)
    if failure != "server down":
        assert_invalid_client(await post(stack, form(stack, "ehr-failing", signer)))
        assert jwks_server.hits == 1
        partner_keys = gateway_state(stack.gateway_app).token_service.partner_keys
        later = time.monotonic() + REFETCH_INTERVAL_SECONDS + 1
        partner_keys.clock = lambda: later
        recovered = await post(stack, form(stack, "ehr-failing", signer))
        assert recovered.status_code == 200, recovered.text
        assert jwks_server.hits == 2


async def test_a_slow_server_is_given_up_on(stack: Stack) -> None:
    """A server that accepts and never answers: refused within the fetch timeout, not held open."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        await register(stack, "ehr-slow", f"http://127.0.0.1:{listener.getsockname()[1]}/jwks.json")
        started = time.monotonic()
        assert_invalid_client(await post(stack, form(stack, "ehr-slow", Signer("k"))))
        assert time.monotonic() - started < 8  # 3 s timeout, generously bounded
    finally:
        listener.close()


# --- registration ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "environment", "allowed"),
    [
        ("https://keys.partner.example/.well-known/jwks.json", "production", True),
        ("https://keys.partner.example:8443/jwks?v=2", "production", True),
        ("http://example.org/jwks.json", "development", False),
        ("http://example.org/jwks.json", "production", False),
        ("http://127.0.0.1:8080/jwks.json", "development", True),
        ("http://localhost/jwks.json", "development", True),
        ("http://[::1]:9000/jwks.json", "development", True),
        ("http://127.0.0.1:8080/jwks.json", "production", False),
        ("http://localhost/jwks.json", "production", False),
        ("http://127.0.0.2/jwks.json", "development", False),  # the three names only
        ("http://localhost.partner.example/jwks.json", "development", False),
        ("https://user:pw@keys.partner.example/jwks.json", "production", False),
        ("https://user@keys.partner.example/jwks.json", "production", False),
        ("http://user@127.0.0.1/jwks.json", "development", False),
        ("https://keys.partner.example/jwks.json#main", "production", False),
        ("https://keys.partner.example/jwks.json#", "production", False),
        ("ftp://keys.partner.example/jwks.json", "production", False),
        ("file:///etc/passwd", "development", False),
        ("https:///jwks.json", "production", False),
        ("https://keys.partner.example:99999/jwks.json", "production", False),
        ("https://keys.partner.example/jw ks.json", "production", False),
        ("keys.partner.example/jwks.json", "production", False),
        ("https://keys.partner.example/" + "a" * 2100, "production", False),
    ],
)
def test_jwks_uri_rules(url: str, environment: Any, allowed: bool) -> None:
    if allowed:
        assert check_jwks_uri(url, environment=environment) == url
    else:
        with pytest.raises(ClientRegistryError, match="jwks_uri"):
            check_jwks_uri(url, environment=environment)


async def test_registration_takes_one_source_of_keys(stack: Stack) -> None:
    signer = Signer("k1")
    common: dict[str, Any] = {
        "name": "x",
        "organisation": "A81001",
        "organisation_system": "ods",
        "kind": "partner_ehr",
        "scopes": "referral:read",
    }
    async with stack.gateway_db.transaction() as session:
        with pytest.raises(ClientRegistryError, match="not both"):
            await add_client(
                session,
                client_id="ehr-both",
                jwks={"keys": [signer.public()]},
                jwks_uri="https://keys.partner.example/jwks.json",
                **common,
            )
        # Production unless told otherwise: a caller that forgets cannot allow plain http.
        with pytest.raises(ClientRegistryError, match="https in production"):
            await add_client(session, client_id="ehr-http", jwks_uri="http://127.0.0.1:1/jwks.json", **common)
        with pytest.raises(ClientRegistryError, match="must be https"):
            await add_client(
                session,
                client_id="ehr-http",
                jwks_uri="http://example.org/jwks.json",
                environment="development",
                **common,
            )
        with pytest.raises(ClientRegistryError, match="no secret"):
            await add_client(
                session,
                client_id="ehr-secret",
                jwks_uri="https://keys.partner.example/jwks.json",
                secret="s" * 40,
                **common,
            )
        created = await add_client(
            session, client_id="ehr-uri", jwks_uri="https://keys.partner.example/jwks.json", **common
        )
        assert created.secret is None
        client = await get_client(session, "ehr-uri")
        assert client.auth_method == "private_key_jwt" and client.jwks is None and client.secret_hash is None
        assert client_summary(client)["jwks_uri"] == "https://keys.partner.example/jwks.json"

        # The operator switches between the two; one always replaces the other.
        await replace_jwks(session, "ehr-uri", {"keys": [signer.public()]})
        assert client.jwks is not None and client.jwks_uri is None
        assert client_summary(client)["jwks_uri"] is None
        await set_jwks_uri(session, "ehr-uri", "https://keys2.partner.example/jwks.json")
        assert client.jwks is None and client.jwks_uri == "https://keys2.partner.example/jwks.json"
        with pytest.raises(ClientRegistryError, match="jwks_uri"):
            await set_jwks_uri(session, "ehr-uri", "http://keys.partner.example/jwks.json")

        await add_client(session, client_id="ehr-with-secret", **common)
        with pytest.raises(ClientRegistryError, match="rotate it instead"):
            await set_jwks_uri(session, "ehr-with-secret", "https://keys.partner.example/jwks.json")


async def test_switching_to_a_static_jwks_and_back(stack: Stack, jwks_server: JwksServer) -> None:
    fetched, static = Signer("fetched-key"), Signer("static-key")
    jwks_server.serve(fetched)
    await register(stack, "ehr-switching", jwks_server.url)
    assert (await post(stack, form(stack, "ehr-switching", fetched))).status_code == 200
    async with stack.gateway_db.transaction() as session:
        await replace_jwks(session, "ehr-switching", {"keys": [static.public()]})
    assert (await post(stack, form(stack, "ehr-switching", static))).status_code == 200
    assert_invalid_client(await post(stack, form(stack, "ehr-switching", fetched)))
    assert jwks_server.hits == 1
    async with stack.gateway_db.transaction() as session:
        await set_jwks_uri(session, "ehr-switching", jwks_server.url, environment="development")
    # What was fetched before the switch is not trusted again without a fresh fetch.
    assert (await post(stack, form(stack, "ehr-switching", fetched))).status_code == 200
    assert jwks_server.hits == 2
    assert_invalid_client(await post(stack, form(stack, "ehr-switching", static)))


@pytest.mark.parametrize(
    "jwks",
    [
        {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "shared"}]},
        {"keys": "not a list"},
        {"keys": []},
        {"keys": ["not an object"]},
        [],
    ],
)
def test_check_jwks_refuses_secrets_and_shapeless_sets(jwks: Any) -> None:
    with pytest.raises(ClientRegistryError):
        check_jwks(jwks)


def test_cli_registers_and_switches_a_jwks_uri(cmh) -> None:  # type: ignore[no-untyped-def]
    base = ["clients", "add", "--name", "Acme EHR", "--organisation", "P81001", "--kind", "partner_ehr",
            "--scopes", "referral:read"]  # fmt: skip
    code, out, err = cmh(*base, "--client-id", "ehr-acme", "--jwks-uri", "http://127.0.0.1:9/jwks.json")
    assert code == 0, err
    assert json.loads(out) == {"client_id": "ehr-acme", "client_secret": None}
    code, out, err = cmh(*base, "--client-id", "ehr-plain", "--jwks-uri", "http://example.org/jwks.json")
    assert code == 2 and "must be https" in err
    with pytest.raises(SystemExit):  # argparse: one source of keys only
        cmh(*base, "--jwks-uri", "https://a.example/j", "--jwks-file", "jwks.json")

    code, out, _ = cmh("clients", "list")
    (listed,) = [json.loads(line) for line in out.splitlines()]
    assert listed["jwks_uri"] == "http://127.0.0.1:9/jwks.json" and listed["auth_method"] == "private_key_jwt"
    code, out, _ = cmh("clients", "rotate", "ehr-acme", "--jwks-uri", "https://keys.acme.example/jwks.json")
    assert code == 0 and json.loads(out)["jwks_uri"] == "https://keys.acme.example/jwks.json"


# --- the migration -----------------------------------------------------------------------------------


async def test_gateway_migrations_match_models_and_roll_back(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    url, schema = settings.database_url_for("gateway"), settings.database_schema_for("gateway")
    await migrate("gateway", url, schema=schema)
    db = Database(url, schema=schema)
    try:
        async with db.engine.connect() as connection:

            def diff(sync_connection: Any) -> list[Any]:
                context = MigrationContext.configure(
                    sync_connection, opts={"compare_type": True, "include_name": is_managed}
                )
                return list(compare_metadata(context, [GatewayBase.metadata, MessagingBase.metadata]))

            assert await connection.run_sync(diff) == []
        # Down through 0007 (with no client using a jwks_uri), then up to 0006 and to the head again.
        await migrate("gateway", url, schema=schema, revision="base")
        await migrate("gateway", url, schema=schema, revision="0006")
        async with db.engine.connect() as connection:
            columns = await connection.run_sync(
                lambda c: {col["name"] for col in inspect(c).get_columns("clients")}
            )
        assert "jwks_uri" not in columns and "jwks" in columns
        await migrate("gateway", url, schema=schema)
        async with db.engine.connect() as connection:
            columns = await connection.run_sync(
                lambda c: {col["name"] for col in inspect(c).get_columns("clients")}
            )
        assert "jwks_uri" in columns
    finally:
        await db.dispose()


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "10.0.0.1", "169.254.169.254"])
async def test_a_production_gateway_never_fetches_keys_from_our_own_network(host: str) -> None:
    """A jwks_uri naming (or resolving to) a loopback, private or link-local address is refused
    before any connection is made: no server-side request forgery through the token endpoint."""
    from gateway.jwks_fetch import JwksUnavailable, fetch_jwks

    with pytest.raises(JwksUnavailable, match="fetch refused"):
        await fetch_jwks(f"https://{host}:8443/jwks.json", environment="production")
