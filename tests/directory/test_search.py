"""The public read API's filters and search: relevance, then distance from a postcode centroid;
the UK profile's age, day and time filters; service areas; and bad input as problem+json."""

from __future__ import annotations

from typing import Any

import pytest

from services.directory import store
from services.directory.schemas import ServiceProposal
from tests.directory.support import TERMS, Directory, proposal

# Real district centroids (reference/uk-outcode-centroids.csv): BB2 (Blackburn), PR1 (Preston),
# LA9 (Kendal); locations placed near each.
BLACKBURN = (53.7447, -2.4950)
PRESTON = (53.7605, -2.7011)
KENDAL = (54.3262, -2.7455)


def _at(name: str, where: tuple[float, float], **overrides: Any) -> dict[str, Any]:
    location = {"name": f"{name} venue", "latitude": where[0], "longitude": where[1]}
    return proposal(name=name, locations=[location], service_areas=[], **overrides)


async def _publish(directory: Directory, *bodies: dict[str, Any], identifier: str = "1000001") -> list[str]:
    ids = []
    async with directory.app.state.db.transaction() as session:
        for body in bodies:
            proposal_ = ServiceProposal.model_validate(body).with_ids()
            await store.publish(session, proposal_, identifier=identifier, scheme="GB-CHC", actor="test")
            ids.append(str(proposal_.id))
    return ids


def _names(body: dict[str, Any]) -> list[str]:
    return [item.get("service", item)["name"] for item in body["contents"]]


async def test_search_ranks_by_relevance_then_distance(directory: Directory) -> None:
    await _publish(
        directory,
        _at(
            "Money advice drop-in",
            KENDAL,
            description="Help with benefits and debt.",
            taxonomy_term_ids=[TERMS["benefits-debt"]],
        ),
        _at("Money advice line", BLACKBURN, description="Help with benefits and debt by phone."),
        _at("Walking group", PRESTON, description="Gentle walks; a chat about money worries is welcome."),
    )
    ranked = (await directory.get("/services", search="money")).json()
    # Both "money advice" names outrank a description-only mention; every word must match.
    assert _names(ranked)[-1] == "Walking group" and ranked["total_items"] == 3
    assert sorted(_names((await directory.get("/services", search="money advice")).json())) == [
        "Money advice drop-in", "Money advice line",
    ]  # fmt: skip
    # Equally relevant (identical text): the nearer comes first.
    await _publish(directory, _at("Carers cafe", KENDAL), _at("Carers cafe", BLACKBURN))
    carers = (await directory.get("/service_at_locations", search="carers", postcode="BB2 2DH")).json()
    assert [item["x_distance_metres"] < 5_000 for item in carers["contents"]] == [True, False]
    # Without a search, nearest first, with the distance given.
    by_distance = (await directory.get("/service_at_locations", postcode="BB2 2DH")).json()
    assert _names(by_distance) == [
        "Carers cafe",
        "Money advice line",
        "Walking group",
        "Carers cafe",
        "Money advice drop-in",
    ]  # equal distance: by name
    distances = [item["x_distance_metres"] for item in by_distance["contents"]]
    assert distances == sorted(distances) and distances[0] < 2_000 and 60_000 < distances[-1] < 70_000
    assert (
        by_distance["x_postcode"]["district"] == "BB2" and by_distance["x_postcode"]["centroid_known"] is True
    )
    within = (await directory.get("/service_at_locations", postcode="BB2 2DH", proximity=20_000)).json()
    assert (
        _names(within) == ["Carers cafe", "Money advice line", "Walking group"] and within["total_items"] == 3
    )
    # Prefix matching and stemming: "walk" finds "Walking".
    assert _names((await directory.get("/services", search="walk")).json()) == ["Walking group"]


async def test_unknown_district_says_so_and_falls_back_to_caller_coordinates(directory: Directory) -> None:
    await _publish(directory, _at("Near", BLACKBURN), _at("Far", KENDAL))
    unknown = (await directory.get("/service_at_locations", postcode="BT1 1AA")).json()
    assert unknown["x_postcode"] == {
        "postcode": "BT1 1AA",
        "district": "BT1",
        "centroid_known": False,
        "detail": unknown["x_postcode"]["detail"],
    }
    fallback = (
        await directory.get("/service_at_locations", postcode="BT1 1AA", latitude=54.3, longitude=-2.74)
    ).json()
    assert _names(fallback) == ["Far", "Near"] and fallback["x_postcode"]["centre"]["source"] == "caller"
    refused = await directory.get("/service_at_locations", postcode="BT1 1AA", proximity=1000)
    assert refused.status_code == 422 and refused.json()["x_postcode"]["centroid_known"] is False


async def test_service_areas_filter_by_postcode(directory: Directory) -> None:
    blackpool_only = proposal(
        name="Blackpool only", service_areas=[{"name": "Blackpool", "place": "blackpool"}]
    )
    everywhere = proposal(name="Everywhere", service_areas=[])
    await _publish(directory, blackpool_only, everywhere)
    in_blackpool = _names((await directory.get("/service_at_locations", postcode="FY1 1EJ")).json())
    in_kendal = _names((await directory.get("/service_at_locations", postcode="LA9 4DL")).json())
    assert sorted(in_blackpool) == ["Blackpool only", "Everywhere"] and in_kendal == ["Everywhere"]


async def test_uk_profile_age_day_and_time_filters(directory: Directory) -> None:
    await _publish(
        directory,
        proposal(
            name="Young people",
            minimum_age=11,
            maximum_age=25,
            schedules=[{"byday": "SA", "opens_at": "10:00", "closes_at": "13:00"}],
        ),
        proposal(
            name="Adults",
            minimum_age=18,
            maximum_age=None,
            schedules=[{"byday": "MO,WE", "opens_at": "18:00", "closes_at": "21:00"}],
        ),
        proposal(name="All ages", minimum_age=None, maximum_age=None, schedules=[]),
    )

    async def names(**params: Any) -> list[str]:
        return sorted(_names((await directory.get("/services", **params)).json()))

    assert await names(minimum_age=16) == ["Adults"]
    assert await names(minimum_age=11) == ["Adults", "Young people"]
    assert await names(maximum_age=30) == ["Young people"]
    assert await names(day="SA") == ["Young people"] and await names(day="wednesday") == ["Adults"]
    assert await names(start_time="17:00") == ["Adults"]
    assert await names(end_time="14:00") == ["Young people"]
    assert await names(day="MO", start_time="18:00", end_time="21:00") == ["Adults"]
    assert await names(day="SU") == []


async def test_taxonomy_organisation_and_modified_filters(directory: Directory) -> None:
    mine = await _publish(directory, proposal(name="Housing help", taxonomy_term_ids=[TERMS["housing"]]))
    await _publish(directory, proposal(name="Peer group"), identifier="1234567")
    assert _names((await directory.get("/services", taxonomy_term_id=TERMS["housing"])).json()) == [
        "Housing help"
    ]
    taxonomy_id = (await directory.get("/taxonomies")).json()["contents"][0]["id"]
    assert (await directory.get("/services", taxonomy_id=taxonomy_id)).json()["total_items"] == 2
    organization_id = (await directory.get(f"/services/{mine[0]}")).json()["organization_id"]
    assert _names((await directory.get("/services", organization_id=organization_id)).json()) == [
        "Housing help"
    ]
    assert (await directory.get("/services", modified_after="2999-01-01T00:00:00Z")).json()["empty"] is True
    assert (await directory.get("/services", modified_after="2000-01-01T00:00:00")).json()["total_items"] == 2


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/services", {"per_page": 201}, 422),
        ("/services", {"page": 0}, 422),
        ("/services", {"taxonomy_term_id": "nope"}, 422),
        ("/services", {"day": "someday"}, 422),
        ("/services", {"start_time": "25:00"}, 422),
        ("/services", {"format": "xml"}, 422),
        ("/services/not-a-uuid", {}, 404),  # an id this API cannot have issued names nothing
        ("/services/00000000-0000-4000-8000-000000000000", {}, 404),
        ("/organizations/00000000-0000-4000-8000-000000000000", {}, 404),
        ("/taxonomy_terms/00000000-0000-4000-8000-000000000000", {}, 404),
        ("/service_at_locations", {"postcode": "not a postcode"}, 422),
        ("/service_at_locations", {"latitude": 54.0}, 422),
        ("/service_at_locations", {"proximity": -5, "postcode": "BB2 2DH"}, 422),
    ],
)
async def test_bad_input_is_problem_json(
    directory: Directory, path: str, params: dict[str, Any], status: int
) -> None:
    response = await directory.get(path, **params)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"


async def test_reads_need_no_token(directory: Directory) -> None:
    assert (await directory.client.get("/directory/")).status_code == 200
    assert (await directory.client.get("/directory/taxonomy_terms")).status_code == 200
    assert (await directory.client.get("/directory/openapi.json")).json()["paths"]["/directory/services"]


async def _all_pages(directory: Directory, path: str, per_page: int, **params: Any) -> tuple[list[str], int]:
    ids: list[str] = []
    page, total = 1, 0
    while True:
        body = (await directory.get(path, page=page, per_page=per_page, **params)).json()
        assert body["size"] == len(body["contents"]), body
        total = body["total_items"]
        ids += [item["id"] for item in body["contents"]]
        if body["last_page"]:
            return ids, total
        page += 1


async def test_bounded_ranking_and_nearest_first_match_the_full_ordering(
    directory: Directory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages taken from a few best-ranked candidates (widening as filters drop them, ties never
    split), or from a circle grown around the centre, are exactly the pages of the full query."""
    from services.directory import queries

    bodies = []
    for n in range(24):
        # Relevance in tiers (name, taxonomy terms, description only), with identical texts tied.
        name = ["Money advice", "Walking group", "Cafe"][n % 3] + f" {(23 - n) // 6}"
        where = (BLACKBURN[0] + (n % 7) * 0.01, BLACKBURN[1] - (n % 5) * 0.015)
        bodies.append(
            _at(
                name,
                where,
                description="Money worries welcome." if n % 2 else "A friendly group.",
                minimum_age=[None, 18, 65][n % 3 if n % 4 else 0],
                taxonomy_term_ids=[TERMS["benefits-debt"]] if n % 4 == 1 else [TERMS["peer-support"]],
            )
        )
    await _publish(directory, *bodies)
    cases = [
        ("/services", {"search": "money"}),
        ("/services", {"search": "money", "minimum_age": 18}),
        ("/services", {"search": "group"}),
        ("/services", {"minimum_age": 18, "taxonomy_term_id": TERMS["peer-support"]}),
        ("/services", {"day": "TU", "start_time": "17:00"}),
        ("/service_at_locations", {"search": "money", "postcode": "BB2 2DH"}),
        ("/service_at_locations", {"search": "money", "postcode": "BB2 2DH", "proximity": 2500}),
        ("/service_at_locations", {"postcode": "BB2 2DH"}),
        ("/service_at_locations", {"latitude": 53.79, "longitude": -2.50, "minimum_age": 18}),
    ]

    async def unbounded(*_: Any, **__: Any) -> None:
        return None

    # Few first candidates, so pages come from widened candidate sets.
    monkeypatch.setattr(queries, "FIRST_CANDIDATES", 1)
    best, calls = queries._best, []

    async def counted(*args: Any) -> Any:
        calls.append(args[-1])
        return await best(*args)

    monkeypatch.setattr(queries, "_best", counted)
    for path, params in cases:
        bounded = {per_page: await _all_pages(directory, path, per_page, **params) for per_page in (2, 5)}
        with monkeypatch.context() as patch:
            patch.setattr(queries, "_bounded", unbounded)
            patch.setattr(queries, "_nearest", unbounded)
            full, total = await _all_pages(directory, path, 200, **params)
        assert len(full) == total and total > 2, (path, params)
        for per_page, (ids, counted) in bounded.items():
            assert (ids, counted) == (full, total), (path, params, per_page)
    assert calls and min(calls) < 24  # the bounded path ran, on fewer candidates than matches
    # A cap that forces the full ranking gives the same answers.
    reference = await _all_pages(directory, "/services", 200, search="money")
    assert await _all_pages(directory, "/services", 3, search="money") == reference
    monkeypatch.setattr(queries, "MAX_CANDIDATES", 2)
    assert await _all_pages(directory, "/services", 3, search="money") == reference


async def test_best_candidates_never_split_a_tie(
    directory: Directory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.directory import queries

    # Equally relevant, published in the reverse of the name order that breaks their tie.
    tied = [_at(f"Carers cafe {letter}", KENDAL) for letter in "edcba"]
    await _publish(directory, *tied, _at("Carers support cafe", KENDAL, description="Carers."))
    monkeypatch.setattr(queries, "FIRST_CANDIDATES", 1)
    pages = [
        _names((await directory.get("/services", search="carers", per_page=1, page=p)).json())
        for p in (1, 2, 3)
    ]
    assert pages == [["Carers support cafe"], ["Carers cafe a"], ["Carers cafe b"]]
    async with directory.app.state.db.session() as session:
        rows, complete = await queries._best(session, ["carers"], 3)
        everything, all_of_them = await queries._best(session, ["carers"], 50)
    assert all_of_them and len(everything) == 6 and not complete
    scores = [score for _, score in everything]
    assert scores == sorted(scores)
    # Whatever is returned is every match scoring better than the ones left out.
    assert rows == [row for row in everything if row[1] < everything[len(rows)][1]]


async def test_one_word_pages_match_the_full_ranking(
    directory: Directory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-word search (on PostgreSQL from the impact-ordered index, directory_fts_ranks) gives
    the pages and counts that ranking every match gives: ties by name then id, paging, a prefix
    that several words share, a republished name and a withdrawn service."""
    bodies = [
        _at(
            f"{['Garden', 'Cafe', 'Walking'][n % 3]} group {n % 4}",
            PRESTON,
            description=["Gardening together.", "A garden cafe.", "Walks and gardens."][n % 3],
        )
        for n in range(14)
    ]
    ids = await _publish(directory, *bodies)
    async with directory.app.state.db.transaction() as session:
        renamed = {**bodies[0], "id": ids[0], "name": "Aaa garden group"}
        await store.publish(
            session, ServiceProposal.model_validate(renamed).with_ids(), identifier="1000001",
            scheme="GB-CHC", actor="test",
        )  # fmt: skip
        await store.withdraw(session, ids[1])
    searches = [("garden", 1, 5), ("garden", 2, 5), ("garden", 4, 5), ("cafe", 1, 50), ("walk", 1, 3),
                ("gard", 1, 50), ("nothing", 1, 5)]  # fmt: skip

    async def pages() -> list[Any]:
        answers = []
        for word, page, per_page in searches:
            body = (await directory.get("/services", search=word, page=page, per_page=per_page)).json()
            answers.append(([item["id"] for item in body["contents"]], body["total_items"]))
        return answers

    indexed = await pages()
    assert indexed[0][1] == 13 and indexed[0][0][0] == ids[0] and ids[1] not in indexed[0][0]

    async def full_ranking(*_: Any, **__: Any) -> None:
        return None

    monkeypatch.setattr("services.directory.queries._ranked_page", full_ranking)
    assert indexed == await pages()
