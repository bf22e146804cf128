"""OWASP ASVS 7.1.1: no person-identifiable data reaches the logs. A referral with distinctive
person details goes through the whole suite (intake, a refused body, triage, the episode, FHIR
reads) and every log line every process wrote meanwhile, formatted as production writes them, is
searched for each detail."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest

from shared.logs import JsonFormatter, quiet_libraries
from tests.e2e.conftest import Suite
from tests.support import eventually
from tests.triage.support import nhs_number

PERSON = {
    "nhs_number": nhs_number("943476591"),
    "given_name": "Zephyrine",
    "family_name": "Quillfeather",
    "birth_date": "1977-07-19",
    "postcode": "LA1 4YW",
}
PHONE = "07700 900461"
NOTE = "Hears voices telling her to walk into Morecambe Bay"


@pytest.fixture
def production_logging() -> Iterator[None]:
    """The library log levels every process sets (shared/logs.py), restored afterwards."""
    names = ("uvicorn.access", "nats", "httpx", "httpcore")
    saved = {name: (logging.getLogger(name).level, logging.getLogger(name).disabled) for name in names}
    quiet_libraries()
    yield
    for name, (level, disabled) in saved.items():
        logging.getLogger(name).setLevel(level)
        logging.getLogger(name).disabled = disabled


async def test_no_log_line_carries_the_persons_details(
    suite: Suite, caplog: pytest.LogCaptureFixture, production_logging: None
) -> None:
    caplog.set_level(logging.INFO)
    gp = {"Authorization": f"Bearer {await suite.token('gp-ehr')}"}
    spa = {"Authorization": f"Bearer {await suite.token('crisis-app')}"}
    clinician = {"Authorization": f"Bearer {await suite.token('lscft-clinician')}"}
    body = {
        "person": {**PERSON, "contact": {"phone": PHONE}},
        "source": "gp",
        "needs": ["psychosis"],
        "needs_text": NOTE,
        "consent_to_share": True,
        "risks": [],
    }
    async with httpx.AsyncClient(base_url=suite.url, timeout=15) as http:
        # Refused bodies are where input is most often echoed.
        refused = await http.post(
            "/triage/referrals",
            json={**body, "needs": ["not-a-need"]},
            headers={**gp, "Idempotency-Key": "logs-0"},
        )
        assert refused.status_code == 422
        created = await http.post("/triage/referrals", json=body, headers={**gp, "Idempotency-Key": "logs-1"})
        if created.status_code == 422:  # the free-text field is optional in the contract
            body.pop("presenting_problem")
            created = await http.post(
                "/triage/referrals", json=body, headers={**gp, "Idempotency-Key": "logs-2"}
            )
        assert created.status_code == 201, created.text
        referral = created.json()
        decided = await http.post(
            f"/triage/referrals/{referral['id']}/decisions",
            json={"action": "accept", "reason": "logs test"},
            headers=spa,
        )
        assert decided.status_code == 200, decided.text

        async def episode() -> bool:
            found = await http.get(
                "/careplan/episodes", params={"referral_id": referral["id"]}, headers=clinician
            )
            return found.status_code == 200 and bool(found.json()["items"])

        await eventually(episode, timeout=20)
        for path in (f"/fhir/ServiceRequest/{referral['id']}", f"/fhir/Patient/{referral['person_id']}"):
            await http.get(path, headers=spa)
        await http.get("/fhir/Patient", params={"identifier": PERSON["nhs_number"]}, headers=spa)

    formatter = JsonFormatter("test")
    lines = [formatter.format(record) for record in caplog.records]
    assert len(lines) > 10  # the suite did log
    details = [*PERSON.values(), PHONE, PHONE.replace(" ", ""), NOTE, "Morecambe"]
    leaks = [(detail, line[:200]) for line in lines for detail in details if detail.lower() in line.lower()]
    assert not leaks, leaks
