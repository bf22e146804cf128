"""Issue 18 §6, the seen 500s through the gateway and the real services, on SQLite and PostgreSQL:
integers past 64 bits, odd path ids on the careplan journey, and deeply nested FHIR JSON."""

from __future__ import annotations

import httpx

from tests.e2e.conftest import Suite

HUGE = str(2**70)


async def test_seen_500s_are_clean_400s(suite: Suite) -> None:
    crisis = {"Authorization": f"Bearer {await suite.token('crisis-app')}"}
    clinician = {"Authorization": f"Bearer {await suite.token('lscft-clinician')}"}
    registry = {"Authorization": f"Bearer {await suite.token('registry-admin')}"}
    gp = {"Authorization": f"Bearer {await suite.token('gp-ehr')}"}
    async with httpx.AsyncClient(base_url=suite.url, timeout=10) as http:
        problems = [
            await http.get(f"/triage/referrals?page={HUGE}", headers=crisis),
            await http.get(f"/registry/teams?page={HUGE}", headers=registry),
            await http.get("/triage/crisis/stream", headers={**crisis, "Last-Event-ID": HUGE}),
        ]
        for odd in ("%00", "a%00b", "a" * 5000):
            problems.append(await http.get(f"/careplan/people/{odd}/journey", headers=clinician))
        outcomes = [
            await http.get(f"/fhir/ServiceRequest?_offset={HUGE}", headers=gp),
            await http.post(
                "/fhir/ServiceRequest",
                content=b"[" * 100_000 + b"]" * 100_000,
                headers={**gp, "Content-Type": "application/fhir+json"},
            ),
        ]
    for response in problems:
        assert response.status_code in (400, 422), (response.request.url, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    for response in outcomes:
        assert response.status_code == 400, (response.request.url, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
