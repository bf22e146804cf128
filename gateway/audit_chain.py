"""Tamper evidence for the audit trail: every row carries a SHA-256 hash over its own fields and the
previous row's hash, so changing or removing a row breaks every link after it.

One append function (`append_audit`) serves the event consumer and the gateway's own accesses;
`cmh audit verify` walks the chain and names the first broken link.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.models import AuditRecord
from shared.db import Database

# Hashed fields, in the order of the model; the row id is left out because it is assigned on insert.
CHAINED_FIELDS = (
    "event_id",
    "occurred_at",
    "recorded_at",
    "service",
    "action",
    "resource_type",
    "resource_ids",
    "outcome",
    "client_id",
    "organisation",
    "client_kind",
    "end_user_id",
    "end_user_role",
    "purpose_of_use",
    "token_id",
    "request_id",
)
GENESIS = "0" * 64
# Any fixed key serialises appenders across the gateway's processes (PostgreSQL only; SQLite's
# BEGIN IMMEDIATE already serialises writers).
_APPEND_LOCK = 0x636D6861756469  # "cmhaudi"


def _canonical(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    return value


def chain_hash(fields: Mapping[str, Any], person_ids: Sequence[str], previous: str) -> str:
    """SHA-256 over sorted-key JSON of the row's fields, its persons and the previous hash."""
    body = {name: _canonical(fields[name]) for name in CHAINED_FIELDS}
    body["person_ids"] = sorted(person_ids)
    body["previous"] = previous
    encoded = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(encoded.encode()).hexdigest()


def _record_hash(record: AuditRecord, previous: str) -> str:
    fields = {name: getattr(record, name) for name in CHAINED_FIELDS}
    return chain_hash(fields, [person.person_id for person in record.persons], previous)


_LAST_HASH = "cmh_audit_chain_last"  # session.info key: the chain's end within this transaction


async def append_audit(session: AsyncSession, record: AuditRecord) -> None:
    """Append one audit row, chained to the last. Every writer of the trail comes through here."""
    transaction = session.get_transaction()
    known = session.info.get(_LAST_HASH)
    if known is not None and known[0] is transaction:
        # A batch (the consumer applies up to `consumer_batch_size` events in one transaction): this transaction
        # holds the lock and wrote the last row, so its hash is the chain's end.
        last: str | None = known[1]
    else:
        if session.bind.dialect.name == "postgresql":
            # Held to the end of the transaction: no other appender reads the same last hash.
            await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _APPEND_LOCK})
        last = await session.scalar(select(AuditRecord.chain_hash).order_by(AuditRecord.id.desc()).limit(1))
    record.chain_hash = _record_hash(record, last or GENESIS)
    # Inserted at the transaction's flush, inside the lock, in the order added (the unit of work
    # keeps it, and on PostgreSQL numbers a multi-row insert in parameter order): so the order of
    # ids is the order of the chain, and a batch's rows go in one statement, not one each (issue 23).
    session.add(record)
    session.info[_LAST_HASH] = (transaction, record.chain_hash)


@dataclass(frozen=True)
class ChainReport:
    count: int
    broken_id: int | None = None
    broken_position: int | None = None


async def verify_chain(db: Database, *, batch: int = 1000) -> ChainReport:
    """Walk the trail in id order; the first row whose stored hash is not the recomputed one is
    where the trail was altered (a changed row, or the row after a removed one)."""
    previous, position, after = GENESIS, 0, 0
    async with db.session() as session:
        while True:
            rows = (
                await session.scalars(
                    select(AuditRecord).where(AuditRecord.id > after).order_by(AuditRecord.id).limit(batch)
                )
            ).all()
            if not rows:
                return ChainReport(count=position)
            for row in rows:
                position += 1
                if row.chain_hash is None or row.chain_hash != _record_hash(row, previous):
                    return ChainReport(count=position, broken_id=row.id, broken_position=position)
                previous, after = row.chain_hash, row.id
            session.expunge_all()


def cmd_verify(_args: argparse.Namespace) -> int:
    from gateway.admin import _with_db
    from shared.settings import get_settings

    report: ChainReport = asyncio.run(_with_db(get_settings(), verify_chain))
    if report.broken_id is not None:
        print(
            f"audit chain broken at row id {report.broken_id} (position {report.broken_position})",
            file=sys.stderr,
        )
        return 1
    print(f"audit chain intact: {report.count} rows")
    return 0


def register(commands: Any) -> None:
    audit = commands.add_parser("audit", help="the gateway's audit trail").add_subparsers(
        dest="action", required=True
    )
    verify = audit.add_parser("verify", help="check the hash chain; exit 1 at the first broken link")
    verify.set_defaults(func=cmd_verify)
