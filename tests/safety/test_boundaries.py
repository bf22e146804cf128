"""Boundaries the hazard log names whose edges had no test of their own: the pathway on the 18th
and 65th birthdays (29 February included, and the London date a referral arrives on), the crisis
team's opening and closing minute on the days the clocks change, the plan clock's day 21 / 28 / 29
across the clock changes, and the crisis queue's deadlines against the urgency order.

Pure functions only (services/triage/domain/, contracts/coverage.py, contracts/clocks.py), over the
seeded Lancashire and South Cumbria reference data."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from contracts.clocks import ClockEvent, ClockState, EpisodeFacts, due_clock_events, plan_clock
from contracts.coverage import (
    Hours,
    Interval,
    PathwayBand,
    Snapshot,
    hours_of,
    open_at,
    pathway_for_age,
    snapshot_from,
)
from contracts.timezones import LONDON, london_date
from services.registry.schemas import ATTRIBUTES
from services.registry.seed import HOURS, REFERENCE, desired_records
from services.triage.domain import (
    URGENCY_ORDER,
    Priority,
    ReferralFacts,
    Risk,
    Route,
    Source,
    age_on,
    deadline,
    more_urgent,
    screen,
)

REFERENCE_DATA = json.loads(REFERENCE.read_text())
PATHWAYS = [
    PathwayBand(p["key"], p["name"], p["age_min"], p["age_max"])
    for p in REFERENCE_DATA["mental_health_provider"]["clinical_pathways"]
]


def seeded_snapshot() -> Snapshot:
    records: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for record in desired_records(REFERENCE_DATA):
        attributes = ATTRIBUTES[record.kind].model_validate(record.attributes).model_dump(mode="json")
        records.setdefault(record.kind.value, []).append((record.id, attributes))
    return snapshot_from(records)


SNAPSHOT = seeded_snapshot()


# --- pathway by age at the 17/18 and 64/65 boundaries ----------------------------------------------


def birthday(birth: date, years: int) -> date:
    """The day someone turns `years`: 29 February becomes 1 March in a common year."""
    try:
        return birth.replace(year=birth.year + years)
    except ValueError:
        return date(birth.year + years, 3, 1)


def pathway_on(birth: date, day: date) -> str | None:
    chosen, _alongside = pathway_for_age(PATHWAYS, age_on(birth, day))
    return None if chosen is None else chosen.key


@pytest.mark.parametrize(
    ("birth", "day", "pathway"),
    [
        # The day before the 18th birthday is CAMHS; the birthday itself is the adult pathway.
        (date(2008, 11, 25), date(2026, 11, 24), "camhs"),
        (date(2008, 11, 25), date(2026, 11, 25), "adult-mh"),
        # The day before the 65th birthday is adult; the birthday itself is older adults.
        (date(1961, 11, 25), date(2026, 11, 24), "adult-mh"),
        (date(1961, 11, 25), date(2026, 11, 25), "older-adult-mh"),
        # Born 29 February: 18 on 1 March of a common year, not on 28 February.
        (date(2008, 2, 29), date(2026, 2, 28), "camhs"),
        (date(2008, 2, 29), date(2026, 3, 1), "adult-mh"),
        # Born 29 February 1960: 64 on 29 February 2024 (a leap year), 65 on 1 March 2025.
        (date(1960, 2, 29), date(2024, 2, 28), "adult-mh"),
        (date(1960, 2, 29), date(2024, 2, 29), "adult-mh"),
        (date(1960, 2, 29), date(2025, 2, 28), "adult-mh"),
        (date(1960, 2, 29), date(2025, 3, 1), "older-adult-mh"),
        # 18 and 65 are not multiples of 4: a 29 February birthday always falls in a common year.
        (date(2012, 2, 29), date(2030, 2, 28), "camhs"),
        (date(2012, 2, 29), date(2030, 3, 1), "adult-mh"),
    ],
)
def test_the_pathway_at_the_18th_and_65th_birthdays(birth: date, day: date, pathway: str) -> None:
    assert pathway_on(birth, day) == pathway


@given(
    st.dates(min_value=date(1900, 1, 1), max_value=date(2030, 12, 31)),
    st.dates(min_value=date(1990, 1, 1), max_value=date(2040, 12, 31)),
)
def test_the_pathway_changes_exactly_on_the_18th_and_65th_birthdays(birth: date, day: date) -> None:
    assume(day >= birth)
    expected = (
        "camhs"
        if day < birthday(birth, 18)
        else "adult-mh"
        if day < birthday(birth, 65)
        else "older-adult-mh"
    )
    assert pathway_on(birth, day) == expected


@pytest.mark.parametrize(
    ("birth", "received_at", "pathway"),
    [
        # 23:00 UTC on 31 July 2026 is 00:00 BST on 1 August: the 18th birthday, in London.
        (date(2008, 8, 1), datetime(2026, 7, 31, 22, 59, 59, tzinfo=UTC), "camhs"),
        (date(2008, 8, 1), datetime(2026, 7, 31, 23, 0, tzinfo=UTC), "adult-mh"),
        # In winter London is on UTC: the birthday starts at 00:00Z.
        (date(2008, 2, 1), datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC), "camhs"),
        (date(2008, 2, 1), datetime(2026, 2, 1, 0, 0, tzinfo=UTC), "adult-mh"),
        # The 65th birthday the same way, in summer.
        (date(1961, 8, 1), datetime(2026, 7, 31, 22, 59, 59, tzinfo=UTC), "adult-mh"),
        (date(1961, 8, 1), datetime(2026, 7, 31, 23, 0, tzinfo=UTC), "older-adult-mh"),
    ],
)
def test_the_age_at_referral_is_taken_on_the_london_date_it_arrives(
    birth: date, received_at: datetime, pathway: str
) -> None:
    # services/triage/store.py:submit takes the age as age_on(birth date, London date received).
    assert pathway_on(birth, london_date(received_at)) == pathway


# --- crisis service hours at their edges, across the clock changes ---------------------------------

CRISIS_HOURS = hours_of(HOURS["crisis_response"])


def test_the_seeded_crisis_team_is_open_08_00_to_22_00_every_day() -> None:
    assert hours_of(HOURS["crisis_response"]) == Hours(
        weekly={
            day: (Interval(time(8), time(22)),) for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
        }
    )


SECOND = timedelta(seconds=1)
SPRING = datetime(2026, 3, 29, tzinfo=UTC)  # Sunday: clocks go forward at 01:00Z (BST from then)
AUTUMN = datetime(2026, 10, 25, tzinfo=UTC)  # Sunday: clocks go back at 01:00Z (GMT from then)


@pytest.mark.parametrize(
    ("at", "is_open"),
    [
        # The evening before the clocks go forward (GMT): 22:00 local is 22:00Z.
        (SPRING - timedelta(hours=2) - SECOND, True),
        (SPRING - timedelta(hours=2), False),
        # The day they go forward (BST from 01:00Z): opens 08:00 BST = 07:00Z, closes 22:00 BST = 21:00Z.
        (SPRING + timedelta(hours=7) - SECOND, False),
        (SPRING + timedelta(hours=7), True),
        (SPRING + timedelta(hours=21) - SECOND, True),
        (SPRING + timedelta(hours=21), False),
        # The day before the clocks go back (BST): opens 07:00Z, closes 21:00Z.
        (AUTUMN - timedelta(hours=17) - SECOND, False),
        (AUTUMN - timedelta(hours=17), True),
        (AUTUMN - timedelta(hours=3) - SECOND, True),
        (AUTUMN - timedelta(hours=3), False),
        # The day they go back (GMT from 01:00Z): opens 08:00Z, closes 22:00Z.
        (AUTUMN + timedelta(hours=8) - SECOND, False),
        (AUTUMN + timedelta(hours=8), True),
        (AUTUMN + timedelta(hours=22) - SECOND, True),
        (AUTUMN + timedelta(hours=22), False),
        # The hour that happens twice (01:00-02:00 local) is closed both times.
        (AUTUMN + timedelta(minutes=30), False),
        (AUTUMN + timedelta(minutes=90), False),
        # The last microsecond before closing is still open.
        (AUTUMN + timedelta(hours=22) - timedelta(microseconds=1), True),
    ],
)
def test_crisis_hours_at_the_edge_minutes_on_the_days_the_clocks_change(at: datetime, is_open: bool) -> None:
    opened, reason = open_at(CRISIS_HOURS, at)
    assert opened is is_open, reason


@given(st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)))
def test_crisis_hours_are_london_wall_clock_hours(at: datetime) -> None:
    local = at.astimezone(LONDON).time()
    assert open_at(CRISIS_HOURS, at)[0] is (time(8) <= local < time(22))


OVERNIGHT = Hours(weekly={"sat": (Interval(time(20), time(8)),)})


@pytest.mark.parametrize(
    ("at", "is_open"),
    [
        # Saturday 20:00 to Sunday 08:00, the nights the clocks change: 08:00 BST = 07:00Z ...
        (SPRING + timedelta(hours=7) - SECOND, True),
        (SPRING + timedelta(hours=7), False),
        # ... and 08:00 GMT = 08:00Z.
        (AUTUMN + timedelta(hours=8) - SECOND, True),
        (AUTUMN + timedelta(hours=8), False),
        (AUTUMN - timedelta(hours=3), True),  # Saturday 22:00 BST
    ],
)
def test_overnight_hours_end_on_the_london_clock_the_night_it_changes(at: datetime, is_open: bool) -> None:
    assert open_at(OVERNIGHT, at)[0] is is_open


def crisis_referral(postcode: str = "FY1 4AB") -> ReferralFacts:
    return ReferralFacts(
        age=30,
        source=Source.GP,
        risks=frozenset({Risk.SUICIDAL_INTENT}),
        needs=frozenset(),
        requested=None,
        consent_to_share=True,
        postcode=postcode,
    )


@pytest.mark.parametrize(
    ("at", "route"),
    [
        (SPRING + timedelta(hours=7) - SECOND, Route.CRISIS_LINE),
        (SPRING + timedelta(hours=7), Route.CRISIS_RESPONSE),
        (SPRING + timedelta(hours=21) - SECOND, Route.CRISIS_RESPONSE),
        (SPRING + timedelta(hours=21), Route.CRISIS_LINE),
        (AUTUMN + timedelta(hours=8) - SECOND, Route.CRISIS_LINE),
        (AUTUMN + timedelta(hours=8), Route.CRISIS_RESPONSE),
        (AUTUMN + timedelta(hours=22) - SECOND, Route.CRISIS_RESPONSE),
        (AUTUMN + timedelta(hours=22), Route.CRISIS_LINE),
    ],
)
def test_a_crisis_is_routed_to_an_open_service_at_the_edges_on_clock_change_days(
    at: datetime, route: Route
) -> None:
    got = screen(crisis_referral(), SNAPSHOT, [], None, at)
    assert got.route == route
    assert got.team is not None and got.team["open"] is True  # never a closed team for a crisis
    assert got.team["key"] == (
        "fylde-coast-crisis-response" if route == Route.CRISIS_RESPONSE else "lsc-crisis-line"
    )


# --- plan clock: day 21 at risk, day 28 met, day 29 breached, across the clock changes -------------


def episode(assessed: datetime, agreed: datetime | None = None) -> EpisodeFacts:
    return EpisodeFacts(
        referral_received_at=assessed - timedelta(days=7),
        age_at_referral=40,
        first_assessment_completed_at=assessed,
        plan_agreed_at=agreed,
        first_attended_contact_at=None,
        first_outcome_measure_at=None,
        first_meaningful_assessment_at=None,
        first_intervention_at=None,
        assessment_started_at=None,
        advice_or_signposting_at=None,
    )


SPRING_ASSESSED = datetime(2026, 3, 8, 10, 0, tzinfo=UTC)  # Sunday 8 March (GMT); day 21 is 29 March
AUTUMN_ASSESSED = datetime(2026, 10, 4, 10, 0, tzinfo=UTC)  # Sunday 4 October (BST); day 21 is 25 October


@pytest.mark.parametrize(
    ("assessed", "now", "days", "state"),
    [
        # Spring: day 21 starts at London midnight on 29 March (00:00 GMT = 00:00Z) ...
        (SPRING_ASSESSED, datetime(2026, 3, 28, 23, 59, 59, tzinfo=UTC), 20, ClockState.RUNNING),
        (SPRING_ASSESSED, datetime(2026, 3, 29, 0, 0, tzinfo=UTC), 21, ClockState.AT_RISK),
        # ... and day 29 at London midnight on 6 April (00:00 BST = 23:00Z on 5 April).
        (SPRING_ASSESSED, datetime(2026, 4, 5, 22, 59, 59, tzinfo=UTC), 28, ClockState.AT_RISK),
        (SPRING_ASSESSED, datetime(2026, 4, 5, 23, 0, tzinfo=UTC), 29, ClockState.BREACHED),
        # Autumn: day 21 starts at 00:00 BST on 25 October = 23:00Z on 24 October ...
        (AUTUMN_ASSESSED, datetime(2026, 10, 24, 22, 59, 59, tzinfo=UTC), 20, ClockState.RUNNING),
        (AUTUMN_ASSESSED, datetime(2026, 10, 24, 23, 0, tzinfo=UTC), 21, ClockState.AT_RISK),
        # ... and day 29 at 00:00 GMT on 2 November = 00:00Z.
        (AUTUMN_ASSESSED, datetime(2026, 11, 1, 23, 59, 59, tzinfo=UTC), 28, ClockState.AT_RISK),
        (AUTUMN_ASSESSED, datetime(2026, 11, 2, 0, 0, tzinfo=UTC), 29, ClockState.BREACHED),
    ],
)
def test_plan_clock_days_21_28_29_on_london_dates_across_the_clock_changes(
    assessed: datetime, now: datetime, days: int, state: ClockState
) -> None:
    clock = plan_clock(episode(assessed), now)
    assert (clock.days_elapsed, clock.state) == (days, state)
    # The events follow the same London dates: at risk from day 21, breached from day 29, once each.
    due = due_clock_events(episode(assessed), now, frozenset())
    assert due == (
        [] if days < 21 else [ClockEvent.AT_RISK] if days <= 28 else [ClockEvent.AT_RISK, ClockEvent.BREACHED]
    )
    assert due_clock_events(episode(assessed), now, frozenset(due)) == []


@pytest.mark.parametrize(
    ("assessed", "agreed", "state"),
    [
        (SPRING_ASSESSED, datetime(2026, 4, 5, 22, 59, 59, tzinfo=UTC), ClockState.MET),  # day 28, BST
        (SPRING_ASSESSED, datetime(2026, 4, 5, 23, 0, tzinfo=UTC), ClockState.BREACHED),  # day 29
        (AUTUMN_ASSESSED, datetime(2026, 11, 1, 23, 59, 59, tzinfo=UTC), ClockState.MET),  # day 28, GMT
        (AUTUMN_ASSESSED, datetime(2026, 11, 2, 0, 0, tzinfo=UTC), ClockState.BREACHED),  # day 29
    ],
)
def test_a_plan_agreed_on_day_28_is_met_and_on_day_29_breached_across_the_clock_changes(
    assessed: datetime, agreed: datetime, state: ClockState
) -> None:
    assert plan_clock(episode(assessed, agreed), agreed + timedelta(days=10)).state == state


@given(
    st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)),
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=45)),
)
def test_the_plan_clock_counts_london_calendar_days(assessed: datetime, elapsed: timedelta) -> None:
    now = assessed + elapsed
    days = (now.astimezone(LONDON).date() - assessed.astimezone(LONDON).date()).days
    expected = ClockState.BREACHED if days > 28 else ClockState.AT_RISK if days >= 21 else ClockState.RUNNING
    clock = plan_clock(episode(assessed), now)
    assert (clock.days_elapsed, clock.state) == (days, expected)


# --- the crisis queue: deadlines agree with the urgency order -------------------------------------


@given(
    st.sampled_from(Priority),
    st.sampled_from(Priority),
    st.sampled_from(Source),
    st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)),
)
def test_a_more_urgent_referral_is_never_due_after_a_less_urgent_one_received_with_it(
    a: Priority, b: Priority, source: Source, received: datetime
) -> None:
    # The queue is ordered by deadline; for referrals received together that must never put a
    # less urgent one first (priority codes are not in urgency order: 4 is more urgent than 2).
    first, second = sorted((a, b), key=URGENCY_ORDER.index)
    assert more_urgent(first, second) == first
    due_first, due_second = deadline(received, first, source), deadline(received, second, source)
    if due_second is not None:
        assert due_first is not None and due_first <= due_second


@pytest.mark.parametrize("received", [SPRING + timedelta(minutes=30), AUTUMN + timedelta(minutes=30)])
def test_a_deadline_is_elapsed_minutes_across_a_clock_change(received: datetime) -> None:
    due = deadline(received, Priority.VERY_URGENT, Source.GP)
    assert due is not None and due - received == timedelta(minutes=240)
    assert deadline(received, Priority.URGENT, Source.AE) == received + timedelta(minutes=60)


def test_a_deadline_from_a_london_zoned_time_is_elapsed_minutes() -> None:
    received = datetime(2026, 10, 25, 1, 30, tzinfo=LONDON)  # 00:30Z, first of the repeated hour
    due = deadline(received, Priority.VERY_URGENT, Source.GP)
    assert due is not None and due.astimezone(UTC) - received.astimezone(UTC) == timedelta(minutes=240)
