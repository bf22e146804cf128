"""The API docs work offline (issue 20 §3): the gateway's Swagger UI (`/docs`) and ReDoc
(`/redoc`) load every script, stylesheet and icon from the gateway itself, no CDN, and each
answers 200. (The services serve no docs of their own: shared/service.py; checked here too.)"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

import httpx
import pytest

from gateway.app import create_app
from gateway.docs import ASSETS
from shared.settings import SERVICES
from tests.shared.test_openapi_truth import _app

URL_IN_SCRIPT = re.compile(r"""(?:url|href|src)\s*[:=]\s*['"]([^'"]+)['"]""")


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value and tag in ("script", "link", "img"):
                self.urls.append(value)
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.inline.append(data)


def _same_origin(url: str) -> bool:
    parts = urlsplit(url)
    return not parts.scheme and not parts.netloc and url.startswith("/")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_docs_load_every_asset_from_the_gateway(page: str) -> None:
    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        response = await client.get(page)
        assert response.status_code == 200
        links = _Links()
        links.feed(response.text)
        # Swagger UI names the document in its inline script, ReDoc in an attribute.
        urls = links.urls + [u for script in links.inline for u in URL_IN_SCRIPT.findall(script)]
        spec_urls = re.findall(r"""spec-url=['"]([^'"]+)['"]""", response.text)
        urls += spec_urls
        assert urls
        assert "cdn" not in response.text.lower() and "fonts.googleapis" not in response.text
        for url in urls:
            assert _same_origin(url), url
        for url in set(links.urls):
            asset = await client.get(url)
            assert asset.status_code == 200, url
            assert asset.content


async def test_every_vendored_asset_answers() -> None:
    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        for name in ASSETS:
            response = await client.get(f"/docs/assets/{name}")
            assert response.status_code == 200
            assert len(response.content) > 100
            assert response.headers["cache-control"].startswith("public")  # not person data


@pytest.mark.parametrize("service", SERVICES)
async def test_no_service_serves_docs_from_a_cdn(service: str) -> None:
    """A service serves no docs pages (its OpenAPI reaches callers through the gateway's)."""
    transport = httpx.ASGITransport(app=_app(service))
    async with httpx.AsyncClient(transport=transport, base_url="http://service.test") as client:
        for page in ("/docs", "/redoc"):
            response = await client.get(page)
            assert response.status_code == 404 or "cdn" not in response.text.lower()
