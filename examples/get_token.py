"""Get an access token with private_key_jwt (RFC 7523): a short-lived JWT signed by your key.

    CMH_GATEWAY_URL=https://api.cmh.example.nhs.uk CMH_CLIENT_ID=ehr-acme \
    CMH_PRIVATE_KEY_FILE=private.pem CMH_KEY_ID=partner-key-1 python examples/get_token.py
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import httpx
import jwt

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def client_assertion(client_id: str, token_url: str, private_key_pem: str, kid: str) -> str:
    """iss = sub = your client id, aud = the token endpoint, a fresh jti, at most 5 minutes."""
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "jti": str(uuid.uuid4()),
        "iat": now,
        "exp": now + 60,
    }
    return jwt.encode(claims, private_key_pem, algorithm="RS512", headers={"kid": kid})


def get_token(
    gateway_url: str, client_id: str, private_key_pem: str, kid: str, scope: str = ""
) -> dict[str, str]:
    """The token endpoint's answer: access_token, token_type, expires_in, scope."""
    token_url = gateway_url.rstrip("/") + "/oauth2/token"
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": client_assertion(client_id, token_url, private_key_pem, kid),
    }
    if scope:
        form["scope"] = scope
    response = httpx.post(token_url, data=form)
    if response.status_code != 200:  # RFC 6749 §5.2: {"error": ..., "error_description": ...}
        error = response.json()
        raise RuntimeError(f"{error['error']}: {error['error_description']}")
    return dict(response.json())


def token_from_env() -> str:
    """An access token for the client the environment names."""
    answer = get_token(
        os.environ["CMH_GATEWAY_URL"],
        os.environ["CMH_CLIENT_ID"],
        Path(os.environ["CMH_PRIVATE_KEY_FILE"]).read_text(),
        os.environ["CMH_KEY_ID"],
    )
    return answer["access_token"]


def main() -> int:
    answer = get_token(
        os.environ["CMH_GATEWAY_URL"],
        os.environ["CMH_CLIENT_ID"],
        Path(os.environ["CMH_PRIVATE_KEY_FILE"]).read_text(),
        os.environ["CMH_KEY_ID"],
    )
    print(f"token granted: scope {answer['scope']}, expires in {answer['expires_in']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
