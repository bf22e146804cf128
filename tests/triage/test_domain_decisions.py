"""What a triage decision leaves the referral with, as pure functions with properties: the route
(`decided_route`), the team (`decided_team`), and the transfer's refusals (a discharged episode
has nothing to move, `check_transfer_possible`; a transfer goes somewhere else, `check_transfer`).
The store applies them; these are their only definitions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.triage.domain import (
    DecisionAction,
    DecisionRefused,
    Route,
    TransferImpossible,
    check_transfer,
    check_transfer_possible,
    decided_route,
    decided_team,
)

actions = st.sampled_from(DecisionAction)
routes = st.none() | st.sampled_from([r.value for r in Route])
teams = st.none() | st.just("") | st.sampled_from(["team-a", "team-b", "team-c"])


@given(actions, routes, routes, routes)
def test_the_route_is_the_suggestion_on_accept_and_otherwise_stands_unless_named(
    action: DecisionAction, named: str | None, current: str | None, suggested: str | None
) -> None:
    route = decided_route(action, named, current, suggested)
    if action is DecisionAction.ACCEPT:
        assert route == suggested  # an accept takes the suggestion, whatever else was sent
    elif named is not None:
        assert route == named  # a named route is always the one taken
    elif action in (DecisionAction.TRANSFER, DecisionAction.REPRIORITISE, DecisionAction.CLOSE):
        assert route == current  # these keep the referral where it is
    else:
        assert route is None


@given(actions, teams, teams, routes, routes)
def test_the_team_is_the_named_one_else_kept_only_where_the_referral_stays(
    action: DecisionAction, named: str | None, current: str | None, route: str | None, suggested: str | None
) -> None:
    team = decided_team(action, named, current, route, suggested)
    if action is DecisionAction.TRANSFER:
        # A route alone does not say who receives it: never the current team by default.
        assert team == named
    elif named:
        assert team == named
    elif action in (DecisionAction.ACCEPT, DecisionAction.REPRIORITISE, DecisionAction.CLOSE) or (
        route == suggested
    ):
        assert team == current
    else:
        assert team is None
    # Whatever the decision, the team is one the request or the referral gave.
    assert team in (named, current, None)


@given(actions, st.none() | st.booleans())
def test_only_a_transfer_of_a_discharged_episode_is_impossible(
    action: DecisionAction, episode_open: bool | None
) -> None:
    impossible = action is DecisionAction.TRANSFER and episode_open is False
    if impossible:
        with pytest.raises(TransferImpossible, match="discharged"):
            check_transfer_possible(action, episode_open)
    else:
        check_transfer_possible(action, episode_open)


@given(actions, teams, teams, routes, routes)
def test_a_transfer_is_refused_exactly_when_it_moves_nothing(
    action: DecisionAction,
    team: str | None,
    current_team: str | None,
    route: str | None,
    current_route: str | None,
) -> None:
    stays = team == current_team and route == current_route
    if action is DecisionAction.TRANSFER and stays:
        with pytest.raises(DecisionRefused) as refused:
            check_transfer(
                action, team_id=team, current_team=current_team, route=route, current_route=current_route
            )
        assert refused.value.field == "team_id"
        assert str(refused.value) == "a transfer moves the referral to another team or route"
    else:
        check_transfer(
            action, team_id=team, current_team=current_team, route=route, current_route=current_route
        )
