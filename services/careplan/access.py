"""Who may see and change careplan's records: the one home of its organisation binding.

Every route reads episodes, their records and clocks, the worklist and a person's journey through
the statements and the loader (`episode_for`) here, and changes an episode only after
`may_change`; no route reads the caller's organisation itself (`tests/security/test_access_rules.py`
fails on one that does).

The rule, for every client kind alike (an admin or reporting client is no exception):
- **The providing team's trust** (`Episode.owner_org`, the provider of the episode's team, from the
  registry) reads and writes the episode. The named worker is a practitioner of that team, so the
  named worker's team is covered by the same binding.
- **The referrer** (`Episode.referring_org`) reads the episodes of its own referrals, never
  writes in them.
- **A person's journey** is shown to an organisation that may read at least one of that person's
  episodes: the whole story, so nobody retells it, but only to a team already caring for them or
  the referrer that sent them. Anyone else learns nothing, not even that the person exists.

A refused read is indistinguishable from a missing record (404) and is audited as denied, through
shared/audit.py `AccessDenied` (the work rolled back, the denial kept), as in every service.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, exists, or_
from sqlalchemy.ext.asyncio import AsyncSession

from services.careplan.models import Episode
from shared.audit import AccessDenied, AuditAction, readable_or_refused
from shared.auth import Caller, ensure_organisation
from shared.errors import Problem

SERVICE = "careplan"


def readable_episodes(caller: Caller) -> ColumnElement[bool]:
    """The episodes the caller may read, as one WHERE condition."""
    return or_(Episode.owner_org == caller.organisation, Episode.referring_org == caller.organisation)


def may_change(caller: Caller, episode: Episode) -> None:
    """Only the trust providing the episode's team writes in it: otherwise 403, audited as a denied
    update (raised as `AccessDenied`, so call it inside `Database.transaction()`)."""
    try:
        ensure_organisation(caller, episode.owner_org or "", resource="episode")
    except Problem as problem:  # the referrer reads but never writes
        raise AccessDenied(
            problem, caller, service=SERVICE, resource_type="Episode", resource_ids=[episode.id],
            person_ids=[episode.person_id], action=AuditAction.UPDATE,
        ) from None  # fmt: skip


async def episode_for(
    session: AsyncSession,
    caller: Caller,
    episode_id: str,
    resource_type: str,
    *,
    missing: Problem,
    lock: bool = False,
) -> Episode:
    """The episode if the caller may read it; otherwise `missing` (a 404 either way), audited as
    denied if it exists. `lock`: read for a change (FOR UPDATE, a refusal audited as an update)."""
    return await readable_or_refused(
        session, caller, Episode, episode_id, [readable_episodes(caller)], service=SERVICE,
        missing=missing, resource_type=resource_type, lock=lock,
    )  # fmt: skip


def journey_visible(caller: Caller, person_id: str) -> ColumnElement[bool]:
    """True when the caller may read at least one of the person's episodes."""
    return exists().where(Episode.person_id == person_id, readable_episodes(caller))


def refuse_journey(caller: Caller, missing: Problem) -> AccessDenied:
    """A journey the caller may not see, audited with no person id: an unknown id must not enter
    the trail as if it were one. Raise it inside `Database.transaction()`."""
    return AccessDenied(missing, caller, service=SERVICE, resource_type="Journey")
