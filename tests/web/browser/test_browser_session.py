"""A person's session in a real browser (Debian's Chromium), against the whole suite and a real
OpenID Connect provider: a plain link to an API address, sign-in through the provider's form,
the suite signed in, sign-out through the provider's end-session confirmation; then the same
with the keyboard alone (Tab and Enter), every control reached showing NHS.UK's focus style."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from gateway.web.roles import Role
from tests.web.browser.support import (
    NARROW,
    WATCH_CSP,
    Focus,
    choose_person,
    csp_violations,
    new_context,
    tab_to,
)
from tests.web.conftest import WebSuite

if TYPE_CHECKING:
    from playwright.async_api import Browser

pytestmark = pytest.mark.asyncio(loop_scope="module")

ANALYST = "sam.analyst@lsc-icb.example"
NAME = "Sam Okafor"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def analyst(web_suite: WebSuite) -> str:
    await web_suite.person(ANALYST, [Role.ICB_ANALYST], organisation="QE1", name=NAME)
    return ANALYST


def _unseen(stops: list[Focus]) -> list[str]:
    return [str(stop) for stop in stops if not stop.visible]


async def test_a_plain_link_signs_in_through_the_provider_and_signing_out_ends_both_sessions(
    chromium: Browser, web_suite: WebSuite, analyst: str
) -> None:
    base = web_suite.url
    context = await new_context(chromium)  # the pages' CSP enforced
    await context.add_init_script(WATCH_CSP)
    page = await context.new_page()
    try:
        # A link someone was given before there were pages: the browser is sent to sign in.
        opened = await page.goto(f"{base}/reporting/dashboard")
        assert opened is not None and opened.status == 200
        redirect = opened.request.redirected_from
        assert redirect is not None and (await redirect.response()).status == 303  # type: ignore[union-attr]
        assert page.url == f"{base}/app/sign-in?next=%2Fapp%2Freporting"
        await page.get_by_role("heading", name="Sign in to CMH Suite").wait_for()

        await page.get_by_role("button", name=re.compile(r"^Sign in with ")).click()
        await page.wait_for_url(re.compile(re.escape(web_suite.provider) + "/oauth2/authorize"))
        async with page.expect_navigation(url=re.compile(re.escape(base) + "/app/reporting")) as back:
            await choose_person(page, analyst)
        landed = await back.value
        assert landed is not None
        # The reporting page is where the link goes; until it is built that is a 404 (answered by
        # the app's error handler, which shows no one signed in).
        assert landed.status in (200, 404), landed.status
        if landed.status == 200:
            assert NAME in await page.locator("header").inner_text()

        await page.get_by_role("link", name="NHS CMH Suite homepage").click()
        await page.wait_for_url(f"{base}/app/")
        header = await page.locator("header").inner_text()
        assert NAME in header and "QE1" in header
        await page.get_by_role("heading", name="Your work").wait_for()
        assert await csp_violations(page) == []

        # Sign out: the provider's end-session confirmation, then the suite's signed-out page.
        await page.get_by_role("button", name="Sign out").click()
        await page.wait_for_url(re.compile(re.escape(web_suite.provider) + "/oauth2/end_session"))
        await page.get_by_role("button", name="End session").click()
        await page.wait_for_url(
            re.compile(re.escape(f"{base}/app/signed-out"))
        )  # ?state=: the provider echoes it
        await page.get_by_role("heading", name="You have signed out").wait_for()
        assert "Sign in" in await page.locator("header").inner_text()

        await page.goto(f"{base}/app/")
        assert page.url == f"{base}/app/sign-in?next=%2Fapp%2F"
        assert NAME not in await page.locator("header").inner_text()
    finally:
        await context.close()


@pytest.mark.parametrize("viewport", [None, NARROW], ids=["desktop", "320px"])
async def test_signing_in_and_out_with_the_keyboard_alone(
    chromium: Browser, web_suite: WebSuite, analyst: str, viewport: dict[str, int] | None
) -> None:
    """Tab to "Sign in with ...", Enter; the provider's form (typed, Enter); Tab to "Sign out",
    Enter; the provider's confirmation, Enter. Every stop on our pages shows its focus."""
    base = web_suite.url
    context = await new_context(chromium, viewport=viewport)
    page = await context.new_page()
    try:
        await page.goto(f"{base}/app/sign-in?next=%2Fapp%2F")
        stops = await tab_to(page, "Sign in with your organisation's account")
        assert stops[0].text == "Skip to main content", stops[0]
        assert not _unseen(stops), _unseen(stops)
        await page.keyboard.press("Enter")
        await page.wait_for_url(re.compile(re.escape(web_suite.provider) + "/oauth2/authorize"))

        # The provider's page, not ours: its subject field is autofocused once it has loaded; put
        # the focus there so a slow load cannot send the typing elsewhere.
        await page.locator('input[name="sub"]').first.focus()
        await page.keyboard.type(analyst)
        await page.keyboard.press("Enter")
        await page.wait_for_url(f"{base}/app/")
        assert NAME in await page.locator("header").inner_text()

        stops = await tab_to(page, "Sign out")
        assert not _unseen(stops), _unseen(stops)
        await page.keyboard.press("Enter")
        await page.wait_for_url(re.compile(re.escape(web_suite.provider) + "/oauth2/end_session"))
        await tab_to(page, "End session")  # the provider's page: reached, its focus style not ours
        await page.keyboard.press("Enter")
        await page.wait_for_url(
            re.compile(re.escape(f"{base}/app/signed-out"))
        )  # ?state=: the provider echoes it
        await page.get_by_role("heading", name="You have signed out").wait_for()
    finally:
        await context.close()
