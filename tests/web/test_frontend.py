"""The front door's look (issue 22): NHS.UK frontend vendored as recorded and fetching nothing
elsewhere, its files served by the gateway without a token, and the pages rendered by
gateway/web/render.py: escaped, with their security headers, no inline script or style, a
Sign out form carrying the CSRF token, and error pages that say what went wrong and no more."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request

from gateway.access import is_public_read
from gateway.app import create_app
from gateway.web import static
from gateway.web.render import Renderer, content_security_policy, problem_page
from shared.settings import Settings
from tools import vendor_frontend

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "gateway" / "web" / "static"
TEMPLATES = ROOT / "gateway" / "web" / "templates"
TEST_TEMPLATES = Path(__file__).parent / "templates"
PERSON = {"name": "Priya Shah", "organisation": "Leeds and York Partnership NHS Foundation Trust"}


def _request(path: str = "/app/") -> Request:
    return Request({"type": "http", "method": "GET", "path": path, "headers": [], "query_string": b""})


def _files(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


class _Markup(HTMLParser):
    """Tags as (name, attributes), the text of inline scripts and styles, and what is left open."""

    VOID = frozenset({"meta", "link", "input", "br", "img", "hr", "path", "source"})

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline: list[str] = []
        self.open: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.open.append(tag)
        self._in = tag if tag in ("script", "style") else None

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in and data.strip():
            self.inline.append(data)


def _parse(html: str) -> _Markup:
    markup = _Markup()
    markup.feed(html)
    markup.close()
    return markup


def _check_page(html: str) -> _Markup:
    """Well formed (every element closed in order), no inline script, style or handler."""
    assert html.startswith("<!DOCTYPE html>")
    markup = _parse(html)
    assert markup.open == [], f"left open: {markup.open}"
    assert markup.inline == []
    for tag, attrs in markup.tags:
        assert "style" not in attrs, f"<{tag} style=...>"
        assert not [name for name in attrs if name.startswith("on")], f"<{tag}> has an event handler"
        if tag == "script":
            assert attrs.get("type") == "module" and str(attrs.get("src", "")).startswith("/app/static/")
    return markup


# --- the vendored copy ----------------------------------------------------------------------------


def test_the_vendoring_reproduces_the_committed_files_byte_for_byte(tmp_path: Path) -> None:
    try:
        tarball = vendor_frontend.download(timeout=30)
    except httpx.HTTPError as exc:
        pytest.skip(f"the npm registry is unreachable ({type(exc).__name__}): cannot re-vendor")
    vendor_frontend.verify(tarball)  # the recorded integrity is the registry's package
    vendor_frontend.vendor(tmp_path / "nhsuk", tarball)
    assert _files(tmp_path / "nhsuk") == _files(STATIC / "nhsuk")


def test_a_tarball_that_is_not_the_recorded_one_is_refused() -> None:
    with pytest.raises(vendor_frontend.VendorError, match="integrity"):
        vendor_frontend.verify(b"not the package")


def test_the_recorded_release_is_the_one_the_pages_load() -> None:
    assert static.NHSUK_FRONTEND_VERSION == vendor_frontend.VERSION
    for name in (static.NHSUK_STYLESHEET, static.NHSUK_SCRIPT, static.INIT_SCRIPT):
        assert (STATIC / name).is_file(), name
    imported = re.findall(r'from "\./([^"]+)"', (STATIC / static.INIT_SCRIPT).read_text())
    assert imported == [static.NHSUK_SCRIPT]


def test_the_vendored_files_are_small_and_hold_no_maps_or_sass() -> None:
    files = _files(STATIC / "nhsuk")
    assert sum(len(body) for body in files.values()) < 500_000
    assert not [name for name in files if name.endswith((".map", ".scss", ".njk"))]
    record = files["VENDORED.md"].decode()
    assert vendor_frontend.VERSION in record and vendor_frontend.INTEGRITY in record
    assert "MIT License" in files["LICENSE"].decode()


def test_no_stylesheet_or_script_names_a_remote_url() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in STATIC.rglob("*")
        if path.suffix in (".css", ".js") and re.search(rb"https?://", path.read_bytes())
    ]
    assert offenders == []
    css = (STATIC / static.NHSUK_STYLESHEET).read_text()
    assert "@font-face" not in css
    assert "font-family:Frutiger W01,arial,sans-serif" in css  # the documented fallback stands


def test_every_file_the_stylesheet_names_is_there() -> None:
    css_path = STATIC / static.NHSUK_STYLESHEET
    targets = re.findall(r"url\(([^)]*)\)", css_path.read_text())
    assert targets
    for target in targets:
        assert not target.startswith("/"), target  # relative: it resolves under /app/static/nhsuk/
        assert (css_path.parent / target.strip("'\"")).is_file(), target


# --- served by the gateway ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        (static.NHSUK_STYLESHEET, "text/css; charset=utf-8"),
        (static.NHSUK_SCRIPT, "text/javascript; charset=utf-8"),
        (static.INIT_SCRIPT, "text/javascript; charset=utf-8"),
        ("nhsuk/assets/images/favicon.ico", "image/x-icon"),
        ("nhsuk/assets/images/favicon.svg", "image/svg+xml"),
        ("nhsuk/assets/images/nhsuk-icon-180.png", "image/png"),
        ("nhsuk/assets/manifest.json", "application/manifest+json"),
    ],
)
async def test_the_gateway_serves_the_static_files_without_a_token(path: str, content_type: str) -> None:
    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        response = await client.get(f"/app/static/{path}")
        assert response.status_code == 200
        assert response.headers["content-type"] == content_type
        assert response.headers["cache-control"] == "public, max-age=86400"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.content == (STATIC / path).read_bytes()
        head = await client.head(f"/app/static/{path}")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-type"] == content_type
        assert head.headers["content-length"] == str(len(response.content))
        again = await client.get(f"/app/static/{path}", headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304
        assert again.headers["cache-control"] == "public, max-age=86400"


@pytest.mark.parametrize("path", ["nhsuk/VENDORED.md", "nhsuk/LICENSE", "missing.css", "nhsuk/"])
async def test_only_the_files_pages_load_are_served(path: str) -> None:
    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        response = await client.get(f"/app/static/{path}")
        assert response.status_code == 404
        # Under /app every error is a page for people (shared.errors.answer_errors_as_pages).
        assert response.headers["content-type"].startswith("text/html") and "Page not found" in response.text


async def test_static_files_are_rate_limited_per_address_like_the_other_open_paths() -> None:
    # Six a minute: a burst of one, then 429 until the bucket refills.
    transport = httpx.ASGITransport(app=create_app(Settings(public_rate_limit_per_minute=6)))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        assert (await client.get(f"/app/static/{static.INIT_SCRIPT}")).status_code == 200
        refused = await client.get(f"/app/static/{static.INIT_SCRIPT}")
        assert refused.status_code == 429 and "retry-after" in refused.headers


def test_the_open_static_rule_lets_only_reads_of_plain_paths_through() -> None:
    assert is_public_read("GET", "/app/static/cmh-init.js")
    assert is_public_read("HEAD", "/app/static/nhsuk/assets/images/favicon.ico")
    assert not is_public_read("POST", "/app/static/cmh-init.js")
    assert not is_public_read("GET", "/app/static/../triage/referrals")
    assert not is_public_read("GET", "/app/staticky")
    assert not is_public_read("GET", "/app/")


# --- rendering ------------------------------------------------------------------------------------


def _renderer() -> Renderer:
    return Renderer(TEST_TEMPLATES)


def test_a_page_has_the_security_headers_and_escapes_what_it_is_given() -> None:
    response = _renderer().page(_request(), "page.html", {"note": "<script>alert(1)</script>"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "same-origin"
    assert response.headers["cache-control"] == "no-store"
    html = bytes(response.body).decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<title>Referrals \N{EN DASH} CMH Suite</title>" in html
    markup = _check_page(html)
    links = [attrs["href"] for tag, attrs in markup.tags if tag == "link"]
    assert all(str(href).startswith("/app/static/") for href in links)
    # Signed out: a Sign in link, no Sign out form.
    assert 'href="/app/sign-in"' in html and "/app/sign-out" not in html


def test_a_signed_in_page_shows_the_person_and_a_sign_out_form_with_the_csrf_token() -> None:
    nav = [
        {"href": "/app/", "label": "Home"},
        {"href": "/app/referrals", "label": "Referrals", "current": True},
    ]
    response = _renderer().page(
        _request(), "page.html", {"person": PERSON, "csrf_token": "tok-123", "nav": nav, "note": "x"}
    )
    html = bytes(response.body).decode()
    markup = _check_page(html)
    assert "Priya Shah" in html and "Leeds and York Partnership NHS Foundation Trust" in html
    forms = [attrs for tag, attrs in markup.tags if tag == "form"]
    assert {"action": "/app/sign-out", "method": "post"}.items() <= forms[0].items()
    hidden = [attrs for tag, attrs in markup.tags if tag == "input" and attrs.get("type") == "hidden"]
    assert hidden == [{"type": "hidden", "name": "csrf_token", "value": "tok-123"}]
    current = [attrs for tag, attrs in markup.tags if tag == "a" and attrs.get("aria-current") == "page"]
    assert [attrs["href"] for attrs in current] == ["/app/referrals"]
    assert 'href="/app/sign-in"' not in html


def test_a_form_may_post_elsewhere_only_where_the_page_says() -> None:
    response = _renderer().page(_request(), "page.html", {}, form_action=["https://login.example.nhs.uk"])
    assert response.headers["content-security-policy"].endswith(
        "form-action 'self' https://login.example.nhs.uk"
    )
    for bad in ["https://a.example; script-src *", "'unsafe-inline'", "*", "javascript:alert(1)"]:
        with pytest.raises(ValueError):
            content_security_policy([bad])


def test_every_component_renders_escaped_and_well_formed() -> None:
    context = {"person": PERSON, "csrf_token": "tok-123", "back_link": "/app/referrals", "note": "<b>x</b>"}
    html = bytes(_renderer().page(_request(), "components.html", context).body).decode()
    markup = _check_page(html)
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    classes = " ".join(str(attrs.get("class", "")) for _, attrs in markup.tags)
    for component in (
        "nhsuk-error-summary", "nhsuk-summary-list", "nhsuk-table", "nhsuk-table__cell--numeric",
        "nhsuk-tag--red", "nhsuk-tag--orange", "nhsuk-inset-text", "nhsuk-card--warning",
        "nhsuk-error-message", "nhsuk-radios", "nhsuk-select", "nhsuk-input", "nhsuk-textarea--error",
        "nhsuk-button--secondary", "nhsuk-button--warning", "nhsuk-pagination", "nhsuk-back-link",
    ):  # fmt: skip
        assert component in classes, component
    assert "No handovers yet" in html
    # Each error in the summary links to a field that is there.
    ids = {attrs.get("id") for _, attrs in markup.tags}
    targets = [
        str(attrs["href"])[1:]
        for tag, attrs in markup.tags
        if tag == "a" and str(attrs.get("href", "")).startswith("#") and attrs["href"] != "#maincontent"
    ]
    assert targets and set(targets) <= ids
    # A field with an error is described by its error message.
    textarea = next(attrs for tag, attrs in markup.tags if tag == "textarea")
    assert textarea["aria-describedby"] == "reason-error"
    # Two forms post (sign out and the decision), and each carries the token.
    assert html.count('name="csrf_token" value="tok-123"') == 2
    # The table's numeric column is right-aligned in the header and the cells alike.
    assert html.count("nhsuk-table__header--numeric") == 1 and html.count("nhsuk-table__cell--numeric") == 3


@pytest.mark.parametrize(
    ("status", "title", "detail"),
    [
        (401, "Sign in to continue", "Your session has ended."),
        (403, "You cannot decide referrals", "Deciding a referral needs another role."),
        (404, "Page not found", "Nothing has this id."),
    ],
)
def test_problem_pages_say_what_went_wrong_and_nothing_more(status: int, title: str, detail: str) -> None:
    try:
        raise RuntimeError("a secret in a traceback")
    except RuntimeError:
        response = problem_page(_request(), status, title, detail, required_scopes=["triage:decide"])
    assert response.status_code == status
    assert "content-security-policy" in response.headers
    html = bytes(response.body).decode()
    _check_page(html)
    assert f"<title>{title} \N{EN DASH} CMH Suite</title>" in html
    assert f">{title}</h1>" in html and detail in html
    assert "Traceback" not in html and "a secret" not in html and "RuntimeError" not in html
    assert 'href="/app/"' in html  # a way back home
    sign_in_links = html.count('href="/app/sign-in"')
    assert sign_in_links == (2 if status == 401 else 1)  # the page's own, beside the header's
    if status == 403:
        assert "<code>triage:decide</code>" in html and "triage practitioner role" in html
    else:
        assert "triage:decide" not in html


def test_a_problem_page_without_a_title_takes_the_status_phrase() -> None:
    html = bytes(problem_page(_request(), 404).body).decode()
    assert "<title>Not Found \N{EN DASH} CMH Suite</title>" in html


def test_templates_hold_no_inline_script_or_style() -> None:
    for path in [*TEMPLATES.glob("*.html"), *TEST_TEMPLATES.glob("*.html")]:
        text = path.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), path.name
        assert "<style" not in text and " style=" not in text, path.name
        assert not re.search(r"\son[a-z]+=", text), path.name
