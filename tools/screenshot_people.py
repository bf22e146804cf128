"""Screenshots of the pages for people, for the README (`make screenshots`): the real suite as
`make run` starts it (`cmh run`: SQLite under a temporary var directory, its development OpenID
Connect provider, the demo people of gateway/web/demo_people.py mapped), and in headless Chromium
(Debian's, under Playwright) the sign-in page and, for each role, its first demo person signed in
through the provider's form and their main page: the first of their home page's tasks, or the home
page while their role has none. Saved at 1024 px wide, cropped to the page's height (at most
MAX_HEIGHT), to docs/screenshots/<name>.png. Commit the result (they are docs).

A development tool; it needs Chromium (Debian: `apt-get install chromium`). Usage::

    python -m tools.screenshot_people                 # into docs/screenshots/
    python -m tools.screenshot_people --out DIR
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from gateway.web.demo_people import DEMO_PEOPLE
from gateway.web.paths import HOME, SIGN_IN
from tests.running_suite import running_suite, wait_ready
from tests.web.browser.support import (
    CHROMIUM,
    LAUNCH_ARGS,
    browser_unavailable,
    new_context,
    sign_in,
)

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

ROOT = Path(__file__).parents[1]
OUT = ROOT / "docs" / "screenshots"
WIDTH = 1024
MAX_HEIGHT = 1600
# The window starts short, so a page shorter than a screen is cropped to its own height.
READY_WITHIN = 120  # seconds for `cmh run` to say it is ready


async def save(page: Page, png: Path) -> int:
    """The page at WIDTH, as tall as its content (at most MAX_HEIGHT); returns the height."""
    height: int = await page.evaluate("() => document.documentElement.scrollHeight")
    height = min(height, MAX_HEIGHT)
    await page.screenshot(
        path=str(png), full_page=True, clip={"x": 0, "y": 0, "width": WIDTH, "height": height}
    )
    return height


async def main_page(page: Page) -> str:
    """A signed-in person's main page: their home page's first task, else the home page."""
    first = page.locator(".nhsuk-card__link").first
    if await first.count():
        href = await first.get_attribute("href")
        if href:
            return href
    return HOME


async def shoot(browser: Browser, base: str, out: Path) -> list[Path]:
    saved: list[Path] = []
    context = await new_context(browser, viewport={"width": WIDTH, "height": 400})
    page = await context.new_page()
    await page.goto(base + SIGN_IN)
    png = out / "sign-in.png"
    print(f"{png}  {await save(page, png)} px  (signed out)")
    saved.append(png)
    await context.close()

    shot_roles: set[str] = set()
    for demo in DEMO_PEOPLE:
        role = demo.roles[0].value.replace("_", "-")
        if role in shot_roles:
            continue
        shot_roles.add(role)
        context = await new_context(browser, viewport={"width": WIDTH, "height": 400})
        page = await context.new_page()
        await sign_in(page, base, demo.subject)
        await page.goto(base + HOME)
        target = await main_page(page)
        if target != HOME:
            await page.goto(base + target)
        png = out / f"{role}.png"
        print(f"{png}  {await save(page, png)} px  ({demo.name}, {target})")
        saved.append(png)
        await context.close()
    return saved


async def capture(base: str, out: Path) -> list[Path]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS
        )
        try:
            return await shoot(browser, base, out)
        finally:
            await browser.close()


def run(out: Path) -> int:
    """`cmh run` started in a temporary var directory, the pages shot, everything stopped."""
    out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="cmh-screenshots-") as var,
        running_suite(Path(var) / "var") as suite,
    ):
        suite.wait_for_line("CMH Suite is ready", timeout=READY_WITHIN)
        with httpx.Client(base_url=suite.base) as client:
            wait_ready(client, timeout=READY_WITHIN)
        asyncio.run(capture(suite.base, out))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="where to write (default: %(default)s)")
    args = parser.parse_args(argv)
    reason = browser_unavailable()
    if reason:
        print(f"screenshot_people: {reason}", file=sys.stderr)
        return 1
    return run(args.out)


if __name__ == "__main__":
    sys.exit(main())
