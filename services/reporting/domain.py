"""Reporting rules, as pure functions (no I/O, no database, no clock: periods are passed in).

Everything the reporting service answers is computed from its own pseudonymised projections
(DESIGN.md "Reporting"): people are keyed hashes, never names, NHS numbers or free text. Below
ICB level every figure goes through the MHSDS disclosure control in `disclose`; unsuppressed
figures (ICB level, or a client holding the unsuppressed scope) are returned raw.

The crisis targets repeat triage's (DESIGN.md "Clinical response priority") because services do
not import each other's code: the reporting service reads events, not the triage package.
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


class PeriodError(ValueError):
    """A reporting period that cannot be used; the message says what to send instead."""


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
SMALL_NUMBER = 5  # counts under this (including 0) are never shown below ICB level
ROUND_TO = 5


def _round_half_up(value: Fraction, places: int = 0) -> Fraction:
    # Exact arithmetic: round() on floats is banker's rounding, and 12.5 must become 13.
    scale = Fraction(10) ** places
    return Fraction(math.floor(value * scale + Fraction(1, 2))) / scale


def suppress_count(n: int) -> int | str:
    """A count as shown below ICB level (MHSDS method): under 5, including 0, is "*"; anything
    else is rounded to the nearest 5 (a remainder of 3 or 4 rounds up, 1 or 2 down).

    Totals are computed from the unrounded counts: the caller sums the raw counts and applies this
    to the total, so a total need not equal the sum of its rounded cells (that is intended: adding
    up rounded cells would compound the rounding error)."""
    if n < 0:
        raise ValueError("a count cannot be negative")
    if n < SMALL_NUMBER:
        return SUPPRESSED
    return (n + ROUND_TO // 2) // ROUND_TO * ROUND_TO


def _percentage(numerator: int, denominator: int, places: int) -> int | float:
    value = _round_half_up(Fraction(100 * numerator, denominator), places)
    return int(value) if places == 0 else float(value)


def suppress_percentage(numerator: int, denominator: int) -> int | str | None:
    """A percentage as shown below ICB level: None when there is nothing to divide by, "*" when
    the numerator or denominator is under 5, otherwise a whole number rounded half up. It is
    always computed from the raw counts, never from the rounded ones."""
    if numerator < 0 or denominator < 0:
        raise ValueError("a count cannot be negative")
    if denominator == 0:
        return None
    if numerator < SMALL_NUMBER or denominator < SMALL_NUMBER:
        return SUPPRESSED
    return _percentage(numerator, denominator, 0)


def raw_percentage(numerator: int, denominator: int) -> float | None:
    """An unsuppressed percentage (ICB level or the unsuppressed scope): one decimal place."""
    if numerator < 0 or denominator < 0:
        raise ValueError("a count cannot be negative")
    if denominator == 0:
        return None
    return float(_percentage(numerator, denominator, 1))


def disclose(
    row: Mapping[str, Any],
    count_fields: Iterable[str],
    percentage_pairs: Mapping[str, tuple[str, str]],
    *,
    unsuppressed: bool,
    icb_level: bool,
    statistic_fields: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One output row: counts suppressed and rounded, each percentage (named by the key of
    `percentage_pairs`, from its (numerator, denominator) fields) computed from the RAW counts
    then suppressed, and `"suppressed"` saying whether anything shown differs from the raw
    figures. Other fields (group keys and the like) pass through.

    `statistic_fields` maps a statistic (a median or percentile of days or minutes) to the count
    it was computed over: below ICB level a statistic over fewer than 5 people is "*", since a
    median of one or two waits discloses those waits.

    With `unsuppressed` or `icb_level`, counts and statistics are returned raw and percentages
    are rounded to one decimal place."""
    counts = tuple(count_fields)
    statistics = dict(statistic_fields or {})
    raw = unsuppressed or icb_level
    out: dict[str, Any] = dict(row)
    changed = False
    if not raw:
        for numerator, denominator in percentage_pairs.values():
            for field in (numerator, denominator):
                if field in row and field not in counts:
                    # It would be shown raw beside its suppressed percentage.
                    raise ValueError(f"{field!r} is in the row but not among the count fields")
    for name, (numerator, denominator) in percentage_pairs.items():
        num, den = row.get(numerator), row.get(denominator)
        if num is None or den is None:
            out[name] = None
        elif raw:
            out[name] = raw_percentage(num, den)
        else:
            out[name] = suppress_percentage(num, den)
            changed = changed or out[name] == SUPPRESSED
    if not raw:
        for name, count_field in statistics.items():
            n = row.get(count_field)
            if out.get(name) is not None and (n is None or n < SMALL_NUMBER):
                out[name] = SUPPRESSED
                changed = True
        for field in counts:
            value = row[field]
            if value is None:
                continue
            out[field] = suppress_count(value)
            changed = changed or out[field] != value
    out["suppressed"] = changed
    return out


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


class GroupByError(ValueError):
    """A `group_by` the reports cannot answer; the message names the allowed fields."""


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
