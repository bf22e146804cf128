"""The gateway's front door, as one pure ASGI middleware (streamed bodies pass untouched):

1. CORS: open (`*`) for the public directory reads only; closed (no CORS headers) elsewhere.
2. Body size: a declared or streamed body over `max_body_bytes` gets 413.
3. Authentication: every route except health, readiness, metrics, docs, the token endpoint, the
   JWKS and the public directory reads needs a valid bearer token, and at least one scope of the
   area it calls (services check the exact scope again). 401/403 problem+json otherwise.
4. Rate limits: a token bucket per client (its registered rate, carried in the token) or, for
   unauthenticated routes, per caller address (shared/http.py: X-Forwarded-For only from
   CMH_TRUSTED_PROXIES). 429 with Retry-After.

Limits are per gateway replica: with N replicas a client can reach N times its rate.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.fhir import FHIR_RESOURCE_OWNERS
from shared.auth import TokenVerifier, bearer_token
from shared.errors import Problem, error_response
from shared.http import client_address
from shared.settings import Settings

OPEN_PATHS = frozenset(
    {
        "/health", "/ready", "/docs", "/openapi.json", "/oauth2/token", "/.well-known/jwks.json",
        "/fhir/metadata",  # a FHIR server's CapabilityStatement is public (FHIR R4 §3.1.0.13)
    }
)  # fmt: skip
UNLIMITED_PATHS = frozenset({"/health", "/ready"})
# Open Referral UK read endpoints, public by the standard.
PUBLIC_DIRECTORY = re.compile(
    r"^/directory(/|/openapi\.json|/(services|organizations|taxonomies|taxonomy_terms|service_at_locations)(/[^/]+)?/?)?$"
)
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
    (b"access-control-expose-headers", b"X-Request-ID"),
]


def area_of(path: str) -> str:
    """The service a path reaches: its first segment, or for `/fhir/<Type>` the owning service."""
    parts = path.strip("/").split("/")
    if parts[0] == "fhir" and len(parts) > 1:
        return FHIR_RESOURCE_OWNERS.get(parts[1], "fhir")
    return parts[0]


def is_public_directory_read(method: str, path: str) -> bool:
    return method in PUBLIC_METHODS and PUBLIC_DIRECTORY.match(path) is not None


class BodyTooLarge(Exception):
    """A streamed request body passed the limit."""


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

    def _prune(self, now: float) -> None:
        self._calls += 1
        if self._calls % 10_000:
            return
        idle = [key for key, bucket in self._buckets.items() if now - bucket.updated > 600]
        for key in idle:
            del self._buckets[key]


class AccessControlMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.limiter = RateLimiter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path"]
        headers = Headers(scope=scope)
        public_read = is_public_directory_read(method, path)

        if public_read:
            if method == "OPTIONS" and "access-control-request-method" in headers:
                await self._preflight(scope, receive, send)
                return
            send = _with_cors(send)

        try:
            await self._check_body_declared(headers)
            if path in OPEN_PATHS or public_read:
                if path not in UNLIMITED_PATHS:
                    address = client_address(scope, self.settings)
                    self._rate_limit(f"peer:{address}", self.settings.public_rate_limit_per_minute)
            else:
                claims = await self._authenticate(scope, headers, path)
                self._rate_limit(f"client:{claims['sub']}", int(claims.get("cmh_rate") or 0) or None)
        except Problem as problem:
            await _send_problem(problem, scope, receive, send)
            return

        await self._call_with_body_limit(scope, receive, send)

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
            )
        scope.setdefault("state", {})["token_claims"] = claims
        return claims

    def _rate_limit(self, key: str, per_minute: int | None) -> None:
        wait = self.limiter.take(key, per_minute or self.settings.rate_limit_per_minute)
        if wait is not None:
            retry_after = str(max(1, math.ceil(wait)))
            raise Problem(
                429,
                "Too many requests",
                f"Rate limit reached; retry after {retry_after} seconds.",
                type_slug="rate-limited",
                headers={"Retry-After": retry_after},
            )

    async def _check_body_declared(self, headers: Headers) -> None:
        declared = headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise Problem(400, "Bad Content-Length", type_slug="bad-request") from None
            if size > self.settings.max_body_bytes:
                raise self._too_large()

    def _too_large(self) -> Problem:
        return Problem(
            413,
            "Request body too large",
            f"Bodies are limited to {self.settings.max_body_bytes} bytes.",
            type_slug="body-too-large",
        )

    async def _call_with_body_limit(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.settings.max_body_bytes
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            if started:
                raise
            await _send_problem(self._too_large(), scope, receive, send)
        except Exception as exc:
            # The proxy may wrap our exception while streaming the body upstream.
            if _caused_by(exc, BodyTooLarge) and not started:
                await _send_problem(self._too_large(), scope, receive, send)
                return
            raise

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


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


async def _send_problem(problem: Problem, scope: Scope, receive: Receive, send: Send) -> None:
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
