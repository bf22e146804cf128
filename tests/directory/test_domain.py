"""The directory's pure rules: schedules, the UK profile filters, distance, state machines."""

from __future__ import annotations

from datetime import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.directory.domain import (
    DAYS,
    EDIT_TRANSITIONS,
    HANDOVER_TRANSITIONS,
    EditAction,
    EditState,
    HandoverAction,
    HandoverState,
    PlanarFrame,
    ScheduleError,
    TransitionRefused,
    age_matches,
    distance_m,
    identifier_scheme,
    next_edit_state,
    next_handover_state,
    parse_byday,
    search_terms,
    slot_matches,
    weekly_slots,
)  # fmt: skip

times = st.times().map(lambda t: t.replace(second=0, microsecond=0))


@given(st.lists(st.sampled_from(DAYS), min_size=1), st.booleans())
def test_byday_round_trips_in_week_order(days: list[str], lower: bool) -> None:
    text = ",".join(d.lower() if lower else d for d in days)
    parsed = parse_byday(text)
    assert parsed == sorted(set(days), key=DAYS.index)


def test_byday_edges() -> None:
    assert parse_byday(None) == list(DAYS) and parse_byday(" ") == list(DAYS)
    assert parse_byday("1MO,-1FR") == ["MO", "FR"]  # monthly ordinals name their weekday
    with pytest.raises(ScheduleError):
        parse_byday("MO,XX")


@given(st.sampled_from(DAYS), times, times)
def test_slots_need_closing_after_opening(day: str, opens: time, closes: time) -> None:
    if closes <= opens:
        with pytest.raises(ScheduleError):
            weekly_slots(day, opens, closes)
    else:
        (slot,) = weekly_slots(day, opens, closes)
        assert slot.opens_minute < slot.closes_minute
        assert slot_matches(slot, day=day, start=opens, end=closes)
    with pytest.raises(ScheduleError):
        weekly_slots(day, opens, None)


@given(
    st.none() | st.integers(0, 99),
    st.none() | st.integers(0, 99),
    st.none() | st.integers(0, 99),
    st.none() | st.integers(0, 99),
)
def test_age_filters_follow_the_uk_profile(
    minimum: int | None, maximum: int | None, at_least: int | None, at_most: int | None
) -> None:
    expected = (at_least is None or (minimum or 0) >= at_least) and (
        at_most is None or (maximum is not None and maximum <= at_most)
    )
    assert age_matches(minimum, maximum, at_least=at_least, at_most=at_most) is expected


uk = st.tuples(st.floats(50.0, 58.5), st.floats(-6.0, 1.7))


@given(uk, st.floats(-0.35, 0.35), st.floats(-0.5, 0.5))
def test_planar_distance_is_within_half_a_percent_of_great_circle(
    centre: tuple[float, float], dlat: float, dlon: float
) -> None:
    frame = PlanarFrame(*centre)
    point = (centre[0] + dlat, centre[1] + dlon)
    exact = distance_m(*centre, *point)
    if exact > 100:
        assert abs(frame.metres(*point) - exact) / exact < 0.005
    assert frame.squared(*point) <= frame.radius_squared(frame.metres(*point) + 1e-6)


@given(st.sampled_from(list(EditState)), st.sampled_from(list(EditAction)), st.booleans())
def test_edit_transitions_are_exactly_the_table(
    state: EditState, action: EditAction, moderator: bool
) -> None:
    allowed_from, target, needs_moderator = EDIT_TRANSITIONS[action]
    if state in allowed_from and (moderator or not needs_moderator):
        assert next_edit_state(state, action, moderator=moderator) is target
    else:
        with pytest.raises(TransitionRefused):
            next_edit_state(state, action, moderator=moderator)


def test_published_only_by_a_moderator_from_review() -> None:
    reaching_published = [
        a for a, (_, target, _) in EDIT_TRANSITIONS.items() if target is EditState.PUBLISHED
    ]
    assert reaching_published == [EditAction.APPROVE] and EDIT_TRANSITIONS[EditAction.APPROVE][2] is True


@given(
    st.sampled_from(list(HandoverState)),
    st.sampled_from(list(HandoverAction)),
    st.none() | st.text(max_size=5),
)
def test_handover_transitions(state: HandoverState, action: HandoverAction, reason: str | None) -> None:
    allowed_from, target = HANDOVER_TRANSITIONS[action]
    ok = state in allowed_from and (action is not HandoverAction.DECLINE or bool(reason and reason.strip()))
    if ok:
        assert next_handover_state(state, action, reason=reason) is target
    else:
        with pytest.raises(TransitionRefused):
            next_handover_state(state, action, reason=reason)


@given(st.text(max_size=60))
def test_search_terms_are_safe_words(text: str) -> None:
    for word in search_terms(text):
        assert word and word.isalnum() and word == word.lower()
    assert len(search_terms(text)) <= 12


@pytest.mark.parametrize(
    ("identifier", "scheme"),
    [
        ("1000001", "GB-CHC"),
        ("217599", "GB-CHC"),
        ("SC012345", "GB-SC"),
        ("NIC100001", "GB-NIC"),
        ("01234567", "GB-COH"),
    ],
)
def test_identifier_schemes(identifier: str, scheme: str) -> None:
    assert identifier_scheme(identifier) == scheme
