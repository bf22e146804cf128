"""Subscribe to changes in your referrals: a FHIR Subscription with a rest-hook channel. The answer
holds the signing secret (`whsec_...`) once: store it where your webhook receiver can read it.

    CMH_GATEWAY_URL=... CMH_CLIENT_ID=... CMH_PRIVATE_KEY_FILE=... CMH_KEY_ID=... \
    python examples/subscribe.py https://ehr.example.org/cmh-webhook
"""

from __future__ import annotations

import os
import sys
from typing import Any

import httpx

try:
    from examples.get_token import token_from_env
except ImportError:  # run as a script from examples/
    from get_token import token_from_env  # type: ignore[no-redef]

FHIR_JSON = "application/fhir+json"
SECRET_EXTENSION = "https://cmh-suite.nhs.uk/StructureDefinition/webhook-secret"  # noqa: S105 - a URL


def subscribe(
    gateway_url: str, token: str, endpoint: str, criteria: str = "ServiceRequest"
) -> tuple[str, str]:
    """(subscription id, webhook secret in whsec_ form) for notifications about `criteria`."""
    response = httpx.post(
        gateway_url.rstrip("/") + "/fhir/Subscription",
        json={
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "Tell our EHR what became of our referrals",
            "criteria": criteria,
            "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": FHIR_JSON},
        },
        headers={"Authorization": f"Bearer {token}", "Content-Type": FHIR_JSON},
    )
    response.raise_for_status()
    created: dict[str, Any] = response.json()
    secret = next(e["valueString"] for e in created["extension"] if e["url"] == SECRET_EXTENSION)
    return str(created["id"]), str(secret)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    subscription_id, secret = subscribe(os.environ["CMH_GATEWAY_URL"], token_from_env(), args[0])
    print(f"Subscription/{subscription_id} active; webhook secret (shown once: store it): {secret}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
