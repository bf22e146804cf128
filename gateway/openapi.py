"""One OpenAPI document for the whole suite, merged from every service's own.

Each service's paths already carry its prefix. Schemas with the same name and the same content
are shared; a clash is resolved by prefixing the later service's schema with its name and
rewriting that document's references. A service that is down is left out and named in
`x-cmh-unavailable`, so the docs stay up while one service restarts.
"""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

import httpx
from fastapi import FastAPI

from gateway.access import UNLIMITED_PATHS
from gateway.openapi_fhir import fhir_paths, fhir_schemas, outcome_response
from gateway.proxy import is_internal_fhir_path
from gateway.state import gateway_state
from shared.errors import add_problems, is_fhir_path
from shared.settings import SERVICES, Settings

CACHE_SECONDS = 30.0
REF_PREFIX = "#/components/schemas/"


def _rewrite_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(REF_PREFIX):
                name = value[len(REF_PREFIX) :]
                out[key] = REF_PREFIX + renames.get(name, name)
            else:
                out[key] = _rewrite_refs(value, renames)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(item, renames) for item in node]
    return node


def merge_documents(own: dict[str, Any], services: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    merged: dict[str, Any] = {
        "openapi": own.get("openapi", "3.1.0"),
        "info": {
            "title": "CMH Suite API",
            "version": own.get("info", {}).get("version", "0.1.0"),
            "description": "The integrated community mental health suite, through its gateway.",
        },
        "paths": {},
        "components": {"schemas": {}, "securitySchemes": {}},
        "tags": [{"name": "gateway", "description": "Tokens, keys and the audit trail"}],
    }
    unavailable: list[str] = []
    documents: list[tuple[str, dict[str, Any]]] = [("gateway", own)]
    for name, document in services.items():
        if document is None:
            unavailable.append(name)
            continue
        documents.append((name, document))
        merged["tags"].append({"name": name, "description": document.get("info", {}).get("title", name)})

    schemas: dict[str, Any] = merged["components"]["schemas"]
    for name, document in documents:
        document = copy.deepcopy(document)
        theirs = document.get("components", {}).get("schemas", {})
        renames = {
            schema: f"{name.capitalize()}{schema}"
            for schema, body in theirs.items()
            if schema in schemas and schemas[schema] != _rewrite_refs(body, {})
        }
        document = _rewrite_refs(document, renames)
        for schema, body in document.get("components", {}).get("schemas", {}).items():
            if schema in renames and isinstance(body, dict):
                body = {**body, "title": renames[schema]}  # a generated client names models by title
            schemas.setdefault(renames.get(schema, schema), body)
        merged["components"]["securitySchemes"].update(
            document.get("components", {}).get("securitySchemes", {})
        )
        for path, operations in document.get("paths", {}).items():
            if any(is_internal_fhir_path(service, path) for service in SERVICES):
                continue  # internal: the public FHIR base is /fhir (add_fhir_base)
            for operation in operations.values():
                if isinstance(operation, dict) and name != "gateway":
                    tags = operation.setdefault("tags", [])
                    if name not in tags:
                        tags.insert(0, name)
            merged["paths"].setdefault(path, {}).update(operations)
    if unavailable:
        merged["x-cmh-unavailable"] = unavailable
    add_fhir_base(merged)
    document_rate_limits(merged)
    unique_titles(schemas)
    return merged


def unique_titles(schemas: dict[str, Any]) -> None:
    """No two schemas share a title (a generated client names its models by title): a title
    shared by more than one schema becomes each one's own name."""
    titles: dict[str, int] = {}
    for body in schemas.values():
        if isinstance(body, dict) and isinstance(body.get("title"), str):
            titles[body["title"]] = titles.get(body["title"], 0) + 1
    for name, body in schemas.items():
        if isinstance(body, dict) and titles.get(body.get("title", ""), 0) > 1:
            body["title"] = name


def add_fhir_base(merged: dict[str, Any]) -> None:
    """The `/fhir` base, from the CapabilityStatement's table (gateway/openapi_fhir.py)."""
    merged["paths"].update(fhir_paths())
    merged["components"]["schemas"].update(fhir_schemas())
    merged["tags"].append({"name": "fhir", "description": "The FHIR R4 (UK Core) base, /fhir"})


def document_rate_limits(merged: dict[str, Any]) -> None:
    """Every call through the gateway is rate limited (gateway/access.py) but /health and /ready."""
    for path, item in merged["paths"].items():
        if path in UNLIMITED_PATHS:
            continue
        for method, operation in item.items():
            if method in ("get", "put", "post", "delete", "patch") and isinstance(operation, dict):
                if is_fhir_path(path):
                    operation["responses"].setdefault("429", outcome_response("Too many requests"))
                else:
                    add_problems(operation, {429: "Too many requests (Retry-After says when to retry)"})


class OpenApiMerger:
    def __init__(self, app: FastAPI, settings: Settings, client: httpx.AsyncClient) -> None:
        self.app = app
        self.settings = settings
        self.client = client
        self._cached: dict[str, Any] | None = None
        self._cached_at = float("-inf")
        self._lock = asyncio.Lock()

    async def _fetch(self, service: str) -> dict[str, Any] | None:
        try:
            base = gateway_state(self.app).upstreams.in_turn(service)[0]
            response = await self.client.get(f"{base}/openapi.json", timeout=3.0)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError):
            return None
        return document if isinstance(document, dict) else None

    async def document(self) -> dict[str, Any]:
        async with self._lock:
            fresh = time.monotonic() - self._cached_at < CACHE_SECONDS
            if self._cached is not None and fresh and "x-cmh-unavailable" not in self._cached:
                return self._cached
            fetched = await asyncio.gather(*(self._fetch(service) for service in SERVICES))
            self._cached = merge_documents(self.app.openapi(), dict(zip(SERVICES, fetched, strict=True)))
            self._cached_at = time.monotonic()
            return self._cached
