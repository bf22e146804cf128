"""The gateway's front door, as one pure ASGI middleware (streamed bodies pass untouched):

1. CORS: open (`*`) for the public directory reads only; closed (no CORS headers) elsewhere.
2. Authentication: every route except health, readiness, metrics, docs, the token endpoint, the
   JWKS, the public directory reads and the pages' static files needs a valid bearer token, and at least one scope of the
   area it calls (services check the exact scope again). 401/403 problem+json otherwise.
3. Rate limits: a token bucket per client (its registered rate, carried in the token) or, for
   unauthenticated routes, per caller address (shared/http.py: X-Forwarded-For only from
   CMH_TRUSTED_PROXIES). The people's pages draw on the same buckets from the session middleware
   (gateway/web/sessions.py), per person once signed in. 429 with Retry-After.

Limits are per gateway replica: with N replicas a client can reach N times its rate.

Body size, body read time and header hygiene are not here: shared/middleware.py's
RequestLimitsMiddleware, the same in every process, runs before this one (gateway/app.py).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.datastructures import Headers
from starlette.responses import RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.docs import DOCS_PATHS
from gateway.fhir import FHIR_RESOURCE_OWNERS
from gateway.web.paths import SIGN_IN, browser_navigation, is_page, page_for
from shared.auth import TokenVerifier, bearer_token
from shared.errors import Problem, error_response
from shared.http import client_address
from shared.middleware import PUBLIC_DIRECTORY_READ, WEB_STATIC_PREFIX
from shared.settings import Settings

OPEN_PATHS = frozenset(
    {
        "/health", "/ready", "/docs", "/openapi.json", "/oauth2/token", "/.well-known/jwks.json",
        "/fhir/metadata",  # a FHIR server's CapabilityStatement is public (FHIR R4 §3.1.0.13)
    }
) | DOCS_PATHS  # fmt: skip
UNLIMITED_PATHS = frozenset({"/health", "/ready"})
# Open Referral UK read endpoints are public by the standard (one pattern: shared/middleware.py).
PUBLIC_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Coarse scope gate per area: a token must hold one of these to reach the area at all.
AREA_SCOPES: dict[str, frozenset[str]] = {
    "triage": frozenset({"referral:submit", "referral:read", "triage:decide", "crisis:respond"}),
    "careplan": frozenset({"careplan:read", "careplan:write"}),
    "registry": frozenset({"registry:read", "registry:admin"}),
    "directory": frozenset({"directory:write", "directory:moderate", "handover:respond"}),
    "reporting": frozenset({"reporting:aggregate", "reporting:unsuppressed", "reporting:export"}),
    "audit": frozenset({"audit:read"}),
    "notify": frozenset({"subscription:manage"}),
}
CORS_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-expose-headers", b"X-Request-ID, X-Correlation-ID"),
]


def area_of(path: str) -> str:
    """The service a path reaches: its first segment, or for `/fhir/<Type>` the owning service."""
    parts = path.strip("/").split("/")
    if parts[0] == "fhir" and len(parts) > 1:
        return FHIR_RESOURCE_OWNERS.get(parts[1], "fhir")
    return parts[0]


def is_public_directory_read(method: str, path: str) -> bool:
    return method in PUBLIC_METHODS and PUBLIC_DIRECTORY_READ.match(path) is not None


# The suite's published terminology (conformance resources, no person data) is public like the
# CapabilityStatement, so a partner can build its mapping before it holds credentials.
PUBLIC_TERMINOLOGY_READ = re.compile(r"^/fhir/(CodeSystem|ValueSet|ConceptMap)(/[A-Za-z0-9\-.]{1,64})?/?$")


# Directory paths that hold partners' and moderators' work: closed to other origins.
PRIVATE_DIRECTORY_PREFIXES = ("/directory/partner", "/directory/moderation", "/directory/handovers")


def cors_open(path: str) -> bool:
    """Whether answers on `path` carry the open CORS headers, whatever the method and status (a
    browser app must be able to read a 404, a 405 or a 429 as well as a page): the public
    directory and the published terminology, never a path that needs a token for its data."""
    if path == "/directory" or path.startswith("/directory/"):
        return not any(path == p or path.startswith(p + "/") for p in PRIVATE_DIRECTORY_PREFIXES)
    return PUBLIC_TERMINOLOGY_READ.match(path) is not None


def is_web_static(method: str, path: str) -> bool:
    """A read of the people's pages' stylesheets, scripts and icons (gateway/web/static.py): no
    person data, loaded before anyone signs in. Not a path with dot segments: it names no file
    the static directory serves, so it gets no pass either."""
    return (
        method in PUBLIC_METHODS
        and path.startswith(WEB_STATIC_PREFIX)
        and not any(segment in (".", "..") for segment in path.split("/"))
    )


def is_session_page(method: str, path: str) -> bool:
    """A request for one of the people's pages (not their static files): authenticated and rate
    limited by the session middleware (gateway/web/sessions.py), not here."""
    return is_page(path) and not is_web_static(method, path)


def is_public_read(method: str, path: str) -> bool:
    """Reads anyone may make without a token: the directory's ORUK feed, the terminology and the
    pages' static files."""
    return (
        is_public_directory_read(method, path)
        or (method in PUBLIC_METHODS and PUBLIC_TERMINOLOGY_READ.match(path) is not None)
        or is_web_static(method, path)
    )


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets: `per_minute` sustained, bursts of ten seconds' worth (at least one)."""

    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._calls = 0

    def take(self, key: str, per_minute: int, now: float | None = None) -> float | None:
        """None if allowed; otherwise seconds until a request would be."""
        now = time.monotonic() if now is None else now
        rate = per_minute / 60.0
        capacity = max(1.0, per_minute / 6.0)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(capacity, now)
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        self._prune(now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / rate

    def check(self, key: str, per_minute: int) -> None:
        """Raise 429 with Retry-After unless a request under `key` is allowed now."""
        wait = self.take(key, per_minute)
        if wait is not None:
            retry_after = str(max(1, math.ceil(wait)))
            raise Problem(
                429,
                "Too many requests",
                f"Rate limit reached; retry after {retry_after} seconds.",
                type_slug="rate-limited",
                headers={"Retry-After": retry_after},
            )

    def _prune(self, now: float) -> None:
        self._calls += 1
        if self._calls % 10_000:
            return
        idle = [key for key, bucket in self._buckets.items() if now - bucket.updated > 600]
        for key in idle:
            del self._buckets[key]


class AccessControlMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, limiter: RateLimiter) -> None:
        self.app = app
        self.settings = settings
        self.limiter = limiter  # shared with the pages' sessions (gateway/web/sessions.py)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path"]
        headers = Headers(scope=scope)
        public_read = is_public_read(method, path)

        if cors_open(path):
            if method == "OPTIONS" and "access-control-request-method" in headers:
                await self._preflight(scope, receive, send)
                return
            send = _with_cors(send)

        if is_session_page(method, path):
            # The pages authenticate by session (gateway/web/signin.py) and are rate limited there,
            # once the session is known: per person once signed in (a ward behind one address is
            # many people), per address before. Each API call a page makes for the person comes
            # back through here with the person's token.
            await self.app(scope, receive, send)
            return

        try:
            if browser_navigation(method, headers) and path not in OPEN_PATHS and not public_read:
                # A person opening an API address from a plain link: sign in, then its page.
                location = f"{SIGN_IN}?{urlencode({'next': page_for(path)})}"
                await RedirectResponse(location, status_code=303)(scope, receive, send)
                return
            elif path in OPEN_PATHS or public_read:
                if path not in UNLIMITED_PATHS:
                    address = client_address(scope, self.settings)
                    self._rate_limit(f"peer:{address}", self.settings.public_rate_limit_per_minute)
            else:
                claims = await self._authenticate(scope, headers, path)
                self._rate_limit(f"client:{claims['sub']}", int(claims.get("cmh_rate") or 0) or None)
        except Problem as problem:
            await send_problem(problem, scope, receive, send)
            return

        await self.app(scope, receive, send)

    async def _authenticate(self, scope: Scope, headers: Headers, path: str) -> dict[str, object]:
        verifier: TokenVerifier = scope["app"].state.token_verifier
        claims = await verifier.verify(bearer_token(headers.get("authorization")))
        area = area_of(path)
        needed = AREA_SCOPES.get(area)
        held = set(str(claims.get("scope", "")).split())
        if needed is not None and not needed & held:
            raise Problem(
                403,
                "Insufficient scope",
                f"Calls to /{area} need one of the scopes {' '.join(sorted(needed))}.",
                type_slug="insufficient-scope",
                headers={
                    "WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{" ".join(sorted(needed))}"'
                },
                required_scopes=sorted(needed),
            )
        scope.setdefault("state", {})["token_claims"] = claims
        return claims

    def _rate_limit(self, key: str, per_minute: int | None) -> None:
        self.limiter.check(key, per_minute or self.settings.rate_limit_per_minute)

    async def _preflight(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 204,
                "headers": [
                    *CORS_HEADERS,
                    (b"access-control-allow-methods", b"GET, HEAD, OPTIONS"),
                    (b"access-control-allow-headers", b"Accept, Accept-Language, Content-Type, X-Request-ID"),
                    (b"access-control-max-age", b"86400"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})


def _with_cors(send: Send) -> Send:
    async def send_with_cors(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [
                *[
                    (k, v)
                    for k, v in message.get("headers", [])
                    if not k.lower().startswith(b"access-control-")
                ],
                *CORS_HEADERS,
            ]
        await send(message)

    return send_with_cors


async def send_problem(problem: Problem, scope: Scope, receive: Receive, send: Send) -> None:
    response = error_response(
        scope["path"],
        problem.status,
        problem.title,
        problem.detail,
        type_=problem.type,
        headers=problem.headers,
        **problem.extensions,
    )
    await response(scope, receive, send)
