"""RFC 9457 problem details for every error any service or the gateway returns.

Bodies never carry stack traces or the values a caller sent (which may be person data): a
validation error names the field and the rule it broke, not the input.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.tracing import request_id_var

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://cmh-suite.nhs.uk/problems/"


def problem_type(slug: str) -> str:
    return PROBLEM_BASE + slug


class Problem(Exception):
    """Raise from any handler to answer with a problem+json body."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        type_slug: str | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = problem_type(type_slug) if type_slug else "about:blank"
        self.headers = headers or {}
        self.extensions = extensions


def rule_broken(
    service: str, field: str, message: str, location: tuple[str, ...] = ("body",), *, status: int = 422
) -> Problem:
    """A domain rule refused the request: 422 naming the field, like a validation error, so a
    client handles both the same way. Messages are the rule's own words, never the input."""
    return Problem(
        status,
        f"{service.capitalize()} rule broken",
        message,
        type_slug=f"{service}-rule",
        errors=[{"location": [*location, field], "message": message, "type": f"{service}_rule"}],
    )


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
    answered by `RequestContextMiddleware`, which every app installs."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            exc.status, exc.title, exc.detail, type_=exc.type, headers=exc.headers, **exc.extensions
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(
            422,
            "Request is not valid",
            "One or more fields are missing or invalid.",
            type_=problem_type("validation"),
            errors=_validation_errors(exc),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = (
            exc.detail
            if isinstance(exc.detail, str) and exc.detail != HTTPStatus(exc.status_code).phrase
            else None
        )
        return problem_response(exc.status_code, None, detail, headers=getattr(exc, "headers", None))
