"""The four-week clocks, as pure functions (no I/O, no clock reads): the plan clock this system
enforces (first completed assessment → agreed care plan) and the national four-week wait it
reports (MHSDS referral spell). Calendar days between Europe/London dates; ≤ 28 days is met.

Careplan enforces with them and reporting reports with them: one definition for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from contracts.timezones import london_date

# --- clocks ------------------------------------------------------------------------------------

AT_RISK_DAY = 21
TARGET_DAYS = 28
SPELL_JOIN_DAYS = 5  # a re-referral within this many days of a spell ending joins that spell
CLOCK_SKEW = timedelta(minutes=5)  # a device clock a little ahead is not "in the future"

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


def require_aware(at: datetime, what: str = "a moment") -> None:
    # Calendar days are London dates: a naive time cannot be placed on one.
    if at.tzinfo is None or at.tzinfo.utcoffset(at) is None:
        raise ValueError(f"{what} needs a time zone")


class TimeRefused(ValueError):
    """A clinical or referral time that cannot be; `field` names the input to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def check_moment(
    at: datetime,
    *,
    now: datetime,
    field: str,
    not_before: datetime | None = None,
    not_before_what: str = "the referral was received",
    now_what: str | None = None,
) -> None:
    """The one rule, in every service, for a time a caller gives: it must be placed in time, must
    have happened (`CLOCK_SKEW` allowed for a device clock a little ahead), and, when
    `not_before` is given, cannot precede it (e.g. the referral it belongs to).

    `now` is the latest moment allowed; when it is not the present but another recorded moment
    (a referral written no later than it was received), `now_what` names it for the refusal."""
    if at.tzinfo is None or at.tzinfo.utcoffset(at) is None:
        raise TimeRefused(field, "the time needs a time zone")
    require_aware(now, "now")
    if at > now + CLOCK_SKEW:
        raise TimeRefused(
            field, "the time is in the future" if now_what is None else f"the time is after {now_what}"
        )
    if not_before is not None:
        require_aware(not_before, "the earliest allowed time")
        if at < not_before:
            raise TimeRefused(field, f"the time is before {not_before_what}")


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
    require_aware(now, "now")
    if facts.discharged_at is not None:
        return min(now, facts.discharged_at)
    return now


def plan_clock(facts: EpisodeFacts, now: datetime) -> Clock:
    """The plan clock: from the first completed assessment to the agreed care plan."""
    start = facts.first_assessment_completed_at
    if start is None:
        # No assessment, no promise yet (even if a plan was agreed first: the clock never ran).
        return _not_started(PLAN, (NEEDS_ASSESSMENT,))
    require_aware(start, "the assessment completion")
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
    require_aware(start, "the referral")
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
    require_aware(received_at, "the referral")
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
    require_aware(now, "now")
    if facts.plan_agreed_at is not None or facts.discharged_at is not None:
        return []  # the promise is kept, or the person is no longer on the caseload
    clock = plan_clock(facts, now)
    due: list[ClockEvent] = []
    if clock.state in (ClockState.AT_RISK, ClockState.BREACHED):
        due.append(ClockEvent.AT_RISK)
    if clock.state == ClockState.BREACHED:
        due.append(ClockEvent.BREACHED)
    return [event for event in due if event not in already_sent]


# --- crisis response targets (clinical response priority) ----------------------------------------------------------------------------

EMERGENCY, URGENT, ROUTINE, VERY_URGENT = 1, 2, 3, 4  # MHSDS ClinRespPriorityType codes
AE_SOURCE = "ae"
AE_LIAISON_MINUTES = 60
# Minutes from referral to the first attended face-to-face contact, as the design brief (the project
# handout's DESIGN.md) sets them: the brief sets no stricter target for an emergency, so the suite
# uses the one-hour liaison standard.
TARGET_MINUTES: dict[int, int | None] = {
    EMERGENCY: 60,
    VERY_URGENT: 240,
    URGENT: 1440,
    ROUTINE: None,
}


def crisis_target_minutes(priority: int, source: str) -> int | None:
    """The crisis response target for a referral, in minutes; None for routine (no crisis
    target). An A&E referral is seen by liaison within the hour whatever its priority."""
    if priority not in TARGET_MINUTES:
        raise ValueError(f"{priority!r} is not a clinical response priority (1 to 4)")
    target = TARGET_MINUTES[priority]
    if source == AE_SOURCE:
        return AE_LIAISON_MINUTES if target is None else min(target, AE_LIAISON_MINUTES)
    return target
