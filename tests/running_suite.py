"""`cmh run` (what `make run` calls) started by a test: the embedded topology (the bundled
nats-server supervised by `cmh/supervisor.py`, SQLite files under the var directory, every service
and the gateway) on free ports, with its output kept, and every process it started found again by
the var directory in its environment (so a test can kill one, and nothing outlives the test)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx

from shared.nats_server import free_port
from shared.settings import SERVICES


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
    def __init__(self, var_dir: Path, env: Mapping[str, str] | None = None) -> None:
        """`env`: CMH_ settings for the suite beyond its ports and var dir (none by default: the
        suite as `make run` starts it)."""
        self.var_dir = var_dir
        # The development OpenID Connect provider `cmh run` starts too (CMH_DEV_OIDC_PORT).
        self.ports = {name: free_port() for name in (*SERVICES, "gateway", "dev_oidc")}
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("CMH_") or key == "CMH_TEST_DATABASE_URL"
        }
        self.env.update(env or {})
        self.env.update({f"CMH_{name.upper()}_PORT": str(port) for name, port in self.ports.items()})
        self.env["CMH_VAR_DIR"] = str(var_dir)
        self.marker = f"CMH_VAR_DIR={var_dir}"
        self.lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    @property
    def oidc_issuer(self) -> str:
        """The development provider's issuer (where `cmh run` starts it)."""
        return f"http://127.0.0.1:{self.ports['dev_oidc']}"

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

    def printed(self, text: str, *, after: int = 0) -> bool:
        """Whether a line holding `text` was printed (among the lines from index `after` on)."""
        return any(text in line for line in self.lines[after:])

    def wait_for_line(self, text: str, timeout: float, *, after: int = 0) -> float:
        """Until a line holding `text` is printed (among the lines from index `after` on)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.printed(text, after=after):
                return time.monotonic() - started
            assert self.process is not None
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not printed; output:\n" + "\n".join(self.lines))

    def demo_secrets(self) -> dict[str, str]:
        """The demo clients' secrets `cmh run` wrote (and printed)."""
        secrets: dict[str, str] = json.loads((self.var_dir / "demo-clients.json").read_text())
        return secrets

    def pids(
        self, *, serving: str | None = None, executable: str | None = None, module: str | None = None
    ) -> list[int]:
        """The suite's live processes serving one service, running one executable, or one Python
        module (`python -m MODULE`)."""
        found = []
        for pid in processes_with_env(self.marker):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\x00")
            except OSError:
                continue
            serves = serving is not None and b"serve" in argv and serving.encode() in argv
            runs = module is not None and argv[1:3] == [b"-m", module.encode()]
            if serves or runs or (executable is not None and argv[0].endswith(executable.encode())):
                found.append(pid)
        return found

    def stop(self, sig: int = signal.SIGINT) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=40)

    def kill_everything(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
        for pid in processes_with_env(self.marker):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextmanager
def running_suite(var_dir: Path, env: Mapping[str, str] | None = None) -> Iterator[RunningSuite]:
    """`cmh run` started, and killed with everything it started when the block ends."""
    running = RunningSuite(var_dir, env)
    running.start()
    try:
        yield running
    finally:
        running.kill_everything()


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
