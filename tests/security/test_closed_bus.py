"""The event bus is closed (issue 18 §2): a real nats-server with the suite's users and permissions.

Nobody connects without a password; each process publishes only its own subjects, reads only
through the durables the admin made for it, and hears replies only on its own inbox. The rules
are checked against the permissions generated from what every process declares it consumes, so
a new process or subscription is covered without editing this file.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import nats
import pytest
from nats.errors import Error as NatsError

from cmh.serving import bus_plan
from shared.broker import check_bus_settings, connect_bus
from shared.bus_access import ADMIN, permissions, prepare_closed_bus, read_password
from shared.consumer import MisattributedEvent, event_from, provision_bus
from shared.event_catalogue import subject_matches
from shared.events import make_event
from shared.nats_server import EmbeddedNatsServer
from shared.revocation import REVOCATION_PUBLISHER, REVOCATIONS_SUBJECT
from shared.settings import PROCESSES, Settings

STREAM = "CMH"


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[Settings]:
    credentials, config = prepare_closed_bus(tmp_path / "nats", bus_plan(), STREAM, rounds=4)
    server = EmbeddedNatsServer(tmp_path / "nats", config_file=config)
    server.start()
    try:
        settings = Settings(nats_url=server.url, nats_credentials_dir=credentials, var_dir=tmp_path)
        await provision_bus(settings, bus_plan())
        yield settings
    finally:
        server.stop()


class Violations:
    """What the server refused on one connection (it answers `-ERR Permissions Violation`)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def record(self, error: Exception) -> None:
        self.seen.append(str(error))

    async def until(self, text: str) -> bool:
        for _ in range(100):
            if any(text.lower() in seen.lower() for seen in self.seen):
                return True
            await asyncio.sleep(0.02)
        return False


async def _stored(settings: Settings) -> int:
    admin = await connect_bus(settings)
    try:
        return int((await admin.jetstream().stream_info(STREAM)).state.messages)
    finally:
        await admin.close()


async def test_a_connection_without_a_password_or_with_a_wrong_one_is_refused(bus: Settings) -> None:
    url = bus.nats_url
    assert url
    for options in (
        {},
        {"user": "triage", "password": "not-its-password"},
        {"user": "nobody", "password": "x"},
    ):
        with pytest.raises((NatsError, OSError)):
            await nats.connect(
                url, connect_timeout=2, max_reconnect_attempts=0, allow_reconnect=False, **options
            )


async def test_a_service_cannot_publish_on_another_services_subject(bus: Settings) -> None:
    violations = Violations()
    triage = await connect_bus(bus, "triage", error_cb=violations.record)
    try:
        js = triage.jetstream(timeout=1)
        forged = make_event(
            "careplan",
            "episode",
            "opened",
            {"episode_id": "forged", "referral_id": "r-1", "person_id": "p-1"},
        )
        before = await _stored(bus)
        with pytest.raises(NatsError):
            await js.publish(forged.type, forged.to_json())
        assert await violations.until("Permissions Violation for Publish")
        # A forged audit row, a handover for nobody: none of it reaches the stream.
        for service in ("gateway", "directory", "careplan"):
            await triage.publish(f"cmh.{service}.audit.recorded", b"{}")
        await triage.flush()
        # Nor a revocation snapshot (which could un-revoke a disabled client's tokens).
        await triage.publish(REVOCATIONS_SUBJECT, b'{"revoked": {}}')
        await triage.flush()
        assert await violations.until(f'Publish to "{REVOCATIONS_SUBJECT}"')
        assert await _stored(bus) == before
        # Its own subjects still work.
        own = make_event("triage", "referral", "received", {"referral_id": "r-1", "person_id": "p-1"})
        await js.publish(own.type, own.to_json())
        assert await _stored(bus) == before + 1
    finally:
        await triage.close()


async def test_a_service_reads_only_through_its_own_durables(bus: Settings) -> None:
    violations = Violations()
    triage = await connect_bus(bus, "triage", error_cb=violations.record)
    try:
        # No plain subscription to the stream's subjects, nor to another's replies.
        for subject in ("cmh.>", "cmh.careplan.episode.opened", "_INBOX.>", "_INBOX_careplan.>"):
            await triage.subscribe(subject)
            await triage.flush()
            assert await violations.until(f'Subscription to "{subject}"'), subject
        js = triage.jetstream(timeout=1)
        # It cannot make a consumer (which would choose its own filter), nor widen its own.
        with pytest.raises(NatsError):
            await js.add_consumer(STREAM, durable_name="triage-snoop", filter_subject="cmh.>")
        with pytest.raises(NatsError):
            await js.add_consumer(STREAM, durable_name="triage-discharges", filter_subject="cmh.>")
        # It cannot pull from careplan's durable; it can from its own.
        careplan_durable = next(iter(bus_plan()["careplan"]))
        stolen = await js.pull_subscribe_bind(durable=careplan_durable, stream=STREAM)
        with pytest.raises(NatsError):
            await stolen.fetch(1, timeout=1)
        own = await js.pull_subscribe_bind(durable="triage-discharges", stream=STREAM)
        with pytest.raises(nats.errors.TimeoutError):
            await own.fetch(1, timeout=0.5)  # allowed: nothing there yet
    finally:
        await triage.close()


async def test_only_the_admin_provisions_and_services_bind(bus: Settings) -> None:
    """The closed bus end to end for one durable: careplan publishes, triage's consumer of
    discharges receives it through the durable the admin made, and acknowledges it."""
    careplan = await connect_bus(bus, "careplan")
    triage = await connect_bus(bus, "triage")
    try:
        event = make_event(
            "careplan", "episode", "discharged",
            {
                "episode_id": "e-1", "referral_id": "r-1", "person_id": "p-1",
                "discharged_at": "2026-02-05T10:00:00+00:00", "reaccess_until": "2026-08-05T10:00:00+00:00",
            },
        )  # fmt: skip
        await careplan.jetstream(timeout=2).publish(event.type, event.to_json())
        pull = await triage.jetstream(timeout=2).pull_subscribe_bind(
            durable="triage-discharges", stream=STREAM
        )
        [message] = await pull.fetch(1, timeout=2)
        assert event_from(message).id == event.id
        await message.ack_sync(timeout=2)
    finally:
        await careplan.close()
        await triage.close()


def test_every_permission_is_the_processs_own() -> None:
    plan = bus_plan()
    assert set(plan) == set(PROCESSES)
    for identity, durables in plan.items():
        granted = permissions(identity, list(durables), STREAM)
        for subject in granted.publish:
            if subject == REVOCATIONS_SUBJECT:
                assert identity == REVOCATION_PUBLISHER, identity
            elif subject.startswith("cmh."):
                assert subject in (f"cmh.{identity}.>", *(f"cmh.deadletter.{d}" for d in durables)), subject
            else:
                assert subject.startswith(("$JS.API.STREAM.INFO.", "$JS.API.CONSUMER.", "$JS.ACK.")), subject
                assert "CREATE" not in subject and "DELETE" not in subject and "UPDATE" not in subject
                if subject.startswith(("$JS.API.CONSUMER.", "$JS.ACK.")):
                    assert any(f".{STREAM}.{durable}" in subject for durable in durables), subject
        assert granted.subscribe == (f"_INBOX_{identity}.>", REVOCATIONS_SUBJECT)


def test_only_the_gateway_reads_audit_events() -> None:
    for identity, durables in bus_plan().items():
        for durable, subjects in durables.items():
            for process in PROCESSES:
                audit = f"cmh.{process}.audit.recorded"
                reads = any(subject_matches(subject, audit) for subject in subjects)
                assert reads == (identity == "gateway"), (identity, durable, audit)


def test_an_event_must_be_what_its_subject_says() -> None:
    event = make_event("triage", "referral", "routed", {"referral_id": "r-1", "person_id": "p-1"})
    arrived = SimpleNamespace(subject=event.type, data=event.to_json())
    assert event_from(arrived).id == event.id  # type: ignore[arg-type]
    # Published by careplan on its own subject, claiming to be triage's.
    forged = SimpleNamespace(subject="cmh.careplan.episode.opened", data=event.to_json())
    with pytest.raises(MisattributedEvent):
        event_from(forged)  # type: ignore[arg-type]
    lying_source = event.model_copy(update={"source": "/cmh/careplan"})
    with pytest.raises(MisattributedEvent):
        event_from(SimpleNamespace(subject=event.type, data=lying_source.to_json()))  # type: ignore[arg-type]


def test_production_refuses_an_open_bus_or_one_without_tls(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="closed bus"):
        check_bus_settings(Settings(environment="production", nats_url="nats://nats:4222"))
    with pytest.raises(RuntimeError, match="TLS"):
        check_bus_settings(
            Settings(environment="production", nats_url="nats://nats:4222", nats_credentials_dir=tmp_path)
        )
    check_bus_settings(
        Settings(environment="production", nats_url="tls://nats:4222", nats_credentials_dir=tmp_path)
    )


def test_passwords_are_random_private_and_kept(tmp_path: Path) -> None:
    first, config = prepare_closed_bus(tmp_path, bus_plan(), STREAM, rounds=4)
    again, _ = prepare_closed_bus(tmp_path, bus_plan(), STREAM, rounds=4)
    passwords = {identity: read_password(first, identity) for identity in (ADMIN, *PROCESSES)}
    assert passwords == {identity: read_password(again, identity) for identity in passwords}
    assert len(set(passwords.values())) == len(passwords)
    assert all(len(value) >= 40 for value in passwords.values())
    for path in (*first.iterdir(), config):
        assert path.stat().st_mode & 0o077 == 0, path
    # The server's configuration holds hashes only.
    text = config.read_text()
    assert not any(value in text for value in passwords.values())


async def test_cmh_bus_prepare_makes_the_users_for_a_server_of_ones_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cmh bus prepare --dir DIR` (deploy/compose.yaml's bus-credentials job): private password
    files for the admin and every process, kept on a second run, and a server configuration with
    their hashes that a nats-server loads and lets each process in with."""
    import json

    from cmh.cli import main

    directory = tmp_path / "bus"
    assert main(["bus", "prepare", "--dir", str(directory)]) == 0
    credentials, config = directory / "credentials", directory / "auth.json"
    assert str(credentials) in capsys.readouterr().out
    assert sorted(p.name for p in credentials.iterdir()) == sorted(
        f"{identity}.password" for identity in (ADMIN, *PROCESSES)
    )
    assert credentials.stat().st_mode & 0o777 == 0o700
    for path in (*credentials.iterdir(), config):
        assert path.stat().st_mode & 0o777 == 0o600, path
    passwords = {identity: read_password(credentials, identity) for identity in (ADMIN, *PROCESSES)}
    users = json.loads(config.read_text())["authorization"]["users"]
    assert sorted(user["user"] for user in users) == sorted(passwords)
    assert not any(value in config.read_text() for value in passwords.values())

    assert main(["bus", "prepare", "--dir", str(directory)]) == 0  # every `docker compose up`
    assert passwords == {identity: read_password(credentials, identity) for identity in passwords}

    server = EmbeddedNatsServer(tmp_path / "server", config_file=config)
    server.start()
    try:
        settings = Settings(nats_url=server.url, nats_credentials_dir=credentials, var_dir=tmp_path)
        connection = await connect_bus(settings, "triage")
        await connection.close()
        with pytest.raises((NatsError, OSError)):
            await nats.connect(server.url, connect_timeout=2, max_reconnect_attempts=0, allow_reconnect=False)
    finally:
        server.stop()
