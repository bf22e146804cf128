"""Where the pages live, and which page stands for an API address a person may open from a plain
link (a browser without a token is sent to sign in, then to that page)."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.datastructures import Headers

WEB_PREFIX = "/app"
HOME = f"{WEB_PREFIX}/"
SIGN_IN = f"{WEB_PREFIX}/sign-in"

# API addresses people were given links to before there were pages.
PAGE_FOR_API: Mapping[str, str] = {
    "/reporting/dashboard": f"{WEB_PREFIX}/reporting",
}


def is_page(path: str) -> bool:
    return path == WEB_PREFIX or path.startswith(f"{WEB_PREFIX}/")


def page_for(path: str) -> str:
    return PAGE_FOR_API.get(path.rstrip("/") or "/", HOME)


def browser_navigation(method: str, headers: Headers) -> bool:
    """A person's browser opening an address (not a program calling the API): a GET the browser
    marks as navigation, or one asking for HTML first, with no token."""
    if method != "GET" or "authorization" in headers:
        return False
    if headers.get("sec-fetch-mode") == "navigate":
        return True
    return headers.get("accept", "").lstrip().startswith("text/html")
