"""The directory's HTTP edges (issue 20 §5), each checked over the route table so a new route is
covered without anyone remembering to: an empty query parameter is an absent one; a malformed id
is a 404; HEAD answers wherever GET does and an undeclared method is a 405 naming what is allowed;
public reads carry an ETag and Cache-Control and answer If-None-Match with 304; and the ORUK
parameters `top_only`, `full_service` and taxonomy `search` change the answer as the standard says."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from shared.middleware import is_cacheable_public_read
from tests.directory.support import TERMS, Directory, proposal
from tests.directory.test_search import _publish

SAMPLE_ID = "00000000-0000-4000-8000-000000000000"


@dataclass(frozen=True)
class Operation:
    path: str
    methods: frozenset[str]
    query: tuple[str, ...]


def _public(directory: Directory) -> list[Operation]:
    """Every public read of the directory, from its OpenAPI document (what the routes declare)."""
    document = directory.app.openapi()
    out = []
    for path, item in document["paths"].items():
        if "get" not in item or not is_cacheable_public_read("GET", _filled(path)):
            continue
        query = tuple(p["name"] for p in item["get"].get("parameters", []) if p["in"] == "query")
        methods = frozenset(m.upper() for m in item if m in ("get", "post", "put", "patch", "delete"))
        out.append(Operation(path, methods, query))
    return out


def _filled(path: str) -> str:
    return re.sub(r"\{[^}]+\}", SAMPLE_ID, path)


async def test_an_empty_query_parameter_is_an_absent_one_on_every_public_read(directory: Directory) -> None:
    await _publish(directory, proposal(name="Housing help", taxonomy_term_ids=[TERMS["housing"]]))
    tried = 0
    for route in _public(directory):
        path = _filled(route.path)
        plain = await directory.client.get(path)
        for parameter in route.query:
            tried += 1
            empty = await directory.client.get(path, params={parameter: ""})
            assert empty.status_code == plain.status_code, (path, parameter, empty.text[:200])
            if plain.status_code == 200 and "json" in plain.headers["content-type"]:
                assert empty.json() == plain.json(), (path, parameter)
    assert tried >= 30, tried


async def test_a_malformed_id_is_not_found_on_every_route_that_reads_one(directory: Directory) -> None:
    with_ids = [route for route in _public(directory) if "{" in route.path]
    assert len(with_ids) >= 5
    for route in with_ids:
        answer = await directory.client.get(re.sub(r"\{[^}]+\}", "not-an-id", route.path))
        assert answer.status_code == 404, (route.path, answer.text[:200])
        assert answer.headers["content-type"].startswith("application/problem+json")


async def test_head_answers_wherever_get_does_and_other_methods_are_refused_with_allow(
    directory: Directory,
) -> None:
    for route in _public(directory):
        path = _filled(route.path)
        got = await directory.client.get(path)
        head = await directory.client.head(path)
        assert head.status_code == got.status_code, path
        assert head.content == b"" and head.headers.get("content-type") == got.headers.get("content-type")
        if got.status_code == 200 and "content-length" in got.headers:
            assert head.headers["content-length"] == got.headers["content-length"], path
        if route.methods == {"GET"}:
            refused = await directory.client.request("DELETE", path)
            assert refused.status_code == 405, path
            assert {m.strip() for m in refused.headers["allow"].split(",")} >= {"GET", "HEAD"}, path


async def test_public_reads_carry_validators_and_answer_a_matching_if_none_match_with_304(
    directory: Directory,
) -> None:
    await _publish(directory, proposal(name="Housing help", taxonomy_term_ids=[TERMS["housing"]]))
    checked = 0
    for route in _public(directory):
        path = _filled(route.path)
        answer = await directory.client.get(path)
        if answer.status_code != 200 or "ndjson" in answer.headers["content-type"]:
            continue
        checked += 1
        tag = answer.headers["etag"]
        assert tag.startswith('"') and "public" in answer.headers["cache-control"], path
        again = await directory.client.get(path, headers={"If-None-Match": tag})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == tag, path
        other = await directory.client.get(path, headers={"If-None-Match": '"something-else"'})
        assert other.status_code == 200 and other.json() == answer.json(), path
    assert checked >= 5, checked
    # A change is a new tag.
    before = (await directory.get("/services")).headers["etag"]
    await _publish(directory, proposal(name="Peer group"), identifier="1234567")
    assert (await directory.get("/services")).headers["etag"] != before


def _names(page: dict[str, Any]) -> list[str]:
    return [item["name"] for item in page["contents"]]


async def test_top_only_full_service_and_taxonomy_search(directory: Directory) -> None:
    await _publish(directory, proposal(name="Housing help", taxonomy_term_ids=[TERMS["housing"]]))
    every = (await directory.get("/taxonomy_terms", per_page=200)).json()
    top = (await directory.get("/taxonomy_terms", top_only="true", per_page=200)).json()
    assert 0 < top["total_items"] <= every["total_items"]
    assert all(not item.get("parent_id") for item in top["contents"])
    children = [item for item in every["contents"] if item.get("parent_id")]
    assert top["total_items"] == every["total_items"] - len(children)

    taxonomies = (await directory.get("/taxonomies")).json()
    name = taxonomies["contents"][0]["name"]
    found = (await directory.get("/taxonomies", search=name[:5].lower())).json()
    assert name in _names(found)
    assert (await directory.get("/taxonomies", search="no such taxonomy at all")).json()["total_items"] == 0

    listed = (await directory.get("/organizations")).json()
    assert all("services" not in item for item in listed["contents"])
    nested = (await directory.get("/organizations", full_service="true")).json()
    with_services = [item for item in nested["contents"] if item["services"]]
    assert with_services and all(
        "service_at_locations" in s for item in with_services for s in item["services"]
    )
