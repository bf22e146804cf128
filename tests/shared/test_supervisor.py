"""`cmh run`'s supervisor and the bundled nats-server (issue 21, item 2): the broker is a child like
every other. Killed, it is reported loudly (exit code, its last log lines) and started again on
the same port with the same store; JetStream answers with what it held, and a connected service's
client is connected again without anyone telling it."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from cmh.supervisor import BrokerChild, Supervisor
from shared.broker import Broker, connect_bus, ensure_stream
from shared.nats_server import EmbeddedNatsServer, port_open, wait_for_jetstream
from shared.settings import Settings
from tests.support import eventually


class Printed(NamedTuple):
    out: str
    err: str


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[tuple[Supervisor, BrokerChild]]:
    """The part of a Supervisor that owns the broker: a bundled nats-server, watched in a thread."""
    supervisor = Supervisor(Settings(var_dir=tmp_path / "var"))
    broker = BrokerChild("nats-server", EmbeddedNatsServer(tmp_path / "nats"))
    broker.start()
    supervisor.brokers = [broker]
    watcher = threading.Thread(target=supervisor._watch, daemon=True)
    watcher.start()
    try:
        yield supervisor, broker
    finally:
        supervisor.stopping = True
        watcher.join(timeout=5)
        broker.server.stop(graceful=False)


async def test_a_killed_nats_server_is_reported_and_restarted_on_its_port_and_store(
    watched: tuple[Supervisor, BrokerChild], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, broker = watched
    server = broker.server
    settings = Settings(var_dir=tmp_path / "var", nats_url=server.url, broker_backoff_max_seconds=0.5)
    admin = await connect_bus(settings)
    js = admin.jetstream()
    await ensure_stream(js, settings)
    await js.publish("cmh.triage.referral.received", b"{}", headers={"Nats-Msg-Id": "before-the-kill"})
    await admin.close()
    service = Broker(settings, "triage")  # a service's connection, as create_service_app makes it
    service.start()
    await service.wait_connected()
    try:
        assert server.process is not None
        first_pid, port = server.process.pid, server.port
        server.process.send_signal(signal.SIGKILL)

        output = await _printed(capsys, "nats-server restarted on port", timeout=10)
        assert f"!!! nats-server DIED (exit code {-signal.SIGKILL})" in output.err
        assert "restarting in 1s (restart #1)" in output.err
        assert "Last log lines:" in output.err and "Server is ready" in output.err  # the server's own log
        assert f"nats-server restarted on port {port}" in output.out
        assert server.process is not None and server.process.pid != first_pid
        assert server.port == port and port_open("127.0.0.1", port)

        # JetStream answers, from the same store: the stream and its message are still there.
        await asyncio.to_thread(wait_for_jetstream, server.url, 10)
        admin = await connect_bus(settings)
        try:
            info = await admin.jetstream().stream_info(settings.stream_name)
            assert info.state.messages == 1
        finally:
            await admin.close()
        # The service's client found it again by itself (nats-py reconnects, unlimited).
        assert await eventually(service.ready, timeout=10)
        assert broker.restarts == 1 and broker.exited() is None
    finally:
        await service.close()


async def _printed(capsys: pytest.CaptureFixture[str], text: str, timeout: float) -> Printed:
    """What the supervisor printed until `text` appears (stdout and stderr, both kept)."""
    out, err = "", ""
    deadline = time.monotonic() + timeout
    while True:
        captured = capsys.readouterr()
        out, err = out + captured.out, err + captured.err
        if text in out or text in err:
            return Printed(out, err)
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not printed within {timeout}s:\n{out}\n{err}")
        await asyncio.sleep(0.1)
