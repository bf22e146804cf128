"""`cmh run` (what `make run` calls) on a fresh var directory: the bundled nats-server, SQLite,
every service and the gateway ready within 60 s; a child that dies is restarted, the nats-server
too; Ctrl-C leaves no process behind."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.settings import SERVICES
from tests.running_suite import RunningSuite, processes_with_env, running_suite, wait_ready

READY_WITHIN = 60.0


@pytest.fixture
def suite(tmp_path: Path) -> Iterator[RunningSuite]:
    with running_suite(tmp_path / "var") as running:
        yield running


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
        secrets = suite.demo_secrets()
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
        triage = suite.pids(serving="triage")
        assert len(triage) == 1
        os.kill(triage[0], signal.SIGKILL)
        suite.wait_for_line("triage DIED", timeout=15)
        suite.wait_for_line("triage restarted", timeout=30)
        assert wait_ready(client).json()["services"]["triage"] == "ready"

        # The bundled broker too (issue 21): reported, restarted on its port and store, the bus
        # checked, and every process connected to it again by itself.
        broker = suite.pids(executable="nats-server")
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
