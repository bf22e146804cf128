"""Disclosure control of whole published tables (`domain.publish`): the MHSDS rule on rows and the
ICB total alike, percentages from raw counts, statistics, undeclared fields refused, and the
differencing property: no suppressed count can be recovered exactly from the published rows and
total, even by an adversary who knows the algorithm (secondary suppression included)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.reporting.domain import (
    ROUND_TO,
    SMALL_NUMBER,
    SUPPRESSED,
    Figures,
    person_key,
    protect_column,
    pseudonym,
    publish,
)

WAITS = Figures(("met", "decided"), {"met_pct": ("met", "decided")}, {"median_days": "decided"})


def test_the_seen_defect_a_raw_total_no_longer_gives_a_row_away() -> None:
    rows = [{"place": "blackpool", "met": 3, "decided": 3}, {"place": "lancashire", "met": 12, "decided": 20}]
    shown, total = publish(rows, {"met": 15, "decided": 23}, Figures(("met", "decided"), {}, {}), ("place",),
                           unsuppressed=False)  # fmt: skip
    assert total == {"met": 15, "decided": 25, "suppressed": False}  # rounded too, not 15 and 23 raw
    assert shown[0]["met"] == SUPPRESSED and shown[0]["suppressed"] is True


def test_rounding_alone_would_pin_a_cell_so_the_next_smallest_is_suppressed() -> None:
    # 12, 12, 4 (total 28) would show 10, 10, *, 30: the * could only be 4. The next-smallest
    # rows (both 12s, tied) are suppressed, and with every row "*" so is the total.
    assert protect_column([12, 12, 4], 28) == ([SUPPRESSED] * 3, SUPPRESSED)
    assert protect_column([12, 11, 4], 27) == ([10, 10, SUPPRESSED], 25)  # * is 1-4: not pinned
    rows, total = protect_column([4, 4], 8)  # *, * beside 10 would pin both at 4
    assert rows == [SUPPRESSED, SUPPRESSED] and total == SUPPRESSED
    assert protect_column([3], 3) == ([SUPPRESSED], SUPPRESSED)  # one row is the total
    assert protect_column([40, 12], 52) == ([40, 10], 50)  # nothing suppressed: only rounded


def test_percentages_and_statistics_follow_their_counts() -> None:
    rows = [
        {"team": "a", "met": 7, "decided": 13, "median_days": 9.0},
        {"team": "b", "met": 2, "decided": 4, "median_days": 3.0},
    ]
    shown, total = publish(
        rows, {"met": 9, "decided": 17, "median_days": 8.0}, WAITS, ("team",), unsuppressed=False
    )
    # 7/13 from the raw counts is 54% (the rounded 5/15 would say 33%).
    assert shown[0] == {
        "team": "a",
        "met": 5,
        "decided": 15,
        "median_days": 9.0,
        "met_pct": 54,
        "suppressed": False,
    }
    assert shown[1] == {
        "team": "b",
        "met": "*",
        "decided": "*",
        "median_days": "*",
        "met_pct": "*",
        "suppressed": True,
    }
    assert total["met_pct"] == 53 and total["decided"] == 15
    raw, raw_total = publish(
        rows, {"met": 9, "decided": 17, "median_days": 8.0}, WAITS, ("team",), unsuppressed=True
    )
    assert raw[1] == {**rows[1], "met_pct": 50.0, "suppressed": False} and raw_total["met_pct"] == 52.9
    assert rows[1]["met"] == 2  # the input is not changed
    # A zero denominator is suppressed, not None: None would say the count is exactly 0.
    shown, _ = publish([{"met": 0, "decided": 0}], {"met": 0, "decided": 0}, WAITS, (), unsuppressed=False)
    assert shown[0]["met_pct"] == SUPPRESSED
    # suppressed says whether anything is "*", not whether rounding moved a count (exact counts stay unknown).
    shown, _ = publish(
        [{"met": 12, "decided": 20}], {"met": 12, "decided": 20}, WAITS, (), unsuppressed=False
    )
    assert shown[0]["suppressed"] is False


def test_an_undeclared_figure_cannot_leave() -> None:
    with pytest.raises(ValueError, match="undeclared"):
        publish(
            [{"met": 9, "decided": 9, "new_count": 2}],
            {"met": 9, "decided": 9},
            WAITS,
            (),
            unsuppressed=False,
        )
    with pytest.raises(ValueError, match="not among the count fields"):
        publish([], {"met": 1}, Figures(("met",), {"p": ("met", "decided")}, {}), (), unsuppressed=False)


def test_pseudonyms_are_keyed_and_separated_by_kind() -> None:
    key = b"k" * 32
    assert pseudonym("referral", "r-1", key) == pseudonym("referral", "r-1", key)
    assert len({pseudonym("referral", "x", key), pseudonym("episode", "x", key), person_key("x", key)}) == 3
    assert pseudonym("referral", "r-1", key) != pseudonym("referral", "r-1", b"other")
    with pytest.raises(ValueError):
        pseudonym("person", "x", key)


# --- the differencing property -----------------------------------------------------------------

BOUND = 14  # raw counts drawn from 0..BOUND; the adversary searches the same range (see below)


def _preimage(shown: int | str) -> range:
    """The raw values that could publish as `shown`, before secondary suppression is considered."""
    if shown == SUPPRESSED:
        return range(0, BOUND + 1)  # a secondary "*" can hide any count
    assert isinstance(shown, int)
    return range(max(SMALL_NUMBER, shown - ROUND_TO // 2), shown + (ROUND_TO - 1) // 2 + 1)


def _consistent(shown_rows: list[int | str], shown_total: int | str) -> list[tuple[int, ...]]:
    """Every table of raw rows (within 0..BOUND) that publishes exactly as seen: the adversary knows
    the rule, the secondary suppression and its tie-break, and the published rows and total. Searching
    fewer tables than exist only makes the check stricter (fewer candidates per cell)."""
    found = []
    for candidate in itertools.product(*(_preimage(s) for s in shown_rows)):
        if protect_column(list(candidate), sum(candidate)) == (shown_rows, shown_total):
            found.append(candidate)
    return found


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=BOUND), min_size=1, max_size=4))
def test_no_suppressed_count_is_recovered_by_differencing(raw: list[int]) -> None:
    shown_rows, shown_total = protect_column(raw, sum(raw))
    # What is published still follows the rule: "*" or a multiple of 5 of at least 5, rows and total.
    for value in [*shown_rows, shown_total]:
        assert value == SUPPRESSED or (
            isinstance(value, int) and value >= SMALL_NUMBER and value % ROUND_TO == 0
        )
    for value, shown in zip(raw, shown_rows, strict=True):
        if value < SMALL_NUMBER:
            assert shown == SUPPRESSED
    tables = _consistent(shown_rows, shown_total)
    assert tuple(raw) in tables
    for index, shown in enumerate(shown_rows):
        if shown == SUPPRESSED:
            candidates = {table[index] for table in tables}
            assert len(candidates) > 1, (raw, shown_rows, shown_total, index, candidates)
    if shown_total == SUPPRESSED:
        assert len({sum(table) for table in tables}) > 1, (raw, shown_rows)
