"""The `/fhir` base in the merged OpenAPI document, generated from the CapabilityStatement's own
table (`gateway.fhir.SUPPORTED`), so the two cannot disagree: one path item per interaction each
resource supports, with `application/fhir+json` bodies (a generic Resource, Bundle and
OperationOutcome) and its errors as OperationOutcome.

Each operation carries `x-fhir-interaction` (the CapabilityStatement's interaction code) and
`x-fhir-type`, which is how `tests/shared/test_openapi_truth.py` matches the two.
"""

from __future__ import annotations

from typing import Any

from gateway.access import AREA_SCOPES
from gateway.fhir import FHIR_RESOURCE_OWNERS, SUPPORTED
from shared.auth import oauth2_client_credentials
from shared.errors import FHIR_JSON

REF = "#/components/schemas/"
SCHEMA_NAMES = {"resource": "FhirResource", "bundle": "FhirBundle", "outcome": "FhirOperationOutcome"}
PAGING_PARAMS = (
    ("_count", "number", "Page size (at most 100)."),
    ("_offset", "number", "Where the page starts (0 first)."),
)
# What each FHIR interaction answers besides its success, all as OperationOutcome.
_ERRORS: dict[str, tuple[int, ...]] = {
    "read": (400, 401, 403, 404, 429),
    "vread": (400, 401, 403, 404, 429),
    "search-type": (400, 401, 403, 429),
    "create": (400, 401, 403, 409, 412, 422, 429),
    "update": (400, 401, 403, 404, 409, 412, 422, 429),
    "delete": (401, 403, 404, 429),
}
_ERROR_DESCRIPTIONS = {
    400: "The request is malformed (a search parameter, an id or the resource)",
    401: "No valid bearer token",
    403: "The token lacks the scope, or the caller may not do this",
    404: "No such resource (or not one the caller may see)",
    409: "The resource's state does not allow this",
    412: "The resource has changed (If-Match), or If-None-Exist matched more than one",
    422: "The resource breaks a rule",
    429: "Too many requests",
}
# One realistic create per main journey, shown in the docs beside the request body.
CREATE_EXAMPLES: dict[str, dict[str, Any]] = {
    "Subscription": {
        "summary": "Be told when your referrals change status",
        "value": {
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "Update our EHR when a referral is triaged or closed",
            "criteria": "ServiceRequest?status=completed,revoked",
            "channel": {
                "type": "rest-hook",
                "endpoint": "https://ehr.example-practice.nhs.uk/cmh/notifications",
                "payload": "application/fhir+json",
            },
        },
    },
    "ServiceRequest": {
        "summary": "A GP practice refers a patient to the single point of access",
        "value": {
            "resourceType": "ServiceRequest",
            "identifier": [
                {"system": "https://ehr.example-practice.nhs.uk/Id/referral", "value": "R-20261124-0042"}
            ],
            "status": "active",
            "intent": "order",
            "priority": "routine",
            "category": [
                {"coding": [{"system": "https://cmh-suite.nhs.uk/CodeSystem/referral-source", "code": "gp"}]}
            ],
            "subject": {"reference": "#patient"},
            "requester": {
                "identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "B86001"}
            },
            "reasonCode": [
                {"coding": [{"system": "https://cmh-suite.nhs.uk/CodeSystem/need", "code": "low_mood"}]}
            ],
            "contained": [
                {
                    "resourceType": "Patient",
                    "id": "patient",
                    "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9434765919"}],
                    "name": [{"given": ["Amira"], "family": "Okafor"}],
                    "birthDate": "1991-04-17",
                    "address": [{"postalCode": "LS6 2AB"}],
                }
            ],
        },
    },
}
_TYPE_SEARCH = {"token": "string", "reference": "string", "date": "string", "number": "integer"}


def fhir_schemas() -> dict[str, Any]:
    """Generic FHIR R4 Resource, Bundle and OperationOutcome (`application/fhir+json`)."""
    return {
        SCHEMA_NAMES["resource"]: {
            "title": "FhirResource",
            "description": "A FHIR R4 resource (UK Core profile where the CapabilityStatement names one).",
            "type": "object",
            "required": ["resourceType"],
            "properties": {
                "resourceType": {"type": "string"},
                "id": {"type": "string"},
                "meta": {"type": "object", "additionalProperties": True},
            },
            "additionalProperties": True,
        },
        SCHEMA_NAMES["bundle"]: {
            "title": "FhirBundle",
            "description": "A FHIR R4 searchset Bundle, paged with self/first/previous/next/last links.",
            "type": "object",
            "required": ["resourceType", "type"],
            "properties": {
                "resourceType": {"type": "string", "enum": ["Bundle"]},
                "type": {"type": "string"},
                "total": {"type": "integer"},
                "link": {"type": "array", "items": {"type": "object", "additionalProperties": True}},
                "entry": {"type": "array", "items": {"type": "object", "additionalProperties": True}},
            },
            "additionalProperties": True,
        },
        SCHEMA_NAMES["outcome"]: {
            "title": "FhirOperationOutcome",
            "description": "A FHIR R4 OperationOutcome: how every /fhir error is answered.",
            "type": "object",
            "required": ["resourceType", "issue"],
            "properties": {
                "resourceType": {"type": "string", "enum": ["OperationOutcome"]},
                "id": {"type": "string"},
                "issue": {"type": "array", "items": {"type": "object", "additionalProperties": True}},
            },
            "additionalProperties": True,
        },
    }


def _body(kind: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {FHIR_JSON: {"schema": {"$ref": REF + SCHEMA_NAMES[kind]}}},
    }


def outcome_response(description: str) -> dict[str, Any]:
    """An error answered as OperationOutcome."""
    return _body("outcome", description)


def _operation(resource_type: str, interaction: str, summary: str, success: dict[str, Any]) -> dict[str, Any]:
    # The gateway serves the terminology itself, to anyone (owned by no service, no token).
    owner = FHIR_RESOURCE_OWNERS.get(resource_type)
    responses: dict[str, Any] = dict(success)
    for status in _ERRORS[interaction]:
        if owner is None and status in (401, 403):
            continue
        responses[str(status)] = _body("outcome", _ERROR_DESCRIPTIONS[status])
    return {
        "tags": ["fhir"],
        "summary": summary,
        "description": SUPPORTED[resource_type]["documentation"],
        "operationId": f"fhir_{interaction.replace('-', '_')}_{resource_type}",
        # The gateway lets a token holding any one of the owner's scopes through (each a requirement
        # of its own: OpenAPI's "any of"); the service then checks the one the interaction needs.
        "security": [{oauth2_client_credentials.scheme_name: [scope]} for scope in sorted(AREA_SCOPES[owner])]
        if owner is not None
        else [],
        "responses": responses,
        "x-fhir-type": resource_type,
        "x-fhir-interaction": interaction,
    }


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _search_params(spec: dict[str, Any]) -> list[dict[str, Any]]:
    params = [(p["name"], p["type"], p["documentation"]) for p in spec["search"]]
    return [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": documentation,
            "schema": {"type": _TYPE_SEARCH.get(type_, "string")},
            "x-fhir-search-type": type_,
        }
        for name, type_, documentation in (*params, *PAGING_PARAMS)
    ]


def fhir_paths() -> dict[str, dict[str, Any]]:
    """The `/fhir` path items, one operation per interaction of `SUPPORTED`."""
    paths: dict[str, dict[str, Any]] = {
        "/fhir/metadata": {
            "get": {
                "tags": ["fhir"],
                "summary": "The CapabilityStatement: exactly what this FHIR base serves",
                "operationId": "fhir_capabilities",
                "responses": {
                    "200": _body("resource", "The CapabilityStatement"),
                    "406": _body("outcome", "Only JSON is served"),
                    "429": _body("outcome", _ERROR_DESCRIPTIONS[429]),
                },
                "x-fhir-interaction": "capabilities",
            }
        }
    }
    for resource_type, spec in SUPPORTED.items():
        interactions = set(spec["interactions"])
        type_item: dict[str, Any] = {}
        instance: dict[str, Any] = {}
        if "search-type" in interactions:
            type_item["get"] = _operation(
                resource_type, "search-type", f"Search {resource_type}",
                {"200": _body("bundle", f"A searchset Bundle of {resource_type}")},
            )  # fmt: skip
            type_item["get"]["parameters"] = _search_params(spec)
        if "create" in interactions:
            create = _operation(
                resource_type, "create", f"Create a {resource_type}",
                {
                    "200": _body("resource", "Already created (If-None-Exist or Idempotency-Key): the first"),
                    "201": _body("resource", f"The {resource_type} created (Location, ETag)"),
                },
            )  # fmt: skip
            create["requestBody"] = {"required": True, **_body("resource", f"A {resource_type}")}
            if resource_type in CREATE_EXAMPLES:
                create["requestBody"]["content"][FHIR_JSON]["examples"] = {
                    "create": CREATE_EXAMPLES[resource_type]
                }
            create["parameters"] = [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": "A unique key per create (a UUID): a retry returns the first result.",
                    "schema": {"type": "string"},
                }
            ]
            if spec.get("conditionalCreate"):
                create["parameters"].append(
                    {
                        "name": "If-None-Exist",
                        "in": "header",
                        "required": False,
                        "description": "identifier=<system>|<value>: create only if none matches.",
                        "schema": {"type": "string"},
                    }
                )
            type_item["post"] = create
        id_param = _path_param("resource_id", f"The {resource_type}'s id")
        if "read" in interactions:
            instance["get"] = _operation(
                resource_type, "read", f"Read a {resource_type}", {"200": _body("resource", resource_type)}
            )
        if "update" in interactions:
            update = _operation(
                resource_type, "update", f"Update a {resource_type}", {"200": _body("resource", "Updated")}
            )
            update["requestBody"] = {"required": True, **_body("resource", f"The {resource_type}")}
            update["parameters"] = [
                {
                    "name": "If-Match",
                    "in": "header",
                    "required": False,
                    "description": 'The version read, W/"<version>".',
                    "schema": {"type": "string"},
                }
            ]
            instance["put"] = update
        if "delete" in interactions:
            instance["delete"] = _operation(
                resource_type, "delete", f"Delete a {resource_type}", {"204": {"description": "Deleted"}}
            )
        if type_item:
            paths[f"/fhir/{resource_type}"] = type_item
        if instance:
            paths[f"/fhir/{resource_type}/{{resource_id}}"] = {"parameters": [id_param], **instance}
        if "vread" in interactions:
            paths[f"/fhir/{resource_type}/{{resource_id}}/_history/{{version_id}}"] = {
                "parameters": [id_param, _path_param("version_id", "The version")],
                "get": _operation(
                    resource_type, "vread", f"Read a version of a {resource_type}",
                    {"200": _body("resource", f"That version of the {resource_type}")},
                ),
            }  # fmt: skip
    return paths
