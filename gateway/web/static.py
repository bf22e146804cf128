"""The pages' stylesheets, scripts and icons at `/app/static/`: NHS.UK frontend's vendored build
(`nhsuk/`, written by `make frontend`: see its VENDORED.md) and the suite's own small files beside
it. Served by the gateway itself, never a CDN; open without a token (gateway/access.py,
`is_web_static`), cacheable for a day (shared/middleware.py, `WEB_STATIC_PREFIX`).

Only the kinds of file pages load are served, each with its content type stated here rather than
guessed from the machine's MIME tables (the answers carry `nosniff`, so a wrong type would break
the page); anything else under the directory (VENDORED.md, LICENSE) is a 404.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, Response
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import Scope

from shared.middleware import WEB_STATIC_PREFIX

STATIC_DIR = Path(__file__).parent / "static"
MOUNT_PATH = WEB_STATIC_PREFIX.rstrip("/")  # "/app/static"
CACHE_CONTROL = "public, max-age=86400"
# The release gateway/web/static/nhsuk/ holds (tools/vendor_frontend.py's VERSION; tests/web
# checks they agree): its stylesheet and script have the version in their names.
NHSUK_FRONTEND_VERSION = "10.6.1"
NHSUK_STYLESHEET = f"nhsuk/nhsuk-frontend-{NHSUK_FRONTEND_VERSION}.min.css"
NHSUK_SCRIPT = f"nhsuk/nhsuk-frontend-{NHSUK_FRONTEND_VERSION}.min.js"
INIT_SCRIPT = "cmh-init.js"  # starts NHS.UK frontend's components: no inline script anywhere

MEDIA_TYPES: dict[str, str] = {
    ".css": "text/css",  # FileResponse adds "; charset=utf-8" to text/ types
    ".js": "text/javascript",  # RFC 9239; the scripts are ES modules
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/manifest+json",  # the only JSON here is the web app manifest
}


class PageAssets(StaticFiles):
    """StaticFiles with a fixed set of content types and a day's public caching."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        media_type = MEDIA_TYPES.get(Path(full_path).suffix.lower())
        if media_type is None:
            raise HTTPException(status_code=404)
        response = FileResponse(
            full_path,
            status_code=status_code,
            stat_result=stat_result,
            media_type=media_type,
            headers={"Cache-Control": CACHE_CONTROL},
        )
        if self.is_not_modified(response.headers, Headers(scope=scope)):
            return NotModifiedResponse(response.headers)
        return response


def mount_static(app: FastAPI, directory: Path = STATIC_DIR) -> None:
    """Serve `directory` at `/app/static` (GET and HEAD; ETag and Last-Modified validators)."""
    app.mount(MOUNT_PATH, PageAssets(directory=directory), name="web-static")
