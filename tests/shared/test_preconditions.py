"""The one If-Match rule (shared/preconditions.py) and the one Refusal (shared/problems.py)."""

from __future__ import annotations

import pytest

from shared.preconditions import ANY, check_if_match, etag, expected_version, expected_versions
from shared.problems import Problem, Refusal

CHANGED = {"noun": "edit", "title": "Edit has changed", "detail": "Read it again."}


def _refused(if_match: str | None, current: int = 3, *, required: bool = True) -> Problem:
    with pytest.raises(Problem) as raised:
        check_if_match(if_match, current, required=required, **CHANGED)
    return raised.value


def test_the_etag_is_the_version_as_a_strong_tag() -> None:
    assert etag(7) == '"7"'


@pytest.mark.parametrize("header", ['"3"', "3", ' "3" ', "*", '"1", "3"'])
def test_if_match_holds(header: str) -> None:
    check_if_match(header, 3, **CHANGED)


def test_absent_where_required_is_428_naming_the_resource() -> None:
    problem = _refused(None)
    assert (problem.status, problem.title, problem.detail) == (
        428,
        "Precondition required",
        "Send If-Match with the edit's ETag.",
    )
    assert problem.type.endswith("/if-match-required")


def test_absent_where_optional_holds() -> None:
    check_if_match(None, 3, required=False, **CHANGED)


@pytest.mark.parametrize("header", ['"2"', 'W/"3"', '"1", "2"'])
def test_another_version_or_a_weak_tag_is_412_with_the_current_etag(header: str) -> None:
    problem = _refused(header)
    assert (problem.status, problem.title, problem.detail) == (412, "Edit has changed", "Read it again.")
    assert problem.headers == {"ETag": '"3"'} and problem.type.endswith("/version-mismatch")


@pytest.mark.parametrize("header", ["abc", '"x"', '"3", junk', ""])
def test_a_malformed_if_match_is_400(header: str) -> None:
    problem = _refused(header, required=False)
    assert (problem.status, problem.title) == (400, "Bad If-Match")


def test_one_expected_version_for_a_store_that_compares() -> None:
    assert expected_version('"4"', noun="record") == 4
    assert expected_version("*", noun="record") == ANY
    assert expected_versions("*", noun="record") is None
    with pytest.raises(Problem) as raised:
        expected_version('"1", "2"', noun="record")
    assert raised.value.status == 400


def test_a_refusal_is_a_problem_naming_the_field() -> None:
    refusal = Refusal("careplan", "at", "the time is in the future")
    assert isinstance(refusal, Problem) and str(refusal) == "the time is in the future"
    assert (refusal.status, refusal.title, refusal.detail) == (
        422,
        "Careplan rule broken",
        "the time is in the future",
    )
    assert refusal.type.endswith("/careplan-rule")
    assert refusal.extensions == {
        "errors": [
            {"location": ["body", "at"], "message": "the time is in the future", "type": "careplan_rule"}
        ]
    }


def test_a_state_refusal_is_409() -> None:
    refusal = Refusal(
        "triage", None, "a closed referral cannot take 'accept'", status=409, type_slug="referral-state"
    )
    assert (refusal.status, refusal.title, refusal.type.rsplit("/", 1)[-1]) == (
        409,
        "Not allowed in this state",
        "referral-state",
    )
    assert refusal.extensions == {}
