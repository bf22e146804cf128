"""ETags and If-Match for every versioned native resource: one rule (RFC 9110 §8.8.3, §13.1.1).

A resource's ETag is its version as a strong entity tag, `"<version>"`. If-Match is `*` (any
current version) or a list of entity tags; it holds when one of them is strong and equals the
current ETag (strong comparison: a weak `W/"<version>"` never matches). Where a route requires
it, a write without If-Match is refused 428; a malformed one 400; one that does not hold 412,
carrying the current ETag so the client can read again. (FHIR interactions keep FHIR's weak
`W/"<version>"`: shared/fhir.py.)
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Header

from shared.errors import REQUIRED_HEADER
from shared.problems import Problem

ANY = -1  # `expected_version` of `If-Match: *`: any current version
_TAG = re.compile(r'\s*(W/)?"?([0-9]{1,18})"?\s*')


# The If-Match header of a route: `IfMatch` where it is optional, `RequiredIfMatch` where the
# route refuses a write without it (428; the OpenAPI marks it required: shared/errors.py).
IfMatch = Annotated[
    str | None,
    Header(alias="If-Match", description="The ETag you read: the write is refused (412) if it has changed."),
]
RequiredIfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        description="Required. The ETag you read: 428 without it, 412 if it has changed.",
        examples=['"3"'],
        json_schema_extra={REQUIRED_HEADER: True},
    ),
]


def etag(version: int) -> str:
    return f'"{version}"'


def _bad_if_match() -> Problem:
    return Problem(400, "Bad If-Match", "If-Match must be the ETag you read.", type_slug="bad-if-match")


def precondition_required(noun: str) -> Problem:
    return Problem(
        428, "Precondition required", f"Send If-Match with the {noun}'s ETag.", type_slug="if-match-required"
    )


def precondition_failed(current: int, title: str, detail: str) -> Problem:
    """412: the resource has moved on; its current ETag rides along."""
    return Problem(412, title, detail, type_slug="version-mismatch", headers={"ETag": etag(current)})


def expected_versions(if_match: str | None, *, noun: str, required: bool = True) -> frozenset[int] | None:
    """The versions If-Match allows: None for any (`*`, or absent where not `required`); a weak
    tag allows none. 428 when required and absent, 400 when malformed."""
    if if_match is None:
        if required:
            raise precondition_required(noun)
        return None
    if if_match.strip() == "*":
        return None
    versions: set[int] = set()
    for part in if_match.split(","):
        match = _TAG.fullmatch(part)
        if match is None:
            raise _bad_if_match()
        if match.group(1) is None:  # strong comparison: a weak tag matches nothing
            versions.add(int(match.group(2)))
    return frozenset(versions)


def expected_version(if_match: str | None, *, noun: str) -> int:
    """One version for a store that checks it (`ANY` for `*`); 428 without If-Match, 400 when
    malformed, and a tag list or a weak tag are malformed here."""
    versions = expected_versions(if_match, noun=noun)
    if versions is None:
        return ANY
    if len(versions) != 1:
        raise _bad_if_match()
    return next(iter(versions))


def check_versions(versions: frozenset[int] | None, current: int, *, title: str, detail: str) -> None:
    """Refuse the write (412, with the current ETag) unless `current` is one of the versions
    `expected_versions` allowed (None: any). For a route that reads If-Match before the resource,
    so 428 and 400 come before 404."""
    if versions is not None and current not in versions:
        raise precondition_failed(current, title, detail)


def check_if_match(
    if_match: str | None, current: int, *, noun: str, title: str, detail: str, required: bool = True
) -> None:
    """Refuse the write unless the If-Match header holds for `current` (see `expected_versions`)."""
    check_versions(
        expected_versions(if_match, noun=noun, required=required), current, title=title, detail=detail
    )
