"""Signing keys sealed at rest with the key-encryption key (gateway/keys.py), on both backends:
never plaintext in the database, old plaintext rows sealed at start-up, KEK rotation, and no
made-up key in production."""

from __future__ import annotations

import json
import stat
from datetime import timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import bindparam, select, text

from cmh.migrations import migrate
from gateway.keys import KEK_FILE_NAME, KeyEncryptionKeyMissing, KeyManager, _generate
from gateway.models import SigningKey
from shared.db import Database
from shared.settings import Settings
from shared.sqltypes import UTCDateTime, utcnow


def settings_for(database_settings: dict[str, object], **overrides: object) -> Settings:
    return Settings(**{**database_settings, **overrides})  # type: ignore[arg-type]


async def open_db(settings: Settings, revision: str = "head") -> Database:
    url, schema = settings.database_url_for("gateway"), settings.database_schema_for("gateway")
    await migrate("gateway", url, schema=schema, revision=revision)
    return Database(url, schema=schema, pool_size=2)


async def stored(db: Database) -> list[SigningKey]:
    async with db.session() as session:
        return list((await session.scalars(select(SigningKey))).all())


async def test_keys_are_sealed_and_still_sign(database_settings: dict[str, object]) -> None:
    settings = settings_for(database_settings)
    db = await open_db(settings)
    try:
        keys = KeyManager(db, settings)
        await keys.ensure_active()
        (row,) = await stored(db)
        assert row.private_key_pem is None
        assert row.private_key_sealed is not None and "PRIVATE KEY" not in row.private_key_sealed
        # Development: the KEK was made under the var dir, readable by its owner only.
        kek_file = settings.var_dir / KEK_FILE_NAME
        assert stat.S_IMODE(kek_file.stat().st_mode) == 0o600
        assert b"PRIVATE KEY" in Fernet(kek_file.read_text().strip()).decrypt(row.private_key_sealed.encode())
        signing = await keys.signing_key()
        token = jwt.encode({"sub": "x"}, signing.private_key, algorithm="RS256", headers={"kid": signing.kid})
        assert jwt.decode(token, signing.verifying_key.key, algorithms=["RS256"]) == {"sub": "x"}
        # A second manager (another replica) opens the same key with the same KEK file.
        other = KeyManager(db, settings_for(database_settings))
        await other.reload(force=True)
        assert (await other.signing_key()).kid == signing.kid
    finally:
        await db.dispose()


async def test_plaintext_rows_from_before_are_sealed_at_start(database_settings: dict[str, object]) -> None:
    settings = settings_for(database_settings, key_encryption_key=Fernet.generate_key().decode())
    db = await open_db(settings, revision="0003")
    kid, pem, public = _generate()
    retired_kid, retired_pem, retired_public = _generate()
    now = utcnow()
    async with db.transaction() as session:
        # The schema before 0004 (so not through the model): plaintext PEM, as stored until now.
        for key, status, body, jwk in (
            (kid, "active", pem, public),
            (retired_kid, "retired", retired_pem, retired_public),
        ):
            await session.execute(
                text(
                    "INSERT INTO signing_keys (kid, status, private_key_pem, public_jwk, created_at, "
                    "activates_at) VALUES (:kid, :status, :pem, :jwk, :at, :at)"
                ).bindparams(bindparam("at", type_=UTCDateTime())),
                {
                    "kid": key,
                    "status": status,
                    "pem": body,
                    "jwk": json.dumps(jwk),
                    "at": now - timedelta(days=1),
                },
            )
    await db.dispose()
    db = await open_db(settings)  # 0004 and later
    try:
        keys = KeyManager(db, settings)
        await keys.ensure_active()
        rows = {row.kid: row for row in await stored(db)}
        assert set(rows) == {kid, retired_kid}  # the old active key goes on signing
        assert rows[kid].private_key_pem is None and rows[kid].private_key_sealed
        # A retired key keeps only its public half.
        assert rows[retired_kid].private_key_pem is None and rows[retired_kid].private_key_sealed is None
        assert (await keys.signing_key()).kid == kid
        async with db.session() as session:
            plaintext = await session.scalar(
                text("SELECT count(*) FROM signing_keys WHERE private_key_pem IS NOT NULL")
            )
        assert plaintext == 0
    finally:
        await db.dispose()


async def test_kek_rotation_reseals_under_the_new_key(database_settings: dict[str, object]) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    db = await open_db(settings_for(database_settings, key_encryption_key=old))
    try:
        await KeyManager(db, settings_for(database_settings, key_encryption_key=old)).ensure_active()
        (before,) = await stored(db)
        # Rotation: the new key first, the old one after; a start re-seals under the new key.
        rotating = KeyManager(db, settings_for(database_settings, key_encryption_key=f"{new},{old}"))
        await rotating.ensure_active()
        (after,) = await stored(db)
        assert after.kid == before.kid and after.private_key_sealed != before.private_key_sealed
        assert after.private_key_sealed is not None
        Fernet(new).decrypt(after.private_key_sealed.encode())
        # The old key can now be dropped; alone it opens nothing, and the gateway says so.
        stale = KeyManager(db, settings_for(database_settings, key_encryption_key=old))
        with pytest.raises(KeyEncryptionKeyMissing, match="does not open"):
            await stale.reload(force=True)
        alone = KeyManager(db, settings_for(database_settings, key_encryption_key=new))
        await alone.reload(force=True)
        assert (await alone.signing_key()).kid == before.kid
    finally:
        await db.dispose()


def test_production_refuses_to_start_without_a_kek(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path / "var", environment="production")
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/gateway.db")
    with pytest.raises(KeyEncryptionKeyMissing, match="CMH_KEY_ENCRYPTION_KEY_FILE"):
        KeyManager(db, settings)
    assert not (tmp_path / "var" / KEK_FILE_NAME).exists()  # nothing made up
    kek_file = tmp_path / "kek"
    kek_file.write_text(Fernet.generate_key().decode() + "\n")
    KeyManager(
        db, Settings(var_dir=tmp_path / "var", environment="production", key_encryption_key_file=kek_file)
    )
