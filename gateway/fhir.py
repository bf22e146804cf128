"""`/fhir`: one FHIR R4 (UK Core) base for partner EHRs, in front of the services that own each
resource.

`GET /fhir/metadata` is the CapabilityStatement, listing exactly what is served. Every other
`/fhir/<Type>[/...]` request goes on to the owning service's `/<service>/fhir/<Type>[/...]`, with
`X-Forwarded-Fhir-Base` so the service's links and `fullUrl`s name this base. Those service bases
are internal: the proxy answers 404 for them (`gateway.proxy.is_internal_fhir_path`), and only this
router reaches them, through `forward` and the upstream client directly. A search on a
service that does not hold NHS numbers (EpisodeOfCare, CarePlan) by `patient.identifier` is
resolved here, the only fan-in point: the NHS number is looked up as the caller (triage's
`Patient` search, organisation binding and audit included) and sent on as `patient=Patient/<id>`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from starlette.responses import Response, StreamingResponse

from gateway.proxy import METHODS, _upstream_headers, forward
from gateway.state import gateway_state
from shared import terminology
from shared.errors import Problem, error_response, problem_type
from shared.fhir import (
    FORWARDED_BASE_HEADER,
    Paging,
    check_format,
    fhir_response,
    invalid,
    lenient_handling,
    not_found,
    paging,
    resource_response,
    searchset,
    shown_parameter,
    unknown_search_parameter,
)
from shared.fhir_results import (
    RESULT_PARAMETERS,
    ResultParameterError,
    result_shape,
    shape_answer,
    unknown_parameters,
)
from shared.fhir_terms import NHS_NUMBER_SYSTEM
from shared.http import public_base as shared_public_base

FHIR_VERSION = "4.0.1"
FHIR_RESOURCE_OWNERS: dict[str, str] = {
    "ServiceRequest": "triage",
    "Task": "triage",
    "Patient": "triage",
    "Provenance": "triage",
    "EpisodeOfCare": "careplan",
    "CarePlan": "careplan",
    "Organization": "registry",
    "HealthcareService": "registry",
    "Location": "registry",
    "PractitionerRole": "registry",
    "Subscription": "notify",
}
# Searches by the patient's NHS number on services that know people only by their id.
CHAINED_PATIENT_PARAMS = (
    "patient.identifier",
    "patient:identifier",
    "subject.identifier",
    "subject:identifier",
)
RESOLVED_BY_PATIENT = frozenset({"EpisodeOfCare", "CarePlan"})
MAX_RESOLVED_PATIENTS = 100


# --- result parameters and unknown search parameters, once for every /fhir answer ---------------

CONTROL_PARAMETERS = frozenset({"_count", "_offset", "_format"})
# Other spellings a search accepts for a parameter the CapabilityStatement lists once.
PARAMETER_ALIASES: dict[str, tuple[str, ...]] = {
    "patient.identifier": CHAINED_PATIENT_PARAMS,
    "requester.identifier": ("requester:identifier",),
}


def known_parameters(resource_type: str) -> frozenset[str]:
    """Every parameter a search of this type takes: those the CapabilityStatement lists (and their
    other spellings), paging and format, and the result parameters."""
    names = {p["name"] for p in SUPPORTED[resource_type]["search"]}
    for name in list(names):
        names.update(PARAMETER_ALIASES.get(name, ()))
    return frozenset(names | CONTROL_PARAMETERS | RESULT_PARAMETERS)


def _searched_type(request: Request) -> str | None:
    parts = request.url.path.removeprefix("/fhir/").strip("/").split("/")
    if (
        request.method == "GET"
        and len(parts) == 1
        and "search-type" in SUPPORTED.get(parts[0], {}).get("interactions", ())
    ):
        return parts[0]
    return None


async def _answer_json(response: Response) -> dict[str, Any] | None:
    """A successful FHIR JSON answer's body (a streamed one read whole), or None to pass it on."""
    if response.status_code != 200 or "json" not in response.headers.get("content-type", ""):
        return None
    if isinstance(response, StreamingResponse):
        chunks = [chunk async for chunk in response.body_iterator]
        if response.background is not None:
            await response.background()
        raw = b"".join(chunk if isinstance(chunk, bytes) else str(chunk).encode() for chunk in chunks)
    else:
        raw = bytes(response.body)
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


class FhirRoute(APIRoute):
    """Every `/fhir` route: `_summary`, `_elements`, `_total` and `_pretty` answered here (the
    services never see them), and a search parameter the CapabilityStatement does not list refused
    by name, or under `Prefer: handling=lenient` left out and named in an outcome entry of the
    Bundle (FHIR R4 search §3.1.1.3)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def shaped(request: Request) -> Response:
            if request.method != "GET":
                return await handler(request)
            params = request.query_params.multi_items()
            searched = _searched_type(request)
            try:
                shape = result_shape(params, searched)
            except ResultParameterError as exc:
                raise invalid(str(exc), expression=exc.parameter, outcome_code="MSG_PARAM_INVALID") from None
            forwarded = [(name, value) for name, value in params if name not in RESULT_PARAMETERS]
            ignored: list[str] = []
            if searched is not None:
                forwarded, unknown = unknown_parameters(forwarded, known_parameters(searched))
                if unknown and not lenient_handling(request):
                    raise unknown_search_parameter(
                        unknown[0],
                        searched,
                        "see /fhir/metadata (or send Prefer: handling=lenient to have it ignored)",
                    )
                ignored = [shown_parameter(name) or "(unnamed)" for name in unknown]
                if shape.summary == "count":
                    forwarded = [(n, v) for n, v in forwarded if n != "_count"] + [("_count", "0")]
            if forwarded != params:
                scope = dict(request.scope, query_string=urlencode(forwarded).encode("latin-1"))
                request = Request(scope, request.receive)
            response = await handler(request)
            if shape.plain and not ignored:
                return response
            body = await _answer_json(response)
            if body is None:
                return response
            content = json.dumps(
                shape_answer(body, shape, ignored), indent=2 if shape.pretty else None, ensure_ascii=False
            ).encode()
            answer = Response(content, status_code=200)
            answer.raw_headers = [
                *((k, v) for k, v in response.raw_headers if k.lower() != b"content-length"),
                (b"content-length", str(len(content)).encode()),
            ]
            return answer

        return shaped


router = APIRouter(prefix="/fhir", include_in_schema=False, route_class=FhirRoute)


def public_base(request: Request) -> str:
    """The FHIR base in links and fullUrls: the suite's public address (`shared.http.public_base`),
    never the Host header a caller sent."""
    return shared_public_base(gateway_state(request).settings, request.scope) + "/fhir"


# --- the CapabilityStatement ---------------------------------------------------------------------

_UK_CORE = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-"


def _param(name: str, type_: str, documentation: str) -> dict[str, str]:
    return {"name": name, "type": type_, "documentation": documentation}


_PAGING = "`_count` (at most 100) and `_offset` page every search; Bundles carry self/first/previous/next/last links."
_PATIENT_CHAIN = _param(
    "patient.identifier",
    "token",
    f"The patient's NHS number ({NHS_NUMBER_SYSTEM}|<10 digits>); `patient:identifier`, "
    "`subject.identifier` and `subject:identifier` are accepted too.",
)

# What each resource supports: (profile, interactions, search parameters, documentation).
SUPPORTED: dict[str, dict[str, Any]] = {
    "ServiceRequest": {
        "profile": _UK_CORE + "ServiceRequest",
        "interactions": ["create", "read", "vread", "search-type"],
        "conditionalCreate": True,
        "documentation": (
            "A referral to the single point of access. Create with the person as a contained Patient "
            "(name, birthDate, postalCode, NHS number when known); requester = your organisation "
            "(ODS code) or a contained PractitionerRole (SDS user and role profile ids at that "
            "organisation); the source as the UK Core SourceOfServiceRequest extension (SNOMED CT) or "
            "a category coding of the suite's referral-source; reasonCode = needs (SNOMED CT or the "
            "suite's need codes), translated by the ConceptMaps at /fhir/ConceptMap (a code with no "
            "map is refused, naming the element); priority; supportingInfo = contained RiskAssessment. "
            "Your codings and every element the suite does not read are kept and returned on read; an "
            "element it cannot take (performer, anything not R4) is refused by name, or with "
            "`Prefer: handling=lenient` dropped and listed in a warning OperationOutcome. Idempotent "
            "with `If-None-Exist: identifier=<your system>|<value>` or an `Idempotency-Key` header. "
            "status: active while awaiting triage and, once routed, while the episode of care is "
            "open; completed when that episode ends (at once for partner services, the crisis line "
            "or another area); revoked when declined or closed. The Task carries triage's decision."
        ),
        "search": [
            _param("_id", "token", "The referral id."),
            _param(
                "identifier",
                "token",
                "Our referral identifier (https://cmh-suite.nhs.uk/Id/referral) or yours.",
            ),
            _param("patient", "reference", "Patient/<id> as returned in ServiceRequest.subject."),
            _PATIENT_CHAIN,
            _param("requester.identifier", "token", "The requester's ODS code; `requester:identifier` too."),
            _param("status", "token", "active | completed | revoked (comma for any of)."),
            _param("authored", "date", "When the referral was made; prefixes eq ne gt ge lt le sa eb."),
        ],
    },
    "Task": {
        "profile": _UK_CORE + "Task",
        "interactions": ["read", "search-type"],
        "documentation": "The triage of a referral: requested until decided; businessStatus names the decision.",
        "search": [
            _param("_id", "token", "The task id (the referral's id)."),
            _param("focus", "reference", "ServiceRequest/<id>."),
            _param("patient", "reference", "Patient/<id>."),
            _PATIENT_CHAIN,
            _param("status", "token", "requested | completed."),
        ],
    },
    "Provenance": {
        "profile": None,
        "interactions": ["search-type"],
        "documentation": (
            "Who decided what about a referral, when and why: one Provenance per triage decision, with "
            "the calling system and the clinician it asserts (recorded as asserted)."
        ),
        "search": [_param("target", "reference", "Task/<id> or ServiceRequest/<id> (required).")],
    },
    "Patient": {
        "profile": _UK_CORE + "Patient",
        "interactions": ["read", "search-type"],
        "documentation": "People your organisation has referred (clinical services: anyone referred).",
        "search": [
            _param("_id", "token", "The patient id."),
            _param("identifier", "token", f"NHS number: {NHS_NUMBER_SYSTEM}|<10 digits>."),
        ],
    },
    "EpisodeOfCare": {
        "profile": _UK_CORE + "EpisodeOfCare",
        "interactions": ["read", "search-type"],
        "documentation": "The episode a routed referral opens with the team; finished at discharge.",
        "search": [
            _param("_id", "token", "The episode id."),
            _param("patient", "reference", "Patient/<id> (comma for any of)."),
            _PATIENT_CHAIN,
            _param("status", "token", "active | finished."),
            _param("incoming-referral", "reference", "ServiceRequest/<id> that opened the episode."),
            _param("date", "date", "When the episode opened; prefixes eq ne gt ge lt le sa eb."),
        ],
    },
    "CarePlan": {
        "profile": _UK_CORE + "CarePlan",
        "interactions": ["read", "search-type"],
        "documentation": (
            "The personalised care plan of an episode: draft until agreed with the person, then active; "
            "completed at discharge."
        ),
        "search": [
            _param("_id", "token", "The care plan id (the episode's id)."),
            _param("patient", "reference", "Patient/<id> (comma for any of)."),
            _PATIENT_CHAIN,
            _param("status", "token", "draft | active | completed | revoked."),
        ],
    },
    "Organization": {
        "profile": _UK_CORE + "Organization",
        "interactions": ["read", "search-type"],
        "documentation": "Organisations of the integrated care system, by ODS, GSS, charity or company number.",
        "search": [
            _param(
                "identifier", "token", "system|value, e.g. https://fhir.nhs.uk/Id/ods-organization-code|RXN"
            )
        ],
    },
    "HealthcareService": {
        "profile": _UK_CORE + "HealthcareService",
        "interactions": ["read", "search-type"],
        "documentation": "Teams: service offer, MHSDS team type, pathways, coverage and opening hours.",
        "search": [_param("identifier", "token", "https://cmh-suite.nhs.uk/Id/team|<team key>")],
    },
    "Location": {
        "profile": _UK_CORE + "Location",
        "interactions": ["read", "search-type"],
        "documentation": "The places of the integrated care system.",
        "search": [
            _param("identifier", "token", "https://cmh-suite.nhs.uk/Id/place|<place key> (or none: all)")
        ],
    },
    "PractitionerRole": {
        "profile": _UK_CORE + "PractitionerRole",
        "interactions": ["read", "search-type"],
        "documentation": "Team memberships and leadership roles held today.",
        "search": [_param("identifier", "token", "https://cmh-suite.nhs.uk/Id/staff|<staff id>")],
    },
    "Subscription": {
        "profile": None,
        "interactions": ["create", "read", "update", "delete", "search-type"],
        "documentation": (
            "rest-hook notifications about your organisation's own referrals. criteria: ServiceRequest, "
            "EpisodeOfCare or CarePlan, optionally ?status=<codes>. Each POST carries a Bundle (history) "
            "naming the changed resource and its new status; it is signed per Standard Webhooks "
            "(webhook-id, webhook-timestamp, webhook-signature: v1,base64(HMAC-SHA256(key, id.timestamp.body))); "
            "the secret is returned once, on create, as whsec_<base64>. Retried with exponential backoff; ordered per resource; repeated failure "
            "puts the subscription in error (shown in Subscription.error) until you set it active again."
        ),
        "search": [_param("status", "token", "requested | active | error | off.")],
    },
}


_TERMINOLOGY_SEARCH = [
    _param("_id", "token", "The resource id."),
    _param("url", "uri", "The canonical URL."),
    _param("name", "string", "The computable name (starts with, any case)."),
    _param("title", "string", "The title (starts with, any case)."),
    _param("status", "token", "draft | active | retired."),
    _param("version", "token", "The business version."),
]
# The suite's published terminology, served by the gateway itself from shared/terminology (the
# same data triage's intake translates with), with no sign-in: conformance resources, no person data.
for _kind, _documentation, _extra in (
    ("CodeSystem", "The suite's own code systems (referral source, need, risk, route, priorities, triage decisions).", [_param("system", "uri", "The code system's URL (as url).")]),
    ("ValueSet", "A value set per code system, all its codes.", [_param("reference", "uri", "A code system the value set includes.")]),
    (
        "ConceptMap",
        "Maps between partners' codes and the suite's: SNOMED CT referral source (UK Core "
        "SourceOfServiceRequest) and reason for referral to the suite's codes and back; FHIR request "
        "priority to the requested urgency. Intake translates with exactly these.",
        [
            _param("source-system", "uri", "The system mapped from."),
            _param("target-system", "uri", "The system mapped to."),
            _param("source-uri", "reference", "The value set mapped from."),
            _param("target-uri", "reference", "The value set mapped to."),
        ],
    ),
):  # fmt: skip
    SUPPORTED[_kind] = {
        "profile": None,
        "interactions": ["read", "search-type"],
        "documentation": _documentation + " Public: no token needed.",
        "search": _TERMINOLOGY_SEARCH + _extra,
    }


def _terminology_matches(resource: dict[str, Any], name: str, value: str) -> bool:
    """Whether a conformance resource matches one search parameter (values OR-ed by commas)."""
    wanted = [v.strip() for v in value.split(",") if v.strip()]
    groups = resource.get("group", [])
    found: list[str]
    if name == "_id":
        found = [resource["id"]]
    elif name in ("url", "system"):
        found = [resource["url"]]
    elif name in ("name", "title"):
        text = str(resource.get(name, "")).lower()
        return any(text.startswith(v.lower()) for v in wanted)
    elif name in ("status", "version"):
        found = [str(resource.get(name, ""))]
    elif name == "reference":
        found = [item.get("system", "") for item in resource.get("compose", {}).get("include", [])]
    elif name == "source-system":
        found = [g["source"] for g in groups]
    elif name == "target-system":
        found = [g["target"] for g in groups]
    elif name == "source-uri":
        found = [resource.get("sourceUri", "")]
    else:  # target-uri
        found = [resource.get("targetUri", "")]
    return any(v in found for v in wanted)


async def _terminology_search(request: Request) -> Response:
    check_format(request)
    kind = request.url.path.rstrip("/").rsplit("/", 1)[-1]
    supported = {p["name"] for p in SUPPORTED[kind]["search"]}
    found = terminology.resources(kind)
    for name, value in request.query_params.multi_items():
        if name not in supported:
            continue  # paging and format; an unknown parameter never gets here (FhirRoute)
        found = [r for r in found if _terminology_matches(r, name, value)]
    page = paging(request)
    shown = found[page.offset : page.offset + page.count]
    return fhir_response(searchset(request, shown, base=public_base(request), total=len(found), page=page))


async def _terminology_read(request: Request, resource_id: str) -> Response:
    check_format(request)
    kind = request.url.path.removeprefix("/fhir/").split("/", 1)[0]
    found = terminology.resource(kind, resource_id)
    if found is None:
        raise not_found(kind, resource_id)
    return resource_response(found)


for _kind in terminology.TERMINOLOGY_TYPES:
    router.add_api_route(f"/{_kind}", _terminology_search, methods=["GET"], name=f"fhir-{_kind}-search")
    router.add_api_route(
        f"/{_kind}/{{resource_id}}", _terminology_read, methods=["GET"], name=f"fhir-{_kind}-read"
    )


def capability_statement(base: str, software_version: str) -> dict[str, Any]:
    resources = []
    for resource_type, spec in SUPPORTED.items():
        entry: dict[str, Any] = {"type": resource_type}
        if spec["profile"]:
            entry["profile"] = spec["profile"]
        entry["documentation"] = spec["documentation"]
        entry["interaction"] = [{"code": code} for code in spec["interactions"]]
        if "update" in spec["interactions"]:
            entry["versioning"] = "versioned-update"
            entry["updateCreate"] = False
        else:
            entry["versioning"] = "versioned"
        if spec.get("conditionalCreate"):
            entry["conditionalCreate"] = True
        entry["searchParam"] = [
            *spec["search"],
            {"name": "_count", "type": "number", "documentation": _PAGING},
            {"name": "_offset", "type": "number", "documentation": "Where the page starts (0 first)."},
        ]
        resources.append(entry)
    return {
        "resourceType": "CapabilityStatement",
        "id": "cmh-suite",
        "url": f"{base}/metadata",
        "version": software_version,
        "name": "CMHSuiteFHIRServer",
        "title": "CMH Suite FHIR R4 (UK Core) API",
        "status": "active",
        "experimental": False,
        "date": "2026-11-25",
        "publisher": "CMH Suite",
        "description": (
            "Referrals to the single point of access and what became of them, for partner EHRs; "
            "the organisational registry; webhook notifications."
        ),
        "kind": "instance",
        "software": {"name": "CMH Suite", "version": software_version},
        "implementation": {"description": "CMH Suite gateway", "url": base},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "documentation": (
                    "JSON only. Errors are OperationOutcome, each issue with coded details (the suite's "
                    "problem type and HL7's operation-outcome code where one applies) and the element "
                    "or parameter at fault as its expression. Every read and search takes _summary "
                    "(true, text, data, count, false), _elements, _total (none, estimate, accurate) and "
                    "_pretty; a search parameter not listed here is refused by name, or with Prefer: "
                    "handling=lenient ignored and named in an OperationOutcome entry of the Bundle. "
                    "Reads and searches of person data are audited and bound to the caller's organisation."
                ),
                "security": {
                    "cors": False,
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                    "code": "OAuth",
                                }
                            ]
                        }
                    ],
                    "description": (
                        "OAuth2 client credentials at /oauth2/token (client secret or private_key_jwt); "
                        "scopes: referral:submit, referral:read, careplan:read, registry:read, "
                        "subscription:manage."
                    ),
                },
                "resource": resources,
            }
        ],
    }


@router.get("/metadata")
async def metadata(request: Request) -> Response:
    check_format(request)
    return fhir_response(capability_statement(public_base(request), request.app.version))


# --- routing -------------------------------------------------------------------------------------


async def _patients_for(request: Request, identifier: str) -> list[str] | Response:
    """The ids of the patients with this identifier the caller may read, from triage, as the caller."""
    gateway = gateway_state(request)
    client = gateway.upstream
    headers = [(k, v) for k, v in _upstream_headers(request) if k not in (b"content-length", b"content-type")]
    headers.append((FORWARDED_BASE_HEADER.lower().encode(), public_base(request).encode("latin-1")))
    try:
        response = await client.get(
            gateway.upstreams.in_turn("triage")[0] + "/triage/fhir/Patient",
            params={"identifier": identifier, "_count": str(MAX_RESOLVED_PATIENTS)},
            headers=headers,
        )
    except httpx.HTTPError:
        return error_response(
            request.url.path, 502, "Service unavailable", "Patients could not be looked up.",
            type_=problem_type("upstream-unavailable"),
        )  # fmt: skip
    if response.status_code != 200:
        return Response(
            response.content,
            status_code=response.status_code,
            media_type=response.headers.get("content-type"),
        )
    return [entry["resource"]["id"] for entry in response.json().get("entry", [])]


async def _resolve_chained_patient(request: Request) -> str | Response | None:
    """The query to send on, with `patient.identifier` replaced by the patients it names; a
    Response when there is nothing to find (or the lookup failed); None when nothing to resolve."""
    params = request.query_params.multi_items()
    chained = [(key, value) for key, value in params if key in CHAINED_PATIENT_PARAMS]
    if not chained or request.method != "GET":
        return None
    kept = [(key, value) for key, value in params if key not in CHAINED_PATIENT_PARAMS]
    for key, value in chained:
        found = await _patients_for(request, value)
        if isinstance(found, Response) and found.status_code == 400:
            # Triage refused the value (not an NHS number): say so in the caller's own terms.
            raise invalid(
                f"search parameter {key} is not a valid NHS number (10 digits, check digit)", code="value"
            )
        if isinstance(found, Response):
            return found
        if not found:
            base = public_base(request)
            try:
                count = int(request.query_params.get("_count", "20"))
            except ValueError:
                raise invalid("_count must be a whole number") from None
            return fhir_response(
                searchset(request, [], base=base, total=0, page=Paging(min(max(count, 0), 100), 0))
            )
        kept.append(("patient", ",".join(f"Patient/{pid}" for pid in found)))
    return urlencode(kept)


async def _route(request: Request) -> Response:
    path: str = request.url.path
    resource_type = path.removeprefix("/fhir/").split("/", 1)[0]
    service = FHIR_RESOURCE_OWNERS.get(resource_type)
    if service is None:
        raise Problem(
            404, "Not supported", f"{resource_type or 'That'} is not served here; see /fhir/metadata.",
            type_slug="not-supported", fhir_code="not-supported", outcome_code="MSG_UNKNOWN_TYPE",
        )  # fmt: skip
    query: str | None = None
    if resource_type in RESOLVED_BY_PATIENT:
        resolved = await _resolve_chained_patient(request)
        if isinstance(resolved, Response):
            return resolved
        query = resolved
    raw_path = request.scope.get("raw_path", path.encode()).decode("latin-1")
    upstream_path = f"/{service}" + raw_path
    return await forward(
        request,
        service,
        path=upstream_path,
        query=query,
        extra_headers=[(FORWARDED_BASE_HEADER, public_base(request))],
    )


router.add_api_route("/{resource_type}", _route, methods=METHODS, name="fhir-type")
router.add_api_route("/{resource_type}/{rest:path}", _route, methods=METHODS, name="fhir-instance")
