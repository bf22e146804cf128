"""Who may see and change triage's records: the one home of its organisation binding.

Native, FHIR, people and worklist routes read referrals and people through the statements and
loaders here; no route filters on the caller's organisation itself
(`tests/security/test_access_rules.py` fails on one that does).

The rule:
- **The single point of access** (clients holding `triage:decide` or `crisis:respond`: the
  practitioners who screen, decide and respond to crises for everyone) reads every referral and
  every person; it must, to find duplicates, re-access and the person's history.
- **A referrer** reads the referrals its organisation made, and the people it referred, but not
  through a referral whose identity is in review (its NHS number may have matched someone else,
  whose details are not the referrer's to read).
- Anyone else: not found. A refused read of a record that exists is audited as denied.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.triage.models import Person, Referral
from shared.audit import AccessDenied, AuditAction
from shared.auth import Caller
from shared.errors import Problem

SERVICE = "triage"
CLINICAL_SCOPES = ("triage:decide", "crisis:respond")


def single_point_of_access(caller: Caller) -> bool:
    return any(caller.has(scope) for scope in CLINICAL_SCOPES)


def own_referrals(caller: Caller) -> ColumnElement[bool]:
    """The referrals the caller's organisation made (its conditional creates match only these)."""
    return Referral.referring_org == caller.organisation


def readable_referrals(caller: Caller) -> list[ColumnElement[bool]]:
    """The referrals the caller may read, as WHERE conditions (none: all of them)."""
    return [] if single_point_of_access(caller) else [own_referrals(caller)]


def readable_people(caller: Caller) -> list[ColumnElement[bool]]:
    """The people the caller may read, as WHERE conditions."""
    if single_point_of_access(caller):
        return []
    return [
        exists().where(
            Referral.person_id == Person.id,
            own_referrals(caller),
            Referral.identity_review_open.is_(False),
        )
    ]


def person_on_file_visible(caller: Caller, referral: Referral) -> bool:
    """While a referral's identity is in review, the person on file is shown only to the single
    point of access; the referrer sees the person as they referred them."""
    return not referral.identity_review_open or single_point_of_access(caller)


async def referral_for(
    session: AsyncSession,
    caller: Caller,
    referral_id: str,
    *,
    missing: Problem,
    resource_type: str = "Referral",
    lock: bool = False,
    action: AuditAction = AuditAction.READ,
) -> Referral:
    """The referral if the caller may read it. Otherwise `missing` (a 404): raised as
    `AccessDenied` when the referral exists, so the refusal is audited as denied."""
    query = select(Referral).where(Referral.id == referral_id)
    referral = await session.scalar(query.with_for_update() if lock else query)
    if referral is None:
        raise missing
    if readable_referrals(caller) and referral.referring_org != caller.organisation:
        raise AccessDenied(
            missing, caller, service=SERVICE, resource_type=resource_type, resource_ids=[referral.id],
            person_ids=[referral.person_id], action=action,
        )  # fmt: skip
    return referral


async def person_for(
    session: AsyncSession,
    caller: Caller,
    person_id: str,
    *,
    missing: Problem,
    resource_type: str = "Person",
    lock: bool = False,
    action: AuditAction = AuditAction.READ,
) -> Person:
    """The person if the caller may read them; otherwise `missing`, audited as denied if they exist."""
    query = select(Person).where(Person.id == person_id)
    person = await session.scalar(query.with_for_update() if lock else query)
    if person is None:
        raise missing
    conditions = readable_people(caller)
    if conditions and not await session.scalar(select(Person.id).where(Person.id == person_id, *conditions)):
        raise AccessDenied(
            missing, caller, service=SERVICE, resource_type=resource_type, resource_ids=[person.id],
            person_ids=[person.id], action=action,
        )  # fmt: skip
    return person
