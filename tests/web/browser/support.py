"""What the browser tests share: Debian's Chromium under Playwright, signing in through the
provider's real form, axe-core's WCAG checks, and what a page must not do under its
Content-Security-Policy (run inline script, fetch from elsewhere, scroll sideways at 320 px).

Also used by tools/screenshot_people.py (`make screenshots`), which signs the demo people in the
same way."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from fastapi.routing import iter_route_contexts

from gateway.web.paths import SIGN_IN, WEB_PREFIX
from gateway.web.site import NOT_A_PAGE

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, Response

CHROMIUM = Path("/usr/bin/chromium")  # Debian's (`apt-get install chromium`; .ci/run installs it)
# Chromium resolves no host name: the pages may fetch only from the gateway (their CSP says so),
# and the provider's own pages name a CDN stylesheet that waiting on would only slow the tests.
LAUNCH_ARGS = ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
AXE = Path(__file__).parents[1] / "vendor" / "axe.min.js"  # tools/vendor_axe.py
AXE_TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa")
FAILING_IMPACTS = frozenset({"serious", "critical"})
DESKTOP = {"width": 1024, "height": 768}
NARROW = {"width": 320, "height": 640}  # WCAG 1.4.10 Reflow: no scrolling sideways at 320 CSS px
# The gateway's GET routes under /app/ that are not pages: redirects (the bare /app, the start of
# sign-in and the provider's redirect back). Static files are a mount, not a route.
NOT_PAGES = frozenset({WEB_PREFIX, f"{WEB_PREFIX}/sign-in/start", f"{WEB_PREFIX}/auth/callback"})
STEP_TIMEOUT_MS = 10_000  # one navigation or wait (Playwright's default is 30 s)
DETAIL_LINKS_PER_ROUTE = 3  # links followed to each route with path parameters, from each page

# Recorded in every document before its own scripts run (Playwright's init script is not subject
# to the page's CSP): what the policy refused.
WATCH_CSP = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(
    `${event.effectiveDirective} refused ${event.blockedURI || "inline"} (${event.sourceFile || "page"}:${event.lineNumber})`
  );
});
"""

AXE_RUN = """
async (tags) => {
  const results = await axe.run(document, {runOnly: {type: "tag", values: tags}, resultTypes: ["violations"]});
  return results.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
    targets: v.nodes.map((n) => n.target.join(" ")),
  }));
}
"""

FOCUSED = """
() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const style = getComputedStyle(el);
  return {
    tag: el.tagName.toLowerCase(),
    text: (el.innerText || el.value || el.getAttribute("aria-label") || "").trim().replace(/\\s+/g, " ").slice(0, 80),
    outlineStyle: style.outlineStyle, outlineWidth: style.outlineWidth, outlineColor: style.outlineColor,
    boxShadow: style.boxShadow, background: style.backgroundColor,
  };
}
"""

LINKS = """
() => [...document.querySelectorAll("a[href]")].map((a) => a.getAttribute("href"))
"""


@cache
def axe_source() -> str:
    return AXE.read_text(encoding="utf-8")


def browser_unavailable() -> str | None:
    """Why no browser test can run here, or None."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install -e '.[test]')"
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; .ci/run installs it)"
    return None


async def new_context(browser: Browser, **options: Any) -> BrowserContext:
    """A browser context (its own cookies) whose steps time out after STEP_TIMEOUT_MS."""
    context = await browser.new_context(**options)
    context.set_default_timeout(STEP_TIMEOUT_MS)
    return context


# -- signing in, as a person does -----------------------------------------------------------------


async def sign_in(page: Page, base: str, subject: str, next_path: str = "/app/") -> None:
    """The sign-in page, its "Sign in with ..." button, the provider's form (the subject typed,
    Authorize), and back on the suite."""
    await page.goto(f"{base}{SIGN_IN}?{urlencode({'next': next_path})}")
    await page.get_by_role("button", name=re.compile(r"^Sign in with ")).click()
    await choose_person(page, subject)
    await page.wait_for_url(re.compile(re.escape(base) + "/app/"))


async def choose_person(page: Page, subject: str) -> None:
    """On the provider's authorization form (oidc-provider-mock's): who signs in."""
    await page.locator("input[name=sub]").fill(subject)
    await page.get_by_role("button", name="Authorize").click()


# -- axe ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    id: str
    impact: str
    help: str
    help_url: str
    targets: tuple[str, ...]

    @property
    def fails(self) -> bool:
        return self.impact in FAILING_IMPACTS

    def __str__(self) -> str:
        shown = ", ".join(self.targets[:6]) + (
            f" (+{len(self.targets) - 6} more)" if len(self.targets) > 6 else ""
        )
        return f"{self.impact} {self.id}: {self.help} [{shown}] {self.help_url}"


async def run_axe(page: Page) -> list[Violation]:
    """axe-core's WCAG 2.0-2.2 A and AA rules on the page as it is now. The page's context must
    bypass CSP (`bypass_csp=True`): the script is added inline."""
    await page.add_script_tag(content=axe_source())
    found: list[dict[str, Any]] = await page.evaluate(AXE_RUN, list(AXE_TAGS))
    return [
        Violation(v["id"], v["impact"] or "unknown", v["help"], v["helpUrl"], tuple(v["targets"]))
        for v in found
    ]


# -- what a page must not do, with its CSP enforced -----------------------------------------------


@dataclass
class Watch:
    """A page's console CSP reports, script errors and failed subresources since `reset()`."""

    origin: str
    problems: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))
        page.on("response", self._response)

    def reset(self) -> None:
        self.problems.clear()

    def _console(self, message: ConsoleMessage) -> None:
        text = message.text
        if "Content Security Policy" in text or "Content-Security-Policy" in text:
            self.problems.append(f"console CSP report: {text[:300]}")
        elif text.startswith("Failed to load resource"):
            return  # the page's own status is asserted, its files' below (the provider's are not ours)
        elif message.type == "error":
            self.problems.append(f"console error: {text[:300]}")

    def _response(self, response: Response) -> None:
        request = response.request
        if (
            request.resource_type != "document"
            and response.status >= 400
            and response.url.startswith(self.origin)
        ):
            self.problems.append(f"{request.resource_type} {urlsplit(response.url).path}: {response.status}")


async def csp_violations(page: Page) -> list[str]:
    found: list[str] = await page.evaluate("() => window.__cspViolations || []")
    return found


async def scroll_width(page: Page) -> int:
    width: int = await page.evaluate("() => document.documentElement.scrollWidth")
    return width


# -- keyboard -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Focus:
    tag: str
    text: str
    outline_style: str
    outline_width: str
    outline_color: str
    box_shadow: str
    background: str

    @property
    def visible(self) -> bool:
        """NHS.UK's focus style: a yellow background with a dark bottom bar drawn as a box-shadow
        (its outline is transparent, there for Windows' high-contrast mode), or an outline."""
        outline = (
            self.outline_style not in ("none", "hidden")
            and self.outline_width not in ("0px", "")
            and self.outline_color not in ("transparent", "rgba(0, 0, 0, 0)")
        )
        return outline or self.box_shadow not in ("none", "")

    def __str__(self) -> str:
        return f"<{self.tag}> {self.text!r} (box-shadow {self.box_shadow}; outline {self.outline_style} {self.outline_color})"


async def focused(page: Page) -> Focus | None:
    found = await page.evaluate(FOCUSED)
    if found is None:
        return None
    return Focus(
        found["tag"], found["text"], found["outlineStyle"], found["outlineWidth"], found["outlineColor"],
        found["boxShadow"], found["background"],
    )  # fmt: skip


async def tab_to(page: Page, text: str, limit: int = 30) -> list[Focus]:
    """Tab (only the key) until the focused element's text is `text`; every stop on the way."""
    stops: list[Focus] = []
    for _ in range(limit):
        await page.keyboard.press("Tab")
        now = await focused(page)
        if now is not None:
            stops.append(now)
            if now.text == text:
                return stops
    raise AssertionError(f"{text!r} not reached in {limit} tabs: {[stop.text for stop in stops]}")


# -- the route table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageRoute:
    path: str  # the path format, "/app/referrals/{referral_id}"
    pattern: re.Pattern[str]
    has_parameters: bool


def page_routes(app: Any) -> list[PageRoute]:
    """Every GET route of the gateway under /app/ that answers with a page (NOT_PAGES left out)."""
    found: list[PageRoute] = []
    for route in iter_route_contexts(app.routes):
        path = route.path_format or route.path or ""
        methods = route.methods or set()
        if "GET" not in methods or not (path == WEB_PREFIX or path.startswith(f"{WEB_PREFIX}/")):
            continue
        if path in NOT_PAGES or NOT_A_PAGE in (getattr(route, "tags", None) or ()):
            continue
        found.append(PageRoute(path, route.path_regex, bool(route.param_convertors)))
    return found


def detail_links(hrefs: Iterable[str], routes: Iterable[PageRoute]) -> Iterator[tuple[PageRoute, str]]:
    """The links of a page to routes with path parameters (their detail pages), at most
    DETAIL_LINKS_PER_ROUTE to each, in the page's order."""
    counted: dict[str, set[str]] = {}
    with_parameters = [route for route in routes if route.has_parameters]
    for href in hrefs:
        parts = urlsplit(href)
        if parts.scheme or parts.netloc or not parts.path.startswith(f"{WEB_PREFIX}/"):
            continue
        for route in with_parameters:
            if route.pattern.match(parts.path):
                seen = counted.setdefault(route.path, set())
                if href not in seen and len(seen) < DETAIL_LINKS_PER_ROUTE:
                    seen.add(href)
                    yield route, href
                break
