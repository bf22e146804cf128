"""What the page tests share: a browser's cookie jar over HTTP, and signing in through a real
OpenID Connect provider (oidc-provider-mock)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

BROWSER_HEADERS = {"Accept": "text/html,application/xhtml+xml", "Sec-Fetch-Mode": "navigate"}
SECRET = "a-development-secret"


@dataclass
class Browser:
    """A browser's cookie jar, by hand: the session cookie is Secure, which a browser sends to
    http://127.0.0.1 (a secure context) but httpx's jar would not."""

    http: httpx.AsyncClient
    cookies: dict[str, str] = field(default_factory=dict)

    def _keep(self, answer: httpx.Response) -> None:
        for header in answer.headers.get_list("set-cookie"):
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if "Max-Age=0" in header:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
            assert all(flag in header for flag in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/")), header

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = {**BROWSER_HEADERS, **kwargs.pop("headers", {})}
        if self.cookies and urlsplit(url).netloc in ("", urlsplit(str(self.http.base_url)).netloc):
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        answer = await self.http.request(method, url, headers=headers, **kwargs)
        self._keep(answer)
        return answer

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        """A form post as a page makes it: the page's CSRF token and our Origin unless given."""
        data = kwargs.pop("data", {})
        headers = {"Origin": str(self.http.base_url).rstrip("/"), **kwargs.pop("headers", {})}
        return await self.request("POST", url, data=data, headers=headers, **kwargs)

    async def submit(self, page_url: str, action: str, data: dict[str, Any]) -> httpx.Response:
        """Open the page, then post one of its forms with the page's CSRF token."""
        page = await self.get(page_url)
        assert page.status_code == 200, page.text[:300]
        return await self.post(action, data={"csrf_token": csrf_of(page.text), **data})

    async def sign_in(self, subject: str, next_path: str = "/app/") -> httpx.Response:
        start = await self.get(f"/app/sign-in/start?next={next_path}")
        assert start.status_code == 302, start.text
        authorize = start.headers["location"]
        query = parse_qs(urlsplit(authorize).query)
        assert query["code_challenge_method"] == ["S256"] and query["code_challenge"][0]
        assert query["nonce"][0] and query["state"][0] and query["response_type"] == ["code"]
        chosen = await self.http.post(authorize, data={"sub": subject})  # the provider's form
        assert chosen.status_code == 302, chosen.text
        callback = chosen.headers["location"]
        assert callback.startswith(f"{str(self.http.base_url).rstrip('/')}/app/auth/callback?"), callback
        return await self.get(callback)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)
