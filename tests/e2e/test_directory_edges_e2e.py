"""The directory's HTTP edges through the gateway (issue 20 §5): what a browser app or an ORUK
aggregator sees from outside, not only what the directory service answers."""

from __future__ import annotations

import httpx

from tests.e2e.conftest import Suite


async def test_public_directory_reads_through_the_gateway(suite: Suite) -> None:
    origin = {"Origin": "https://aggregator.example"}
    async with httpx.AsyncClient(base_url=suite.url, timeout=15) as http:
        page = await http.get("/directory/services", headers=origin)
        assert page.status_code == 200 and page.headers["access-control-allow-origin"] == "*"
        tag = page.headers["etag"]
        assert "public" in page.headers["cache-control"]
        # Empty parameters are absent; the same page, the same tag.
        empty = await http.get("/directory/services?search=&page=&taxonomy_id=", headers=origin)
        assert empty.status_code == 200 and empty.headers["etag"] == tag
        # A cache revalidates with the tag: 304, nothing sent again.
        unchanged = await http.get("/directory/services", headers={**origin, "If-None-Match": tag})
        assert unchanged.status_code == 304 and unchanged.content == b""
        assert unchanged.headers["access-control-allow-origin"] == "*"
        # HEAD as GET without the body; a malformed id is a 404 a browser can read.
        head = await http.head("/directory/services", headers=origin)
        assert head.status_code == 200 and head.content == b"" and head.headers["etag"] == tag
        missing = await http.get("/directory/services/not-an-id", headers=origin)
        assert missing.status_code == 404 and missing.headers["access-control-allow-origin"] == "*"
        # Terms at the top of the taxonomy only.
        every = (await http.get("/directory/taxonomy_terms", params={"per_page": 200})).json()
        top = (
            await http.get("/directory/taxonomy_terms", params={"top_only": "true", "per_page": 200})
        ).json()
        assert 0 < top["total_items"] <= every["total_items"]
        assert all(not term.get("parent_id") for term in top["contents"])
