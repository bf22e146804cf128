"""A served process stops gracefully: on SIGTERM `/ready` turns 503 at once while requests are still
served for the drain period, then the process exits by itself; a stopping consumer hands its
unapplied messages back instead of holding them until the ack wait."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
from sqlalchemy import text

from shared.background import BackgroundWorker
from shared.db import Database
from shared.nats_server import EmbeddedNatsServer, free_port
from shared.outbox import OutboxRelay
from shared.service import stop_background
from shared.settings import Settings


def _env(tmp_path: Path, nats_server: EmbeddedNatsServer) -> dict[str, str]:
    return {
        **os.environ,
        "CMH_VAR_DIR": str(tmp_path / "var"),
        "CMH_NATS_URL": nats_server.url,
        "CMH_SHUTDOWN_DRAIN_SECONDS": "2",
        "CMH_SHUTDOWN_GRACE_SECONDS": "5",
        "CMH_LOG_LEVEL": "WARNING",
    }


def test_sigterm_drains_then_stops(tmp_path: Path, nats_server: EmbeddedNatsServer) -> None:
    env = _env(tmp_path, nats_server)
    subprocess.run([sys.executable, "-m", "cmh.cli", "migrate", "triage"], env=env, check=True, timeout=60)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cmh.cli", "serve", "triage", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass  # not listening yet
            assert time.monotonic() < deadline, "the service never became ready"
            time.sleep(0.1)

        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        ready = httpx.get(f"{base}/ready", timeout=2)
        assert ready.status_code == 503 and ready.json()["type"].endswith("/draining")
        assert httpx.get(f"{base}/health", timeout=2).status_code == 200  # still serving
        assert process.wait(timeout=20) in (0, -signal.SIGTERM)
        assert time.monotonic() - signalled >= 2.0  # it drained before it stopped
        assert b"Traceback" not in (process.stderr.read() if process.stderr else b"")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


class _Holding(BackgroundWorker):
    """Holds 'work' (marked busy) until told to finish; records whether it was cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.finished = False

    async def run(self) -> None:
        with self.busy():
            await self.release.wait()
            self.finished = True
        await asyncio.sleep(3600)  # then only waits: a stop cancels it at once


async def test_a_graceful_stop_lets_busy_work_finish_and_idle_waits_end_at_once() -> None:
    worker = _Holding()
    worker.start()
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    loop.call_later(0.2, worker.release.set)
    started = loop.time()
    await worker.stop(grace=60)
    # It finished (was not cut), and the stop ended with the work, long before its grace.
    assert worker.finished and loop.time() - started < 30

    idle: Any = _Holding()
    idle.start()
    idle.release.set()
    await asyncio.sleep(0.01)
    started = loop.time()
    await idle.stop(grace=60)
    assert loop.time() - started < 30  # not the grace (60 s), nor the hour it sleeps


class _HeldPass(OutboxRelay):
    """A relay whose pass holds a write transaction until released, noting whether it was cut."""

    def __init__(self, db: Database, settings: Settings) -> None:
        broker: Any = SimpleNamespace(
            connected=asyncio.Event(), is_connected=lambda: False, next_reconnect=asyncio.Event
        )
        broker.connected.set()
        super().__init__(db, broker, settings, "test")
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.passes: list[str] = []

    async def relay_once(self) -> int:
        if self.passes:
            return 0
        try:
            async with self.db.transaction() as session:
                await session.execute(text("INSERT INTO held (x) VALUES (1)"))  # SQLite's write lock
                self.entered.set()
                await self.release.wait()
        except asyncio.CancelledError:
            self.passes.append("cut")
            raise
        self.passes.append("finished")
        return 1

    async def _maybe_prune(self) -> None:
        pass


async def test_a_stopping_service_lets_the_relay_finish_its_pass(tmp_path: Path) -> None:
    """A relay cancelled inside its transaction could leave SQLite's write lock held (aiosqlite under
    SQLAlchemy), and the flush after it waited the whole 15 s busy timeout: every API test that
    stopped while the relay was publishing took 15 s to tear down. The pass is let finish instead."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/held.db")
    async with db.transaction() as session:
        await session.execute(text("CREATE TABLE held (x INTEGER)"))
    settings = Settings(var_dir=tmp_path / "var", shutdown_grace_seconds=30)
    relay = _HeldPass(db, settings)
    relay.start()
    try:
        await asyncio.wait_for(relay.entered.wait(), timeout=30)
        stopping = asyncio.create_task(stop_background(settings, [], relay))
        await asyncio.sleep(0.1)
        assert not stopping.done()  # waiting for the pass, not cutting it
        relay.release.set()
        await asyncio.wait_for(stopping, timeout=5)  # the pass ends at once; 30 s is the grace
        assert relay.passes == ["finished"]
        async with asyncio.timeout(5), db.transaction() as session:  # the lock was let go
            assert await session.scalar(text("SELECT count(*) FROM held")) == 1
    finally:
        await relay.stop()
        await db.dispose()
