"""Request context for every HTTP process: request id, trace context, access log and metrics.

A pure ASGI middleware (not Starlette's BaseHTTPMiddleware) so streamed bodies pass through
untouched. The access log and metrics use the route template (`/triage/referrals/{id}`), never the
raw path or query string, which can carry identifiers.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from fastapi.routing import iter_route_contexts
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.db import database_busy
from shared.errors import error_response, problem_type
from shared.metrics import HTTP_LATENCY, HTTP_REQUESTS
from shared.tracing import (
    CORRELATION_ID_HEADER,
    REQUEST_ID_HEADER,
    TRACEPARENT_HEADER,
    new_request_id,
    request_id_var,
    set_status_code,
    span,
    valid_correlation_id,
    valid_request_id,
)

access_log = logging.getLogger("cmh.access")
error_log = logging.getLogger("cmh.errors")

QUIET_PATHS = frozenset({"/health", "/ready"})


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        request_id = valid_request_id(headers.get(REQUEST_ID_HEADER)) or new_request_id()
        correlation_id = valid_correlation_id(headers.get(CORRELATION_ID_HEADER))
        rid_token = request_id_var.set(request_id)
        # Downstream code (the gateway proxy) reads the effective request id from the scope.
        scope.setdefault("state", {})
        scope["state"]["request_id"] = request_id
        try:
            if scope.get("path") in QUIET_PATHS:  # probes every few seconds: no span, no log line
                await self._handle(scope, receive, send, INVALID_SPAN, request_id, correlation_id)
                return
            # The server span continues the caller's trace; named by the route template once routed.
            traceparent = headers.get(TRACEPARENT_HEADER)
            with span(self.service, "HTTP", kind=SpanKind.SERVER, parent=traceparent) as server:
                await self._handle(scope, receive, send, server, request_id, correlation_id)
        finally:
            request_id_var.reset(rid_token)

    async def _handle(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        server: Span,
        request_id: str,
        correlation_id: str | None,
    ) -> None:
        status = 500
        response_started = False
        started = time.perf_counter()

        async def send_with_context(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                response_headers = MutableHeaders(scope=message)
                response_headers[REQUEST_ID_HEADER] = request_id
                if correlation_id is not None:
                    response_headers[CORRELATION_ID_HEADER] = correlation_id
                elif CORRELATION_ID_HEADER in response_headers:
                    del response_headers[CORRELATION_ID_HEADER]
            await send(message)

        try:
            await self.app(scope, receive, send_with_context)
        except Exception as exc:
            # Answer here rather than in Starlette's outermost handler, so the 500 still carries
            # the request id. Type only: exception text can carry SQL parameters or request values.
            error_log.error(
                "unhandled error", extra={"error": f"{type(exc).__module__}.{type(exc).__qualname__}"}
            )
            if server.is_recording():
                server.set_attribute("error.type", f"{type(exc).__module__}.{type(exc).__qualname__}")
            if response_started:
                raise
            path = scope.get("path", "")
            if database_busy(exc):
                await _send_database_busy(send_with_context, path)
            else:
                await _send_internal_error(send_with_context, path)
        finally:
            elapsed = time.perf_counter() - started
            route = route_template(scope)
            method = scope.get("method", "GET")
            HTTP_REQUESTS.labels(self.service, method, route, str(status)).inc()
            HTTP_LATENCY.labels(self.service, method, route).observe(elapsed)
            if server.is_recording():
                server.update_name(f"{method} {route}")
                server.set_attribute("http.request.method", method)
                server.set_attribute("http.route", route)
                set_status_code(server, status)
            if scope.get("path") not in QUIET_PATHS:
                extra: dict[str, Any] = {
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                }
                access_log.info("request", extra=extra)


# A busy database clears in moments (a lock released, a connection freed): worth one retry soon.
DATABASE_BUSY_RETRY_AFTER = 2


async def _send_internal_error(send: Send, path: str) -> None:
    # Through error_response: an OperationOutcome under /fhir, a page on the people's pages.
    response = error_response(
        path, 500, "Internal Server Error", "The error has been logged with the request id."
    )
    await _send_response(send, response)


async def _send_database_busy(send: Send, path: str) -> None:
    # A lock not granted or no connection: nothing was written (the transaction rolled back). A
    # connection lost as the work ran leaves it undone, or, lost during its commit, done: either
    # way the same request may be sent again, and with its Idempotency-Key a retried referral is
    # never doubled (an If-Match decision is refused as already made).
    response = error_response(
        path,
        503,
        "Service Unavailable",
        "The database is busy or briefly unreachable. Try again after the Retry-After interval.",
        type_=problem_type("database-busy"),
        headers={"Retry-After": str(DATABASE_BUSY_RETRY_AFTER)},
    )
    await _send_response(send, response)


async def _send_response(send: Send, response: Response) -> None:
    await send(
        {"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers}
    )
    await send({"type": "http.response.body", "body": response.body})


# --- issue 18 §6: every process defends itself (gateway and services alike) ----------------------

# Public answers a cache may keep: the Open Referral UK directory reads, docs and the capability
# statement. Everything else may carry person data and is `no-store`.
PUBLIC_DIRECTORY_READ = re.compile(
    r"^/directory(/|/openapi\.json|/(services|organizations|taxonomies|taxonomy_terms|service_at_locations)(/[^/]+)?/?)?$"
)
CACHEABLE_PATHS = frozenset({"/docs", "/redoc", "/openapi.json", "/fhir/metadata", "/.well-known/jwks.json"})
DOCS_ASSETS_PREFIX = "/docs/assets/"  # the docs pages' scripts and styles (gateway/docs.py)
# The people's pages' stylesheets, scripts and icons (gateway/web/static.py): open and cacheable.
WEB_STATIC_PREFIX = "/app/static/"


def is_cacheable_public_read(method: str, path: str) -> bool:
    if method not in ("GET", "HEAD"):
        return False
    return (
        path in CACHEABLE_PATHS
        or path.startswith((DOCS_ASSETS_PREFIX, WEB_STATIC_PREFIX))
        or PUBLIC_DIRECTORY_READ.match(path) is not None
    )


class BodyTooLarge(Exception):
    """A streamed request body passed the limit."""


class BodyTooSlow(Exception):
    """A request body did not arrive within the read timeout (a slow client holding a worker)."""


def _caused_by(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kinds):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


# RFC 9110 §5.5: field values are visible ASCII, space and tab; obs-text (bytes >= 0x80) is
# refused here rather than failing later where a library insists on ASCII (the proxy did: 500).
# Deleting the allowed bytes leaves the others (C speed: a Python loop over each byte cost ~80 µs
# a request on a bearer token).
_FIELD_VALUE_BYTES = bytes([0x09, *range(0x20, 0x7F)])


def _printable_ascii(value: bytes) -> bool:
    return not value.translate(None, _FIELD_VALUE_BYTES)


def _declares_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return True
    return False


class RequestLimitsMiddleware:
    """Request hygiene every HTTP process applies before any routing: header values must be
    ASCII (400), a declared or streamed body over `max_body_bytes` is refused (413), a body that
    does not arrive within `body_read_timeout_seconds` is refused (408), and every answer carries
    `X-Content-Type-Options: nosniff` and, unless it is a public cacheable read, `Cache-Control:
    no-store`. Pure ASGI, so streamed bodies still stream."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        body_read_timeout_seconds: float,
        cacheable: Callable[[str, str], bool] = is_cacheable_public_read,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_read_timeout_seconds = body_read_timeout_seconds
        self.cacheable = cacheable

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        cacheable = self.cacheable(scope["method"], path)
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                if not cacheable:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        refusal = self._check_headers(scope)
        if refusal is not None:
            await _send_problem(send_with_headers, path, *refusal)
            return
        if not _declares_body(scope.get("headers", [])):
            # Nothing to time or count (most reads): the server delivers an empty body at once.
            await self.app(scope, receive, send_with_headers)
            return
        deadline = asyncio.get_running_loop().time() + self.body_read_timeout_seconds
        received = 0
        body_done = False

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:
                return await receive()  # after the body: disconnect notices, never timed
            try:
                # asyncio.timeout, not wait_for: no extra task per body chunk.
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTooSlow from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge
                body_done = not message.get("more_body", False)
            return message

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except Exception as exc:
            cause = _caused_by(exc, (BodyTooLarge, BodyTooSlow))
            if cause is None or started:
                raise
            if isinstance(cause, BodyTooLarge):
                await _send_problem(send_with_headers, path, *self._too_large())
            else:
                await _send_problem(
                    send_with_headers, path, 408, "Request body too slow",
                    f"The body must arrive within {self.body_read_timeout_seconds:g} seconds.", "body-timeout",
                )  # fmt: skip

    def _too_large(self) -> tuple[int, str, str, str]:
        return (
            413,
            "Request body too large",
            f"Bodies are limited to {self.max_body_bytes} bytes.",
            "body-too-large",
        )

    def _check_headers(self, scope: Scope) -> tuple[int, str, str, str] | None:
        for name, value in scope.get("headers", []):
            if not _printable_ascii(value):
                return 400, "Bad header", "Header values must be printable ASCII (RFC 9110).", "bad-header"
            if name == b"content-length":
                if not value.isdigit():
                    return 400, "Bad Content-Length", "Content-Length must be a whole number.", "bad-request"
                if int(value) > self.max_body_bytes:
                    return self._too_large()
        return None


async def _send_problem(send: Send, path: str, status: int, title: str, detail: str, slug: str) -> None:
    await _send_response(send, error_response(path, status, title, detail, type_=problem_type(slug)))


# --- HTTP semantics every route gets (issue 20 §5) -----------------------------------------------


class HeadAsGetMiddleware:
    """HEAD wherever GET is (RFC 9110 §9.3.2): the request runs as GET and the answer goes out
    with the same status and headers and no body. A 405's Allow names every method some route
    of the path takes (Starlette names only the first such route's), HEAD beside GET."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] != "HEAD":
            await self.app(scope, receive, _with_allow(scope, send))
            return

        async def send_headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if not message.get("more_body", False):
                    await send({"type": "http.response.body", "body": b""})
                return
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, _with_allow(scope, send_headers_only))


_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(app: Any, scope: Scope) -> list[str] | None:
    """Every method the routes of `scope`'s path take (included routers' too), HEAD where GET;
    None when a route takes this very method (its handler answered the 405 itself, e.g. the
    gateway passing on a service's, whose Allow is the service's to say)."""
    methods: set[str] = set()
    for route in iter_route_contexts(getattr(app, "routes", ())):
        route_methods = route.methods
        match = route.matches(scope)[0] if route_methods else Match.NONE
        if match is Match.FULL:
            return None
        if match is Match.PARTIAL and route_methods:
            methods |= route_methods
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods, key=lambda m: (_METHOD_ORDER.index(m) if m in _METHOD_ORDER else 99, m))


def _with_allow(scope: Scope, send: Send) -> Send:
    async def send_with_allow(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] == 405:
            headers = MutableHeaders(scope=message)
            allowed = allowed_methods(scope.get("app"), scope)
            if allowed is None:
                named = [m.strip() for m in headers.get("allow", "").split(",") if m.strip()]
                allowed = [*named, "HEAD"] if "GET" in named and "HEAD" not in named else named
            if allowed:
                headers["Allow"] = ", ".join(allowed)
        await send(message)

    return send_with_allow


class DropEmptyQueryParameters:
    """`?search=&page=` means no search and the first page: a parameter with an empty value is
    taken as absent (callers build query strings from empty form fields), never a 422."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query: bytes = scope.get("query_string", b"") if scope["type"] == "http" else b""
        if query:
            pairs = query.split(b"&")
            kept = [pair for pair in pairs if pair and not pair.endswith(b"=")]
            if len(kept) != len(pairs):
                scope = {**scope, "query_string": b"&".join(kept)}
        await self.app(scope, receive, send)


PUBLIC_MAX_AGE_SECONDS = 60


class ConditionalPublicReads:
    """Public reads (`is_cacheable_public_read`) carry a strong ETag of their body and a
    Cache-Control a shared cache may use; If-None-Match naming the current ETag is a 304 with no
    body. Streamed answers (ndjson exports) are passed through as they are."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_cacheable_public_read(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        asked = Headers(scope=scope).get("if-none-match")

        async def send_validated(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            held, start = start, None
            headers = MutableHeaders(scope=held)
            if held["status"] != 200 or message.get("more_body", False) or "etag" in headers:
                await send(held)
                await send(message)
                return
            tag = '"' + hashlib.sha256(message.get("body", b"")).hexdigest()[:32] + '"'
            headers["ETag"] = tag
            if "cache-control" not in headers:
                headers["Cache-Control"] = f"public, max-age={PUBLIC_MAX_AGE_SECONDS}"
            if asked is not None and (
                asked.strip() == "*" or tag in [t.strip().removeprefix("W/") for t in asked.split(",")]
            ):
                for name in ("content-length", "content-type"):
                    if name in headers:
                        del headers[name]
                held["status"] = 304
                await send(held)
                await send({"type": "http.response.body", "body": b""})
                return
            await send(held)
            await send(message)

        await self.app(scope, receive, send_validated)
