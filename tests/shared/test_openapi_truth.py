"""The OpenAPI tells the truth (issue 20 §3), generated from every app's route table and the
gateway's merged document, so a new route is covered without editing this:

- every native operation documents, as problem+json with the Problem schema, the problems it
  answers by what it takes: 401 and 403 with a token, 422 for checked path, query or JSON input,
  409 with an Idempotency-Key, 412 with If-Match, 428 where If-Match is required, and (through the
  gateway) 429;
- a header the route requires (Idempotency-Key, If-Match) is `required: true`;
- `/fhir` in the merged document is what the CapabilityStatement says, interaction for
  interaction and search parameter for search parameter;
- no two schemas of the merged document share a title.
"""

from __future__ import annotations

import importlib
import re
from functools import cache
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel

from cmh.serving import app_factory_path
from gateway.fhir import capability_statement
from gateway.openapi import merge_documents
from services.careplan.schemas import ContactIn, PlanIn
from services.triage.schemas import DecisionIn, ReferralIn
from shared.errors import FHIR_JSON, PROBLEM_JSON, PROBLEM_REF, is_fhir_path
from shared.idempotency import RequiredIdempotency
from shared.settings import PROCESSES, SERVICES

METHODS = ("get", "put", "post", "delete", "patch")
PROBLEM_CONTENT = {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}}
DOCUMENTS = (*PROCESSES, "merged")


@cache
def _app(process: str) -> FastAPI:
    module_name, factory_name = app_factory_path(process).split(":")
    app: FastAPI = getattr(importlib.import_module(module_name), factory_name)()
    return app


@cache
def merged_document() -> dict[str, Any]:
    """The gateway's merged document, built in process from every service's own."""
    return merge_documents(_app("gateway").openapi(), {s: _app(s).openapi() for s in SERVICES})


def _document(name: str) -> dict[str, Any]:
    return merged_document() if name == "merged" else _app(name).openapi()


def _operations(document: dict[str, Any], *, fhir: bool = False) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        if is_fhir_path(path) == fhir
        for method, operation in item.items()
        if method in METHODS
    ]


def _headers(operation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"].lower(): p for p in operation.get("parameters", []) if p["in"] == "header"}


def _expected(path: str, operation: dict[str, Any], *, merged: bool) -> set[str]:
    expected: set[str] = set()
    if operation.get("security"):
        expected |= {"401", "403"}
    params = operation.get("parameters", [])
    if any(p["in"] in ("path", "query") for p in params) or "application/json" in operation.get(
        "requestBody", {}
    ).get("content", {}):
        expected.add("422")
    headers = _headers(operation)
    if "idempotency-key" in headers:
        expected |= {"400", "409"}
    if "if-match" in headers:
        expected |= {"400", "412"} | ({"428"} if headers["if-match"]["required"] else set())
    if merged and path not in ("/health", "/ready"):
        expected.add("429")
    return expected


def _oauth_error(path: str, response: dict[str, Any]) -> bool:
    """The token endpoint answers its refusals as RFC 6749 §5.2 JSON, by that standard."""
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return path == "/oauth2/token" and schema.get("$ref", "").rsplit("/", 1)[-1] in (
        "OAuthError",
        "OAuthErrorOut",
    )


@pytest.mark.parametrize("name", DOCUMENTS)
def test_every_native_operation_documents_the_problems_it_answers(name: str) -> None:
    failures = []
    for method, path, operation in _operations(_document(name)):
        responses = operation["responses"]
        for status in sorted(_expected(path, operation, merged=name == "merged")):
            if status not in responses:
                failures.append((method, path, status, "missing"))
            elif responses[status].get("content") != PROBLEM_CONTENT and not _oauth_error(
                path, responses[status]
            ):
                failures.append((method, path, status, responses[status].get("content")))
    assert not failures, failures


def _dependency_calls(route: Any) -> set[Any]:
    calls: set[Any] = set()
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        calls.add(dependant.call)
        pending.extend(dependant.dependencies)
    return calls


@pytest.mark.parametrize("process", PROCESSES)
def test_required_headers_are_marked_required(process: str) -> None:
    """Every route that refuses a create without an Idempotency-Key says so in its parameters;
    every header marked required is one the route refuses the absence of (428 for If-Match)."""
    app = _app(process)
    document = app.openapi()
    required_key = RequiredIdempotency.__metadata__[0].dependency
    failures = []
    checked = set()
    # Every route, those of included routers too (`app.routes` holds those as one entry each).
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        for method in route.methods or ():
            operation = document["paths"][route.path_format].get(method.lower())
            if operation is None:
                continue
            checked.add((method.lower(), route.path_format))
            header = _headers(operation).get("idempotency-key")
            needs_key = required_key in _dependency_calls(route)
            if needs_key and not (header and header["required"] and header["schema"].get("type") == "string"):
                failures.append((method, route.path, "Idempotency-Key is required but not marked so"))
            if header and header["required"] and not needs_key:
                failures.append((method, route.path, "Idempotency-Key is marked required but is not"))
            if_match = _headers(operation).get("if-match")
            if if_match and if_match["required"] and "428" not in operation["responses"]:
                failures.append((method, route.path, "If-Match is required but 428 is not declared"))
    documented = {
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert checked == documented  # nothing the document holds went unchecked
    assert not failures, failures


def test_some_creates_require_an_idempotency_key() -> None:
    """The check above has something to check (referral create requires one)."""
    operation = _app("triage").openapi()["paths"]["/triage/referrals"]["post"]
    assert _headers(operation)["idempotency-key"]["required"] is True


# --- /fhir ---------------------------------------------------------------------------------------

_INTERACTION_PATHS = {
    "search-type": ("get", "/fhir/{type}"),
    "create": ("post", "/fhir/{type}"),
    "read": ("get", "/fhir/{type}/{{resource_id}}"),
    "update": ("put", "/fhir/{type}/{{resource_id}}"),
    "delete": ("delete", "/fhir/{type}/{{resource_id}}"),
    "vread": ("get", "/fhir/{type}/{{resource_id}}/_history/{{version_id}}"),
}


def _fhir_base_operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for method, path, operation in _operations(merged_document(), fhir=True)
        if path.startswith("/fhir/")
    ]


def test_the_fhir_base_is_documented_as_the_capability_statement_says() -> None:
    statement = capability_statement("https://cmh.example/fhir", "0.1.0")
    resources = statement["rest"][0]["resource"]
    stated = {(r["type"], i["code"]) for r in resources for i in r["interaction"]}
    documented = {
        (op["x-fhir-type"], op["x-fhir-interaction"])
        for _, _, op in _fhir_base_operations()
        if "x-fhir-type" in op
    }
    assert stated == documented
    paths = merged_document()["paths"]
    for resource in resources:
        for interaction in resource["interaction"]:
            method, template = _INTERACTION_PATHS[interaction["code"]]
            operation = paths[template.format(type=resource["type"])][method]
            assert operation["x-fhir-interaction"] == interaction["code"]
            if interaction["code"] == "search-type":
                documented_params = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
                assert documented_params == {p["name"] for p in resource["searchParam"]}
    assert "/fhir/metadata" in paths


def test_fhir_operations_speak_fhir_json() -> None:
    failures = []
    for method, path, operation in _fhir_base_operations():
        body = operation.get("requestBody")
        if body is not None and set(body["content"]) != {FHIR_JSON}:
            failures.append((method, path, "request", body["content"]))
        for status, response in operation["responses"].items():
            content = response.get("content")
            if content is not None and set(content) != {FHIR_JSON}:
                failures.append((method, path, status, content))
            if (
                status[0] in "45"
                and content[FHIR_JSON]["schema"]["$ref"] != "#/components/schemas/FhirOperationOutcome"
            ):
                failures.append((method, path, status, "not an OperationOutcome"))
    assert not failures, failures


# --- the merged document -------------------------------------------------------------------------


def test_no_two_schemas_share_a_title() -> None:
    titles: dict[str, list[str]] = {}
    for name, schema in merged_document()["components"]["schemas"].items():
        titles.setdefault(schema.get("title", name), []).append(name)
    assert not {title: names for title, names in titles.items() if len(names) > 1}


def test_every_reference_resolves() -> None:
    schemas = merged_document()["components"]["schemas"]
    missing: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.removeprefix("#/components/schemas/") not in schemas:
                missing.add(ref)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(merged_document())
    assert not missing


# --- the main caller journeys --------------------------------------------------------------------

JOURNEYS: dict[tuple[str, str], type[BaseModel] | None] = {
    ("post", "/oauth2/token"): None,
    ("post", "/triage/referrals"): ReferralIn,
    ("post", "/triage/referrals/{referral_id}/decisions"): DecisionIn,
    ("post", "/careplan/episodes/{episode_id}/contacts"): ContactIn,
    ("post", "/careplan/episodes/{episode_id}/plans"): PlanIn,
    ("get", "/directory/services"): None,
    ("post", "/fhir/Subscription"): None,
    ("post", "/fhir/ServiceRequest"): None,
}


@pytest.mark.parametrize(("method", "path"), list(JOURNEYS))
def test_each_main_journey_is_described_with_a_realistic_example(method: str, path: str) -> None:
    operation = merged_document()["paths"][path][method]
    assert len(operation.get("description", "")) > 80
    if "requestBody" not in operation:
        return
    (media,) = operation["requestBody"]["content"].values()
    examples = [example["value"] for example in media.get("examples", {}).values()]
    assert examples, "no example request body"
    model = JOURNEYS[(method, path)]
    for example in examples:
        if model is not None:
            model.model_validate(example)  # the example is a request the route takes


# --- 405 and Allow -------------------------------------------------------------------------------

_ANY_ID = "00000000-0000-4000-8000-000000000000"


def _concrete(template: str) -> str:
    return re.sub(r"\{[^}]+\}", _ANY_ID, template)


def _matches(template: str, path: str) -> bool:
    pattern = re.sub(r"\\\{[^}]+:path\\\}", ".+", re.escape(template))
    return re.fullmatch(re.sub(r"\\\{[^}]+\\\}", "[^/]+", pattern), path) is not None


@pytest.mark.parametrize("service", SERVICES)
async def test_a_method_no_route_of_a_path_takes_is_405_with_every_method_it_takes_in_allow(
    service: str,
) -> None:
    """Generated from each service's document: for every path, a method none of the routes that
    match it takes is refused 405 (problem+json, an OperationOutcome under /fhir), and Allow names every method they do take (HEAD
    beside GET), not only the first matching route's as Starlette would."""
    app = _app(service)
    paths = app.openapi()["paths"]
    failures = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as http:
        for template in paths:
            concrete = _concrete(template)
            taken = {
                method.upper()
                for other, item in paths.items()
                if _matches(other, concrete)
                for method in item
            } & {m.upper() for m in METHODS}
            refused = next((m for m in ("PATCH", "PUT", "DELETE", "POST") if m not in taken), None)
            if refused is None:
                continue
            answer = await http.request(refused, concrete)
            expected = taken | ({"HEAD"} if "GET" in taken else set())
            allow = {m.strip() for m in answer.headers.get("allow", "").split(",") if m.strip()}
            if (
                answer.status_code != 405
                or allow != expected
                or (FHIR_JSON if is_fhir_path(concrete) else PROBLEM_JSON)  # OperationOutcome under /fhir
                not in answer.headers.get("content-type", "")
            ):
                failures.append((refused, template, answer.status_code, sorted(allow), sorted(expected)))
    assert not failures, failures
