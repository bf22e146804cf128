"""The suggested clinical response priority and its crisis response target."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from contracts.clocks import crisis_target_minutes
from contracts.vocabulary import Priority, Source
from services.triage.domain.codes import (
    IMMINENT_RISKS,
    REQUESTED_PRIORITY,
    RequestedUrgency,
    Risk,
    Rule,
    _aware,
    more_urgent,
)

# --- priority ----------------------------------------------------------------------------------


def _risk_list(risks: Iterable[Risk]) -> str:
    return ", ".join(sorted(str(r).replace("_", " ") for r in risks))


def suggest_priority(
    risks: frozenset[Risk], source: Source, requested: RequestedUrgency | None, *, crisis_path: bool = False
) -> tuple[Priority, list[Rule]]:
    """The clinical response priority the risk indicators call for, and why. A referrer's
    requested urgency can raise it, never lower it: the risks set a floor. A referral raised on
    the crisis path is at least urgent, so it is never lost from the crisis queue: it keeps a
    deadline until a practitioner records contact or downgrades it with a reason."""
    rules: list[Rule] = []
    if Risk.SUICIDAL_INTENT in risks and Risk.SUICIDAL_PLAN in risks:
        priority = Priority.EMERGENCY
        rules.append(Rule("P1-intent-and-plan", "Suicidal intent with a plan: emergency (priority 1)."))
    elif Risk.HARM_TO_OTHERS in risks and Risk.PSYCHOSIS in risks:
        priority = Priority.EMERGENCY
        rules.append(
            Rule(
                "P1-harm-to-others-and-psychosis",
                "Risk of harm to others with psychotic symptoms: emergency (priority 1).",
            )
        )
    elif imminent := IMMINENT_RISKS & risks:
        priority = Priority.VERY_URGENT
        rules.append(
            Rule(
                "P4-imminent-risk",
                f"Imminent risk indicated ({_risk_list(imminent)}): very urgent (priority 4).",
            )
        )
    elif source == Source.AE:
        priority = Priority.VERY_URGENT
        rules.append(
            Rule("P4-ae-liaison", "Referred from A&E: very urgent, for psychiatric liaison within the hour.")
        )
    elif Risk.SUICIDAL_IDEATION in risks:
        priority = Priority.URGENT
        rules.append(
            Rule("P2-suicidal-ideation", "Suicidal thoughts without intent or plan: urgent (priority 2).")
        )
    elif Risk.SAFEGUARDING in risks:
        priority = Priority.URGENT
        rules.append(Rule("P2-safeguarding", "Safeguarding concern: urgent (priority 2)."))
    else:
        priority = Priority.ROUTINE
        rules.append(Rule("P3-no-risk-indicators", "No urgent risk indicators: routine (priority 3)."))

    if requested is not None:
        asked = REQUESTED_PRIORITY[RequestedUrgency(requested)]
        if more_urgent(asked, priority) != priority:
            rules.append(
                Rule(
                    "P-requested-raises",
                    f"The referrer asked for {asked.name.lower().replace('_', ' ')}, more urgent than the "
                    f"risks alone call for: raised to priority {int(asked)}.",
                )
            )
            priority = asked
        elif asked != priority:
            rules.append(
                Rule(
                    "P-requested-not-lowered",
                    f"The referrer asked for {asked.name.lower().replace('_', ' ')}; a request never lowers "
                    f"the priority the risks call for.",
                )
            )
    if crisis_path and priority == Priority.ROUTINE:
        priority = Priority.URGENT
        rules.append(
            Rule(
                "P2-crisis-path",
                "Raised on the crisis path without coded risk indicators: at least urgent (priority 2), on the "
                "crisis queue with a deadline until contact is recorded or a practitioner downgrades it.",
            )
        )
    return priority, rules


# --- crisis targets ----------------------------------------------------------------------------


# Minutes from referral to the first attended face-to-face contact. The brief sets no stricter
# target for an emergency than for very urgent; the suite uses the one-hour A&E liaison standard.
def crisis_target(priority: Priority, source: Source) -> int | None:
    """Minutes to first face-to-face contact (`contracts.clocks`, one definition with reporting);
    an A&E referral is seen by liaison within the hour."""
    return crisis_target_minutes(int(priority), source.value)


def deadline(received_at: datetime, priority: Priority, source: Source) -> datetime | None:
    """When the first face-to-face contact is due (the crisis queue is ordered by this)."""
    _aware(received_at, "the time a referral was received")
    minutes = crisis_target(priority, source)
    # Elapsed minutes, not wall-clock: added in UTC, so a clock change inside the window is no error.
    return None if minutes is None else received_at.astimezone(UTC) + timedelta(minutes=minutes)
