"""Care-planning rules as pure functions: the plan and national four-week clocks (London calendar
days across the clock changes), the at-risk and breach events, the recording rules, the re-access
window and the worklist order."""

from __future__ import annotations

import calendar
import random
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.clocks import (
    AT_RISK_DAY,
    NEEDS_ASSESSMENT,
    NEEDS_CONTACT,
    NEEDS_CYP_ANY,
    NEEDS_MEANINGFUL,
    NEEDS_OUTCOME,
    NEEDS_PLAN,
    NEEDS_PLAN_OR_INTERVENTION,
    TARGET_DAYS,
    ClockEvent,
    ClockState,
    EpisodeFacts,
    calendar_days,
    due_clock_events,
    national_clock,
    plan_clock,
    spell_start,
)
from contracts.timezones import LONDON, london_date
from services.careplan.domain import (
    BreachReason,
    DischargeReason,
    RuleRefused,
    WorklistItem,
    add_months,
    check_clinical_time,
    check_discharge,
    check_plan_agreement,
    order_worklist,
    reaccess_until,
    worklist_key,
)

REFERRED = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
ASSESSED = datetime(2026, 1, 12, 10, 0, tzinfo=UTC)  # Monday 12 January, London (GMT)


def facts(**changes: object) -> EpisodeFacts:
    base = EpisodeFacts(
        referral_received_at=REFERRED,
        age_at_referral=34,
        first_assessment_completed_at=ASSESSED,
        plan_agreed_at=None,
        first_attended_contact_at=None,
        first_outcome_measure_at=None,
        first_meaningful_assessment_at=None,
        first_intervention_at=None,
        assessment_started_at=None,
        advice_or_signposting_at=None,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def day(n: int, hour: int = 12) -> datetime:
    """Noon (by default) London time, `n` calendar days after the assessment date."""
    return datetime.combine(london_date(ASSESSED) + timedelta(days=n), time(hour), tzinfo=LONDON)


moments = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
)
offsets = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=60))


# --- plan clock --------------------------------------------------------------------------------


def test_plan_clock_not_started_without_a_completed_assessment() -> None:
    clock = plan_clock(facts(first_assessment_completed_at=None), day(3))
    assert clock.state == ClockState.NOT_STARTED
    assert clock.name == "plan"
    assert (clock.start, clock.stop, clock.days_elapsed, clock.days_remaining) == (None, None, None, None)
    assert clock.missing == (NEEDS_ASSESSMENT,)


def test_plan_agreed_without_assessment_never_started() -> None:
    clock = plan_clock(facts(first_assessment_completed_at=None, plan_agreed_at=day(2)), day(40))
    assert clock.state == ClockState.NOT_STARTED


@pytest.mark.parametrize(
    ("n", "state"),
    [
        (0, ClockState.RUNNING),
        (20, ClockState.RUNNING),
        (21, ClockState.AT_RISK),
        (28, ClockState.AT_RISK),
        (29, ClockState.BREACHED),
        (60, ClockState.BREACHED),
    ],
)
def test_running_plan_clock_states(n: int, state: ClockState) -> None:
    clock = plan_clock(facts(), day(n))
    assert clock.state == state
    assert clock.days_elapsed == n
    assert clock.days_remaining == TARGET_DAYS - n
    assert clock.stop is None
    assert clock.missing == (NEEDS_PLAN,)


def test_day_20_late_evening_is_still_day_20() -> None:
    # Calendar days, not 24-hour periods: 23:59 London on day 20 is day 20.
    assert plan_clock(facts(), day(20, 23).replace(minute=59)).state == ClockState.RUNNING
    assert plan_clock(facts(), day(21, 0)).state == ClockState.AT_RISK


@pytest.mark.parametrize(
    ("n", "state"), [(0, ClockState.MET), (28, ClockState.MET), (29, ClockState.BREACHED)]
)
def test_stopped_plan_clock_day_28_met_day_29_breached(n: int, state: ClockState) -> None:
    clock = plan_clock(facts(plan_agreed_at=day(n)), day(100))
    assert clock.state == state
    assert clock.days_elapsed == n
    assert clock.days_remaining is None
    assert clock.missing == ()
    assert clock.stop == day(n)


def test_plan_agreed_before_assessment_counts_as_day_0() -> None:
    clock = plan_clock(facts(plan_agreed_at=ASSESSED - timedelta(days=3)), day(50))
    assert (clock.state, clock.days_elapsed, clock.stop) == (ClockState.MET, 0, ASSESSED)


def test_now_before_start_counts_as_day_0() -> None:
    clock = plan_clock(facts(), ASSESSED - timedelta(days=1))
    assert (clock.days_elapsed, clock.state) == (0, ClockState.RUNNING)


def test_discharged_without_plan_freezes_the_clock() -> None:
    clock = plan_clock(facts(discharged_at=day(10)), day(90))
    assert (clock.days_elapsed, clock.state) == (10, ClockState.RUNNING)


def test_clock_refuses_naive_now() -> None:
    with pytest.raises(ValueError, match="time zone"):
        plan_clock(facts(), datetime(2026, 2, 1, 12, 0))


def test_london_dates_across_spring_forward() -> None:
    # 2026-03-28 23:30 UTC is 23:30 GMT on 28 March; 2026-04-25 23:30 UTC is 00:30 BST on 26 April.
    start = datetime(2026, 3, 28, 23, 30, tzinfo=UTC)
    assert london_date(start) == date(2026, 3, 28)
    stop = datetime(2026, 4, 25, 23, 30, tzinfo=UTC)
    assert london_date(stop) == date(2026, 4, 26)
    clock = plan_clock(facts(first_assessment_completed_at=start, plan_agreed_at=stop), stop)
    assert clock.days_elapsed == 29  # UTC dates would say 28, and met
    assert clock.state == ClockState.BREACHED
    met = plan_clock(
        facts(first_assessment_completed_at=start, plan_agreed_at=stop - timedelta(hours=1)), stop
    )
    assert (met.days_elapsed, met.state) == (28, ClockState.MET)


def test_london_dates_across_fall_back() -> None:
    # 2026-10-24 23:30 UTC is 00:30 BST on 25 October; 2026-11-22 00:30 UTC is 22 November (GMT).
    start = datetime(2026, 10, 24, 23, 30, tzinfo=UTC)
    assert london_date(start) == date(2026, 10, 25)
    now = datetime(2026, 11, 22, 0, 30, tzinfo=UTC)
    clock = plan_clock(facts(first_assessment_completed_at=start), now)
    assert clock.days_elapsed == 28  # UTC dates would say 29, and breached
    assert clock.state == ClockState.AT_RISK
    stopped = plan_clock(facts(first_assessment_completed_at=start, plan_agreed_at=now), now)
    assert stopped.state == ClockState.MET


def test_calendar_days_ignores_the_offset_of_the_inputs() -> None:
    plus_two = timezone(timedelta(hours=2))
    a = datetime(2026, 6, 1, 0, 30, tzinfo=plus_two)  # 31 May 23:30 BST
    b = datetime(2026, 6, 1, 0, 30, tzinfo=UTC)  # 1 June 01:30 BST
    assert calendar_days(a, b) == 1


@given(start=moments, elapsed=offsets, stopped=st.booleans())
def test_plan_clock_property(start: datetime, elapsed: timedelta, stopped: bool) -> None:
    end = start + elapsed
    f = facts(first_assessment_completed_at=start, plan_agreed_at=end if stopped else None)
    clock = plan_clock(f, end)
    days = (london_date(end) - london_date(start)).days
    assert clock.days_elapsed == days
    assert clock.start == start
    if stopped:
        assert clock.stop == end
        assert clock.days_remaining is None and clock.missing == ()
        assert clock.state == (ClockState.MET if days <= TARGET_DAYS else ClockState.BREACHED)
    else:
        assert clock.stop is None and clock.missing == (NEEDS_PLAN,)
        assert clock.days_remaining == TARGET_DAYS - days
        expected = (
            ClockState.BREACHED
            if days > TARGET_DAYS
            else ClockState.AT_RISK
            if days >= AT_RISK_DAY
            else ClockState.RUNNING
        )
        assert clock.state == expected


@given(start=moments, a=offsets, b=offsets)
def test_running_clock_never_counts_backwards(start: datetime, a: timedelta, b: timedelta) -> None:
    f = facts(first_assessment_completed_at=start)
    earlier, later = sorted((a, b))
    first, second = plan_clock(f, start + earlier), plan_clock(f, start + later)
    assert first.days_elapsed is not None and second.days_elapsed is not None
    assert first.days_elapsed <= second.days_elapsed


# --- national clock ----------------------------------------------------------------------------

T0 = REFERRED


def at(n: int) -> datetime:
    return T0 + timedelta(days=n)


def test_national_adult_stops_at_the_latest_of_four() -> None:
    f = facts(
        first_attended_contact_at=at(3),
        first_outcome_measure_at=at(10),
        first_meaningful_assessment_at=at(7),
        plan_agreed_at=at(30),
        first_intervention_at=at(12),  # earlier than the plan: the intervention counts
    )
    clock = national_clock(f, at(90))
    assert clock.name == "national"
    assert (clock.start, clock.stop, clock.days_elapsed) == (T0, at(12), 12)
    assert (clock.state, clock.missing, clock.days_remaining) == (ClockState.MET, (), None)


def test_national_adult_breached_when_the_last_comes_late() -> None:
    f = facts(
        first_attended_contact_at=at(3),
        first_outcome_measure_at=at(29),
        first_meaningful_assessment_at=at(7),
        plan_agreed_at=at(5),
    )
    clock = national_clock(f, at(90))
    assert (clock.stop, clock.days_elapsed, clock.state) == (at(29), 29, ClockState.BREACHED)


def test_national_adult_missing_names_what_is_absent() -> None:
    clock = national_clock(facts(first_attended_contact_at=at(2)), at(10))
    assert clock.state == ClockState.RUNNING
    assert clock.missing == (NEEDS_OUTCOME, NEEDS_MEANINGFUL, NEEDS_PLAN_OR_INTERVENTION)
    assert (clock.days_elapsed, clock.days_remaining) == (10, 18)
    none = national_clock(facts(), at(1))
    assert none.missing == (NEEDS_CONTACT, NEEDS_OUTCOME, NEEDS_MEANINGFUL, NEEDS_PLAN_OR_INTERVENTION)


def test_national_clock_is_never_at_risk() -> None:
    assert national_clock(facts(), at(25)).state == ClockState.RUNNING
    assert national_clock(facts(), at(28)).state == ClockState.RUNNING
    late = national_clock(facts(), at(29))
    assert (late.state, late.days_remaining) == (ClockState.BREACHED, -1)


def test_national_children_stop_at_the_first_of_three() -> None:
    f = facts(
        age_at_referral=17,
        first_attended_contact_at=at(9),
        assessment_started_at=at(6),
        advice_or_signposting_at=at(14),
    )
    clock = national_clock(f, at(60))
    assert (clock.stop, clock.days_elapsed, clock.state, clock.missing) == (at(6), 6, ClockState.MET, ())
    # The adult rule would wait for all four; a child needs only one.
    assert national_clock(facts(age_at_referral=17, advice_or_signposting_at=at(2)), at(60)).stop == at(2)


def test_national_children_running_missing() -> None:
    clock = national_clock(facts(age_at_referral=12), at(30))
    assert (clock.state, clock.missing) == (ClockState.BREACHED, (NEEDS_CYP_ANY,))


def test_eighteen_is_an_adult() -> None:
    f = facts(age_at_referral=18, first_attended_contact_at=at(1))
    assert national_clock(f, at(5)).stop is None


def test_national_clock_starts_at_a_joined_spell() -> None:
    spell = T0 - timedelta(days=20)
    clock = national_clock(facts(spell_started_at=spell), T0 + timedelta(days=9))
    assert (clock.start, clock.days_elapsed, clock.state) == (spell, 29, ClockState.BREACHED)


stamp = st.one_of(st.none(), st.integers(min_value=0, max_value=60))


@given(contact=stamp, outcome=stamp, meaningful=stamp, plan=stamp, intervention=stamp)
def test_national_adult_property(
    contact: int | None,
    outcome: int | None,
    meaningful: int | None,
    plan: int | None,
    intervention: int | None,
) -> None:
    def m(n: int | None) -> datetime | None:
        return None if n is None else at(n)

    f = facts(
        first_attended_contact_at=m(contact),
        first_outcome_measure_at=m(outcome),
        first_meaningful_assessment_at=m(meaningful),
        plan_agreed_at=m(plan),
        first_intervention_at=m(intervention),
    )
    clock = national_clock(f, at(90))
    either = [n for n in (plan, intervention) if n is not None]
    needed = {
        NEEDS_CONTACT: contact,
        NEEDS_OUTCOME: outcome,
        NEEDS_MEANINGFUL: meaningful,
        NEEDS_PLAN_OR_INTERVENTION: min(either) if either else None,
    }
    absent = tuple(name for name, n in needed.items() if n is None)
    assert clock.missing == absent
    assert clock.state != ClockState.AT_RISK
    if absent:
        assert clock.stop is None and clock.days_elapsed == 90
    else:
        last = max(n for n in needed.values() if n is not None)
        assert clock.stop == at(last) and clock.days_elapsed == last
        assert clock.state == (ClockState.MET if last <= TARGET_DAYS else ClockState.BREACHED)


@given(contact=stamp, started=stamp, advice=stamp, age=st.integers(min_value=0, max_value=17))
def test_national_children_property(
    contact: int | None, started: int | None, advice: int | None, age: int
) -> None:
    def m(n: int | None) -> datetime | None:
        return None if n is None else at(n)

    f = facts(
        age_at_referral=age,
        first_attended_contact_at=m(contact),
        assessment_started_at=m(started),
        advice_or_signposting_at=m(advice),
    )
    clock = national_clock(f, at(90))
    present = [n for n in (contact, started, advice) if n is not None]
    assert clock.state != ClockState.AT_RISK
    if present:
        assert clock.stop == at(min(present)) and clock.missing == ()
    else:
        assert clock.stop is None and clock.missing == (NEEDS_CYP_ANY,)


# --- spells ------------------------------------------------------------------------------------


def test_spell_joins_within_5_days_not_6() -> None:
    previous = datetime(2026, 2, 1, 9, 0, tzinfo=UTC)
    ended = datetime(2026, 3, 1, 16, 0, tzinfo=UTC)
    five = datetime(2026, 3, 6, 23, 0, tzinfo=UTC)  # 6 March in London (GMT)
    six = datetime(2026, 3, 7, 0, 30, tzinfo=UTC)
    assert spell_start(previous, ended, five) == previous
    assert spell_start(previous, ended, six) == six


def test_spell_joining_uses_london_dates() -> None:
    previous = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
    ended = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    # 6 June 23:30 UTC is 7 June 00:30 BST: six London days, a new spell.
    late = datetime(2026, 6, 6, 23, 30, tzinfo=UTC)
    assert spell_start(previous, ended, late) == late


def test_no_previous_spell_starts_at_receipt() -> None:
    received = datetime(2026, 3, 1, tzinfo=UTC)
    assert spell_start(None, None, received) == received
    assert spell_start(received - timedelta(days=30), None, received) == received


@given(previous=moments, ended_after=offsets, gap=st.integers(min_value=0, max_value=12))
def test_spell_start_property(previous: datetime, ended_after: timedelta, gap: int) -> None:
    ended = previous + ended_after
    received = datetime.combine(london_date(ended) + timedelta(days=gap), time(12), tzinfo=LONDON)
    assert spell_start(previous, ended, received) == (previous if gap <= 5 else received)


# --- events ------------------------------------------------------------------------------------


def test_at_risk_then_breached_each_once() -> None:
    f = facts()
    assert due_clock_events(f, day(20), frozenset()) == []
    assert due_clock_events(f, day(21), frozenset()) == [ClockEvent.AT_RISK]
    assert due_clock_events(f, day(25), frozenset({ClockEvent.AT_RISK})) == []
    assert due_clock_events(f, day(29), frozenset({ClockEvent.AT_RISK})) == [ClockEvent.BREACHED]
    assert due_clock_events(f, day(40), frozenset(ClockEvent)) == []


def test_late_breach_implies_at_risk_first() -> None:
    assert due_clock_events(facts(), day(35), frozenset()) == [ClockEvent.AT_RISK, ClockEvent.BREACHED]


def test_no_events_once_agreed_or_discharged_or_not_started() -> None:
    assert due_clock_events(facts(plan_agreed_at=day(30)), day(40), frozenset()) == []
    assert due_clock_events(facts(discharged_at=day(22)), day(40), frozenset()) == []
    assert due_clock_events(facts(first_assessment_completed_at=None), day(40), frozenset()) == []


@settings(max_examples=200)
@given(
    start=moments,
    steps=st.lists(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=12)), max_size=15),
)
def test_events_replayed_over_any_nows_each_once(start: datetime, steps: list[timedelta]) -> None:
    f = facts(first_assessment_completed_at=start)
    sent: list[ClockEvent] = []
    now = start
    for step in steps:
        now += step
        sent += due_clock_events(f, now, frozenset(sent))
    assert sent.count(ClockEvent.AT_RISK) <= 1
    assert sent.count(ClockEvent.BREACHED) <= 1
    if ClockEvent.BREACHED in sent:
        assert ClockEvent.AT_RISK in sent[: sent.index(ClockEvent.BREACHED)]
    final = plan_clock(f, now)
    # Whatever the order of sweeps, by the last `now` everything due has been sent.
    assert (ClockEvent.AT_RISK in sent) == (
        steps != [] and final.state in (ClockState.AT_RISK, ClockState.BREACHED)
    )
    assert (ClockEvent.BREACHED in sent) == (steps != [] and final.state == ClockState.BREACHED)


# --- recording rules ---------------------------------------------------------------------------

NOW = datetime(2026, 2, 20, 12, 0, tzinfo=UTC)


def test_clinical_time_rules() -> None:
    kw = {"now": NOW, "referral_received_at": REFERRED, "field": "contact_at"}
    check_clinical_time(NOW, **kw)  # type: ignore[arg-type]
    check_clinical_time(NOW + timedelta(minutes=5), **kw)  # type: ignore[arg-type]
    check_clinical_time(REFERRED, **kw)  # type: ignore[arg-type]
    for bad, words in [
        (NOW + timedelta(minutes=5, seconds=1), "future"),
        (REFERRED - timedelta(seconds=1), "before the referral"),
        (datetime(2026, 2, 1, 12, 0), "time zone"),
    ]:
        with pytest.raises(RuleRefused, match=words) as refused:
            check_clinical_time(bad, **kw)  # type: ignore[arg-type]
        assert refused.value.field == "contact_at"


@given(offset=st.timedeltas(min_value=timedelta(days=-60), max_value=timedelta(days=60)))
def test_clinical_time_property(offset: timedelta) -> None:
    t = NOW + offset
    ok = REFERRED <= t <= NOW + timedelta(minutes=5)
    try:
        check_clinical_time(t, now=NOW, referral_received_at=REFERRED, field="f")
    except RuleRefused:
        assert not ok
    else:
        assert ok


def agree(f: EpisodeFacts, agreed_at: datetime, **kw: object) -> None:
    args: dict[str, object] = {
        "breach_reason": None,
        "breach_text": None,
        "declined_to_sign_reason": None,
        "how_agreed": "in_person",
    }
    args.update(kw)
    check_plan_agreement(f, agreed_at, **args)  # type: ignore[arg-type]


def test_agreement_by_day_28_needs_no_reason() -> None:
    agree(facts(), day(28, 23))


def test_agreement_after_breach_needs_a_reason() -> None:
    with pytest.raises(RuleRefused, match="day 29") as refused:
        agree(facts(), day(29, 0))
    assert refused.value.field == "breach_reason"
    agree(facts(), day(29), breach_reason=BreachReason.CAPACITY)
    agree(facts(), day(29), breach_reason="persons_choice")
    with pytest.raises(RuleRefused) as refused:
        agree(facts(), day(29), breach_reason=BreachReason.OTHER, breach_text="  ")
    assert refused.value.field == "breach_text"
    agree(facts(), day(29), breach_reason=BreachReason.OTHER, breach_text="interpreter unavailable")
    with pytest.raises(RuleRefused) as refused:
        agree(facts(), day(29), breach_reason="forgot")
    assert refused.value.field == "breach_reason"


def test_agreement_without_assessment_is_allowed() -> None:
    agree(facts(first_assessment_completed_at=None), day(90))


def test_revised_plan_after_a_timely_first_needs_no_reason() -> None:
    agree(facts(plan_agreed_at=day(10)), day(60))


def test_how_agreed_and_declined_to_sign() -> None:
    for how in ("in_person", "telephone", "video", "letter"):
        agree(facts(), day(3), how_agreed=how)
    with pytest.raises(RuleRefused) as refused:
        agree(facts(), day(3), how_agreed="carrier_pigeon")
    assert refused.value.field == "how_agreed"
    with pytest.raises(RuleRefused) as refused:
        agree(facts(), day(3), how_agreed="declined_to_sign", declined_to_sign_reason=" ")
    assert refused.value.field == "declined_to_sign_reason"
    agree(facts(), day(3), how_agreed="declined_to_sign", declined_to_sign_reason="agrees but will not sign")


def test_agreement_needs_an_aware_time() -> None:
    with pytest.raises(RuleRefused) as refused:
        agree(facts(), datetime(2026, 1, 20, 12, 0))
    assert refused.value.field == "agreed_at"


@given(n=st.integers(min_value=0, max_value=60))
def test_agreement_reason_needed_exactly_when_breached(n: int) -> None:
    try:
        agree(facts(), day(n))
    except RuleRefused as refused:
        assert refused.field == "breach_reason" and n > TARGET_DAYS
    else:
        assert n <= TARGET_DAYS


def test_discharge_without_plan_needs_a_reason() -> None:
    for blank in (None, "", "   "):
        with pytest.raises(RuleRefused) as refused:
            check_discharge(facts(), reason=DischargeReason.NOT_ENGAGED, without_plan_reason=blank)
        assert refused.value.field == "without_plan_reason"
    check_discharge(
        facts(), reason=DischargeReason.NOT_ENGAGED, without_plan_reason="no contact after 3 letters"
    )
    check_discharge(
        facts(plan_agreed_at=day(5)), reason=DischargeReason.TREATMENT_COMPLETE, without_plan_reason=None
    )
    with pytest.raises(RuleRefused) as refused:
        check_discharge(facts(plan_agreed_at=day(5)), reason="bored", without_plan_reason=None)  # type: ignore[arg-type]
    assert refused.value.field == "reason"


# --- re-access ---------------------------------------------------------------------------------


def test_reaccess_until_end_of_same_london_date() -> None:
    until = reaccess_until(datetime(2026, 3, 10, 15, 0, tzinfo=UTC))
    assert until.tzinfo == UTC
    assert until.astimezone(LONDON).date() == date(2027, 3, 10)
    assert until == datetime(2027, 3, 10, 23, 59, 59, 999999, tzinfo=UTC)  # GMT in March 2027
    summer = reaccess_until(datetime(2026, 7, 1, 9, 0, tzinfo=UTC))
    assert summer == datetime(2027, 7, 1, 22, 59, 59, 999999, tzinfo=UTC)  # BST


def test_reaccess_until_uses_the_london_discharge_date() -> None:
    # 23:30 UTC on 30 June 2026 is 00:30 BST on 1 July.
    until = reaccess_until(datetime(2026, 6, 30, 23, 30, tzinfo=UTC))
    assert until.astimezone(LONDON).date() == date(2027, 7, 1)


@pytest.mark.parametrize(
    ("discharged", "months", "last"),
    [
        (date(2026, 3, 31), 11, date(2027, 2, 28)),
        (date(2027, 3, 31), 11, date(2028, 2, 29)),  # leap year
        (date(2028, 2, 29), 12, date(2029, 2, 28)),
        (date(2026, 1, 31), 1, date(2026, 2, 28)),
        (date(2026, 8, 31), 1, date(2026, 9, 30)),
        (date(2026, 12, 15), 1, date(2027, 1, 15)),
        (date(2026, 5, 20), 0, date(2026, 5, 20)),
    ],
)
def test_reaccess_until_clamps_to_month_end(discharged: date, months: int, last: date) -> None:
    until = reaccess_until(datetime.combine(discharged, time(10), tzinfo=LONDON), months)
    assert until.astimezone(LONDON).date() == last
    assert until.astimezone(LONDON).time() == time.max


@given(discharged=moments, months=st.integers(min_value=0, max_value=36))
def test_reaccess_until_property(discharged: datetime, months: int) -> None:
    until = reaccess_until(discharged, months)
    start = london_date(discharged)
    last = until.astimezone(LONDON)
    assert until.tzinfo == UTC
    assert until > discharged
    assert last.time() == time.max
    total = start.year * 12 + start.month - 1 + months
    year, month0 = divmod(total, 12)
    assert (last.year, last.month) == (year, month0 + 1)
    assert last.day == min(start.day, calendar.monthrange(last.year, last.month)[1])
    assert add_months(start, months) == last.date()


# --- worklist ----------------------------------------------------------------------------------


def test_worklist_breached_first_not_started_last() -> None:
    opened = datetime(2026, 1, 1, tzinfo=UTC)
    items = [
        WorklistItem("e-none", None, ClockState.NOT_STARTED, opened),
        WorklistItem("e-10", 10, ClockState.RUNNING, opened),
        WorklistItem("e-late", -3, ClockState.BREACHED, opened),
        WorklistItem("e-5b", 5, ClockState.AT_RISK, opened + timedelta(days=1)),
        WorklistItem("e-5a", 5, ClockState.AT_RISK, opened),
        WorklistItem("e-5c", 5, ClockState.AT_RISK, opened),
    ]
    assert [i.episode_id for i in order_worklist(items)] == [
        "e-late",
        "e-5a",
        "e-5c",
        "e-5b",
        "e-10",
        "e-none",
    ]


worklist_items = st.builds(
    WorklistItem,
    episode_id=st.text(alphabet="abc123", min_size=1, max_size=4),
    days_remaining=st.one_of(st.none(), st.integers(min_value=-30, max_value=28)),
    state=st.sampled_from(ClockState),
    opened_at=moments,
)


@given(items=st.lists(worklist_items, max_size=20), seed=st.randoms())
def test_worklist_ordering_property(items: list[WorklistItem], seed: random.Random) -> None:
    ordered = order_worklist(items)
    assert sorted(ordered, key=repr) == sorted(items, key=repr)  # a permutation
    keys = [worklist_key(i) for i in ordered]
    assert keys == sorted(keys)
    nones = [i.days_remaining is None for i in ordered]
    assert nones == sorted(nones)  # not-started after every running case
    shuffled = list(items)
    seed.shuffle(shuffled)
    assert [worklist_key(i) for i in order_worklist(shuffled)] == keys
