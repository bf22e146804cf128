"""The reverse proxy from the gateway to each service.

Paths are forwarded unchanged (each service serves its routes under its own prefix). Large or
open-ended bodies stream both ways (event streams, exports, chunked uploads); small ones of declared
length are passed whole, which costs far less per request. The request id and trace context always
go upstream. A service that is down answers 502 and one that is too slow 504, as problem+json, never
a hang: every upstream call is bounded by the pooled client's timeouts.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import sys
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from typing import cast
from urllib.parse import urlsplit

import httpcore
import httpx
from fastapi import APIRouter, Request
from opentelemetry.trace import Span, SpanKind
from starlette.background import BackgroundTask
from starlette.responses import JSONResponse, Response, StreamingResponse

from gateway.state import gateway_state
from shared.errors import PROBLEM_JSON, error_response, problem_body, problem_type
from shared.fhir import FORWARDED_BASE_HEADER
from shared.http import UNKNOWN_ADDRESS, client_address, public_base
from shared.metrics import UPSTREAM_ERRORS, UPSTREAM_RETRIES
from shared.settings import SERVICES, Settings
from shared.tracing import REQUEST_ID_HEADER, TRACEPARENT_HEADER, current_traceparent, set_status_code, span

log = logging.getLogger("cmh.gateway.proxy")

# Answers up to this size with a declared length are buffered rather than streamed.
BUFFERED_ANSWER_BYTES = 256 * 1024
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# RFC 9110 §7.6.1 connection-specific fields, plus those the proxy sets itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        FORWARDED_BASE_HEADER.lower(),
        REQUEST_ID_HEADER.lower(),
        TRACEPARENT_HEADER,
    }
)

# Fields the gateway's server writes on every answer itself: the service's copies are dropped, so
# each appears once.
OWN_ANSWER_FIELDS = frozenset({"date", "server"})
# The same sets as ASGI and httpcore spell header names (bytes), to filter without decoding.
_HOP_BY_HOP_BYTES = frozenset(name.encode("latin-1") for name in HOP_BY_HOP)
_NOT_PASSED_DOWN = _HOP_BY_HOP_BYTES | {name.encode("latin-1") for name in OWN_ANSWER_FIELDS}
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

# httpcore asks sniffio which event loop it runs on for every lock, event and cancellation shield;
# sniffio is not installed (anyio 4 no longer needs it), so each ask was an import that failed
# after searching sys.path: 3.5% of the gateway's samples under load. Recorded as absent, the
# import fails at once and httpcore takes asyncio, as it did; an installed sniffio is still used.
if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
    sys.modules["sniffio"] = None  # type: ignore[assignment]

# Everything the hop can fail with (httpcore's exceptions have no common base).
UPSTREAM_FAILURES: tuple[type[Exception], ...] = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpcore.ProxyError,
)


class Upstreams:
    """Where each service's replicas are: requests go round-robin; a replica that refuses the
    connection (stopped, restarting) is skipped for the next, which is safe for any method because
    nothing was sent."""

    def __init__(self, settings: Settings) -> None:
        self._urls = {service: settings.service_urls(service) for service in SERVICES}
        self._turn = itertools.count()
        # Each replica's Host field, as httpx writes it (no default port), made once.
        self.host_field: dict[str, bytes] = {
            url: httpx.URL(url).netloc for urls in self._urls.values() for url in urls
        }

    def in_turn(self, service: str) -> list[str]:
        urls = self._urls[service]
        start = next(self._turn) % len(urls)
        return urls[start:] + urls[:start]


def new_upstream_client(settings: Settings) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            settings.upstream_timeout_seconds, connect=settings.upstream_connect_timeout_seconds
        ),
        limits=httpx.Limits(
            max_connections=settings.upstream_max_connections,
            max_keepalive_connections=settings.upstream_max_connections,
        ),
        follow_redirects=False,
    )


def new_upstream_pool(settings: Settings) -> httpcore.AsyncConnectionPool:
    """The proxy's connections to the services: httpcore's pool used directly (what httpx is built
    on), with the limits, keep-alive and TLS setup `new_upstream_client` gives httpx, without
    httpx's request and response models on every hop (a third of the hop's CPU)."""
    return httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        max_connections=settings.upstream_max_connections,
        max_keepalive_connections=settings.upstream_max_connections,
        keepalive_expiry=httpx.Limits(max_connections=None).keepalive_expiry,
    )


def upstream_timeouts(settings: Settings) -> dict[str, float]:
    """httpcore's per-request timeouts, as `new_upstream_client`'s httpx.Timeout sets them."""
    whole = settings.upstream_timeout_seconds
    return {
        "connect": settings.upstream_connect_timeout_seconds,
        "read": whole,
        "write": whole,
        "pool": whole,
    }


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return (length is not None and length != "0") or "transfer-encoding" in request.headers


def _connection_tokens(headers: Sequence[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The fields a Connection header names as connection-specific (RFC 9110 §7.6.1)."""
    tokens = [
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.split(b",")
    ]
    return frozenset(token for token in tokens if token)


def _upstream_headers(request: Request) -> list[tuple[bytes, bytes]]:
    raw: list[tuple[bytes, bytes]] = request.scope["headers"]  # ASGI: lowercase names
    dropped = _HOP_BY_HOP_BYTES | _connection_tokens(raw)
    headers = [(name, value) for name, value in raw if name not in dropped]
    state = request.scope.get("state", {})
    headers.append((b"x-request-id", state["request_id"].encode("latin-1")))
    # One address, the caller's as the gateway believes it; earlier hops a caller claims are dropped.
    settings = gateway_state(request).settings
    address = client_address(request.scope, settings)
    if address != UNKNOWN_ADDRESS:
        headers.append((b"x-forwarded-for", address.encode("latin-1")))
    # The public address as the gateway believes it (`shared.http.public_base`), never the Host
    # header the caller chose: a service that trusts the gateway builds its links from these.
    public = urlsplit(public_base(settings, request.scope))
    headers.append((b"x-forwarded-proto", public.scheme.encode("latin-1")))
    headers.append((b"x-forwarded-host", public.netloc.encode("latin-1")))
    return headers


def _downstream_headers(upstream: httpcore.Response) -> list[tuple[bytes, bytes]]:
    dropped = _NOT_PASSED_DOWN | _connection_tokens(upstream.headers)
    pairs = ((name.lower(), value) for name, value in upstream.headers)
    return [(name, value) for name, value in pairs if name not in dropped]


def _field(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


# RFC 9110 §9.2.2: a request with one of these methods means the same sent once or twice.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def may_send_again(method: str, headers: Mapping[str, str], content: object) -> bool:
    """Whether a request that got no answer may be sent once more: idempotent by its method, or
    made so by its Idempotency-Key (the service answers a repeat with the first answer), and its
    body held whole (a streamed upload cannot be read twice)."""
    if content is not None and not isinstance(content, bytes):
        return False
    return method in IDEMPOTENT_METHODS or "idempotency-key" in {name.lower() for name in headers}


def is_unsafe_path(path: str) -> bool:
    return any(segment in (".", "..") for segment in path.split("/"))


async def forward(
    request: Request,
    service: str,
    *,
    path: str | None = None,
    query: str | None = None,
    extra_headers: Sequence[tuple[str, str]] = (),
) -> Response:
    """Send the request on to `service`, at the same path (or `path`, already percent-encoded) and
    query (or `query`), with `extra_headers` the gateway adds."""
    raw_path = path or request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
    if is_unsafe_path(request.url.path):
        return error_response(
            request.url.path, 400, "Bad path", "Dot segments are not allowed.", type_=problem_type("bad-path")
        )
    query = request.scope.get("query_string", b"").decode("latin-1") if query is None else query
    with span("gateway", f"{request.method} {service}", kind=SpanKind.CLIENT) as client_span:
        answer = await _send_upstream(request, service, raw_path, query, extra_headers, client_span)
        set_status_code(client_span, answer.status_code)
        return answer


async def _send_upstream(
    request: Request,
    service: str,
    raw_path: str,
    query: str,
    extra_headers: Sequence[tuple[str, str]],
    client_span: Span,
) -> Response:
    gateway = gateway_state(request)
    pool = gateway.upstream_pool
    # The service's server span is a child of this client span (the hop).
    headers = _upstream_headers(request)
    headers.extend((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in extra_headers)
    traceparent = current_traceparent()
    if traceparent is not None:
        headers.append((b"traceparent", traceparent.encode("latin-1")))
    if client_span.is_recording():
        client_span.set_attribute("http.request.method", request.method)
        client_span.set_attribute("cmh.upstream", service)
    content: bytes | AsyncIterator[bytes] | None = None
    if _has_body(request):
        # A declared body (already held under the gateway's size limit) goes as it is; only a
        # chunked upload streams through.
        if "content-length" in request.headers:
            content = await request.body()
        else:
            content = request.stream()
            headers.append((b"transfer-encoding", b"chunked"))
    elif request.method in _BODY_METHODS and _field(headers, b"content-length") is None:
        headers.append((b"content-length", b"0"))  # as httpx framed an empty POST, PUT or PATCH
    if _field(headers, b"accept") is None:
        headers.append((b"accept", b"*/*"))  # what httpx's client sent when the caller named none
    replicas = gateway.upstreams.in_turn(service)
    replayable = may_send_again(request.method, request.headers, content)
    target = raw_path + (f"?{query}" if query else "")
    extensions = {"timeout": gateway.upstream_timeouts}

    def upstream_request(base: str) -> httpcore.Request:
        return httpcore.Request(
            request.method,
            base + target,
            headers=[(b"host", gateway.upstreams.host_field[base]), *headers],
            content=content,
            extensions=extensions,
        )

    try:
        for index, base in enumerate(replicas):
            try:
                upstream = await pool.handle_async_request(upstream_request(base))
                break
            except httpcore.ConnectError:
                if index == len(replicas) - 1:
                    raise
                log.info("upstream replica refused; trying the next", extra={"upstream": service})
            except httpcore.RemoteProtocolError:
                # A pooled keep-alive connection the service closed as the request went out (its
                # idle timeout): no answer began. Sent once more, on a fresh connection, when that
                # cannot do the work twice.
                if not replayable:
                    raise
                UPSTREAM_RETRIES.labels(service).inc()
                log.info(
                    "upstream closed the connection before answering; sent again", extra={"upstream": service}
                )
                upstream = await pool.handle_async_request(upstream_request(base))
                break
    except UPSTREAM_FAILURES as exc:
        return _failed(request, service, exc)
    # Raw pairs keep repeated fields (Set-Cookie, Link) as the service sent them.
    downstream_headers = _downstream_headers(upstream)
    length = _field(upstream.headers, b"content-length")
    stream = cast(AsyncIterable[bytes], upstream.stream)  # always so from the async pool
    if length is not None and length.isdigit() and int(length) <= BUFFERED_ANSWER_BYTES:
        # A small answer of known length (most API answers) is read whole and sent at once: far
        # cheaper than streaming it. Event streams, exports and large pages still stream.
        try:
            body = b"".join([chunk async for chunk in stream])
        except UPSTREAM_FAILURES as exc:
            await upstream.aclose()
            return _failed(request, service, exc)
        await upstream.aclose()
        answer = Response(body, status_code=upstream.status)
        answer.raw_headers = downstream_headers
        return answer
    response = StreamingResponse(
        stream, status_code=upstream.status, background=BackgroundTask(upstream.aclose)
    )
    response.raw_headers = downstream_headers
    return response


def _failed(request: Request, service: str, exc: Exception) -> Response:
    """504 for a service too slow to answer, 502 for one that cannot be reached or broke off."""
    if isinstance(exc, httpcore.TimeoutException):
        UPSTREAM_ERRORS.labels(service, "timeout").inc()
        log.warning("upstream timed out", extra={"upstream": service})
        return error_response(
            request.url.path,
            504,
            "Service timed out",
            f"The {service} service did not answer in time.",
            type_=problem_type("upstream-timeout"),
            service=service,
        )
    UPSTREAM_ERRORS.labels(service, "unavailable").inc()
    log.warning("upstream unavailable", extra={"upstream": service, "error": type(exc).__name__})
    return error_response(
        request.url.path,
        502,
        "Service unavailable",
        f"The {service} service could not be reached.",
        type_=problem_type("upstream-unavailable"),
        service=service,
    )


def proxy_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)
    for service in SERVICES:
        handler = _handler_for(service)
        router.add_api_route(f"/{service}", handler, methods=METHODS, name=f"proxy-{service}-root")
        router.add_api_route(f"/{service}/{{path:path}}", handler, methods=METHODS, name=f"proxy-{service}")
    return router


def is_internal_fhir_path(service: str, path: str) -> bool:
    """A service's own FHIR routes (`/<service>/fhir[/...]`): internal, reached only through the
    gateway's `/fhir` base, which forwards to them itself (`gateway/fhir.py`)."""
    internal = f"/{service}/fhir"
    return path == internal or path.startswith(internal + "/")


def _handler_for(service: str):  # type: ignore[no-untyped-def]
    async def handler(request: Request) -> Response:
        if is_internal_fhir_path(service, request.url.path):  # decoded: %2F cannot slip past
            return JSONResponse(
                problem_body(
                    404,
                    "Not found",
                    "The FHIR base is /fhir (its CapabilityStatement: /fhir/metadata).",
                    type_=problem_type("not-found"),
                ),
                status_code=404,
                media_type=PROBLEM_JSON,
            )
        return await forward(request, service)

    return handler
