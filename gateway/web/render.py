"""Rendering the front door's pages: Jinja templates (autoescaped, gateway/web/templates/) in the
NHS.UK design, answered with the headers a page for people needs.

`page(request, "referrals.html", {...})` renders a template extending `layout.html`;
`problem_page(request, 403, ...)` renders an error for a person (the page-side twin of a problem
details body: the same title, detail and request id, never a stack trace). Both answer with
`page_headers()`: a Content-Security-Policy allowing nothing but the gateway's own files (no
inline script or style, no framing, forms posting only here), `nosniff`, a same-origin
Referer, and `no-store` (every page names the signed-in person in its header).

Templates see, beside the page's context: `static_url(path)` (a file under /app/static with a
content hash for cache busting), `NHSUK_STYLESHEET` and `INIT_SCRIPT`, `TAG_COLOURS`,
`STATE_COLOURS` and `state_label(state)` for `macros.state_tag`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from http import HTTPStatus
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse
from starlette.templating import Jinja2Templates

from gateway.web.roles import GRANTS, Role
from gateway.web.static import INIT_SCRIPT, NHSUK_STYLESHEET, STATIC_DIR
from shared.errors import problem_body
from shared.middleware import WEB_STATIC_PREFIX

TEMPLATES_DIR = Path(__file__).parent / "templates"

# A form may post elsewhere only where a page says so (an identity provider's sign-out, say):
# an origin or URL, checked so no caller can write a directive into the policy.
_FORM_TARGET = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%!$&()*+=:@/-]*)?$")
_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action"
)

TAG_COLOURS = frozenset(
    {"white", "grey", "green", "aqua-green", "blue", "purple", "pink", "red", "orange", "yellow"}
)
# The states the services report, by meaning: waiting (blue), done well (green), needs attention
# (yellow, orange), refused or missed (red), over or not begun (grey). The gateway imports no
# service, so these are the values as the API sends them (triage's ReferralStatus, directory's
# EditState and HandoverState, contracts' ClockState).
STATE_COLOURS: dict[str, str] = {
    # referrals
    "received": "blue", "routed": "green", "signposted": "aqua-green", "closed": "grey",
    # directory edits
    "draft": "grey", "pending_review": "yellow", "published": "green", "rejected": "red", "withdrawn": "grey",
    # handovers to VCFSE partners
    "offered": "blue", "accepted": "green", "declined": "red", "completed": "grey",
    # waiting-time clocks
    "not_started": "grey", "running": "blue", "at_risk": "orange", "met": "green", "breached": "red",
}  # fmt: skip
ROLE_NAMES: dict[Role, str] = {
    Role.TRIAGE_PRACTITIONER: "triage practitioner",
    Role.CRISIS_PRACTITIONER: "crisis practitioner",
    Role.TEAM_MEMBER: "team member",
    Role.TEAM_LEAD: "team lead",
    Role.DIRECTORY_MODERATOR: "directory moderator",
    Role.VCFSE_STAFF: "VCFSE staff",
    Role.ICB_ANALYST: "ICB analyst",
    Role.ADMINISTRATOR: "administrator",
}
# What layout.html reads, so a page need give only what it has.
LAYOUT_DEFAULTS: dict[str, Any] = {
    "person": None,
    "csrf_token": None,
    "nav": (),
    "back_link": None,
    "back_label": None,
    "errors": None,
}


def content_security_policy(form_action: Iterable[str] = ()) -> str:
    targets = list(form_action)
    for target in targets:
        if not _FORM_TARGET.match(target):
            raise ValueError(f"not a form-action source: {target!r}")
    return " ".join([_POLICY, "'self'", *targets])


def page_headers(form_action: Iterable[str] = ()) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(form_action),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


@lru_cache(maxsize=64)
def static_url(path: str) -> str:
    """`/app/static/<path>?v=<hash of the file>`: a changed file is a new URL, so the day-long
    cache of static files never serves an old one. A path naming no file is a template's mistake."""
    digest = hashlib.sha256((STATIC_DIR / path).read_bytes()).hexdigest()[:12]
    return f"{WEB_STATIC_PREFIX}{path}?v={digest}"


def state_label(state: object) -> str:
    """`pending_review` -> `Pending review`."""
    return str(state).replace("_", " ").capitalize()


def roles_granting(scope: str) -> list[str]:
    """The roles (in words) whose grant holds `scope`, in Role's order."""
    return [
        ROLE_NAMES.get(role, role.value.replace("_", " ")) for role in Role if scope in GRANTS[role].scopes
    ]


def environment(*directories: Path) -> jinja2.Environment:
    """Templates from `directories` (first) and gateway/web/templates, every one autoescaped."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([*directories, TEMPLATES_DIR]),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        static_url=static_url,
        NHSUK_STYLESHEET=NHSUK_STYLESHEET,
        INIT_SCRIPT=INIT_SCRIPT,
        TAG_COLOURS=TAG_COLOURS,
        STATE_COLOURS=STATE_COLOURS,
        state_label=state_label,
    )
    return env


def _scopes(value: object) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, Iterable):
        return [str(scope) for scope in value]
    return []


class Renderer:
    """Pages from one set of template directories (the suite's own; tests add theirs)."""

    def __init__(self, *directories: Path) -> None:
        self.templates = Jinja2Templates(env=environment(*directories))

    def page(
        self,
        request: Request,
        template: str,
        context: Mapping[str, Any] | None = None,
        status: int = 200,
        *,
        form_action: Iterable[str] = (),
    ) -> HTMLResponse:
        """`template` rendered with `context` (over LAYOUT_DEFAULTS), with page_headers()."""
        return self.templates.TemplateResponse(
            request,
            template,
            {**LAYOUT_DEFAULTS, **(context or {})},
            status_code=status,
            headers=page_headers(form_action),
        )

    def problem_page(
        self,
        request: Request,
        status: int,
        title: str | None = None,
        detail: str | None = None,
        *,
        context: Mapping[str, Any] | None = None,
        **extra: Any,
    ) -> HTMLResponse:
        """error.html for a problem: its title (the status's phrase when none), detail and
        request id; a Sign in link on a 401; on a 403 naming `required_scopes`, the permission
        needed and the roles that grant it. `context` is the layout's (who is signed in, the
        navigation); `extra` is the problem's own fields. Nothing else of `extra` is shown."""
        problem = problem_body(status, title, detail, **extra)
        needed = _scopes(problem.get("required_scopes"))
        return self.page(
            request,
            "error.html",
            {
                **(context or {}),
                "problem": problem,
                "status": status,
                "required_scopes": needed,
                "granted_by": sorted({role for scope in needed for role in roles_granting(scope)}),
            },
            status,
        )


_renderer = Renderer()


def page(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    status: int = 200,
    *,
    form_action: Iterable[str] = (),
) -> HTMLResponse:
    """A page from gateway/web/templates: see Renderer.page."""
    return _renderer.page(request, template, context, status, form_action=form_action)


def problem_page(
    request: Request,
    status: int,
    title: str | None = None,
    detail: str | None = None,
    *,
    context: Mapping[str, Any] | None = None,
    **extra: Any,
) -> HTMLResponse:
    """An error page for a person: see Renderer.problem_page."""
    return _renderer.problem_page(request, status, title, detail, context=context, **extra)


def _signed_in_layout(scope: Mapping[str, Any] | None) -> dict[str, Any]:
    session = (scope or {}).get("state", {}).get("web_session")
    shown = getattr(session, "shown", None)
    if session is None or getattr(session, "person_id", None) is None or not shown:
        return {}
    return {"person": shown, "csrf_token": session.csrf_token}


PEOPLES_TITLES = {
    404: "Page not found",
    405: "This cannot be done here",
    429: "Too many requests",
    500: "Sorry, there is a problem with the service",
    503: "Sorry, the service is unavailable",
}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def problem_response(
    problem: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
    scope: Mapping[str, Any] | None = None,
) -> HTMLResponse:
    """error.html for a problem body answered by a handler of the whole app or a middleware
    (`shared.errors.answer_errors_as_pages`). With the request's `scope`, the header shows who is
    signed in as the session recorded them at sign-in (gateway/web/sessions.py `shown`), so a
    signed-in person is not offered "Sign in" on a page that is not there."""
    status = int(problem.get("status", 500))
    needed = _scopes(problem.get("required_scopes"))
    shown = dict(problem)
    if status in PEOPLES_TITLES and shown.get("title") in (None, "", _phrase(status)):
        shown["title"] = PEOPLES_TITLES[status]  # NHS.UK's words for the standard errors
    html = _renderer.templates.env.get_template("error.html").render(
        {
            **LAYOUT_DEFAULTS,
            **_signed_in_layout(scope),
            "problem": shown,
            "status": status,
            "required_scopes": needed,
            "granted_by": sorted({role for scope in needed for role in roles_granting(scope)}),
        }
    )
    kept = {
        name: value
        for name, value in (headers or {}).items()
        if name.lower() in ("retry-after", "allow", "www-authenticate")
    }
    return HTMLResponse(html, status_code=status, headers={**page_headers(), **kept})
