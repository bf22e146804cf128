"""A person mapped from the provider's claims (gateway/web/people.py mapping_from_claims)."""

from __future__ import annotations

import pytest

from gateway.web.people import ClaimNames, PeopleError, mapping_from_claims
from gateway.web.roles import Role

NAMES = ClaimNames("org", "roles", "team")


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"org": "rw5", "roles": ["triage_practitioner"]}, ("RW5", "ods", (Role.TRIAGE_PRACTITIONER,), None)),
        ({"org": "1000001", "roles": "vcfse_staff"}, ("1000001", "charity", (Role.VCFSE_STAFF,), None)),
        ({"org": "SC123456", "roles": "vcfse_staff"}, ("SC123456", "company", (Role.VCFSE_STAFF,), None)),
        (
            {"org": "RW5", "roles": "team_member team_lead", "team": "t-1"},
            ("RW5", "ods", (Role.TEAM_MEMBER, Role.TEAM_LEAD), "t-1"),
        ),
    ],
)
def test_claims_that_hold_together_map_a_person(
    claims: dict[str, object], expected: tuple[object, ...]
) -> None:
    assert mapping_from_claims(claims, NAMES) == expected


@pytest.mark.parametrize(
    "claims",
    [
        {},
        {"org": "RW5"},
        {"roles": ["icb_analyst"]},
        {"org": "RW5", "roles": ["surgeon"]},
        {"org": "RW5", "roles": ["crisis_practitioner", "icb_analyst"]},  # two kinds of work
        {"org": "RW5", "roles": ["team_member"]},  # no team
        {"org": "RW5", "roles": ["vcfse_staff"]},  # a charity's staff with an NHS code
        {"org": "not an org!", "roles": ["icb_analyst"]},
        {"org": "RW5", "roles": []},
    ],
)
def test_claims_that_do_not_hold_together_map_no_one(claims: dict[str, object]) -> None:
    with pytest.raises(PeopleError):
        mapping_from_claims(claims, NAMES)
