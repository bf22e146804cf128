"""Every page of the front door in a real browser, for every demo role: GENERATED from the
gateway's route table, so a page module added to gateway.web.pages.PAGE_MODULES is checked here
without anyone adding a test.

For each demo person of gateway/web/demo_people.py (mapped as `cmh run` maps them), signed in
through the provider's form: every GET route under /app/ without path parameters (redirects and
static files aside), the detail pages each links to (routes with path parameters, one level
deep, at most three per route), and a page that does not exist; signed out: the sign-in page (as
it is and after a failed or idle session), the signed-out page, a 404 and a 405; and the two
refusals a person meets (an identity the suite does not know, a form without its CSRF token).

Each page: axe-core (WCAG 2.0, 2.1 and 2.2, A and AA) finds nothing serious or critical; at
320 x 640 it does not scroll sideways (WCAG 1.4.10); with its Content-Security-Policy enforced it
runs no inline script (no CSP report), throws no script error and loads every file it names.
A page a role may not open answers 403 and is itself checked; one that is not there, 404."""

from __future__ import annotations

import re

import pytest

from gateway.app import create_app
from gateway.web.demo_people import DEMO_PEOPLE, DemoPerson
from gateway.web.paths import SIGN_IN, WEB_PREFIX
from shared.settings import Settings
from tests.web.browser.conftest import PageReport, Viewers
from tests.web.browser.support import PageRoute, choose_person, page_routes

pytestmark = pytest.mark.asyncio(loop_scope="module")

NOT_FOUND = f"{WEB_PREFIX}/no-such-page"
SIGNED_OUT = f"{WEB_PREFIX}/signed-out"
UNMAPPED = "nobody@elsewhere.example"


def _route_table() -> list[PageRoute]:
    """The gateway's page routes as it is built (its lifespan not run: nothing is opened)."""
    return page_routes(create_app(Settings(database_url="sqlite+aiosqlite:///:memory:")))


ROUTES = _route_table()
# The pages signed out: the sign-in page sends a signed-in person on, the signed-out page is for
# after signing out.
PUBLIC = {SIGN_IN, SIGNED_OUT}
SIGNED_IN_PAGES = [route.path for route in ROUTES if not route.has_parameters and route.path not in PUBLIC]
SIGNED_OUT_PAGES = [
    SIGN_IN,
    f"{SIGN_IN}?reason=failed",
    f"{SIGN_IN}?reason=idle",
    SIGNED_OUT,
    NOT_FOUND,
    f"{WEB_PREFIX}/sign-out",  # a GET of the sign-out form's address: 405
]


def _person_id(demo: DemoPerson) -> str:
    return demo.subject.split("@")[0]


def _assert_clean(reports: list[PageReport]) -> None:
    for report in reports:
        print(report.summary())
    failures = [f"{report.path}: {failure}" for report in reports for failure in report.failures]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("path", [*SIGNED_IN_PAGES, NOT_FOUND])
@pytest.mark.parametrize("demo", DEMO_PEOPLE, ids=_person_id)
async def test_each_page_for_each_role(
    viewers: Viewers, routes: list[PageRoute], demo: DemoPerson, path: str
) -> None:
    viewer = await viewers.of(demo)
    reports = await viewer.check_with_details(path, routes)
    first = reports[0]
    if path == NOT_FOUND:
        # Answered by the error handler of the whole app, from what the session recorded at
        # sign-in (gateway/web/render.py:problem_response): still their name, not "Sign in".
        assert first.status == 404 and first.title.startswith("Page not found"), first.summary()
    else:
        assert first.status in (200, 403), first.summary()  # 403: a page this role may not open
    assert demo.name in await viewer.axe_page.locator("header").inner_text()
    _assert_clean(reports)


@pytest.mark.parametrize("path", SIGNED_OUT_PAGES)
async def test_each_page_signed_out(viewers: Viewers, path: str) -> None:
    viewer = await viewers.of(None)
    report = await viewer.check(path)
    expected = {NOT_FOUND: 404, f"{WEB_PREFIX}/sign-out": 405}.get(path, 200)
    assert report.status == expected, report.summary()
    _assert_clean([report])


async def test_the_refusals_a_person_meets(viewers: Viewers) -> None:
    """Signing in as someone the suite does not know (403, "not set up"), and a form sent
    without the session's CSRF token (403, "could not be accepted")."""
    stranger = await viewers.of(None)
    base = stranger.base

    async def as_stranger(page: object) -> int:
        from playwright.async_api import Page

        assert isinstance(page, Page)
        await page.goto(f"{base}{SIGN_IN}")
        await page.get_by_role("button", name=re.compile(r"^Sign in with ")).click()
        async with page.expect_response(lambda answer: "/app/auth/callback" in answer.url) as answered:
            await choose_person(page, UNMAPPED)
        await page.wait_for_load_state()
        return (await answered.value).status

    refused = await stranger.check("(sign-in as an unmapped identity)", as_stranger)
    assert refused.status == 403 and "not set up" in refused.title, refused.summary()

    person = await viewers.of(DEMO_PEOPLE[0])

    async def without_token(page: object) -> int:
        from playwright.async_api import Page

        assert isinstance(page, Page)
        await page.goto(f"{base}{WEB_PREFIX}/")
        await page.locator("input[name=csrf_token]").first.evaluate("(field) => { field.value = 'forged'; }")
        async with page.expect_navigation() as navigated:
            await page.get_by_role("button", name="Sign out").click()
        answer = await navigated.value
        return answer.status if answer is not None else 0

    forged = await person.check("(sign-out without the CSRF token)", without_token)
    assert forged.status == 403 and "could not be accepted" in forged.title, forged.summary()
    _assert_clean([refused, forged])


async def test_the_generated_checks_cover_every_page_route(routes: list[PageRoute]) -> None:
    """The routes parametrized at collection are the running gateway's."""
    assert [route.path for route in routes] == [route.path for route in ROUTES]
    assert f"{WEB_PREFIX}/" in SIGNED_IN_PAGES
