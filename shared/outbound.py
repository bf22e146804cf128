"""Outbound HTTP to addresses partners give us (webhook endpoints, key sets at a `jwks_uri`):
only globally routable unicast addresses are connected to, unless private ones are allowed (a
development machine, tests on loopback). The check is made on the addresses a name resolves to at
connection time, inside the HTTP client's network backend, so a name cannot be re-pointed between
a check and the connection (no server-side request forgery into our own network; ASVS 5.2.6)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

REFUSED_ADDRESS = "the address is loopback, private, link-local or reserved"


def address_allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Only globally routable unicast addresses are called (no SSRF into our network)."""
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    return bool(address.is_global) and not address.is_multicast


class RefusedAddress(httpcore.ConnectError):
    """A name resolved to an address outbound calls may not go to."""


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, resolving names itself and connecting only to addresses that
    pass `address_allowed` (all of a name's addresses must, or none is used)."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        self.inner = httpcore.AnyIOBackend()

    async def resolve(self, host: str, port: int, seconds: float | None) -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(seconds):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise httpcore.ConnectTimeout("name resolution timed out") from None
        except OSError:
            raise httpcore.ConnectError("name not resolved") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            raise httpcore.ConnectError("name not resolved")
        if not self.allow_private and not all(
            address_allowed(ipaddress.ip_address(address.split("%")[0])) for address in addresses
        ):
            raise RefusedAddress(REFUSED_ADDRESS)
        return addresses

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        last: Exception = httpcore.ConnectError("no address")
        for address in await self.resolve(host, port, timeout):
            try:
                return await self.inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise RefusedAddress("unix sockets are not endpoints")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over `GuardedBackend`, with no proxy from the environment (a proxy would
    connect on our behalf, unchecked)."""

    def __init__(self, *, allow_private: bool, limits: httpx.Limits) -> None:
        super().__init__(trust_env=False, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(allow_private),
        )


def guarded_client(
    *, allow_private: bool, timeout: float, limits: httpx.Limits | None = None, **options: Any
) -> httpx.AsyncClient:
    """An httpx client that connects only to allowed addresses, follows no redirect and takes no
    proxy or settings from the environment."""
    return httpx.AsyncClient(
        transport=GuardedTransport(allow_private=allow_private, limits=limits or httpx.Limits()),
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
        **options,
    )
