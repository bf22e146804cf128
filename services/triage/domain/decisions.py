"""The decisions a clinician records and the referral lifecycle they move it through (kept as
data: `LIFECYCLE`), with the rules a decision must keep."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from contracts.vocabulary import EPISODE_ROUTES, Route
from shared.problems import Refusal

# --- decisions and the referral lifecycle --------------------------------------------------------


class DecisionAction(StrEnum):
    ACCEPT = "accept"  # take the suggestion as it stands
    OVERRIDE = "override"  # choose another route or team (with a reason) before routing
    DECLINE = "decline"  # not for this service, still with an alternative offer
    CLOSE = "close"  # a duplicate, withdrawn or completed referral (with a reason)
    TRANSFER = "transfer"  # after routing: another team or route, applied to the episode
    REPRIORITISE = "reprioritise"  # change the clinical priority (with a reason), e.g. a crisis downgrade


class ReferralStatus(StrEnum):
    RECEIVED = "received"  # awaiting triage
    ROUTED = "routed"  # with a clinical team (careplan opens the episode)
    SIGNPOSTED = "signposted"  # the offer is named partner services
    CLOSED = "closed"  # declined with an alternative, or closed with a reason


class Intake(StrEnum):
    """How a referral enters the lifecycle."""

    SCREENED = "screened"  # awaits a triage decision
    REACCESS = "reaccess"  # within the re-access window: straight back to the named worker's team


class Target(StrEnum):
    """Where a decision leads, before the route is known: the route decides between the two."""

    BY_ROUTE = "by_route"  # routed to a team, or signposted when the route is the VCFSE signpost
    ROUTED = "routed"
    SAME = "same"  # the status stays (a transfer, a change of priority)
    CLOSED = "closed"


@dataclass(frozen=True)
class Transition:
    target: Target
    events: tuple[str, ...]  # the `cmh.triage.referral.<verb>` events this transition publishes
    note: str


# The referral lifecycle, as data: which decision each status allows, where it leads and what it
# publishes. Anything not listed is refused (409) and publishes nothing. Besides these, any
# decision that changes the priority publishes `prioritised`, and offering partner services
# (with consent) publishes `signposted`, which the directory turns into warm handovers.
INTAKE: dict[Intake, tuple[ReferralStatus, tuple[str, ...]]] = {
    Intake.SCREENED: (ReferralStatus.RECEIVED, ("received", "prioritised")),
    Intake.REACCESS: (ReferralStatus.ROUTED, ("received", "prioritised", "routed")),
}
LIFECYCLE: dict[ReferralStatus, dict[DecisionAction, Transition]] = {
    ReferralStatus.RECEIVED: {
        DecisionAction.ACCEPT: Transition(Target.BY_ROUTE, ("routed",), "the suggestion is accepted"),
        DecisionAction.OVERRIDE: Transition(Target.BY_ROUTE, ("routed",), "another route or team"),
        DecisionAction.DECLINE: Transition(Target.CLOSED, ("closed",), "declined, with an alternative"),
        DecisionAction.CLOSE: Transition(Target.CLOSED, ("closed",), "closed with a reason"),
        DecisionAction.REPRIORITISE: Transition(Target.SAME, ("prioritised",), "priority changed"),
    },
    ReferralStatus.ROUTED: {
        DecisionAction.TRANSFER: Transition(
            Target.SAME, ("transferred",), "careplan moves the open episode to the new team"
        ),
        DecisionAction.CLOSE: Transition(
            Target.CLOSED, ("closed",), "careplan ends the open episode (discharged: referral closed)"
        ),
        DecisionAction.REPRIORITISE: Transition(Target.SAME, ("prioritised",), "priority changed"),
    },
    ReferralStatus.SIGNPOSTED: {
        DecisionAction.OVERRIDE: Transition(Target.ROUTED, ("routed",), "a clinical route after all"),
        DecisionAction.CLOSE: Transition(Target.CLOSED, ("closed",), "closed with a reason"),
        DecisionAction.REPRIORITISE: Transition(Target.SAME, ("prioritised",), "priority changed"),
    },
    ReferralStatus.CLOSED: {},
}
# EPISODE_ROUTES (routes with a clinical team, where careplan keeps an episode) is the shared
# vocabulary's (contracts/vocabulary.py): careplan opens episodes for exactly these.


class DecisionRefused(Refusal, ValueError):
    """A triage decision the rules do not allow; `field` names the input to fix (the one
    `Refusal`: 422 "Triage rule broken")."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__("triage", field, message)


class TransitionRefused(ValueError):
    """A decision the referral's current status does not allow (409: nothing changes)."""

    def __init__(
        self, status: ReferralStatus, action: DecisionAction, allowed: Sequence[DecisionAction]
    ) -> None:
        hint = {
            (ReferralStatus.ROUTED, DecisionAction.OVERRIDE): " Use transfer to move it to another team.",
            (ReferralStatus.ROUTED, DecisionAction.ACCEPT): " It was accepted already.",
            (ReferralStatus.ROUTED, DecisionAction.DECLINE): " Close it with a reason instead.",
        }.get((status, action), "")
        allowed_text = ", ".join(a.value for a in allowed) or "nothing: it is closed"
        message = f"a {status.value} referral cannot take '{action.value}' (allowed: {allowed_text}).{hint}"
        super().__init__(message)
        self.status = status
        self.action = action
        self.message = message


@dataclass(frozen=True)
class Step:
    """What an allowed decision does: the status it leads to and the lifecycle events it publishes."""

    source: ReferralStatus
    target: ReferralStatus
    events: tuple[str, ...]
    ends_episode: bool  # closing a routed referral ends its open episode


def next_step(status: ReferralStatus | str, action: DecisionAction | str, route: Route | None) -> Step:
    """The lifecycle step a decision takes from `status` with the chosen `route`, or
    `TransitionRefused` when the status does not allow it."""
    status, action = ReferralStatus(status), DecisionAction(action)
    allowed = LIFECYCLE[status]
    transition = allowed.get(action)
    if transition is None:
        raise TransitionRefused(status, action, tuple(allowed))
    events = transition.events
    if transition.target is Target.BY_ROUTE:
        target = ReferralStatus.SIGNPOSTED if route == Route.VCFSE_SIGNPOST else ReferralStatus.ROUTED
        if target is ReferralStatus.SIGNPOSTED:
            events = ("signposted",)  # the offer is the partner services: that event carries them
    elif transition.target is Target.SAME:
        target = status
    else:
        target = ReferralStatus(transition.target.value)
    return Step(
        status,
        target,
        events,
        ends_episode=status is ReferralStatus.ROUTED and target is ReferralStatus.CLOSED,
    )


def intake_step(reaccess: bool) -> tuple[ReferralStatus, tuple[str, ...]]:
    """The status a new referral starts in and the events its intake publishes."""
    return INTAKE[Intake.REACCESS if reaccess else Intake.SCREENED]


def check_decision(
    action: DecisionAction,
    *,
    route: Route | None,
    signposts: Sequence[str],
    reason: str | None,
    consent_to_share: bool,
    team_id: str | None = None,
    priority_changed: bool = False,
) -> None:
    """Refuse decisions that break the rules: an override needs a reason and a route; a decline
    needs a reason and still an alternative offer (triage is not an eligibility gate); anything
    offered to a partner needs the person's consent to share; a transfer names the receiving
    clinical team and why; a change of priority says why."""
    try:
        action = DecisionAction(action)
    except ValueError:
        raise DecisionRefused("action", f"{action!r} is not a triage decision") from None
    has_reason = bool(reason and reason.strip())
    offered = [s for s in signposts if s and s.strip()]
    # A close (a duplicate, a withdrawn referral) needs its reason too, or it would be a silent decline.
    needs_reason = (DecisionAction.OVERRIDE, DecisionAction.DECLINE, DecisionAction.CLOSE, DecisionAction.TRANSFER,
                    DecisionAction.REPRIORITISE)  # fmt: skip
    if action in needs_reason and not has_reason:
        raise DecisionRefused(
            "reason", f"{'an' if action == DecisionAction.OVERRIDE else 'a'} {action.value} needs a reason"
        )
    if action == DecisionAction.OVERRIDE and route is None:
        raise DecisionRefused("route", "an override needs the route chosen instead")
    if action == DecisionAction.DECLINE and route is None and not offered:
        raise DecisionRefused(
            "route",
            "a decline must still offer an alternative: a route, or at least one signposted service",
        )
    if action == DecisionAction.TRANSFER:
        if route is not None and route not in EPISODE_ROUTES:
            raise DecisionRefused(
                "route",
                f"a transfer moves the episode to another clinical team; {route.value} has none "
                "(close the referral with a reason and offer it instead)",
            )
        if not team_id:
            raise DecisionRefused("team_id", "a transfer names the receiving team")
        if offered:
            raise DecisionRefused(
                "signposts", "a transfer moves the episode; offer partner services separately"
            )
    if action == DecisionAction.REPRIORITISE and not priority_changed:
        raise DecisionRefused("priority", "a reprioritise gives the new priority")
    if (route == Route.VCFSE_SIGNPOST or offered) and not consent_to_share:
        raise DecisionRefused(
            "consent_to_share", "signposting to a partner service needs the person's consent to share"
        )


# What a decision leaves the referral with. The route stands unless the decision names another
# (an accept takes the suggested one); the team is the one named, else, where the decision keeps
# the referral where it is (or takes the suggested route), the current one.
_KEEPS_ROUTE = frozenset({DecisionAction.TRANSFER, DecisionAction.REPRIORITISE, DecisionAction.CLOSE})
_KEEPS_TEAM = frozenset({DecisionAction.ACCEPT, DecisionAction.REPRIORITISE, DecisionAction.CLOSE})


def decided_route(
    action: DecisionAction, named_route: str | None, current_route: str | None, suggested_route: str | None
) -> str | None:
    """The route a decision leaves the referral on: an accept takes the suggestion; a transfer,
    reprioritise or close keeps the current route unless it names another; anything else takes the
    route it names (or none)."""
    if action is DecisionAction.ACCEPT:
        return suggested_route
    if action in _KEEPS_ROUTE and named_route is None:
        return current_route
    return named_route


def decided_team(
    action: DecisionAction,
    named_team: str | None,
    current_team: str | None,
    route: str | None,
    suggested_route: str | None,
) -> str | None:
    """The team a decision leaves the referral with (`route` as `decided_route` chose it): a
    transfer only ever the team it names (a route alone does not say who receives it); otherwise
    the named team, else the current one when the decision keeps the referral where it is (accept,
    reprioritise, close) or lands on the suggested route, else none."""
    if action is DecisionAction.TRANSFER:
        return named_team
    if named_team:
        return named_team
    if action in _KEEPS_TEAM or route == suggested_route:
        return current_team
    return None


class TransferImpossible(ValueError):
    """A transfer with nothing left to move (409: nothing changes)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def check_transfer_possible(action: DecisionAction, episode_open: bool | None) -> None:
    """A transfer moves the referral's open episode: once that episode is discharged there is
    nothing to move (`episode_open` None: no episode yet, the transfer moves the referral)."""
    if action is DecisionAction.TRANSFER and episode_open is False:
        raise TransferImpossible(
            "the referral's episode has been discharged: a transfer would move nothing (make a new referral)"
        )


def check_transfer(
    action: DecisionAction,
    *,
    team_id: str | None,
    current_team: str | None,
    route: str | None,
    current_route: str | None,
) -> None:
    """A transfer moves the referral somewhere else: to another team, or onto another route."""
    if action is DecisionAction.TRANSFER and team_id == current_team and route == current_route:
        raise DecisionRefused("team_id", "a transfer moves the referral to another team or route")


def check_backdating(received_at: datetime, now: datetime, limit: timedelta, reason: str | None) -> None:
    """A received time further back than `limit` needs a reason: the clocks start then."""
    if received_at < now - limit and not (reason and reason.strip()):
        raise DecisionRefused(
            "backdated_reason",
            f"received_at is more than {limit.days} days ago: say why it is recorded this late",
        )


def held_for_identity(step: Step, action: DecisionAction, *, in_review: bool, crisis: bool) -> bool:
    """Whether a decision waits for the referral's identity review: routing (or moving) opens an
    episode under the person on file, who may not be this person. A crisis is routed regardless
    (the review stays visible)."""
    moves_into_care = (
        step.target is ReferralStatus.ROUTED and step.source is not ReferralStatus.ROUTED
    ) or action is DecisionAction.TRANSFER
    return in_review and not crisis and moves_into_care
