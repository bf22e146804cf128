"""No input makes a 500 (issue 18 §6), generated from the merged OpenAPI: every read operation,
through the gateway, gets an integer past 64 bits in each query parameter in turn and odd values
in each path parameter, as a client holding the scopes the operation needs (so validation, not
the scope check, answers). Each answer is below 500 and, when a refusal, in the right format
(problem+json, or an OperationOutcome under /fhir). A new route is covered without editing this.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.e2e.conftest import CLIENTS, Suite

HUGE = str(2**70)
ODD_PATH_VALUES = (HUGE, "-1", "%00", "a%00b", "%C3%28", "a" * 300)


def _read_operations(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(path, item["get"]) for path, item in document["paths"].items() if "get" in item]


def _scopes(operation: dict[str, Any]) -> set[str]:
    return {
        scope
        for requirement in operation.get("security", [])
        for scopes in requirement.values()
        for scope in scopes
    }


def _client_for(scopes: set[str]) -> str | None:
    for client_id, (_org, _system, _kind, granted) in CLIENTS.items():
        if scopes <= set(granted.split()):
            return client_id
    return None


def _well_formed_refusal(path: str, response: httpx.Response) -> bool:
    kind = response.headers.get("content-type", "")
    if "/fhir/" in f"{path}/":
        return (
            kind.startswith("application/fhir+json")
            and response.json().get("resourceType") == "OperationOutcome"
        )
    if path == "/oauth2/token" and kind.startswith("application/json"):
        # A token request refused: RFC 6749 §5.2 (an undeclared method is still problem+json).
        return {"error", "error_description"} <= set(response.json())
    return kind.startswith("application/problem+json")


def refused_cleanly(path: str, response: httpx.Response) -> bool:
    """A 4xx in the right format: what every odd request must get."""
    return 400 <= response.status_code < 500 and _well_formed_refusal(path, response)


def _filled(path: str, value_for: dict[str, str]) -> str:
    return re.sub(r"{([^}]+)}", lambda match: value_for.get(match.group(1), "x"), path)


async def test_no_read_operation_answers_500_to_odd_input(suite: Suite) -> None:
    # Hundreds of requests from one address, many to the public directory: not a rate-limit test.
    suite.settings.rate_limit_per_minute = suite.settings.public_rate_limit_per_minute = 100_000
    async with httpx.AsyncClient(base_url=suite.url, timeout=15) as http:
        document = (await http.get("/openapi.json")).json()
        tokens: dict[str, str] = {}
        tried, failures = 0, []
        for path, operation in _read_operations(document):
            client = _client_for(_scopes(operation))
            if client is None:
                continue
            if client not in tokens:
                tokens[client] = await suite.token(client)
            headers = {"Authorization": f"Bearer {tokens[client]}"}
            parameters = operation.get("parameters", [])
            queries = [p["name"] for p in parameters if p["in"] == "query"]
            path_names = re.findall(r"{([^}]+)}", path)
            attempts = [(_filled(path, {}), {name: HUGE}) for name in queries]
            attempts += [(_filled(path, {name: odd}), {}) for name in path_names for odd in ODD_PATH_VALUES]
            for url, params in attempts:
                if path.endswith("/stream") and not params and not path_names:
                    continue  # an event stream with nothing odd in it would stream on
                tried += 1
                response = await http.get(url, params=params, headers=headers)
                if response.status_code >= 500 or (
                    response.status_code >= 400 and not _well_formed_refusal(path, response)
                ):
                    failures.append((url, params, response.status_code, response.text[:200]))
    assert tried > 100, tried  # the document really was walked
    assert not failures, failures
