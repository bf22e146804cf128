"""Who may see and change careplan's records: the one home of its organisation binding.

Every route reads episodes, their records and clocks, the worklist and a person's journey through
the statements here, and changes an episode only after `may_change`; no route filters on the
caller's organisation itself (`tests/security/test_access_rules.py` fails on one that does).

The rule, for every client kind alike (an admin or reporting client is no exception):
- **The providing team's trust** (`Episode.owner_org`, the provider of the episode's team, from the
  registry) reads and writes the episode. The named worker is a practitioner of that team, so the
  named worker's team is covered by the same binding.
- **The referrer** (`Episode.referring_org`) reads the episodes of its own referrals, never
  writes in them.
- **A person's journey** is shown to an organisation that may read at least one of that person's
  episodes: the whole story, so nobody retells it, but only to a team already caring for them or
  the referrer that sent them. Anyone else learns nothing, not even that the person exists.

A refused read is indistinguishable from a missing record (404) and is audited as denied.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, exists, or_
from sqlalchemy.ext.asyncio import AsyncSession

from services.careplan.models import Episode
from shared.audit import AuditAction, AuditOutcome, record_access
from shared.auth import Caller, ensure_organisation

SERVICE = "careplan"


def readable_episodes(caller: Caller) -> ColumnElement[bool]:
    """The episodes the caller may read, as one WHERE condition."""
    return or_(Episode.owner_org == caller.organisation, Episode.referring_org == caller.organisation)


def may_read(caller: Caller, episode: Episode) -> bool:
    return caller.organisation in (episode.owner_org, episode.referring_org)


def may_change(caller: Caller, episode: Episode) -> None:
    """Only the trust providing the episode's team writes in it (403 otherwise)."""
    ensure_organisation(caller, episode.owner_org or "", resource="episode")


def journey_visible(caller: Caller, person_id: str) -> ColumnElement[bool]:
    """True when the caller may read at least one of the person's episodes."""
    return exists().where(Episode.person_id == person_id, readable_episodes(caller))


def audit_denied(
    session: AsyncSession,
    caller: Caller,
    resource_type: str,
    *,
    resource_ids: Sequence[str] = (),
    person_ids: Sequence[str] = (),
    action: AuditAction = AuditAction.READ,
) -> None:
    """A refused access, kept in the transaction (which the caller commits before answering 404)."""
    record_access(
        session, caller, service=SERVICE, action=action, resource_type=resource_type,
        resource_ids=resource_ids, person_ids=person_ids, outcome=AuditOutcome.DENIED,
    )  # fmt: skip
