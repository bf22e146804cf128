"""What a person may do: each role grants the scopes of the client kind that does that work
today, so a person reaches the API exactly as the partner system they stand in for. Pure rules,
no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from shared.auth import ClientKind


class Role(StrEnum):
    TRIAGE_PRACTITIONER = "triage_practitioner"  # the single point of access: decides referrals
    CRISIS_PRACTITIONER = "crisis_practitioner"  # works the crisis queue, records first contact
    TEAM_MEMBER = "team_member"  # a named worker in a team: episodes, plans, contacts
    TEAM_LEAD = "team_lead"  # leads a team: its four-week worklist
    DIRECTORY_MODERATOR = "directory_moderator"  # approves or rejects partners' directory edits
    VCFSE_STAFF = "vcfse_staff"  # works for a VCFSE partner (a charity): its services, handovers
    ICB_ANALYST = "icb_analyst"  # the ICB's reporting: aggregates under disclosure control
    ADMINISTRATOR = "administrator"  # the organisational registry and the audit trail


@dataclass(frozen=True)
class Grant:
    kind: ClientKind
    scopes: frozenset[str]
    needs_team: bool = False
    # The single point of access reads every referral and person (services/triage/access.py):
    # only the staff of the organisations that run it may hold such a role.
    single_point_of_access: bool = False


GRANTS: dict[Role, Grant] = {
    Role.TRIAGE_PRACTITIONER: Grant(
        ClientKind.CRISIS_APP,
        frozenset({"referral:read", "triage:decide", "registry:read"}),
        single_point_of_access=True,
    ),
    Role.CRISIS_PRACTITIONER: Grant(
        ClientKind.CRISIS_APP,
        frozenset({"referral:read", "crisis:respond", "registry:read"}),
        single_point_of_access=True,
    ),
    Role.TEAM_MEMBER: Grant(
        ClientKind.PARTNER_EHR,
        frozenset({"careplan:read", "careplan:write", "referral:read", "registry:read"}),
        needs_team=True,
    ),
    Role.TEAM_LEAD: Grant(
        ClientKind.PARTNER_EHR,
        frozenset({"careplan:read", "careplan:write", "referral:read", "registry:read"}),
        needs_team=True,
    ),
    Role.DIRECTORY_MODERATOR: Grant(ClientKind.ADMIN, frozenset({"directory:moderate", "registry:read"})),
    Role.VCFSE_STAFF: Grant(ClientKind.VCFSE_PARTNER, frozenset({"directory:write", "handover:respond"})),
    Role.ICB_ANALYST: Grant(ClientKind.REPORTING, frozenset({"reporting:aggregate", "reporting:export"})),
    Role.ADMINISTRATOR: Grant(ClientKind.ADMIN, frozenset({"registry:read", "registry:admin", "audit:read"})),
}


class RolesConflict(ValueError):
    """Roles that no one client kind holds together (a person acts as one kind of system)."""


def kind_of(roles: Iterable[Role]) -> ClientKind:
    """The one client kind a person's roles share; RolesConflict if none or several."""
    kinds = {GRANTS[role].kind for role in roles}
    if len(kinds) != 1:
        raise RolesConflict(
            "a person's roles must all be of one kind of work: "
            + (", ".join(sorted(kind.value for kind in kinds)) or "none given")
        )
    return kinds.pop()


def scopes_of(roles: Iterable[Role]) -> frozenset[str]:
    return frozenset().union(*(GRANTS[role].scopes for role in roles))


def needs_team(roles: Iterable[Role]) -> bool:
    return any(GRANTS[role].needs_team for role in roles)


def needs_single_point_of_access(roles: Iterable[Role]) -> bool:
    return any(GRANTS[role].single_point_of_access for role in roles)
