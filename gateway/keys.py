"""The keys that sign access tokens, and their rotation without downtime.

`rotate()` adds a key as *pending*: published in the JWKS straight away but not yet signing. After
`signing_key_lead_seconds` (longer than verifiers cache the JWKS) it becomes *active* and the old
active key becomes *retiring*: still published until every token it signed has expired, then
*retired*. So during a rotation two keys are published and no verifier meets an unknown key.
Every gateway replica reads the same table and makes the same transitions (idempotent updates).

Private keys are sealed at rest with a key-encryption key (KEK) the database never holds:
`CMH_KEY_ENCRYPTION_KEY_FILE` (a mounted Secret) or `CMH_KEY_ENCRYPTION_KEY`. Fernet
(`cryptography`) rather than raw AES-GCM: authenticated, versioned tokens with no nonce for us to
manage, and MultiFernet opens with any listed key and re-seals under the first, which is KEK
rotation. To rotate: generate a key (`Fernet.generate_key()`), list it first and the old one
after, restart every gateway (each start re-seals every stored key under the first), then drop
the old key from the list. Rows still in plaintext (before migration 0004) are sealed at start-up
too: a migration cannot, since the migration Job does not (and should not) hold the KEK. Retired
keys keep only their public half. In development (`make run`, tests) a KEK is made once under
the var dir (mode 0600); in production (`CMH_ENVIRONMENT=production`) the gateway refuses to
start without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select, update

from gateway.models import SigningKey
from shared.auth import TOKEN_ALGORITHM
from shared.db import Database
from shared.settings import Settings
from shared.sqltypes import utcnow

PUBLISHED = ("pending", "active", "retiring")
KEK_FILE_NAME = "key-encryption.key"  # under the var dir, development only


class KeyEncryptionKeyMissing(RuntimeError):
    pass


def _development_kek(settings: Settings) -> str:
    """Made once, owner-only; O_EXCL so replicas sharing a var dir agree on one key."""
    path = Path(settings.var_dir) / KEK_FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text()
    with os.fdopen(descriptor, "w") as file:
        file.write(Fernet.generate_key().decode() + "\n")
    return path.read_text()


def key_encryption(settings: Settings) -> list[Fernet]:
    """The KEK(s): the first seals, any opens."""
    if settings.key_encryption_key_file is not None:
        text = settings.key_encryption_key_file.read_text()
    elif settings.key_encryption_key is not None:
        text = settings.key_encryption_key.get_secret_value().replace(",", "\n")
    elif settings.environment == "production":
        raise KeyEncryptionKeyMissing(
            "no key-encryption key: set CMH_KEY_ENCRYPTION_KEY_FILE (or CMH_KEY_ENCRYPTION_KEY)"
        )
    else:
        text = _development_kek(settings)
    keys = [line.strip() for line in text.splitlines() if line.strip()]
    if not keys:
        raise KeyEncryptionKeyMissing("the key-encryption key file is empty")
    try:
        return [Fernet(key) for key in keys]
    except ValueError:
        raise KeyEncryptionKeyMissing("a key-encryption key is not a Fernet key") from None


@dataclass(frozen=True)
class LoadedKey:
    kid: str
    status: str
    private_key: Any
    public_jwk: dict[str, Any]
    verifying_key: jwt.PyJWK
    activates_at: float


def _generate() -> tuple[str, str, dict[str, Any]]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    kid = f"cmh-{utcnow():%Y%m%d}-{secrets.token_hex(4)}"
    public = jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return kid, pem, {**public, "kid": kid, "use": "sig", "alg": TOKEN_ALGORITHM}


class KeyManager:
    def __init__(self, db: Database, settings: Settings, *, reload_seconds: float = 5.0) -> None:
        self.db = db
        self.settings = settings
        self.reload_seconds = reload_seconds
        self._keys: list[LoadedKey] = []
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()
        keks = key_encryption(settings)
        self._kek, self._sealing_kek = MultiFernet(keks), keks[0]

    def _seal(self, pem: str) -> str:
        return self._kek.encrypt(pem.encode()).decode()

    def _open_private(self, row: SigningKey) -> Any:
        if row.private_key_sealed is None:
            raise RuntimeError(f"signing key {row.kid} is not sealed: restart the gateway")
        try:
            pem = self._kek.decrypt(row.private_key_sealed.encode())
        except InvalidToken:
            raise KeyEncryptionKeyMissing(
                f"signing key {row.kid} does not open with the configured key-encryption key(s)"
            ) from None
        return serialization.load_pem_private_key(pem, password=None)

    async def seal_stored(self) -> int:
        """Seal plaintext rows and re-seal rows under an older KEK; returns how many changed.
        Each update is conditional on the row as read, so replicas starting together agree."""
        changed = 0
        async with self.db.transaction() as session:
            rows = (await session.scalars(select(SigningKey))).all()
            for row in rows:
                sealed: str | None
                if row.status == "retired":
                    sealed = None  # a retired key never signs again: keep no private half
                elif row.private_key_pem is not None:
                    sealed = self._seal(row.private_key_pem)
                else:
                    assert row.private_key_sealed is not None
                    try:
                        self._sealing_kek.decrypt(row.private_key_sealed.encode())
                        continue
                    except InvalidToken:
                        sealed = self._kek.rotate(row.private_key_sealed.encode()).decode()
                if sealed is None and row.private_key_pem is None and row.private_key_sealed is None:
                    continue
                result = await session.execute(
                    update(SigningKey)
                    .where(
                        SigningKey.kid == row.kid,
                        SigningKey.private_key_pem.is_(None)
                        if row.private_key_pem is None
                        else SigningKey.private_key_pem == row.private_key_pem,
                        SigningKey.private_key_sealed.is_(None)
                        if row.private_key_sealed is None
                        else SigningKey.private_key_sealed == row.private_key_sealed,
                    )
                    .values(private_key_pem=None, private_key_sealed=sealed)
                    .execution_options(synchronize_session=False)
                )
                changed += result.rowcount or 0
        return changed

    async def ensure_active(self) -> None:
        """First start: make a key that signs at once (nothing can have cached a JWKS yet)."""
        await self.seal_stored()
        async with self.db.transaction() as session:
            active = await session.scalar(
                select(SigningKey.kid).where(SigningKey.status.in_(PUBLISHED)).limit(1)
            )
            if active is None:
                kid, pem, public = _generate()
                now = utcnow()
                session.add(
                    SigningKey(
                        kid=kid,
                        status="active",
                        private_key_sealed=self._seal(pem),
                        public_jwk=json.dumps(public),
                        created_at=now,
                        activates_at=now,
                    )
                )
        await self.reload(force=True)

    async def rotate(self) -> str:
        kid, pem, public = _generate()
        now = utcnow()
        async with self.db.transaction() as session:
            session.add(
                SigningKey(
                    kid=kid,
                    status="pending",
                    private_key_sealed=self._seal(pem),
                    public_jwk=json.dumps(public),
                    created_at=now,
                    activates_at=now + timedelta(seconds=self.settings.signing_key_lead_seconds),
                )
            )
        await self.reload(force=True)
        return kid

    async def advance(self) -> None:
        """Make the due transitions: pending → active (old active → retiring), retiring → retired."""
        now = utcnow()
        async with self.db.transaction() as session:
            due = (
                await session.scalars(
                    select(SigningKey)
                    .where(SigningKey.status == "pending", SigningKey.activates_at <= now)
                    .order_by(SigningKey.activates_at.desc())
                )
            ).all()
            if due:
                newest = due[0]
                outlive = timedelta(
                    seconds=self.settings.token_lifetime_seconds + self.settings.token_leeway_seconds
                )
                await session.execute(
                    update(SigningKey)
                    .where(SigningKey.status == "active", SigningKey.kid != newest.kid)
                    .values(status="retiring", retires_at=now + outlive)
                )
                for key in due:
                    key.status = "active" if key.kid == newest.kid else "retiring"
                    if key.kid != newest.kid:
                        key.retires_at = now + outlive
            await session.execute(
                update(SigningKey)
                .where(SigningKey.status == "retiring", SigningKey.retires_at <= now)
                .values(status="retired", private_key_pem=None, private_key_sealed=None)
            )

    async def reload(self, *, force: bool = False) -> None:
        async with self._lock:
            if not force and time.monotonic() - self._loaded_at < self.reload_seconds:
                return
            await self.advance()
            async with self.db.session() as session:
                rows = (
                    await session.scalars(select(SigningKey).where(SigningKey.status.in_(PUBLISHED)))
                ).all()
            # Parsing (and checking) an RSA private key takes tens of milliseconds of CPU, and
            # this runs every few seconds on the event loop: keys already loaded are reused.
            known = {key.kid: key for key in self._keys}
            self._keys = [
                replace(known[row.kid], status=row.status, activates_at=row.activates_at.timestamp())
                if row.kid in known
                else LoadedKey(
                    kid=row.kid,
                    status=row.status,
                    private_key=self._open_private(row),
                    public_jwk=json.loads(row.public_jwk),
                    verifying_key=jwt.PyJWK.from_json(row.public_jwk),
                    activates_at=row.activates_at.timestamp(),
                )
                for row in rows
            ]
            self._loaded_at = time.monotonic()

    async def maybe_reload(self) -> None:
        if time.monotonic() - self._loaded_at >= self.reload_seconds:
            with contextlib.suppress(Exception):  # keep serving with the keys we have
                await self.reload()

    async def signing_key(self) -> LoadedKey:
        await self.maybe_reload()
        active = [key for key in self._keys if key.status == "active"]
        if not active:
            await self.reload(force=True)
            active = [key for key in self._keys if key.status == "active"]
        if not active:
            raise RuntimeError("no active signing key: run `cmh keys rotate` or restart the gateway")
        return max(active, key=lambda key: key.activates_at)

    async def jwks(self) -> dict[str, Any]:
        await self.maybe_reload()
        return {"keys": [key.public_jwk for key in sorted(self._keys, key=lambda key: key.kid)]}

    async def key_for(self, kid: str) -> jwt.PyJWK | None:
        """KeySource for the gateway's own verifier."""
        await self.maybe_reload()
        for key in self._keys:
            if key.kid == kid:
                return key.verifying_key
        return None

    async def describe(self) -> list[dict[str, Any]]:
        async with self.db.session() as session:
            rows = (await session.scalars(select(SigningKey).order_by(SigningKey.created_at))).all()
        return [
            {
                "kid": row.kid,
                "status": row.status,
                "activates_at": row.activates_at.isoformat(),
                "retires_at": row.retires_at.isoformat() if row.retires_at else None,
            }
            for row in rows
        ]
