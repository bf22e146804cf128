"""`POST /oauth2/token`: OAuth2 client credentials (RFC 6749 §4.4).

Clients authenticate with client_secret_basic, client_secret_post, or private_key_jwt (RFC 7523
client assertion, as NHS England's APIs use: signed by the client's registered key, `iss` = `sub` =
client id, `aud` = this token endpoint, short-lived, `jti` used once). Requested scopes are
narrowed to those the client holds. Errors carry RFC 6749's `error` code inside a problem+json body.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import jwt
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError

from gateway.clients import ASSERTION_ALGORITHMS, burn_verification, verify_secret
from gateway.keys import KeyManager
from gateway.models import Client, UsedAssertion
from shared.auth import TOKEN_ALGORITHM
from shared.db import Database
from shared.errors import Problem
from shared.settings import Settings
from shared.sqltypes import utcnow

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

router = APIRouter(tags=["gateway"])


def oauth_error(status: int, error: str, description: str, *, basic: bool = False) -> Problem:
    headers = dict(NO_STORE)
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="cmh-suite"' if basic else 'Bearer realm="cmh-suite"'
    return Problem(
        status,
        "Token request refused",
        description,
        type_slug=f"oauth2-{error.replace('_', '-')}",
        headers=headers,
        error=error,
        error_description=description,
    )


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


class TokenService:
    def __init__(self, db: Database, keys: KeyManager, settings: Settings) -> None:
        self.db = db
        self.keys = keys
        self.settings = settings

    def token_endpoint_urls(self, request: Request | None) -> set[str]:
        urls = {f"{self.settings.gateway_url()}/oauth2/token", self.settings.token_issuer}
        if request is not None:
            urls.add(str(request.url_for("issue_token")))
        return urls

    async def authenticate(self, form: dict[str, str], authorization: str | None, request: Request) -> Client:
        basic = _basic_credentials(authorization)
        assertion_type = form.get("client_assertion_type")
        methods = sum(bool(x) for x in (basic, form.get("client_secret"), assertion_type))
        if methods > 1:
            raise oauth_error(400, "invalid_request", "Use exactly one client authentication method.")
        if assertion_type:
            if assertion_type != CLIENT_ASSERTION_TYPE:
                raise oauth_error(400, "invalid_request", "Unsupported client_assertion_type.")
            return await self._authenticate_assertion(
                form.get("client_assertion", ""), form.get("client_id"), request
            )
        if basic:
            client_id, secret = basic
        elif form.get("client_secret"):
            client_id, secret = form.get("client_id", ""), form["client_secret"]
        else:
            raise oauth_error(401, "invalid_client", "Client authentication is required.", basic=True)
        async with self.db.session() as session:
            client = await session.get(Client, client_id) if client_id else None
        now = utcnow()
        usable = client is not None and client.disabled_at is None and client.auth_method == "client_secret"
        # Argon2 is deliberately slow: keep it off the event loop. Unknown clients cost the same.
        if usable and client is not None:
            valid = await asyncio.to_thread(verify_secret, client, secret, now)
        else:
            await asyncio.to_thread(burn_verification, secret)
            valid = False
        if not usable or not valid:
            raise oauth_error(401, "invalid_client", "Client authentication failed.", basic=bool(basic))
        assert client is not None
        return client

    async def _authenticate_assertion(
        self, assertion: str, form_client_id: str | None, request: Request
    ) -> Client:
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
        try:
            key = jwt.PyJWKSet.from_json(client.jwks or "{}")[header.get("kid", "")]
        except (KeyError, jwt.PyJWKSetError):
            raise failed from None
        try:
            claims = jwt.decode(
                assertion,
                key.key,
                algorithms=[header["alg"]],
                audience=list(self.token_endpoint_urls(request)),
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
        key = await self.keys.signing_key()
        now = int(time.time())
        claims = {
            "iss": self.settings.token_issuer,
            "aud": self.settings.token_audience,
            "sub": client.client_id,
            "client_id": client.client_id,
            "iat": now,
            "nbf": now,
            "exp": now + self.settings.token_lifetime_seconds,
            "jti": secrets.token_urlsafe(16),
            "scope": " ".join(scopes),
            "cmh_org": client.organisation,
            "cmh_kind": client.kind,
            "cmh_rate": client.rate_limit_per_minute or self.settings.rate_limit_per_minute,
        }
        token = jwt.encode(claims, key.private_key, algorithm=TOKEN_ALGORITHM, headers={"kid": key.kid})
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.settings.token_lifetime_seconds,
            "scope": " ".join(scopes),
        }


@router.post(
    "/oauth2/token",
    name="issue_token",
    summary="Issue an access token (OAuth2 client credentials)",
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
                            "client_assertion": {"type": "string"},
                        },
                    }
                }
            },
        }
    },
)
async def issue_token(request: Request) -> JSONResponse:
    service: TokenService = request.app.state.token_service
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


@router.get("/.well-known/jwks.json", summary="Public keys that verify access tokens")
async def jwks(request: Request) -> JSONResponse:
    keys: KeyManager = request.app.state.key_manager
    return JSONResponse(await keys.jwks(), headers={"Cache-Control": "public, max-age=30"})
