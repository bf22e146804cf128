"""The client registry: who may ask for tokens, for which organisation, with which scopes.

Secrets are shown once, when made, and stored only hashed. They are 256 random bits made here, so a
slow password hash buys nothing against guessing (there is nothing to guess) and costs the token
endpoint dearly under load: new hashes are `hmac-sha256$<salt>$<hex>`, HMAC-SHA256 keyed by a
random per-secret salt. Argon2id hashes from before still verify (the token endpoint upgrades
them on a successful check). Rotating a secret keeps the previous one valid for a grace period so
a partner can roll it out without downtime.

A private_key_jwt client registers either a static JWKS (replaced by the operator, `replace_jwks`)
or a `jwks_uri` where it publishes its own keys (`set_jwks_uri`; fetched and cached by
gateway/jwks_fetch.py), never both. A `jwks_uri` is https, or http to a loopback host outside
production (a partner's test double on the same machine), with no userinfo and no fragment.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.models import PERSON_CLIENT_PREFIX, Client, Person
from shared.auth import SCOPES, ClientKind
from shared.sqltypes import utcnow

_argon2 = PasswordHasher()  # only to verify hashes made before the hmac-sha256 format
HMAC_SCHEME = "hmac-sha256"
MIN_SECRET_LENGTH = 32  # a fast hash is safe for high-entropy secrets only

# ODS organisation codes; charity numbers (England and Wales, Scotland SC, Northern Ireland NIC);
# Companies House numbers (8 digits, or two letters and six digits).
ORGANISATION_PATTERNS: dict[str, re.Pattern[str]] = {
    "ods": re.compile(r"^[A-Z0-9]{3,10}$"),
    "charity": re.compile(r"^(\d{6,8}|SC\d{6}|NIC\d{6})$"),
    "company": re.compile(r"^(\d{8}|[A-Z]{2}\d{6})$"),
}
_CLIENT_ID = re.compile(r"^[a-z0-9][a-z0-9\-]{2,63}$")
AUTH_METHODS = ("client_secret", "private_key_jwt")
ASSERTION_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "PS512")
# JWK members that are private (RFC 7518 §6.2.2, §6.3.2) or a shared secret (§6.4.1).
PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
MAX_JWKS_URI_LENGTH = 2048  # the column's size
Environment = Literal["development", "production"]


class ClientRegistryError(ValueError):
    """A registry request that breaks a rule; the message is safe to show."""


@dataclass(frozen=True)
class NewClient:
    client_id: str
    secret: str | None  # shown once


def parse_scopes(scopes: str | list[str]) -> list[str]:
    values = scopes.split() if isinstance(scopes, str) else scopes
    unknown = sorted(set(values) - set(SCOPES))
    if unknown:
        raise ClientRegistryError(f"unknown scopes: {' '.join(unknown)}")
    return sorted(set(values))


def check_jwks(jwks: Any) -> str:
    """The JWKS as stored (JSON), or ClientRegistryError: public keys only, each with a kid."""
    members = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(members, list) or not members:
        raise ClientRegistryError("not a usable JWKS: a JSON object with a non-empty list of keys is needed")
    # The raw members, not the parsed set: PyJWKSet skips keys it cannot use, so its positions do
    # not line up with these, and a private key behind an unusable one would slip through.
    for member in members:
        if not isinstance(member, dict):
            raise ClientRegistryError("not a usable JWKS: every key must be a JSON object")
        if PRIVATE_JWK_MEMBERS & member.keys():
            raise ClientRegistryError("the JWKS must hold public keys only")
    try:
        key_set = jwt.PyJWKSet.from_dict(jwks)
    except (jwt.PyJWKSetError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
        raise ClientRegistryError(f"not a usable JWKS: {exc}") from None
    if any(not key.key_id for key in key_set.keys):
        raise ClientRegistryError("every key in the JWKS needs a kid")
    return json.dumps(jwks)


def check_jwks_uri(url: str, *, environment: Environment) -> str:
    """The URL as stored, or ClientRegistryError. https only: the keys it serves decide who may
    get tokens, so they must come from the partner unaltered. http is allowed to a loopback host
    outside production only (a test double on the same machine). Userinfo would put a credential
    in our store and logs; a fragment means nothing to a fetch and hides what is really asked."""
    url = url.strip()
    if not url or len(url) > MAX_JWKS_URI_LENGTH or any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        raise ClientRegistryError(f"jwks_uri: an absolute URL of at most {MAX_JWKS_URI_LENGTH} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
    except ValueError:
        raise ClientRegistryError("jwks_uri is not a valid URL") from None
    host = (parts.hostname or "").lower()
    if not host:
        raise ClientRegistryError("jwks_uri needs a host")
    if "@" in parts.netloc:
        raise ClientRegistryError("jwks_uri must not hold a user name or password")
    if "#" in url:
        raise ClientRegistryError("jwks_uri must not have a fragment")
    scheme = parts.scheme.lower()
    if scheme == "https":
        return url
    if scheme == "http" and host in LOOPBACK_HOSTS and environment != "production":
        return url
    if scheme == "http" and host in LOOPBACK_HOSTS:
        raise ClientRegistryError("jwks_uri must be https in production")
    raise ClientRegistryError("jwks_uri must be https (http only to a loopback host, outside production)")


def _hmac_hex(salt: str, secret: str) -> str:
    return hmac.new(salt.encode(), secret.encode(), hashlib.sha256).hexdigest()


def hash_secret(secret: str) -> str:
    salt = secrets.token_hex(16)
    return f"{HMAC_SCHEME}${salt}${_hmac_hex(salt, secret)}"


def is_legacy_hash(stored: str) -> bool:
    """An Argon2 hash from before the fast format (slow to check: the token endpoint pools it)."""
    return not stored.startswith(f"{HMAC_SCHEME}$")


def new_secret() -> str:
    return secrets.token_urlsafe(32)


async def add_client(
    session: AsyncSession,
    *,
    name: str,
    organisation: str,
    organisation_system: str,
    kind: ClientKind | str,
    scopes: str | list[str],
    client_id: str | None = None,
    jwks: dict[str, Any] | None = None,
    jwks_uri: str | None = None,
    secret: str | None = None,
    rate_limit_per_minute: int | None = None,
    environment: Environment = "production",
) -> NewClient:
    """Register a client: with `jwks` or `jwks_uri` (one of them) it is private_key_jwt and no
    secret is made; otherwise it gets a secret. `environment` decides whether an http loopback
    `jwks_uri` is allowed; production unless told, so a caller that forgets cannot loosen it."""
    kind = ClientKind(kind)
    organisation = organisation.strip().upper()
    pattern = ORGANISATION_PATTERNS.get(organisation_system)
    if pattern is None:
        raise ClientRegistryError(f"organisation system must be one of {', '.join(ORGANISATION_PATTERNS)}")
    if not pattern.match(organisation):
        raise ClientRegistryError(f"{organisation!r} is not a valid {organisation_system} identifier")
    if kind is ClientKind.VCFSE_PARTNER and organisation_system == "ods":
        raise ClientRegistryError("a VCFSE partner is identified by its charity or company number")
    client_id = client_id or f"{kind.value.replace('_', '-')}-{secrets.token_hex(6)}"
    if not _CLIENT_ID.match(client_id):
        raise ClientRegistryError("client id: 3-64 lowercase letters, digits and -")
    if await session.get(Client, client_id) is not None:
        raise ClientRegistryError(f"client {client_id} exists already")
    if rate_limit_per_minute is not None and rate_limit_per_minute < 1:
        raise ClientRegistryError("rate limit must be at least 1 request a minute")
    if jwks is not None and jwks_uri is not None:
        raise ClientRegistryError("give either a JWKS or a jwks_uri, not both")
    stored_uri: str | None = None
    if jwks is not None or jwks_uri is not None:
        if secret is not None:
            raise ClientRegistryError("a private_key_jwt client has no secret")
        stored_jwks = check_jwks(jwks) if jwks is not None else None
        stored_uri = check_jwks_uri(jwks_uri, environment=environment) if jwks_uri is not None else None
        method, shown_secret, secret_hash = "private_key_jwt", None, None
    else:
        if secret is not None and len(secret) < MIN_SECRET_LENGTH:
            raise ClientRegistryError(f"a given secret needs at least {MIN_SECRET_LENGTH} random characters")
        shown_secret = secret or new_secret()
        method, stored_jwks, secret_hash = "client_secret", None, hash_secret(shown_secret)
    now = utcnow()
    session.add(
        Client(
            client_id=client_id,
            name=name.strip()[:200] or client_id,
            organisation=organisation,
            organisation_system=organisation_system,
            kind=kind.value,
            scopes=" ".join(parse_scopes(scopes)),
            auth_method=method,
            secret_hash=secret_hash,
            jwks=stored_jwks,
            jwks_uri=stored_uri,
            rate_limit_per_minute=rate_limit_per_minute,
            created_at=now,
            updated_at=now,
        )
    )
    return NewClient(client_id, shown_secret)


async def get_client(session: AsyncSession, client_id: str) -> Client:
    client = await session.get(Client, client_id)
    if client is None:
        raise ClientRegistryError(f"no client {client_id}")
    return client


async def list_clients(session: AsyncSession) -> list[Client]:
    return list((await session.scalars(select(Client).order_by(Client.client_id))).all())


async def disable_client(session: AsyncSession, client_id: str) -> None:
    """No new tokens, and the live ones refused within seconds everywhere (shared/revocation.py)."""
    client = await get_client(session, client_id)
    now = utcnow()
    client.disabled_at = client.disabled_at or now
    client.tokens_revoked_before = now
    client.updated_at = now


async def revoked_since(session: AsyncSession, cutoff: datetime) -> dict[str, float]:
    """Client id → epoch seconds of the revocation, for revocations after `cutoff`: clients', and
    people's (a disabled person's tokens carry `person:<id>` as their client id)."""
    rows = await session.execute(
        select(Client.client_id, Client.tokens_revoked_before).where(Client.tokens_revoked_before >= cutoff)
    )
    revoked = {client_id: when.timestamp() for client_id, when in rows.all()}
    people = await session.execute(
        select(Person.id, Person.tokens_revoked_before).where(Person.tokens_revoked_before >= cutoff)
    )
    revoked.update(
        {f"{PERSON_CLIENT_PREFIX}{person_id}": when.timestamp() for person_id, when in people.all()}
    )
    return revoked


async def enable_client(session: AsyncSession, client_id: str) -> None:
    client = await get_client(session, client_id)
    client.disabled_at = None
    client.updated_at = utcnow()


async def rotate_secret(session: AsyncSession, client_id: str, *, grace: timedelta) -> str:
    """A new secret; the current one keeps working for `grace` so the partner can switch over."""
    client = await get_client(session, client_id)
    if client.auth_method != "client_secret":
        raise ClientRegistryError("this client authenticates with private_key_jwt: register new keys instead")
    secret = new_secret()
    now = utcnow()
    if grace > timedelta(0):
        client.previous_secret_hash = client.secret_hash
        client.previous_secret_expires_at = now + grace
    else:
        client.previous_secret_hash = None
        client.previous_secret_expires_at = None
    client.secret_hash = hash_secret(secret)
    client.updated_at = now
    return secret


async def _key_client(session: AsyncSession, client_id: str) -> Client:
    client = await get_client(session, client_id)
    if client.auth_method != "private_key_jwt":
        raise ClientRegistryError("this client authenticates with a secret: rotate it instead")
    return client


async def replace_jwks(session: AsyncSession, client_id: str, jwks: dict[str, Any]) -> None:
    """A new static JWKS; a jwks_uri the client had is dropped (one source of keys only)."""
    client = await _key_client(session, client_id)
    client.jwks = check_jwks(jwks)
    client.jwks_uri = None
    client.updated_at = utcnow()


async def set_jwks_uri(
    session: AsyncSession, client_id: str, jwks_uri: str, *, environment: Environment = "production"
) -> None:
    """Keys from the partner's own URL from now on; a static JWKS the client had is dropped.
    Every gateway replica reads the client per request, so the switch takes effect at once."""
    client = await _key_client(session, client_id)
    client.jwks_uri = check_jwks_uri(jwks_uri, environment=environment)
    client.jwks = None
    client.updated_at = utcnow()


def secret_candidates(client: Client, now: datetime) -> list[tuple[str, str]]:
    """(column, stored hash) a presented secret may match: the current one, and the previous one
    inside its grace."""
    candidates = [("secret_hash", client.secret_hash)]
    if client.previous_secret_expires_at and client.previous_secret_expires_at > now:
        candidates.append(("previous_secret_hash", client.previous_secret_hash))
    return [(column, stored) for column, stored in candidates if stored]


def check_hash(stored: str, secret: str) -> bool:
    if not is_legacy_hash(stored):
        salt, _, digest = stored.removeprefix(f"{HMAC_SCHEME}$").partition("$")
        return hmac.compare_digest(_hmac_hex(salt, secret).encode(), digest.encode())
    try:
        return _argon2.verify(stored, secret)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def match_secret(client: Client, secret: str, now: datetime) -> tuple[str, str] | None:
    """The (column, stored hash) the secret matches, or None. Compared in constant time."""
    for column, stored in secret_candidates(client, now):
        if check_hash(stored, secret):
            return column, stored
    return None


def verify_secret(client: Client, secret: str, now: datetime) -> bool:
    return match_secret(client, secret, now) is not None


_DUMMY_SALT = secrets.token_hex(16)


def burn_verification(secret: str) -> None:
    """Spend what a (current-format) check costs, so an unknown client id can't be told by timing."""
    hmac.compare_digest(_hmac_hex(_DUMMY_SALT, secret).encode(), b"0" * 64)


def client_summary(client: Client) -> dict[str, Any]:
    return {
        "client_id": client.client_id,
        "name": client.name,
        "organisation": client.organisation,
        "organisation_system": client.organisation_system,
        "kind": client.kind,
        "scopes": client.scopes.split(),
        "auth_method": client.auth_method,
        "jwks_uri": client.jwks_uri,
        "rate_limit_per_minute": client.rate_limit_per_minute,
        "disabled": client.disabled_at is not None,
        "previous_secret_valid_until": (
            client.previous_secret_expires_at.isoformat() if client.previous_secret_expires_at else None
        ),
    }
