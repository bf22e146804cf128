"""The front door put together (issue 22): the pages' static files, their error pages, the
sign-in routes, every page module's router, and what a page needs to render itself for the
person signed in (their name and organisation, the CSRF token, the navigation their roles give)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from gateway.state import gateway_state
from gateway.web import render
from gateway.web.paths import HOME, WEB_PREFIX
from gateway.web.people import SignedInPerson
from gateway.web.roles import Role
from gateway.web.sessions import web_session
from gateway.web.signin import CsrfRefused, SignedIn, SignInRequired, sign_in_location
from gateway.web.signin import router as signin_router
from gateway.web.static import mount_static
from shared.errors import answer_errors_as_pages


@dataclass(frozen=True)
class Task:
    """A piece of work a role does, as the home page and the navigation show it."""

    href: str
    label: str
    description: str
    roles: frozenset[Role]


# The tag of a route under /app that answers no page (a file, an event stream, a fragment a
# script puts in place): the checks generated from the route table leave it out.
NOT_A_PAGE = "not-a-page"

# Every page module's tasks, in the order of gateway.web.pages.PAGE_MODULES (install_pages).
TASKS: list[Task] = []


def tasks_for(person: SignedInPerson) -> list[Task]:
    return [task for task in TASKS if task.roles & set(person.roles)]


def provider_origin(request: Request) -> list[str]:
    """Signing out ends the provider's session too: the sign-out form's redirect goes there, so
    every page's form-action allows the provider's origin."""
    issuer = gateway_state(request).settings.oidc_issuer
    if not issuer:
        return []
    parts = urlsplit(issuer)
    return [f"{parts.scheme}://{parts.netloc}"]


def layout(request: Request, person: SignedInPerson | None, *, current: str | None = None) -> dict[str, Any]:
    """What layout.html needs for the person signed in."""
    if person is None:
        return {}
    nav = [
        {"href": task.href, "label": task.label, "current": current is not None and task.href == current}
        for task in tasks_for(person)
    ]
    return {
        "person": {"name": person.name, "organisation": person.organisation},
        "csrf_token": web_session(request).csrf_token,
        "nav": nav,
    }


def person_page(
    request: Request,
    person: SignedInPerson,
    template: str,
    context: Mapping[str, Any] | None = None,
    status: int = 200,
    *,
    current: str | None = None,
) -> HTMLResponse:
    return render.page(
        request,
        template,
        {**layout(request, person, current=current), **(context or {})},
        status,
        form_action=provider_origin(request),
    )


def person_problem(
    request: Request, person: SignedInPerson | None, problem: Mapping[str, Any], status: int
) -> HTMLResponse:
    """An API's refusal shown to the person (its title, detail, the permission it needed)."""
    extra = {k: v for k, v in problem.items() if k in ("required_scopes", "type")}
    return render.problem_page(
        request,
        status,
        str(problem.get("title") or "Error"),
        problem.get("detail") if isinstance(problem.get("detail"), str) else None,
        context=layout(request, person),
        **extra,
    )


def install_pages(app: FastAPI, modules: Iterable[ModuleType] = ()) -> None:
    """The static files, error pages, sign-in, home, and every page module's router and tasks."""
    modules = list(modules)
    TASKS[:] = [task for module in modules for task in module.TASKS]
    mount_static(app)
    answer_errors_as_pages(WEB_PREFIX, render.problem_response)

    @app.exception_handler(SignInRequired)
    async def _sign_in(_request: Request, exc: SignInRequired) -> Response:
        return RedirectResponse(sign_in_location(exc.next_path, exc.reason), status_code=303)

    @app.exception_handler(CsrfRefused)
    async def _csrf(request: Request, exc: CsrfRefused) -> Response:
        return render.problem_page(request, 403, "This form could not be accepted", str(exc))

    app.include_router(signin_router)
    for module in modules:
        app.include_router(module.router)

    @app.get(WEB_PREFIX, include_in_schema=False)
    async def _bare(_request: Request) -> Response:
        return RedirectResponse(HOME, status_code=308)

    @app.get(HOME, include_in_schema=False)
    async def home(request: Request, person: SignedIn) -> Response:
        return person_page(request, person, "pages/home.html", {"tasks": tasks_for(person)})
