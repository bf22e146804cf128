"""deploy/compose.yaml: valid against the Compose Specification's JSON schema (vendored, see
README.md here), and the suite's contract kept: PostgreSQL with a health check, three routed
JetStream servers, a one-shot migration the processes wait for, two replicas of every process
with a readiness check on its port, settings that are real Settings fields and name real
services, the pseudonym key from a file secret, and a closed event bus (a one-shot job making the
NATS users, servers loading them, every process connecting as its own). No Docker needed.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from shared.broker import check_bus_settings, connect_options
from shared.bus_access import ADMIN, password_file
from shared.settings import DEFAULT_SERVICE_PORTS, SERVICES, Settings

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
SERVICES_ = COMPOSE["services"]
PROCESSES = {"gateway": Settings.model_fields["gateway_port"].default, **DEFAULT_SERVICE_PORTS}
NATS_NODES = ("nats-1", "nats-2", "nats-3")
PSEUDONYM_SECRET = "reporting_pseudonym_key"
BUS_JOB = "bus-credentials"
BUS_VOLUME = "nats-bus"


def flags(command: list[str]) -> dict[str, str]:
    """`--name=value` arguments of a NATS server as a dict."""
    parsed = {}
    for argument in command:
        name, _, value = argument.removeprefix("--").partition("=")
        parsed[name] = value
    return parsed


def settings_from(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in Settings.model_fields:
        monkeypatch.delenv(f"CMH_{name.upper()}", raising=False)
    for name, value in env.items():
        if name.startswith("CMH_"):
            monkeypatch.setenv(name, str(value))
    return Settings()


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """A service's volumes in the short syntax, target → (source, mode: "rw" or "ro")."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        assert mode in ([], ["ro"]), volume
        found[target] = (source, mode[0] if mode else "rw")
    return found


def bus_mount(service: dict[str, Any]) -> tuple[str, str]:
    """Where a service has the bus volume: (target, mode)."""
    (found,) = [(target, mode) for target, (source, mode) in mounts(service).items() if source == BUS_VOLUME]
    return found


def serve_command(name: str) -> list[str]:
    """The `cmh` arguments a process's containers run (reporting's go through a shell)."""
    service = SERVICES_[name]
    if service.get("entrypoint") == ["/bin/sh", "-c"]:
        (script,) = service["command"]
        words = shlex.split(script)
        assert words[words.index("exec") + 1] == "cmh"
        return words[words.index("exec") + 2 :]
    assert "entrypoint" not in service  # the image's: cmh
    return list(service["command"])


def test_valid_against_the_compose_specification() -> None:
    schema = json.loads((Path(__file__).parent / "compose-spec.json").read_text())
    # The schema names draft 2019-09 in a spelling jsonschema does not look up (a trailing "#").
    assert schema["$schema"].startswith("http://json-schema.org/draft/2019-09/schema")
    jsonschema.Draft201909Validator.check_schema(schema)
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(COMPOSE), key=lambda e: list(e.path))
    assert [f"{list(e.path)}: {e.message}" for e in errors] == []


def test_three_jetstream_servers_routed_to_each_other() -> None:
    cluster_names = set()
    for node in NATS_NODES:
        service = SERVICES_[node]
        assert service["image"].startswith("nats:2.")  # the minor version: test_versions.py
        options = flags(service["command"])
        assert options["server_name"] == node
        assert "jetstream" in options
        cluster_names.add(options["cluster_name"])
        assert options["cluster"] == "nats://0.0.0.0:6222"
        routes = {re.fullmatch(r"nats://([\w-]+):6222", r)[1] for r in options["routes"].split(",")}
        assert routes == set(NATS_NODES) - {node}
        # The store on a volume of its own.
        source, mode = mounts(service)[options["store_dir"]]
        assert source in COMPOSE["volumes"] and mode == "rw"
    assert cluster_names == {"cmh"}
    stores = {mounts(SERVICES_[node])[flags(SERVICES_[node]["command"])["store_dir"]] for node in NATS_NODES}
    assert len(stores) == 3


def test_postgres_has_a_volume_and_a_health_check() -> None:
    postgres = SERVICES_["postgres"]
    assert postgres["image"].startswith("postgres:15")  # CI's (test_versions.py), a digest at most
    assert postgres["healthcheck"]["test"][0] == "CMD-SHELL"
    assert postgres["healthcheck"]["test"][1].startswith("pg_isready")
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])


def migrate_steps() -> list[str]:
    """The `cmh` commands of migrate's script, in order (`$$` is Compose's escape of `$`)."""
    entrypoint = SERVICES_["migrate"]["entrypoint"]
    assert entrypoint[:2] == ["/bin/sh", "-c"] and len(entrypoint) == 3
    return re.findall(r"\bcmh [a-z]+(?: [a-z]+)?", entrypoint[2])


def test_migrate_runs_once_before_every_process() -> None:
    migrate = SERVICES_["migrate"]
    assert migrate_steps() == ["cmh migrate", "cmh bus provision", "cmh seed"]
    assert migrate["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        BUS_JOB: {"condition": "service_completed_successfully"},
        **{node: {"condition": "service_started"} for node in NATS_NODES},
    }
    assert migrate["restart"] == "no"
    assert "deploy" not in migrate  # once, not once per replica
    for name in PROCESSES:
        depends_on = SERVICES_[name]["depends_on"]
        assert depends_on["migrate"] == {"condition": "service_completed_successfully"}
        assert depends_on[BUS_JOB] == {"condition": "service_completed_successfully"}
        for node in NATS_NODES:
            assert depends_on[node] == {"condition": "service_started"}  # no shell in the nats image


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_two_replicas_serving_on_the_process_port(name: str) -> None:
    service = SERVICES_[name]
    port = PROCESSES[name]
    assert service["deploy"]["replicas"] == 2
    assert serve_command(name) == ["serve", name, "--port", str(port)]
    assert service["image"] == SERVICES_["migrate"]["image"]
    assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert service["stop_grace_period"] == "30s"
    assert service["read_only"] is True and service["tmpfs"] == ["/tmp"]
    assert service["cap_drop"] == ["ALL"]
    assert "ports" not in service and "container_name" not in service  # replicas must not clash
    # Healthy means ready (database and NATS; the gateway's: every service too).
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD"
    assert f"http://127.0.0.1:{port}/ready" in " ".join(test)


def test_the_gateway_starts_when_the_services_are_healthy() -> None:
    depends_on = SERVICES_["gateway"]["depends_on"]
    for service in SERVICES:
        assert depends_on[service] == {"condition": "service_healthy"}


def test_one_published_port_in_front_of_the_gateway_replicas() -> None:
    published = {name: service["ports"] for name, service in SERVICES_.items() if "ports" in service}
    assert published == {"edge": ["8000:8000"]}
    assert SERVICES_["edge"]["depends_on"] == {"gateway": {"condition": "service_healthy"}}
    (mount,) = SERVICES_["edge"]["volumes"]
    config = (DEPLOY / mount.split(":")[0]).read_text()
    assert "listen 8000;" in config
    assert "set $gateway http://gateway:8000;" in config and "proxy_pass $gateway;" in config


def test_every_cmh_variable_is_a_setting() -> None:
    variables = set(COMPOSE["x-cmh-env"])
    for service in SERVICES_.values():
        environment = service.get("environment", {})
        assert isinstance(environment, dict)
        variables |= set(environment)
    cmh = sorted(v for v in variables if v.startswith("CMH_"))
    assert [v for v in cmh if v.removeprefix("CMH_").lower() not in Settings.model_fields] == []


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_settings_name_the_compose_services(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(SERVICES_[name]["environment"], monkeypatch)  # also: every value parses
    for service in SERVICES:
        assert service in SERVICES_
        assert settings.service_url(service) == f"http://{service}:{PROCESSES[service]}"
    assert settings.effective_jwks_url() == f"http://gateway:{PROCESSES['gateway']}/.well-known/jwks.json"
    assert sorted(settings.nats_url.split(",")) == [f"nats://{node}:4222" for node in NATS_NODES]
    assert settings.stream_replicas == 3
    assert settings.host == "0.0.0.0"
    assert settings.database_url_for(name).startswith("postgresql+asyncpg://")
    assert "@postgres:5432/" in settings.database_url_for(name)


def test_database_connections_fit_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    command = SERVICES_["postgres"]["command"]
    max_connections = int(command[command.index("-c") + 1].split("=")[1])
    needed = 0
    for name in PROCESSES:
        settings = settings_from(SERVICES_[name]["environment"], monkeypatch)
        needed += SERVICES_[name]["deploy"]["replicas"] * 2 * settings.database_pool_size
    assert needed + 20 <= max_connections


def test_the_pseudonym_key_is_a_file_secret_for_reporting_only() -> None:
    holders = [name for name, service in SERVICES_.items() if "secrets" in service]
    assert sorted(holders) == ["gateway", "reporting"]  # the gateway for its KEK (below)
    assert SERVICES_["reporting"]["secrets"] == [PSEUDONYM_SECRET]
    (script,) = SERVICES_["reporting"]["command"]
    assert f'CMH_REPORTING_PSEUDONYM_KEY="$$(cat /run/secrets/{PSEUDONYM_SECRET})"' in script
    source = Path(COMPOSE["secrets"][PSEUDONYM_SECRET]["file"])
    assert source.parts[0] == "secrets"
    assert "secrets/" in (DEPLOY / ".gitignore").read_text().splitlines()  # never committed


def test_the_gateway_kek_is_a_file_secret_for_the_gateway_only() -> None:
    """issue 18 §5: both gateway replicas open the signing keys with one KEK, never committed."""
    gateway = SERVICES_["gateway"]
    assert gateway["secrets"] == ["gateway_key_encryption_key"]
    assert gateway["environment"]["CMH_KEY_ENCRYPTION_KEY_FILE"] == "/run/secrets/gateway_key_encryption_key"
    assert Path(COMPOSE["secrets"]["gateway_key_encryption_key"]["file"]).parts[0] == "secrets"
    assert all(
        "CMH_KEY_ENCRYPTION_KEY_FILE" not in service.get("environment", {})
        for name, service in SERVICES_.items()
        if name != "gateway"
    )


# --- the closed bus -------------------------------------------------------------------------------


def test_a_one_shot_job_makes_the_bus_users_on_their_volume() -> None:
    """`cmh bus prepare` writes `<dir>/credentials/<identity>.password` (kept) and `<dir>/auth.json`
    (the servers' users) onto the bus volume, once per `up`, with no network; root only for the new
    volume's sake, with the capabilities to write it and hand the passwords to the image's user."""
    job = SERVICES_[BUS_JOB]
    assert job["image"] == SERVICES_["migrate"]["image"] and job["build"] == SERVICES_["migrate"]["build"]
    assert job["restart"] == "no" and "deploy" not in job and "depends_on" not in job
    assert job["entrypoint"][:2] == ["/bin/sh", "-c"]
    steps = [shlex.split(step) for step in job["entrypoint"][2].split("&&")]
    assert steps == [
        ["cmh", "bus", "prepare", "--dir", "/bus"],
        ["chown", "-R", "10001:10001", "/bus/credentials"],  # deploy/Dockerfile: USER 10001:10001
    ]
    assert "USER 10001:10001" in (DEPLOY / "Dockerfile").read_text()
    assert bus_mount(job) == ("/bus", "rw")
    assert BUS_VOLUME in COMPOSE["volumes"]
    assert job["network_mode"] == "none"
    assert job["user"] == "0:0"
    assert job["cap_drop"] == ["ALL"] and sorted(job["cap_add"]) == ["CHOWN", "DAC_OVERRIDE", "FOWNER"]
    assert job["read_only"] is True and job["security_opt"] == ["no-new-privileges:true"]
    assert "ports" not in job and "secrets" not in job


@pytest.mark.parametrize("node", NATS_NODES)
def test_the_nats_servers_load_the_users_once_they_are_made(node: str) -> None:
    service = SERVICES_[node]
    assert service["depends_on"] == {BUS_JOB: {"condition": "service_completed_successfully"}}
    target, mode = bus_mount(service)
    assert mode == "ro"
    assert flags(service["command"])["config"] == f"{target}/auth.json"  # where `bus prepare` puts it
    # Only the job writes the volume.
    writers = [
        name for name, other in SERVICES_.items() if BUS_VOLUME in {s for s, _ in mounts(other).values()}
    ]
    assert [name for name in writers if bus_mount(SERVICES_[name])[1] == "rw"] == [BUS_JOB]


@pytest.mark.parametrize("name", sorted({*PROCESSES, "migrate"}))
def test_every_bus_client_connects_as_its_own_user(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """CMH_NATS_CREDENTIALS_DIR is the credentials folder of the bus volume, mounted read-only;
    each process dials as itself, migrate's `cmh bus provision` as the admin. No TLS: compose is
    the development topology, which `check_bus_settings` allows (production would refuse it)."""
    service = SERVICES_[name]
    settings = settings_from(service["environment"], monkeypatch)
    assert settings.bus_closed
    target, mode = bus_mount(service)
    assert mode == "ro"
    directory = settings.nats_credentials_dir
    assert directory == Path(target) / "credentials"  # `cmh bus prepare --dir`'s layout
    assert settings.environment == "development" and settings.nats_tls_ca_file is None
    check_bus_settings(settings)
    identity = ADMIN if name == "migrate" else name
    monkeypatch.setattr("shared.broker.read_password", lambda d, i: f"<{password_file(d, i)}>")
    options = connect_options(settings, identity)
    assert options["user"] == identity
    assert options["password"] == f"<{directory / f'{identity}.password'}>"


def test_no_service_runs_in_production_mode_without_tls() -> None:
    """Compose speaks plain NATS, so nothing in it may claim production (which requires TLS)."""
    for name, service in SERVICES_.items():
        assert service.get("environment", {}).get("CMH_ENVIRONMENT", "development") != "production", name
    assert "CMH_ENVIRONMENT" not in COMPOSE["x-cmh-env"]
