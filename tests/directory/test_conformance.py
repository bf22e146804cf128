"""Conformance with Open Referral UK: for many generated directories (including an empty one),
every read endpoint answers with the Page envelope and items that validate against the UK
profile's schemas, paging reaches the last page and beyond, and ndjson streams every result."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, text

from services.directory import oruk, store
from services.directory.models import (
    Edit,
    EditHistory,
    Organization,
    Service,
    ServiceAtLocation,
    ServiceDistrict,
    ServiceSlot,
    ServiceTerm,
)  # fmt: skip
from services.directory.schemas import ServiceProposal
from tests.directory.support import TERMS, Directory, assert_page, assert_valid, proposal

words = st.sampled_from(
    ["peer", "support", "housing", "advice", "carers", "walking", "café", "group", "debt", "Ūrdu"]
)
days = st.sampled_from(["MO", "TU", "WE", "TH", "FR", "SA", "SU"])


@st.composite
def schedules(draw: st.DrawFn) -> dict[str, Any]:
    opens = draw(st.integers(6 * 60, 20 * 60))
    closes = draw(st.integers(opens + 15, 23 * 60 + 59))
    chosen = draw(st.lists(days, min_size=1, max_size=3, unique=True))
    return {
        "byday": ",".join(chosen),
        "opens_at": f"{opens // 60:02d}:{opens % 60:02d}",
        "closes_at": f"{closes // 60:02d}:{closes % 60:02d}",
    }


@st.composite
def locations(draw: st.DrawFn) -> dict[str, Any]:
    located = draw(st.booleans())
    return {
        "name": " ".join(draw(st.lists(words, min_size=1, max_size=3))) + " centre",
        "latitude": draw(st.floats(53.6, 54.4)) if located else None,
        "longitude": draw(st.floats(-3.2, -2.2)) if located else None,
        "address": draw(
            st.none() | st.just({"address_1": "1 Church Street", "city": "Preston", "postal_code": "PR1 3BQ"})
        ),
        "schedules": draw(st.lists(schedules(), max_size=1)),
    }


@st.composite
def services(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    minimum = draw(st.none() | st.integers(0, 30))
    maximum = draw(st.none() | st.integers(minimum or 0, 99))
    body = proposal(
        name=" ".join(draw(st.lists(words, min_size=1, max_size=4))).capitalize(),
        minimum_age=minimum,
        maximum_age=maximum,
        taxonomy_term_ids=draw(st.lists(st.sampled_from(sorted(TERMS.values())), max_size=3, unique=True)),
        service_areas=draw(
            st.lists(
                st.sampled_from(
                    [
                        {"name": "Blackpool", "place": "blackpool"},
                        {"name": "South Cumbria", "place": "south-cumbria"},
                    ]
                ),
                max_size=2,
                unique_by=lambda a: a["place"],
            )
        ),
        schedules=draw(st.lists(schedules(), max_size=2)),
        locations=draw(st.lists(locations(), max_size=2)),
        cost_options=draw(
            st.sampled_from(
                [
                    [],
                    [{"option": "Free", "amount": 0}],
                    [{"option": "Session", "amount": 3.5, "amount_description": "per session"}],
                ]
            )
        ),
        contacts=draw(
            st.sampled_from(
                [[], [{"name": "Duty worker", "phone": "01632 960123", "email": "help@example.org"}]]
            )
        ),
    )
    return draw(st.sampled_from(["1000001", "1234567", "SC012345"])), body


async def _reset(directory: Directory) -> None:
    async with directory.app.state.db.transaction() as session:
        for table in (
            ServiceTerm,
            ServiceSlot,
            ServiceAtLocation,
            ServiceDistrict,
            Service,
            Organization,
            Edit,
            EditHistory,
        ):
            await session.execute(delete(table))
        await session.execute(text("DELETE FROM directory_fts"))


async def _publish(directory: Directory, entries: list[tuple[str, dict[str, Any]]]) -> None:
    async with directory.app.state.db.transaction() as session:
        for identifier, body in entries:
            scheme = "GB-SC" if identifier.startswith("SC") else "GB-CHC"
            await store.publish(
                session,
                ServiceProposal.model_validate(body).with_ids(),
                identifier=identifier,
                scheme=scheme,
                actor="test",
            )


async def _walk_pages(directory: Directory, path: str, schema: str, **params: Any) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    page = 1
    while True:
        body = (await directory.get(path, page=page, per_page=2, **params)).json()
        assert_page(body, schema)
        assert body["page_number"] == page and body["first_page"] is (page == 1)
        seen += body["contents"]
        if body["last_page"]:
            break
        page += 1
    assert len(seen) == body["total_items"] and page == max(1, body["total_pages"])
    beyond = (await directory.get(path, page=page + 1, per_page=2, **params)).json()
    assert_page(beyond, schema)
    assert beyond["contents"] == [] and beyond["last_page"] is True
    return seen


async def _ndjson(directory: Directory, path: str, **params: Any) -> list[dict[str, Any]]:
    response = await directory.get(path, format="ndjson", **params)
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines() if line]


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(entries=st.lists(services(), max_size=5))
async def test_every_read_endpoint_conforms(
    directory: Directory, entries: list[tuple[str, dict[str, Any]]]
) -> None:
    await _reset(directory)
    await _publish(directory, entries)

    about = (await directory.get("/")).json()
    assert about["version"] == oruk.HSDS_VERSION and about["profile"].startswith("https://")

    listed = await _walk_pages(directory, "/services", "compiled/service_list.json")
    assert len(listed) == len(entries)
    streamed = await _ndjson(directory, "/services")
    assert sorted(s["id"] for s in streamed) == sorted(s["id"] for s in listed)
    for item in streamed:
        assert_valid(item, "compiled/service_list.json")
    for item in listed:
        full = (await directory.get(f"/services/{item['id']}")).json()
        assert_valid(full, "compiled/service.json")
    for item in (await directory.get("/services", full="true", per_page=200)).json()["contents"]:
        assert_valid(item, "compiled/service.json")
    minimal = (await directory.get("/services", minimal="true", per_page=200)).json()
    assert all(set(item) == {"id", "last_modified"} for item in minimal["contents"])

    organizations = await _walk_pages(directory, "/organizations", "compiled/organization_list.json")
    for organization in organizations:
        assert_valid(
            (await directory.get(f"/organizations/{organization['id']}")).json(), "compiled/organization.json"
        )

    await _walk_pages(directory, "/taxonomies", "taxonomy.json")
    terms = await _walk_pages(directory, "/taxonomy_terms", "taxonomy_term.json")
    assert_valid((await directory.get(f"/taxonomy_terms/{terms[0]['id']}")).json(), "taxonomy_term.json")

    located = sum(len(body["locations"]) for _, body in entries)
    sals = await _walk_pages(
        directory, "/service_at_locations", "compiled/service_at_location_list.json", postcode="PR1 3BQ"
    )
    assert len(sals) <= located  # service areas may exclude some; none is invented
    assert len(await _ndjson(directory, "/service_at_locations", postcode="PR1 3BQ")) == len(sals)
    everywhere = await _walk_pages(
        directory, "/service_at_locations", "compiled/service_at_location_list.json"
    )
    assert len(everywhere) == located
    for sal in everywhere:
        assert_valid(
            (await directory.get(f"/service_at_locations/{sal['id']}")).json(),
            "compiled/service_at_location.json",
        )

    searched = await _walk_pages(directory, "/services", "compiled/service_list.json", search="support group")
    assert len(searched) == len(entries)  # every generated description mentions a support group
    assert (await directory.get("/services", search="zebra crossing")).json()["empty"] is True
