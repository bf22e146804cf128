"""The directory's rules, as pure functions (no I/O): opening schedules, distance from a postcode
centroid, the UK profile's age and time filters, and the moderation and handover state machines."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import time
from enum import StrEnum

from shared.problems import Refusal

# RFC 5545 BYDAY codes, as HSDS schedules carry them; Monday first, like Python's weekday().
DAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
DAY_NAMES = {
    "monday": "MO", "tuesday": "TU", "wednesday": "WE", "thursday": "TH", "friday": "FR",
    "saturday": "SA", "sunday": "SU",
}  # fmt: skip
EARTH_RADIUS_M = 6_371_008.8  # mean radius (IUGG)
METRES_PER_DEGREE = math.pi * EARTH_RADIUS_M / 180


class ScheduleError(ValueError):
    pass


def parse_byday(byday: str | None) -> list[str]:
    """'MO,tu, WE' → ['MO', 'TU', 'WE']; an empty or absent BYDAY means every day of the week.
    Ordinal prefixes ('1MO': first Monday of a month) name the weekday they count."""
    if not byday or not byday.strip():
        return list(DAYS)
    days: list[str] = []
    for part in byday.split(","):
        code = part.strip().upper().lstrip("+-0123456789")
        if code not in DAYS:
            raise ScheduleError(f"{part.strip()!r} is not a day (use MO, TU, WE, TH, FR, SA, SU)")
        if code not in days:
            days.append(code)
    return sorted(days, key=DAYS.index)


def parse_day(value: str) -> str:
    """A `day` filter: 'MO' or 'monday' (any case) → 'MO'."""
    text = value.strip()
    code = DAY_NAMES.get(text.lower(), text.upper())
    if code not in DAYS:
        raise ScheduleError(f"{value!r} is not a day")
    return code


@dataclass(frozen=True)
class Slot:
    """One weekly opening: a day and local wall-clock times, `opens` < `closes`."""

    day: str
    opens: time
    closes: time

    @property
    def opens_minute(self) -> int:
        return self.opens.hour * 60 + self.opens.minute

    @property
    def closes_minute(self) -> int:
        return self.closes.hour * 60 + self.closes.minute


def weekly_slots(byday: str | None, opens_at: time | None, closes_at: time | None) -> list[Slot]:
    """The slots of one schedule. Times are both given or both absent (a day-only schedule is
    open all day); a closing time at or before the opening time is refused: HSDS schedules do
    not run past midnight, so such a schedule is almost always a typing error."""
    if (opens_at is None) != (closes_at is None):
        raise ScheduleError("give both opens_at and closes_at, or neither")
    opens = opens_at or time(0, 0)
    closes = closes_at or time(23, 59)
    if closes <= opens:
        raise ScheduleError(f"closes_at {closes:%H:%M} is not after opens_at {opens:%H:%M}")
    return [Slot(day, opens, closes) for day in parse_byday(byday)]


def minute_of_day(moment: time) -> int:
    """A wall-clock time to the minute, as slots are kept (seconds dropped)."""
    return moment.hour * 60 + moment.minute


def slot_matches(slot: Slot, *, day: str | None, start: time | None, end: time | None) -> bool:
    """The UK profile's filters on one slot: `day` equal, `start_time` ≤ opening, `end_time` ≥
    closing, to the minute. The SQL in `queries` answers them; this is its oracle (a property
    test holds the two to the same answers)."""
    return (
        (day is None or slot.day == day)
        and (start is None or slot.opens_minute >= minute_of_day(start))
        and (end is None or slot.closes_minute <= minute_of_day(end))
    )


def age_matches(
    minimum_age: int | None, maximum_age: int | None, *, at_least: float | None, at_most: float | None
) -> bool:
    """The UK profile's age filters: `minimum_age` → the service's minimum age is at least the value
    (no minimum counts as 0); `maximum_age` → the service's maximum age is at or below the value
    (no maximum never matches). The SQL in `queries` answers them; this is its oracle."""
    if at_least is not None and (minimum_age or 0) < at_least:
        return False
    return not (at_most is not None and (maximum_age is None or maximum_age > at_most))


def check_coordinates(latitude: float | None, longitude: float | None) -> None:
    if (latitude is None) != (longitude is None):
        raise ValueError("give both latitude and longitude, or neither")
    if latitude is not None and not -90 <= latitude <= 90:
        raise ValueError("latitude must be between -90 and 90")
    if longitude is not None and not -180 <= longitude <= 180:
        raise ValueError("longitude must be between -180 and 180")


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine)."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlambda = phi2 - phi1, math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True)
class PlanarFrame:
    """An equirectangular frame around a centre: squared 'degree distance' that SQL can compute
    with arithmetic alone (SQLite has no trigonometry) and that orders points as the true distance
    does within the few tens of kilometres a directory search spans."""

    latitude: float
    longitude: float

    @property
    def longitude_scale(self) -> float:
        return math.cos(math.radians(self.latitude))

    def squared(self, latitude: float, longitude: float) -> float:
        dx = (longitude - self.longitude) * self.longitude_scale
        dy = latitude - self.latitude
        return dx * dx + dy * dy

    def radius_squared(self, metres: float) -> float:
        return (metres / METRES_PER_DEGREE) ** 2

    def metres(self, latitude: float, longitude: float) -> float:
        """The distance this frame measures (what `proximity` filters and orders by): within 0.5%
        of the great-circle distance over the tens of kilometres a directory search spans."""
        return math.sqrt(self.squared(latitude, longitude)) * METRES_PER_DEGREE


# --- moderation ----------------------------------------------------------------------------------


class EditState(StrEnum):
    DRAFT = "draft"
    PENDING_REVIEW = "pending_review"
    PUBLISHED = "published"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"


class EditAction(StrEnum):
    SUBMIT = "submit"
    APPROVE = "approve"
    REJECT = "reject"
    WITHDRAW = "withdraw"


# Who may move an edit from which state: (action) → (from states, to state, needs moderator).
EDIT_TRANSITIONS: dict[EditAction, tuple[frozenset[EditState], EditState, bool]] = {
    EditAction.SUBMIT: (frozenset({EditState.DRAFT, EditState.REJECTED}), EditState.PENDING_REVIEW, False),
    EditAction.APPROVE: (frozenset({EditState.PENDING_REVIEW}), EditState.PUBLISHED, True),
    EditAction.REJECT: (frozenset({EditState.PENDING_REVIEW}), EditState.REJECTED, True),
    EditAction.WITHDRAW: (frozenset({EditState.DRAFT, EditState.PENDING_REVIEW, EditState.REJECTED}), EditState.WITHDRAWN, False),
}  # fmt: skip


class TransitionRefused(Refusal, ValueError):
    """A step the edit's or handover's state does not allow (the one `Refusal`: 409 "Not allowed
    in this state", type invalid-transition)."""

    def __init__(self, message: str) -> None:
        super().__init__("directory", None, message, status=409)


def next_edit_state(state: EditState, action: EditAction, *, moderator: bool) -> EditState:
    allowed_from, target, needs_moderator = EDIT_TRANSITIONS[action]
    if needs_moderator and not moderator:
        raise TransitionRefused(f"only a moderator may {action.value} an edit")
    if state not in allowed_from:
        raise TransitionRefused(f"an edit that is {state.value.replace('_', ' ')} cannot be {action.value}ed")
    return target


# --- warm handovers ------------------------------------------------------------------------------


class HandoverState(StrEnum):
    OFFERED = "offered"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    COMPLETED = "completed"


class HandoverAction(StrEnum):
    ACCEPT = "accept"
    DECLINE = "decline"
    COMPLETE = "complete"


HANDOVER_TRANSITIONS: dict[HandoverAction, tuple[frozenset[HandoverState], HandoverState]] = {
    HandoverAction.ACCEPT: (frozenset({HandoverState.OFFERED}), HandoverState.ACCEPTED),
    HandoverAction.DECLINE: (
        frozenset({HandoverState.OFFERED, HandoverState.ACCEPTED}),
        HandoverState.DECLINED,
    ),
    HandoverAction.COMPLETE: (frozenset({HandoverState.ACCEPTED}), HandoverState.COMPLETED),
}


def next_handover_state(state: HandoverState, action: HandoverAction, *, reason: str | None) -> HandoverState:
    allowed_from, target = HANDOVER_TRANSITIONS[action]
    if state not in allowed_from:
        raise TransitionRefused(f"a handover that is {state.value} cannot be {action.value}ed")
    if action is HandoverAction.DECLINE and not (reason and reason.strip()):
        raise TransitionRefused("a decline needs a reason, so triage can offer something else")
    return target


def search_terms(text: str) -> list[str]:
    """Words of a free-text search, lower-cased, without punctuation (safe for FTS5 and tsquery)."""
    words: list[str] = []
    current: list[str] = []
    for char in text.lower():
        if char.isalnum():
            current.append(char)
        elif current:
            words.append("".join(current))
            current = []
    if current:
        words.append("".join(current))
    return words[:12]


def identifier_scheme(identifier: str) -> str:
    """The org-id.guide scheme of a partner's registered number (how clients name their
    organisation): SC + 6 digits, Scottish charity; NIC + 6, Northern Irish charity; 8 digits or
    two letters + 6 digits, Companies House; 6 or 7 digits, Charity Commission for England and Wales."""
    value = identifier.strip().upper()
    if value.startswith("SC") and value[2:].isdigit() and len(value) == 8:
        return "GB-SC"
    if value.startswith("NIC") and value[3:].isdigit():
        return "GB-NIC"
    if value.isdigit() and len(value) in (6, 7):
        return "GB-CHC"
    return "GB-COH"
