"""`cmh run`'s development OpenID Connect provider, started as the supervisor starts it (a
supervised child, cmh/supervisor.py): a demo person signs in with the code flow, PKCE and a nonce
and the ID token says who they are; an operator's provider (CMH_OIDC_ISSUER) means none starts."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from cmh.supervisor import Supervisor
from gateway.web.demo_people import DEMO_PEOPLE
from shared.nats_server import free_port
from shared.settings import Settings

REDIRECT = "http://127.0.0.1:9/app/auth/callback"


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[tuple[Supervisor, dict[str, str]]]:
    supervisor = Supervisor(Settings(var_dir=tmp_path / "var", dev_oidc_port=free_port(), oidc_issuer=None))
    supervisor.var_dir.mkdir(parents=True)
    supervisor.env = {"PATH": "/usr/bin:/bin"}
    try:
        gateway_env = supervisor._start_dev_oidc()
        supervisor._wait_for_dev_oidc(gateway_env["CMH_OIDC_ISSUER"])
        yield supervisor, gateway_env
    finally:
        for child in supervisor.children:
            child.stop()
            child.wait_or_kill(time.monotonic() + 10)


def test_a_demo_person_signs_in_with_pkce_and_a_nonce(provider: tuple[Supervisor, dict[str, str]]) -> None:
    supervisor, gateway_env = provider
    issuer = f"http://127.0.0.1:{supervisor.settings.dev_oidc_port}"
    secret = gateway_env.pop("CMH_OIDC_CLIENT_SECRET")  # the gateway is a confidential client there
    assert len(secret) >= 32
    assert gateway_env == {"CMH_OIDC_ISSUER": issuer, "CMH_DEV_OIDC_PROVIDER": "true"}
    assert (supervisor.var_dir / "dev-oidc.issuer").read_text() == issuer  # for `cmh users`
    demo = DEMO_PEOPLE[3]
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    with httpx.Client(base_url=issuer, timeout=10) as client:
        config = client.get("/.well-known/openid-configuration").json()
        assert config["issuer"] == issuer
        authorize = {
            "response_type": "code",
            "client_id": "cmh-suite",
            "redirect_uri": REDIRECT,
            "scope": "openid profile email",
            "state": "s-1",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        # The nonce is required (--require-nonce).
        refused = client.post(config["authorization_endpoint"], params=authorize, data={"sub": demo.subject})
        assert refused.status_code == 302
        assert parse_qs(urlsplit(refused.headers["location"]).query)["error"] == ["invalid_request"]
        # The form offers every demo person.
        form = client.get(config["authorization_endpoint"], params={**authorize, "nonce": "n-1"})
        assert all(person.subject in form.text for person in DEMO_PEOPLE)
        answer = client.post(
            config["authorization_endpoint"], params={**authorize, "nonce": "n-1"}, data={"sub": demo.subject}
        )
        assert answer.status_code == 302, answer.text
        query = parse_qs(urlsplit(answer.headers["location"]).query)
        assert query["state"] == ["s-1"]
        token = client.post(
            config["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": query["code"][0],
                "redirect_uri": REDIRECT,
                "client_id": "cmh-suite",
                "client_secret": "anything",
                "code_verifier": verifier,
            },
        )
        assert token.status_code == 200, token.text
        # Its ID tokens carry no `kid`: its JWKS holds the one key.
        (key,) = jwt.PyJWKClient(config["jwks_uri"]).get_signing_keys()
        claims = jwt.decode(token.json()["id_token"], key.key, algorithms=["RS256"], audience="cmh-suite")
    assert claims["iss"] == issuer and claims["sub"] == demo.subject and claims["nonce"] == "n-1"
    assert (claims["name"], claims["email"]) == (demo.name, demo.email)


def test_an_operators_provider_means_no_development_one(tmp_path: Path) -> None:
    for settings in (
        Settings(var_dir=tmp_path / "var", oidc_issuer="https://login.lscft.example"),
        Settings(var_dir=tmp_path / "var", environment="production", oidc_issuer=None),
    ):
        supervisor = Supervisor(settings)
        supervisor.var_dir.mkdir(parents=True, exist_ok=True)
        (supervisor.var_dir / "dev-oidc.issuer").write_text("http://127.0.0.1:9400")  # an earlier run's
        assert supervisor._start_dev_oidc() == {}
        assert supervisor.children == [] and supervisor.dev_oidc is None
        assert not (supervisor.var_dir / "dev-oidc.issuer").exists()
