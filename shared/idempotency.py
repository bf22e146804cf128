"""Idempotency-Key for every create: a retried POST returns the first result and creates nothing.

A client that timed out cannot know whether its referral was stored; it retries with the same
`Idempotency-Key`. The key (per client) is remembered *in the same transaction* as the thing it
created, with the response and a fingerprint of the request (method, path, JSON body):

- the same key and the same request replays the stored response (`Idempotent-Replayed: true`);
- the same key with a different request is 409 and changes nothing;
- concurrent requests under one key: the first to commit creates; the key's primary key fails
  every other one's whole transaction (on PostgreSQL its insert waits for the first to commit),
  and it replays the first's response. SQLite has one writer, so there they simply take turns.
  (No lock is taken up front: a retry racing its original is rare, and a lock would cost every
  create a round trip.)

Only successful (2xx) responses are remembered: an error changed nothing, so a retry runs again.
Rows expire after `idempotency_retention_hours` (pruned by the outbox relay's housekeeping).
Responses may hold person data; they live in the owning service's own database beside the
record they describe, and go when the key expires.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Header, Request, Response
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth import Caller
from shared.deps import service_state
from shared.errors import REQUIRED_HEADER, Problem
from shared.messaging_models import IdempotencyRecord
from shared.sqltypes import utcnow

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
REMEMBERED_HEADERS = ("content-type", "location", "etag")
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # visible ASCII, as the IETF draft's sf-string allows


@dataclass(frozen=True)
class IdempotentRequest:
    """A create request carrying an Idempotency-Key (keys are scoped to the calling client)."""

    key: str
    fingerprint: str


def fingerprint(method: str, path: str, body: bytes) -> str:
    """What makes two requests "the same": JSON bodies compare by value, not by whitespace."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, UnicodeDecodeError):
        canonical = body
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def parse_key(raw: str | None) -> str | None:
    if raw is None:
        return None
    key = raw.strip()
    if key.startswith('"') and key.endswith('"') and len(key) >= 2:
        key = key[1:-1]  # the IETF draft sends it as a quoted string
    if not _KEY.match(key):
        raise Problem(
            400,
            "Bad Idempotency-Key",
            "Idempotency-Key is 1 to 255 visible ASCII characters (a UUID is ideal).",
            type_slug="bad-idempotency-key",
        )
    return key


_KEY_DESCRIPTION = (
    "A unique key per create (a UUID): a retry with it returns the first result; reused for a "
    "different request, 409."
)
_KEY_EXAMPLE = "5f0c6e1e-8a3b-4c3e-9d5e-2b7f1c9a4d10"
_OptionalKeyHeader = Annotated[
    str | None, Header(alias=HEADER, description=_KEY_DESCRIPTION, examples=[_KEY_EXAMPLE])
]
# Absent is refused 400 (not FastAPI's 422), so the document marks it required itself.
_RequiredKeyHeader = Annotated[
    str | None,
    Header(
        alias=HEADER,
        description="Required. " + _KEY_DESCRIPTION,
        examples=[_KEY_EXAMPLE],
        json_schema_extra={REQUIRED_HEADER: True},
    ),
]


async def _claim(request: Request, raw_key: str | None, *, required: bool) -> IdempotentRequest | None:
    key = parse_key(raw_key)
    if key is None:
        if required:
            raise Problem(
                400,
                "Idempotency-Key required",
                "Send an Idempotency-Key header (a new UUID per create) so a retry cannot create twice.",
                type_slug="idempotency-key-required",
            )
        return None
    body = await request.body()
    return IdempotentRequest(key, fingerprint(request.method, request.url.path, body))


def idempotency(*, required: bool) -> Callable[..., Awaitable[IdempotentRequest | None]]:
    """A dependency reading the Idempotency-Key of a create; `required` makes it mandatory."""
    if required:

        async def required_key(
            request: Request, raw_key: _RequiredKeyHeader = None
        ) -> IdempotentRequest | None:
            return await _claim(request, raw_key, required=True)

        return required_key

    async def optional_key(request: Request, raw_key: _OptionalKeyHeader = None) -> IdempotentRequest | None:
        return await _claim(request, raw_key, required=False)

    return optional_key


OptionalIdempotency = Annotated[IdempotentRequest | None, Depends(idempotency(required=False))]
RequiredIdempotency = Annotated[IdempotentRequest | None, Depends(idempotency(required=True))]


def _replay(record: IdempotencyRecord, claim: IdempotentRequest) -> Response:
    if record.fingerprint != claim.fingerprint:
        raise Problem(
            409,
            "Idempotency-Key reused",
            "This Idempotency-Key was used for a different request; use a new key for a new create.",
            type_slug="idempotency-key-reused",
        )
    headers = json.loads(record.headers)
    headers[REPLAYED_HEADER] = "true"
    return Response(content=record.body, status_code=record.status_code, headers=headers)


async def _stored(
    session: AsyncSession, client_id: str, claim: IdempotentRequest, retention: timedelta
) -> tuple[IdempotencyRecord | None, bool]:
    """(the live record under this key, or None; whether an expired one is in the way)."""
    record = await session.get(IdempotencyRecord, (client_id, claim.key))
    if record is None:
        return None, False
    if record.created_at < utcnow() - retention:
        return None, True
    return record, False


def _remember(claim: IdempotentRequest, client_id: str, response: Response) -> IdempotencyRecord:
    return IdempotencyRecord(
        client_id=client_id,
        key=claim.key,
        fingerprint=claim.fingerprint,
        status_code=response.status_code,
        headers=json.dumps(
            {name: value for name, value in response.headers.items() if name.lower() in REMEMBERED_HEADERS}
        ),
        body=bytes(response.body),
    )


async def create_once(
    request: Request,
    caller: Caller,
    claim: IdempotentRequest | None,
    create: Callable[[AsyncSession], Awaitable[Response]],
) -> Response:
    """Run `create` in one transaction, at most once per key; replay the first result on a retry.

    `create` does its writes in the session it is given and returns the response to send; raise a
    `Problem` to refuse (the transaction rolls back and nothing is remembered)."""
    state = service_state(request)
    db, retention = state.db, timedelta(hours=state.settings.idempotency_retention_hours)
    if claim is None:
        async with db.transaction() as session:
            return await create(session)
    try:
        async with db.transaction() as session:
            stored, expired = await _stored(session, caller.client_id, claim, retention)
            if stored is not None:
                return _replay(stored, claim)
            response = await create(session)
            if 200 <= response.status_code < 300:
                if expired:  # replaced, not collided with
                    await session.execute(
                        delete(IdempotencyRecord).where(
                            IdempotencyRecord.client_id == caller.client_id,
                            IdempotencyRecord.key == claim.key,
                        )
                    )
                session.add(_remember(claim, caller.client_id, response))
        return response
    except (IntegrityError, Problem):
        # Another request under this key committed first: its insert collided with ours, or our
        # create found what it had just made (a "already exists" refusal). Either way the key's
        # first answer is the answer: replay it. With no winner, the refusal stands.
        async with db.session() as session:
            winner, _ = await _stored(session, caller.client_id, claim, retention)
        if winner is None:
            raise
        return _replay(winner, claim)
