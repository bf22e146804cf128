"""`cmh run`: the whole suite on one machine, for a laptop or a demo.

Starts the bundled nats-server (unless CMH_NATS_URL names one) with a user per process and
provisions the event bus (shared/bus_access.py), applies every service's migrations
(cmh/migrations.py), starts each service and the gateway as its own uvicorn process (`python -m
cmh.cli serve NAME`, cmh/serving.py), waits until the gateway reports everything ready, and keeps
them running: a child that dies is reported loudly and restarted with backoff, the bundled
nats-server too (on its own port and store, so every client reconnects to the same address and
finds its stream and durables). Unless CMH_OIDC_ISSUER names the provider people sign in with, a
development OpenID Connect provider (oidc-provider-mock) is started too, as a supervised child on
127.0.0.1:CMH_DEV_OIDC_PORT, with the demo people (gateway/web/demo_people.py) mapped to it and
the gateway pointed at it. Ctrl-C or SIGTERM stops the children (gateway first, broker last).
Children live in their own process group, so only this supervisor decides their shutdown order,
and they are told by the kernel to exit should the supervisor itself be killed.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

import httpx

from cmh.migrations import migrate_all
from cmh.serving import bus_plan
from shared.broker import BUNDLED_BUS_DIR
from shared.bus_access import ADMIN, prepare_closed_bus, read_password
from shared.consumer import provision_bus
from shared.nats_server import EmbeddedNatsServer, NatsCluster, port_open
from shared.settings import SERVICES, Settings

DEV_OIDC_HOST = "127.0.0.1"  # its issuer is the address it is reached at: always this one
RESTART_BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0
STOP_TIMEOUT = 10.0


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM us if the supervisor dies (Linux prctl)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _child_popen_options() -> dict[str, object]:
    if sys.platform.startswith("linux"):
        return {"start_new_session": True, "preexec_fn": _die_with_parent}
    return {"start_new_session": True}


def say(message: str, stream: IO[str] | None = None) -> None:
    # sys.stdout looked up per call, not bound at import (a test capturing output replaces it).
    print(f"cmh | {message}", file=stream or sys.stdout, flush=True)


@dataclass
class Child:
    name: str
    port: int
    argv: list[str]
    log_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)  # this child's own settings
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    next_start: float = 0.0
    log_file: IO[bytes] | None = field(default=None, repr=False)

    def start(self, env: dict[str, str]) -> None:
        if port_open("127.0.0.1", self.port):
            raise RuntimeError(f"port {self.port} for {self.name} is already in use")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            self.argv,
            env={**env, **self.extra_env},
            stdin=subprocess.DEVNULL,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            **_child_popen_options(),  # type: ignore[arg-type]
        )
        self.started_at = time.monotonic()

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait_or_kill(self, deadline: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"{self.name} did not stop in time; killing it", sys.stderr)
            self.process.kill()
            self.process.wait()
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class BrokerChild:
    """The bundled nats-server (or one node of the bundled cluster), watched like every child: a
    death is reported with its exit code and the server's last log lines, and it is started again
    with the same backoff, on the same port with the same store and configuration, so the stream,
    the durable consumers and the users are as they were and the services (nats-py reconnects
    for ever, every half second: shared/broker.py) find it where they left it."""

    name: str
    server: EmbeddedNatsServer
    started_at: float = 0.0
    restarts: int = 0
    next_start: float = 0.0

    @property
    def port(self) -> int:
        return self.server.port

    def start(self, _env: dict[str, str] | None = None) -> None:
        # The server's own start waits until it listens (tens of milliseconds).
        self.server.start(**_child_popen_options())
        self.started_at = time.monotonic()

    def exited(self) -> int | None:
        process = self.server.process
        if process is None:
            return -1  # a restart that did not listen in time (start() stopped it)
        return process.poll()

    def wait_or_kill(self, _deadline: float) -> None:
        """Nothing to wait for: exited() has reaped it."""

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.server.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


Supervised = Child | BrokerChild


@dataclass(frozen=True)
class Topology:
    """How many processes of each service, and how many NATS nodes (`cmh run`: one of each;
    `cmh cluster`: two of every service behind one gateway, a three-node JetStream cluster)."""

    replicas: int = 1
    nats_nodes: int = 1


def replica_port(settings: Settings, service: str, replica: int) -> int:
    """Replica 1 on the service's port, replica 2 a hundred above it, and so on."""
    return settings.service_port(service) + 100 * (replica - 1)


def replica_urls(settings: Settings, service: str, replicas: int) -> str:
    return ",".join(
        f"http://{settings.host}:{replica_port(settings, service, r)}" for r in range(1, replicas + 1)
    )


class Supervisor:
    def __init__(self, settings: Settings, topology: Topology | None = None) -> None:
        self.settings = settings
        self.topology = topology or Topology()
        self.var_dir = settings.var_dir.resolve()
        self.stopping = False
        self.nats: EmbeddedNatsServer | NatsCluster | None = None
        self.brokers: list[BrokerChild] = []  # the bundled nats-server's processes, watched too
        self.children: list[Child] = []
        self.env: dict[str, str] = {}
        # Made again after the bundled broker restarts (idempotent), None with an external NATS.
        self._provision: Callable[[], Awaitable[int]] | None = None
        self.demo_lines: list[str] = []
        self.dev_oidc: Child | None = None  # the development OpenID Connect provider, when started
        self.people_lines: list[str] = []

    # --- lifecycle -----------------------------------------------------------------------------

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        try:
            self._start_all()
            if not self.stopping:
                self._watch()
        except Exception as exc:
            say(f"failed: {exc or type(exc).__name__}", sys.stderr)  # some exceptions say nothing
            return 1
        finally:
            self._stop_all()
        return 0

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stopping:
            say(f"{signal.Signals(signum).name} received: stopping the suite")
        self.stopping = True

    def _start_all(self) -> None:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        nats_url = self.settings.nats_url
        env = {**os.environ, "CMH_VAR_DIR": str(self.var_dir)}
        plan = bus_plan()
        bus_update: dict[str, object] = {}
        if not nats_url:
            # The bundled broker is closed: a user per process, made under var/ (issue 18).
            credentials, config = prepare_closed_bus(
                self.var_dir / BUNDLED_BUS_DIR, plan, self.settings.stream_name
            )
            env["CMH_NATS_CREDENTIALS_DIR"] = str(credentials)
            bus_update["nats_credentials_dir"] = credentials
        if not nats_url and self.topology.nats_nodes > 1:
            self.nats = NatsCluster(
                self.var_dir / "nats-cluster", size=self.topology.nats_nodes, config_file=config
            )
            self.nats.connect_options = {"user": ADMIN, "password": read_password(credentials, ADMIN)}
            self.nats.start(**_child_popen_options())
            self.brokers = [
                BrokerChild(f"nats-node-{index}", node, started_at=time.monotonic())
                for index, node in enumerate(self.nats.nodes, start=1)
            ]
            nats_url = self.nats.url
            env["CMH_STREAM_REPLICAS"] = str(min(3, self.topology.nats_nodes))
            bus_update["stream_replicas"] = min(3, self.topology.nats_nodes)
            say(f"NATS JetStream cluster of {self.topology.nats_nodes} nodes at {nats_url}")
        elif not nats_url:
            self.nats = EmbeddedNatsServer(self.var_dir / BUNDLED_BUS_DIR, config_file=config)
            broker = BrokerChild("nats-server", self.nats)
            broker.start()
            self.brokers = [broker]
            nats_url = self.nats.url
            say(
                f"nats-server (bundled, JetStream, a user per process) at {nats_url}, store {self.nats.store_dir}"
            )
        else:
            say(f"using NATS at {nats_url}")
        env["CMH_NATS_URL"] = nats_url
        bus_settings = self.settings.model_copy(update={"nats_url": nats_url, **bus_update})
        if bus_settings.bus_closed:
            # Services may only bind to their durables: the admin makes the stream and all of them.
            durables = asyncio.run(provision_bus(bus_settings, plan))
            say(f"event bus provisioned: stream {bus_settings.stream_name}, {durables} durable consumers")
            if self.brokers:
                self._provision = lambda: provision_bus(bus_settings, plan)
        if self.topology.replicas > 1:
            # The gateway spreads requests over every replica of a service.
            for service in SERVICES:
                env[f"CMH_{service.upper()}_URL"] = replica_urls(
                    self.settings, service, self.topology.replicas
                )
        # Commands run beside the suite (e.g. `cmh reporting rebuild`) find the broker here.
        (self.var_dir / "nats.url").write_text(nats_url)
        self.env = env
        gateway_env = self._start_dev_oidc()

        say("applying migrations")
        settings = self.settings.model_copy(update={"var_dir": self.var_dir})
        asyncio.run(migrate_all(settings))
        # The gateway owns the client registry; seeding the demo clients is its business.
        from gateway.admin import demo_instructions, seed_demo_clients

        self.demo_lines = demo_instructions(settings, asyncio.run(seed_demo_clients(settings)))
        from services.registry.seed import seed_database

        seeded = asyncio.run(seed_database(settings, only_if_empty=True))
        if seeded is not None:
            say(f"registry seeded with the Lancashire and South Cumbria reference ({seeded.created} records)")
        from services.directory.seed import seed_database as seed_directory

        directory = asyncio.run(seed_directory(settings, only_if_empty=True))
        if directory is not None:
            say(
                f"directory seeded with the needs taxonomy and SAMPLE partner services ({directory.summary()})"
            )

        if self.dev_oidc is not None:
            from gateway.web.demo_people import demo_people_lines, seed_demo_people

            issuer = gateway_env["CMH_OIDC_ISSUER"]
            people = asyncio.run(seed_demo_people(settings, issuer))
            self.people_lines = demo_people_lines(
                people, f"http://{self.settings.host}:{self.settings.gateway_port}/app/"
            )
            self._wait_for_dev_oidc(issuer)

        replicas = self.topology.replicas
        processes = [
            (service, replica, replica_port(self.settings, service, replica))
            for service in SERVICES
            for replica in range(1, replicas + 1)
        ]
        processes.append(("gateway", 1, self.settings.gateway_port))
        for process, replica, port in processes:
            name = f"{process}-{replica}" if replicas > 1 and process != "gateway" else process
            child = Child(
                name=name,
                port=port,
                argv=[sys.executable, "-m", "cmh.cli", "serve", process, "--port", str(port)],
                log_path=self.var_dir / "logs" / f"{name}.log",
                extra_env=gateway_env if process == "gateway" else {},
            )
            child.start(env)
            self.children.append(child)
            say(f"{name} starting on port {port} (log: {child.log_path})")
        self._wait_until_ready()

    def _start_dev_oidc(self) -> dict[str, str]:
        """The development provider, unless the operator names one (CMH_OIDC_ISSUER): started
        as a supervised child. Returns the gateway's settings for it (none without it)."""
        from gateway.web.demo_people import DEMO_PEOPLE, DEV_OIDC_ISSUER_FILE

        issuer_file = self.var_dir / DEV_OIDC_ISSUER_FILE  # for `cmh users` beside the suite
        if self.settings.oidc_issuer or self.settings.environment == "production":
            issuer_file.unlink(missing_ok=True)
            if self.settings.oidc_issuer:
                say(f"people sign in with {self.settings.oidc_issuer}")
            else:
                say("no sign-in: production refuses the development provider; set CMH_OIDC_ISSUER")
            return {}
        port = self.settings.dev_oidc_port
        argv = [sys.executable, "-m", "oidc_provider_mock", "--host", DEV_OIDC_HOST, "--port", str(port)]
        argv.append("--require-nonce")  # the relying party sends one; a replayed ID token is refused
        for person in DEMO_PEOPLE:
            argv += ["--user-claims", json.dumps(person.claims)]
        child = Child(
            name="dev-oidc-provider", port=port, argv=argv, log_path=self.var_dir / "logs" / "dev-oidc.log"
        )
        child.start(self.env)
        self.children.append(child)
        self.dev_oidc = child
        issuer = f"http://{DEV_OIDC_HOST}:{port}"
        issuer_file.write_text(issuer)
        say(f"development OpenID Connect provider starting at {issuer} (log: {child.log_path})")
        # The development provider takes any client secret; a confidential client still sends one.
        return {
            "CMH_OIDC_ISSUER": issuer,
            "CMH_DEV_OIDC_PROVIDER": "true",
            "CMH_OIDC_CLIENT_SECRET": secrets.token_urlsafe(24),
        }

    def _wait_for_dev_oidc(self, issuer: str) -> None:
        """Until its discovery document answers (the gateway reads it as people sign in)."""
        assert self.dev_oidc is not None
        url = f"{issuer}/.well-known/openid-configuration"
        deadline = time.monotonic() + self.settings.ready_timeout_seconds
        with httpx.Client(timeout=2.0) as client:
            while not self.stopping:
                code = self.dev_oidc.exited()
                if code is not None:
                    raise RuntimeError(
                        f"{self.dev_oidc.name} exited with code {code} during start:\n{self.dev_oidc.log_tail()}"
                    )
                try:
                    response = client.get(url)
                    if response.status_code == 200 and response.json().get("issuer") == issuer:
                        return
                except (httpx.HTTPError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the development OpenID Connect provider did not answer at {url}")
                time.sleep(0.1)

    def _wait_until_ready(self) -> None:
        url = f"http://{self.settings.host}:{self.settings.gateway_port}/ready"
        deadline = time.monotonic() + self.settings.ready_timeout_seconds
        last = "no answer yet"
        with httpx.Client(timeout=2.0) as client:
            while not self.stopping:
                for child in self._supervised():
                    code = child.exited()
                    if code is not None:
                        raise RuntimeError(
                            f"{child.name} exited with code {code} during start:\n{child.log_tail()}"
                        )
                try:
                    response = client.get(url)
                    if response.status_code == 200:
                        self._announce()
                        return
                    last = response.text
                except httpx.HTTPError as exc:
                    last = type(exc).__name__
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"suite not ready after {self.settings.ready_timeout_seconds:.0f}s: {last}"
                    )
                time.sleep(0.25)

    def _announce(self) -> None:
        base = f"http://{self.settings.host}:{self.settings.gateway_port}"
        say("CMH Suite is ready")
        say(f"  gateway      {base}")
        say(f"  API docs     {base}/docs   (OpenAPI: {base}/openapi.json)")
        say(f"  readiness    {base}/ready")
        for line in self.demo_lines:
            say(f"  {line}")
        for line in self.people_lines:
            say(f"  {line}")
        say("Press Ctrl-C to stop.")

    def _supervised(self) -> list[Supervised]:
        return [*self.brokers, *self.children]

    def _watch(self) -> None:
        while not self.stopping:
            now = time.monotonic()
            for child in self._supervised():
                self._tend(child, now)
            time.sleep(0.2)

    def _tend(self, child: Supervised, now: float) -> None:
        """One look at one child: note a death (loudly, once), restart it when its backoff is over."""
        code = child.exited()
        if code is None:
            if child.restarts and now - child.started_at > STABLE_AFTER:
                child.restarts = 0
            return
        if child.next_start == 0.0:
            child.restarts += 1
            delay = min(RESTART_BACKOFF_MAX, 2 ** (child.restarts - 1))
            child.next_start = now + delay
            say(
                f"!!! {child.name} DIED (exit code {code}); restarting in {delay:.0f}s "
                f"(restart #{child.restarts}). Last log lines:\n{child.log_tail()}",
                sys.stderr,
            )
        elif now >= child.next_start and not port_open("127.0.0.1", child.port):
            child.next_start = 0.0
            child.wait_or_kill(now)
            try:
                child.start(self.env)
            except Exception as exc:
                # Still dead as far as exited() is concerned: the next try waits a longer backoff.
                say(f"!!! {child.name} did not start again: {exc}", sys.stderr)
                return
            say(f"{child.name} restarted on port {child.port}")
            if isinstance(child, BrokerChild):
                self._reprovision(child)

    def _reprovision(self, broker: BrokerChild) -> None:
        """The store normally brings the stream and the durables back with the server; should it
        have been lost with the process, the services (which may not make them on a closed bus)
        would wait for ever. Provisioning is idempotent, so it is simply done again."""
        if self._provision is None:
            return
        try:
            durables = asyncio.run(self._provision())
        except Exception as exc:
            say(f"!!! event bus not provisioned after {broker.name} restarted: {exc!r}", sys.stderr)
            return
        say(f"event bus checked after {broker.name} restarted: {durables} durable consumers")

    def _stop_all(self) -> None:
        # Gateway first (no new work), then services, broker last (relays flush to it).
        for child in reversed(self.children):
            child.stop()
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in reversed(self.children):
            child.wait_or_kill(deadline)
        if self.nats is not None:
            self.nats.stop()
        if self.children or self.nats:
            say("stopped")
