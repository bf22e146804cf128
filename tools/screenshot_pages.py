"""Screenshots of what a person sees: the error pages and every component of
gateway/web/templates/macros.html (tests/web/templates/components.html), rendered by
gateway/web/render.py and served with the static files and headers the gateway gives them, in
headless Chromium at a desktop width and at 320 px. For looking at, not for committing.

A development tool; it needs Chromium (Debian: `apt-get install chromium`). Usage::

    python -m tools.screenshot_pages                 # PNGs into /tmp/cmh-screenshots
    python -m tools.screenshot_pages --out DIR

It also reads each page's DOM after its scripts ran: `js-enabled` on the body shows that
NHS.UK frontend started from its module under the pages' Content-Security-Policy.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from gateway.web.render import Renderer
from gateway.web.static import mount_static
from shared.nats_server import free_port

ROOT = Path(__file__).parents[1]
SAMPLES = ROOT / "tests" / "web" / "templates"
PERSON = {"name": "Priya Shah", "organisation": "Leeds and York Partnership NHS Foundation Trust"}
NAV = [
    {"href": "/app/", "label": "Home"},
    {"href": "/app/referrals", "label": "Referrals", "current": True},
    {"href": "/app/worklist", "label": "Worklist"},
    {"href": "/app/directory", "label": "Directory"},
]
WIDTHS = {"desktop": 1024, "320": 320}
# Each page's window height at each width: tall enough for the whole page (a screenshot is the window).
PAGES = {
    "/components": (2600, 4600),
    "/error-401": (900, 1100),
    "/error-403": (900, 1300),
    "/error-404": (900, 1200),
}


def sample_app() -> FastAPI:
    renderer = Renderer(SAMPLES)
    app = FastAPI()
    mount_static(app)
    signed_in = {"person": PERSON, "csrf_token": "csrf-example", "nav": NAV}

    @app.get("/components")
    async def components(request: Request) -> HTMLResponse:
        return renderer.page(
            request,
            "components.html",
            {**signed_in, "back_link": "/app/referrals", "note": "Low mood for six weeks <b>not bold</b>"},
        )

    @app.get("/error-401")
    async def unauthenticated(request: Request) -> HTMLResponse:
        return renderer.problem_page(request, 401, "Sign in to continue", "Your session has ended.")

    @app.get("/error-403")
    async def forbidden(request: Request) -> HTMLResponse:
        return renderer.problem_page(
            request,
            403,
            "You cannot decide referrals",
            "Deciding a referral needs a permission your roles do not give.",
            required_scopes=["triage:decide"],
            context=signed_in,
        )

    @app.get("/error-404")
    async def not_found(request: Request) -> HTMLResponse:
        return renderer.problem_page(request, 404, "Page not found", context=signed_in)

    return app


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("Chromium is needed: apt-get install chromium")


def shoot(browser: str, url: str, png: Path, size: tuple[int, int]) -> str:
    """Write the screenshot; return the DOM after scripts ran."""
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    window = f"--window-size={size[0]},{size[1]}"
    subprocess.run([*common, f"--screenshot={png}", window, url], check=True, capture_output=True, timeout=60)  # noqa: S603
    done = subprocess.run(  # noqa: S603
        [*common, "--dump-dom", window, url], check=True, capture_output=True, text=True, timeout=60
    )
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/cmh-screenshots"))  # noqa: S108
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    browser = chromium()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(sample_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(base + "/error-404")
            break
        except httpx.TransportError:
            time.sleep(0.05)
    try:
        for path, heights in PAGES.items():
            for (label, width), height in zip(WIDTHS.items(), heights, strict=True):
                png = args.out / f"{path.strip('/')}-{label}.png"
                dom = shoot(browser, base + path, png, (width, height))
                started = "js-enabled" in dom and "nhsuk-frontend-supported" in dom
                print(f"{png}  NHS.UK frontend started: {'yes' if started else 'NO'}")
    finally:
        server.should_exit = True
        thread.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
