"""The one rule for absolute URLs (`shared.http.public_base`, issue 20): the configured public
address, else what a trusted proxy in front says, else the gateway's own address; never the Host
header a caller chose."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.app import create_app as create_gateway
from services.registry.app import create_app as create_registry
from shared.http import public_base, public_url
from shared.settings import Settings, check_production


def _scope(peer: str, **headers: str) -> dict[str, Any]:
    return {
        "type": "http",
        "client": (peer, 40000),
        "headers": [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()],
    }


def test_the_configured_public_address_wins() -> None:
    settings = Settings(public_url="https://api.cmh.example.nhs.uk/", trusted_proxies="10.0.0.0/8")
    scope = _scope("10.0.0.5", host="evil.example", x_forwarded_host="proxy.example")
    assert public_base(settings, scope) == "https://api.cmh.example.nhs.uk"
    assert public_url(settings, "/fhir/Task/1", scope) == "https://api.cmh.example.nhs.uk/fhir/Task/1"


def test_a_trusted_proxy_names_the_public_host() -> None:
    settings = Settings(trusted_proxies="10.0.0.0/8")
    scope = _scope("10.0.0.5", x_forwarded_host="cmh.example.nhs.uk", x_forwarded_proto="https")
    assert public_base(settings, scope) == "https://cmh.example.nhs.uk"


@pytest.mark.parametrize(
    ("peer", "headers"),
    [
        (
            "203.0.113.9",
            {"x_forwarded_host": "evil.example", "x_forwarded_proto": "https"},
        ),  # not a proxy we trust
        ("203.0.113.9", {"host": "evil.example"}),  # the Host header is the caller's
        (
            "10.0.0.5",
            {"x_forwarded_host": "evil.example/phish?x=", "x_forwarded_proto": "https"},
        ),  # not a host
        ("10.0.0.5", {"x_forwarded_host": "cmh.example.nhs.uk", "x_forwarded_proto": "javascript"}),
    ],
)
def test_anything_else_gives_the_gateways_own_address(peer: str, headers: dict[str, str]) -> None:
    settings = Settings(trusted_proxies="10.0.0.0/8", gateway_port=8443)
    assert public_base(settings, _scope(peer, **headers)) == settings.gateway_url()
    assert public_base(settings) == settings.gateway_url()


def test_production_refuses_to_start_without_the_public_address() -> None:
    with pytest.raises(RuntimeError, match="CMH_PUBLIC_URL"):
        check_production(Settings(environment="production"))
    check_production(Settings(environment="production", public_url="https://api.cmh.example.nhs.uk"))
    check_production(Settings())  # development: the gateway's own address will do


@pytest.mark.parametrize("factory", [create_gateway, create_registry], ids=["gateway", "a service"])
def test_no_production_app_is_made_without_the_public_address(factory: Callable[[Settings], Any]) -> None:
    with pytest.raises(RuntimeError, match="CMH_PUBLIC_URL"):
        factory(Settings(environment="production"))


@pytest.mark.parametrize(
    "value", ["api.cmh.example.nhs.uk", "javascript:alert(1)", "https://", "https://cmh.example/?next=evil"]
)
def test_the_public_address_is_an_http_address(value: str) -> None:
    with pytest.raises(ValidationError, match="CMH_PUBLIC_URL"):
        Settings(public_url=value)
