"""What the registry's API tests share: tokens, the seeded ids, and a registry service running in
process on the test's backend (SQLite or PostgreSQL)."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from services.registry.schemas import Kind
from services.registry.seed import seed_id
from tests.support import mint_token, outbox_events

READ = {"Authorization": f"Bearer {mint_token('registry:read')}"}
ADMIN = {"Authorization": f"Bearer {mint_token('registry:read registry:admin', client_id='registry-admin')}"}
NETWORK = {name: seed_id(Kind.NETWORK, name) for name in ("pennine-lancashire", "fylde-coast", "the-bay")}


class Registry:
    def __init__(self, client: httpx.AsyncClient, app: Any) -> None:
        self.client = client
        self.app = app

    async def events(self, subject: str | None = None) -> list[dict[str, Any]]:
        return await outbox_events(self.app, subject)

    async def rows(self) -> int:
        from services.registry.models import RegistryRow

        async with self.app.state.db.session() as session:
            return int(await session.scalar(select(func.count()).select_from(RegistryRow)) or 0)

    async def create(self, collection: str, attributes: dict[str, Any], **validity: str) -> httpx.Response:
        return await self.client.post(
            f"/registry/{collection}", json={"attributes": attributes, **validity}, headers=ADMIN
        )


def team_attributes(**overrides: Any) -> dict[str, Any]:
    return {
        "key": "blackburn-drop-in",
        "name": "Blackburn evening drop-in",
        "service_offer": "outreach",
        "network_id": NETWORK["pennine-lancashire"],
        "coverage": ["BB1", "BB2"],
        "opening_hours": {"weekly": {"tue": [{"opens": "17:00", "closes": "21:00"}]}},
        "caseload_capacity": 40,
        **overrides,
    }
