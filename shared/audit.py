"""The audit trail of every read or write of person-identifiable data.

A service records an access in the same transaction as the write it audits (or, for a read, in a
transaction committed before the data is returned), as an outbox event. The gateway, which owns the
append-only audit store, consumes `cmh.*.audit.recorded` into it. An audit entry says who, what,
when, why and with what outcome; it never holds clinical content, which is why it takes only
identifiers and categories, each checked here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, and_, case, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth import Caller
from shared.db import RefusedWithRecord
from shared.events import make_event
from shared.outbox import add_event
from shared.tracing import request_id_var

AUDIT_ENTITY = "audit"
AUDIT_VERB = "recorded"
AUDIT_SUBJECTS = f"cmh.*.{AUDIT_ENTITY}.{AUDIT_VERB}"
_IDENTIFIER = re.compile(r"^[A-Za-z0-9._:\-/|]{1,128}$")
_RESOURCE_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,63}$")
Record = TypeVar("Record")


class AuditAction(StrEnum):
    READ = "read"
    SEARCH = "search"
    CREATE = "create"
    UPDATE = "update"
    EXPORT = "export"


class AuditOutcome(StrEnum):
    SUCCESS = "success"
    DENIED = "denied"


def _identifiers(values: Sequence[str], what: str) -> list[str]:
    checked = []
    for value in values:
        if not isinstance(value, str) or not _IDENTIFIER.match(value):
            raise ValueError(f"{what} must be identifiers (1-128 of A-Z a-z 0-9 . _ : - / |)")
        checked.append(value)
    return checked


def audit_data(
    caller: Caller,
    *,
    service: str,
    action: AuditAction,
    resource_type: str,
    resource_ids: Sequence[str] = (),
    person_ids: Sequence[str] = (),
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
) -> dict[str, Any]:
    if not _RESOURCE_TYPE.match(resource_type):
        raise ValueError("resource_type must be a type name such as Referral")
    return {
        "service": service,
        "action": AuditAction(action).value,
        "resource_type": resource_type,
        "resource_ids": _identifiers(resource_ids, "resource_ids"),
        "person_ids": _identifiers(person_ids, "person_ids"),
        "outcome": AuditOutcome(outcome).value,
        "client_id": caller.client_id,
        "organisation": caller.organisation,
        "client_kind": caller.kind.value,
        "end_user_id": caller.end_user_id,
        "end_user_role": caller.end_user_role,
        "purpose_of_use": caller.purpose.value,
        "token_id": caller.token_id,
        "request_id": request_id_var.get(),
    }


def record_access(
    session: AsyncSession,
    caller: Caller,
    *,
    service: str,
    action: AuditAction,
    resource_type: str,
    resource_ids: Sequence[str] = (),
    person_ids: Sequence[str] = (),
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
) -> None:
    """Stage an audit entry in the session's transaction (it is kept if and only if that commits)."""
    data = audit_data(
        caller,
        service=service,
        action=action,
        resource_type=resource_type,
        resource_ids=resource_ids,
        person_ids=person_ids,
        outcome=outcome,
    )
    add_event(session, make_event(service, AUDIT_ENTITY, AUDIT_VERB, data, subject=resource_type))


def record_access_to(
    session: AsyncSession,
    caller: Caller,
    records: Sequence[Any],
    *,
    service: str,
    action: AuditAction,
    resource_type: str,
) -> None:
    """`record_access` for rows that carry `id` and `person_id` (referrals, episodes, handovers)."""
    record_access(
        session,
        caller,
        service=service,
        action=action,
        resource_type=resource_type,
        resource_ids=[record.id for record in records],
        person_ids=sorted({record.person_id for record in records}),
    )


class AccessDenied(RefusedWithRecord):
    """Raise inside `Database.transaction()` to refuse an access: the transaction rolls back, the
    denial is audited (outcome `denied`) in one of its own, and the caller gets `problem` (a 404
    that looks like a missing record, or a documented 403)."""

    def __init__(
        self,
        problem: Exception,
        caller: Caller,
        *,
        service: str,
        resource_type: str,
        resource_ids: Sequence[str] = (),
        person_ids: Sequence[str] = (),
        action: AuditAction = AuditAction.READ,
    ) -> None:
        super().__init__(problem)
        self.entry = audit_data(
            caller, service=service, action=action, resource_type=resource_type,
            resource_ids=resource_ids, person_ids=person_ids, outcome=AuditOutcome.DENIED,
        )  # fmt: skip
        self.service = service

    def stage(self, session: AsyncSession) -> None:
        add_event(
            session,
            make_event(
                self.service, AUDIT_ENTITY, AUDIT_VERB, self.entry, subject=self.entry["resource_type"]
            ),
        )


async def readable_or_refused(
    session: AsyncSession,
    caller: Caller,
    model: type[Record],
    record_id: str,
    readable: Sequence[ColumnElement[bool]],
    *,
    service: str,
    missing: Exception,
    resource_type: str,
    lock: bool = False,
    person_of: Callable[[Record], str] | None = lambda record: record.person_id,  # type: ignore[attr-defined]
) -> Record:
    """The `model` row `record_id` if it matches the access module's `readable` conditions (none:
    every row). Otherwise `missing` (a 404: a refused record looks like a missing one), raised as
    `AccessDenied` when the row exists, so the refusal is audited as denied; call it inside
    `Database.transaction()`. `lock` reads the row for a change (FOR UPDATE), audited as an update.
    `person_of` names the person the record is about (None: a record about no person)."""
    identity = model.id  # type: ignore[attr-defined]
    # One query: the row, and whether the caller may read it (a refused row must still be told
    # from a missing one, so the condition is a column, not a filter).
    allowed = case((and_(*readable), True), else_=False) if readable else true()
    query = select(model, allowed).where(identity == record_id)
    found = (await session.execute(query.with_for_update(of=model) if lock else query)).first()
    if found is None:
        raise missing
    record: Record = found[0]
    may_read = found[1]
    if not may_read:
        raise AccessDenied(
            missing, caller, service=service, resource_type=resource_type, resource_ids=[record_id],
            person_ids=[person_of(record)] if person_of else [],
            action=AuditAction.UPDATE if lock else AuditAction.READ,
        )  # fmt: skip
    return record
