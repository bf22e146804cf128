"""Care-planning rules, as pure functions (no I/O, no database, no clock: `now`/`at` is passed in).

Two four-week clocks run over an episode (DESIGN.md "Four-week clocks"):

* the *plan clock*, the promise this system enforces: from the first completed assessment to a
  personalised care plan agreed with the person; at risk from day 21, breached past day 28;
* the *national clock*, NHS England's community mental health four-week wait over the MHSDS
  referral spell: reported, never enforced.

Days are calendar days between Europe/London dates, and 28 days or fewer is met. The recording
rules (`check_*`) refuse what the rules do not allow with a `RuleRefused` naming the field to fix.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum

from shared.timezones import LONDON, london_date

# --- clocks ------------------------------------------------------------------------------------

AT_RISK_DAY = 21
TARGET_DAYS = 28
SPELL_JOIN_DAYS = 5  # a re-referral within this many days of a spell ending joins that spell
CLOCK_SKEW = timedelta(minutes=5)  # a device clock a little ahead is not "in the future"
HOW_AGREED: frozenset[str] = frozenset({"in_person", "telephone", "video", "letter", "declined_to_sign"})

PLAN = "plan"
NATIONAL = "national"

# What each clock still needs, in the words the worklist shows.
NEEDS_ASSESSMENT = "first assessment completed"
NEEDS_PLAN = "agreed care plan"
NEEDS_CONTACT = "first attended contact"
NEEDS_OUTCOME = "baseline outcome measure"
NEEDS_MEANINGFUL = "meaningful assessment"
NEEDS_PLAN_OR_INTERVENTION = "agreed care plan or intervention"
NEEDS_CYP_ANY = "attended contact, assessment started, or advice or signposting"


class ClockState(StrEnum):
    NOT_STARTED = "not_started"
    RUNNING = "running"
    AT_RISK = "at_risk"
    MET = "met"
    BREACHED = "breached"


@dataclass(frozen=True)
class EpisodeFacts:
    """What has happened in an episode so far; every moment is timezone-aware."""

    referral_received_at: datetime
    age_at_referral: int  # completed years: under 18 is children and young people
    first_assessment_completed_at: datetime | None
    plan_agreed_at: datetime | None
    first_attended_contact_at: datetime | None
    first_outcome_measure_at: datetime | None
    first_meaningful_assessment_at: datetime | None
    first_intervention_at: datetime | None
    assessment_started_at: datetime | None
    advice_or_signposting_at: datetime | None
    # A re-referral within 5 days of a previous spell ending joins that spell: its earlier start.
    spell_started_at: datetime | None = None
    discharged_at: datetime | None = None


@dataclass(frozen=True)
class Clock:
    name: str  # "plan" | "national"
    start: datetime | None
    stop: datetime | None
    days_elapsed: int | None  # London dates: (stop or now) minus start
    days_remaining: int | None  # TARGET_DAYS - days_elapsed while running (may go negative)
    state: ClockState
    missing: tuple[str, ...]  # what is still needed to stop it; empty once stopped


class RuleRefused(ValueError):
    """A recording the care-planning rules do not allow; `field` names the input to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _aware(at: datetime, what: str = "a moment") -> None:
    # Calendar days are London dates: a naive time cannot be placed on one.
    if at.tzinfo is None or at.tzinfo.utcoffset(at) is None:
        raise ValueError(f"{what} needs a time zone")


def calendar_days(start: datetime, end: datetime) -> int:
    """Calendar days between the Europe/London dates of two moments (never negative: a stop
    recorded before the start, or a `now` a little behind it, counts as the same day)."""
    return max(0, (london_date(end) - london_date(start)).days)


def _not_started(name: str, missing: tuple[str, ...]) -> Clock:
    return Clock(name, None, None, None, None, ClockState.NOT_STARTED, missing)


def _stopped(name: str, start: datetime, stop: datetime) -> Clock:
    days = calendar_days(start, stop)
    state = ClockState.MET if days <= TARGET_DAYS else ClockState.BREACHED
    return Clock(name, start, stop, days, None, state, ())


def _running(name: str, start: datetime, until: datetime, missing: tuple[str, ...], *, warn: bool) -> Clock:
    days = calendar_days(start, until)
    if days > TARGET_DAYS:
        state = ClockState.BREACHED
    elif warn and days >= AT_RISK_DAY:
        state = ClockState.AT_RISK
    else:
        state = ClockState.RUNNING
    return Clock(name, start, None, days, TARGET_DAYS - days, state, missing)


def _until(facts: EpisodeFacts, now: datetime) -> datetime:
    # A discharged episode's open clock is frozen at discharge: it does not keep counting (or
    # keep breaching) for a person no longer on the caseload.
    _aware(now, "now")
    if facts.discharged_at is not None:
        return min(now, facts.discharged_at)
    return now


def plan_clock(facts: EpisodeFacts, now: datetime) -> Clock:
    """The plan clock: from the first completed assessment to the agreed care plan."""
    start = facts.first_assessment_completed_at
    if start is None:
        # No assessment, no promise yet (even if a plan was agreed first: the clock never ran).
        return _not_started(PLAN, (NEEDS_ASSESSMENT,))
    _aware(start, "the assessment completion")
    if facts.plan_agreed_at is not None:
        # A plan agreed before the assessment was completed (e.g. recorded late) already met the
        # promise: it counts as stopping on the assessment day, 0 days.
        return _stopped(PLAN, start, max(start, facts.plan_agreed_at))
    return _running(PLAN, start, _until(facts, now), (NEEDS_PLAN,), warn=True)


def national_clock(facts: EpisodeFacts, now: datetime) -> Clock:
    """NHS England's community mental health four-week wait over the MHSDS referral spell.

    Reported, not enforced: its states are running, met or breached, never at risk. At risk is
    the plan clock's enforcement device (an event and a worklist flag); flagging the national
    clock too would put two competing warnings on one case for a measure nobody acts on directly.
    """
    start = facts.spell_started_at or facts.referral_received_at
    _aware(start, "the referral")
    if facts.age_at_referral >= 18:
        # Adults: the wait ends only when all four have happened, so at the latest of them.
        either = [t for t in (facts.plan_agreed_at, facts.first_intervention_at) if t is not None]
        parts: list[tuple[str, datetime | None]] = [
            (NEEDS_CONTACT, facts.first_attended_contact_at),
            (NEEDS_OUTCOME, facts.first_outcome_measure_at),
            (NEEDS_MEANINGFUL, facts.first_meaningful_assessment_at),
            (NEEDS_PLAN_OR_INTERVENTION, min(either) if either else None),
        ]
        missing = tuple(name for name, at in parts if at is None)
        if not missing:
            return _stopped(NATIONAL, start, max(at for _, at in parts if at is not None))
        return _running(NATIONAL, start, _until(facts, now), missing, warn=False)
    # Children and young people: the first of these ends the wait.
    stops = [
        t
        for t in (
            facts.first_attended_contact_at,
            facts.assessment_started_at,
            facts.advice_or_signposting_at,
        )
        if t is not None
    ]
    if stops:
        return _stopped(NATIONAL, start, min(stops))
    return _running(NATIONAL, start, _until(facts, now), (NEEDS_CYP_ANY,), warn=False)


def spell_start(
    previous_spell_start: datetime | None, previous_spell_ended_at: datetime | None, received_at: datetime
) -> datetime:
    """When a referral's national clock starts: a re-referral within 5 London calendar days of the
    previous spell ending joins that spell (MHSDS referral spell), otherwise its own receipt."""
    _aware(received_at, "the referral")
    if previous_spell_start is None or previous_spell_ended_at is None:
        return received_at
    gap = (london_date(received_at) - london_date(previous_spell_ended_at)).days
    return previous_spell_start if gap <= SPELL_JOIN_DAYS else received_at


# --- enforcement events ------------------------------------------------------------------------


class ClockEvent(StrEnum):
    AT_RISK = "at_risk"
    BREACHED = "breached"


def due_clock_events(
    facts: EpisodeFacts, now: datetime, already_sent: frozenset[ClockEvent]
) -> list[ClockEvent]:
    """The plan clock's events due now and not yet sent, at most one of each per episode.

    A breach first noticed late (say the sweep was down over days 21-28) still implies the case
    was at risk: both are returned, at risk first, so every breach has its warning before it."""
    _aware(now, "now")
    if facts.plan_agreed_at is not None or facts.discharged_at is not None:
        return []  # the promise is kept, or the person is no longer on the caseload
    clock = plan_clock(facts, now)
    due: list[ClockEvent] = []
    if clock.state in (ClockState.AT_RISK, ClockState.BREACHED):
        due.append(ClockEvent.AT_RISK)
    if clock.state == ClockState.BREACHED:
        due.append(ClockEvent.BREACHED)
    return [event for event in due if event not in already_sent]


# --- recording rules ---------------------------------------------------------------------------


def _blank(text: str | None) -> bool:
    return not (text and text.strip())


def check_clinical_time(at: datetime, *, now: datetime, referral_received_at: datetime, field: str) -> None:
    """A clinical moment must be placed in time, must have happened (a few minutes of device clock
    skew allowed), and cannot precede the referral it belongs to."""
    if at.tzinfo is None or at.tzinfo.utcoffset(at) is None:
        raise RuleRefused(field, "the time needs a time zone")
    _aware(now, "now")
    _aware(referral_received_at, "the referral")
    if at > now + CLOCK_SKEW:
        raise RuleRefused(field, "the time is in the future")
    if at < referral_received_at:
        raise RuleRefused(field, "the time is before the referral was received")


class BreachReason(StrEnum):
    CAPACITY = "capacity"
    PERSONS_CHOICE = "persons_choice"
    NOT_REACHABLE = "not_reachable"
    CLINICAL = "clinical"
    OTHER = "other"


def check_plan_agreement(
    facts: EpisodeFacts,
    agreed_at: datetime,
    *,
    breach_reason: BreachReason | None,
    breach_text: str | None,
    declined_to_sign_reason: str | None,
    how_agreed: str,
) -> None:
    """Refuse a plan agreement the rules do not allow.

    Agreeing with no completed assessment is allowed: the plan clock then never ran, so no breach
    is possible. A later agreement (a revised plan) after an earlier one never needs a breach
    reason: the first agreement stopped the clock."""
    if agreed_at.tzinfo is None or agreed_at.tzinfo.utcoffset(agreed_at) is None:
        raise RuleRefused("agreed_at", "the time needs a time zone")
    if how_agreed not in HOW_AGREED:
        raise RuleRefused(
            "how_agreed", f"how the plan was agreed must be one of {', '.join(sorted(HOW_AGREED))}"
        )
    if how_agreed == "declined_to_sign" and _blank(declined_to_sign_reason):
        raise RuleRefused("declined_to_sign_reason", "say why the person declined to sign the plan")
    if breach_reason is not None:
        try:
            breach_reason = BreachReason(breach_reason)
        except ValueError:
            raise RuleRefused("breach_reason", f"{breach_reason!r} is not a breach reason") from None
    first = agreed_at if facts.plan_agreed_at is None else min(agreed_at, facts.plan_agreed_at)
    clock = plan_clock(replace(facts, plan_agreed_at=first), agreed_at)
    if clock.state != ClockState.BREACHED:
        return
    if breach_reason is None:
        raise RuleRefused(
            "breach_reason",
            f"the plan is agreed on day {clock.days_elapsed}, past the {TARGET_DAYS}-day promise: "
            "a breach reason is needed",
        )
    if breach_reason == BreachReason.OTHER and _blank(breach_text):
        raise RuleRefused("breach_text", "a breach reason of 'other' needs a description")


class DischargeReason(StrEnum):
    TREATMENT_COMPLETE = "treatment_complete"
    TRANSFERRED = "transferred"
    PERSONS_CHOICE = "persons_choice"
    NOT_ENGAGED = "not_engaged"
    MOVED_AWAY = "moved_away"
    DIED = "died"
    OTHER = "other"


def check_discharge(facts: EpisodeFacts, *, reason: DischargeReason, without_plan_reason: str | None) -> None:
    """Discharge needs a reason; discharge without an agreed plan also needs to say why."""
    try:
        DischargeReason(reason)
    except ValueError:
        raise RuleRefused("reason", f"{reason!r} is not a discharge reason") from None
    if facts.plan_agreed_at is None and _blank(without_plan_reason):
        raise RuleRefused("without_plan_reason", "discharge without an agreed care plan needs a reason")


# --- re-access ---------------------------------------------------------------------------------


def add_months(day: date, months: int) -> date:
    """The same calendar date `months` later, clamped to the month's end (31 Jan + 1 → 28/29 Feb)."""
    years, month0 = divmod(day.month - 1 + months, 12)
    year, month = day.year + years, month0 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def reaccess_until(discharged_at: datetime, months: int = 12) -> datetime:
    """The end of the re-access window: the end of the same London calendar date `months` after
    discharge (the last microsecond, so that `at < reaccess_until` includes the whole day and the
    London date shown is the last day of the window), as a UTC instant."""
    _aware(discharged_at, "the discharge")
    if months < 0:
        raise ValueError("the re-access window cannot be negative")
    last = add_months(london_date(discharged_at), months)
    return datetime.combine(last, time.max, tzinfo=LONDON).astimezone(UTC)


# --- worklist ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorklistItem:
    episode_id: str
    days_remaining: int | None
    state: ClockState
    opened_at: datetime


def worklist_key(item: WorklistItem) -> tuple[bool, int, datetime, str]:
    # Fewest days left first (breached cases are negative, so they lead); no clock running last.
    return (item.days_remaining is None, item.days_remaining or 0, item.opened_at, item.episode_id)


def order_worklist(items: Iterable[WorklistItem]) -> list[WorklistItem]:
    """Open cases by days remaining on the plan clock; ties by when opened, then episode id."""
    return sorted(items, key=worklist_key)
