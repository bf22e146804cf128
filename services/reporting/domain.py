"""Reporting rules, as pure functions (no I/O, no database, no clock: periods are passed in).

Everything the reporting service answers is computed from its own pseudonymised projections
(the design brief, the project handout's DESIGN.md, "Reporting"): people are keyed hashes, never names, NHS numbers or free text. Every
figure a caller without `reporting:unsuppressed` receives, ICB totals included (an ICB is below
national level), goes through the MHSDS disclosure control in `publish`; only that scope gets
raw figures.

The crisis targets are not here: triage and reporting both take them from `contracts/clocks.py`
(`crisis_target_minutes`, used by `aggregates`), because services do not import each other's code.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from fractions import Fraction
from typing import Any

from shared.problems import Refusal

# --- pseudonymisation --------------------------------------------------------------------------

PERSON_KEY_HEX = 32  # 128 bits: far beyond any collision risk at ICB population size


def person_key(person_id: str, key: bytes) -> str:
    """The pseudonym the projections store instead of the person id: HMAC-SHA256 of the id under
    a secret key, first 32 hex characters.

    The key comes from settings (never from code or the database) so a copy of the projections
    alone cannot be re-identified by hashing known ids. It is rotatable: rotation means
    rebuilding the projections from the events with the new key, after which old pseudonyms
    (and any extract holding them) no longer link to new ones.
    """
    if not key:
        # An empty key is a plain hash: anyone could recompute it from a known id.
        raise ValueError("the pseudonymisation key must not be empty")
    digest = hmac.new(key, person_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return digest[:PERSON_KEY_HEX]


PSEUDONYM_KINDS = ("referral", "episode", "handover")


def pseudonym(kind: str, source_id: str, key: bytes) -> str:
    """The pseudonym a bulk export gives a referral, episode or handover id: `person_key` under a
    key derived per kind (HMAC of the kind under the reporting key), so the same id string can
    never get the same pseudonym as a person or as another kind, and the person pseudonyms the
    projections already hold stay as they are. Stable for a key: extracts link across runs."""
    if kind not in PSEUDONYM_KINDS:
        raise ValueError(f"unknown pseudonym kind {kind!r}")
    if not key:
        raise ValueError("the pseudonymisation key must not be empty")
    derived = hmac.new(key, f"cmh.reporting.pseudonym/{kind}".encode(), hashlib.sha256).digest()
    return person_key(source_id, derived)


# --- categories --------------------------------------------------------------------------------

# Lower bound of each band (the last is open-ended). 0-17 is CAMHS, 65+ older adults, so the
# pathway boundaries fall on band boundaries.
_AGE_BANDS: tuple[tuple[int, str], ...] = (
    (75, "75+"),
    (65, "65-74"),
    (55, "55-64"),
    (45, "45-54"),
    (35, "35-44"),
    (26, "26-34"),
    (18, "18-25"),
    (0, "0-17"),
)
AGE_BANDS: tuple[str, ...] = tuple(label for _, label in reversed(_AGE_BANDS))


def age_band(age: int) -> str:
    """The reporting age band for an age in completed years (at referral)."""
    if age < 0:
        raise ValueError("an age cannot be negative")
    for lower, label in _AGE_BANDS:
        if age >= lower:
            return label
    raise AssertionError("unreachable: the last band starts at 0")


# The values triage records (`services/triage/schemas.py`), not-known first for missing data.
SEX_NOT_KNOWN = "not_known"
SEX_CATEGORIES: tuple[str, ...] = ("male", "female", "not_known", "not_specified")


def sex_category(sex: str | None) -> str:
    """The reporting sex category; missing or unrecognised values count as not known."""
    if sex is None:
        return SEX_NOT_KNOWN
    value = sex.strip().lower()
    return value if value in SEX_CATEGORIES else SEX_NOT_KNOWN


ETHNICITY_NOT_KNOWN = "Not known"
ETHNICITY_NOT_STATED = "Not stated"
_ETHNIC_GROUPS: dict[str, str] = {
    **dict.fromkeys("ABC", "White"),
    **dict.fromkeys("DEFG", "Mixed"),
    **dict.fromkeys("HJKL", "Asian or Asian British"),
    **dict.fromkeys("MNP", "Black or Black British"),
    **dict.fromkeys("RS", "Other ethnic group"),
    "Z": ETHNICITY_NOT_STATED,
}
ETHNICITY_GROUPS: tuple[str, ...] = (
    "White",
    "Mixed",
    "Asian or Asian British",
    "Black or Black British",
    "Other ethnic group",
    ETHNICITY_NOT_STATED,
    ETHNICITY_NOT_KNOWN,
)


def ethnicity_group(code: str | None) -> str:
    """The NHS ethnic category group for an ethnic category code.

    "Not stated" (Z: the person was asked and chose not to say) is kept apart from "Not known"
    (99, missing or unrecognised: nobody recorded it), as the data dictionary does. A two-letter
    local sub-code (e.g. "CA") is grouped by its first letter.
    """
    if code is None:
        return ETHNICITY_NOT_KNOWN
    value = code.strip().upper()
    if len(value) not in (1, 2) or not value.isalpha():
        return ETHNICITY_NOT_KNOWN  # includes "99"
    return _ETHNIC_GROUPS.get(value[0], ETHNICITY_NOT_KNOWN)


# --- periods -----------------------------------------------------------------------------------

MAX_PERIOD_YEARS = 5


class PeriodError(Refusal, ValueError):
    """A reporting period that cannot be used; the message says what to send instead (the one
    `Refusal`: 422 "Bad period", naming the `period` query parameter)."""

    def __init__(self, message: str) -> None:
        super().__init__(
            "reporting", "period", message, location=("query",), title="Bad period",
            type_slug="validation", error_type="value_error",
        )  # fmt: skip


@dataclass(frozen=True)
class Period:
    """Calendar dates, `start` inclusive and `end` exclusive (so months and quarters abut)."""

    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def __contains__(self, day: object) -> bool:
        return isinstance(day, date) and self.start <= day < self.end


_MONTH = re.compile(r"(\d{4})-(\d{2})")
_QUARTER = re.compile(r"(\d{4})-Q([1-4])")


def _add_years(day: date, years: int) -> date:
    # 29 February plus a non-leap number of years lands on 28 February.
    last = calendar.monthrange(day.year + years, day.month)[1]
    return day.replace(year=day.year + years, day=min(day.day, last))


def _next_month(day: date) -> date:
    return date(day.year + 1, 1, 1) if day.month == 12 else date(day.year, day.month + 1, 1)


def parse_period(period: str | None, from_: date | None, to: date | None) -> Period:
    """The period a report covers: `period` as a month ("2026-11") or calendar quarter
    ("2026-Q3", Q1 = January to March), or `from_` and `to` (both inclusive, as the API takes
    them). Exactly one of the two ways must be given; at most five years."""
    if period is not None and (from_ is not None or to is not None):
        raise PeriodError("give either period or from and to, not both")
    try:
        if period is not None:
            result = _named_period(period.strip())
        elif from_ is not None and to is not None:
            if from_ > to:
                raise PeriodError("from must not be after to")
            result = Period(from_, to + timedelta(days=1))
        elif from_ is not None or to is not None:
            raise PeriodError("from and to must be given together")
        else:
            raise PeriodError("give a period (e.g. 2026-11 or 2026-Q3) or from and to")
        if result.end > _add_years(result.start, MAX_PERIOD_YEARS):
            raise PeriodError(f"a period can be at most {MAX_PERIOD_YEARS} years long")
    except (OverflowError, ValueError) as exc:
        if isinstance(exc, PeriodError):
            raise
        # Dates at the ends of the calendar (year 9999 and the like).
        raise PeriodError("the period is outside the dates that can be reported") from exc
    return result


def _named_period(text: str) -> Period:
    if match := _MONTH.fullmatch(text):
        year, month = int(match[1]), int(match[2])
        if not 1 <= month <= 12:
            raise PeriodError(f"{text!r} is not a month: use YYYY-MM with a month from 01 to 12")
        start = date(year, month, 1)
        return Period(start, _next_month(start))
    if match := _QUARTER.fullmatch(text.upper()):
        year, quarter = int(match[1]), int(match[2])
        start = date(year, 3 * quarter - 2, 1)
        end = date(year + 1, 1, 1) if quarter == 4 else date(year, 3 * quarter + 1, 1)
        return Period(start, end)
    raise PeriodError(f"{text!r} is not a period: use a month (2026-11) or a quarter (2026-Q3)")


def month_starts(period: Period) -> list[date]:
    """The first day of every month the period touches, in order: the buckets of a time series
    (a period starting mid-month still gets that month's bucket)."""
    months: list[date] = []
    month = period.start.replace(day=1)
    while month < period.end:
        months.append(month)
        month = _next_month(month)
    return months


# --- disclosure control ------------------------------------------------------------------------

SUPPRESSED = "*"
# The rule as NHS England applies it to MHSDS publications below England level: counts under 5
# (0-4) are "*", others rounded to the nearest 5; a percentage is computed from unrounded counts,
# shown to the whole number, and "*" when its numerator or denominator is under 5. Source: NHS
# England's published pipeline, github.com/NHSDigital/mental-health-monthly-statistics,
# menh_analysis/notebooks/02_Aggregate/95.Round_output.py and menh_bbrb/notebooks/mhsds_functions.py
# (`count_suppression`, `mhsds_suppression`). (The 1-7 rule is HES's, not MHSDS's.)
SMALL_NUMBER = 5  # counts under this (including 0) are never shown without the unsuppressed scope
ROUND_TO = 5


def _round_half_up(value: Fraction, places: int = 0) -> Fraction:
    # Exact arithmetic: round() on floats is banker's rounding, and 12.5 must become 13.
    scale = Fraction(10) ** places
    return Fraction(math.floor(value * scale + Fraction(1, 2))) / scale


def suppress_count(n: int) -> int | str:
    """A count as published (MHSDS method): under 5, including 0, is "*"; anything
    else is rounded to the nearest 5 (a remainder of 3 or 4 rounds up, 1 or 2 down).

    Totals are computed from the unrounded counts and then published by this same rule, so a
    total need not equal the sum of its rounded cells (adding up rounded cells would compound the
    rounding error); `protect_column` keeps the total from giving a suppressed cell away."""
    if n < 0:
        raise ValueError("a count cannot be negative")
    if n < SMALL_NUMBER:
        return SUPPRESSED
    return (n + ROUND_TO // 2) // ROUND_TO * ROUND_TO


def _percentage(numerator: int, denominator: int, places: int) -> int | float:
    value = _round_half_up(Fraction(100 * numerator, denominator), places)
    return int(value) if places == 0 else float(value)


def suppress_percentage(numerator: int, denominator: int) -> int | str | None:
    """A percentage as published: None when there is nothing to divide by, "*" when
    the numerator or denominator is under 5, otherwise a whole number rounded half up. It is
    always computed from the raw counts, never from the rounded ones."""
    if numerator < 0 or denominator < 0:
        raise ValueError("a count cannot be negative")
    if denominator == 0:
        return None
    if numerator < SMALL_NUMBER or denominator < SMALL_NUMBER:
        return SUPPRESSED
    return int(_percentage(numerator, denominator, 0))  # whole at 0 places


def raw_percentage(numerator: int, denominator: int) -> float | None:
    """An unsuppressed percentage (the unsuppressed scope): one decimal place."""
    if numerator < 0 or denominator < 0:
        raise ValueError("a count cannot be negative")
    if denominator == 0:
        return None
    return float(_percentage(numerator, denominator, 1))


# One home for what a caller without `reporting:unsuppressed` receives: every output path (JSON,
# CSV and its "ICB total" row, the dashboard) passes its whole table through `publish`.
DISCLOSURE_METHOD = (
    "MHSDS small-number rule below national level (rows and ICB total alike): counts under 5 shown"
    " as *, others rounded to the nearest 5; where a suppressed cell could be recovered exactly by"
    " subtracting rows from the total, the next-smallest cell in that column is also *, and a total"
    " whose rows are all * is *; percentages from unrounded counts, whole numbers, * when numerator"
    " or denominator is *; medians and percentiles * when the count they describe is *"
)


@dataclass(frozen=True)
class Figures:
    """Which fields of a measure's rows are counts, which percentages (name -> (numerator,
    denominator) count fields) and which statistics (name -> the count it was computed over)."""

    counts: tuple[str, ...]
    percentages: Mapping[str, tuple[str, str]]
    statistics: Mapping[str, str]


def _shown_interval(shown: int | str) -> tuple[int, int]:
    """The raw values a published count allows: "*" is 0-4, 5 is 5-7, 10 is 8-12 and so on."""
    if shown == SUPPRESSED:
        return 0, SMALL_NUMBER - 1
    assert isinstance(shown, int)
    return max(SMALL_NUMBER, shown - ROUND_TO // 2), shown + (ROUND_TO - 1) // 2


def _pinned(shown_rows: list[int | str], shown_total: int | str) -> bool:
    """Whether differencing pins a suppressed row to one value: for each "*" row, the total's
    interval minus the other rows' intervals, intersected with 0-4."""
    if shown_total == SUPPRESSED:
        return False
    total_lo, total_hi = _shown_interval(shown_total)
    intervals = [_shown_interval(s) for s in shown_rows]
    sum_lo, sum_hi = sum(lo for lo, _ in intervals), sum(hi for _, hi in intervals)
    for index, shown in enumerate(shown_rows):
        if shown != SUPPRESSED:
            continue
        lo, hi = intervals[index]
        low = max(lo, total_lo - (sum_hi - hi))
        high = min(hi, total_hi - (sum_lo - lo))
        if low >= high:
            return True
    return False


def protect_column(raw_rows: list[int], raw_total: int) -> tuple[list[int | str], int | str]:
    """One count column as published: each row and the total by `suppress_count`, plus secondary
    suppression so that no suppressed row can be recovered exactly from the total.

    Rounding alone does not prevent it (rows 12, 12, 4 with total 28 show 10, 10, *, 30: the * can
    only be 4), so when differencing pins a "*" row, the next-smallest shown row (and any tied with
    it) is suppressed too: the rule depends on the rows' values, not their order, so swapping the
    small and the secondary value publishes the same table and the adversary cannot tell which "*"
    is the small one. When every row is
    "*" there is nothing to hide it behind, so the total is "*" (rows 4, 4 and a total shown as 10
    would pin both); that trigger is visible in the table, so it discloses nothing itself. Columns
    whose rows do not add up to the total (a repeated ICB-wide figure) are only rounded.
    """
    rows: list[int | str] = [suppress_count(n) for n in raw_rows]
    total = suppress_count(raw_total)
    if sum(raw_rows) != raw_total or SUPPRESSED not in rows:
        return rows, total
    if len(rows) > 1 and all(shown == SUPPRESSED for shown in rows):
        return rows, SUPPRESSED
    if _pinned(rows, total):
        shown_at = [i for i, shown in enumerate(rows) if shown != SUPPRESSED]
        smallest = min(raw_rows[i] for i in shown_at)
        for index in shown_at:
            # Every row tied at the smallest: a tie-break by position would tell the adversary
            # which "*" is the secondary one (rows 12, 12, 4 would give the 4 away).
            if raw_rows[index] == smallest:
                rows[index] = SUPPRESSED
        if all(shown == SUPPRESSED for shown in rows):
            total = SUPPRESSED
    return rows, total


def publish(
    rows: list[dict[str, Any]],
    total: dict[str, Any],
    figures: Figures,
    group_fields: Iterable[str],
    *,
    unsuppressed: bool,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A measure's table (grouped rows and the ICB total) as the caller receives it.

    Every field must be a group field or a declared count or statistic (a new measure field that
    is neither is refused, so nothing can leave undisclosed); percentages are computed here from
    the raw counts. With `unsuppressed` (the `reporting:unsuppressed` scope) the figures are raw
    and percentages have one decimal place. `"suppressed"` on each row says whether any of its
    figures is "*" (not whether rounding moved one: that would say which counts are exact)."""
    groups = set(group_fields)
    declared = groups | set(figures.counts) | set(figures.statistics)
    for numerator, denominator in figures.percentages.values():
        for field in (numerator, denominator):
            if field not in figures.counts:
                raise ValueError(f"percentage field {field!r} is not among the count fields")
    table = [*rows, total]
    for row in table:
        undeclared = set(row) - declared
        if undeclared:
            raise ValueError(
                f"undeclared fields would leave without disclosure control: {sorted(undeclared)}"
            )
    out = [{**row} for row in table]
    if unsuppressed:
        for source, row in zip(table, out, strict=True):
            for name, (numerator, denominator) in figures.percentages.items():
                num, den = source.get(numerator), source.get(denominator)
                row[name] = None if num is None or den is None else raw_percentage(num, den)
            row["suppressed"] = False
        return out[:-1], out[-1]
    for field in figures.counts:
        values = [row.get(field) for row in table]
        if any(value is None for value in values):
            for row, value in zip(out, values, strict=True):
                row[field] = None if value is None else suppress_count(value)
            continue
        # No None left (checked above): the column is whole counts.
        counts = [int(value) for value in values if value is not None]
        shown_rows, shown_total = protect_column(counts[:-1], counts[-1])
        for row, shown in zip(out, [*shown_rows, shown_total], strict=True):
            row[field] = shown
    for source, row in zip(table, out, strict=True):
        for name, (numerator, denominator) in figures.percentages.items():
            num, den = source.get(numerator), source.get(denominator)
            if num is None or den is None:
                row[name] = None
            elif SUPPRESSED in (row[numerator], row[denominator]):
                row[name] = SUPPRESSED  # checked before a zero denominator, which would say it is 0
            else:
                row[name] = suppress_percentage(num, den)
        for name, count_field in figures.statistics.items():
            if name in row and (count_field not in row or row[count_field] in (SUPPRESSED, None)):
                row[name] = SUPPRESSED  # a median of one or two waits discloses those waits
        row["suppressed"] = any(value == SUPPRESSED for value in row.values())
    return out[:-1], out[-1]


# --- statistics --------------------------------------------------------------------------------


def median(values: Iterable[float]) -> float | None:
    """The median (the mean of the middle two for an even count); None for no values."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return None
    middle = n // 2
    if n % 2:
        return float(ordered[middle])
    return (ordered[middle - 1] + ordered[middle]) / 2


def percentile(values: Iterable[float], p: float) -> float | None:
    """The p-th percentile by the nearest-rank method: the smallest value with at least p% of the
    values at or below it (rank ceil(p/100 * n), at least 1). Always one of the observed values,
    never an interpolation, so a "90th percentile wait" is a wait someone actually had."""
    if not 0 <= p <= 100:
        raise ValueError("a percentile is between 0 and 100")
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(Fraction(p) * len(ordered) / 100))
    return float(ordered[rank - 1])


def _nth_counted(counts: Mapping[int, int], index: int) -> int:
    """The value at `index` (0-based) of the sorted values that `counts` (value -> how many) holds."""
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if index < seen:
            return value
    raise IndexError(index)


def median_of_counts(counts: Mapping[int, int]) -> float | None:
    """`median` of the values a histogram (value -> how many) holds, without spreading them out:
    a pull's day counts are a few distinct values over up to millions of clocks."""
    n = sum(counts.values())
    if n == 0:
        return None
    middle = n // 2
    if n % 2:
        return float(_nth_counted(counts, middle))
    return (_nth_counted(counts, middle - 1) + _nth_counted(counts, middle)) / 2


def percentile_of_counts(counts: Mapping[int, int], p: float) -> float | None:
    """`percentile` (nearest rank) of the values a histogram (value -> how many) holds."""
    if not 0 <= p <= 100:
        raise ValueError("a percentile is between 0 and 100")
    n = sum(counts.values())
    if n == 0:
        return None
    return float(_nth_counted(counts, max(1, math.ceil(Fraction(p) * n / 100)) - 1))


# --- grouping ----------------------------------------------------------------------------------

GROUP_FIELDS: tuple[str, ...] = (
    "place",
    "network",
    "team",
    "pathway",
    "age_band",
    "sex",
    "ethnicity",
    "source",
    "priority",
)


class GroupByError(Refusal, ValueError):
    """A `group_by` the reports cannot answer; the message names the allowed fields (the one
    `Refusal`: 422 "Bad group_by", naming the `group_by` query parameter)."""

    def __init__(self, message: str) -> None:
        super().__init__(
            "reporting", "group_by", message, location=("query",), title="Bad group_by",
            type_slug="validation", error_type="value_error",
        )  # fmt: skip


def parse_group_by(text: str | None) -> tuple[str, ...]:
    """The fields to group by, in the order given: comma separated, each once, each one of
    `GROUP_FIELDS`. Nothing (None or blank) means one row for the whole period."""
    if text is None or not text.strip():
        return ()
    fields: list[str] = []
    for part in text.split(","):
        field = part.strip()
        if field not in GROUP_FIELDS:
            shown = repr(field) if field else "an empty name"
            raise GroupByError(f"cannot group by {shown}: use any of {', '.join(GROUP_FIELDS)}")
        if field in fields:
            raise GroupByError(f"{field!r} is given twice in group_by")
        fields.append(field)
    return tuple(fields)
