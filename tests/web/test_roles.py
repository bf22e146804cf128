"""What each role grants (gateway/web/roles.py): pure rules, checked over every combination."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.web.roles import GRANTS, Role, RolesConflict, kind_of, needs_team, scopes_of
from shared.auth import SCOPES

roles_sets = st.sets(st.sampled_from(list(Role)), min_size=1)


@given(roles_sets)
def test_roles_of_one_kind_of_work_combine_and_others_are_refused(roles: set[Role]) -> None:
    kinds = {GRANTS[role].kind for role in roles}
    try:
        kind = kind_of(roles)
    except RolesConflict:
        assert len(kinds) > 1
    else:
        assert kinds == {kind}


@given(roles_sets)
def test_a_person_holds_exactly_the_union_of_their_roles_scopes_and_only_known_ones(roles: set[Role]) -> None:
    scopes = scopes_of(roles)
    assert scopes == frozenset().union(*(GRANTS[role].scopes for role in roles))
    assert scopes <= set(SCOPES)
    assert needs_team(roles) == any(GRANTS[role].needs_team for role in roles)


def test_no_roles_is_no_kind_of_work() -> None:
    try:
        kind_of([])
    except RolesConflict:
        return
    raise AssertionError("a person with no role was given a kind of work")


def test_no_role_grants_what_no_person_should_hold_and_none_is_empty() -> None:
    for role, grant in GRANTS.items():
        assert grant.scopes, role
        # Unsuppressed aggregates and webhook subscriptions stay with systems, never a person.
        assert not grant.scopes & {"reporting:unsuppressed", "subscription:manage", "referral:submit"}, role
