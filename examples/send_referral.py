"""Send a referral as a FHIR ServiceRequest (body: examples/fhir_referral.json), then follow its
triage on the Task.

    CMH_GATEWAY_URL=... CMH_CLIENT_ID=... CMH_PRIVATE_KEY_FILE=... CMH_KEY_ID=... \
    python examples/send_referral.py GP-REF-0001
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx

try:
    from examples.get_token import token_from_env
except ImportError:  # run as a script from examples/
    from get_token import token_from_env  # type: ignore[no-redef]

FHIR_JSON = "application/fhir+json"
REFERRAL_FILE = Path(__file__).with_name("fhir_referral.json")


def referral_body(your_reference: str, ods_code: str | None = None) -> dict[str, Any]:
    """The example ServiceRequest with your own reference for it (and your ODS code as requester)."""
    body: dict[str, Any] = json.loads(REFERRAL_FILE.read_text())
    body["identifier"][0]["value"] = your_reference
    if ods_code:
        body["requester"]["identifier"]["value"] = ods_code
    return body


def send_referral(gateway_url: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST /fhir/ServiceRequest; If-None-Exist makes a retry safe (the same referral comes back)."""
    identifier = body["identifier"][0]
    response = httpx.post(
        gateway_url.rstrip("/") + "/fhir/ServiceRequest",
        json=body,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": FHIR_JSON,
            "If-None-Exist": f"identifier={identifier['system']}|{identifier['value']}",
        },
    )
    response.raise_for_status()
    return dict(response.json())


def follow_task(gateway_url: str, token: str, referral_id: str) -> dict[str, Any]:
    """The referral's triage: GET /fhir/Task?focus=ServiceRequest/<id> (requested until decided)."""
    response = httpx.get(
        gateway_url.rstrip("/") + "/fhir/Task",
        params={"focus": f"ServiceRequest/{referral_id}"},
        headers={"Authorization": f"Bearer {token}"},
    )
    response.raise_for_status()
    return dict(response.json()["entry"][0]["resource"])


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    gateway_url = os.environ["CMH_GATEWAY_URL"]
    token = token_from_env()
    referral = send_referral(gateway_url, token, referral_body(args[0] if args else "GP-REF-0001"))
    print(f"referral ServiceRequest/{referral['id']}: {referral['status']}")
    task = follow_task(gateway_url, token, referral["id"])
    print(f"triage Task/{task['id']}: {task['status']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
