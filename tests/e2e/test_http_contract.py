"""The HTTP contract every route keeps (OWASP ASVS 13.2.1 and 13.2.5), generated from the merged
OpenAPI so a new route is covered without editing this: a method a path does not declare is
never served, and a body that is not JSON is refused, each as a clean problem (or, under /fhir, an
OperationOutcome), never a 2xx or a 500. Called as a client holding the scopes each operation
needs, so the method and content checks, not the scope check, answer."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.e2e.conftest import Suite
from tests.e2e.test_no_500_generated import _client_for, _scopes, refused_cleanly

METHODS = ("get", "post", "put", "patch", "delete")


def _filled(path: str) -> str:
    return re.sub(r"{[^}]+}", "x", path)


async def _headers(suite: Suite, tokens: dict[str, str], operation: dict[str, Any] | None) -> dict[str, str]:
    client = _client_for(_scopes(operation or {})) or "crisis-app"
    if client not in tokens:
        tokens[client] = await suite.token(client)
    return {"Authorization": f"Bearer {tokens[client]}", "Idempotency-Key": "contract-test"}


async def test_undeclared_methods_are_never_served(suite: Suite) -> None:
    suite.settings.rate_limit_per_minute = suite.settings.public_rate_limit_per_minute = 100_000
    tokens: dict[str, str] = {}
    failures, tried = [], 0
    async with httpx.AsyncClient(base_url=suite.url, timeout=15) as http:
        document = (await http.get("/openapi.json")).json()
        for path, item in document["paths"].items():
            declared = [m for m in METHODS if m in item]
            any_operation = item[declared[0]] if declared else None
            for method in METHODS:
                if method in item:
                    continue
                tried += 1
                answer = await http.request(
                    method.upper(),
                    _filled(path),
                    headers=await _headers(suite, tokens, any_operation),
                    json={},
                )
                if not refused_cleanly(path, answer):
                    failures.append((method, path, answer.status_code, answer.text[:160]))
                allow = {m.strip().lower() for m in answer.headers.get("allow", "").split(",")}
                if answer.status_code == 405 and not set(declared) <= allow:  # every route's methods
                    failures.append((method, path, 405, f"Allow: {answer.headers.get('allow')}"))
    assert tried > 100, tried
    assert not failures, failures


async def test_a_body_that_is_not_json_is_refused(suite: Suite) -> None:
    suite.settings.rate_limit_per_minute = suite.settings.public_rate_limit_per_minute = 100_000
    tokens: dict[str, str] = {}
    failures, tried = [], 0
    async with httpx.AsyncClient(base_url=suite.url, timeout=15) as http:
        document = (await http.get("/openapi.json")).json()
        for path, item in document["paths"].items():
            for method in ("post", "put", "patch"):
                operation = item.get(method)
                if operation is None or "requestBody" not in operation:
                    continue
                tried += 1
                headers = {**await _headers(suite, tokens, operation), "Content-Type": "text/plain"}
                answer = await http.request(
                    method.upper(), _filled(path), headers=headers, content=b"status=closed"
                )
                if not refused_cleanly(path, answer):
                    failures.append((method, path, answer.status_code, answer.text[:160]))
    assert tried > 20, tried
    assert not failures, failures
