"""The gateway's API docs, Swagger UI at `/docs` and ReDoc at `/redoc`, with every asset served
from here: no CDN, so the docs work offline and no third party sees who reads them.

The assets are the Swagger UI and ReDoc builds shipped by the `fastapi-offline` package (MIT;
Swagger UI is Apache-2.0, ReDoc MIT), read from its installed files.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

ASSET_PREFIX = "/docs/assets/"
ASSETS: dict[str, str] = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
DOCS_PATHS = frozenset({"/docs", "/redoc", *(ASSET_PREFIX + name for name in ASSETS)})
TITLE = "CMH Suite API"


def _asset(name: str) -> bytes:
    return resources.files("fastapi_offline").joinpath("static", name).read_bytes()


def docs_router(openapi_url: str = "/openapi.json") -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/docs")
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=TITLE,
            swagger_js_url=ASSET_PREFIX + "swagger-ui-bundle.js",
            swagger_css_url=ASSET_PREFIX + "swagger-ui.css",
            swagger_favicon_url=ASSET_PREFIX + "favicon.png",
        )

    @router.get("/redoc")
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=TITLE,
            redoc_js_url=ASSET_PREFIX + "redoc.standalone.js",
            redoc_favicon_url=ASSET_PREFIX + "favicon.png",
            with_google_fonts=False,
        )

    for name, media_type in ASSETS.items():
        router.add_api_route(
            ASSET_PREFIX + name, _serve(_asset(name), media_type), methods=["GET"], name=f"docs-{name}"
        )
    return router


def _serve(body: bytes, media_type: str) -> Callable[[], Awaitable[Response]]:
    async def asset() -> Response:
        return Response(body, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"})

    return asset
