"""The suite as a cluster for fault tests: a three-node JetStream cluster (stream R3), two processes
each of triage and careplan, registry, reporting and the gateway, all real `cmh serve` processes on
PostgreSQL. Every process reaches PostgreSQL and each NATS node through a `FaultyLink`, so a test
can cut or pause the network, and processes and NATS nodes can be killed and started again.

Needs PostgreSQL (`CMH_TEST_DATABASE_URL`; CI sets it). Loopback only; bounded in time.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import text

from shared.db import Database, create_engine
from shared.nats_server import NatsCluster, free_port
from shared.settings import Settings
from tests.conftest import POSTGRES_URL, drop_schemas
from tests.faults.netproxy import FaultyLink
from tests.support import prepare_databases

# Processes started, and how many of each.
TOPOLOGY: dict[str, int] = {"registry": 1, "triage": 2, "careplan": 2, "reporting": 1, "gateway": 1}
CLIENTS = {
    "ehr": ("P81001", "ods", "partner_ehr", "referral:submit referral:read", 100_000),
    "clinician": ("RW5", "ods", "crisis_app", "referral:read triage:decide", 100_000),
}
TEAMS_IN_REFERENCE = 45

_DIGITS_AS_LETTERS = str.maketrans("0123456789", "abcdefghij")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(interval)


@dataclass
class Process:
    service: str
    replica: int
    port: int
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return f"{self.service}-{self.replica}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child writes to it until it exits
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "cmh.cli", "serve", self.service, "--port", str(self.port)],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def ready(self) -> bool:
        try:
            path = "/health" if self.service == "gateway" else "/ready"
            return httpx.get(f"{self.url}{path}", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye (a crashed pod, an OOM kill)."""
        assert self.popen is not None
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def terminate(self) -> None:
        """SIGTERM: the graceful stop."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Outcome:
    """What clients saw for one batch of referrals."""

    accepted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # never accepted within the deadline
    refused_answers: int = 0  # non-2xx answers and connection errors, retried
    elapsed: float = 0.0
    last_failure: dict[str, str] = field(default_factory=dict)  # path -> what it last got

    def summary(self) -> str:
        return (
            f"{len(self.accepted)} accepted, {len(self.failed)} never accepted, "
            f"{self.refused_answers} failed answers retried, {self.elapsed:.1f}s"
        )


@dataclass
class Cluster:
    settings: Settings  # direct to PostgreSQL, for checks from the test
    nats: NatsCluster
    nats_links: list[FaultyLink]
    pg_link: FaultyLink
    processes: list[Process]
    tokens: dict[str, dict[str, str]]
    accepted: list[str] = field(default_factory=list)  # every referral any client saw accepted

    @property
    def gateway(self) -> str:
        return self.process("gateway").url

    def process(self, service: str, replica: int = 1) -> Process:
        return next(p for p in self.processes if p.service == service and p.replica == replica)

    def wait_ready(self, processes: Sequence[Process] | None = None, timeout: float = 60) -> None:
        for process in processes or self.processes:
            wait_until(process.ready, timeout, f"{process.name} ready\n{process.log_tail()}")

    # --- traffic --------------------------------------------------------------------------------

    def referrals(self, count: int, label: str, *, during: Callable[[], None] | None = None) -> Outcome:
        """Submit and accept `count` referrals through the gateway, 6 at a time, as a careful client
        would: a failed answer is retried with the same Idempotency-Key (and the decision with
        If-Match) until accepted or 90 s pass. `during` runs in parallel (the fault)."""
        outcome = Outcome()
        started = time.monotonic()
        run = uuid.uuid4().hex[:8]
        with (
            ThreadPoolExecutor(max_workers=7) as pool,
            httpx.Client(base_url=self.gateway, timeout=10) as http,
        ):
            fault = pool.submit(during) if during else None
            results = list(pool.map(lambda i: self._one(http, f"{label}-{run}-{i}", outcome), range(count)))
            if fault is not None:
                fault.result()
        for key, referral_id in results:
            (outcome.accepted if referral_id else outcome.failed).append(referral_id or key)
        self.accepted.extend(outcome.accepted)
        outcome.elapsed = time.monotonic() - started
        return outcome

    def _one(self, http: httpx.Client, key: str, outcome: Outcome) -> tuple[str, str | None]:
        deadline = time.monotonic() + 90
        body = {
            "person": {
                # One person per referral: names match on letters alone (digits are dropped), so the
                # key's digits become letters; the same person twice would be linked, not opened twice.
                "given_name": f"Fault{key.replace('-', '').translate(_DIGITS_AS_LETTERS)[:40]}", "family_name": "Tester",
                "birth_date": "1980-02-02", "postcode": "PR1 3BQ",
            },
            "source": "gp", "needs": ["low_mood"], "consent_to_share": False,
        }  # fmt: skip
        referral_id = None
        while referral_id is None and time.monotonic() < deadline:
            answer = self._send(
                http, "POST", "/triage/referrals", outcome, self.tokens["ehr"], key, body=body
            )
            if answer is not None and answer.status_code == 201:
                referral_id = answer.json()["id"]
        while referral_id is not None and time.monotonic() < deadline:
            decided = self._send(
                http, "POST", f"/triage/referrals/{referral_id}/decisions", outcome, self.tokens["clinician"],
                None, body={"action": "accept"}, if_match='"1"',
            )  # fmt: skip
            if decided is not None and decided.status_code == 200:
                return key, referral_id
            if decided is not None and decided.status_code == 412:  # an earlier try got through
                read = self._send(
                    http, "GET", f"/triage/referrals/{referral_id}", outcome, self.tokens["clinician"]
                )
                if read is not None and read.status_code == 200 and read.json()["status"] == "routed":
                    return key, referral_id
        return key, None

    def _send(
        self, http: httpx.Client, method: str, path: str, outcome: Outcome, auth: dict[str, str],
        key: str | None = None, *, body: dict[str, Any] | None = None, if_match: str | None = None,
    ) -> httpx.Response | None:  # fmt: skip
        headers = dict(auth)
        if key:
            headers["Idempotency-Key"] = key
        if if_match:
            headers["If-Match"] = if_match
        try:
            answer = http.request(method, path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            outcome.refused_answers += 1
            outcome.last_failure[f"{method} {path}"] = type(exc).__name__
            time.sleep(0.2)
            return None
        if answer.status_code >= 500 or answer.status_code == 429:
            outcome.refused_answers += 1
            outcome.last_failure[f"{method} {path}"] = f"{answer.status_code} {answer.text[:200]}"
            time.sleep(0.2)
            return None
        if answer.status_code >= 400 and answer.status_code != 412:
            raise AssertionError(f"{method} {path}: {answer.status_code} {answer.text}")
        return answer

    # --- what the stores hold -------------------------------------------------------------------

    def query(self, owner: str, sql: str) -> list[Any]:
        async def run() -> list[Any]:
            engine = create_engine(self.settings.database_url_for(owner), pool_size=1)
            try:
                async with engine.connect() as connection:
                    schema = self.settings.database_schema_for(owner)
                    await connection.execute(text(f'SET search_path TO "{schema}"'))
                    return list((await connection.execute(text(sql))).all())
            finally:
                await engine.dispose()

        return asyncio.run(run())

    def holdings(self) -> dict[str, dict[str, int]]:
        """For each store, how many rows each referral has."""
        return {
            "triage": dict(self.query("triage", "SELECT id, 1 FROM triage_referrals")),
            "careplan": dict(
                self.query(
                    "careplan", "SELECT referral_id, count(*) FROM careplan_episodes GROUP BY referral_id"
                )
            ),
            "reporting": dict(
                self.query(
                    "reporting", "SELECT referral_id, count(*) FROM reporting_referrals GROUP BY referral_id"
                )
            ),
            "reporting_episodes": dict(
                self.query(
                    "reporting", "SELECT referral_id, count(*) FROM reporting_episodes GROUP BY referral_id"
                )
            ),
        }

    def assert_nothing_lost_or_doubled(self, timeout: float = 90) -> str:
        """Every accepted referral once in triage, its episode once in careplan, counted once in
        reporting (referral and episode); and nothing stored that no client saw accepted."""
        expected = set(self.accepted)
        last: dict[str, dict[str, int]] = {}
        started = time.monotonic()

        def settled() -> bool:
            last.update(self.holdings())
            return all(set(last[store]) == expected and set(last[store].values()) <= {1} for store in last)

        try:
            wait_until(settled, timeout, "every store holds each accepted referral once", interval=0.5)
        except AssertionError:
            report = {
                store: {
                    "missing": len(expected - set(rows)),
                    "unexpected": len(set(rows) - expected),
                    "doubled": sum(1 for n in rows.values() if n > 1),
                }
                for store, rows in last.items()
            }
            raise AssertionError(f"stores disagree with what clients saw: {report}") from None
        counts = ", ".join(f"{store} {sum(rows.values())}" for store, rows in last.items())
        return f"settled {time.monotonic() - started:.1f}s after the last answer: {counts}"


def _env(
    cluster_dir: Path, settings: Settings, pg_url: str, nats_url: str, ports: dict[str, list[int]]
) -> dict[str, str]:
    env = {
        **os.environ,
        "CMH_VAR_DIR": str(cluster_dir / "var"),
        "CMH_DATABASE_URL": pg_url,
        "CMH_DATABASE_SCHEMA_PREFIX": settings.database_schema_prefix,
        "CMH_DATABASE_POOL_SIZE": "5",
        "CMH_NATS_URL": nats_url,
        "CMH_STREAM_REPLICAS": "3",
        "CMH_CONSUMER_ACK_WAIT_SECONDS": "3",
        "CMH_CONSUMER_RETRY_BASE_SECONDS": "0.2",
        "CMH_OUTBOX_POLL_SECONDS": "0.2",
        "CMH_SHUTDOWN_DRAIN_SECONDS": "0",
        "CMH_SHUTDOWN_GRACE_SECONDS": "5",
        "CMH_TOKEN_LIFETIME_SECONDS": "3600",
        "CMH_JWKS_MIN_REFRESH_SECONDS": "0",
        "CMH_REPORTING_PSEUDONYM_KEY": "fault-tests-pseudonym-key-0123456789",
        "CMH_LOG_LEVEL": "WARNING",
        "CMH_GATEWAY_PORT": str(ports["gateway"][0]),
        "CMH_JWKS_URL": f"http://127.0.0.1:{ports['gateway'][0]}/.well-known/jwks.json",
    }
    for service, service_ports in ports.items():
        if service != "gateway":
            env[f"CMH_{service.upper()}_URL"] = ",".join(f"http://127.0.0.1:{p}" for p in service_ports)
    return env


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not POSTGRES_URL:
        pytest.skip("CMH_TEST_DATABASE_URL is not set: fault tests need PostgreSQL (CI always sets it)")
    directory = tmp_path_factory.mktemp("cluster")
    settings = Settings(
        var_dir=directory / "var",
        database_url=POSTGRES_URL,
        database_schema_prefix=f"f{uuid.uuid4().hex[:8]}_",
    )
    nats = NatsCluster(directory / "nats")
    nats.start()
    nats_links = [FaultyLink(node.host, node.port).start() for node in nats.nodes]
    target = urlsplit(POSTGRES_URL)
    pg_link = FaultyLink(target.hostname or "127.0.0.1", target.port or 5432).start()
    pg_url = POSTGRES_URL.replace(
        target.netloc, f"{target.username + '@' if target.username else ''}127.0.0.1:{pg_link.port}"
    )
    ports = {service: [free_port() for _ in range(count)] for service, count in TOPOLOGY.items()}
    env = _env(
        directory, settings, pg_url, ",".join(f"nats://127.0.0.1:{link.port}" for link in nats_links), ports
    )
    processes = [
        Process(service, replica + 1, port, env, directory / f"{service}-{replica + 1}.log")
        for service, service_ports in ports.items()
        for replica, port in enumerate(service_ports)
    ]

    owners = ("gateway", "registry", "triage", "careplan", "reporting")
    secrets = asyncio.run(prepare_databases(settings, owners, CLIENTS))
    state = Cluster(settings, nats, nats_links, pg_link, processes, tokens={})
    try:
        for process in processes:
            process.start()
        state.wait_ready()

        async def seed_registry() -> None:
            from services.registry.seed import seed

            db = Database(
                settings.database_url_for("registry"), schema=settings.database_schema_for("registry")
            )
            async with db.transaction() as session:
                await seed(session)
            await db.dispose()

        asyncio.run(seed_registry())
        wait_until(
            lambda: (
                state.query("triage", "SELECT count(*) FROM triage_registry_records WHERE kind = 'team'")[0][
                    0
                ]
                == TEAMS_IN_REFERENCE
            ),
            60,
            "triage's registry read-model filled from the registry's events",
        )
        for client_id, secret in secrets.items():
            token = httpx.post(
                f"{state.gateway}/oauth2/token",
                data={"grant_type": "client_credentials"},
                auth=(client_id, secret),
                timeout=10,
            )
            assert token.status_code == 200, token.text
            state.tokens[client_id] = {"Authorization": f"Bearer {token.json()['access_token']}"}
        yield state
    finally:
        for process in reversed(processes):
            process.terminate()
        for link in (*nats_links, pg_link):
            link.stop()
        nats.stop()
        asyncio.run(drop_schemas(POSTGRES_URL, settings.database_schema_prefix))
