"""`contracts.clocks.check_moment`, the one home of "not in the future" (and "not after", when the
latest allowed moment is another recorded one): `CLOCK_SKEW` allowed, nothing else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.clocks import CLOCK_SKEW, TimeRefused, check_moment

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
offsets = st.timedeltas(min_value=-timedelta(days=30), max_value=timedelta(days=30))


@given(offsets, offsets, st.none() | st.sampled_from(["the referral was received"]))
def test_a_moment_is_refused_exactly_when_after_the_latest_allowed_plus_skew(
    offset: timedelta, bound_offset: timedelta, now_what: str | None
) -> None:
    at, bound = NOW + offset, NOW + bound_offset
    refused: TimeRefused | None = None
    try:
        check_moment(at, now=NOW, field="at", not_before=bound, now_what=now_what)
    except TimeRefused as exc:
        refused = exc
    if at > NOW + CLOCK_SKEW:
        assert refused is not None and refused.field == "at"
        assert refused.message == (
            "the time is in the future" if now_what is None else f"the time is after {now_what}"
        )
    elif at < bound:
        assert refused is not None and refused.message == "the time is before the referral was received"
    else:
        assert refused is None


def test_a_naive_moment_is_refused_before_any_comparison() -> None:
    with pytest.raises(TimeRefused, match="needs a time zone"):
        check_moment(datetime(2025, 6, 1, 12), now=NOW, field="at")
