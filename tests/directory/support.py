"""What the directory's tests share: tokens per role, proposals, schema validation and a
directory service in process on the test's backend."""

from __future__ import annotations

from typing import Any

import httpx

from services.directory.importer import schema_errors
from services.directory.seed import needs_taxonomy
from tests.support import mint_token, outbox_events

PARTNER_A = "1000001"  # charity numbers the partner clients act for
PARTNER_B = "1234567"
A = {
    "Authorization": f"Bearer {mint_token('directory:write handover:respond', client_id='partner-a', organisation=PARTNER_A, kind='vcfse_partner')}"
}
B = {
    "Authorization": f"Bearer {mint_token('directory:write handover:respond', client_id='partner-b', organisation=PARTNER_B, kind='vcfse_partner')}"
}
MODERATOR = {
    "Authorization": f"Bearer {mint_token('directory:moderate', client_id='moderator', organisation='RW5', kind='admin')}"
}
TERMS = {term["code"]: term["id"] for term in needs_taxonomy()["taxonomy_terms"]}


class Directory:
    def __init__(self, client: httpx.AsyncClient, app: Any) -> None:
        self.client = client
        self.app = app

    async def events(self, subject: str | None = None) -> list[dict[str, Any]]:
        return await outbox_events(self.app, subject)

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(f"/directory{path}", params=params)


def proposal(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "Riverside peer support group",
        "description": "A weekly peer support group for adults living with anxiety or low mood.",
        "minimum_age": 18,
        "eligibility_description": "Adults who live or work in Blackburn with Darwen.",
        "application_process": "Drop in, or ask your mental health worker to introduce you.",
        "taxonomy_term_ids": [TERMS["peer-support"]],
        "service_areas": [{"name": "Blackburn with Darwen", "place": "blackburn-with-darwen"}],
        "languages": [{"name": "English", "code": "en"}],
        "cost_options": [{"option": "Free", "amount": 0}],
        "schedules": [{"byday": "TU", "opens_at": "18:00", "closes_at": "20:00"}],
        "locations": [
            {
                "name": "Riverside community hall",
                "latitude": 53.7486,
                "longitude": -2.4826,
                "address": {"address_1": "1 King Street", "city": "Blackburn", "postal_code": "bb2 2dh"},
            }
        ],
        "organization": {
            "name": "Riverside Wellbeing",
            "description": "A fictional community charity.",
            "vcfse_category": "community",
        },
        **overrides,
    }


def assert_valid(document: Any, schema: str) -> None:
    errors = schema_errors(document, schema, limit=10)
    assert not errors, f"{schema}: {errors}"


def assert_page(body: dict[str, Any], item_schema: str) -> None:
    """The Page envelope (every field the reference asks for) and each item against its schema."""
    for field, kind in (
        ("total_items", int), ("total_pages", int), ("page_number", int), ("size", int),
        ("first_page", bool), ("last_page", bool), ("empty", bool), ("contents", list),
    ):  # fmt: skip
        assert isinstance(body[field], kind), field
    assert body["size"] == len(body["contents"])
    assert body["empty"] is (body["total_items"] == 0)
    for item in body["contents"]:
        assert_valid(item, item_schema)
