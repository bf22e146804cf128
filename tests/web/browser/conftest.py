"""The people's pages in a real browser: Debian's headless Chromium under Playwright, against the
whole suite (tests/web's `web_suite`, here once per module: starting it takes seconds, and the
pages only read), signing in through the OpenID provider's real form.

SQLite only: what these tests check is what the browser gets (markup, styles, scripts, focus,
layout), which does not depend on the database; the pages' data on PostgreSQL is the API tests'
and tests/web's. A machine without Playwright or /usr/bin/chromium skips them with the reason;
under CI (which installs Chromium) that is a failure instead."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import oidc_provider_mock
import pytest
import pytest_asyncio

from cmh.serving import bus_plan
from gateway.web.demo_people import DEMO_PEOPLE, DemoPerson
from shared.bus_access import prepare_closed_bus
from shared.nats_server import EmbeddedNatsServer, free_port
from shared.settings import Settings
from tests.conftest import settings_for_test
from tests.e2e.conftest import running_suite
from tests.web.browser.support import (
    CHROMIUM,
    DESKTOP,
    LAUNCH_ARGS,
    NARROW,
    WATCH_CSP,
    PageRoute,
    Violation,
    Watch,
    browser_unavailable,
    csp_violations,
    detail_links,
    new_context,
    page_routes,
    run_axe,
    scroll_width,
    sign_in,
)
from tests.web.conftest import WebSuite, running_web_suite
from tests.web.support import SECRET

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page

Arrive = Callable[["Page"], Awaitable[int]]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, for the module (each test opens its own contexts)."""
    reason = browser_unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: CI runs the browser tests")
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS, timeout=30_000
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def web_suite(tmp_path_factory: pytest.TempPathFactory, chromium: Browser) -> AsyncIterator[WebSuite]:
    """tests/web's `web_suite` (the e2e suite on a closed bus, reporting beside it, sign-in
    through oidc-provider-mock), once for the module, on SQLite. After `chromium`: where no
    browser can be had the suite is not started."""
    tmp = tmp_path_factory.mktemp("browser-suite")
    credentials, _ = prepare_closed_bus(tmp / "nats", bus_plan(), "CMH", rounds=4)
    nats = EmbeddedNatsServer(tmp / "nats", config_file=tmp / "nats" / "auth.json")
    nats.start()
    try:
        with oidc_provider_mock.run_server_in_thread(require_nonce=True) as server:
            provider = f"http://127.0.0.1:{server.server_port}"
            reporting_port = free_port()
            database: dict[str, object] = {
                "var_dir": tmp / "var",
                "database_url": f"sqlite+aiosqlite:///{tmp}/{{service}}.db",
            }

            def make_settings(**overrides: object) -> Settings:
                return settings_for_test(
                    nats,
                    credentials,
                    database,
                    oidc_issuer=provider,
                    oidc_client_secret=SECRET,
                    reporting_url=f"http://127.0.0.1:{reporting_port}",
                    **overrides,
                )

            async with (
                running_suite(make_settings, {}) as suite,
                running_web_suite(suite, provider, reporting_port) as web,
            ):
                yield web
    finally:
        nats.stop(graceful=False)


async def map_demo_people(web_suite: WebSuite) -> None:
    """Every demo person of gateway/web/demo_people.py, mapped for the suite's provider as
    `cmh run` maps them (their seeded organisations and team)."""
    for demo in DEMO_PEOPLE:
        await web_suite.person(
            demo.subject,
            demo.roles,
            organisation=demo.organisation,
            organisation_system=demo.organisation_system,
            name=demo.name,
            team_id=demo.team_id,
        )


@dataclass
class PageReport:
    """What one page gave: its status, axe's findings, and what it did that it must not."""

    path: str
    status: int
    title: str
    violations: list[Violation]
    problems: list[str]
    links: list[str]

    @property
    def failures(self) -> list[str]:
        return [str(v) for v in self.violations if v.fails] + self.problems

    def summary(self) -> str:
        kinds = ", ".join(f"{v.impact} {v.id}" for v in self.violations) or "none"
        return f"{self.path} [{self.status}] {self.title!r}: axe {kinds}; problems {len(self.problems)}"


@dataclass
class Viewer:
    """One person's two views of the suite, signed in once: at 1024 px with CSP bypassed (so
    axe can be injected), and at 320 px with CSP enforced and watched."""

    base: str
    axe_context: BrowserContext
    axe_page: Page
    narrow_context: BrowserContext
    narrow_page: Page
    watch: Watch
    checked: set[str] = field(default_factory=set)
    refusal_checked: bool = False

    @classmethod
    async def open(cls, browser: Browser, base: str, subject: str | None) -> Viewer:
        axe_context = await new_context(browser, bypass_csp=True, viewport=DESKTOP)
        axe_page = await axe_context.new_page()
        if subject is not None:
            await sign_in(axe_page, base, subject)
        state = await axe_context.storage_state()
        narrow_context = await new_context(browser, viewport=NARROW, storage_state=state)
        await narrow_context.add_init_script(WATCH_CSP)
        narrow_page = await narrow_context.new_page()
        watch = Watch(base)
        watch.attach(narrow_page)
        return cls(base, axe_context, axe_page, narrow_context, narrow_page, watch)

    async def close(self) -> None:
        await self.axe_context.close()
        await self.narrow_context.close()

    async def _goto(self, page: Page, path: str) -> int:
        response = await page.goto(self.base + path)
        return response.status if response is not None else 0

    async def check(self, path: str, arrive: Arrive | None = None) -> PageReport:
        """The page at `path` through axe (serious and critical fail), then at 320 px under its
        CSP: no sideways scrolling, nothing refused, no script error, no missing file. `arrive`
        gets each of the two pages there another way than opening `path` (a form sent, say),
        and gives the status of the page it arrived at."""
        self.checked.add(path)
        problems: list[str] = []
        go = arrive or (lambda page: self._goto(page, path))
        status = await go(self.axe_page)
        if not self.axe_page.url.startswith(f"{self.base}/app"):
            problems.append(f"left the suite for {self.axe_page.url}")
        title = await self.axe_page.title()
        if status == 403 and arrive is None:
            # The pages a role may not open all answer with the same refusal: checked in full
            # the first time, then only that it is one (so a role's cost is its own pages).
            if self.refusal_checked:
                return PageReport(path, status, title, [], problems, [])
            self.refusal_checked = True
        violations = await run_axe(self.axe_page)
        links: list[str] = await self.axe_page.evaluate(
            "() => [...document.querySelectorAll('a[href]')].map((a) => a.getAttribute('href'))"
        )

        self.watch.reset()
        narrow_status = await go(self.narrow_page)
        if narrow_status != status:
            problems.append(
                f"answered {narrow_status} at {NARROW['width']} px, {status} at {DESKTOP['width']} px"
            )
        width = await scroll_width(self.narrow_page)
        if width > NARROW["width"]:
            problems.append(f"at {NARROW['width']} px the page is {width} px wide (scrolls sideways)")
        problems += [f"CSP refused: {found}" for found in await csp_violations(self.narrow_page)]
        problems += self.watch.problems
        return PageReport(path, status, title, violations, problems, links)

    async def check_with_details(self, path: str, routes: list[PageRoute]) -> list[PageReport]:
        """`path`, then the detail pages it links to (routes with path parameters, one level
        deep, at most DETAIL_LINKS_PER_ROUTE each; each checked once per person)."""
        first = await self.check(path)
        reports = [first]
        for _route, href in detail_links(first.links, routes):
            if href not in self.checked:
                reports.append(await self.check(href))
        return reports


class Viewers:
    """A Viewer per demo person (and one signed out), opened on first use, for the module."""

    def __init__(self, browser: Browser, web_suite: WebSuite) -> None:
        self.browser = browser
        self.web_suite = web_suite
        self.open: dict[str | None, Viewer] = {}

    async def of(self, demo: DemoPerson | None) -> Viewer:
        key = demo.subject if demo else None
        if key not in self.open:
            self.open[key] = await Viewer.open(self.browser, self.web_suite.url, key)
        return self.open[key]

    async def close(self) -> None:
        for viewer in self.open.values():
            await viewer.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def viewers(chromium: Browser, web_suite: WebSuite) -> AsyncIterator[Viewers]:
    await map_demo_people(web_suite)
    found = Viewers(chromium, web_suite)
    try:
        yield found
    finally:
        await found.close()


@pytest.fixture(scope="module")
def routes(web_suite: WebSuite) -> list[PageRoute]:
    """The running gateway's page routes (for following links to detail pages)."""
    return page_routes(web_suite.suite.apps["gateway"])
