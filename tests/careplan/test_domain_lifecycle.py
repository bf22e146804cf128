"""Issue 17's rules as pure functions, with properties: whether a late entry changed the plan
clock's outcome (`withdrawn_clock_events`), the earliest clinical time of a record, a revised plan
never needing a second breach reason, the re-access clock start, and the worklist's SQL sort key
(the running clock's London start day) ordering exactly as `order_worklist` does."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.clocks import (
    AT_RISK_DAY,
    CLOCK_SKEW,
    TARGET_DAYS,
    ClockEvent,
    EpisodeFacts,
    due_clock_events,
    plan_clock,
)
from contracts.timezones import LONDON, london_date
from services.careplan.domain import (
    BEFORE_ROUTING_KINDS,
    BreachReason,
    DischargeReason,
    RuleRefused,
    WorklistItem,
    check_clinical_time,
    check_discharge,
    check_plan_agreement,
    clinical_time_bound,
    clock_outcome,
    reaccess_plan_clock_start,
    withdrawn_clock_events,
    worklist_key,
)
from services.careplan.models import plan_clock_day

REFERRED = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
ASSESSED = datetime(2026, 1, 12, 10, 0, tzinfo=UTC)
BOTH = frozenset(ClockEvent)


def facts(**changes: object) -> EpisodeFacts:
    base = EpisodeFacts(
        referral_received_at=REFERRED, age_at_referral=34, first_assessment_completed_at=ASSESSED,
        plan_agreed_at=None, first_attended_contact_at=None, first_outcome_measure_at=None,
        first_meaningful_assessment_at=None, first_intervention_at=None, assessment_started_at=None,
        advice_or_signposting_at=None,
    )  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]


def day(n: int, hour: int = 12) -> datetime:
    return datetime.combine(london_date(ASSESSED) + timedelta(days=n), time(hour), tzinfo=LONDON)


moments = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
)
offsets = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=80))


# --- did a late entry change the clock's outcome? -------------------------------------------------


def test_a_plan_agreed_by_day_28_withdraws_the_breach_and_before_day_21_the_warning() -> None:
    late = day(40)
    assert withdrawn_clock_events(facts(plan_agreed_at=day(25)), late, BOTH) == [ClockEvent.BREACHED]
    assert withdrawn_clock_events(facts(plan_agreed_at=day(28, 23)), late, BOTH) == [ClockEvent.BREACHED]
    assert withdrawn_clock_events(facts(plan_agreed_at=day(29, 0)), late, BOTH) == []
    assert withdrawn_clock_events(facts(plan_agreed_at=day(20)), late, BOTH) == [
        ClockEvent.BREACHED, ClockEvent.AT_RISK,
    ]  # fmt: skip
    # A back-dated discharge freezes the clock where it was: nothing past it happened.
    assert withdrawn_clock_events(facts(discharged_at=day(22)), late, BOTH) == [ClockEvent.BREACHED]
    # Nothing sent, nothing to withdraw; an unchanged clock withdraws nothing.
    assert withdrawn_clock_events(facts(plan_agreed_at=day(3)), late, ()) == []
    assert withdrawn_clock_events(facts(), late, BOTH) == []


@given(start=moments, sent_after=offsets, later=offsets, sent=st.sets(st.sampled_from(ClockEvent)))
def test_withdrawn_is_what_was_sent_and_no_longer_holds(
    start: datetime, sent_after: timedelta, later: timedelta, sent: set[ClockEvent]
) -> None:
    f = facts(first_assessment_completed_at=start, plan_agreed_at=start + sent_after)
    now = start + sent_after + later
    withdrawn = withdrawn_clock_events(f, now, sent)
    assert set(withdrawn) <= sent and len(withdrawn) == len(set(withdrawn))
    assert set(withdrawn) == sent - clock_outcome(f, now)
    days = plan_clock(f, now).days_elapsed
    assert (ClockEvent.BREACHED in withdrawn) == (ClockEvent.BREACHED in sent and days <= TARGET_DAYS)
    assert (ClockEvent.AT_RISK in withdrawn) == (ClockEvent.AT_RISK in sent and days < AT_RISK_DAY)


@given(start=moments, sent_at=offsets, later=offsets)
def test_what_the_scheduler_sent_is_never_withdrawn_by_the_same_facts(
    start: datetime, sent_at: timedelta, later: timedelta
) -> None:
    f = facts(first_assessment_completed_at=start)
    sent = due_clock_events(f, start + sent_at, frozenset())
    assert withdrawn_clock_events(f, start + sent_at + later, sent) == []


@given(start=moments, sent_at=offsets, agreed_after=offsets)
def test_an_agreement_after_the_breach_never_withdraws_it(
    start: datetime, sent_at: timedelta, agreed_after: timedelta
) -> None:
    f = facts(first_assessment_completed_at=start)
    sent = due_clock_events(f, start + sent_at, frozenset())
    agreed = replace(f, plan_agreed_at=start + sent_at + agreed_after)
    assert withdrawn_clock_events(agreed, start + sent_at + agreed_after, sent) == []


# --- the earliest clinical time -------------------------------------------------------------------

OPENED = REFERRED + timedelta(days=2)
NOW = REFERRED + timedelta(days=30)
KINDS = ["contact", "assessment", "outcome_measure", "intervention", "advice", "plan", "plan_agreement",
         "review", "discharge"]  # fmt: skip


@given(
    kind=st.sampled_from(KINDS),
    offset=st.timedeltas(min_value=timedelta(days=-60), max_value=timedelta(days=40)),
    linked=st.booleans(),
)
def test_clinical_times_are_bounded_by_opening_referral_or_linked_episode(
    kind: str, offset: timedelta, linked: bool
) -> None:
    previous_referral = REFERRED - timedelta(days=45)
    linked_from = previous_referral if linked else None
    at = REFERRED + offset
    if linked:
        bound = previous_referral
    elif kind in BEFORE_ROUTING_KINDS:
        bound = REFERRED  # the crisis first contact or an assessment before routing
    else:
        bound = OPENED
    assert (
        clinical_time_bound(
            kind, referral_received_at=REFERRED, opened_at=OPENED, linked_from_received_at=linked_from
        )[0]
        == bound
    )
    ok = bound <= at <= NOW + CLOCK_SKEW
    try:
        check_clinical_time(
            at, now=NOW, referral_received_at=REFERRED, field="at", kind=kind, opened_at=OPENED,
            linked_from_received_at=linked_from,
        )  # fmt: skip
    except RuleRefused as refused:
        assert not ok and refused.field == "at"
    else:
        assert ok


def test_an_opening_before_the_referral_never_lowers_the_bound() -> None:
    assert clinical_time_bound("plan", referral_received_at=REFERRED, opened_at=REFERRED - timedelta(1)) == (
        REFERRED, "the referral was received",
    )  # fmt: skip


# --- agreement, discharge, re-access ---------------------------------------------------------------


def agree(f: EpisodeFacts, agreed_at: datetime, **kw: object) -> None:
    args: dict[str, object] = {"breach_reason": None, "breach_text": None, "declined_to_sign_reason": None,
                               "how_agreed": "in_person"}  # fmt: skip
    args.update(kw)
    check_plan_agreement(f, agreed_at, **args)  # type: ignore[arg-type]


def test_a_revised_plan_after_a_breached_first_agreement_needs_no_reason() -> None:
    with pytest.raises(RuleRefused):
        agree(facts(), day(30))
    agree(facts(), day(30), breach_reason=BreachReason.CAPACITY)
    agree(facts(plan_agreed_at=day(30)), day(60))  # the revision: no second reason


@given(first=st.integers(min_value=0, max_value=60), gap=st.integers(min_value=-60, max_value=60))
def test_a_reason_only_for_the_agreement_that_stops_a_breached_clock(first: int, gap: int) -> None:
    f = facts(plan_agreed_at=day(first))
    at = day(first + gap)
    becomes_first = at < day(first)
    try:
        agree(f, at)
    except RuleRefused as refused:
        assert refused.field == "breach_reason" and becomes_first and first + gap > TARGET_DAYS
    else:
        assert not becomes_first or first + gap <= TARGET_DAYS


def test_only_triage_discharges_for_a_closed_referral() -> None:
    with pytest.raises(RuleRefused) as refused:
        check_discharge(
            facts(plan_agreed_at=day(3)), reason=DischargeReason.REFERRAL_CLOSED, without_plan_reason=None
        )
    assert refused.value.field == "reason"


@given(opened=moments)
def test_a_reaccess_plan_clock_starts_at_the_opening(opened: datetime) -> None:
    start = reaccess_plan_clock_start(opened)
    clock = plan_clock(facts(first_assessment_completed_at=start), opened)
    assert clock.start == opened and clock.days_remaining == TARGET_DAYS


# --- the worklist's SQL key -----------------------------------------------------------------------


def sql_key(item: WorklistItem, start_day: int | None, today: int) -> tuple[bool, int, datetime, str]:
    """What `api.worklist_order` sorts by, in Python."""
    no_clock = start_day is None
    return (no_clock, 0 if start_day is None else min(start_day, today), item.opened_at, item.episode_id)


@given(
    now=moments,
    episodes=st.lists(
        st.tuples(
            st.one_of(st.none(), st.timedeltas(min_value=-CLOCK_SKEW, max_value=timedelta(days=60))),
            st.booleans(),
            st.integers(min_value=0, max_value=3),
            st.uuids(),
        ),
        max_size=25,
    ),
)
def test_the_start_day_orders_the_worklist_as_days_remaining_does(
    now: datetime, episodes: list[tuple[timedelta | None, bool, int, object]]
) -> None:
    today = london_date(now).toordinal()
    rows = []
    for back, agreed, opened_days, uid in episodes:
        started = now - back if back is not None else None
        agreed_at = started + timedelta(days=1) if agreed and started is not None else None
        clock = plan_clock(facts(first_assessment_completed_at=started, plan_agreed_at=agreed_at), now)
        item = WorklistItem(str(uid), clock.days_remaining, clock.state, now - timedelta(days=opened_days))
        rows.append((item, plan_clock_day(started, agreed_at)))
    by_domain = [item.episode_id for item in sorted((r[0] for r in rows), key=worklist_key)]
    by_sql = [item.episode_id for item, start_day in sorted(rows, key=lambda r: sql_key(r[0], r[1], today))]
    assert by_sql == by_domain
