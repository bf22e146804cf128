"""`cmh run` (what `make run` calls) on a fresh var directory: the bundled nats-server, SQLite,
every service and the gateway ready within 60 s; a child that dies is restarted, the nats-server
too; Ctrl-C leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.nats_server import free_port
from shared.settings import SERVICES

READY_WITHIN = 60.0


def processes_with_env(marker: str) -> list[int]:
    """Live processes started for this test (their environment carries our var dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().split(") ", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and marker.encode() in environ:
            found.append(int(entry.name))
    return found


class RunningSuite:
    def __init__(self, var_dir: Path) -> None:
        self.var_dir = var_dir
        self.ports = {name: free_port() for name in (*SERVICES, "gateway")}
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("CMH_") or key == "CMH_TEST_DATABASE_URL"
        }
        self.env.update({f"CMH_{name.upper()}_PORT": str(port) for name, port in self.ports.items()})
        self.env["CMH_VAR_DIR"] = str(var_dir)
        self.marker = f"CMH_VAR_DIR={var_dir}"
        self.lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    def start(self) -> None:
        cmh = Path(sys.executable).parent / "cmh"
        self.process = subprocess.Popen(
            [str(cmh), "run"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # like a terminal: the signal goes to the supervisor
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    def wait_for_line(self, text: str, timeout: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if any(text in line for line in self.lines):
                return time.monotonic() - started
            assert self.process is not None
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not printed; output:\n" + "\n".join(self.lines))

    def stop(self, sig: int = signal.SIGINT) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=40)


@pytest.fixture
def suite(tmp_path: Path) -> Iterator[RunningSuite]:
    running = RunningSuite(tmp_path / "var")
    running.start()
    try:
        yield running
    finally:
        if running.process and running.process.poll() is None:
            running.process.kill()
        for pid in processes_with_env(running.marker):
            os.kill(pid, signal.SIGKILL)


def wait_ready(
    client: httpx.Client, timeout: float = 30, *, nothing_degraded: bool = False
) -> httpx.Response:
    """Until the gateway's /ready is 200 (and, asked for, every process reports NATS ok: a
    broker outage leaves them ready, only degraded)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = client.get("/ready")
            body = response.json() if response.status_code == 200 else {}
            if body and (
                not nothing_degraded
                or (body["nats"] == "ready" and set(body["services"].values()) == {"ready"})
            ):
                return response
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("suite not ready again")
        time.sleep(0.2)


def test_cmh_run_starts_everything_restarts_the_dead_and_stops_cleanly(suite: RunningSuite) -> None:
    took = suite.wait_for_line("CMH Suite is ready", timeout=READY_WITHIN + 30)
    assert took < READY_WITHIN
    output = "\n".join(suite.lines)
    assert suite.base in output and "/docs" in output
    assert "curl -s -u demo-crisis-app:" in output

    with httpx.Client(base_url=suite.base, timeout=10) as client:
        # Ready once it can take work; every process reports NATS ok a moment later.
        ready = wait_ready(client, nothing_degraded=True)
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["services"] == {name: "ready" for name in SERVICES}
        assert body["nats"] == "ready"
        assert (suite.var_dir / "triage.db").exists() and (suite.var_dir / "nats").is_dir()

        # A demo client's printed credentials get a token that the gateway accepts.
        secrets = json.loads((suite.var_dir / "demo-clients.json").read_text())
        token = client.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=("demo-admin", secrets["demo-admin"]),
        )
        assert token.status_code == 200, token.text
        audit = client.get(
            "/audit/records",
            params={"person_id": "p-1"},
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
        )
        assert audit.status_code == 200, audit.text

        # A child that dies is reported loudly and restarted.
        triage = [
            pid
            for pid in processes_with_env(suite.marker)
            if b"serve\x00triage" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert len(triage) == 1
        os.kill(triage[0], signal.SIGKILL)
        suite.wait_for_line("triage DIED", timeout=15)
        suite.wait_for_line("triage restarted", timeout=30)
        assert wait_ready(client).json()["services"]["triage"] == "ready"

        # The bundled broker too (issue 21): reported, restarted on its port and store, the bus
        # checked, and every process connected to it again by itself.
        broker = [
            pid
            for pid in processes_with_env(suite.marker)
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\x00")[0].endswith(b"nats-server")
        ]
        assert len(broker) == 1
        os.kill(broker[0], signal.SIGKILL)
        suite.wait_for_line("nats-server DIED (exit code -9)", timeout=15)
        suite.wait_for_line("nats-server restarted on port", timeout=30)
        suite.wait_for_line("event bus checked after nats-server restarted", timeout=30)
        wait_ready(client, nothing_degraded=True)

    assert processes_with_env(suite.marker), "the suite's processes are running"
    assert suite.stop(signal.SIGINT) == 0
    deadline = time.monotonic() + 10
    while processes_with_env(suite.marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with_env(suite.marker) == [], "Ctrl-C left processes behind"
