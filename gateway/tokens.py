"""`POST /oauth2/token`: OAuth2 client credentials (RFC 6749 §4.4).

Clients authenticate with client_secret_basic, client_secret_post, or private_key_jwt (RFC 7523
client assertion, as NHS England's APIs use: signed by the client's registered key, `iss` = `sub` =
client id, `aud` = this token endpoint as configured or the issuer, never a URL made from the
request's Host header; short-lived, `jti` used once). The key comes from the client's static JWKS
or from the JWKS it publishes at its `jwks_uri` (gateway/jwks_fetch.py: cached, refetched for an
unknown kid at most every 30 s; a fetch that fails is `invalid_client`). Requested scopes are narrowed to those the
client holds. Errors are RFC 6749 §5.2 bodies, `application/json` `{"error", "error_description"}`
(never problem+json here: OAuth client libraries read this shape), with WWW-Authenticate on a 401.
A client assertion longer than `MAX_CLIENT_ASSERTION_CHARS` is refused before it is decoded.

Against guessing and load: after `token_failure_limit` failed secrets for a client id within
`token_failure_window_seconds`, that id is answered 429 before any hash is computed. Current
secret hashes are a fast HMAC checked on the event loop; old Argon2 ones go to a small pool of
their own threads that answers 503 at once when its queue is full. Both are per gateway replica.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar
from urllib.parse import unquote

import jwt
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from gateway.clients import (
    ASSERTION_ALGORITHMS,
    burn_verification,
    hash_secret,
    is_legacy_hash,
    match_secret,
    secret_candidates,
)
from gateway.jwks_fetch import JwksUnavailable, PartnerKeys, UnknownKey
from gateway.keys import KeyManager
from gateway.models import Client, UsedAssertion
from gateway.state import GatewayStateDep
from shared.auth import TOKEN_ALGORITHM
from shared.db import Database
from shared.errors import Problem
from shared.http import client_address
from shared.settings import Settings
from shared.sqltypes import utcnow

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_CLIENT_ASSERTION_CHARS = 8192  # an RS512 JWT with a 4096-bit key and its claims is ~1.5 KiB
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class TokenOut(BaseModel):
    """An OAuth2 access token (RFC 6749 §5.1)."""

    access_token: str = Field(description="A signed JWT (RS256), verified with the JWKS")
    token_type: Literal["Bearer"]
    expires_in: int = Field(description="Seconds")
    scope: str = Field(description="The scopes granted, space separated")


class OAuthErrorOut(BaseModel):
    """An OAuth2 error (RFC 6749 §5.2), as the token endpoint answers every refusal."""

    model_config = ConfigDict(title="OAuthError")

    error: Literal[
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
        "slow_down",
        "temporarily_unavailable",
    ]
    error_description: str = Field(description="What was wrong, in words (never the credentials sent)")


class JwkOut(BaseModel):
    """A public signing key (RFC 7517): `kid`, `kty` and the key's own members."""

    model_config = ConfigDict(extra="allow")

    kid: str
    kty: str


class JwksOut(BaseModel):
    keys: list[JwkOut]


router = APIRouter(tags=["gateway"])
log = logging.getLogger("cmh.gateway.tokens")
T = TypeVar("T")


class OAuthError(Problem):
    """A token request refused: answered by `issue_token` as an RFC 6749 §5.2 JSON body (a
    `Problem`, so code that catches refusals in general still catches it)."""

    def __init__(self, status: int, error: str, description: str, headers: dict[str, str]) -> None:
        super().__init__(
            status,
            "Token request refused",
            description,
            type_slug=f"oauth2-{error.replace('_', '-')}",
            headers=headers,
            error=error,
            error_description=description,
        )
        self.error = error
        self.description = description

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"error": self.error, "error_description": self.description},
            status_code=self.status,
            headers=self.headers,
        )


def oauth_error(
    status: int, error: str, description: str, *, basic: bool = False, retry_after: float | None = None
) -> OAuthError:
    headers = dict(NO_STORE)
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="cmh-suite"' if basic else 'Bearer realm="cmh-suite"'
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return OAuthError(status, error, description, headers)


def oauth_errors(**descriptions: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` for the token endpoint: each status as an RFC 6749 §5.2 JSON body."""
    return {
        # `model` puts the schema in components once, referenced by every status (an inline copy
        # per status made generated clients build one duplicate model per status).
        int(status[1:]): {"description": description, "model": OAuthErrorOut}
        for status, description in descriptions.items()
    }


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise oauth_error(401, "invalid_client", "Malformed Basic credentials.", basic=True) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise oauth_error(401, "invalid_client", "Malformed Basic credentials.", basic=True)
    # RFC 6749 §2.3.1: both parts are form-urlencoded before Basic encoding.
    return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))


def _claimed_issuer(assertion: str) -> str | None:
    """Who an unverified assertion says it is, for the log only."""
    try:
        issuer = jwt.decode(assertion, options={"verify_signature": False}).get("iss")
    except jwt.InvalidTokenError:
        return None
    return issuer[:64] if isinstance(issuer, str) else None


class FailedAttempts:
    """Failed authentications per key (a client id) in a sliding window, in memory."""

    def __init__(self, limit: int, window_seconds: float, *, max_keys: int = 50_000) -> None:
        self.limit = limit
        self.window = window_seconds
        self.max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, key: str, now: float | None = None) -> float | None:
        """None if another attempt may be checked; otherwise seconds until one may."""
        now = time.monotonic() if now is None else now
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times[0] + self.window - now if len(times) >= self.limit else None

    def record(self, key: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._failures.setdefault(key, deque(maxlen=self.limit)).append(now)
        if len(self._failures) > self.max_keys:
            self._prune(now)

    def forget_one(self, key: str) -> None:
        times = self._failures.get(key)
        if times:
            times.pop()

    def clear(self, key: str) -> None:
        self._failures.pop(key, None)

    def _prune(self, now: float) -> None:
        for key in [k for k, times in self._failures.items() if times[-1] <= now - self.window]:
            del self._failures[key]
        # Still full (a flood of made-up ids): forget the longest-known keys first.
        while len(self._failures) > self.max_keys:
            del self._failures[next(iter(self._failures))]


class PoolFull(Exception):
    """Every verification thread is busy and the queue is full."""


class VerificationPool:
    """Slow hash checks on `workers` threads of their own with at most `queue` waiting: past that,
    refuse at once rather than queue behind the default executor (where a flood of wrong guesses
    would delay every correct one)."""

    def __init__(self, workers: int, queue: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cmh-verify")
        self.capacity = workers + queue
        self.admitted = 0

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        if self.admitted >= self.capacity:
            raise PoolFull
        loop = asyncio.get_running_loop()
        self.admitted += 1
        future = self._executor.submit(function, *args)
        # Released when the thread is done, not when the caller stops waiting (a client gone away).
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._release))
        return await asyncio.wrap_future(future)

    def _release(self) -> None:
        self.admitted -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class TokenService:
    def __init__(self, db: Database, keys: KeyManager, settings: Settings) -> None:
        self.db = db
        self.keys = keys
        self.settings = settings
        self.failures = FailedAttempts(settings.token_failure_limit, settings.token_failure_window_seconds)
        self.pool = VerificationPool(settings.token_verify_workers, settings.token_verify_queue)
        self.partner_keys = PartnerKeys(settings.environment)

    def token_endpoint_urls(self) -> set[str]:
        """Audiences a client assertion may name: configuration only, never the Host header (a
        caller-chosen Host would make an assertion meant for another server acceptable here)."""
        return {
            f"{self.settings.gateway_url()}/oauth2/token",
            f"{self.settings.public_gateway_url()}/oauth2/token",
            self.settings.token_issuer,
        }

    def close(self) -> None:
        self.pool.close()

    async def authenticate(self, form: dict[str, str], authorization: str | None, request: Request) -> Client:
        basic = _basic_credentials(authorization)
        assertion_type = form.get("client_assertion_type")
        methods = sum(bool(x) for x in (basic, form.get("client_secret"), assertion_type))
        if methods > 1:
            raise oauth_error(400, "invalid_request", "Use exactly one client authentication method.")
        if assertion_type:
            if assertion_type != CLIENT_ASSERTION_TYPE:
                raise oauth_error(400, "invalid_request", "Unsupported client_assertion_type.")
            assertion = form.get("client_assertion", "")
            if len(assertion) > MAX_CLIENT_ASSERTION_CHARS:
                raise oauth_error(
                    400,
                    "invalid_request",
                    f"client_assertion is too long ({MAX_CLIENT_ASSERTION_CHARS} characters at most).",
                )
            try:
                return await self._authenticate_assertion(assertion, form.get("client_id"))
            except Problem:
                claimed = form.get("client_id") or _claimed_issuer(assertion)
                log.warning(
                    "client assertion refused",
                    extra={
                        "client_id": claimed,
                        "client_address": client_address(request.scope, self.settings),
                    },
                )
                raise
        if basic:
            client_id, secret = basic
        elif form.get("client_secret"):
            client_id, secret = form.get("client_id", ""), form["client_secret"]
        else:
            raise oauth_error(401, "invalid_client", "Client authentication is required.", basic=True)
        return await self._authenticate_secret(client_id, secret, request, basic=bool(basic))

    async def _authenticate_secret(
        self, client_id: str, secret: str, request: Request, *, basic: bool
    ) -> Client:
        address = client_address(request.scope, self.settings)
        key = client_id[:64]
        # Before any lookup or hash: a client id under guessing costs nothing more.
        wait = self.failures.retry_after(key)
        if wait is not None:
            log.warning(
                "token request refused: too many failed attempts",
                extra={"client_id": key, "client_address": address},
            )
            raise oauth_error(
                429, "slow_down", "Too many failed authentication attempts for this client.", retry_after=wait
            )
        # Counted before the check, so concurrent guesses cannot all pass the limit at once.
        self.failures.record(key)
        async with self.db.session() as session:
            client = await session.get(Client, client_id) if client_id else None
        now = utcnow()
        usable = client is not None and client.disabled_at is None and client.auth_method == "client_secret"
        matched: tuple[str, str] | None = None
        if usable and client is not None:
            if any(is_legacy_hash(stored) for _, stored in secret_candidates(client, now)):
                # Argon2 is deliberately slow: off the event loop, on a bounded pool.
                try:
                    matched = await self.pool.run(match_secret, client, secret, now)
                except PoolFull:
                    self.failures.forget_one(key)  # never checked: not a failed attempt
                    log.warning(
                        "token request refused: verification pool full",
                        extra={"client_id": key, "client_address": address},
                    )
                    raise oauth_error(
                        503,
                        "temporarily_unavailable",
                        "Too many authentications in progress; retry shortly.",
                        retry_after=1,
                    ) from None
            else:
                matched = match_secret(client, secret, now)
        else:
            burn_verification(secret)  # unknown clients cost what known ones do
        if matched is None or client is None:
            log.warning("client authentication failed", extra={"client_id": key, "client_address": address})
            raise oauth_error(401, "invalid_client", "Client authentication failed.", basic=basic)
        self.failures.clear(key)
        column, stored = matched
        if is_legacy_hash(stored):
            await self._upgrade_hash(client.client_id, column, stored, secret)
        return client

    async def _upgrade_hash(self, client_id: str, column: str, stored: str, secret: str) -> None:
        """Replace an Argon2 hash by the fast format, only if the row still holds it (a rotation
        in between wins). A failure here costs the next check its speed, not this request."""
        try:
            async with self.db.transaction() as session:
                await session.execute(
                    update(Client)
                    .where(Client.client_id == client_id, getattr(Client, column) == stored)
                    .values({column: hash_secret(secret)})
                )
        except SQLAlchemyError:
            log.warning("secret hash upgrade failed", extra={"client_id": client_id})

    async def _authenticate_assertion(self, assertion: str, form_client_id: str | None) -> Client:
        failed = oauth_error(401, "invalid_client", "Client assertion is not valid.")
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
            header = jwt.get_unverified_header(assertion)
        except jwt.InvalidTokenError:
            raise failed from None
        client_id = unverified.get("iss")
        if not isinstance(client_id, str) or unverified.get("sub") != client_id:
            raise failed
        if form_client_id and form_client_id != client_id:
            raise failed
        async with self.db.session() as session:
            client = await session.get(Client, client_id)
        if client is None or client.disabled_at is not None or client.auth_method != "private_key_jwt":
            raise failed
        if header.get("alg") not in ASSERTION_ALGORITHMS:
            raise failed
        kid = header.get("kid", "")
        if not isinstance(kid, str):
            raise failed
        try:
            key = await self.partner_keys.key(client, kid)
        except (UnknownKey, JwksUnavailable):
            # The same refusal either way: the caller learns nothing of the partner's server. The
            # fetcher has logged why a fetch failed; `authenticate` logs the refusal (never the
            # assertion itself).
            raise failed from None
        try:
            claims = jwt.decode(
                assertion,
                key.key,
                algorithms=[header["alg"]],
                audience=list(self.token_endpoint_urls()),
                issuer=client_id,
                leeway=self.settings.token_leeway_seconds,
                options={"require": ["exp", "iss", "sub", "aud", "jti"]},
            )
        except jwt.InvalidTokenError:
            raise failed from None
        now = time.time()
        if (
            claims["exp"] - now
            > self.settings.client_assertion_max_seconds + self.settings.token_leeway_seconds
        ):
            raise oauth_error(401, "invalid_client", "Client assertion lives too long (5 minutes at most).")
        try:
            async with self.db.transaction() as session:
                session.add(
                    UsedAssertion(
                        client_id=client_id,
                        jti=str(claims["jti"])[:255],
                        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
                    )
                )
        except IntegrityError:
            raise oauth_error(401, "invalid_client", "Client assertion has been used already.") from None
        return client

    @staticmethod
    def grant_scopes(client: Client, requested: str | None) -> list[str]:
        allowed = set(client.scopes.split())
        if requested is None or not requested.strip():
            return sorted(allowed)
        granted = set(requested.split()) & allowed
        if not granted:
            raise oauth_error(
                400, "invalid_scope", "None of the requested scopes is allowed for this client."
            )
        return sorted(granted)

    async def issue(self, client: Client, scopes: list[str]) -> dict[str, Any]:
        token = await self.sign(
            client.client_id,
            organisation=client.organisation,
            kind=client.kind,
            scopes=scopes,
            rate=client.rate_limit_per_minute,
        )
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.settings.token_lifetime_seconds,
            "scope": " ".join(scopes),
        }

    async def sign(
        self, subject: str, *, organisation: str, kind: str, scopes: Sequence[str], rate: int | None = None
    ) -> str:
        """An access token: for a client (`issue`) or for a person signed in to the pages, who
        reaches the API with the scopes of their roles exactly as a client of that kind does."""
        key = await self.keys.signing_key()
        now = int(time.time())
        claims = {
            "iss": self.settings.token_issuer,
            "aud": self.settings.token_audience,
            "sub": subject,
            "client_id": subject,
            "iat": now,
            "nbf": now,
            "exp": now + self.settings.token_lifetime_seconds,
            "jti": secrets.token_urlsafe(16),
            "scope": " ".join(scopes),
            "cmh_org": organisation,
            "cmh_kind": kind,
            "cmh_rate": rate or self.settings.rate_limit_per_minute,
        }
        return jwt.encode(claims, key.private_key, algorithm=TOKEN_ALGORITHM, headers={"kid": key.kid})


@router.post(
    "/oauth2/token",
    name="issue_token",
    summary="Issue an access token (OAuth2 client credentials)",
    description=(
        "Exchange a client's credentials (client secret, or a private_key_jwt assertion) for a "
        "short-lived RS256 access token holding the scopes asked for that the client is registered for. "
        "Send it as `Authorization: Bearer <token>` on every other call."
    ),
    response_model=TokenOut,
    # RFC 6749 §5.2 bodies, application/json: {"error": <code>, "error_description": <words>}.
    responses=oauth_errors(
        _400=f"invalid_request (also a client_assertion over {MAX_CLIENT_ASSERTION_CHARS} characters), "
        "unsupported_grant_type "
        "or invalid_scope",
        _401="invalid_client: the client could not be authenticated (WWW-Authenticate: Basic for secrets)",
        _429="slow_down: too many failed authentications (Retry-After)",
        _503="temporarily_unavailable: too many authentications in progress (Retry-After)",
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "required": ["grant_type"],
                        "properties": {
                            "grant_type": {"type": "string", "enum": ["client_credentials"]},
                            "scope": {"type": "string"},
                            "client_id": {"type": "string"},
                            "client_secret": {"type": "string"},
                            "client_assertion_type": {"type": "string", "enum": [CLIENT_ASSERTION_TYPE]},
                            "client_assertion": {"type": "string", "maxLength": MAX_CLIENT_ASSERTION_CHARS},
                        },
                    },
                    "examples": {
                        "client-secret": {
                            "summary": "A partner EHR asks for a token to submit and read referrals",
                            "value": {
                                "grant_type": "client_credentials",
                                "client_id": "leeds-gp-ehr",
                                "client_secret": "s3cr3t-from-cmh-clients-add",
                                "scope": "referral:submit referral:read",
                            },
                        }
                    },
                }
            },
        }
    },
)
async def issue_token(request: Request, gateway: GatewayStateDep) -> JSONResponse:
    try:
        return await _issue_token(request, gateway)
    except OAuthError as refused:
        return refused.response()


async def _issue_token(request: Request, gateway: GatewayStateDep) -> JSONResponse:
    service = gateway.token_service
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise oauth_error(
            400, "invalid_request", "Send the token request as application/x-www-form-urlencoded."
        )
    raw = await request.form()
    form = {key: value for key, value in raw.items() if isinstance(value, str)}
    if form.get("grant_type") != "client_credentials":
        raise oauth_error(400, "unsupported_grant_type", "Only grant_type=client_credentials is supported.")
    client = await service.authenticate(form, request.headers.get("authorization"), request)
    scopes = service.grant_scopes(client, form.get("scope"))
    return JSONResponse(await service.issue(client, scopes), headers=NO_STORE)


@router.get("/.well-known/jwks.json", response_model=JwksOut, summary="Public keys that verify access tokens")
async def jwks(gateway: GatewayStateDep) -> JSONResponse:
    return JSONResponse(await gateway.key_manager.jwks(), headers={"Cache-Control": "public, max-age=30"})
