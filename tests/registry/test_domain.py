"""Registry rules as pure functions: postcodes, validity, pathways by age, opening hours, resolve."""

from __future__ import annotations

import json
import string
from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.coverage import (
    Hours,
    Interval,
    NetworkView,
    PathwayBand,
    PlaceView,
    Snapshot,
    TeamView,
    hours_of,
    open_at,
    pathway_for_age,
    resolve,
)
from contracts.postcodes import InvalidPostcode, normalise_postcode
from services.registry.domain import Validity
from services.registry.schemas import ATTRIBUTES
from services.registry.seed import REFERENCE, desired_records

letters = st.sampled_from(string.ascii_uppercase)
digits = st.sampled_from(string.digits)


@st.composite
def postcodes(draw: st.DrawFn) -> str:
    area = draw(letters) + (draw(letters) if draw(st.booleans()) else "")
    district = (
        area
        + draw(digits)
        + (draw(st.sampled_from(string.digits + "ABCDEHJKMNPRSTUVWXY")) if draw(st.booleans()) else "")
    )
    return f"{district} {draw(digits)}{draw(letters)}{draw(letters)}"


@given(postcodes(), st.sampled_from(["", " ", "  "]), st.booleans())
def test_postcode_normalisation_ignores_spacing_and_case(postcode: str, gap: str, lower: bool) -> None:
    compact = postcode.replace(" ", gap)
    formatted, district = normalise_postcode(compact.lower() if lower else compact)
    assert formatted == postcode
    assert district == postcode.split()[0]
    assert normalise_postcode(formatted) == (formatted, district)


@pytest.mark.parametrize(
    "bad", ["", "BB1", "12345", "BB1 1A", "BBB1 1AA", "BB1 AAA", "BB1-1AA", "B 1AA", "😀1 1AA"]
)
def test_invalid_postcodes_are_refused(bad: str) -> None:
    with pytest.raises(InvalidPostcode):
        normalise_postcode(bad)


dates = st.dates(min_value=date(2000, 1, 1), max_value=date(2040, 1, 1))


@st.composite
def validities(draw: st.DrawFn) -> Validity:
    start = draw(dates)
    length = draw(st.one_of(st.none(), st.integers(1, 4000)))
    return Validity(start, None if length is None else start + timedelta(days=length))


@given(validities(), validities(), dates)
def test_overlap_is_symmetric_and_agrees_with_containment(a: Validity, b: Validity, day: date) -> None:
    assert a.overlaps(b) == b.overlaps(a)
    if a.contains(day) and b.contains(day):
        assert a.overlaps(b)


def test_inverted_or_empty_ranges_are_refused() -> None:
    for end in (date(2025, 1, 1), date(2024, 12, 31)):
        with pytest.raises(ValueError):
            Validity(date(2025, 1, 1), end)


REFERENCE_DATA = json.loads(REFERENCE.read_text())
PATHWAYS = [
    PathwayBand(p["key"], p["name"], p["age_min"], p["age_max"])
    for p in REFERENCE_DATA["mental_health_provider"]["clinical_pathways"]
]


@pytest.mark.parametrize(
    ("age", "pathway"),
    [
        (0, "camhs"),
        (17, "camhs"),
        (18, "adult-mh"),
        (64, "adult-mh"),
        (65, "older-adult-mh"),
        (110, "older-adult-mh"),
    ],
)
def test_pathway_by_age_at_the_edges(age: int, pathway: str) -> None:
    chosen, alongside = pathway_for_age(PATHWAYS, age)
    assert chosen is not None and chosen.key == pathway
    assert [p.key for p in alongside] == ["physical-health"]


@given(st.integers(0, 130))
def test_every_age_has_exactly_one_banded_pathway(age: int) -> None:
    assert sum(p.age_banded and p.admits(age) for p in PATHWAYS) == 1


CRISIS = Hours(
    weekly={day: (Interval(time(8), time(22)),) for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
)
WEEKDAYS_ONLY = Hours(
    weekly={day: (Interval(time(9), time(17)),) for day in ("mon", "tue", "wed", "thu", "fri")}
)
OVERNIGHT = Hours(weekly={"fri": (Interval(time(20), time(8)),)})


@pytest.mark.parametrize(
    ("hours", "at", "is_open"),
    [
        # Summer (BST, UTC+1): 21:59 local is 20:59Z.
        (CRISIS, datetime(2026, 7, 1, 20, 59, tzinfo=UTC), True),
        (CRISIS, datetime(2026, 7, 1, 21, 0, tzinfo=UTC), False),  # 22:00 BST: closed
        # Winter (GMT): 21:59 local is 21:59Z.
        (CRISIS, datetime(2026, 1, 14, 21, 59, tzinfo=UTC), True),
        (CRISIS, datetime(2026, 1, 14, 22, 0, tzinfo=UTC), False),
        (CRISIS, datetime(2026, 1, 14, 7, 59, tzinfo=UTC), False),
        (CRISIS, datetime(2026, 1, 14, 8, 0, tzinfo=UTC), True),
        # Clocks go forward on Sunday 29 March 2026 at 01:00Z: 21:30Z is 22:30 BST that evening.
        (CRISIS, datetime(2026, 3, 28, 21, 30, tzinfo=UTC), True),
        (CRISIS, datetime(2026, 3, 29, 21, 30, tzinfo=UTC), False),
        # Clocks go back on Sunday 25 October 2026: 21:30Z is 21:30 GMT that evening, open again.
        (CRISIS, datetime(2026, 10, 24, 21, 30, tzinfo=UTC), False),
        (CRISIS, datetime(2026, 10, 25, 21, 30, tzinfo=UTC), True),
        # Weekends.
        (WEEKDAYS_ONLY, datetime(2026, 11, 27, 12, 0, tzinfo=UTC), True),  # Friday
        (WEEKDAYS_ONLY, datetime(2026, 11, 28, 12, 0, tzinfo=UTC), False),  # Saturday
        (WEEKDAYS_ONLY, datetime(2026, 11, 30, 9, 0, tzinfo=UTC), True),  # Monday 09:00
        # Overnight Friday 20:00 to Saturday 08:00.
        (OVERNIGHT, datetime(2026, 11, 27, 23, 0, tzinfo=UTC), True),
        (OVERNIGHT, datetime(2026, 11, 28, 7, 59, tzinfo=UTC), True),
        (OVERNIGHT, datetime(2026, 11, 28, 8, 0, tzinfo=UTC), False),
        (OVERNIGHT, datetime(2026, 11, 27, 19, 59, tzinfo=UTC), False),
        (Hours(always_open=True), datetime(2026, 12, 25, 3, 0, tzinfo=UTC), True),
    ],
)
def test_opening_hours_at_the_edges(hours: Hours, at: datetime, is_open: bool) -> None:
    opened, reason = open_at(hours, at)
    assert opened is is_open, reason
    assert "Europe/London" in reason or "24 hours" in reason


def test_naive_moments_are_refused() -> None:
    with pytest.raises(ValueError):
        open_at(CRISIS, datetime(2026, 1, 1, 12, 0))


def seeded_snapshot() -> Snapshot:
    records = list(desired_records(REFERENCE_DATA))
    places = [
        PlaceView(
            r.id, r.attributes["key"], r.attributes["name"], frozenset(r.attributes["postcode_districts"])
        )
        for r in records
        if r.kind.value == "place"
    ]
    networks = [
        NetworkView(
            r.id,
            r.attributes["key"],
            r.attributes["name"],
            r.attributes["kind"],
            frozenset(r.attributes["postcode_districts"]),
        )
        for r in records
        if r.kind.value == "network"
    ]
    teams = []
    for r in records:
        if r.kind.value != "team":
            continue
        attributes = ATTRIBUTES[r.kind].model_validate(r.attributes).model_dump(mode="json")
        teams.append(
            TeamView(
                r.id, attributes["key"], attributes["name"], attributes["service_offer"], attributes["network_id"],
                frozenset(attributes["pathways"]), frozenset(attributes["coverage"]), hours_of(attributes["opening_hours"]),
            )
        )  # fmt: skip
    return Snapshot.build(places, networks, PATHWAYS, teams)


SNAPSHOT = seeded_snapshot()
NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # a Wednesday


@pytest.mark.parametrize(
    ("postcode", "place", "network"),
    [
        ("bb1 1aa", "blackburn-with-darwen", "pennine-lancashire"),
        ("FY1 4AB", "blackpool", "fylde-coast"),
        ("PR1 2HE", "lancashire", "central-lancashire"),
        ("PR3 1AA", "lancashire", "fylde-coast"),
        ("LA1 4RP", "lancashire", "the-bay"),
        ("LA9 4DL", "south-cumbria", "the-bay"),
    ],
)
def test_resolve_across_the_four_places(postcode: str, place: str, network: str) -> None:
    result = resolve(SNAPSHOT, postcode, 30, "crisis_response", NOON)
    assert not result.out_of_area
    assert result.place is not None and result.place.key == place
    assert result.network is not None and result.network.key == network
    assert result.teams and result.teams[0].open
    assert result.teams[0].team.network_id == result.network.id


def test_resolve_out_of_area_is_an_answer_not_an_error() -> None:
    result = resolve(SNAPSHOT, "M1 1AE", 30, "crisis_response", NOON)
    assert result.out_of_area and result.place is None and result.teams == ()
    assert "M1" in result.reasons[0]


def test_resolve_inside_a_network_but_outside_the_places() -> None:
    result = resolve(SNAPSHOT, "PR8 1AA", 40, "triage", NOON)  # Southport: Central Lancashire network
    assert not result.out_of_area and result.place is None
    assert result.network is not None and result.network.key == "central-lancashire"


@pytest.mark.parametrize(
    ("age", "pathway"), [(17, "camhs"), (18, "adult-mh"), (64, "adult-mh"), (65, "older-adult-mh")]
)
def test_resolve_picks_the_pathways_team_by_age(age: int, pathway: str) -> None:
    result = resolve(SNAPSHOT, "BB2 1AA", age, "focused_support", NOON)
    assert result.pathway is not None and result.pathway.key == pathway
    assert [candidate.team.key for candidate in result.teams] == [
        f"pennine-lancashire-focused-support-{pathway}"
    ]


def test_resolve_says_why_a_team_is_closed() -> None:
    late = datetime(2026, 11, 25, 22, 30, tzinfo=UTC)
    result = resolve(SNAPSHOT, "FY2 0AA", 30, "crisis_response", late)
    assert not result.teams[0].open
    assert any("closed" in reason and "next opens" in reason for reason in result.teams[0].reasons)
    line = resolve(SNAPSHOT, "FY2 0AA", 30, "crisis_line", late)
    assert line.teams[0].open
