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
from datetime import UTC, date, datetime, time
from enum import StrEnum

from shared.clocks import (
    CLOCK_SKEW,
    TARGET_DAYS,
    ClockState,
    EpisodeFacts,
    plan_clock,
    require_aware,
)  # fmt: skip
from shared.timezones import LONDON, london_date

HOW_AGREED: frozenset[str] = frozenset({"in_person", "telephone", "video", "letter", "declined_to_sign"})


class RuleRefused(ValueError):
    """A recording the care-planning rules do not allow; `field` names the input to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# --- recording rules ---------------------------------------------------------------------------


def _blank(text: str | None) -> bool:
    return not (text and text.strip())


def check_clinical_time(at: datetime, *, now: datetime, referral_received_at: datetime, field: str) -> None:
    """A clinical moment must be placed in time, must have happened (a few minutes of device clock
    skew allowed), and cannot precede the referral it belongs to."""
    if at.tzinfo is None or at.tzinfo.utcoffset(at) is None:
        raise RuleRefused(field, "the time needs a time zone")
    require_aware(now, "now")
    require_aware(referral_received_at, "the referral")
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
    require_aware(discharged_at, "the discharge")
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
