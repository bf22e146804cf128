"""Server-side sessions for people's pages, in one home: a pure ASGI middleware on `/app/`.

The cookie holds only a random key (256 bits); the gateway's database holds the session under the
key's SHA-256, so a copy of the database cannot be replayed as cookies. The cookie is Secure,
HttpOnly and SameSite=Lax (Lax so the provider's redirect back carries it); `__Host-` prefixed when
the public address is https. A session ends after `CMH_SESSION_IDLE_MINUTES` without a request
and `CMH_SESSION_ABSOLUTE_HOURS` after sign-in, whatever happens; signing in replaces the key
(no fixation), signing out deletes the row. `scope["session"]` is the session's data dict (what
Authlib keeps its OIDC state, nonce and PKCE verifier in); `WebSession` is the rest.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.cookies import SimpleCookie
from typing import Any

from sqlalchemy import delete, select
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.access import RateLimiter, is_session_page, send_problem
from gateway.models import WebSessionRow
from shared.db import Database
from shared.errors import Problem
from shared.http import client_address
from shared.settings import Settings
from shared.sqltypes import utcnow


def cookie_name(settings: Settings) -> str:
    secure_origin = (settings.public_url or "").startswith("https://")
    return "__Host-cmh-session" if secure_origin else "cmh-session"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class WebSession:
    """One browser's session. `person_id` is None until sign-in completes."""

    key: str
    row: WebSessionRow | None
    data: dict[str, Any] = field(default_factory=dict)
    person_id: str | None = None
    csrf_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    id_token: str | None = None
    ended: str | None = None  # why an earlier session is gone ("idle", "expired"): told to the person
    changed: bool = False
    rotate: bool = False
    delete: bool = False
    loaded_data: str = "{}"

    @property
    def dirty(self) -> bool:
        return self.changed or self.rotate or json.dumps(self.data, sort_keys=True) != self.loaded_data

    @property
    def shown(self) -> dict[str, str] | None:
        """The person's name and organisation as recorded at sign-in (for pages with no database
        to hand: an error answered by the whole app)."""
        found = self.data.get("shown")
        return found if isinstance(found, dict) else None

    def sign_in(self, person_id: str, id_token: str | None, shown: dict[str, str] | None = None) -> None:
        """Bind to a person under a new key and a new CSRF token (no session fixation)."""
        if shown is not None:
            self.data["shown"] = shown
        self.person_id = person_id
        self.id_token = id_token
        self.csrf_token = secrets.token_urlsafe(32)
        self.rotate = self.changed = True

    def sign_out(self) -> None:
        self.delete = True


def web_session(request: Request) -> WebSession:
    found = request.scope.get("state", {}).get("web_session")
    if not isinstance(found, WebSession):
        raise RuntimeError("SessionMiddleware is not in front of this route")
    return found


class SessionMiddleware:
    """Loads the session of every `/app/` request (static files aside), ages it out, and saves
    it (with the cookie) as the answer starts."""

    def __init__(self, app: ASGIApp, settings: Settings, limiter: RateLimiter) -> None:
        self.app = app
        self.settings = settings
        self.limiter = limiter
        self.cookie = cookie_name(settings)
        self.idle = timedelta(minutes=settings.session_idle_minutes)
        self.absolute = timedelta(hours=settings.session_absolute_hours)

    def _applies(self, scope: Scope) -> bool:
        path: str = scope.get("path", "")
        return scope["type"] == "http" and is_session_page(scope["method"], path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._applies(scope):
            await self.app(scope, receive, send)
            return
        db: Database = scope["app"].state.db
        session = await self._load(db, scope)
        try:
            self.limiter.check(self._rate_key(scope, session), self.settings.rate_limit_per_minute)
        except Problem as problem:
            await send_problem(problem, scope, receive, send)
            return
        scope["session"] = session.data
        scope.setdefault("state", {})["web_session"] = session

        async def send_with_session(message: Message) -> None:
            if message["type"] == "http.response.start":
                new_key = session.delete is False and (
                    session.rotate or (session.row is None and session.dirty)
                )
                await self._save(db, session)
                headers = MutableHeaders(scope=message)
                if session.delete:
                    headers.append("Set-Cookie", self._cookie("", max_age=0))
                elif new_key:
                    headers.append("Set-Cookie", self._cookie(session.key))
            await send(message)

        await self.app(scope, receive, send_with_session)

    def _rate_key(self, scope: Scope, session: WebSession) -> str:
        """A signed-in person's pages are limited per person, so the people of a trust behind one
        address do not share one allowance; anything else (signing in, a stale or forged cookie)
        per address, as an API call without a token is."""
        if session.person_id is not None:
            return f"person:{session.person_id}"
        return f"peer:{client_address(scope, self.settings)}"

    def _cookie(self, value: str, *, max_age: int | None = None) -> str:
        parts = [f"{self.cookie}={value}", "Path=/", "Secure", "HttpOnly", "SameSite=Lax"]
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        return "; ".join(parts)

    async def _load(self, db: Database, scope: Scope) -> WebSession:
        key = _cookie_value(scope, self.cookie)
        if key:
            now = utcnow()
            async with db.transaction() as tx:
                row = await tx.get(WebSessionRow, _digest(key))
                if row is not None:
                    ended = _ended(row, now, self.idle, self.absolute)
                    if ended is None:
                        if now - row.last_seen_at >= SEEN_EVERY:
                            row.last_seen_at = now
                        data = json.loads(row.data or "{}")
                        return WebSession(
                            key=key,
                            row=row,
                            data=data,
                            loaded_data=json.dumps(data, sort_keys=True),
                            person_id=row.person_id,
                            csrf_token=row.csrf_token,
                            id_token=row.id_token,
                        )
                    await tx.delete(row)
                    return WebSession(key=secrets.token_urlsafe(32), row=None, ended=ended)
        return WebSession(key=secrets.token_urlsafe(32), row=None)

    async def _save(self, db: Database, session: WebSession) -> None:
        old = _digest(session.key) if session.row is not None else None
        if session.delete:
            if old is not None:
                async with db.transaction() as tx:
                    await tx.execute(delete(WebSessionRow).where(WebSessionRow.key_hash == old))
            return
        if not session.dirty:
            return  # nothing to keep (last_seen_at was written as it was loaded)
        now = utcnow()
        async with db.transaction() as tx:
            if old is not None and session.rotate:
                await tx.execute(delete(WebSessionRow).where(WebSessionRow.key_hash == old))
            if session.rotate:
                session.key = secrets.token_urlsafe(32)
            key_hash = _digest(session.key)
            row = await tx.get(WebSessionRow, key_hash)
            if row is None:
                row = WebSessionRow(key_hash=key_hash, created_at=now)
                tx.add(row)
            if session.rotate:
                row.created_at = now  # the absolute limit counts from sign-in
            row.person_id = session.person_id
            row.csrf_token = session.csrf_token
            row.id_token = session.id_token
            row.data = json.dumps(session.data)
            row.last_seen_at = now
            session.row = row


# How stale last_seen_at may be before a request writes it again: one write a minute per session,
# not one per request (every page, every static file under /app). The idle limit is tens of
# minutes, so a session may end at most this much before its idle limit, never after.
SEEN_EVERY = timedelta(minutes=1)


def _ended(row: WebSessionRow, now: datetime, idle: timedelta, absolute: timedelta) -> str | None:
    if now - row.created_at > absolute:
        return "expired"
    if now - row.last_seen_at > idle:
        return "idle"
    return None


def _cookie_value(scope: Scope, name: str) -> str | None:
    for header, value in scope.get("headers", []):
        if header == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # noqa: S112 - a malformed Cookie header is no session
                continue
            if name in jar and 20 <= len(jar[name].value) <= 100:
                return jar[name].value
    return None


async def end_sessions_of(db: Database, person_id: str) -> int:
    """A disabled person's sessions end at once (their next request is signed out)."""
    async with db.transaction() as tx:
        ids = (
            await tx.scalars(select(WebSessionRow.key_hash).where(WebSessionRow.person_id == person_id))
        ).all()
        await tx.execute(delete(WebSessionRow).where(WebSessionRow.person_id == person_id))
    return len(ids)


async def prune_sessions(db: Database, settings: Settings) -> None:
    """Housekeeping: rows past either limit."""
    now = utcnow()
    idle_cutoff = now - timedelta(minutes=settings.session_idle_minutes)
    absolute_cutoff = now - timedelta(hours=settings.session_absolute_hours)
    async with db.transaction() as tx:
        await tx.execute(
            delete(WebSessionRow).where(
                (WebSessionRow.last_seen_at < idle_cutoff) | (WebSessionRow.created_at < absolute_cutoff)
            )
        )
