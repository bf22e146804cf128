"""Bounds for integers callers send (query parameters, headers, FHIR paging), in one place.

Python integers are unbounded but database integers are 64-bit: an unbounded `page`, `after`,
`_offset` or `Last-Event-ID` reached SQL and failed there (500). Every integer a caller sends is
checked against these bounds first and refused as bad input.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request

from shared.errors import Problem

INT64_MAX = 2**63 - 1
MAX_PAGE = 100_000  # times any page size stays far inside 64 bits
MAX_OFFSET = 10_000_000

# A 1-based page number and a keyset cursor (an event or row sequence number), as query parameters.
PageNumber = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page number (from 1)")]
Cursor = Annotated[int | None, Query(ge=0, le=INT64_MAX, description="Cursor from the previous page")]


def bounded_int(raw: str, *, least: int, most: int) -> int | None:
    """`raw` as an integer within [least, most], or None when it is not one (the caller answers)."""
    text = raw.strip()
    if not text or len(text) > 20 or not text.isascii() or not text.lstrip("-").isdigit():
        return None
    value = int(text)
    return value if least <= value <= most else None


MAX_PATH_ID = 128


async def check_path_ids(request: Request) -> None:
    """An app-wide dependency: every path parameter of every route (ids above all) is at most
    `MAX_PATH_ID` characters of visible text. A NUL byte failed in PostgreSQL (500) and a very
    long id reached SQL for nothing; both are refused as bad input (422, OperationOutcome under
    /fhir) before any handler runs, so a new route is covered without doing anything. `async`,
    though it never waits, so FastAPI runs it inline rather than in its thread pool."""
    for name, value in request.path_params.items():
        if name in ("path", "rest"):
            continue  # the gateway's catch-alls (proxy, FHIR): the service reached checks its own
        text = str(value)
        if not text or len(text) > MAX_PATH_ID or not text.isprintable():
            message = f"must be 1 to {MAX_PATH_ID} printable characters"
            raise Problem(
                422,
                "Request is not valid",
                "One or more fields are missing or invalid.",
                type_slug="validation",
                errors=[{"location": ["path", name], "message": message, "type": "path_id"}],
            )
