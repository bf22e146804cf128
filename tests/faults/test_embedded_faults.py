"""Faults injected into the embedded topology, `cmh run` as `make run` starts it: the bundled
nats-server supervised by `cmh/supervisor.py`, a SQLite file per service, one process of each
service and the gateway (tests/running_suite.py). Needs no PostgreSQL, so it runs in every `make
test`.

The tests run in order on one suite: a baseline, then the broker SIGKILLed (the supervisor restarts
it), a consumer (careplan) SIGKILLed (restarted too), careplan's and then triage's database locked
by another connection for longer than a request waits for it. Referrals flow through the gateway
meanwhile, sent as a careful client sends them (tests/faults/traffic.py); after each fault every
referral a client saw accepted exists once in triage, has its episode once in careplan and is
counted once in reporting, and nothing is stored that no client saw accepted. The stores are read
from the SQLite files, read-only."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.faults.traffic import TEAMS_IN_REFERENCE, ReferralTraffic, report, wait_until
from tests.running_suite import RunningSuite, running_suite, wait_ready

# The demo clients `cmh run` seeds (gateway/admin.py): one submits referrals, one accepts them.
SUBMITTER, DECIDER = "demo-partner-ehr", "demo-crisis-app"
# Longer than a request waits for a lock (database_busy_timeout_seconds, 5 s by default), so
# requests meet the lock and are refused, then shorter than a client keeps trying.
LOCK_SECONDS = 7.0


@dataclass
class EmbeddedSuite(ReferralTraffic):
    running: RunningSuite
    tokens: dict[str, dict[str, str]] = field(default_factory=dict)
    accepted: list[str] = field(default_factory=list)  # every referral any client saw accepted

    @property
    def gateway(self) -> str:
        return self.running.base

    def database(self, owner: str) -> Path:
        return self.running.var_dir / f"{owner}.db"

    def query(self, owner: str, sql: str) -> list[Any]:
        """Read-only, beside the running services (WAL: readers never wait for their writes)."""
        connection = sqlite3.connect(f"file:{self.database(owner)}?mode=ro", uri=True, timeout=5)
        try:
            return connection.execute(sql).fetchall()
        finally:
            connection.close()

    def pid(self, *, serving: str | None = None, executable: str | None = None) -> int:
        pids = self.running.pids(serving=serving, executable=executable)
        assert len(pids) == 1, f"{serving or executable}: {pids}"
        return pids[0]

    def kill(self, pid: int) -> None:
        """SIGKILL: no drain, no goodbye (a crash, an OOM kill)."""
        os.kill(pid, signal.SIGKILL)


class DatabaseLock:
    """Another process's connection holding `BEGIN EXCLUSIVE` on a service's SQLite file: every
    write waits for it (reads go on, WAL). Held from `hold()`, in a thread, for `seconds`."""

    def __init__(self, path: Path, seconds: float) -> None:
        self.path = path
        self.seconds = seconds
        self.held_for = 0.0
        self.waited = 0.0  # for the lock itself, behind the service's own writes

    def hold(self) -> None:
        connection = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
        try:
            asked = time.monotonic()
            connection.execute("BEGIN EXCLUSIVE")
            got = time.monotonic()
            self.waited = got - asked
            time.sleep(self.seconds)
            connection.execute("ROLLBACK")
            self.held_for = time.monotonic() - got
        finally:
            connection.close()


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedSuite]:
    directory = tmp_path_factory.mktemp("embedded")
    with running_suite(directory / "var") as running:
        suite = EmbeddedSuite(running)
        running.wait_for_line("CMH Suite is ready", timeout=90)
        with httpx.Client(base_url=running.base, timeout=10) as client:
            wait_ready(client, timeout=60, nothing_degraded=True)
            secrets = running.demo_secrets()
            for role, client_id in (("ehr", SUBMITTER), ("clinician", DECIDER)):
                token = client.post(
                    "/oauth2/token",
                    data={"grant_type": "client_credentials"},
                    auth=(client_id, secrets[client_id]),
                )
                assert token.status_code == 200, token.text
                suite.tokens[role] = {"Authorization": f"Bearer {token.json()['access_token']}"}
        wait_until(
            lambda: (
                suite.query("triage", "SELECT count(*) FROM triage_registry_records WHERE kind = 'team'")[0][
                    0
                ]
                == TEAMS_IN_REFERENCE
            ),
            60,
            "triage's registry read-model filled from the registry's events",
        )
        yield suite


def never_500(name: str, refusals: dict[str, int]) -> None:
    assert "500" not in refusals, f"{name}: an internal error answered ({refusals})"


def test_baseline_no_fault(embedded: EmbeddedSuite) -> None:
    outcome = embedded.referrals(20, "baseline")
    assert not outcome.failed, outcome.last_failure
    never_500("baseline", outcome.refusals)
    report("baseline", f"{outcome.summary()}; {embedded.assert_nothing_lost_or_doubled()}")


def test_the_bundled_nats_server_killed_during_a_stream_of_referrals(embedded: EmbeddedSuite) -> None:
    broker = embedded.pid(executable="nats-server")
    printed = len(embedded.running.lines)

    def kill_broker() -> None:
        time.sleep(0.5)
        embedded.kill(broker)

    outcome = embedded.referrals(30, "nats-server", during=kill_broker)
    # Intake does not need the broker (the outbox holds the events): every referral accepted.
    assert not outcome.failed, outcome.last_failure
    never_500("nats-server killed", outcome.refusals)
    running = embedded.running
    running.wait_for_line("nats-server DIED (exit code -9)", timeout=15, after=printed)
    running.wait_for_line("nats-server restarted on port", timeout=30, after=printed)
    running.wait_for_line("event bus checked after nats-server restarted", timeout=30, after=printed)
    assert embedded.pid(executable="nats-server") != broker
    stored = embedded.assert_nothing_lost_or_doubled()
    report("nats-server killed", f"restarted by the supervisor; {outcome.summary()}; {stored}")


def test_a_consumer_killed_during_referrals(embedded: EmbeddedSuite) -> None:
    careplan = embedded.pid(serving="careplan")  # consumes triage's events, opens episodes
    printed = len(embedded.running.lines)

    def kill_careplan() -> None:
        time.sleep(0.8)  # episodes being opened
        embedded.kill(careplan)

    outcome = embedded.referrals(30, "careplan", during=kill_careplan)
    assert not outcome.failed, outcome.last_failure
    never_500("careplan killed", outcome.refusals)
    embedded.running.wait_for_line("careplan DIED (exit code -9)", timeout=15, after=printed)
    embedded.running.wait_for_line("careplan restarted on port", timeout=30, after=printed)
    stored = embedded.assert_nothing_lost_or_doubled()
    report("careplan killed", f"restarted by the supervisor; {outcome.summary()}; {stored}")


def test_a_consumers_database_locked(embedded: EmbeddedSuite) -> None:
    lock = DatabaseLock(embedded.database("careplan"), LOCK_SECONDS)

    def locked() -> None:
        time.sleep(0.5)
        lock.hold()

    outcome = embedded.referrals(30, "careplan-locked", during=locked)
    assert not outcome.failed, outcome.last_failure
    never_500("careplan locked", outcome.refusals)
    assert lock.held_for >= LOCK_SECONDS
    stored = embedded.assert_nothing_lost_or_doubled()
    report(
        "careplan database locked",
        f"held {lock.held_for:.1f}s (after {lock.waited:.1f}s waiting for it); {outcome.summary()}; {stored}",
    )


def test_the_intake_database_locked(embedded: EmbeddedSuite) -> None:
    lock = DatabaseLock(embedded.database("triage"), LOCK_SECONDS)

    def locked() -> None:
        time.sleep(0.5)
        lock.hold()

    outcome = embedded.referrals(30, "triage-locked", during=locked)
    assert not outcome.failed, outcome.last_failure
    # Refused promptly as busy, with when to try again; never an internal error. The retries carry
    # the same Idempotency-Key: nothing stored twice (checked below).
    never_500("triage locked", outcome.refusals)
    assert outcome.refusals["503"] > 0, outcome.refusals
    assert outcome.busy_without_retry_after == 0
    assert lock.held_for >= LOCK_SECONDS
    stored = embedded.assert_nothing_lost_or_doubled()
    report(
        "triage database locked",
        f"held {lock.held_for:.1f}s (after {lock.waited:.1f}s waiting for it); {outcome.summary()}; {stored}",
    )


def test_the_supervisor_still_watches_everything(embedded: EmbeddedSuite) -> None:
    """After the faults the suite is whole again: every process ready, on the broker."""
    with httpx.Client(base_url=embedded.gateway, timeout=10) as client:
        wait_ready(client, nothing_degraded=True)
    assert embedded.running.process is not None and embedded.running.process.poll() is None
