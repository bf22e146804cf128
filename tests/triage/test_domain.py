"""Triage screening rules as pure functions: priority, targets, identity, out of area, directory
matching, re-access and the routes `screen` suggests over the seeded Lancashire and South Cumbria
registry, and the decisions a clinician may record."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.clocks import AE_LIAISON_MINUTES, TARGET_MINUTES
from contracts.coverage import Snapshot, snapshot_from
from services.registry.schemas import ATTRIBUTES
from services.registry.seed import REFERENCE, desired_records
from services.triage.domain import (
    CLINICAL_NEEDS,
    COMPLEX_NEEDS,
    EPISODE_ROUTES,
    IMMINENT_RISKS,
    POSTCODE_AREAS,
    REQUESTED_PRIORITY,
    SOCIAL_NEEDS,
    URGENCY_ORDER,
    DecisionAction,
    DecisionRefused,
    DirectoryIndex,
    DirectoryServiceView,
    Discharge,
    Need,
    Priority,
    ReferralFacts,
    RequestedUrgency,
    Risk,
    Route,
    Source,
    Suggestion,
    age_on,
    check_decision,
    crisis_target,
    deadline,
    match_services,
    more_urgent,
    name_key,
    nhs_number_valid,
    normalise_nhs_number,
    receiving_area,
    screen,
    suggest_priority,
)

TAXONOMY = Path(__file__).parents[2] / "services" / "directory" / "reference" / "needs-taxonomy.json"

# --- the seeded registry ------------------------------------------------------------------------

REFERENCE_DATA = json.loads(REFERENCE.read_text())


def seeded_snapshot() -> Snapshot:
    """The seeded Lancashire and South Cumbria structure, as the registry stores it."""
    records: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for record in desired_records(REFERENCE_DATA):
        attributes = ATTRIBUTES[record.kind].model_validate(record.attributes).model_dump(mode="json")
        records.setdefault(record.kind.value, []).append((record.id, attributes))
    return snapshot_from(records)


SNAPSHOT = seeded_snapshot()
FOOTPRINT = sorted(SNAPSHOT.place_by_district.keys() | SNAPSHOT.networks_by_district.keys())
TEAM_BY_KEY = {team.key: team for team in SNAPSHOT.teams}
NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # a Wednesday (GMT)


def test_the_seeded_footprint_is_what_the_tests_assume() -> None:
    assert {"BB1", "FY1", "PR1", "LA9", "PR8"} <= set(FOOTPRINT)
    assert "M1" not in FOOTPRINT and "L1" not in FOOTPRINT


# --- enums ---------------------------------------------------------------------------------------


def test_social_needs_are_exactly_the_directory_taxonomy_codes() -> None:
    codes = {term["code"] for term in json.loads(TAXONOMY.read_text())["taxonomy_terms"]}
    assert {str(n) for n in SOCIAL_NEEDS} == codes
    assert not SOCIAL_NEEDS & CLINICAL_NEEDS
    assert COMPLEX_NEEDS <= CLINICAL_NEEDS
    assert set(Need) == SOCIAL_NEEDS | CLINICAL_NEEDS


def test_priority_codes_are_mhsds_and_urgency_order_is_clinical() -> None:
    assert [
        int(p) for p in (Priority.EMERGENCY, Priority.URGENT, Priority.ROUTINE, Priority.VERY_URGENT)
    ] == [
        1,
        2,
        3,
        4,
    ]
    assert URGENCY_ORDER == (Priority.EMERGENCY, Priority.VERY_URGENT, Priority.URGENT, Priority.ROUTINE)


@given(st.sampled_from(Priority), st.sampled_from(Priority))
def test_more_urgent_follows_the_urgency_order(a: Priority, b: Priority) -> None:
    chosen = more_urgent(a, b)
    assert chosen in (a, b)
    assert chosen == more_urgent(b, a)
    assert URGENCY_ORDER.index(chosen) == min(URGENCY_ORDER.index(a), URGENCY_ORDER.index(b))


# --- priority -----------------------------------------------------------------------------------

risk_sets = st.frozensets(st.sampled_from(Risk))
sources = st.sampled_from(Source)
requests = st.one_of(st.none(), st.sampled_from(RequestedUrgency))


@given(risk_sets, sources, requests, st.sampled_from(sorted(IMMINENT_RISKS)))
def test_an_imminent_risk_is_never_routine_nor_merely_urgent(
    risks: frozenset[Risk], source: Source, requested: RequestedUrgency | None, imminent: Risk
) -> None:
    priority, rules = suggest_priority(risks | {imminent}, source, requested)
    assert priority in (Priority.EMERGENCY, Priority.VERY_URGENT)
    assert rules


@given(risk_sets, sources, st.sampled_from(RequestedUrgency))
def test_a_requested_urgency_raises_but_never_lowers(
    risks: frozenset[Risk], source: Source, requested: RequestedUrgency
) -> None:
    without, _ = suggest_priority(risks, source, None)
    with_request, rules = suggest_priority(risks, source, requested)
    assert more_urgent(with_request, without) == with_request
    assert more_urgent(with_request, REQUESTED_PRIORITY[requested]) == with_request
    assert with_request in (without, REQUESTED_PRIORITY[requested])
    if with_request != without:
        assert rules[-1].id == "P-requested-raises"


@pytest.mark.parametrize(
    ("risks", "source", "requested", "priority", "rule"),
    [
        (
            {Risk.SUICIDAL_INTENT, Risk.SUICIDAL_PLAN},
            Source.GP,
            None,
            Priority.EMERGENCY,
            "P1-intent-and-plan",
        ),
        (
            {Risk.HARM_TO_OTHERS, Risk.PSYCHOSIS},
            Source.POLICE,
            None,
            Priority.EMERGENCY,
            "P1-harm-to-others-and-psychosis",
        ),
        ({Risk.SUICIDAL_INTENT}, Source.SELF, None, Priority.VERY_URGENT, "P4-imminent-risk"),
        ({Risk.RECENT_SELF_HARM}, Source.CARER, None, Priority.VERY_URGENT, "P4-imminent-risk"),
        (set(), Source.AE, None, Priority.VERY_URGENT, "P4-ae-liaison"),
        ({Risk.SUICIDAL_IDEATION}, Source.GP, None, Priority.URGENT, "P2-suicidal-ideation"),
        ({Risk.SAFEGUARDING}, Source.SOCIAL_CARE, None, Priority.URGENT, "P2-safeguarding"),
        ({Risk.SUBSTANCE_USE}, Source.GP, None, Priority.ROUTINE, "P3-no-risk-indicators"),
        (set(), Source.GP, RequestedUrgency.VERY_URGENT, Priority.VERY_URGENT, "P-requested-raises"),
        (
            {Risk.SUICIDAL_IDEATION},
            Source.GP,
            RequestedUrgency.ROUTINE,
            Priority.URGENT,
            "P-requested-not-lowered",
        ),
    ],
)
def test_priority_rules(
    risks: set[Risk], source: Source, requested: RequestedUrgency | None, priority: Priority, rule: str
) -> None:
    got, rules = suggest_priority(frozenset(risks), source, requested)
    assert got == priority
    assert rule in [r.id for r in rules]
    assert all(r.text for r in rules)


# --- targets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("priority", "source", "minutes"),
    [
        (Priority.EMERGENCY, Source.GP, 60),
        (Priority.VERY_URGENT, Source.GP, 240),
        (Priority.URGENT, Source.POLICE, 1440),
        (Priority.ROUTINE, Source.SELF, None),
        (Priority.VERY_URGENT, Source.AE, 60),
        (Priority.URGENT, Source.AE, 60),
        (Priority.ROUTINE, Source.AE, 60),
    ],
)
def test_crisis_targets(priority: Priority, source: Source, minutes: int | None) -> None:
    assert crisis_target(priority, source) == minutes


@given(st.sampled_from(Priority), sources)
def test_the_ae_target_is_never_longer_than_the_hour(priority: Priority, source: Source) -> None:
    target = crisis_target(priority, source)
    if source == Source.AE:
        assert target is not None and target <= AE_LIAISON_MINUTES
    else:
        assert target == TARGET_MINUTES[priority]


def test_deadlines() -> None:
    received = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # the night the clocks go forward
    assert deadline(received, Priority.VERY_URGENT, Source.GP) == received + timedelta(hours=4)
    assert deadline(received, Priority.URGENT, Source.AE) == received + timedelta(hours=1)
    assert deadline(received, Priority.ROUTINE, Source.GP) is None
    with pytest.raises(ValueError):
        deadline(datetime(2026, 1, 1, 12, 0), Priority.URGENT, Source.GP)


# --- identity -----------------------------------------------------------------------------------


def check_digit(nine: str) -> int:
    total = sum(int(d) * w for d, w in zip(nine, range(10, 1, -1), strict=True))
    return (11 - total % 11) % 11  # 10: no valid check digit


@pytest.mark.parametrize(
    "value", ["9434765919", "9434765870", "943 476 5919", "943-476-5870", " 9434765919 "]
)
def test_known_valid_nhs_numbers(value: str) -> None:
    assert nhs_number_valid(value)
    assert normalise_nhs_number(value) == value.replace(" ", "").replace("-", "")


@pytest.mark.parametrize(
    "value", ["", "943476591", "94347659190", "9434765918", "943476591X", "٩٤٣٤٧٦٥٩١٩", "9434765919\n"]
)
def test_invalid_nhs_numbers(value: str) -> None:
    assert not nhs_number_valid(value)
    with pytest.raises(ValueError):
        normalise_nhs_number(value)


nine_digits = st.text(alphabet="0123456789", min_size=9, max_size=9)


@given(nine_digits)
def test_nine_digits_have_exactly_one_valid_check_digit_unless_it_would_be_ten(nine: str) -> None:
    valid = [d for d in "0123456789" if nhs_number_valid(nine + d)]
    check = check_digit(nine)
    assert valid == ([] if check == 10 else [str(check)])


@given(nine_digits, st.integers(0, 9), st.integers(1, 9))
def test_changing_any_one_digit_of_a_valid_number_makes_it_invalid(
    nine: str, position: int, shift: int
) -> None:
    check = check_digit(nine)
    if check == 10:
        return  # no valid number starts with these nine digits
    number = nine + str(check)
    changed = number[:position] + str((int(number[position]) + shift) % 10) + number[position + 1 :]
    assert nhs_number_valid(number)
    assert not nhs_number_valid(changed)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("Zoë", "O'Brien"), ("zoe", "OBRIEN")),
        (("José", "García-López"), ("Jose", "Garcia Lopez")),
        (("Straße", "Müller"), ("strasse", "muller")),
        (("  Ann-Marie ", "Smith"), ("annmarie", "smith")),
    ],
)
def test_name_keys_ignore_case_accents_and_punctuation(a: tuple[str, str], b: tuple[str, str]) -> None:
    assert name_key(*a) == name_key(*b)


def test_name_key_is_family_then_given() -> None:
    assert name_key("Zoë", "O'Brien") == "obrien|zoe"
    assert name_key("Ann", "Smith") != name_key("Smith", "Ann")


@pytest.mark.parametrize(
    ("day", "age"),
    [
        (date(2008, 2, 29), 0),
        (date(2009, 2, 28), 0),
        (date(2009, 3, 1), 1),
        (date(2012, 2, 28), 3),
        (date(2012, 2, 29), 4),
        (date(2026, 2, 28), 17),
        (date(2026, 3, 1), 18),
    ],
)
def test_age_on_for_a_29_february_birthday(day: date, age: int) -> None:
    assert age_on(date(2008, 2, 29), day) == age


@given(
    st.dates(min_value=date(1900, 1, 1), max_value=date(2030, 12, 31)),
    st.integers(0, 120),
    st.integers(0, 364),
)
def test_age_on_counts_completed_years(birth: date, years: int, extra: int) -> None:
    if birth.month == 2 and birth.day == 29:
        birth = birth - timedelta(days=1)
    birthday = birth.replace(year=birth.year + years)
    assert age_on(birth, birthday) == years
    assert age_on(birth, birthday + timedelta(days=extra)) == years + (
        extra >= (birthday.replace(year=birthday.year + 1) - birthday).days
    )
    if years:
        assert age_on(birth, birthday - timedelta(days=1)) == years - 1


def test_age_on_refuses_a_day_before_birth() -> None:
    with pytest.raises(ValueError):
        age_on(date(2000, 1, 2), date(2000, 1, 1))


# --- out of area --------------------------------------------------------------------------------


def test_postcode_areas() -> None:
    assert len(POSTCODE_AREAS) == 124  # the 121 UK geographic areas (BT included), plus GY, JE and IM
    assert all(1 <= len(area) <= 2 and area.isalpha() and area.isupper() for area in POSTCODE_AREAS)
    assert {area: POSTCODE_AREAS[area] for area in ("E", "EC", "N", "NW", "SE", "SW", "W", "WC")} == {
        area: f"London {area}" for area in ("E", "EC", "N", "NW", "SE", "SW", "W", "WC")
    }
    for area in {d.rstrip("0123456789") for d in FOOTPRINT}:
        assert area in POSTCODE_AREAS
    assert POSTCODE_AREAS["BT"] == "Belfast" and POSTCODE_AREAS["ZE"] == "Lerwick"


@pytest.mark.parametrize(
    ("district", "named"),
    [
        ("M1", "postcode area M (Manchester)"),
        ("ec1a", "postcode area EC (London EC)"),
        ("SW1A", "postcode area SW (London SW)"),
        ("L1", "postcode area L (Liverpool)"),
        ("JE2", "postcode area JE (Jersey)"),
        ("QQ1", "postcode area QQ"),
    ],
)
def test_receiving_area(district: str, named: str) -> None:
    assert receiving_area(district) == named


# --- directory matching -------------------------------------------------------------------------

WEEKDAYS_9_TO_5 = tuple((day, time(9), time(17)) for day in range(5))


def service(
    service_id: str,
    name: str,
    needs: Iterable[str],
    districts: Iterable[str] | None = None,
    *,
    minimum_age: int | None = None,
    maximum_age: int | None = None,
    slots: tuple[tuple[int, time, time], ...] = WEEKDAYS_9_TO_5,
    active: bool = True,
) -> DirectoryServiceView:
    return DirectoryServiceView(
        service_id=service_id,
        name=name,
        organization_name=f"{name} Ltd",
        needs=frozenset(needs),
        districts=frozenset(districts or ()),
        has_service_area=districts is not None,
        minimum_age=minimum_age,
        maximum_age=maximum_age,
        slots=slots,
        active=active,
    )


CLOSED = ((6, time(9), time(10)),)  # Sunday mornings only


_NEEDS = ["housing", "benefits-debt", "bereavement", "loneliness"]
_DISTRICTS = ["BB1", "BB2", "LA1", "FY1"]
_views = st.builds(
    service,
    service_id=st.sampled_from([f"s{i}" for i in range(12)]),
    name=st.sampled_from(["Alpha", "beta", "Gamma", "delta"]),
    needs=st.frozensets(st.sampled_from(_NEEDS), max_size=3),
    districts=st.none() | st.frozensets(st.sampled_from(_DISTRICTS), max_size=3),
    minimum_age=st.none() | st.integers(0, 40),
    maximum_age=st.none() | st.integers(10, 90),
    slots=st.sampled_from([WEEKDAYS_9_TO_5, CLOSED, ()]),
    active=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(
    changes=st.lists(st.tuples(st.booleans(), _views), max_size=30),
    needs=st.frozensets(st.sampled_from(_NEEDS), min_size=1),
    district=st.sampled_from([*_DISTRICTS, " bb1 ", "PR1"]),
    age=st.integers(0, 100),
    limit=st.integers(0, 8),
)
def test_the_directory_index_matches_exactly_what_a_full_scan_matches(
    changes: list[tuple[bool, DirectoryServiceView]],
    needs: frozenset[str],
    district: str,
    age: int,
    limit: int,
) -> None:
    """Services put (replacing one with the same id) or removed in any order: matching through
    the index gives the same services, in the same order, as scanning what is published."""
    index = DirectoryIndex()
    published: dict[str, DirectoryServiceView] = {}
    for withdraw, view in changes:
        if withdraw:
            index.remove(view.service_id)
            published.pop(view.service_id, None)
        else:
            index.put(view)
            published[view.service_id] = view
    full_scan = match_services(list(published.values()), needs, district, age, NOON, limit)
    assert match_services(index, needs, district, age, NOON, limit) == full_scan
    assert len(index) == sum(1 for view in published.values() if view.active)


def test_matches_rank_by_needs_met_then_open_now_then_name() -> None:
    services = [
        service("c", "Alpha closed", ["housing"], slots=CLOSED),
        service("b", "Zeta open", ["housing"]),
        service("a", "Two needs closed", ["housing", "benefits-debt"], slots=CLOSED),
        service("d", "Beta open", ["benefits-debt"]),
        service("e", "Unrelated", ["bereavement"]),
    ]
    got = match_services(services, frozenset({"housing", "benefits-debt"}), "BB1", 30, NOON)
    assert [m.service_id for m in got] == ["a", "d", "b", "c"]
    assert got[0].needs_matched == ("benefits-debt", "housing")
    assert [m.open_now for m in got] == [False, True, True, False]
    assert [
        m.service_id for m in match_services(services, frozenset({"housing"}), "BB1", 30, NOON, limit=2)
    ] == ["b", "c"]  # for housing alone, "a" meets one need too and sorts by name among the closed


def test_matches_respect_area_age_and_active() -> None:
    services = [
        service("area", "Blackburn only", ["housing"], ["BB1", "BB2"]),
        service("anywhere", "No declared area", ["housing"]),
        service("declared-empty", "Area outside every district", ["housing"], []),
        service("adults", "Adults", ["housing"], minimum_age=18),
        service("young", "Young people", ["housing"], maximum_age=25),
        service("inactive", "Closed down", ["housing"], active=False),
    ]
    needs = frozenset({"housing"})

    def ids(district: str, age: int) -> set[str]:
        return {m.service_id for m in match_services(services, needs, district, age, NOON, limit=10)}

    assert ids("BB1", 30) == {"area", "anywhere", "adults"}
    assert ids("bb2", 25) == {"area", "anywhere", "adults", "young"}
    assert ids("FY1", 17) == {"anywhere", "young"}
    assert ids("FY1", 18) == {"anywhere", "adults", "young"}
    assert ids("FY1", 26) == {"anywhere", "adults"}


@pytest.mark.parametrize(
    ("at", "slots", "is_open"),
    [
        # Wednesday 09:00-17:00 Europe/London; in summer 16:59 BST is 15:59Z.
        (datetime(2026, 7, 1, 15, 59, tzinfo=UTC), ((2, time(9), time(17)),), True),
        (datetime(2026, 7, 1, 16, 0, tzinfo=UTC), ((2, time(9), time(17)),), False),
        (datetime(2026, 7, 1, 7, 59, tzinfo=UTC), ((2, time(9), time(17)),), False),
        (datetime(2026, 7, 1, 8, 0, tzinfo=UTC), ((2, time(9), time(17)),), True),
        # Friday 20:00 to Saturday 02:00.
        (datetime(2026, 11, 28, 1, 0, tzinfo=UTC), ((4, time(20), time(2)),), True),
        (datetime(2026, 11, 28, 2, 0, tzinfo=UTC), ((4, time(20), time(2)),), False),
        # A day-only schedule (00:00-23:59) is open all day.
        (datetime(2026, 11, 25, 23, 59, 30, tzinfo=UTC), ((2, time(0), time(23, 59)),), True),
    ],
)
def test_open_now_is_judged_in_london(
    at: datetime, slots: tuple[tuple[int, time, time], ...], is_open: bool
) -> None:
    (match,) = match_services(
        [service("s", "S", ["housing"], slots=slots)], frozenset({"housing"}), "BB1", 30, at
    )
    assert match.open_now is is_open


def test_matching_needs_an_aware_time() -> None:
    with pytest.raises(ValueError):
        match_services([], frozenset({"housing"}), "BB1", 30, datetime(2026, 1, 1, 12, 0))


taxonomy_codes = st.sampled_from(sorted(str(n) for n in SOCIAL_NEEDS))


@st.composite
def directory_services(draw: st.DrawFn) -> DirectoryServiceView:
    minimum = draw(st.one_of(st.none(), st.integers(0, 70)))
    return service(
        draw(st.uuids()).hex,
        draw(st.text(alphabet="abcdefgh ", min_size=1, max_size=8)),
        draw(st.frozensets(taxonomy_codes, max_size=4)),
        draw(st.one_of(st.none(), st.frozensets(st.sampled_from(["BB1", "FY1", "LA9"]), max_size=2))),
        minimum_age=minimum,
        maximum_age=draw(st.one_of(st.none(), st.integers(minimum or 0, 100))),
        slots=tuple(
            draw(
                st.lists(
                    st.tuples(
                        st.integers(0, 6),
                        st.sampled_from([time(0), time(9), time(13)]),
                        st.sampled_from([time(8), time(17), time(23, 59)]),
                    ),
                    max_size=3,
                )
            )
        ),
        active=draw(st.booleans()),
    )


@settings(max_examples=150)
@given(
    st.lists(directory_services(), max_size=12),
    st.frozensets(taxonomy_codes, min_size=1, max_size=4),
    st.sampled_from(["BB1", "FY1", "LA9"]),
    st.integers(0, 100),
    st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC)),
    st.integers(0, 6),
)
def test_every_match_qualifies_and_the_ranking_holds(
    services: list[DirectoryServiceView],
    needs: frozenset[str],
    district: str,
    age: int,
    at: datetime,
    limit: int,
) -> None:
    got = match_services(services, needs, district, age, at, limit=limit)
    by_id = {s.service_id: s for s in services}
    qualifying = [
        s
        for s in services
        if s.active
        and s.needs & needs
        and (not s.has_service_area or district in s.districts)
        and (s.minimum_age is None or age >= s.minimum_age)
        and (s.maximum_age is None or age <= s.maximum_age)
    ]
    assert len(got) == min(limit, len(qualifying))
    for match in got:
        assert set(match.needs_matched) == by_id[match.service_id].needs & needs
    keys = [(-len(m.needs_matched), not m.open_now, m.name.casefold(), m.service_id) for m in got]
    assert keys == sorted(keys)


# --- screening ----------------------------------------------------------------------------------

HOUSING_AID = service("housing-aid", "Blackburn Housing Aid", ["housing", "benefits-debt"], ["BB1", "BB2"])
WALKS = service(
    "walks", "Wellbeing Walks", ["physical-activity-wellbeing", "loneliness-social-inclusion"], minimum_age=16
)
SERVICES = [HOUSING_AID, WALKS]


def facts(
    postcode: str = "BB2 1AA",
    *,
    age: int = 30,
    source: Source = Source.GP,
    risks: Iterable[Risk] = (),
    needs: Iterable[str] = (Need.LOW_MOOD,),
    requested: RequestedUrgency | None = None,
    consent: bool = True,
) -> ReferralFacts:
    return ReferralFacts(
        age=age,
        source=source,
        risks=frozenset(risks),
        needs=frozenset(str(n) for n in needs),
        requested=requested,
        consent_to_share=consent,
        postcode=postcode,
    )


def rule_ids(suggestion: Suggestion) -> list[str]:
    return [rule.id for rule in suggestion.rules]


def team_key(suggestion: Suggestion) -> str | None:
    return None if suggestion.team is None else suggestion.team.get("key")


CRISIS = (Risk.SUICIDAL_INTENT,)


@pytest.mark.parametrize(
    ("at", "route", "team"),
    [
        # Winter (GMT): the crisis team is open 08:00-22:00 Europe/London every day.
        (datetime(2026, 1, 14, 21, 59, tzinfo=UTC), Route.CRISIS_RESPONSE, "fylde-coast-crisis-response"),
        (datetime(2026, 1, 14, 22, 0, tzinfo=UTC), Route.CRISIS_LINE, "lsc-crisis-line"),
        (datetime(2026, 1, 14, 7, 59, tzinfo=UTC), Route.CRISIS_LINE, "lsc-crisis-line"),
        (datetime(2026, 1, 14, 8, 0, tzinfo=UTC), Route.CRISIS_RESPONSE, "fylde-coast-crisis-response"),
        # Summer (BST): 21:59 local is 20:59Z, 22:00 local is 21:00Z.
        (datetime(2026, 7, 1, 20, 59, tzinfo=UTC), Route.CRISIS_RESPONSE, "fylde-coast-crisis-response"),
        (datetime(2026, 7, 1, 21, 0, tzinfo=UTC), Route.CRISIS_LINE, "lsc-crisis-line"),
    ],
)
def test_crisis_routing_at_the_opening_hours_edges(at: datetime, route: Route, team: str) -> None:
    got = screen(facts("FY1 4AB", risks=CRISIS), SNAPSHOT, SERVICES, None, at)
    assert got.priority == Priority.VERY_URGENT and got.target_minutes == 240
    assert got.route == route and team_key(got) == team
    assert got.team is not None and got.team["open"] is True
    expected = "R-crisis-team-open" if route == Route.CRISIS_RESPONSE else "R-crisis-team-closed"
    assert expected in rule_ids(got)


def test_ae_referrals_go_to_the_liaison_team_day_and_night() -> None:
    for at in (NOON, datetime(2026, 11, 25, 23, 30, tzinfo=UTC)):
        got = screen(facts("BB1 1AA", source=Source.AE, needs=()), SNAPSHOT, SERVICES, None, at)
        assert got.priority == Priority.VERY_URGENT
        assert got.route == Route.CRISIS_RESPONSE and got.team is not None
        assert got.team["offer"] == "liaison" and got.team["key"] == "liaison-rxr"
        assert got.target_minutes == 60
        assert "R-ae-liaison" in rule_ids(got)


def test_emergency_target_is_the_hour() -> None:
    got = screen(facts(risks=(Risk.SUICIDAL_INTENT, Risk.SUICIDAL_PLAN)), SNAPSHOT, SERVICES, None, NOON)
    assert got.priority == Priority.EMERGENCY and got.target_minutes == 60
    assert got.route == Route.CRISIS_RESPONSE


def discharge(until: datetime, team: str = "pennine-lancashire-focused-support-adult-mh") -> Discharge:
    team_id = TEAM_BY_KEY[team].id if team in TEAM_BY_KEY else team
    return Discharge("episode-1", team_id, "worker-7", until - timedelta(days=365), until)


def test_reaccess_inside_the_window_goes_back_to_the_named_workers_team() -> None:
    previous = discharge(NOON + timedelta(seconds=1))
    got = screen(facts(), SNAPSHOT, SERVICES, previous, NOON)
    assert got.route == Route.REACCESS
    assert got.team is not None and got.team["id"] == previous.team_id
    assert got.team["name"] == TEAM_BY_KEY["pennine-lancashire-focused-support-adult-mh"].name
    assert (got.reaccess_episode_id, got.named_worker_id) == ("episode-1", "worker-7")
    assert "no new assessment: previous assessment and plan are linked" in [r.text for r in got.rules]


def test_reaccess_to_a_team_the_snapshot_does_not_know_keeps_its_id() -> None:
    got = screen(facts(), SNAPSHOT, SERVICES, discharge(NOON + timedelta(days=30), team="retired-team"), NOON)
    assert got.route == Route.REACCESS and got.team == {"id": "retired-team"}


@pytest.mark.parametrize("after", [timedelta(0), timedelta(seconds=1), timedelta(days=40)])
def test_reaccess_outside_the_window_is_a_new_referral(after: timedelta) -> None:
    got = screen(facts(), SNAPSHOT, SERVICES, discharge(NOON - after), NOON)
    assert got.route == Route.FRONT_DOOR_PRIMARY
    assert got.reaccess_episode_id is None and got.named_worker_id is None
    assert "R-reaccess-window-ended" in rule_ids(got)


def test_a_crisis_within_the_window_stays_a_crisis_and_the_named_worker_is_told() -> None:
    got = screen(facts(risks=CRISIS), SNAPSHOT, SERVICES, discharge(NOON + timedelta(days=30)), NOON)
    assert got.route == Route.CRISIS_RESPONSE
    assert got.reaccess_episode_id is None
    assert "R-tell-named-worker" in rule_ids(got)


def test_out_of_area_names_the_receiving_area() -> None:
    got = screen(facts("M1 1AA", needs=(Need.HOUSING,)), SNAPSHOT, SERVICES, None, NOON)
    assert got.route == Route.OUT_OF_AREA
    assert got.receiving_area == "postcode area M (Manchester)"
    assert got.team is None and got.signposts == () and got.pathway is None and got.place is None
    assert "R-out-of-area" in rule_ids(got)


def test_urgent_goes_to_the_crisis_team_even_when_it_is_closed() -> None:
    late = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)
    got = screen(facts(risks=(Risk.SUICIDAL_IDEATION,)), SNAPSHOT, SERVICES, None, late)
    assert got.priority == Priority.URGENT and got.target_minutes == 1440
    assert got.route == Route.CRISIS_RESPONSE and team_key(got) == "pennine-lancashire-crisis-response"
    assert got.team is not None and got.team["open"] is False


def test_urgent_after_an_inpatient_stay_goes_to_home_treatment() -> None:
    got = screen(
        facts(source=Source.INPATIENT_DISCHARGE, risks=(Risk.SAFEGUARDING,)), SNAPSHOT, SERVICES, None, NOON
    )
    assert got.route == Route.HOME_TREATMENT and team_key(got) == "pennine-lancashire-home-treatment"


@pytest.mark.parametrize(
    ("age", "pathway"), [(15, "camhs"), (18, "adult-mh"), (64, "adult-mh"), (65, "older-adult-mh")]
)
def test_complex_needs_go_to_the_pathways_focused_support_team(age: int, pathway: str) -> None:
    got = screen(facts(age=age, needs=(Need.BIPOLAR, Need.ANXIETY)), SNAPSHOT, SERVICES, None, NOON)
    assert got.route == Route.FOCUSED_SUPPORT and got.pathway == pathway
    assert team_key(got) == f"pennine-lancashire-focused-support-{pathway}"
    assert got.alongside == ("physical-health",)
    assert got.place is not None and got.place["key"] == "blackburn-with-darwen"
    assert got.network is not None and got.network["key"] == "pennine-lancashire"
    assert got.target_minutes is None


def test_routine_front_doors() -> None:
    primary = screen(facts(), SNAPSHOT, SERVICES, None, NOON)
    assert primary.route == Route.FRONT_DOOR_PRIMARY
    assert team_key(primary) == "pennine-lancashire-front-door-primary"
    secondary = screen(facts(source=Source.INPATIENT_DISCHARGE), SNAPSHOT, SERVICES, None, NOON)
    assert secondary.route == Route.FRONT_DOOR_SECONDARY
    assert team_key(secondary) == "pennine-lancashire-front-door-secondary"


def test_a_child_is_not_sent_to_an_adult_front_door() -> None:
    got = screen(facts(age=12), SNAPSHOT, SERVICES, None, NOON)
    assert got.pathway == "camhs"
    assert got.route == Route.FOCUSED_SUPPORT and team_key(got) == "pennine-lancashire-focused-support-camhs"
    assert "R-front-door-pathway" in rule_ids(got)


def test_social_needs_with_consent_are_signposted_with_named_options() -> None:
    got = screen(facts(needs=(Need.HOUSING, Need.PEER_SUPPORT)), SNAPSHOT, SERVICES, None, NOON)
    assert got.route == Route.VCFSE_SIGNPOST and got.team is None
    assert [m.service_id for m in got.signposts] == ["housing-aid"]
    assert got.signposts[0].needs_matched == ("housing",)


def test_signposting_without_a_matching_partner_falls_back_to_staying_well() -> None:
    got = screen(facts("FY1 4AB", needs=(Need.HOUSING,)), SNAPSHOT, SERVICES, None, NOON)  # Blackburn only
    assert got.route == Route.STAYING_WELL and got.signposts == ()
    assert team_key(got) == "fylde-coast-staying-well"
    assert "R-no-partner-service" in rule_ids(got)


def test_without_consent_social_needs_get_staying_well_and_the_options_are_only_named() -> None:
    got = screen(facts(needs=(Need.HOUSING,), consent=False), SNAPSHOT, SERVICES, None, NOON)
    assert got.route == Route.STAYING_WELL and got.signposts == ()
    (told,) = [r for r in got.rules if r.id == "S-needs-consent"]
    assert "Blackburn Housing Aid" in told.text


def test_clinical_routes_still_name_partner_options() -> None:
    got = screen(
        facts(needs=(Need.LOW_MOOD, Need.LONELINESS_SOCIAL_INCLUSION)), SNAPSHOT, SERVICES, None, NOON
    )
    assert got.route == Route.FRONT_DOOR_PRIMARY
    assert [m.service_id for m in got.signposts] == ["walks"]


def test_screening_needs_an_aware_time() -> None:
    with pytest.raises(ValueError):
        screen(facts(), SNAPSHOT, SERVICES, None, datetime(2026, 1, 1, 12, 0))


inward = st.tuples(
    st.integers(0, 9), st.sampled_from("ABDEFGHJLNPQRSTUWXYZ"), st.sampled_from("ABDEFGHJLNPQRSTUWXYZ")
)
lsc_postcodes = st.builds(lambda d, i: f"{d} {i[0]}{i[1]}{i[2]}", st.sampled_from(FOOTPRINT), inward)
other_postcodes = st.builds(
    lambda d, i: f"{d} {i[0]}{i[1]}{i[2]}", st.sampled_from(["M1", "L1", "EC1A", "CA1", "BT1"]), inward
)
moments = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
)
need_codes = st.frozensets(st.sampled_from([str(n) for n in Need] + ["not-a-need"]), max_size=4)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 17), lsc_postcodes, sources, risk_sets, need_codes, moments)
def test_a_person_under_18_is_never_on_the_adult_pathway(
    age: int, postcode: str, source: Source, risks: frozenset[Risk], needs: frozenset[str], at: datetime
) -> None:
    got = screen(
        facts(postcode, age=age, source=source, risks=risks, needs=needs), SNAPSHOT, SERVICES, None, at
    )
    assert got.pathway == "camhs"
    key = team_key(got) or ""
    assert "adult-mh" not in key and "front-door" not in key


@st.composite
def referrals(draw: st.DrawFn) -> ReferralFacts:
    return facts(
        draw(st.one_of(lsc_postcodes, other_postcodes)),
        age=draw(st.integers(0, 110)),
        source=draw(sources),
        risks=draw(risk_sets),
        needs=draw(need_codes),
        requested=draw(requests),
        consent=draw(st.booleans()),
    )


@settings(max_examples=200, deadline=None)
@given(referrals(), moments, st.one_of(st.none(), st.integers(-400, 400)))
def test_every_referral_ends_with_an_offer_that_can_be_accepted(
    referral: ReferralFacts, at: datetime, window_days: int | None
) -> None:
    previous = None if window_days is None else discharge(at + timedelta(days=window_days))
    got = screen(referral, SNAPSHOT, SERVICES, previous, at)
    district = referral.postcode.split()[0]
    assert (got.route == Route.OUT_OF_AREA) == (district not in FOOTPRINT)
    assert got.rules and all(rule.id and rule.text for rule in got.rules)
    assert got.target_minutes == crisis_target(got.priority, referral.source)
    if got.route == Route.OUT_OF_AREA:
        area = re.match(r"[A-Z]+", district)
        assert area is not None and got.receiving_area == receiving_area(district)
        assert got.receiving_area.startswith(f"postcode area {area.group(0)} (")
    if IMMINENT_RISKS & referral.risks and got.route != Route.OUT_OF_AREA:
        assert got.route in (Route.CRISIS_RESPONSE, Route.CRISIS_LINE, Route.HOME_TREATMENT)
    if got.route == Route.VCFSE_SIGNPOST:
        assert got.signposts and referral.consent_to_share
    if got.signposts:
        assert referral.consent_to_share
    if got.route == Route.REACCESS:
        assert previous is not None and at < previous.reaccess_until
    # What triage suggests is always something a clinician may accept as it stands.
    check_decision(
        DecisionAction.ACCEPT,
        route=got.route,
        signposts=[m.service_id for m in got.signposts],
        reason=None,
        consent_to_share=referral.consent_to_share,
    )


# --- decisions ----------------------------------------------------------------------------------

reasons = st.one_of(st.none(), st.text(max_size=20))
routes = st.one_of(st.none(), st.sampled_from(Route))


@given(reasons, st.lists(st.sampled_from(["", " ", "\t"]), max_size=3), st.booleans())
def test_a_decline_without_an_alternative_never_passes(
    reason: str | None, signposts: list[str], consent: bool
) -> None:
    with pytest.raises(DecisionRefused) as refused:
        check_decision(
            DecisionAction.DECLINE, route=None, signposts=signposts, reason=reason, consent_to_share=consent
        )
    assert refused.value.field in ("reason", "route")


@given(st.sampled_from(DecisionAction), st.lists(st.text(min_size=1, max_size=5), max_size=3), reasons)
def test_a_vcfse_signpost_without_consent_never_passes(
    action: DecisionAction, signposts: list[str], reason: str | None
) -> None:
    with pytest.raises(DecisionRefused):
        check_decision(
            action, route=Route.VCFSE_SIGNPOST, signposts=signposts, reason=reason, consent_to_share=False
        )


@given(
    st.sampled_from(DecisionAction),
    routes,
    st.lists(st.text(min_size=1, max_size=5), max_size=3),
    reasons,
    st.booleans(),
    st.one_of(st.none(), st.just("team-1")),
    st.booleans(),
)
def test_decisions_pass_exactly_when_the_rules_allow(
    action: DecisionAction,
    route: Route | None,
    signposts: list[str],
    reason: str | None,
    consent: bool,
    team_id: str | None,
    priority_changed: bool,
) -> None:
    offered = [s for s in signposts if s.strip()]
    has_reason = bool(reason and reason.strip())
    needs_reason = (DecisionAction.OVERRIDE, DecisionAction.DECLINE, DecisionAction.CLOSE, DecisionAction.TRANSFER,
                    DecisionAction.REPRIORITISE)  # fmt: skip
    allowed = (
        (action not in needs_reason or has_reason)
        and (action != DecisionAction.OVERRIDE or route is not None)
        and (action != DecisionAction.DECLINE or route is not None or bool(offered))
        and (
            action != DecisionAction.TRANSFER
            or ((route is None or route in EPISODE_ROUTES) and team_id is not None and not offered)
        )
        and (action != DecisionAction.REPRIORITISE or priority_changed)
        and (consent or (route != Route.VCFSE_SIGNPOST and not offered))
    )
    try:
        check_decision(
            action, route=route, signposts=signposts, reason=reason, consent_to_share=consent, team_id=team_id,
            priority_changed=priority_changed,
        )  # fmt: skip
    except DecisionRefused:
        assert not allowed
    else:
        assert allowed


@pytest.mark.parametrize(
    ("action", "route", "signposts", "reason", "consent", "field"),
    [
        (DecisionAction.OVERRIDE, Route.STAYING_WELL, [], None, True, "reason"),
        (DecisionAction.OVERRIDE, Route.STAYING_WELL, [], "   ", True, "reason"),
        (DecisionAction.OVERRIDE, None, [], "clinical judgement", True, "route"),
        (DecisionAction.DECLINE, None, [], "not our service", True, "route"),
        (DecisionAction.DECLINE, Route.STAYING_WELL, [], None, True, "reason"),
        (DecisionAction.DECLINE, None, ["svc-1"], "not our service", False, "consent_to_share"),
        (DecisionAction.ACCEPT, Route.VCFSE_SIGNPOST, ["svc-1"], None, False, "consent_to_share"),
        (DecisionAction.ACCEPT, Route.FRONT_DOOR_PRIMARY, ["svc-1"], None, False, "consent_to_share"),
        ("maybe", None, [], None, True, "action"),
    ],
)
def test_refusals_name_the_field(
    action: Any, route: Route | None, signposts: list[str], reason: str | None, consent: bool, field: str
) -> None:
    with pytest.raises(DecisionRefused) as refused:
        check_decision(action, route=route, signposts=signposts, reason=reason, consent_to_share=consent)
    assert refused.value.field == field
    assert isinstance(refused.value, ValueError) and str(refused.value)


@pytest.mark.parametrize(
    ("action", "route", "signposts", "reason", "consent"),
    [
        (DecisionAction.ACCEPT, Route.FRONT_DOOR_PRIMARY, [], None, False),
        (DecisionAction.OVERRIDE, Route.FOCUSED_SUPPORT, [], "history of psychosis", False),
        (DecisionAction.DECLINE, Route.STAYING_WELL, [], "needs are practical", False),
        (DecisionAction.DECLINE, None, ["svc-1"], "needs are practical", True),
        (DecisionAction.ACCEPT, Route.VCFSE_SIGNPOST, ["svc-1"], None, True),
        (DecisionAction.CLOSE, None, [], "duplicate of an open referral", False),
    ],
)
def test_allowed_decisions(
    action: DecisionAction, route: Route | None, signposts: list[str], reason: str | None, consent: bool
) -> None:
    check_decision(action, route=route, signposts=signposts, reason=reason, consent_to_share=consent)


def test_ae_referrals_go_to_the_referring_hospitals_liaison_even_from_out_of_area() -> None:
    at = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)  # 3 am: liaison is 24/7
    from dataclasses import replace

    local = replace(facts("PR1 3BQ", source=Source.AE), referring_org="RXN")
    suggestion = screen(local, SNAPSHOT, [], None, at)
    assert suggestion.route == Route.CRISIS_RESPONSE and team_key(suggestion) == "liaison-rxn"
    assert suggestion.target_minutes == 60
    visitor = replace(facts("M1 1AA", source=Source.AE), referring_org="RXN")
    suggestion = screen(visitor, SNAPSHOT, [], None, at)
    assert suggestion.route == Route.CRISIS_RESPONSE and team_key(suggestion) == "liaison-rxn"
    assert suggestion.receiving_area is not None and "Manchester" in suggestion.receiving_area
    assert "R-ae-liaison-out-of-area" in rule_ids(suggestion)
    # Not from A&E: out of area stays out of area.
    assert screen(facts("M1 1AA"), SNAPSHOT, [], None, at).route == Route.OUT_OF_AREA
