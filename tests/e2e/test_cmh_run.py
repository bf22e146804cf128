"""`cmh run` (what `make run` calls) on a fresh var directory: the bundled nats-server, SQLite,
every service and the gateway ready within 60 s, with the development OpenID Connect provider and
its demo people; a child that dies is restarted, the nats-server and the provider too; Ctrl-C
leaves no process behind."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.web.demo_people import DEMO_PEOPLE
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

        # The development provider: its issuer is the address the gateway is given, the banner says
        # where people sign in and as whom, and the demo people are mapped to it.
        check_the_development_provider(suite)

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


def discovery(issuer: str) -> dict[str, object]:
    with httpx.Client(timeout=5) as client:
        response = client.get(f"{issuer}/.well-known/openid-configuration")
    assert response.status_code == 200, response.text
    document: dict[str, object] = response.json()
    return document


def sign_in_over_http(base: str, subject: str) -> str:
    """A browser's sign-in, by hand (the session cookie is Secure: httpx's jar would not send it
    over http). Returns the home page's HTML."""
    navigate = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}
    with httpx.Client(base_url=base, timeout=10) as http:
        start = http.get("/app/sign-in/start?next=/app/", headers=navigate)
        assert start.status_code == 302, start.text
        cookie = start.headers["set-cookie"].split(";", 1)[0]
        chosen = http.post(start.headers["location"], data={"sub": subject})
        assert chosen.status_code == 302, chosen.text
        back = http.get(chosen.headers["location"], headers={**navigate, "Cookie": cookie})
        assert back.status_code == 303 and back.headers["location"] == "/app/", back.text
        cookie = back.headers["set-cookie"].split(";", 1)[0]
        home = http.get("/app/", headers={**navigate, "Cookie": cookie})
        assert home.status_code == 200, home.text
        return home.text


def check_the_development_provider(suite: RunningSuite) -> None:
    issuer = suite.oidc_issuer
    assert discovery(issuer)["issuer"] == issuer
    suite.wait_for_line("Press Ctrl-C to stop.", timeout=5)
    banner = "\n".join(
        suite.lines[next(i for i, line in enumerate(suite.lines) if "CMH Suite is ready" in line) :]
    )
    assert f"{suite.base}/app/" in banner
    for demo in DEMO_PEOPLE:
        line = next(line for line in banner.splitlines() if demo.subject in line)
        assert demo.name in line and demo.organisation in line and demo.roles[0].value in line
    with sqlite3.connect(suite.var_dir / "gateway.db") as db:
        mapped = set(db.execute("SELECT issuer, subject FROM people WHERE disabled_at IS NULL"))
    assert mapped == {(issuer, demo.subject) for demo in DEMO_PEOPLE}
    # The gateway alone is pointed at it.
    (gateway,) = suite.pids(serving="gateway")
    environ = Path(f"/proc/{gateway}/environ").read_bytes().split(b"\x00")
    assert f"CMH_OIDC_ISSUER={issuer}".encode() in environ and b"CMH_DEV_OIDC_PROVIDER=true" in environ
    (triage,) = suite.pids(serving="triage")
    assert not any(
        v.startswith(b"CMH_OIDC_ISSUER=") for v in Path(f"/proc/{triage}/environ").read_bytes().split(b"\x00")
    )

    # A demo person signs in through it (the gateway is a confidential client there).
    signed_in = sign_in_over_http(suite.base, DEMO_PEOPLE[0].subject)
    assert DEMO_PEOPLE[0].name in signed_in

    # Killed, it is reported and started again on its port: the same issuer answers.
    (provider,) = suite.pids(module="oidc_provider_mock")
    os.kill(provider, signal.SIGKILL)
    suite.wait_for_line("dev-oidc-provider DIED (exit code -9)", timeout=15)
    suite.wait_for_line("dev-oidc-provider restarted on port", timeout=30)
    deadline = time.monotonic() + 15
    while True:
        try:
            assert discovery(issuer)["issuer"] == issuer
            break
        except (httpx.HTTPError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
