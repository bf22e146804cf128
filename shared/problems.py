"""The one way to refuse a request: raise a `Problem` (any status), or a `Refusal` (a rule
refused it, naming the field to fix). Pure (no web framework), so the domain modules raise them
too; `shared.errors.install_problem_handlers` answers both with one handler, as problem+json (or
an OperationOutcome under /fhir)."""

from __future__ import annotations

from typing import Any

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
        """`fhir_code=` (an extension) names the FHIR IssueType when the answer is an OperationOutcome."""
        super().__init__(title)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = problem_type(type_slug) if type_slug else "about:blank"
        self.headers = headers or {}
        self.extensions = extensions


class Refusal(Problem):
    """A request the rules refuse; nothing is stored. The one refusal every service raises (its
    domain's refusals are subclasses of it), answered by the `Problem` handler:

    - 422 (a rule broken), by default: "<Service> rule broken", type `<service>-rule`, naming the
      field in `errors` like a validation error, so a client handles both the same way;
    - 409 (the record's state does not allow it): "Not allowed in this state", type `state_slug`.

    `title`, `type_slug` and `error_type` override those words where an answer has its own.
    Messages are the rule's own words, never the input. `str()` is the message."""

    def __init__(
        self,
        service: str,
        field: str | None,
        message: str,
        *,
        status: int = 422,
        location: tuple[str, ...] = ("body",),
        title: str | None = None,
        type_slug: str | None = None,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.service = service
        self.field = field
        self.message = message
        self.location = location
        if status == 409:
            super().__init__(
                409, title or "Not allowed in this state", message,
                type_slug=type_slug or "invalid-transition", headers=headers,
            )  # fmt: skip
            return
        errors = [] if field is None else [
            {"location": [*location, field], "message": message, "type": error_type or f"{service}_rule"}
        ]  # fmt: skip
        super().__init__(
            status, title or f"{service.capitalize()} rule broken", message,
            type_slug=type_slug or f"{service}-rule", headers=headers, **({"errors": errors} if errors else {}),
        )  # fmt: skip

    def __str__(self) -> str:
        return self.message
