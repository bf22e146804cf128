"""Who is calling: bearer token verification, scopes and organisation binding, once for every
service (and the gateway, which verifies the same tokens first: defence in depth).

Tokens are RS256 JWTs issued by the gateway's `/oauth2/token` (OAuth2 client credentials). A
service fetches the gateway's JWKS and caches it, refetching when a token names a key it has not
seen (rate-limited), so a key rotation needs no restart. Handlers declare what they need with
`requires("referral:read")` and receive the `Caller`; a request with no, expired, forged or
wrongly scoped token is answered 401/403 problem+json before any handler runs.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import httpx
import jwt
from fastapi import Depends, Request, Security
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlows
from fastapi.security import OAuth2, SecurityScopes
from sqlalchemy import ColumnElement
from sqlalchemy.orm import InstrumentedAttribute

from shared.errors import Problem
from shared.revocation import RevocationList, revocation_window
from shared.settings import Settings

TOKEN_ALGORITHM = "RS256"  # noqa: S105 - an algorithm name, not a secret
# Verified tokens a verifier remembers (a few MB at most; past it, the expired go, then all).
VERIFIED_TOKENS_KEPT = 4096

SCOPES: dict[str, str] = {
    "referral:submit": "Submit referrals to the single point of access",
    "referral:read": "Read referrals the caller's organisation made or receives",
    "triage:decide": "Record triage decisions and overrides",
    "crisis:respond": "Watch the crisis queue and record crisis contacts",
    "careplan:read": "Read episodes, care plans and clocks",
    "careplan:write": "Record contacts, assessments, plans, named workers and discharges",
    "registry:read": "Read the organisational registry",
    "registry:admin": "Change the organisational registry",
    "directory:write": "Edit the caller's own directory entries (moderated)",
    "directory:moderate": "Approve or reject directory edits",
    "handover:respond": "Accept, decline or complete warm handovers offered to the caller",
    "reporting:aggregate": "Pull aggregate reports (disclosure control applied)",
    "reporting:unsuppressed": "Pull aggregate reports without small-number suppression",
    "reporting:export": "Start and download bulk pseudonymised extracts",
    "audit:read": "Query the audit trail",
    "subscription:manage": "Register and manage webhook notifications about the caller's own referrals",
}


class ClientKind(StrEnum):
    PARTNER_EHR = "partner_ehr"
    CRISIS_APP = "crisis_app"
    REPORTING = "reporting"
    VCFSE_PARTNER = "vcfse_partner"
    ADMIN = "admin"


class PurposeOfUse(StrEnum):
    """HL7 v3 PurposeOfUse codes (the vocabulary FHIR security labels and IHE profiles use)."""

    TREAT = "TREAT"  # treatment
    ETREAT = "ETREAT"  # emergency treatment
    COC = "COC"  # coordination of care
    CAREMGT = "CAREMGT"  # care management
    HOPERAT = "HOPERAT"  # healthcare operations
    HQUALIMP = "HQUALIMP"  # quality improvement
    PUBHLTH = "PUBHLTH"  # public health
    HSYSADMIN = "HSYSADMIN"  # system administration
    PATRQT = "PATRQT"  # patient request


DEFAULT_PURPOSE: dict[ClientKind, PurposeOfUse] = {
    ClientKind.PARTNER_EHR: PurposeOfUse.TREAT,
    ClientKind.CRISIS_APP: PurposeOfUse.ETREAT,
    ClientKind.REPORTING: PurposeOfUse.HOPERAT,
    ClientKind.VCFSE_PARTNER: PurposeOfUse.COC,
    ClientKind.ADMIN: PurposeOfUse.HSYSADMIN,
}

END_USER_ID_HEADER = "X-End-User-Id"
END_USER_ROLE_HEADER = "X-End-User-Role"
PURPOSE_HEADER = "X-Purpose-Of-Use"
_ASSERTED = re.compile(r"^[A-Za-z0-9._:@\-]{1,64}$")


@dataclass(frozen=True)
class Caller:
    """The authenticated client, the organisation it acts for, and what it may do."""

    client_id: str
    organisation: str
    kind: ClientKind
    scopes: frozenset[str]
    token_id: str
    purpose: PurposeOfUse
    end_user_id: str | None = None
    end_user_role: str | None = None
    # The token's lifetime (epoch seconds): a long-lived answer (an event stream) ends with it.
    issued_at: float = 0.0
    expires_at: float = float("inf")

    def has(self, *scopes: str) -> bool:
        return set(scopes) <= self.scopes


class KeySource(Protocol):
    async def key_for(self, kid: str) -> jwt.PyJWK | None: ...


class StaticKeys:
    """A fixed JWKS (the gateway's own keys are given this way; tests too)."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwt.PyJWKSet.from_dict(jwks) if jwks.get("keys") else None

    async def key_for(self, kid: str) -> jwt.PyJWK | None:
        if self.jwks is None:
            return None
        try:
            return self.jwks[kid]
        except KeyError:
            return None


class RemoteJwks:
    """The issuer's JWKS over HTTP, cached; an unknown `kid` triggers a (rate-limited) refetch."""

    def __init__(self, url: str, *, refresh_seconds: float, min_refresh_seconds: float) -> None:
        self.url = url
        self.refresh_seconds = refresh_seconds
        self.min_refresh_seconds = min_refresh_seconds
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(3.0))

    async def key_for(self, kid: str) -> jwt.PyJWK | None:
        now = time.monotonic()
        stale = now - self._fetched_at > self.refresh_seconds
        if kid not in self._keys or stale:
            await self._refresh(force=stale)
        return self._keys.get(kid)

    async def _refresh(self, *, force: bool) -> None:
        async with self._lock:
            if not force and time.monotonic() - self._fetched_at < self.min_refresh_seconds:
                return  # someone just fetched; don't let forged kids hammer the issuer
            try:
                response = await self._client.get(self.url)
                response.raise_for_status()
                keys = jwt.PyJWKSet.from_dict(response.json())
            except (httpx.HTTPError, ValueError, jwt.PyJWKSetError):
                # Keep the keys we have: a brief issuer outage must not fail valid tokens.
                self._fetched_at = time.monotonic()
                return
            self._keys = {key.key_id: key for key in keys.keys if key.key_id}
            self._fetched_at = time.monotonic()

    async def close(self) -> None:
        await self._client.aclose()


def _unauthorised(detail: str, error: str = "invalid_token") -> Problem:
    return Problem(
        401,
        "Unauthorised",
        detail,
        type_slug="unauthorised",
        headers={"WWW-Authenticate": f'Bearer error="{error}", error_description="{detail}"'},
    )


class TokenVerifier:
    def __init__(
        self, settings: Settings, keys: KeySource, revocations: RevocationList | None = None
    ) -> None:
        self.settings = settings
        self.keys = keys
        # Fed by the gateway's snapshots (shared/revocation.py): a disabled client's tokens end.
        self.revocations = revocations or RevocationList(keep_seconds=revocation_window(settings))
        # Tokens already verified: token → (claims, kid, key). A caller sends the same token for
        # minutes, and decoding and checking its RS256 signature was most of the gateway's
        # authentication cost. Only tokens that passed every check get here; expiry, the key still
        # being published and revocation are checked again on every use.
        self._verified: dict[str, tuple[dict[str, Any], str, jwt.PyJWK]] = {}

    def still_valid(self, caller: Caller) -> bool:
        """For answers that outlive the request (event streams): not expired, not revoked."""
        if time.time() > caller.expires_at + self.settings.token_leeway_seconds:
            return False
        return not self.revocations.revoked(caller.client_id, caller.issued_at)

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or a 401 Problem saying (without detail an attacker could use) why not."""
        cached = self._verified.get(token)
        if cached is not None:
            claims, kid, key = cached
            # PyJWT's expiry rule (exp <= now - leeway is expired); a token not yet valid is never
            # cached, and time only moves on. Any doubt goes the whole way again, with its refusals.
            if claims["exp"] > time.time() - self.settings.token_leeway_seconds and (
                await self.keys.key_for(kid) is key
            ):
                if self.revocations.revoked(str(claims["sub"]), float(claims["iat"])):
                    raise _unauthorised("The access token has been revoked.")
                return dict(claims)
            del self._verified[token]
        claims, kid, key = await self._verify(token)
        if len(self._verified) >= VERIFIED_TOKENS_KEPT:
            now = time.time() - self.settings.token_leeway_seconds
            self._verified = {t: entry for t, entry in self._verified.items() if entry[0]["exp"] > now}
            if len(self._verified) >= VERIFIED_TOKENS_KEPT:
                self._verified.clear()
        self._verified[token] = (claims, kid, key)
        return dict(claims)

    async def _verify(self, token: str) -> tuple[dict[str, Any], str, jwt.PyJWK]:
        """Every check, in full: the claims, and the key id and key that verified them."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise _unauthorised("The access token is malformed.") from None
        if header.get("alg") != TOKEN_ALGORITHM or not isinstance(header.get("kid"), str):
            raise _unauthorised("The access token is not signed by this suite.")
        key = await self.keys.key_for(header["kid"])
        if key is None:
            raise _unauthorised("The access token is not signed by this suite.")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[TOKEN_ALGORITHM],
                audience=self.settings.token_audience,
                issuer=self.settings.token_issuer,
                leeway=self.settings.token_leeway_seconds,
                options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise _unauthorised("The access token has expired.") from None
        except jwt.InvalidAudienceError:
            raise _unauthorised("The access token is not for this API.") from None
        except jwt.InvalidTokenError:
            raise _unauthorised("The access token is not valid.") from None
        if not isinstance(claims.get("scope", ""), str) or not isinstance(claims.get("cmh_org"), str):
            raise _unauthorised("The access token is not valid.")
        if self.revocations.revoked(str(claims["sub"]), float(claims["iat"])):
            raise _unauthorised("The access token has been revoked.")
        try:
            ClientKind(str(claims.get("cmh_kind")))
        except ValueError:
            raise _unauthorised("The access token is not valid.") from None
        return claims, header["kid"], key


def caller_from_claims(claims: dict[str, Any], headers: Any) -> Caller:
    """The caller of a verified token, with the end user and purpose of use the client asserts."""
    kind = ClientKind(claims["cmh_kind"])
    purpose_header = headers.get(PURPOSE_HEADER)
    if purpose_header:
        try:
            purpose = PurposeOfUse(purpose_header.upper())
        except ValueError:
            raise Problem(
                400,
                "Unknown purpose of use",
                f"{PURPOSE_HEADER} must be one of {', '.join(p.value for p in PurposeOfUse)}.",
                type_slug="purpose-of-use",
            ) from None
    else:
        purpose = DEFAULT_PURPOSE[kind]
    end_user_id = headers.get(END_USER_ID_HEADER)
    end_user_role = headers.get(END_USER_ROLE_HEADER)
    for name, value in ((END_USER_ID_HEADER, end_user_id), (END_USER_ROLE_HEADER, end_user_role)):
        if value is not None and not _ASSERTED.match(value):
            raise Problem(
                400,
                "Invalid header",
                f"{name} must be 1-64 letters, digits or ._:@-",
                type_slug="invalid-header",
            )
    return Caller(
        client_id=str(claims["sub"]),
        organisation=str(claims["cmh_org"]),
        kind=kind,
        scopes=frozenset(str(claims.get("scope", "")).split()),
        token_id=str(claims["jti"]),
        purpose=purpose,
        end_user_id=end_user_id,
        end_user_role=end_user_role,
        issued_at=float(claims["iat"]),
        expires_at=float(claims["exp"]),
    )


oauth2_client_credentials = OAuth2(
    flows=OAuthFlows(clientCredentials=OAuthFlowClientCredentials(tokenUrl="/oauth2/token", scopes=SCOPES)),
    scheme_name="OAuth2ClientCredentials",
    description="OAuth2 client credentials (client secret or private_key_jwt) at the gateway.",
    auto_error=False,
)


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise _unauthorised("An access token is required.", "invalid_request")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorised("Use the Bearer scheme.", "invalid_request")
    return token.strip()


async def authenticate(
    security_scopes: SecurityScopes,
    request: Request,
    authorization: str | None = Depends(oauth2_client_credentials),
) -> Caller:
    verifier: TokenVerifier = request.app.state.token_verifier
    claims = await verifier.verify(bearer_token(authorization))
    caller = caller_from_claims(claims, request.headers)
    missing = sorted(set(security_scopes.scopes) - caller.scopes)
    if missing:
        raise Problem(
            403,
            "Insufficient scope",
            f"This operation needs the scope {' '.join(missing)}.",
            type_slug="insufficient-scope",
            headers={
                "WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{security_scopes.scope_str}"'
            },
            required_scopes=sorted(security_scopes.scopes),
        )
    request.state.caller = caller
    return caller


def requires(*scopes: str) -> Any:
    """A dependency giving the verified `Caller`, who must hold every one of `scopes`."""
    unknown = set(scopes) - set(SCOPES)
    if unknown:
        raise ValueError(f"unknown scopes {sorted(unknown)}")
    return Security(authenticate, scopes=list(scopes))


# --- organisation binding -----------------------------------------------------------------------


def owned_by_caller(
    caller: Caller, column: InstrumentedAttribute[str] | ColumnElement[str]
) -> ColumnElement[bool]:
    """A WHERE clause keeping only rows whose owner organisation is the caller's."""
    return column == caller.organisation


def ensure_organisation(
    caller: Caller, owners: str | Iterable[str | None], *, resource: str = "record"
) -> None:
    """Refuse (403) unless the caller acts for one of the organisations the resource is bound to."""
    allowed = {owners} if isinstance(owners, str) else {o for o in owners if o}
    if caller.organisation not in allowed:
        raise Problem(
            403,
            "Not your organisation's record",
            f"This {resource} is bound to another organisation.",
            type_slug="organisation-mismatch",
        )
