"""What the triage tests share: tokens per role, referral bodies and the service in process."""

from __future__ import annotations

import json
from typing import Any

import httpx

from services.registry.seed import REFERENCE, desired_records
from services.triage import readmodels
from shared.events import make_event
from tests.support import mint_token, outbox_events

GP = "P81001"  # a Preston GP practice's ODS code
OTHER_GP = "P81002"
EHR = {
    "Authorization": f"Bearer {mint_token('referral:submit referral:read', client_id='gp-ehr', organisation=GP, kind='partner_ehr')}"
}
OTHER_EHR = {
    "Authorization": f"Bearer {mint_token('referral:submit referral:read', client_id='gp-ehr-2', organisation=OTHER_GP, kind='partner_ehr')}"
}
CLINICIAN = {
    "Authorization": f"Bearer {mint_token('referral:read triage:decide crisis:respond', client_id='spa-clinician', organisation='RW5', kind='crisis_app')}"
}

REGISTRY_KINDS = ("place", "network", "pathway", "team")


def registry_events(kinds: tuple[str, ...] = REGISTRY_KINDS) -> list[Any]:
    """The seeded registry's records of these kinds as their upserted events."""
    events = []
    for desired in desired_records(json.loads(REFERENCE.read_text())):
        if desired.kind.value in kinds:
            data = {
                "id": desired.id,
                "kind": desired.kind.value,
                "version": 1,
                "timeline": [
                    {"valid_from": "2020-01-01", "valid_to": None, "attributes": desired.attributes}
                ],
            }
            events.append(make_event("registry", desired.kind.value, "upserted", data, subject=desired.id))
    return events


async def load_registry(app: Any) -> None:
    async with app.state.db.transaction() as session:
        for event in registry_events():
            await readmodels.apply_registry_event(session, event)


def referral(**overrides: Any) -> dict[str, Any]:
    person = {
        "nhs_number": "943 476 5919",
        "given_name": "Sam",
        "family_name": "Example",
        "birth_date": "1990-04-02",
        "postcode": "PR1 3BQ",
        "contact": {"phone": "07700 900123"},
        "sex": "female",
        "preferred_language": "English",
        **overrides.pop("person", {}),
    }
    return {
        "person": person,
        "source": "gp",
        "needs": ["low_mood", "anxiety"],
        "needs_text": "Low mood for three months, struggling at work.",
        "risks": [],
        "consent_to_share": True,
        **overrides,
    }


class Triage:
    def __init__(self, client: httpx.AsyncClient, app: Any) -> None:
        self.client = client
        self.app = app
        self._keys = 0

    async def submit(
        self,
        body: dict[str, Any],
        headers: dict[str, str] = EHR,
        *,
        key: str | None = None,
        path: str = "/triage/referrals",
    ) -> httpx.Response:
        self._keys += 1
        return await self.client.post(
            path, json=body, headers={**headers, "Idempotency-Key": key or f"key-{self._keys}"}
        )

    async def events(self, subject: str | None = None) -> list[dict[str, Any]]:
        return await outbox_events(self.app, subject)


def nhs_number(first_nine: str) -> str:
    """A valid NHS number from nine digits (modulus 11), for tests; first_nine must not give 10."""
    total = sum(int(digit) * weight for digit, weight in zip(first_nine, range(10, 1, -1), strict=True))
    check = 11 - total % 11
    check = 0 if check == 11 else check
    assert check != 10, "no valid NHS number starts with these digits"
    return first_nine + str(check)
