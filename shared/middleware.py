"""Request context for every HTTP process: request id, trace context, access log and metrics.

A pure ASGI middleware (not Starlette's BaseHTTPMiddleware) so streamed bodies pass through
untouched. The access log and metrics use the route template (`/triage/referrals/{id}`), never the
raw path or query string, which can carry identifiers.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import PROBLEM_JSON, problem_body
from shared.metrics import HTTP_LATENCY, HTTP_REQUESTS
from shared.tracing import (
    REQUEST_ID_HEADER,
    TRACEPARENT_HEADER,
    child_traceparent,
    new_request_id,
    request_id_var,
    traceparent_var,
    valid_request_id,
)

access_log = logging.getLogger("cmh.access")
error_log = logging.getLogger("cmh.errors")

QUIET_PATHS = frozenset({"/health", "/ready", "/metrics"})


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
        traceparent = child_traceparent(headers.get(TRACEPARENT_HEADER))
        rid_token = request_id_var.set(request_id)
        tp_token = traceparent_var.set(traceparent)
        # Downstream code (the gateway proxy) reads the effective values from the scope.
        scope.setdefault("state", {})
        scope["state"]["request_id"] = request_id
        scope["state"]["traceparent"] = traceparent
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
            await send(message)

        try:
            await self.app(scope, receive, send_with_context)
        except Exception as exc:
            # Answer here rather than in Starlette's outermost handler, so the 500 still carries
            # the request id. Type only: exception text can carry SQL parameters or request values.
            error_log.error(
                "unhandled error", extra={"error": f"{type(exc).__module__}.{type(exc).__qualname__}"}
            )
            if response_started:
                raise
            await _send_internal_error(send_with_context)
        finally:
            elapsed = time.perf_counter() - started
            route = route_template(scope)
            method = scope.get("method", "GET")
            HTTP_REQUESTS.labels(self.service, method, route, str(status)).inc()
            HTTP_LATENCY.labels(self.service, method, route).observe(elapsed)
            if scope.get("path") not in QUIET_PATHS:
                extra: dict[str, Any] = {
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                }
                access_log.info("request", extra=extra)
            request_id_var.reset(rid_token)
            traceparent_var.reset(tp_token)


async def _send_internal_error(send: Send) -> None:
    body = json.dumps(
        problem_body(500, "Internal Server Error", "The error has been logged with the request id.")
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
