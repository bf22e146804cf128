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
from collections.abc import Callable, Iterator
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
# Referrals per fault: enough that they still flow when the fault ends (a restart, a lock released).
STREAM = 60


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


class Watch:
    """While a fault lasts: how far careplan's episodes fell behind triage's routed referrals at
    most (that the fault held the flow back), and how long it lasted."""

    def __init__(self, suite: EmbeddedSuite) -> None:
        self.suite = suite
        self.most_behind = 0
        self.lasted = 0.0

    def behind(self) -> int:
        routed = self.suite.query("triage", "SELECT count(*) FROM triage_referrals WHERE status = 'routed'")
        episodes = self.suite.query("careplan", "SELECT count(*) FROM careplan_episodes")
        return int(routed[0][0]) - int(episodes[0][0])

    def until(self, over: Callable[[], bool], timeout: float = 30) -> None:
        started = time.monotonic()
        while not over():
            assert time.monotonic() - started < timeout, "the fault did not end"
            self.most_behind = max(self.most_behind, self.behind())
            time.sleep(0.1)
        self.lasted = time.monotonic() - started

    def summary(self) -> str:
        return f"lasted {self.lasted:.1f}s, careplan at most {self.most_behind} episodes behind"


class DatabaseLock:
    """Another process's connection holding `BEGIN EXCLUSIVE` on a service's SQLite file: every
    write waits for it (reads go on, WAL). `hold` takes it, keeps it for `seconds`, watching."""

    def __init__(self, path: Path, seconds: float) -> None:
        self.path = path
        self.seconds = seconds
        self.waited = 0.0  # for the lock itself, behind the service's own writes

    def hold(self, watch: Watch) -> None:
        connection = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
        try:
            asked = time.monotonic()
            connection.execute("BEGIN EXCLUSIVE")
            got = time.monotonic()
            self.waited = got - asked
            watch.until(lambda: time.monotonic() - got >= self.seconds)
            connection.execute("ROLLBACK")
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
    running, printed, watch = embedded.running, len(embedded.running.lines), Watch(embedded)

    def kill_broker() -> None:
        time.sleep(0.5)
        embedded.kill(broker)
        watch.until(lambda: running.printed("event bus checked after nats-server restarted", after=printed))

    outcome = embedded.referrals(STREAM, "nats-server", during=kill_broker)
    # Intake does not need the broker (the outbox keeps the events): it kept answering.
    assert not outcome.failed, outcome.last_failure
    never_500("nats-server killed", outcome.refusals)
    assert running.printed("nats-server DIED (exit code -9)", after=printed)
    assert running.printed("nats-server restarted on port", after=printed)
    assert embedded.pid(executable="nats-server") != broker
    stored = embedded.assert_nothing_lost_or_doubled()
    report("nats-server killed", f"{watch.summary()}; {outcome.summary()}; {stored}")


def test_a_consumer_killed_during_referrals(embedded: EmbeddedSuite) -> None:
    careplan = embedded.pid(serving="careplan")  # consumes triage's events, opens episodes
    running, printed, watch = embedded.running, len(embedded.running.lines), Watch(embedded)

    def kill_careplan() -> None:
        time.sleep(0.8)  # episodes being opened
        embedded.kill(careplan)
        watch.until(lambda: running.printed("careplan restarted on port", after=printed))

    outcome = embedded.referrals(STREAM, "careplan", during=kill_careplan)
    assert not outcome.failed, outcome.last_failure
    never_500("careplan killed", outcome.refusals)
    assert running.printed("careplan DIED (exit code -9)", after=printed)
    stored = embedded.assert_nothing_lost_or_doubled()
    report("careplan killed", f"{watch.summary()}; {outcome.summary()}; {stored}")


def test_a_consumers_database_locked(embedded: EmbeddedSuite) -> None:
    lock, watch = DatabaseLock(embedded.database("careplan"), LOCK_SECONDS), Watch(embedded)

    def locked() -> None:
        time.sleep(0.5)
        lock.hold(watch)

    outcome = embedded.referrals(STREAM, "careplan-locked", during=locked)
    assert not outcome.failed, outcome.last_failure
    never_500("careplan locked", outcome.refusals)
    assert watch.most_behind > 0  # careplan could not write while it was held
    stored = embedded.assert_nothing_lost_or_doubled()
    report("careplan database locked", f"{watch.summary()}; {outcome.summary()}; {stored}")


def test_the_intake_database_locked(embedded: EmbeddedSuite) -> None:
    lock, watch = DatabaseLock(embedded.database("triage"), LOCK_SECONDS), Watch(embedded)

    def locked() -> None:
        time.sleep(0.5)
        lock.hold(watch)

    outcome = embedded.referrals(STREAM, "triage-locked", during=locked)
    assert not outcome.failed, outcome.last_failure
    # Refused promptly as busy, with when to try again; never an internal error. The retries carry
    # the same Idempotency-Key: nothing stored twice (checked below).
    never_500("triage locked", outcome.refusals)
    assert outcome.refusals["503"] > 0, outcome.refusals
    assert outcome.busy_without_retry_after == 0
    stored = embedded.assert_nothing_lost_or_doubled()
    report("triage database locked", f"{watch.summary()}; {outcome.summary()}; {stored}")


def test_the_suite_is_whole_again(embedded: EmbeddedSuite) -> None:
    """After the faults every process is ready and on the broker, under the same supervisor."""
    with httpx.Client(base_url=embedded.gateway, timeout=10) as client:
        wait_ready(client, nothing_degraded=True)
    assert embedded.running.process is not None and embedded.running.process.poll() is None
