"""The NATS JetStream connection of one process, and the stream every event lives in.

A service must start, answer `/health` and keep accepting work while NATS is unreachable: the
outbox holds events until the broker is back. So connecting is a background task that retries
with backoff, and `ready()` reports whether JetStream is usable right now (`/ready` reports it as
degraded, never as unready: shared/service.py). nats-py reconnects by itself, for ever, every
half second; whoever backs off while the broker is away (the outbox relay, the consumers) waits on
`next_reconnect()` too, so work resumes the moment NATS is back rather than when the backoff ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from shared.bus_access import ADMIN, inbox_prefix, read_password
from shared.metrics import BROKER_CONNECTED
from shared.settings import Settings

log = logging.getLogger("cmh.broker")

STREAM_SUBJECTS = ["cmh.>"]


def backoff_delay(attempt: int, *, base: float = 0.2, cap: float = 15.0) -> float:
    """Exponential backoff with full jitter (attempt counts from 1)."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not security


def stream_config(settings: Settings) -> StreamConfig:
    return StreamConfig(
        name=settings.stream_name,
        subjects=STREAM_SUBJECTS,
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        num_replicas=settings.stream_replicas,
        duplicate_window=settings.stream_duplicate_window_seconds,
    )


async def ensure_stream(js: JetStreamContext, settings: Settings) -> None:
    """Create the suite's stream, or bring an existing one to the configured shape."""
    config = stream_config(settings)
    try:
        await js.stream_info(settings.stream_name)
    except NotFoundError:
        await js.add_stream(config)
        log.info("stream created", extra={"stream": settings.stream_name})
        return
    await js.update_stream(config)


def nats_servers(settings: Settings) -> list[str]:
    if not settings.nats_url:
        raise RuntimeError("CMH_NATS_URL is not set")
    return [s.strip() for s in settings.nats_url.split(",") if s.strip()]


def check_bus_settings(settings: Settings) -> None:
    """Production never runs on an open bus, nor on one without TLS."""
    if settings.environment != "production":
        return
    if not settings.bus_closed:
        raise RuntimeError("production requires a closed bus: set CMH_NATS_CREDENTIALS_DIR")
    if settings.nats_tls_ca_file is None and not all(
        url.startswith("tls://") for url in nats_servers(settings)
    ):
        raise RuntimeError("production requires TLS to NATS: tls:// URLs or CMH_NATS_TLS_CA_FILE")


def connect_options(settings: Settings, identity: str) -> dict[str, object]:
    """How `identity` connects: its own user, password and reply inbox on a closed bus; TLS when
    a CA is configured. Every connection to the suite's NATS is made with these."""
    options: dict[str, object] = {"servers": nats_servers(settings), "name": f"cmh-{identity}"}
    if settings.nats_credentials_dir is not None:
        options.update(
            user=identity,
            password=read_password(settings.nats_credentials_dir, identity),
            inbox_prefix=inbox_prefix(identity),
        )
    if settings.nats_tls_ca_file is not None:
        options["tls"] = ssl.create_default_context(cafile=str(settings.nats_tls_ca_file))
    return options


BUNDLED_BUS_DIR = "nats"  # under CMH_VAR_DIR: the bundled server's store, users and config


def beside_the_suite(settings: Settings) -> Settings:
    """Settings for a command run beside `cmh run` (e.g. `cmh reporting rebuild`): the NATS URL it
    recorded under var/ and the bundled bus's credentials, unless configured otherwise."""
    update: dict[str, object] = {}
    recorded = settings.var_dir / "nats.url"
    if not settings.nats_url and recorded.exists():
        update["nats_url"] = recorded.read_text().strip()
    credentials = settings.var_dir / BUNDLED_BUS_DIR / "credentials"
    if settings.nats_credentials_dir is None and credentials.is_dir():
        update["nats_credentials_dir"] = credentials
    return settings.model_copy(update=update)


async def connect_bus(settings: Settings, identity: str = ADMIN, **extra: object) -> NATS:
    """A plain connection as `identity` (tools, tests and the provisioner; `admin` by default)."""
    return await nats.connect(**{**connect_options(settings, identity), **extra})  # type: ignore[arg-type]


class Broker:
    def __init__(self, settings: Settings, identity: str) -> None:
        check_bus_settings(settings)
        self.settings = settings
        self.identity = identity
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None
        self.connected = asyncio.Event()
        # Set (and replaced by a fresh one) each time the connection is made or made again.
        self._back = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        """Connect in the background; callers wait on `connected` when they need JetStream."""
        if self._task is None:
            BROKER_CONNECTED.labels(self.identity).set(0)  # a process that never connects is seen too
            self._task = asyncio.create_task(self._connect_until_done(), name=f"broker-{self.identity}")

    async def _connect_until_done(self) -> None:
        attempt = 0
        while not self._closing:
            attempt += 1
            try:
                nc = await connect_bus(
                    self.settings,
                    self.identity,
                    connect_timeout=2,
                    reconnect_time_wait=0.5,
                    max_reconnect_attempts=-1,
                    allow_reconnect=True,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
                js = nc.jetstream(timeout=5)
                if self.settings.bus_closed:
                    # The admin made the stream; this identity may only look at it.
                    await js.stream_info(self.settings.stream_name)
                else:
                    await ensure_stream(js, self.settings)
                self.nc, self.js = nc, js
                self.connected.set()
                self._announce_back()
                log.info("connected to NATS", extra={"attempt": attempt})
                return
            except Exception as exc:
                delay = backoff_delay(attempt, cap=self.settings.broker_backoff_max_seconds)
                log.warning(
                    "NATS not reachable (or the stream not provisioned), retrying",
                    extra={"error": type(exc).__name__, "retry_in": round(delay, 2)},
                )
                with contextlib.suppress(Exception):
                    if "nc" in locals() and not nc.is_closed:
                        await nc.close()
                await asyncio.sleep(delay)

    async def _on_error(self, exc: Exception) -> None:
        log.debug("NATS client error", extra={"error": type(exc).__name__})

    async def _on_disconnected(self) -> None:
        if not self._closing:
            BROKER_CONNECTED.labels(self.identity).set(0)
            log.warning("disconnected from NATS")

    async def _on_reconnected(self) -> None:
        log.info("reconnected to NATS")
        # A server that lost its store (or a new cluster) needs the stream again; on a closed bus
        # only the provisioner may make it.
        if self.js is not None and not self.settings.bus_closed:
            with contextlib.suppress(Exception):
                await ensure_stream(self.js, self.settings)
        self._announce_back()

    def _announce_back(self) -> None:
        BROKER_CONNECTED.labels(self.identity).set(1)
        back, self._back = self._back, asyncio.Event()
        back.set()

    def next_reconnect(self) -> asyncio.Event:
        """An event set the next time the connection is (re)established. Take it before trying
        the broker, then wait on it while backing off: a reconnect in between is not missed."""
        return self._back

    async def pause(self, delay: float, back: asyncio.Event) -> bool:
        """Back off for `delay` seconds, or until `back` (from `next_reconnect()`) is set; True
        when NATS came back (the caller's backoff starts over: the outage is over)."""
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can lose a cancellation.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await back.wait()
        return back.is_set()

    def is_connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    async def ready(self) -> bool:
        """True when a JetStream API call succeeds now."""
        if self.js is None or not self.is_connected():
            return False
        try:
            await asyncio.wait_for(self.js.stream_info(self.settings.stream_name), timeout=2)
        except Exception:
            return False
        return True

    async def wait_connected(self) -> JetStreamContext:
        await self.connected.wait()
        assert self.js is not None
        return self.js

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.nc is not None and not self.nc.is_closed:
            # Drain flushes what we published; bounded, since a pull subscription whose fetch
            # was cancelled never drains (its unacknowledged messages are redelivered anyway).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.drain(), timeout=2)
            with contextlib.suppress(Exception):
                await self.nc.close()
