"""Operator commands on the gateway's store: `cmh clients …`, `cmh keys …`, `cmh token`, `cmh users
…` (the people who sign in), and the demo clients `cmh run` seeds. They work on the database directly, so they need no running gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from gateway.clients import (
    ClientRegistryError,
    add_client,
    client_summary,
    disable_client,
    enable_client,
    get_client,
    list_clients,
    replace_jwks,
    rotate_secret,
    set_jwks_uri,
)
from gateway.keys import KeyManager
from gateway.models import MIGRATIONS, Client
from gateway.tokens import TokenService
from gateway.web.demo_people import DEV_OIDC_ISSUER_FILE
from gateway.web.people import (
    ORGANISATION_SYSTEMS,
    PeopleError,
    add_person,
    disable_person,
    list_people,
    parse_roles,
)
from gateway.web.roles import Role
from gateway.web.sessions import end_sessions_of
from shared.auth import ClientKind
from shared.db import Database
from shared.migrations import migrate
from shared.settings import Settings, get_settings


@dataclass(frozen=True)
class DemoClient:
    client_id: str
    name: str
    organisation: str
    organisation_system: str
    kind: ClientKind
    scopes: str


# One per kind, acting for Lancashire and South Cumbria organisations (ODS codes from the reference
# data). The VCFSE partner's charity number is a placeholder for demonstrations only.
DEMO_CLIENTS: tuple[DemoClient, ...] = (
    DemoClient(
        "demo-partner-ehr",
        "Lancashire Teaching Hospitals EHR (demo)",
        "RXN",
        "ods",
        ClientKind.PARTNER_EHR,
        "referral:submit referral:read careplan:read registry:read subscription:manage",
    ),
    DemoClient(
        "demo-crisis-app",
        "LSCFT mobile crisis app (demo)",
        "RW5",
        "ods",
        ClientKind.CRISIS_APP,
        "referral:submit referral:read triage:decide crisis:respond careplan:read careplan:write registry:read",
    ),
    DemoClient(
        "demo-reporting",
        "Lancashire and South Cumbria ICB reporting (demo)",
        "QE1",
        "ods",
        ClientKind.REPORTING,
        "reporting:aggregate reporting:export registry:read",
    ),
    DemoClient(
        "demo-vcfse-partner",
        "Demo community wellbeing charity",
        "1000001",
        "charity",
        ClientKind.VCFSE_PARTNER,
        "directory:write handover:respond registry:read",
    ),
    DemoClient(
        "demo-admin",
        "LSCFT system administration (demo)",
        "RW5",
        "ods",
        ClientKind.ADMIN,
        "registry:read registry:admin directory:moderate audit:read reporting:aggregate reporting:unsuppressed",
    ),
)


def demo_secrets_path(settings: Settings) -> Path:
    return settings.var_dir / "demo-clients.json"


async def _open(settings: Settings) -> Database:
    url, schema = settings.database_url_for("gateway"), settings.database_schema_for("gateway")
    await migrate("gateway", url, directory=MIGRATIONS, schema=schema)
    return Database(url, schema=schema, pool_size=2)


async def _with_db(settings: Settings, work: Callable[[Database], Awaitable[Any]]) -> Any:
    db = await _open(settings)
    try:
        return await work(db)
    finally:
        await db.dispose()


async def seed_demo_clients(settings: Settings) -> dict[str, str]:
    """Create the demo clients once; their secrets live in var/demo-clients.json (owner-only)."""
    path = demo_secrets_path(settings)
    known: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}

    async def work(db: Database) -> dict[str, str]:
        secrets: dict[str, str] = {}
        async with db.transaction() as session:
            for demo in DEMO_CLIENTS:
                existing = await session.get(Client, demo.client_id)
                if existing is None:
                    created = await add_client(
                        session,
                        client_id=demo.client_id,
                        name=demo.name,
                        organisation=demo.organisation,
                        organisation_system=demo.organisation_system,
                        kind=demo.kind,
                        scopes=demo.scopes,
                    )
                    assert created.secret is not None
                    secrets[demo.client_id] = created.secret
                elif demo.client_id in known:
                    secrets[demo.client_id] = known[demo.client_id]
                else:  # the secrets file was lost: issue a new secret
                    secrets[demo.client_id] = await rotate_secret(session, demo.client_id, grace=timedelta(0))
        await KeyManager(db, settings).ensure_active()
        return secrets

    secrets = await _with_db(settings, work)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(secrets, handle, indent=2)
    return secrets


def demo_instructions(settings: Settings, secrets: dict[str, str]) -> list[str]:
    base = settings.gateway_url()
    lines = ["demo clients (secrets in " + str(demo_secrets_path(settings)) + "):"]
    for demo in DEMO_CLIENTS:
        if demo.client_id not in secrets:
            continue
        lines.append(f"  {demo.kind.value:<14} {demo.client_id}: scopes {demo.scopes}")
        lines.append(
            f"    curl -s -u {demo.client_id}:{secrets[demo.client_id]} -d grant_type=client_credentials "
            f"{base}/oauth2/token"
        )
    lines.append("  or, for a token alone:  .venv/bin/cmh token crisis_app")
    return lines


async def mint_token(settings: Settings, reference: str) -> str:
    """A token for a client id, or for the first demo client of a kind."""

    async def work(db: Database) -> str:
        async with db.session() as session:
            client = await session.get(Client, reference)
            if client is None and reference in {kind.value for kind in ClientKind}:
                client = await session.scalar(
                    select(Client)
                    .where(Client.kind == reference, Client.disabled_at.is_(None))
                    .order_by(Client.client_id.not_like("demo-%"), Client.client_id)
                    .limit(1)
                )
        if client is None or client.disabled_at is not None:
            raise ClientRegistryError(
                f"no enabled client {reference!r}: `make run` seeds the demo clients; `cmh clients add` adds one"
            )
        keys = KeyManager(db, settings)
        await keys.ensure_active()
        issued = await TokenService(db, keys, settings).issue(client, client.scopes.split())
        return str(issued["access_token"])

    return str(await _with_db(settings, work))


# --- command line -------------------------------------------------------------------------------


def register(commands: Any) -> None:
    clients = commands.add_parser("clients", help="manage OAuth2 clients").add_subparsers(
        dest="action", required=True
    )
    add = clients.add_parser("add", help="register a client (prints its secret once)")
    add.add_argument("--name", required=True)
    add.add_argument("--organisation", required=True, help="ODS code, or charity / company number")
    add.add_argument("--organisation-system", choices=["ods", "charity", "company"], default="ods")
    add.add_argument("--kind", required=True, choices=[kind.value for kind in ClientKind])
    add.add_argument("--scopes", required=True, help="space separated")
    add.add_argument("--client-id")
    keys_source = add.add_mutually_exclusive_group()
    keys_source.add_argument(
        "--jwks-file", type=Path, help="public JWKS for private_key_jwt (no secret is made)"
    )
    keys_source.add_argument(
        "--jwks-uri",
        help="https URL where the partner publishes its JWKS for private_key_jwt (no secret is made)",
    )
    add.add_argument("--rate-limit", type=int, help="requests per minute")
    clients.add_parser("list", help="list clients")
    for action in ("disable", "enable"):
        sub = clients.add_parser(action, help=f"{action} a client")
        sub.add_argument("client_id")
    rotate = clients.add_parser(
        "rotate", help="new secret (or new keys: a static JWKS with --jwks-file, a URL with --jwks-uri)"
    )
    rotate.add_argument("client_id")
    rotate.add_argument("--grace-hours", type=float, default=24.0, help="how long the old secret still works")
    new_keys = rotate.add_mutually_exclusive_group()
    new_keys.add_argument("--jwks-file", type=Path, help="replace the keys by this static JWKS")
    new_keys.add_argument("--jwks-uri", help="fetch the keys from this URL from now on (drops a static JWKS)")
    keys = commands.add_parser("keys", help="token signing keys").add_subparsers(dest="action", required=True)
    keys.add_parser("list", help="list signing keys")
    keys.add_parser("rotate", help="publish a new signing key; it signs after the lead time")
    token = commands.add_parser("token", help="print an access token for a client id or a kind")
    token.add_argument("client", help="client id, or a kind (first demo client of that kind)")
    for parser in (commands.choices["clients"], commands.choices["keys"], token):
        parser.set_defaults(func=run_command)
    register_users(commands)


def register_users(commands: Any) -> None:
    users = commands.add_parser(
        "users", help="the people who sign in: a provider identity mapped to an organisation and roles"
    )
    actions = users.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="map a person (their provider's issuer and subject)")
    add.add_argument("--subject", required=True, help="the provider's `sub` for them (never reused)")
    add.add_argument("--name", required=True)
    add.add_argument("--organisation", required=True, help="ODS code, or charity / company number")
    add.add_argument("--organisation-system", choices=ORGANISATION_SYSTEMS, default="ods")
    add.add_argument(
        "--role",
        action="append",
        required=True,
        metavar="ROLE",
        help=f"repeat for each: {', '.join(role.value for role in Role)}",
    )
    add.add_argument("--team", help="their team's registry id (team members and team leads)")
    add.add_argument("--email")
    add.add_argument(
        "--issuer", help="the provider's issuer URL (default CMH_OIDC_ISSUER, or `cmh run`'s development one)"
    )
    actions.add_parser("list", help="list people")
    disable = actions.add_parser("disable", help="disable a person: no sign-in, their sessions end now")
    disable.add_argument("person_id")
    users.set_defaults(func=run_users_command)


def default_issuer(settings: Settings) -> str | None:
    """CMH_OIDC_ISSUER, else the development provider `cmh run` started for this var directory."""
    if settings.oidc_issuer:
        return settings.oidc_issuer
    recorded = settings.var_dir / DEV_OIDC_ISSUER_FILE
    return recorded.read_text().strip() or None if recorded.exists() else None


def run_users_command(args: argparse.Namespace) -> int:
    settings = get_settings()
    try:
        return asyncio.run(_users(args, settings))
    except PeopleError as exc:
        print(f"cmh users: {exc}", file=sys.stderr)
        return 2


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else "never"


async def _users(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "add":
        roles = parse_roles(args.role)  # before the database: a typo costs nothing
        issuer = args.issuer or default_issuer(settings)
        if not issuer:
            raise PeopleError("no provider: pass --issuer or set CMH_OIDC_ISSUER")

    async def work(db: Database) -> int:
        if args.action == "disable":
            async with db.transaction() as session:
                person = await disable_person(session, args.person_id)
                name = person.name
            ended = await end_sessions_of(db, args.person_id)
            print(f"disabled {args.person_id} ({name}); {ended} session(s) ended")
            return 0
        async with db.transaction() as session:
            if args.action == "add":
                person = await add_person(
                    session,
                    issuer=issuer,
                    subject=args.subject,
                    name=args.name,
                    organisation=args.organisation,
                    organisation_system=args.organisation_system,
                    roles=roles,
                    team_id=args.team,
                    email=args.email,
                    single_point_of_access=settings.single_point_of_access_codes,
                )
                print(f"added {person.id}: {person.name} ({person.roles}) of {person.organisation}")
                return 0
            rows = [
                (
                    person.id,
                    person.name,
                    f"{person.organisation} ({person.organisation_system})",
                    person.roles.replace(" ", ","),
                    person.team_id or "-",
                    "disabled" if person.disabled_at is not None else "active",
                    _when(person.last_signed_in_at),
                )
                for person in await list_people(session)
            ]
        _print_table(("id", "name", "organisation", "roles", "team", "state", "last signed in"), rows)
        return 0

    return int(await _with_db(settings, work))


def _print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def run_command(args: argparse.Namespace) -> int:
    settings = get_settings()
    try:
        return asyncio.run(_dispatch(args, settings))
    except ClientRegistryError as exc:
        print(f"cmh: {exc}", file=sys.stderr)
        return 2


async def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "token":
        print(await mint_token(settings, args.client))
        return 0

    async def work(db: Database) -> int:
        if args.command == "keys":
            manager = KeyManager(db, settings)
            if args.action == "rotate":
                await manager.ensure_active()
                print(
                    f"published {await manager.rotate()}; it signs in {settings.signing_key_lead_seconds:.0f}s"
                )
            for key in await manager.describe():
                print(json.dumps(key))
            return 0
        async with db.transaction() as session:
            if args.action == "add":
                jwks = json.loads(args.jwks_file.read_text()) if args.jwks_file else None
                created = await add_client(
                    session,
                    name=args.name,
                    organisation=args.organisation,
                    organisation_system=args.organisation_system,
                    kind=args.kind,
                    scopes=args.scopes,
                    client_id=args.client_id,
                    jwks=jwks,
                    jwks_uri=args.jwks_uri,
                    rate_limit_per_minute=args.rate_limit,
                    environment=settings.environment,
                )
                print(json.dumps({"client_id": created.client_id, "client_secret": created.secret}))
            elif args.action == "list":
                for client in await list_clients(session):
                    print(json.dumps(client_summary(client)))
            elif args.action == "disable":
                await disable_client(session, args.client_id)
            elif args.action == "enable":
                await enable_client(session, args.client_id)
            elif args.action == "rotate":
                if args.jwks_file:
                    await replace_jwks(session, args.client_id, json.loads(args.jwks_file.read_text()))
                elif args.jwks_uri:
                    await set_jwks_uri(
                        session, args.client_id, args.jwks_uri, environment=settings.environment
                    )
                else:
                    grace = timedelta(hours=args.grace_hours)
                    secret = await rotate_secret(session, args.client_id, grace=grace)
                    print(json.dumps({"client_id": args.client_id, "client_secret": secret}))
            if args.action in ("disable", "enable", "rotate"):
                print(json.dumps(client_summary(await get_client(session, args.client_id))))
        return 0

    return int(await _with_db(settings, work))
