"""Care-planning rules, as pure functions (no I/O, no database, no clock: `now`/`at` is passed in).

Two four-week clocks run over an episode (the design brief, the project handout's DESIGN.md,
"Four-week clocks"; both are computed in `contracts/clocks.py`):

* the *plan clock*, the promise this system enforces: from the first completed assessment to a
  personalised care plan agreed with the person; at risk from day 21, breached past day 28;
* the *national clock*, NHS England's community mental health four-week wait over the MHSDS
  referral spell: reported, never enforced.

Days are calendar days between Europe/London dates, and 28 days or fewer is met. The recording
rules (`check_*`) refuse what the rules do not allow with a `RuleRefused` naming the field to fix.

Rules this module decides (issue 17), with their reasons:

* **Transfer** (triage moves a routed referral to another team): both clocks continue unchanged.
  The promise is to the person, not the team: restarting the plan clock at the receiving team
  would let a transfer hide a wait, and the national clock is the person's referral spell. The
  named worker stays only while they are a practitioner of the receiving team.
* **Re-access** (a referral within the re-access window goes straight back to the named worker's
  team, linked to the previous episode): the previous assessment is linked, not repeated, so it
  stands as this episode's first assessment and the plan clock starts when the re-access episode
  opens (`reaccess_plan_clock_start`). Starting at the old assessment's date would breach on the
  first day for a wait that never happened; waiting for a new assessment would leave the person
  with no promise at all (no repeat assessment is the point of re-access). The national clock is
  the spell's (`contracts.clocks.spell_start`).
* **A second referral for a person with an open episode at the same team** is new information in
  that episode: the clocks of the open episode go on as they were.
* **Clinical times before the episode opened** (`clinical_time_bound`) are refused, except:
  contacts and assessments, which may go back to the referral's receipt, because the crisis
  team's first contact, or an assessment, legitimately happens between referral and routing (the
  episode opens at the routing decision); and records linked from the episode's previous episode
  (`linked_from_episode_id` = the episode's `previous_episode_id`), which may go back to that
  episode's referral. Linked records are history brought forward: they never move this episode's
  clocks. Nothing is ever in the future (a few minutes of device clock skew allowed) or before the
  referral: one rule for every service, `contracts.clocks.check_moment`.
* **A late entry that changes a clock's outcome** (`withdrawn_clock_events`): a breach or at-risk
  event already sent that the facts no longer support is withdrawn by a correction event.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time
from enum import StrEnum

from contracts.clocks import (
    AT_RISK_DAY,
    TARGET_DAYS,
    ClockEvent,
    ClockState,
    EpisodeFacts,
    TimeRefused,
    check_moment,
    plan_clock,
    require_aware,
)  # fmt: skip
from contracts.timezones import LONDON, london_date
from contracts.vocabulary import EPISODE_ROUTES
from shared.problems import Refusal

HOW_AGREED: frozenset[str] = frozenset({"in_person", "telephone", "video", "letter", "declined_to_sign"})


class RuleRefused(Refusal, ValueError):
    """A recording the care-planning rules do not allow; `field` names the input to fix (the one
    `Refusal`: answered 422 "Careplan rule broken" by the shared handler)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__("careplan", field, message)


# --- episodes and the named worker --------------------------------------------------------------

# Routes that open an episode with a clinical team: the shared vocabulary's, the set triage routes
# to a clinical team (a signpost, the crisis line or out of area open none).
CLINICAL_ROUTES: frozenset[str] = frozenset(route.value for route in EPISODE_ROUTES)


def opens_episode(route: object) -> bool:
    """Whether a referral routed this way is looked after in an episode with a clinical team."""
    return route in CLINICAL_ROUTES


def named_worker_on_transfer(
    named_worker_id: str | None, *, of_receiving_team: bool
) -> tuple[str | None, str | None]:
    """The named worker an episode keeps on transfer, and the one it clears: they stay only while
    they are a practitioner of the receiving team (`of_receiving_team`, as the registry says)."""
    if named_worker_id is None or of_receiving_team:
        return named_worker_id, None
    return None, named_worker_id


def check_named_worker(*, of_team: bool) -> None:
    """A named worker is a practitioner of the episode's team (as the registry says today)."""
    if not of_team:
        raise RuleRefused("practitioner_id", "not a practitioner of this episode's team (per the registry)")


# --- recording rules ---------------------------------------------------------------------------


def _blank(text: str | None) -> bool:
    return not (text and text.strip())


# Records that may precede the episode's opening, back to the referral's receipt: the crisis first
# contact and an assessment happen between referral and routing (the episode opens at routing).
BEFORE_ROUTING_KINDS: frozenset[str] = frozenset({"contact", "assessment"})


def clinical_time_bound(
    kind: str | None,
    *,
    referral_received_at: datetime,
    opened_at: datetime | None,
    linked_from_received_at: datetime | None = None,
) -> tuple[datetime, str]:
    """The earliest clinical time a record of `kind` may carry, and how to say it.

    A record linked from the previous episode goes back to that episode's referral; a contact or
    assessment to this referral's receipt; anything else to the episode's opening (never before
    the referral). Without an opening (`opened_at=None`) the bound is the referral."""
    if linked_from_received_at is not None:
        return linked_from_received_at, "the linked episode's referral was received"
    if opened_at is None or kind in BEFORE_ROUTING_KINDS or opened_at <= referral_received_at:
        return referral_received_at, "the referral was received"
    return opened_at, "the episode opened"


def check_clinical_time(
    at: datetime,
    *,
    now: datetime,
    referral_received_at: datetime,
    field: str,
    kind: str | None = None,
    opened_at: datetime | None = None,
    linked_from_received_at: datetime | None = None,
) -> None:
    """A clinical moment must be placed in time, must have happened (a few minutes of device clock
    skew allowed), and cannot precede its bound (`clinical_time_bound`): the one rule of
    `contracts.clocks.check_moment`, its refusal as this module's `RuleRefused`."""
    require_aware(referral_received_at, "the referral")
    bound, what = clinical_time_bound(
        kind, referral_received_at=referral_received_at, opened_at=opened_at,
        linked_from_received_at=linked_from_received_at,
    )  # fmt: skip
    try:
        check_moment(at, now=now, field=field, not_before=bound, not_before_what=what)
    except TimeRefused as refused:
        raise RuleRefused(refused.field, refused.message) from None


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
    reason: the first agreement stopped the clock, and its breach (if any) was explained then. An
    agreement dated before the first one (a late entry) becomes the first: it needs a reason when
    the clock it stops is breached."""
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
    if facts.plan_agreed_at is not None and agreed_at >= facts.plan_agreed_at:
        return  # a revised plan: the first agreement stopped the clock
    clock = plan_clock(replace(facts, plan_agreed_at=agreed_at), agreed_at)
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
    # Triage closed the referral after routing: the episode ends with it (never a clinician's choice).
    REFERRAL_CLOSED = "referral_closed"


def check_discharge(facts: EpisodeFacts, *, reason: DischargeReason, without_plan_reason: str | None) -> None:
    """Discharge needs a reason; discharge without an agreed plan also needs to say why. A
    clinician cannot give `referral_closed`: only triage's closing of the referral ends an episode
    that way (`cmh.triage.referral.closed`)."""
    try:
        reason = DischargeReason(reason)
    except ValueError:
        raise RuleRefused("reason", f"{reason!r} is not a discharge reason") from None
    if reason == DischargeReason.REFERRAL_CLOSED:
        raise RuleRefused("reason", "referral_closed is recorded when triage closes the referral")
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


def reaccess_plan_clock_start(opened_at: datetime) -> datetime:
    """Where a re-access episode's plan clock starts: at its opening, the linked previous
    assessment standing as its first (see the module's rules)."""
    require_aware(opened_at, "the opening")
    return opened_at


# --- late entries and the clock's outcome --------------------------------------------------------


def clock_outcome(facts: EpisodeFacts, now: datetime) -> frozenset[ClockEvent]:
    """The plan clock's enforcement events the facts support as they stand at `now`: at risk when
    it ran to day 21 without agreement, breached when it ran past day 28 (running, stopped, or
    frozen at discharge alike)."""
    clock = plan_clock(facts, now)
    if clock.days_elapsed is None:
        return frozenset()
    held = set()
    if clock.days_elapsed >= AT_RISK_DAY:
        held.add(ClockEvent.AT_RISK)
    if clock.days_elapsed > TARGET_DAYS:
        held.add(ClockEvent.BREACHED)
    return frozenset(held)


def withdrawn_clock_events(
    facts: EpisodeFacts, now: datetime, sent: Iterable[ClockEvent]
) -> list[ClockEvent]:
    """Did a change (a late, back-dated entry) change the clock's outcome? The events already sent
    that the facts no longer support, breach first: e.g. a plan agreement back-dated to day 25
    withdraws a breach sent on day 29 (the case was at risk, so the at-risk event stands)."""
    held = clock_outcome(facts, now)
    order = (ClockEvent.BREACHED, ClockEvent.AT_RISK)
    gone = {ClockEvent(event) for event in sent} - held
    return [event for event in order if event in gone]


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
