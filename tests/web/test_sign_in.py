"""Signing in and out (issue 22 §1), driven over HTTP against a real gateway and a real OpenID
Connect provider (oidc-provider-mock): authorization code with PKCE and a nonce, the id_token
validated, the person mapped to their organisation and roles, a server-side session under a new
key, CSRF on every form, idle and absolute timeouts, sign-out that ends the provider's session,
and a browser opening an API address sent to sign in rather than given a 401."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import oidc_provider_mock
import pytest
from sqlalchemy import select, update

from gateway.app import create_app
from gateway.models import WebSessionRow
from gateway.web.people import add_person, disable_person, person_for_identity
from gateway.web.roles import Role
from shared.db import Database
from shared.nats_server import free_port
from shared.settings import Settings
from shared.sqltypes import utcnow
from tests.support import prepare_databases, serve
from tests.web.support import BROWSER_HEADERS as BROWSER
from tests.web.support import SECRET, Browser, csrf_of

ANALYST = "sam.analyst@lsc-icb.example"
STRANGER = "nobody@elsewhere.example"
CLAIMED = "casey.crisis@lscft.example"  # mapped by the provider's claims, not by `cmh users`
MUDDLED = "mixed.up@lscft.example"  # claims whose roles are of two kinds of work


@pytest.fixture
def provider() -> Iterator[str]:
    users = [
        oidc_provider_mock.User(sub=ANALYST, claims={"name": "Sam Analyst", "email": ANALYST}),
        oidc_provider_mock.User(sub=STRANGER, claims={"name": "No One", "email": STRANGER}),
        oidc_provider_mock.User(
            sub=CLAIMED,
            claims={"name": "Casey Crisis", "cmh_org": "RW5", "cmh_roles": ["crisis_practitioner"]},
        ),
        oidc_provider_mock.User(
            sub=MUDDLED,
            claims={"name": "Mixed Up", "cmh_org": "RW5", "cmh_roles": "crisis_practitioner icb_analyst"},
        ),
    ]
    with oidc_provider_mock.run_server_in_thread(require_nonce=True, user_claims=users) as server:
        yield f"http://127.0.0.1:{server.server_port}"


@dataclass
class SignInSuite:
    url: str
    settings: Settings
    db: Database
    analyst_id: str


@pytest.fixture
async def signin_suite(make_settings: Callable[..., Settings], provider: str) -> AsyncIterator[SignInSuite]:
    port = free_port()
    settings = make_settings(
        gateway_port=port,
        oidc_issuer=provider,
        oidc_client_secret=SECRET,
        oidc_organisation_claim="cmh_org",
        oidc_roles_claim="cmh_roles",
        public_url=f"http://127.0.0.1:{port}",
    )
    await prepare_databases(settings, ("gateway",), {})
    db = Database(settings.database_url_for("gateway"), schema=settings.database_schema_for("gateway"))
    async with db.transaction() as tx:
        analyst = await add_person(
            tx,
            issuer=provider,
            subject=ANALYST,
            name="Sam Analyst",
            organisation="QE1",
            organisation_system="ods",
            roles=[Role.ICB_ANALYST],
        )
        analyst_id = analyst.id
    server, task = await serve(create_app(settings), port)
    try:
        yield SignInSuite(f"http://127.0.0.1:{port}", settings, db, analyst_id)
    finally:
        server.should_exit = True
        await task
        await db.dispose()


@pytest.fixture
async def browser(signin_suite: SignInSuite) -> AsyncIterator[Browser]:
    async with httpx.AsyncClient(base_url=signin_suite.url, timeout=15) as http:
        yield Browser(http)


async def test_sign_in_with_pkce_and_a_nonce_maps_the_person_and_starts_a_new_session(
    signin_suite: SignInSuite, browser: Browser
) -> None:
    anonymous = await browser.get("/app/")
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/app/sign-in?next=%2Fapp%2F"
    page = await browser.get(anonymous.headers["location"])
    assert page.status_code == 200 and "Sign in with" in page.text
    assert (
        "no-store" in page.headers["cache-control"]
        and "frame-ancestors 'none'" in page.headers["content-security-policy"]
    )

    await browser.get("/app/sign-in/start?next=/app/")
    before = dict(browser.cookies)  # the session that holds the OIDC state while signing in
    assert before
    back = await browser.sign_in(ANALYST)
    assert back.status_code == 303 and back.headers["location"] == "/app/"
    assert browser.cookies != before  # a new key at sign-in: no session fixation

    home = await browser.get("/app/")
    assert home.status_code == 200, home.text
    assert "Sam Analyst" in home.text and "QE1" in home.text and 'action="/app/sign-out"' in home.text

    # The key of the session before sign-in is worth nothing now.
    stale = await browser.http.get(
        "/app/", headers={**BROWSER, "Cookie": "; ".join(f"{k}={v}" for k, v in before.items())}
    )
    assert stale.status_code == 303


async def test_an_identity_not_mapped_here_is_refused_and_a_forged_callback_fails(
    signin_suite: SignInSuite, browser: Browser
) -> None:
    refused = await browser.sign_in(STRANGER)
    assert refused.status_code == 403 and "not set up for CMH Suite" in refused.text
    assert (await browser.get("/app/")).status_code == 303  # not signed in

    await browser.get("/app/sign-in/start?next=/app/")
    forged = await browser.get("/app/auth/callback?code=made-up&state=made-up")
    assert forged.status_code == 303 and "reason=failed" in forged.headers["location"]
    failed = await browser.get(forged.headers["location"])
    assert "Sign-in did not work" in failed.text


async def test_every_form_needs_the_sessions_csrf_token_and_our_origin(
    signin_suite: SignInSuite, browser: Browser
) -> None:
    await browser.sign_in(ANALYST)
    token = csrf_of((await browser.get("/app/")).text)
    missing = await browser.post("/app/sign-out", data={})
    assert missing.status_code == 403 and "could not be accepted" in missing.text
    wrong = await browser.post("/app/sign-out", data={"csrf_token": "x" * 43})
    assert wrong.status_code == 403
    cross_site = await browser.post(
        "/app/sign-out", data={"csrf_token": token}, headers={"Origin": "https://evil.example"}
    )
    assert cross_site.status_code == 403
    assert (await browser.get("/app/")).status_code == 200  # still signed in after all three


async def test_sign_out_ends_the_session_and_the_providers(
    signin_suite: SignInSuite, browser: Browser
) -> None:
    await browser.sign_in(ANALYST)
    token = csrf_of((await browser.get("/app/")).text)
    out = await browser.post(
        "/app/sign-out", data={"csrf_token": token}, headers={"Origin": signin_suite.url}
    )
    assert out.status_code == 303
    ending = urlsplit(out.headers["location"])
    assert f"{ending.scheme}://{ending.netloc}" == signin_suite.settings.oidc_issuer
    query = parse_qs(ending.query)
    assert query["id_token_hint"][0].count(".") == 2  # the provider's id_token names the session
    assert query["post_logout_redirect_uri"] == [f"{signin_suite.url}/app/signed-out"]
    assert not browser.cookies  # cleared
    assert (await browser.get("/app/")).status_code == 303
    assert "You have signed out" in (await browser.get("/app/signed-out")).text


async def test_idle_and_absolute_timeouts_and_a_disabled_person_end_the_session(
    signin_suite: SignInSuite, browser: Browser
) -> None:
    await browser.sign_in(ANALYST)
    async with signin_suite.db.transaction() as tx:
        await tx.execute(update(WebSessionRow).values(last_seen_at=utcnow() - timedelta(minutes=31)))
    idle = await browser.get("/app/")
    assert idle.status_code == 303 and "reason=idle" in idle.headers["location"]
    assert "had not used CMH Suite for a while" in (await browser.get(idle.headers["location"])).text

    await browser.sign_in(ANALYST)
    async with signin_suite.db.transaction() as tx:
        await tx.execute(update(WebSessionRow).values(created_at=utcnow() - timedelta(hours=13)))
    expired = await browser.get("/app/")
    assert expired.status_code == 303 and "reason=expired" in expired.headers["location"]

    await browser.sign_in(ANALYST)
    assert (await browser.get("/app/")).status_code == 200
    async with signin_suite.db.transaction() as tx:
        await disable_person(tx, signin_suite.analyst_id)
    assert (await browser.get("/app/")).status_code == 303
    refused = await browser.sign_in(ANALYST)
    assert refused.status_code == 403  # a disabled person cannot sign in again


async def test_a_session_is_marked_seen_once_a_minute_not_on_every_request(
    signin_suite: SignInSuite, browser: Browser
) -> None:
    await browser.sign_in(ANALYST)

    async def seen() -> datetime:
        async with signin_suite.db.transaction() as tx:
            return (await tx.execute(select(WebSessionRow.last_seen_at))).scalar_one()

    first = await seen()
    for _ in range(3):
        assert (await browser.get("/app/")).status_code == 200
    assert await seen() == first  # pages within the minute write nothing
    stale = utcnow() - timedelta(minutes=2)
    async with signin_suite.db.transaction() as tx:
        await tx.execute(update(WebSessionRow).values(last_seen_at=stale))
    assert (await browser.get("/app/")).status_code == 200
    assert await seen() > stale + timedelta(minutes=1)  # written again, so idling is still seen


async def test_pages_are_rate_limited_per_person_once_signed_in_and_per_address_before(
    signin_suite: SignInSuite, browser: Browser
) -> None:
    """The people of a trust reach the suite from one address: a signed-in person's pages draw on
    their own allowance, so others signing in or browsing there cannot use it up, nor they
    theirs; signing in (no person yet) is limited per address."""
    signin_suite.settings.rate_limit_per_minute = 60  # bursts of ten
    await browser.sign_in(ANALYST)  # two page requests at this address, before the person is known

    async with httpx.AsyncClient(base_url=signin_suite.url, timeout=15) as http:
        anonymous = [(await http.get("/app/sign-in", headers=BROWSER)).status_code for _ in range(12)]
    assert anonymous[0] == 200 and 429 in anonymous  # the address's allowance, spent

    pages = [await browser.get("/app/") for _ in range(14)]
    assert [page.status_code for page in pages[:9]] == [200] * 9  # the person's own allowance
    limited = [page for page in pages if page.status_code == 429]
    assert limited and int(limited[0].headers["retry-after"]) >= 1
    assert "Too many requests" in limited[0].text


async def test_a_browser_opening_an_api_address_is_sent_to_sign_in_a_program_gets_401(
    signin_suite: SignInSuite, browser: Browser
) -> None:
    opened = await browser.get("/reporting/dashboard")
    assert opened.status_code == 303
    assert opened.headers["location"] == "/app/sign-in?next=%2Fapp%2Freporting"
    assert "Sign in" in (await browser.get(opened.headers["location"])).text
    program = await browser.http.get("/reporting/dashboard", headers={"Accept": "application/json"})
    assert program.status_code == 401 and program.headers["content-type"].startswith(
        "application/problem+json"
    )


async def test_sign_in_goes_back_only_to_a_page_of_the_suite(
    signin_suite: SignInSuite, browser: Browser
) -> None:
    for attempt in ("https://evil.example/", "//evil.example/app/", "/app\\..\\x", "/reporting/dashboard"):
        back = await browser.sign_in(ANALYST, next_path=attempt)
        assert back.status_code == 303 and back.headers["location"] == "/app/", attempt


async def test_a_person_the_provider_describes_by_claims_is_mapped_from_them(
    signin_suite: SignInSuite, browser: Browser
) -> None:
    back = await browser.sign_in(CLAIMED)
    assert back.status_code == 303 and back.headers["location"] == "/app/"
    home = await browser.get("/app/")
    assert home.status_code == 200 and "Casey Crisis" in home.text and "RW5" in home.text
    async with signin_suite.db.session() as tx:
        person = await person_for_identity(tx, signin_suite.settings.oidc_issuer or "", CLAIMED)
    assert person is not None and person.mapped_from == "claims" and person.roles == "crisis_practitioner"

    # Claims that do not hold together (two kinds of work) map no one.
    async with httpx.AsyncClient(base_url=signin_suite.url, timeout=15) as http:
        refused = await Browser(http).sign_in(MUDDLED)
    assert refused.status_code == 403 and "not set up for CMH Suite" in refused.text
