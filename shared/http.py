"""The caller's address and the suite's public address: the one place any process reads either
(rate limits, logs, X-Forwarded-For; every absolute URL the suite hands out).

uvicorn runs with `proxy_headers=False` (cmh/serving.py), so the ASGI scope's `client` is the
TCP peer. `X-Forwarded-For` is believed only when that peer is one of `CMH_TRUSTED_PROXIES`, and
then only as far back as the chain stays inside them: the caller is the right-most entry that is
not itself a trusted proxy. Entries further left were written by the caller and prove nothing.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import TYPE_CHECKING

from starlette.types import Scope

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

    from shared.settings import Settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
UNKNOWN_ADDRESS = "unknown"  # no peer in the scope


def parse_trusted_proxies(value: str) -> tuple[Network, ...]:
    """Comma-separated addresses or CIDRs. `*` and /0 are refused: they would let anyone set their
    own address (and so their own rate-limit bucket)."""
    networks: list[Network] = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        if item == "*":
            raise ValueError("'*' would believe anyone's X-Forwarded-For: list the proxies' addresses")
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR") from None
        if network.prefixlen == 0:
            raise ValueError(f"{item!r} would trust every address: list the proxies' addresses")
        networks.append(network)
    return tuple(networks)


_trusted_networks = lru_cache(maxsize=32)(parse_trusted_proxies)


def _address(value: str) -> Address | None:
    """An IP address from a peer or an X-Forwarded-For entry (a port, brackets or zone dropped)."""
    value = value.strip()
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    try:
        address = ipaddress.ip_address(value.partition("%")[0])
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


def _trusted(address: Address, networks: tuple[Network, ...]) -> bool:
    return any(address.version == network.version and address in network for network in networks)


def _forwarded_for(scope: Scope) -> list[str]:
    # Several X-Forwarded-For fields are one list, in order (RFC 9110 §5.3).
    values = [
        value.decode("latin-1") for name, value in scope.get("headers", []) if name == b"x-forwarded-for"
    ]
    return [hop.strip() for hop in ",".join(values).split(",") if hop.strip()]


def client_address(scope: Scope, settings: Settings) -> str:
    """The caller's address: the peer, or behind trusted proxies the first hop they vouch for."""
    client = scope.get("client")
    if not client:
        return UNKNOWN_ADDRESS
    peer = _address(str(client[0]))
    if peer is None:
        return str(client[0])  # not IP (a Unix socket, an in-process test client): as given
    networks = _trusted_networks(settings.trusted_proxies)
    if not _trusted(peer, networks):
        return str(peer)
    current = peer
    for hop in reversed(_forwarded_for(scope)):
        address = _address(hop)
        if address is None:
            break  # a malformed entry: nothing left of it can be believed
        current = address
        if not _trusted(address, networks):
            return str(address)
    # Every hop was a trusted proxy (or the chain broke): the earliest one we can vouch for.
    return str(current)


def _forwarded(scope: Scope, name: bytes) -> str | None:
    values = [value.decode("latin-1") for key, value in scope.get("headers", []) if key == name]
    first = values[0].split(",")[0].strip() if values else ""
    return first or None


_HOST = re.compile(r"^[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?$")


def public_base(settings: Settings, scope: Scope | None = None) -> str:
    """The address every absolute URL the suite hands out starts with (export locations and files,
    FHIR links and fullUrls, the directory's OpenAPI link): `CMH_PUBLIC_URL` when set; else what a
    trusted proxy in front said (`X-Forwarded-Proto` and `X-Forwarded-Host`, believed only from a
    peer in `CMH_TRUSTED_PROXIES`); else the gateway's own address. Never the caller's Host header:
    a caller must not choose where the links it is given, or a partner's webhooks, point."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    client = scope.get("client") if scope is not None else None
    peer = _address(str(client[0])) if client else None
    if scope is not None and peer is not None and _trusted(peer, _trusted_networks(settings.trusted_proxies)):
        host = _forwarded(scope, b"x-forwarded-host")
        proto = _forwarded(scope, b"x-forwarded-proto") or "https"
        if host and _HOST.match(host) and proto in ("http", "https"):
            return f"{proto}://{host}"
    return settings.gateway_url().rstrip("/")


def public_url(settings: Settings, path: str, scope: Scope | None = None) -> str:
    """An absolute URL for a path of the public API (`/reporting/$export/jobs/…`)."""
    return public_base(settings, scope) + "/" + path.lstrip("/")


def request_public_base(request: HTTPConnection) -> str:
    """`public_base` for the request being answered, with the settings of the app answering it."""
    from shared.deps import service_state  # shared.deps imports shared.settings, which imports this

    return public_base(service_state(request).settings, request.scope)


def request_public_url(request: HTTPConnection, path: str) -> str:
    """An absolute public URL for `path`, as handed out in answers to this request (`Location`,
    `Content-Location`, links): never the service's own address or the caller's Host header."""
    return request_public_base(request) + "/" + path.lstrip("/")
