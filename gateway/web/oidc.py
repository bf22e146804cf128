"""The gateway as an OpenID Connect relying party (authorization code flow with PKCE), through
Authlib's Starlette client: discovery and JWKS from the provider, `state`, `nonce` and the PKCE
verifier kept in the server-side session, and the `id_token` validated (signature by the
provider's keys, issuer, audience, nonce, expiry). Any standard provider: NHS Care Identity
Service 2, Microsoft Entra ID, Keycloak, or the development one `cmh run` starts.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import authlib.deprecate  # noqa: F401 - first: it sets its warnings to "always" as it is imported

with warnings.catch_warnings():
    # Authlib 1.9 announces on import that its httpx integration will move to `httpx2`; the
    # API used here is the same either way.
    warnings.simplefilter("ignore")
    from authlib.integrations.base_client import OAuthError
    from authlib.integrations.starlette_client import OAuth, StarletteOAuth2App
from starlette.requests import Request
from starlette.responses import RedirectResponse

from shared.settings import Settings

PROVIDER = "provider"
# Seconds of clock difference allowed on the id_token's iat/exp (the provider's clock and ours).
ID_TOKEN_LEEWAY = 30


class SignInFailed(Exception):
    """The provider's answer could not be trusted or used; the person is told to try again."""


@dataclass(frozen=True)
class ProviderIdentity:
    """Who the provider says signed in: its issuer and subject identify the person for good."""

    issuer: str
    subject: str
    name: str | None
    email: str | None
    claims: dict[str, Any]
    id_token: str


class RelyingParty:
    def __init__(self, settings: Settings) -> None:
        if not settings.oidc_issuer:
            raise RuntimeError("no OpenID Connect provider is configured (CMH_OIDC_ISSUER)")
        self.issuer = settings.oidc_issuer.rstrip("/")
        self.client_id = settings.oidc_client_id
        secret = settings.oidc_client_secret.get_secret_value() if settings.oidc_client_secret else None
        client_kwargs: dict[str, Any] = {
            "scope": settings.oidc_scopes,
            "code_challenge_method": "S256",
            "timeout": 5.0,
        }
        if secret is None:
            client_kwargs["token_endpoint_auth_method"] = "none"  # noqa: S105 - a public client: PKCE alone
        oauth = OAuth()
        oauth.register(
            PROVIDER,
            client_id=settings.oidc_client_id,
            client_secret=secret,
            server_metadata_url=f"{self.issuer}/.well-known/openid-configuration",
            client_kwargs=client_kwargs,
        )
        client = oauth.create_client(PROVIDER)
        assert isinstance(client, StarletteOAuth2App)
        self.client = client

    async def start(self, request: Request, redirect_uri: str) -> RedirectResponse:
        """Send the person to the provider (a fresh state, nonce and PKCE verifier)."""
        try:
            response = await self.client.authorize_redirect(request, redirect_uri)
        except Exception as exc:  # the provider's discovery or keys cannot be had
            raise SignInFailed(f"the sign-in provider cannot be reached ({type(exc).__name__})") from exc
        assert isinstance(response, RedirectResponse)
        return response

    async def finish(self, request: Request) -> ProviderIdentity:
        """The provider's redirect back: exchange the code, validate the id_token."""
        metadata = await self.client.load_server_metadata()
        claims_options = {
            "iss": {"essential": True, "values": [metadata.get("issuer", self.issuer)]},
            "aud": {"essential": True, "values": [self.client_id]},
            "exp": {"essential": True},
            "sub": {"essential": True},
        }
        try:
            token = await self.client.authorize_access_token(
                request, claims_options=claims_options, leeway=ID_TOKEN_LEEWAY
            )
        except OAuthError as exc:
            raise SignInFailed(exc.error or "the provider refused the sign-in") from exc
        except Exception as exc:  # a forged or expired id_token, a wrong nonce, an unreachable provider
            raise SignInFailed(type(exc).__name__) from exc
        userinfo = token.get("userinfo")
        if not userinfo or "id_token" not in token:
            raise SignInFailed("the provider gave no id_token (is the openid scope granted?)")
        claims = dict(userinfo)
        if float(claims.get("exp", 0)) + ID_TOKEN_LEEWAY < time.time():
            raise SignInFailed("the id_token has expired")
        return ProviderIdentity(
            issuer=str(claims["iss"]),
            subject=str(claims["sub"]),
            name=_text(claims.get("name")),
            email=_text(claims.get("email")),
            claims=claims,
            id_token=str(token["id_token"]),
        )

    async def end_session_url(self, id_token: str | None, post_logout_redirect_uri: str) -> str | None:
        """Where to send the person so the provider's session ends too (RP-initiated logout), if
        the provider offers it."""
        try:
            metadata = await self.client.load_server_metadata()
        except Exception:
            return None
        endpoint = metadata.get("end_session_endpoint")
        if not endpoint:
            return None
        result = await self.client.create_logout_url(
            post_logout_redirect_uri=post_logout_redirect_uri, id_token_hint=id_token
        )
        return str(result["url"])


def _text(value: Any) -> str | None:
    return str(value)[:200] if isinstance(value, str) and value.strip() else None
