"""Make a partner's signing key: the private key (PEM, keep it) and the public JWKS (send it to the
CMH operator, who registers it with `cmh clients add --jwks-file`; or publish it at an https URL
of yours, registered with `cmh clients add --jwks-uri`, and rotate your keys yourself).

    python examples/make_key.py partner-key-1 private.pem jwks.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def make_key(kid: str) -> tuple[str, dict[str, object]]:
    """(private key PEM, public JWKS holding one RSA signing key named `kid`)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return pem, {"keys": [{**public, "kid": kid, "use": "sig", "alg": "RS512"}]}


def main(argv: list[str] | None = None) -> int:
    kid, private_path, jwks_path = (argv if argv is not None else sys.argv[1:]) or [
        "partner-key-1",
        "private.pem",
        "jwks.json",
    ]
    pem, jwks = make_key(kid)
    Path(private_path).write_text(pem)
    Path(private_path).chmod(0o600)
    Path(jwks_path).write_text(json.dumps(jwks, indent=2))
    print(f"private key: {private_path}; public JWKS (send this one): {jwks_path}; kid {kid}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
