"""Reporting rules as pure functions: pseudonyms, categories, periods, MHSDS disclosure control of
single figures (whole tables: test_disclosure.py), nearest-rank statistics, group_by and the crisis
targets."""

from __future__ import annotations

from datetime import date
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.clocks import crisis_target_minutes
from services.reporting.domain import (
    AGE_BANDS,
    GROUP_FIELDS,
    SEX_CATEGORIES,
    SUPPRESSED,
    Figures,
    GroupByError,
    Period,
    PeriodError,
    age_band,
    ethnicity_group,
    median,
    median_of_counts,
    month_starts,
    parse_group_by,
    parse_period,
    percentile,
    percentile_of_counts,
    person_key,
    publish,
    raw_percentage,
    sex_category,
    suppress_count,
    suppress_percentage,
)

counts = st.integers(min_value=0, max_value=10**7)

# --- pseudonymisation ----------------------------------------------------------------------------


def test_person_key_is_stable_under_one_key_and_differs_under_another() -> None:
    person = "0b7e6c1e-4f1a-4c53-9a0e-1f2d3c4b5a69"
    first = person_key(person, b"key-one")
    assert first == person_key(person, b"key-one")
    assert first != person_key(person, b"key-two")
    assert first != person_key("another-person", b"key-one")
    assert len(first) == 32 and all(c in "0123456789abcdef" for c in first)


@given(st.text(min_size=1, max_size=40), st.binary(min_size=1, max_size=32))
def test_person_key_never_contains_the_id(person: str, key: bytes) -> None:
    pseudonym = person_key(person, key)
    assert len(pseudonym) == 32
    if len(person) >= 8:  # a short id could turn up in 32 hex characters by chance
        assert person not in pseudonym


def test_person_key_refuses_an_empty_key() -> None:
    with pytest.raises(ValueError):
        person_key("someone", b"")


# --- categories ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "band"),
    [
        (0, "0-17"),
        (17, "0-17"),
        (18, "18-25"),
        (25, "18-25"),
        (26, "26-34"),
        (34, "26-34"),
        (35, "35-44"),
        (44, "35-44"),
        (45, "45-54"),
        (54, "45-54"),
        (55, "55-64"),
        (64, "55-64"),
        (65, "65-74"),
        (74, "65-74"),
        (75, "75+"),
        (110, "75+"),
    ],
)
def test_age_bands_at_their_boundaries(age: int, band: str) -> None:
    assert age_band(age) == band


def test_negative_age_is_refused() -> None:
    with pytest.raises(ValueError):
        age_band(-1)


@given(st.integers(min_value=0, max_value=130))
def test_every_age_falls_in_a_listed_band(age: int) -> None:
    assert age_band(age) in AGE_BANDS


@pytest.mark.parametrize(
    ("code", "group"),
    [
        ("A", "White"),
        ("B", "White"),
        ("C", "White"),
        ("D", "Mixed"),
        ("G", "Mixed"),
        ("H", "Asian or Asian British"),
        ("J", "Asian or Asian British"),
        ("K", "Asian or Asian British"),
        ("L", "Asian or Asian British"),
        ("M", "Black or Black British"),
        ("N", "Black or Black British"),
        ("P", "Black or Black British"),
        ("R", "Other ethnic group"),
        ("S", "Other ethnic group"),
        ("Z", "Not stated"),
        ("99", "Not known"),
        (None, "Not known"),
        ("", "Not known"),
        ("Q", "Not known"),
        ("I", "Not known"),
        ("CA", "White"),
        ("h", "Asian or Asian British"),
    ],
)
def test_ethnicity_groups(code: str | None, group: str) -> None:
    assert ethnicity_group(code) == group


def test_sex_categories() -> None:
    assert set(SEX_CATEGORIES) == {"male", "female", "not_known", "not_specified"}
    assert sex_category("female") == "female"
    assert sex_category(None) == "not_known"
    assert sex_category("something else") == "not_known"


# --- periods -------------------------------------------------------------------------------------


def test_month_period() -> None:
    assert parse_period("2026-11", None, None) == Period(date(2026, 11, 1), date(2026, 12, 1))
    assert parse_period("2026-12", None, None) == Period(date(2026, 12, 1), date(2027, 1, 1))


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("2026-Q1", date(2026, 1, 1), date(2026, 4, 1)),
        ("2026-Q2", date(2026, 4, 1), date(2026, 7, 1)),
        ("2026-Q3", date(2026, 7, 1), date(2026, 10, 1)),
        ("2026-Q4", date(2026, 10, 1), date(2027, 1, 1)),
    ],
)
def test_quarter_periods_are_calendar_quarters(text: str, start: date, end: date) -> None:
    assert parse_period(text, None, None) == Period(start, end)


def test_from_and_to_are_inclusive() -> None:
    period = parse_period(None, date(2026, 1, 15), date(2026, 3, 10))
    assert period == Period(date(2026, 1, 15), date(2026, 3, 11))
    assert date(2026, 3, 10) in period and date(2026, 3, 11) not in period
    assert parse_period(None, date(2026, 5, 1), date(2026, 5, 1)).days == 1


@pytest.mark.parametrize(
    ("period", "from_", "to"),
    [
        (None, None, None),
        ("2026-11", date(2026, 1, 1), None),
        ("2026-11", date(2026, 1, 1), date(2026, 2, 1)),
        (None, date(2026, 1, 1), None),
        (None, None, date(2026, 1, 1)),
        (None, date(2026, 2, 1), date(2026, 1, 31)),
        (None, date(2020, 1, 1), date(2025, 1, 1)),  # five years and a day
        ("2026-13", None, None),
        ("2026-00", None, None),
        ("2026-Q5", None, None),
        ("2026", None, None),
        ("26-11", None, None),
        ("November 2026", None, None),
        ("9999-Q4", None, None),
        (None, date(2026, 1, 1), date.max),
    ],
)
def test_period_errors(period: str | None, from_: date | None, to: date | None) -> None:
    with pytest.raises(PeriodError) as raised:
        parse_period(period, from_, to)
    assert str(raised.value)


def test_five_years_exactly_is_allowed() -> None:
    assert parse_period(None, date(2020, 1, 1), date(2024, 12, 31)).end == date(2025, 1, 1)


def test_month_starts() -> None:
    assert month_starts(parse_period("2026-Q4", None, None)) == [
        date(2026, 10, 1),
        date(2026, 11, 1),
        date(2026, 12, 1),
    ]
    assert month_starts(Period(date(2026, 1, 15), date(2026, 3, 11))) == [
        date(2026, 1, 1),
        date(2026, 2, 1),
        date(2026, 3, 1),
    ]
    assert month_starts(Period(date(2026, 12, 31), date(2027, 1, 1))) == [date(2026, 12, 1)]


@given(
    st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)), st.integers(0, 5 * 365 - 1)
)  # `to` is inclusive: at most 5 years
def test_month_starts_cover_the_period(start: date, days: int) -> None:
    end = date.fromordinal(start.toordinal() + days)
    period = parse_period(None, start, end)
    months = month_starts(period)
    assert months[0] == start.replace(day=1)
    assert months[-1] == end.replace(day=1)
    assert all(m.day == 1 for m in months) and months == sorted(set(months))


# --- disclosure control --------------------------------------------------------------------------


@given(counts)
def test_suppress_count_never_reveals_a_small_count(n: int) -> None:
    shown = suppress_count(n)
    if n < 5:
        assert shown == SUPPRESSED
    else:
        assert isinstance(shown, int)
        assert shown % 5 == 0 and shown >= 5
        assert abs(shown - n) <= 2


@pytest.mark.parametrize(
    ("n", "shown"), [(0, "*"), (4, "*"), (5, 5), (7, 5), (8, 10), (12, 10), (13, 15), (15, 15)]
)
def test_suppress_count_examples(n: int, shown: int | str) -> None:
    assert suppress_count(n) == shown


@given(counts, counts)
def test_suppress_percentage_stars_exactly_small_numbers(numerator: int, denominator: int) -> None:
    shown = suppress_percentage(numerator, denominator)
    if denominator == 0:
        assert shown is None
    elif numerator < 5 or denominator < 5:
        assert shown == SUPPRESSED
    else:
        assert isinstance(shown, int)
        assert abs(shown - 100 * numerator / denominator) <= 0.5


def test_percentages_round_half_up_not_to_even() -> None:
    assert suppress_percentage(5, 40) == 13  # 12.5
    assert suppress_percentage(5, 8) == 63  # 62.5 (banker's rounding would give 62)
    assert suppress_percentage(7, 8) == 88  # 87.5
    assert raw_percentage(1, 8) == 12.5
    assert raw_percentage(1, 16) == 6.3  # 6.25
    assert raw_percentage(1, 0) is None


def test_totals_come_from_raw_counts_not_rounded_cells() -> None:
    cells = [7, 7, 7]  # each shows as 5
    shown_cells = [suppress_count(n) for n in cells]
    assert shown_cells == [5, 5, 5]
    assert suppress_count(sum(cells)) == 20  # 21 rounds to 20, not 15
    assert sum(n for n in shown_cells if isinstance(n, int)) == 15


@given(st.lists(counts, min_size=1, max_size=5))
def test_publish_never_shows_a_count_under_five(values: list[int]) -> None:
    fields = tuple(f"c{i}" for i in range(len(values)))
    row = dict(zip(fields, values, strict=True))
    (out,), total = publish([row], row, Figures(fields, {}, {}), (), unsuppressed=False)
    for shown in (out, total):
        for field in fields:
            assert shown[field] == SUPPRESSED or shown[field] >= 5
        assert shown["suppressed"] == any(shown[f] == SUPPRESSED for f in fields)


def test_negative_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        suppress_count(-1)
    with pytest.raises(ValueError):
        suppress_percentage(-1, 10)


# --- statistics ----------------------------------------------------------------------------------


def test_median_small_cases() -> None:
    assert median([]) is None
    assert median([7]) == 7.0
    assert median([3, 1, 2]) == 2.0
    assert median([4, 1, 3, 2]) == 2.5


def test_percentile_nearest_rank() -> None:
    values = [15, 20, 35, 40, 50]
    assert percentile([], 90) is None
    assert percentile(values, 5) == 15.0
    assert percentile(values, 30) == 20.0
    assert percentile(values, 40) == 20.0
    assert percentile(values, 50) == 35.0
    assert percentile(values, 100) == 50.0
    assert percentile(values, 0) == 15.0
    assert percentile(list(range(1, 11)), 90) == 9.0
    with pytest.raises(ValueError):
        percentile(values, 101)


@given(st.lists(st.integers(0, 10_000), min_size=1), st.floats(0, 100))
def test_percentile_is_an_observed_value(values: list[int], p: float) -> None:
    result = percentile(values, p)
    assert result is not None and result in values
    assert sum(v <= result for v in values) >= Fraction(p) / 100 * len(values)


@given(
    st.dictionaries(st.integers(-50, 400), st.integers(0, 40), max_size=30),
    st.sampled_from([0, 1, 10, 50, 90, 99.5, 100]),
)
def test_statistics_of_counts_equal_those_of_the_values(counts: dict[int, int], p: float) -> None:
    # The four-week pull reads day histograms: same answers, same types, as the spread-out values.
    values = [value for value, n in counts.items() for _ in range(n)]
    for got, expected in (
        (median_of_counts(counts), median(values)),
        (percentile_of_counts(counts, p), percentile(values, p)),
    ):
        assert got == expected and type(got) is type(expected)


def test_statistics_of_counts_small_cases() -> None:
    assert median_of_counts({}) is None and median_of_counts({3: 0}) is None
    assert median_of_counts({1: 1, 4: 1}) == 2.5 and median_of_counts({2: 3, 9: 1}) == 2.0
    assert percentile_of_counts({}, 90) is None
    assert percentile_of_counts({1: 9, 30: 1}, 90) == 1.0 and percentile_of_counts({1: 9, 30: 1}, 91) == 30.0
    with pytest.raises(ValueError):
        percentile_of_counts({1: 1}, 101)


# --- grouping ------------------------------------------------------------------------------------


def test_parse_group_by() -> None:
    assert parse_group_by(None) == ()
    assert parse_group_by("  ") == ()
    assert parse_group_by("place") == ("place",)
    assert parse_group_by("team, age_band,ethnicity") == ("team", "age_band", "ethnicity")
    assert parse_group_by(",".join(GROUP_FIELDS)) == GROUP_FIELDS


@pytest.mark.parametrize("text", ["nhs_number", "place,place", "place,,team", "place,", "Place"])
def test_parse_group_by_errors(text: str) -> None:
    with pytest.raises(GroupByError):
        parse_group_by(text)


# --- crisis targets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("priority", "source", "minutes"),
    [
        (1, "gp", 60),
        (4, "gp", 240),
        (2, "police", 1440),
        (3, "self", None),
        (4, "ae", 60),
        (2, "ae", 60),
        (3, "ae", 60),
        (1, "ae", 60),
    ],
)
def test_crisis_targets(priority: int, source: str, minutes: int | None) -> None:
    assert crisis_target_minutes(priority, source) == minutes


def test_unknown_priority_is_refused() -> None:
    with pytest.raises(ValueError):
        crisis_target_minutes(5, "gp")
