"""RFC 9457 problem details for every error any service or the gateway returns.

Bodies never carry stack traces or the values a caller sent (which may be person data): a
validation error names the field and the rule it broke, not the input.
"""

from __future__ import annotations

import re
from collections.abc import Callable, MutableMapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.problems import PROBLEM_BASE as PROBLEM_BASE
from shared.problems import Problem as Problem
from shared.problems import Refusal as Refusal
from shared.problems import problem_type as problem_type
from shared.tracing import request_id_var

PROBLEM_JSON = "application/problem+json"
FHIR_JSON = "application/fhir+json"

# FHIR R4 IssueType for each HTTP status we answer with (http://hl7.org/fhir/issue-type).
_ISSUE_TYPES: dict[int, str] = {
    400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
    406: "not-supported", 409: "conflict", 410: "deleted", 412: "conflict", 413: "too-costly",
    415: "not-supported", 422: "processing", 428: "required", 429: "throttled", 500: "exception",
    502: "transient", 503: "transient", 504: "timeout",
}  # fmt: skip
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def rule_broken(
    service: str, field: str, message: str, location: tuple[str, ...] = ("body",), *, status: int = 422
) -> Refusal:
    """A domain rule refused the request: the one `Refusal` (422 naming the field)."""
    return Refusal(service, field, message, location=location, status=status)


# --- documenting the problems each operation answers ------------------------------------------


class ProblemIssue(BaseModel):
    """One field a request got wrong: where, and the rule it broke (never the input)."""

    location: list[str]
    message: str
    type: str


class ProblemOut(BaseModel):
    """An RFC 9457 problem details body, as every native operation answers its errors."""

    model_config = ConfigDict(extra="allow", title="Problem")

    type: str = Field(description="A URI naming the kind of problem (or about:blank)")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = Field(default=None, description="The request's id, for support")
    errors: list[ProblemIssue] | None = Field(default=None, description="The fields to fix (400/422)")


PROBLEM_REF = "#/components/schemas/Problem"
_PROBLEM_DESCRIPTIONS: dict[int, str] = {
    400: "The request is malformed",
    401: "No valid bearer token",
    403: "The token lacks the scope, or the caller may not do this",
    404: "No such resource (or not one the caller may see)",
    409: "The resource's state does not allow this",
    412: "The resource has changed since it was read (If-Match)",
    413: "The body is too large",
    415: "The body is not JSON",
    422: "A field is missing or invalid, or a rule refused the request",
    428: "If-Match is required",
    429: "Too many requests",
    502: "An upstream service is unavailable",
    503: "Not ready",
    504: "An upstream service was too slow",
}


def problems(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: the problem+json answers it can give, each with the shared
    Problem schema. `descriptions` (as `_409="..."`) say what a status means for this route."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        description = descriptions.get(f"_{status}") or _PROBLEM_DESCRIPTIONS.get(status)
        out[status] = {
            "description": description or HTTPStatus(status).phrase,
            "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}},
        }
    return out


# A header parameter's schema carrying this is required (the route refuses its absence with a
# problem of its own, 400 or 428, rather than FastAPI's 422): `complete_problems` marks it
# `required: true` in the document. See shared/idempotency.py and shared/preconditions.py.
REQUIRED_HEADER = "x-cmh-required"
_OPERATION_METHODS = ("get", "put", "post", "delete", "patch")
_FOR_HEADERS: dict[str, dict[int, str]] = {
    "idempotency-key": {
        400: "The Idempotency-Key is malformed (or missing where required)",
        409: "The Idempotency-Key was used for a different request",
    },
    "if-match": {400: "If-Match is malformed", 412: _PROBLEM_DESCRIPTIONS[412]},
}


def _require_header(parameter: dict[str, Any]) -> bool:
    """Mark a header `required: true` when its schema says so; whether it was marked."""
    schema = parameter.get("schema", {})
    if not schema.pop(REQUIRED_HEADER, False):
        return False
    parameter["required"] = True
    options = [option for option in schema.pop("anyOf", []) if option.get("type") != "null"]
    if len(options) == 1:
        schema.update(options[0])
    return True


def derived_problems(operation: dict[str, Any]) -> dict[int, str]:
    """The problems an operation answers by what it takes, whatever its route declared: 401 and
    403 with a token; 422 for a checked path, query or JSON body; 400 and 409 with an
    Idempotency-Key; 400 and 412 with If-Match, and 428 where If-Match is required."""
    statuses: dict[int, str] = {}
    if operation.get("security"):
        statuses |= {401: _PROBLEM_DESCRIPTIONS[401], 403: _PROBLEM_DESCRIPTIONS[403]}
    parameters: list[dict[str, Any]] = operation.get("parameters", [])
    body = operation.get("requestBody", {}).get("content", {})
    if any(p.get("in") in ("path", "query") for p in parameters) or "application/json" in body:
        statuses[422] = _PROBLEM_DESCRIPTIONS[422]
    for parameter in parameters:
        name = str(parameter.get("name", "")).lower()
        if parameter.get("in") != "header" or name not in _FOR_HEADERS:
            continue
        statuses |= _FOR_HEADERS[name]
        if _require_header(parameter) and name == "if-match":
            statuses[428] = _PROBLEM_DESCRIPTIONS[428]
    return statuses


def add_problems(operation: dict[str, Any], statuses: dict[int, str]) -> None:
    """Add the problem answers an operation lacks (a route's own description of one stands)."""
    responses = operation.setdefault("responses", {})
    for status, description in sorted(statuses.items()):
        if str(status) not in responses:
            responses[str(status)] = problems(status, **{f"_{status}": description})[status]


def complete_problems(document: dict[str, Any]) -> dict[str, Any]:
    """Every native operation of an OpenAPI document, with the problems it answers by what it
    takes (`derived_problems`) and its required headers marked. FHIR paths answer
    OperationOutcome instead, and are left as they are."""
    for path, item in document.get("paths", {}).items():
        if is_fhir_path(path):
            continue
        for method, operation in item.items():
            if method in _OPERATION_METHODS and isinstance(operation, dict):
                add_problems(operation, derived_problems(operation))
    return document


def problem_schemas() -> dict[str, Any]:
    """The Problem schema (and what it refers to) for `components/schemas`."""
    schema = ProblemOut.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {**defs, "Problem": schema}


def document_problems(app: FastAPI) -> None:
    """Put the Problem schema that `problems()` refers to in the app's OpenAPI document, and the
    problems every operation answers by what it takes (`complete_problems`)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = complete_problems(build())
            document.setdefault("components", {}).setdefault("schemas", {}).update(problem_schemas())
        return app.openapi_schema or build()

    app.openapi = openapi  # type: ignore[method-assign]


def problem_body(
    status: int,
    title: str | None = None,
    detail: str | None = None,
    *,
    type_: str = "about:blank",
    instance: str | None = None,
    **extensions: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": type_,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    request_id = request_id_var.get()
    if request_id:
        body["request_id"] = request_id
    body.update(extensions)
    return body


def problem_response(
    status: int,
    title: str | None = None,
    detail: str | None = None,
    *,
    type_: str = "about:blank",
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    return JSONResponse(
        problem_body(status, title, detail, type_=type_, **extensions),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def is_fhir_path(path: str) -> bool:
    """FHIR interactions answer errors as OperationOutcome: the gateway's `/fhir` and each
    service's `/<service>/fhir`."""
    return path == "/fhir" or path.startswith("/fhir/") or "/fhir/" in path or path.endswith("/fhir")


_LOCATION_KINDS = frozenset({"body", "query", "path", "header", "cookie"})


def fhirpath(location: list[Any]) -> str | None:
    """The FHIRPath of the element an error names (`["body", "subject", "reference"]` ->
    `subject.reference`, a list index as `[n]`), or the parameter's name for a query location."""
    parts = [str(part) for part in location]
    if parts and parts[0] in _LOCATION_KINDS:
        parts = parts[1:]
    path = ""
    for part in parts:
        path += f"[{part}]" if part.isdigit() and path else (f".{part}" if path else part)
    return path or None


# HL7's OperationOutcome message codes (http://terminology.hl7.org/CodeSystem/operation-outcome)
# for the answers that have one: a partner's system can act on the code, not parse the words.
OUTCOME_CODES = "http://terminology.hl7.org/CodeSystem/operation-outcome"
OUTCOME_DISPLAYS: dict[str, str] = {
    "MSG_AUTH_REQUIRED": "You must authenticate before you can use this service",
    "MSG_BAD_FORMAT": "Bad Syntax",
    "MSG_CANT_PARSE_CONTENT": "Unable to parse feed",
    "MSG_NO_EXIST": "Resource Id does not exist",
    "MSG_OP_NOT_ALLOWED": "Operation not allowed for resource",
    "MSG_PARAM_INVALID": "Parameter content is invalid",
    "MSG_PARAM_UNKNOWN": "Parameter is not understood",
    "MSG_UNKNOWN_TYPE": "Resource Type is not recognised",
    "MSG_VERSION_AWARE_CONFLICT": "Version conflict",
}
_OUTCOME_BY_STATUS = {
    401: "MSG_AUTH_REQUIRED", 404: "MSG_NO_EXIST", 405: "MSG_OP_NOT_ALLOWED", 406: "MSG_BAD_FORMAT",
    412: "MSG_VERSION_AWARE_CONFLICT", 415: "MSG_BAD_FORMAT",
}  # fmt: skip


def _issue_details(problem: dict[str, Any], status: int) -> dict[str, Any] | None:
    """An issue's coded `details`: the suite's problem type (system + code make its `type` URI)
    and HL7's message code where one applies."""
    codings = []
    type_ = str(problem.get("type") or "")
    if type_.startswith(PROBLEM_BASE):
        codings.append(
            {
                "system": PROBLEM_BASE.rstrip("/"),
                "code": type_.removeprefix(PROBLEM_BASE),
                "display": str(problem.get("title") or ""),
            }
        )
    outcome = problem.get("outcome_code")
    if outcome is None and problem.get("fhir_code") != "not-supported":
        outcome = _OUTCOME_BY_STATUS.get(status)
    if outcome in OUTCOME_DISPLAYS:
        codings.append({"system": OUTCOME_CODES, "code": outcome, "display": OUTCOME_DISPLAYS[outcome]})
    if not codings:
        return None
    return {
        "coding": [{k: v for k, v in c.items() if v} for c in codings],
        "text": str(problem.get("title") or HTTPStatus(status).phrase),
    }


def operation_outcome(problem: dict[str, Any]) -> dict[str, Any]:
    """The OperationOutcome saying what a problem body says (same words, no input echoed)."""
    status = int(problem["status"])
    code = problem.get("fhir_code") or _ISSUE_TYPES.get(status, "processing" if status < 500 else "exception")
    diagnostics = str(problem.get("title") or HTTPStatus(status).phrase)
    if problem.get("detail"):
        diagnostics = f"{diagnostics}: {problem['detail']}"
    first: dict[str, Any] = {"severity": "error" if status < 500 else "fatal", "code": code}
    details = _issue_details(problem, status)
    if details:
        first["details"] = details
    first["diagnostics"] = diagnostics
    if isinstance(problem.get("expression"), str):
        first["expression"] = [problem["expression"]]
    issues: list[dict[str, Any]] = [first]
    for error in problem.get("errors", []):
        where = ".".join(str(part) for part in error.get("location", []))
        issue: dict[str, Any] = {
            "severity": "error",
            "code": "invalid" if status in (400, 422) and not problem.get("fhir_code") else code,
            "diagnostics": f"{where}: {error.get('message')}" if where else str(error.get("message")),
        }
        expression = fhirpath(error.get("location", []))
        if expression:
            issue["expression"] = [expression]
        issues.append(issue)
    outcome: dict[str, Any] = {"resourceType": "OperationOutcome", "issue": issues}
    request_id = problem.get("request_id")
    if isinstance(request_id, str) and _FHIR_ID.match(request_id):
        outcome["id"] = request_id  # the request id, so support can find the logs
    return outcome


def error_response(
    path: str,
    status: int,
    title: str | None = None,
    detail: str | None = None,
    *,
    type_: str = "about:blank",
    headers: dict[str, str] | None = None,
    scope: MutableMapping[str, Any] | None = None,
    **extensions: Any,
) -> Response:
    """problem+json, an OperationOutcome on FHIR paths, or a page for people on the pages' paths
    (`answer_errors_as_pages`; `scope`, when given, tells the page who is signed in): the one way
    every error is answered."""
    body = problem_body(status, title, detail, type_=type_, **extensions)
    for prefix, render in _PAGE_RENDERERS.items():
        if path == prefix or path.startswith(f"{prefix}/"):
            return render(body, headers, scope)
    if is_fhir_path(path):
        return JSONResponse(
            operation_outcome(body), status_code=status, media_type=FHIR_JSON, headers=headers
        )
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


# Path prefix → how a problem is shown to a person there (the gateway's pages, gateway/web).
PageRenderer = Callable[[dict[str, Any], dict[str, str] | None, MutableMapping[str, Any] | None], Response]
_PAGE_RENDERERS: dict[str, PageRenderer] = {}


def answer_errors_as_pages(prefix: str, render: PageRenderer) -> None:
    """Under `prefix`, every error (raised, validation, routing, a middleware's) is answered by
    `render(problem body, headers, scope or None)`: an HTML page for people, not JSON."""
    _PAGE_RENDERERS[prefix.rstrip("/")] = render


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for error in exc.errors():
        # Drop "input" and "ctx": they echo what the caller sent.
        errors.append(
            {
                "location": [str(part) for part in error.get("loc", ())],
                "message": str(error.get("msg", "invalid")),
                "type": str(error.get("type", "value_error")),
            }
        )
    return errors


def install_problem_handlers(app: FastAPI) -> None:
    """Problem bodies for raised `Problem`s, validation and HTTP errors. Unhandled exceptions are
    answered by `RequestContextMiddleware`, which every app installs. `Problem` covers every
    `Refusal` (shared/problems.py): one handler for every refusal of every service. The OpenAPI
    document gains the Problem schema the routes' `problems()` refer to."""
    document_problems(app)

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        return error_response(
            request.url.path, exc.status, exc.title, exc.detail, type_=exc.type, headers=exc.headers,
            scope=request.scope, **exc.extensions,
        )  # fmt: skip

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        if errors and all(tuple(error.get("loc", ()))[:1] == ("path",) for error in errors):
            # An id that cannot be one this API issues names nothing: not found, like any other
            # id that is not there (a 422 would say the request's form was wrong).
            return error_response(
                request.url.path,
                404,
                "Not found",
                "Nothing has this id.",
                type_=problem_type("not-found"),
                scope=request.scope,
            )
        return error_response(
            request.url.path,
            422 if not is_fhir_path(request.url.path) else 400,
            "Request is not valid",
            "One or more fields are missing or invalid.",
            type_=problem_type("validation"),
            scope=request.scope,
            errors=_validation_errors(exc),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        detail = (
            exc.detail
            if isinstance(exc.detail, str) and exc.detail != HTTPStatus(exc.status_code).phrase
            else None
        )
        return error_response(
            request.url.path,
            exc.status_code,
            None,
            detail,
            headers=getattr(exc, "headers", None),
            scope=request.scope,
        )
