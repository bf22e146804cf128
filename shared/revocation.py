"""Disabling a client ends its live tokens within seconds, at the gateway and in every service.

Tokens are verified locally everywhere (a signature and an expiry), so a disabled client's token
would otherwise stay good until it expires. The gateway owns the client registry: every
`REVOCATION_PUBLISH_SECONDS` it reads which clients had their tokens revoked within a token's
lifetime and publishes the whole list as one snapshot on a plain NATS subject (outside the `cmh.>`
stream: it is state, not history). Every process holds the latest snapshot in a
`RevocationList` that `TokenVerifier` consults, so a process that has just started is complete
after one snapshot, and a lost message costs one interval, never a revocation. Only the gateway
may publish on the subject (shared/bus_access.py). A snapshot names client ids, never people.

A token is refused when it was issued at or before its client's revocation (`iat <=
revoked_before`); tokens issued after the client is enabled again are good. Entries older than a
token's lifetime are dropped: every token they could refuse has expired.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from shared.background import BackgroundWorker

if TYPE_CHECKING:
    from shared.broker import Broker
    from shared.settings import Settings

log = logging.getLogger("cmh.revocation")

REVOCATIONS_SUBJECT = "cmh-control.revocations"
REVOCATION_PUBLISHER = "gateway"
REVOCATION_PUBLISH_SECONDS = 1.0


def revocation_window(settings: Settings) -> float:
    """How long a revocation matters: the longest a token it could refuse stays valid."""
    return float(settings.token_lifetime_seconds + settings.token_leeway_seconds + 5)


class RevocationList:
    """Client id → the epoch second at or before which its tokens are refused."""

    def __init__(self, keep_seconds: float) -> None:
        self.keep_seconds = keep_seconds
        self._revoked: dict[str, float] = {}

    def revoked(self, client_id: str, issued_at: float) -> bool:
        before = self._revoked.get(client_id)
        return before is not None and issued_at <= before

    def replace(self, snapshot: Mapping[str, float], now: float | None = None) -> None:
        """Take a snapshot, keeping entries it lacks until they are too old to matter (a snapshot
        from a replica that has not yet seen the newest revocation must not drop it)."""
        now = time.time() if now is None else now
        merged = {**self._revoked}
        for client_id, before in snapshot.items():
            merged[client_id] = max(before, merged.get(client_id, before))
        self._revoked = {c: b for c, b in merged.items() if b >= now - self.keep_seconds}

    def snapshot(self) -> dict[str, float]:
        return dict(self._revoked)


def encode_snapshot(revoked: Mapping[str, float]) -> bytes:
    return json.dumps({"revoked": dict(revoked)}, separators=(",", ":")).encode()


def decode_snapshot(raw: bytes) -> dict[str, float]:
    """A snapshot's entries; anything malformed is ignored whole (the next one comes in a second)."""
    body = json.loads(raw)
    revoked = body["revoked"] if isinstance(body, dict) else None
    if not isinstance(revoked, dict):
        raise ValueError("not a revocation snapshot")
    return {str(k): float(v) for k, v in revoked.items() if isinstance(v, int | float)}


class RevocationListener(BackgroundWorker):
    """Every process: keep `revocations` equal to the latest snapshot the gateway published."""

    task_name = "revocation-listener"

    def __init__(self, broker: Broker, revocations: RevocationList) -> None:
        super().__init__()
        self.broker = broker
        self.revocations = revocations

    async def run(self) -> None:
        await self.broker.wait_connected()
        assert self.broker.nc is not None

        async def on_snapshot(message: object) -> None:
            try:
                self.revocations.replace(decode_snapshot(message.data))  # type: ignore[attr-defined]
            except (ValueError, KeyError, TypeError):
                log.warning("malformed revocation snapshot ignored")

        # A plain subscription survives reconnects (nats-py re-subscribes).
        subscription = await self.broker.nc.subscribe(REVOCATIONS_SUBJECT, cb=on_snapshot)
        try:
            await asyncio.Event().wait()  # until the worker is stopped (cancelled)
        finally:
            if not self.broker.nc.is_closed:
                await subscription.unsubscribe()


class RevocationPublisher(BackgroundWorker):
    """The gateway: read the revocations from its registry, apply them to its own list at once
    (no broker needed for the gateway to refuse), and publish the snapshot for everyone else."""

    task_name = "revocation-publisher"

    def __init__(
        self,
        broker: Broker,
        revocations: RevocationList,
        read: Callable[[float], Awaitable[dict[str, float]]],
        interval: float = REVOCATION_PUBLISH_SECONDS,
    ) -> None:
        super().__init__()
        self.broker = broker
        self.revocations = revocations
        self.read = read
        self.interval = interval

    async def publish_once(self) -> None:
        current = await self.read(time.time() - self.revocations.keep_seconds)
        self.revocations.replace(current)
        if self.broker.is_connected() and self.broker.nc is not None:
            await self.broker.nc.publish(REVOCATIONS_SUBJECT, encode_snapshot(current))

    async def run(self) -> None:
        while not self.stopping:
            try:
                with self.busy():
                    await self.publish_once()
            except Exception as exc:  # the database or the broker: try again next interval
                log.warning("revocations not published", extra={"error": type(exc).__name__})
            await asyncio.sleep(self.interval)
