"""Request id and W3C trace context carried from the gateway into services and events."""

from __future__ import annotations

import re
import secrets
import uuid
from contextvars import ContextVar

REQUEST_ID_HEADER = "X-Request-ID"
TRACEPARENT_HEADER = "traceparent"

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
# A caller's request id is echoed into logs and headers, so only a safe token is accepted.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

request_id_var: ContextVar[str | None] = ContextVar("cmh_request_id", default=None)
traceparent_var: ContextVar[str | None] = ContextVar("cmh_traceparent", default=None)


def new_request_id() -> str:
    return str(uuid.uuid4())


def valid_request_id(value: str | None) -> str | None:
    return value if value and _REQUEST_ID.match(value) else None


CORRELATION_ID_HEADER = "X-Correlation-ID"
_CORRELATION_ID = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]{0,126}[\x21-\x7e])?$")


def valid_correlation_id(value: str | None) -> str | None:
    """A caller's `X-Correlation-ID` (NHS API convention: echoed on the answer) when it is printable
    ASCII of at most 128 characters; anything else is ignored."""
    return value if value and _CORRELATION_ID.match(value) else None


def new_traceparent(trace_id: str | None = None) -> str:
    """A fresh span in the given trace (or in a new trace)."""
    trace = trace_id or secrets.token_hex(16)
    return f"00-{trace}-{secrets.token_hex(8)}-01"


def parse_traceparent(value: str | None) -> tuple[str, str, str] | None:
    if not value:
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if not match or match.group(1) == "0" * 32 or match.group(2) == "0" * 16:
        return None
    return match.group(1), match.group(2), match.group(3)


def child_traceparent(parent: str | None) -> str:
    """Continue the caller's trace with a new span id, or start a trace when there is none."""
    parsed = parse_traceparent(parent)
    return new_traceparent(parsed[0] if parsed else None)


def trace_id_of(traceparent: str | None) -> str | None:
    parsed = parse_traceparent(traceparent)
    return parsed[0] if parsed else None
