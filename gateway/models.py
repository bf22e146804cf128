"""The gateway's own store: the client registry, signing keys, used client assertions and the
append-only audit trail."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shared.migrations import migrations_beside, new_metadata
from shared.sqltypes import BigIntegerKey, UTCDateTime, utcnow

# This package's Alembic history (`cmh.migrations` maps every owner to one of these).
MIGRATIONS = migrations_beside(__file__)


class Base(DeclarativeBase):
    metadata = new_metadata()


class Client(Base):
    """An OAuth2 client: a partner system acting for one organisation."""

    __tablename__ = "clients"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    organisation: Mapped[str] = mapped_column(String(16), index=True)
    organisation_system: Mapped[str] = mapped_column(String(16))  # ods | charity | company
    kind: Mapped[str] = mapped_column(String(32))
    scopes: Mapped[str] = mapped_column(Text)  # space separated, as in OAuth2
    auth_method: Mapped[str] = mapped_column(String(32))  # client_secret | private_key_jwt
    secret_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    previous_secret_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # private_key_jwt: exactly one of a static JWKS (JSON) or a URL the partner publishes its keys
    # at, fetched and cached by gateway/jwks_fetch.py (so the partner rotates keys on its own).
    jwks: Mapped[str | None] = mapped_column(Text, nullable=True)
    jwks_uri: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Tokens issued at or before this are refused everywhere (shared/revocation.py).
    tokens_revoked_before: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SigningKey(Base):
    """A key that signs access tokens. pending → active → retiring → retired; published while
    pending (so verifiers learn it before it signs) and while retiring (until its tokens expire)."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    # Plaintext only in rows from before migration 0004, until the gateway's next start seals
    # them (gateway/keys.py); the sealed form is a Fernet token under the key-encryption key.
    private_key_pem: Mapped[str | None] = mapped_column(Text, nullable=True)
    private_key_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)
    public_jwk: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    activates_at: Mapped[datetime] = mapped_column(UTCDateTime)
    retires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class UsedAssertion(Base):
    """A private_key_jwt client assertion already used (RFC 7523: a `jti` may be used once)."""

    __tablename__ = "used_client_assertions"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class AuditRecord(Base):
    """Who did what to whose data, when, why, and with what outcome. Never clinical content.
    Append-only: the database refuses UPDATE and DELETE (triggers in the migration)."""

    __tablename__ = "audit_records"

    id: Mapped[int] = mapped_column(BigIntegerKey, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(128), unique=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    service: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(16))
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_ids: Mapped[str] = mapped_column(Text)  # JSON list
    outcome: Mapped[str] = mapped_column(String(16))
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    organisation: Mapped[str] = mapped_column(String(16))
    client_kind: Mapped[str] = mapped_column(String(32))
    end_user_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    end_user_role: Mapped[str | None] = mapped_column(String(64), nullable=True)
    purpose_of_use: Mapped[str] = mapped_column(String(16))
    token_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # SHA-256 chained to the previous row (gateway/audit_chain.py); set on append, never after.
    chain_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)

    persons: Mapped[list[AuditPerson]] = relationship(lazy="selectin", order_by="AuditPerson.person_id")


class AuditPerson(Base):
    """The persons an audit record is about (indexed, for "who has looked at my record?")."""

    __tablename__ = "audit_record_persons"

    audit_id: Mapped[int] = mapped_column(ForeignKey("audit_records.id"), primary_key=True)
    person_id: Mapped[str] = mapped_column(String(128), primary_key=True, index=True)


PERSON_CLIENT_PREFIX = "person:"  # a person's tokens' `sub` (and client id): revocable like a client's


class Person(Base):
    """A person who signs in (gateway/web/people.py): the provider's identity (issuer and
    subject) mapped to the organisation they act for and their roles."""

    __tablename__ = "people"
    __table_args__ = (UniqueConstraint("issuer", "subject", name="uq_people_identity"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    issuer: Mapped[str] = mapped_column(String(500))
    subject: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    organisation: Mapped[str] = mapped_column(String(16), index=True)
    organisation_system: Mapped[str] = mapped_column(String(16))  # ods | charity | company
    roles: Mapped[str] = mapped_column(String(500))  # space separated (gateway/web/roles.py)
    team_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # local: `cmh users add`; claims: from the provider's claims, refreshed at every sign-in.
    mapped_from: Mapped[str] = mapped_column(String(16), default="local", server_default="local")
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Tokens issued for this person at or before this are refused everywhere (as for a client).
    tokens_revoked_before: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    last_signed_in_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebSessionRow(Base):
    """A browser's session (gateway/web/sessions.py), under the SHA-256 of its cookie's key."""

    __tablename__ = "web_sessions"

    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    person_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    id_token: Mapped[str | None] = mapped_column(Text, nullable=True)  # the provider's, for sign-out
    data: Mapped[str] = mapped_column(Text, default="{}")  # JSON: the OIDC state while signing in
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
