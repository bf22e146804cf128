"""Typed answers (issue 19, item 6), generated from each app's route table, so a new route is
covered without editing this: every native (non-FHIR) operation of every service and of the
gateway documents what it answers (a 2xx with a schema that says something, or no body at all)
and the problems it can answer, each as problem+json with the shared Problem schema (never
FastAPI's default validation error, which is not what the suite answers)."""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

import pytest
from fastapi import FastAPI

from cmh.serving import app_factory_path
from shared.errors import PROBLEM_JSON, PROBLEM_REF, is_fhir_path
from shared.settings import PROCESSES

METHODS = ("get", "post", "put", "patch", "delete")
PROBLEM_CONTENT = {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}}
# Operations whose answer is an open document by nature (an OpenAPI description).
OPEN_DOCUMENTS = {("get", "/directory/openapi.json")}
# The OAuth2 token endpoint answers refusals as RFC 6749 §5.2 JSON (error, error_description).
OAUTH_ERRORS = {("post", "/oauth2/token")}


@cache
def _document(process: str) -> dict[str, Any]:
    module_name, factory_name = app_factory_path(process).split(":")
    app: FastAPI = getattr(importlib.import_module(module_name), factory_name)()
    return app.openapi()


def _native_operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        if not is_fhir_path(path)
        for method, operation in item.items()
        if method in METHODS
    ]


def _says_something(schema: dict[str, Any]) -> bool:
    """Not `{}`, and not an untyped object (`dict[str, Any]`)."""
    untyped = {key: value for key, value in schema.items() if key not in ("title", "description")}
    return bool(untyped) and untyped != {"type": "object", "additionalProperties": True}


def _takes_input(operation: dict[str, Any]) -> bool:
    return bool(operation.get("parameters") or operation.get("requestBody") or operation.get("security"))


@pytest.mark.parametrize("process", PROCESSES)
def test_every_native_operation_documents_its_answer(process: str) -> None:
    operations = _native_operations(_document(process))
    failures = []
    for method, path, operation in operations:
        if (method, path) in OPEN_DOCUMENTS:
            continue
        answers = {status: r for status, r in operation["responses"].items() if status.startswith("2")}
        bodies = [r["content"] for r in answers.values() if r.get("content")]
        typed = all(
            _says_something(media.get("schema", {})) for content in bodies for media in content.values()
        )
        if not answers or not typed or (not bodies and not all(s in ("202", "204") for s in answers)):
            failures.append((method, path, answers))
    assert not failures, failures


@pytest.mark.parametrize("process", PROCESSES)
def test_every_native_operation_declares_its_problems(process: str) -> None:
    document = _document(process)
    operations = _native_operations(document)
    failures = []
    for method, path, operation in operations:
        problems = {s: r for s, r in operation["responses"].items() if s[0] in "45"}
        if _takes_input(operation) and not problems:
            failures.append((method, path, "declares no problem"))
        for status, response in problems.items():
            if (method, path) in OAUTH_ERRORS:
                schema = response.get("content", {}).get("application/json", {}).get("schema", {})
                if "$ref" in schema:
                    schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
                if set(schema.get("required", [])) != {"error", "error_description"}:
                    failures.append((method, path, status, response.get("content")))
                continue
            if response.get("content") != PROBLEM_CONTENT:
                failures.append((method, path, status, response.get("content")))
        if operation.get("security") and not {"401", "403"} <= problems.keys():
            failures.append((method, path, "needs a token but does not declare 401 and 403"))
        path_ids = [p for p in operation.get("parameters", []) if p["in"] == "path"]
        if path_ids and "422" not in problems:  # every path id is checked (shared/params.py)
            failures.append((method, path, "has a path id but does not declare 422"))
    assert not failures, failures
    if operations:
        assert "Problem" in document["components"]["schemas"]


def test_the_problem_schema_describes_what_is_answered() -> None:
    schema = _document("triage")["components"]["schemas"]["Problem"]
    assert {"type", "title", "status"} <= set(schema["required"])
    assert {"detail", "instance", "request_id", "errors"} <= set(schema["properties"])
