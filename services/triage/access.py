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

from typing import TypeVar

from sqlalchemy import ColumnElement, exists
from sqlalchemy.ext.asyncio import AsyncSession

from services.triage.models import Person, Referral
from shared.audit import readable_or_refused
from shared.auth import Caller
from shared.errors import Problem

SERVICE = "triage"
CLINICAL_SCOPES = ("triage:decide", "crisis:respond")
Record = TypeVar("Record", Referral, Person)


def single_point_of_access(caller: Caller) -> bool:
    return any(caller.has(scope) for scope in CLINICAL_SCOPES)


def owner_of(caller: Caller) -> str:
    """The organisation the caller acts for, stamped on what it creates: a referral's referring
    organisation (read back by `own_referrals`), the author of a person's version, and the
    organisation a FHIR ServiceRequest's requester must name."""
    return caller.organisation


def own_referrals(caller: Caller) -> ColumnElement[bool]:
    """The referrals the caller's organisation made (its conditional creates match only these)."""
    return Referral.referring_org == owner_of(caller)


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


def _person_of(record: Referral | Person) -> str:
    return record.id if isinstance(record, Person) else record.person_id


async def readable_record(
    session: AsyncSession,
    caller: Caller,
    model: type[Record],
    record_id: str,
    *,
    missing: Problem,
    resource_type: str | None = None,
    lock: bool = False,
) -> Record:
    """The referral or person if the caller may read it (`readable_referrals`, `readable_people`);
    otherwise `missing`, audited as denied if it exists. `lock`: read for a change (audited as an
    update). `resource_type` (the audit's) defaults to the model's name."""
    readable = readable_referrals(caller) if model is Referral else readable_people(caller)
    return await readable_or_refused(
        session, caller, model, record_id, readable, service=SERVICE, missing=missing,
        resource_type=resource_type or model.__name__, lock=lock, person_of=_person_of,
    )  # fmt: skip
