"""Helpers for tests (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any


async def eventually(
    predicate: Callable[[], Any | Awaitable[Any]], timeout: float = 15.0, interval: float = 0.05
) -> Any:
    """Poll an async or sync predicate until it returns a truthy value (no fixed sleeps in tests)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def published(settings: Any, subject: str) -> list[dict[str, Any]]:
    """Every message JetStream holds on a subject, read as the bus admin (an ephemeral consumer
    from the start, which no service identity may make)."""
    import json

    from nats.js.api import ConsumerConfig, DeliverPolicy

    from shared.broker import connect_bus

    connection = await connect_bus(settings)
    try:
        subscription = await connection.jetstream().pull_subscribe(
            subject,
            durable=None,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, filter_subject=subject),
        )
        found: list[dict[str, Any]] = []
        with contextlib.suppress(Exception):
            while True:
                found += [json.loads(m.data) for m in await subscription.fetch(100, timeout=0.5)]
        return found
    finally:
        await connection.close()


# --- access tokens for testing a service with the gateway bypassed ---------------------------------

_TEST_KEYS: dict[str, Any] = {}


def signing_key(kid: str = "test-key") -> tuple[Any, dict[str, Any]]:
    """An RSA key (made once per kid) and its public JWK."""
    if kid not in _TEST_KEYS:
        import jwt
        from cryptography.hazmat.primitives.asymmetric import rsa

        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
        _TEST_KEYS[kid] = (private, {**public, "kid": kid, "use": "sig", "alg": "RS256"})
    return _TEST_KEYS[kid]  # type: ignore[no-any-return]


def mint_token(
    scopes: str,
    *,
    organisation: str = "RW5",
    kind: str = "admin",
    client_id: str = "test-client",
    **claims: Any,
) -> str:
    """A token as the gateway would issue it, signed with the test key."""
    import time
    import uuid

    import jwt

    from shared.settings import Settings

    defaults = Settings()
    now = int(time.time())
    private, _ = signing_key()
    body = {
        "iss": defaults.token_issuer,
        "aud": defaults.token_audience,
        "sub": client_id,
        "iat": now,
        "nbf": now,
        "exp": now + 3600,  # long enough for a whole suite run; expiry tests set their own
        "jti": str(uuid.uuid4()),
        "scope": scopes,
        "cmh_org": organisation,
        "cmh_kind": kind,
        **claims,
    }
    return jwt.encode(body, private, algorithm="RS256", headers={"kid": "test-key"})


def trust_test_key(app: Any) -> None:
    """Make a running service app verify tokens against the test key instead of the gateway's JWKS."""
    from shared.auth import StaticKeys, TokenVerifier

    _, public = signing_key()
    app.state.token_verifier = TokenVerifier(app.state.settings, StaticKeys({"keys": [public]}))


async def outbox_events(app: Any, subject: str | None = None) -> list[dict[str, Any]]:
    """The events a service has committed to its outbox (decoded), oldest first."""
    import json

    from sqlalchemy import select

    from shared.messaging_models import OutboxMessage

    async with app.state.db.session() as session:
        query = select(OutboxMessage).order_by(OutboxMessage.seq)
        if subject:
            query = query.where(OutboxMessage.subject == subject)
        return [json.loads(row.payload) for row in (await session.scalars(query)).all()]


async def serve(app: Any, port: int) -> tuple[Any, asyncio.Task[None]]:
    """Run an ASGI app under uvicorn on a loopback port until the returned server is told to exit."""
    import uvicorn

    # As cmh/serving.py runs it: the peer is never rewritten from X-Forwarded-For.
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, lifespan="on", proxy_headers=False
    )
    server = uvicorn.Server(config)

    async def serving() -> None:
        # uvicorn calls sys.exit when it cannot bind (the port taken since free_port chose it). A
        # SystemExit escaping a task stops the whole event loop, and with it every later test of
        # this xdist worker; caught here, it fails this test alone.
        try:
            await server.serve()
        except SystemExit as exc:
            raise RuntimeError(f"could not serve on port {port}") from exc

    task = asyncio.create_task(serving())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError(f"the server on port {port} stopped before it started")
        await asyncio.sleep(0.02)
    return server, task


_TEMPLATES: dict[str, Any] = {}  # owner → its migrated SQLite file, made once per process (xdist worker)


async def migrate_for_test(owner: str, settings: Any) -> None:
    """Bring a test's database for `owner` to head, as `cmh.migrations.migrate` does. On SQLite the
    migrations run once per process into a template file, which each test then gets a copy of (a
    file copy, not a dozen migrations per test); PostgreSQL schemas are migrated as they are."""
    import atexit
    import shutil
    import tempfile
    from pathlib import Path

    from sqlalchemy.engine import make_url

    from cmh.migrations import migrate
    from shared.db import is_sqlite

    url, schema = settings.database_url_for(owner), settings.database_schema_for(owner)
    target = Path(make_url(url).database or "") if is_sqlite(url) else None
    if target is None or not target.name or target.name == ":memory:" or target.exists():
        await migrate(owner, url, schema=schema)
        return
    if owner not in _TEMPLATES:
        if "dir" not in _TEMPLATES:
            _TEMPLATES["dir"] = Path(tempfile.mkdtemp(prefix="cmh-templates-"))
            atexit.register(shutil.rmtree, _TEMPLATES["dir"], ignore_errors=True)
        template = _TEMPLATES["dir"] / f"{owner}.db"
        await migrate(owner, f"sqlite+aiosqlite:///{template}", schema=schema)
        # The last connection closed checkpointed the write-ahead log: the file is the database.
        assert not template.with_name(template.name + "-wal").exists()
        _TEMPLATES[owner] = template
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_TEMPLATES[owner], target)


@contextlib.asynccontextmanager
async def running_service(
    name: str, create_app: Callable[[Any], Any], settings: Any
) -> AsyncIterator[tuple[Any, Any]]:
    """A service migrated and running in process (lifespan: database, NATS, relay, consumers), the
    test key trusted, with an httpx client over ASGI: yields (client, app)."""
    import httpx

    await migrate_for_test(name, settings)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        trust_test_key(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{name}") as client:
            yield client, app


async def register_clients(session: Any, clients: dict[str, tuple[Any, ...]]) -> dict[str, str]:
    """Add gateway clients (id → organisation, system, kind, scopes[, rate limit]); returns their secrets."""
    from gateway.clients import add_client

    secrets: dict[str, str] = {}
    for client_id, (organisation, system, kind, scopes, *rate) in clients.items():
        created = await add_client(
            session, client_id=client_id, name=client_id, organisation=organisation, organisation_system=system,
            kind=kind, scopes=scopes, rate_limit_per_minute=rate[0] if rate else None,
        )  # fmt: skip
        assert created.secret is not None
        secrets[client_id] = created.secret
    return secrets


async def prepare_databases(
    settings: Any, owners: tuple[str, ...], clients: dict[str, tuple[Any, ...]]
) -> dict[str, str]:
    """Migrate each owner's database and register the gateway's clients; returns their secrets."""
    from shared.db import Database

    for owner in owners:
        await migrate_for_test(owner, settings)
    gateway_db = Database(
        settings.database_url_for("gateway"), schema=settings.database_schema_for("gateway")
    )
    try:
        async with gateway_db.transaction() as session:
            return await register_clients(session, clients)
    finally:
        await gateway_db.dispose()
