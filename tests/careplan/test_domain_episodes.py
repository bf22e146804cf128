"""Which routes careplan looks after in an episode, and the named worker's rule, as pure
functions with properties: the named worker stays on transfer only while a practitioner of the
receiving team, and only a practitioner of the episode's team may be assigned. The registry
look-up (`store.is_team_practitioner`) stays in the store."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.vocabulary import Route
from services.careplan.domain import (
    CLINICAL_ROUTES,
    RuleRefused,
    check_named_worker,
    named_worker_on_transfer,
    opens_episode,
)

workers = st.none() | st.text(min_size=1, max_size=12)


@given(st.one_of(st.none(), st.sampled_from([r.value for r in Route]), st.text(max_size=20), st.integers()))
def test_an_episode_opens_exactly_for_a_clinical_route(route: object) -> None:
    assert opens_episode(route) is (route in CLINICAL_ROUTES)


def test_the_clinical_routes_are_routes_and_exclude_the_ones_with_no_team() -> None:
    assert {r.value for r in Route} >= CLINICAL_ROUTES
    for route in (Route.VCFSE_SIGNPOST, Route.CRISIS_LINE, Route.OUT_OF_AREA):
        assert not opens_episode(route)


@given(workers, st.booleans())
def test_a_named_worker_is_kept_or_cleared_never_invented(
    worker: str | None, of_receiving_team: bool
) -> None:
    kept, cleared = named_worker_on_transfer(worker, of_receiving_team=of_receiving_team)
    # Exactly one of kept / cleared is the worker (or both none): nobody is lost or made up.
    assert (kept, cleared) in ((worker, None), (None, worker))
    if worker is None:
        assert (kept, cleared) == (None, None)
    elif of_receiving_team:
        assert kept == worker and cleared is None
    else:
        assert kept is None and cleared == worker


@given(st.booleans())
def test_only_a_practitioner_of_the_team_may_be_named(of_team: bool) -> None:
    if of_team:
        check_named_worker(of_team=of_team)
    else:
        with pytest.raises(RuleRefused) as refused:
            check_named_worker(of_team=of_team)
        assert refused.value.field == "practitioner_id"
        assert str(refused.value) == "not a practitioner of this episode's team (per the registry)"
