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
import uuid
from collections.abc import Iterator, Sequence
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
from tests.faults.traffic import TEAMS_IN_REFERENCE, ReferralTraffic, wait_until
from tests.support import prepare_databases

# Processes started, and how many of each.
TOPOLOGY: dict[str, int] = {"registry": 1, "triage": 2, "careplan": 2, "reporting": 1, "gateway": 1}
CLIENTS = {
    "ehr": ("P81001", "ods", "partner_ehr", "referral:submit referral:read", 100_000),
    "clinician": ("RW5", "ods", "crisis_app", "referral:read triage:decide", 100_000),
}


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
class Cluster(ReferralTraffic):
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
