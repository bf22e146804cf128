"""The client registry: who may ask for tokens, for which organisation, with which scopes.

Secrets are shown once, when made, and stored only hashed. They are 256 random bits made here, so a
slow password hash buys nothing against guessing (there is nothing to guess) and costs the token
endpoint dearly under load: new hashes are `hmac-sha256$<salt>$<hex>`, HMAC-SHA256 keyed by a
random per-secret salt. Argon2id hashes from before still verify (the token endpoint upgrades
them on a successful check). Rotating a secret keeps the previous one valid for a grace period so
a partner can roll it out without downtime.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.models import Client
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


def check_jwks(jwks: dict[str, Any]) -> str:
    try:
        key_set = jwt.PyJWKSet.from_dict(jwks)
    except (jwt.PyJWKSetError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
        raise ClientRegistryError(f"not a usable JWKS: {exc}") from None
    for key in key_set.keys:
        if not key.key_id:
            raise ClientRegistryError("every key in the JWKS needs a kid")
        if "d" in jwks["keys"][key_set.keys.index(key)]:
            raise ClientRegistryError("the JWKS must hold public keys only")
    return json.dumps(jwks)


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
    secret: str | None = None,
    rate_limit_per_minute: int | None = None,
) -> NewClient:
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
    if jwks is not None:
        method, stored_jwks, shown_secret, secret_hash = "private_key_jwt", check_jwks(jwks), None, None
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
    """Client id → epoch seconds of the revocation, for revocations after `cutoff`."""
    rows = await session.execute(
        select(Client.client_id, Client.tokens_revoked_before).where(Client.tokens_revoked_before >= cutoff)
    )
    return {client_id: revoked.timestamp() for client_id, revoked in rows.all()}


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


async def replace_jwks(session: AsyncSession, client_id: str, jwks: dict[str, Any]) -> None:
    client = await get_client(session, client_id)
    if client.auth_method != "private_key_jwt":
        raise ClientRegistryError("this client authenticates with a secret: rotate it instead")
    client.jwks = check_jwks(jwks)
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
        "rate_limit_per_minute": client.rate_limit_per_minute,
        "disabled": client.disabled_at is not None,
        "previous_secret_valid_until": (
            client.previous_secret_expires_at.isoformat() if client.previous_secret_expires_at else None
        ),
    }
