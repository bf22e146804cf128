"""X-Correlation-ID (NHS API convention): a valid one the caller sends is echoed on the answer."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from shared.middleware import RequestContextMiddleware
from shared.tracing import valid_correlation_id


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"ok": "yes"}

    app.add_middleware(RequestContextMiddleware, service="test")
    return app


@pytest.mark.parametrize(
    ("sent", "echoed"),
    [("abc-123", "abc-123"), ("x" * 128, "x" * 128), ("x" * 129, None), ("bad\u00e9", None), (" lead", None)],
)
async def test_correlation_id_echoed_only_when_valid(sent: str, echoed: str | None) -> None:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.get("/ping", headers={"X-Correlation-ID": sent.encode("utf-8")})
    assert answer.headers.get("X-Correlation-ID") == echoed
    assert answer.headers.get("X-Request-ID")


def test_valid_correlation_id() -> None:
    assert valid_correlation_id(None) is None
    assert valid_correlation_id("") is None
    assert valid_correlation_id("a b") == "a b"
