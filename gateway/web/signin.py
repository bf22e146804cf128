"""Signing in and out, and what every page needs of it (one home):

- `SignedIn` (a dependency): the person of this session, or a redirect to the sign-in page that
  comes back to the same page afterwards;
- `check_csrf` (on the whole web router): every form a page posts carries the session's CSRF
  token, and a cross-site Origin is refused;
- the routes: the sign-in page, the start and the provider's redirect back (authorization code
  with PKCE, `gateway.web.oidc`), sign-out (the provider's session ends too), signed-out.
"""

from __future__ import annotations

import logging
import secrets
from typing import Annotated
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import FormData

from gateway.state import gateway_state
from gateway.web.oidc import RelyingParty, SignInFailed
from gateway.web.paths import HOME, SIGN_IN, WEB_PREFIX
from gateway.web.people import (
    ClaimNames,
    SignedInPerson,
    active_person,
    person_for_identity,
    person_from_claims,
    signed_in,
)
from gateway.web.render import page, problem_page
from gateway.web.sessions import WebSession, web_session
from shared.http import public_base
from shared.settings import Settings
from shared.sqltypes import utcnow

log = logging.getLogger("cmh.web")

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class SignInRequired(Exception):
    """Raised by `SignedIn` when no one is signed in: answered with a redirect to sign in."""

    def __init__(self, next_path: str, reason: str | None = None) -> None:
        super().__init__(next_path)
        self.next_path = next_path
        self.reason = reason  # why an earlier session ended, told on the sign-in page


def safe_next(value: str | None) -> str:
    """Where to go after signing in: only a path of the pages, never another site."""
    if not value or not value.startswith(f"{WEB_PREFIX}/") or value.startswith("//") or "\\" in value:
        return HOME
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return HOME
    return value


def sign_in_location(next_path: str, reason: str | None = None) -> str:
    query = {"next": safe_next(next_path)}
    if reason:
        query["reason"] = reason
    return f"{SIGN_IN}?{urlencode(query)}"


async def check_csrf(request: Request) -> None:
    """Every unsafe request to the pages: the Origin, when sent, is ours, and the form carries
    the session's CSRF token (compared in constant time)."""
    if request.method not in UNSAFE_METHODS:
        return
    origin = request.headers.get("origin")
    ours = public_base(gateway_state(request).settings, request.scope)
    if origin is not None and origin.rstrip("/") != ours.rstrip("/"):
        raise CsrfRefused("This form was sent from another site.")
    session = web_session(request)
    form: FormData = await request.form()
    token = form.get("csrf_token")
    if not isinstance(token, str) or not secrets.compare_digest(token, session.csrf_token):
        raise CsrfRefused(
            "This form has expired or was not sent from CMH Suite. Go back, reload the page and try again."
        )


class CsrfRefused(Exception):
    pass


async def current_person(request: Request) -> SignedInPerson:
    session = web_session(request)
    if session.person_id is not None:
        async with gateway_state(request).db.session() as tx:
            person = await active_person(tx, session.person_id)
        if person is not None:
            return signed_in(person)
        session.sign_out()  # disabled since they signed in
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    raise SignInRequired(path if request.method == "GET" else HOME, session.ended)


SignedIn = Annotated[SignedInPerson, Depends(current_person)]

router = APIRouter(prefix=WEB_PREFIX, include_in_schema=False, dependencies=[Depends(check_csrf)])


def claim_names(settings: Settings) -> ClaimNames | None:
    """Which claims map a person, when the operator named them (CMH_OIDC_*_CLAIM)."""
    if not (settings.oidc_organisation_claim and settings.oidc_roles_claim):
        return None
    return ClaimNames(settings.oidc_organisation_claim, settings.oidc_roles_claim, settings.oidc_team_claim)


def relying_party(request: Request) -> RelyingParty:
    state = gateway_state(request)
    found = getattr(state, "relying_party", None)
    if found is None:
        found = state.relying_party = RelyingParty(state.settings)
    return found


def _callback_url(request: Request) -> str:
    return f"{public_base(gateway_state(request).settings, request.scope)}{WEB_PREFIX}/auth/callback"


@router.get("/sign-in")
async def sign_in_page(request: Request, next: str | None = None, reason: str | None = None) -> Response:
    session = web_session(request)
    if session.person_id is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    ended = reason if reason in ("idle", "expired", "signed-out", "failed") else session.ended
    return page(
        request,
        "sign_in.html",
        {
            "start": f"{WEB_PREFIX}/sign-in/start?{urlencode({'next': safe_next(next)})}",
            "ended": ended,
            "provider": gateway_state(request).settings.oidc_provider_name,
        },
    )


@router.get("/sign-in/start")
async def sign_in_start(request: Request, next: str | None = None) -> Response:
    session = web_session(request)
    if not gateway_state(request).settings.oidc_issuer:
        return problem_page(
            request,
            503,
            "Sign-in is not set up",
            "No sign-in service is configured for CMH Suite (CMH_OIDC_ISSUER).",
        )
    session.data["next"] = safe_next(next)
    try:
        return await relying_party(request).start(request, _callback_url(request))
    except SignInFailed:
        log.warning("sign-in provider unreachable")
        return problem_page(
            request,
            503,
            "Sign-in is not available",
            "The sign-in service cannot be reached. Try again in a few minutes.",
        )


@router.get("/auth/callback")
async def sign_in_callback(request: Request) -> Response:
    session = web_session(request)
    try:
        identity = await relying_party(request).finish(request)
    except SignInFailed as failed:
        log.info("sign-in refused", extra={"reason": str(failed)[:100]})
        return RedirectResponse(sign_in_location(session.data.get("next", HOME), "failed"), status_code=303)
    db = gateway_state(request).db
    settings = gateway_state(request).settings
    async with db.transaction() as tx:
        person = await person_for_identity(tx, identity.issuer, identity.subject)
        if (person is None or person.mapped_from == "claims") and (names := claim_names(settings)):
            person = await person_from_claims(
                tx,
                issuer=identity.issuer,
                subject=identity.subject,
                name=identity.name or identity.email or identity.subject,
                claims=identity.claims,
                names=names,
                single_point_of_access=settings.single_point_of_access_codes,
            )
        if person is not None:
            person.last_signed_in_at = utcnow()
            person_id = person.id
            shown = {"name": person.name, "organisation": person.organisation}
    if person is None:
        log.info("sign-in by an unmapped or disabled identity")
        return problem_page(
            request,
            403,
            "Your account is not set up for CMH Suite",
            "You signed in, but CMH Suite does not know which organisation and work you do. "
            "Ask your organisation's CMH Suite administrator to add you.",
        )
    next_path = safe_next(session.data.pop("next", None))
    session.data.clear()  # the provider's state, nonce and verifier are spent
    session.sign_in(person_id, identity.id_token, shown)
    log.info("signed in", extra={"person_id": person_id})
    return RedirectResponse(next_path, status_code=303)


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    session: WebSession = web_session(request)
    id_token = session.id_token
    session.sign_out()
    signed_out = f"{public_base(gateway_state(request).settings, request.scope)}{WEB_PREFIX}/signed-out"
    if gateway_state(request).settings.oidc_issuer:
        url = await relying_party(request).end_session_url(id_token, signed_out)
        if url:
            return RedirectResponse(url, status_code=303)
    return RedirectResponse(signed_out, status_code=303)


@router.get("/signed-out")
async def signed_out_page(request: Request) -> Response:
    return page(request, "signed_out.html", {})
