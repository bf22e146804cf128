"""The keys a private_key_jwt client's assertion is checked with: its static JWKS, or the JWKS it
publishes at its `jwks_uri`, fetched here and cached per client (so partners rotate their own keys).

A fetch is one GET with httpx: `FETCH_TIMEOUT_SECONDS` for the whole exchange, no redirects (a
redirect would let whoever controls the first host send us anywhere), the body read raw
(`Accept-Encoding: identity`, so a small compressed body cannot expand past the cap) and dropped
past `MAX_JWKS_BYTES`. It must answer 200 with JSON that `gateway.clients.check_jwks` accepts
(public keys only, each with a kid). Anything else is `JwksUnavailable`: the assertion cannot be
verified, and the token endpoint answers `invalid_client`.

The set is kept for the answer's `Cache-Control: max-age` (`DEFAULT_CACHE_SECONDS` without one),
clamped to [`MIN_CACHE_SECONDS`, `MAX_CACHE_SECONDS`]. An assertion naming a kid the cached set
lacks refetches at once (the partner has just published a new key), but at most once per
`REFETCH_INTERVAL_SECONDS` per client, and a failed fetch is not retried sooner than that either:
a flood of made-up kids, or of assertions while the partner is down, costs the partner one request
per interval. One fetch per client at a time; callers waiting for it use its result. The cache is
per gateway replica, in memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt

from gateway.clients import ClientRegistryError, Environment, check_jwks, check_jwks_uri
from gateway.models import Client
from shared.outbound import REFUSED_ADDRESS, RefusedAddress, guarded_client

FETCH_TIMEOUT_SECONDS = 3.0
MAX_JWKS_BYTES = 64 * 1024  # a JWKS of a few keys is 1-5 KiB
DEFAULT_CACHE_SECONDS = 300.0
# Even for max-age=0: a fetch per assertion would let callers drive our load on the partner.
MIN_CACHE_SECONDS = 60.0
MAX_CACHE_SECONDS = 24 * 3600.0  # a key the partner has withdrawn stops working within a day at worst
REFETCH_INTERVAL_SECONDS = 30.0

log = logging.getLogger("cmh.gateway.jwks_fetch")
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)


class JwksUnavailable(Exception):
    """The client's keys could not be had; the message says why (no response body in it)."""


class UnknownKey(Exception):
    """The client's keys hold no key with the assertion's kid."""


def cache_seconds(cache_control: str | None) -> float:
    """How long to keep a fetched set: its max-age, clamped; the default without one."""
    match = _MAX_AGE.search(cache_control or "")
    seconds = float(match.group(1)) if match else DEFAULT_CACHE_SECONDS
    return min(MAX_CACHE_SECONDS, max(MIN_CACHE_SECONDS, seconds))


async def fetch_jwks(url: str, *, environment: Environment) -> tuple[jwt.PyJWKSet, float]:
    """(the key set at `url`, seconds to keep it), or JwksUnavailable."""
    try:
        # Checked again here, not only at registration: a row written by hand, or kept from a
        # development database, must not make a production gateway fetch over plain http.
        check_jwks_uri(url, environment=environment)
    except ClientRegistryError as exc:
        raise JwksUnavailable(str(exc)) from None
    headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
    try:
        # asyncio.timeout bounds the whole exchange; httpx's timeout alone is per read, so a
        # server dribbling a byte a second would hold the token request for as long as it liked.
        async with (
            asyncio.timeout(FETCH_TIMEOUT_SECONDS),
            # Only public addresses in production, whatever the name resolves to when fetched:
            # a jwks_uri must not reach into our own network (SSRF).
            guarded_client(allow_private=environment != "production", timeout=FETCH_TIMEOUT_SECONDS) as http,
            http.stream("GET", url, headers=headers) as response,
        ):
            body = await _capped_body(response)
            keep = cache_seconds(response.headers.get("cache-control"))
    except TimeoutError:
        raise JwksUnavailable(f"no answer within {FETCH_TIMEOUT_SECONDS:.0f} s") from None
    except httpx.HTTPError as exc:
        if isinstance(exc.__cause__, RefusedAddress):
            raise JwksUnavailable(f"fetch refused: {REFUSED_ADDRESS}") from None
        raise JwksUnavailable(f"fetch failed: {type(exc).__name__}") from None
    try:
        document: Any = json.loads(body)
        return jwt.PyJWKSet.from_json(check_jwks(document)), keep
    except (ValueError, ClientRegistryError, jwt.PyJWKSetError) as exc:
        raise JwksUnavailable(f"not a usable public JWKS: {exc}") from None


async def _capped_body(response: httpx.Response) -> bytes:
    """A 200's body, read raw and given up on past MAX_JWKS_BYTES (the rest is never read)."""
    if response.status_code != 200:
        raise JwksUnavailable(f"answered {response.status_code}")
    if response.headers.get("content-encoding", "identity").lower() != "identity":
        raise JwksUnavailable("answered with a content-encoding though asked for identity")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_JWKS_BYTES:
        raise JwksUnavailable(f"body over {MAX_JWKS_BYTES} bytes")
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) > MAX_JWKS_BYTES:
            raise JwksUnavailable(f"body over {MAX_JWKS_BYTES} bytes")
    return bytes(body)


@dataclass
class _Entry:
    url: str
    keys: jwt.PyJWKSet | None  # None: the last fetch failed
    expires_at: float  # monotonic; for a failure, when a fetch may be tried again
    refetched_at: float | None = None  # the last refetch for an unknown kid


class PartnerKeys:
    """The key an assertion names, for every private_key_jwt client (one per TokenService)."""

    def __init__(self, environment: Environment, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.environment = environment
        self.clock = clock  # a parameter so tests can step past a max-age; the fetch itself is always real
        self._cache: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def key(self, client: Client, kid: str) -> jwt.PyJWK:
        """The client's key named `kid`; UnknownKey, or JwksUnavailable when it has to be fetched
        and cannot be."""
        if not client.jwks_uri:
            self._cache.pop(client.client_id, None)  # switched to a static JWKS: forget the fetched one
            try:
                return jwt.PyJWKSet.from_json(client.jwks or "{}")[kid]
            except (KeyError, jwt.PyJWKSetError):
                raise UnknownKey from None
        async with self._locks.setdefault(client.client_id, asyncio.Lock()):
            # Under the lock: whoever waited behind a fetch sees its result and does not repeat it.
            return await self._fetched_key(client.client_id, client.jwks_uri, kid)

    async def _fetched_key(self, client_id: str, url: str, kid: str) -> jwt.PyJWK:
        now = self.clock()
        entry = self._cache.get(client_id)
        if entry is not None and entry.url != url:
            entry = None  # the operator registered another URL: what the old one served is void
        if entry is None or now >= entry.expires_at:
            entry = await self._refresh(client_id, url, entry, now, refetch=False)
        elif entry.keys is not None and _lacks(entry.keys, kid) and self._may_refetch(entry, now):
            entry = await self._refresh(client_id, url, entry, now, refetch=True)
        if entry.keys is None:
            raise JwksUnavailable("the last fetch failed; retried after the refetch interval")
        try:
            return entry.keys[kid]
        except KeyError:
            raise UnknownKey from None

    @staticmethod
    def _may_refetch(entry: _Entry, now: float) -> bool:
        return entry.refetched_at is None or now - entry.refetched_at >= REFETCH_INTERVAL_SECONDS

    async def _refresh(
        self, client_id: str, url: str, previous: _Entry | None, now: float, *, refetch: bool
    ) -> _Entry:
        refetched_at = now if refetch else (previous.refetched_at if previous is not None else None)
        try:
            keys, keep = await fetch_jwks(url, environment=self.environment)
        except JwksUnavailable as exc:
            # Host only: the path or query of a partner's URL may carry what it did not mean to log.
            log.warning(
                "client JWKS fetch failed",
                extra={"client_id": client_id, "jwks_host": urlsplit(url).hostname, "reason": str(exc)},
            )
            if refetch and previous is not None and previous.keys is not None:
                # A refetch for an unknown kid failed: the keys still fresh stay, or a caller with
                # a made-up kid could lock the partner out whenever its server has a bad moment.
                self._cache[client_id] = _Entry(url, previous.keys, previous.expires_at, refetched_at)
            else:
                self._cache[client_id] = _Entry(url, None, now + REFETCH_INTERVAL_SECONDS, refetched_at)
            raise
        entry = _Entry(url, keys, now + keep, refetched_at)
        self._cache[client_id] = entry
        return entry


def _lacks(keys: jwt.PyJWKSet, kid: str) -> bool:
    return all(key.key_id != kid for key in keys.keys)
