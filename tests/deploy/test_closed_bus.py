"""issue 18 §2 on Kubernetes: the closed event bus, with TLS.

Each process's pods hold only their own NATS password (one Secret per identity, mounted as the
`<identity>.password` file shared/bus_access.py reads), the migration Job alone holds the admin's
and runs `cmh bus provision` with it, every pod trusts the NATS servers' CA, production's settings
pass `check_bus_settings`, and the NATS release (nats-values.yaml, nats-tls.yaml) loads the users
that `cmh bus authorization` writes and serves clients over TLS under the name the suite dials.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from shared import broker
from shared.broker import check_bus_settings, connect_options
from shared.bus_access import ADMIN, password_file
from shared.settings import PROCESSES as SERVED
from shared.settings import check_production
from tests.deploy.kustomize import KUBERNETES, MIGRATE_JOB, PRODUCTION, ROOT, Build, containers, pod_spec
from tests.deploy.test_manifests import (
    BUS_IDENTITIES,
    NATS_URL,
    PROCESSES,
    container_of,
    env_of,
    load_generator,
    settings_from,
)

CA_CONFIG_MAP = "cmh-nats-ca"
NATS_CONFIG = "/etc/nats-config/nats.conf"  # the chart's main configuration file


def nats_values() -> dict[str, Any]:
    return yaml.safe_load((KUBERNETES / "nats-values.yaml").read_text())


def nats_tls() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((KUBERNETES / "nats-tls.yaml").read_text()) if doc]


def bus_secret_volumes(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The pod's volumes holding any NATS password: Secret volumes named cmh-nats-*, and any
    projected source of one (none is expected)."""
    found = {}
    for volume in spec["volumes"]:
        sources = [volume.get("secret")] + [
            s.get("secret") for s in volume.get("projected", {}).get("sources", [])
        ]
        if any(source and source["secretName"].startswith("cmh-nats-") for source in sources):
            found[volume["name"]] = volume
    return found


def mounts_of(container: dict[str, Any], volume: str) -> list[dict[str, Any]]:
    return [mount for mount in container.get("volumeMounts", []) if mount["name"] == volume]


def check_own_password(spec: dict[str, Any], container: dict[str, Any], identity: str) -> None:
    """The pod has one volume with a NATS password: the identity's own Secret, its one key as
    `<identity>.password`, mounted read-only (whole directory, no subPath) at the container's
    CMH_NATS_CREDENTIALS_DIR, which is where shared/broker.py then looks for it."""
    volumes = bus_secret_volumes(spec)
    assert len(volumes) == 1, volumes
    ((name, volume),) = volumes.items()
    assert volume["secret"] == {
        "secretName": f"cmh-nats-{identity}",
        "items": [{"key": "password", "path": f"{identity}.password"}],
    }
    (mount,) = mounts_of(container, name)
    assert mount["readOnly"] is True and "subPath" not in mount
    (directory,) = [e["value"] for e in container["env"] if e["name"] == "CMH_NATS_CREDENTIALS_DIR"]
    assert mount["mountPath"] == directory
    assert password_file(Path(directory), identity) == Path(directory) / volume["secret"]["items"][0]["path"]
    # And not as a variable either.
    assert not [
        e
        for e in container["env"]
        if e.get("valueFrom", {}).get("secretKeyRef", {}).get("name", "").startswith("cmh-nats-")
    ]


def check_trusts_the_ca(spec: dict[str, Any], container: dict[str, Any], ca_file: Path | None) -> None:
    """CMH_NATS_TLS_CA_FILE is the `ca.crt` of the ConfigMap cmh-nats-ca, mounted read-only."""
    assert ca_file is not None
    (volume,) = [v for v in spec["volumes"] if v.get("configMap", {}).get("name") == CA_CONFIG_MAP]
    (mount,) = mounts_of(container, volume["name"])
    assert mount["readOnly"] is True
    assert Path(mount["mountPath"]) == ca_file.parent
    assert volume["configMap"]["items"] == [{"key": "ca.crt", "path": ca_file.name}]


# --- identities -------------------------------------------------------------------------------------


def test_the_bus_identities_are_the_admin_and_every_process(production: Build) -> None:
    """The generator, the overlay's Secrets and the password files are for exactly `admin` and the
    processes `cmh serve` runs; each Secret comes from an ignored file under secrets/nats/, so that
    the same directory feeds `cmh bus authorization --credentials`."""
    identities = tuple(load_generator().bus_identities())
    assert identities == ("admin", *SERVED)  # shared/settings.py PROCESSES: what `cmh serve` runs
    assert identities == BUS_IDENTITIES
    made = {
        s["metadata"]["name"]
        for s in production.of_kind("Secret")
        if s["metadata"]["name"].startswith("cmh-nats-")
    }
    assert made == {f"cmh-nats-{identity}" for identity in BUS_IDENTITIES}
    files = {
        path.relative_to(PRODUCTION)
        for path in production.missing_files + production.files_read
        if path.is_relative_to(PRODUCTION)
    }
    for identity in BUS_IDENTITIES:
        assert Path("secrets", "nats", f"{identity}.password") in files
        assert set(production.get("Secret", f"cmh-nats-{identity}")["data"]) == {"password"}


# --- the pods ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_a_process_mounts_its_own_nats_password_and_no_other(
    rendered: Build, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = rendered.get("Deployment", name)
    spec = deployment["spec"]["template"]["spec"]
    container = container_of(deployment)
    check_own_password(spec, container, name)
    settings = settings_from(env_of(rendered, container), monkeypatch)
    assert settings.bus_closed
    check_trusts_the_ca(spec, container, settings.nats_tls_ca_file)


def test_no_two_pods_share_a_nats_password(rendered: Build) -> None:
    """Across every pod: each cmh-nats-* Secret is mounted by one workload only, the admin's by
    the migration Job."""
    holders: dict[str, list[str]] = {}
    for obj in rendered.objects:
        spec = pod_spec(obj)
        for volume in bus_secret_volumes(spec).values() if spec else []:
            holders.setdefault(volume["secret"]["secretName"], []).append(obj["metadata"]["name"])
    assert holders == {
        "cmh-nats-admin": [MIGRATE_JOB],
        **{f"cmh-nats-{name}": [name] for name in PROCESSES},
    }


def test_the_migration_job_provisions_the_bus_as_the_admin_only(
    rendered: Build, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cmh bus provision` runs after the migrations and grants, as an init container of its own:
    it alone mounts the admin's password, and it holds no database URL."""
    job = rendered.get("Job", MIGRATE_JOB)
    spec = pod_spec(job)
    assert spec is not None
    names = [c["name"] for c in spec["initContainers"]]
    assert names.index("bus") > names.index("migrate")
    (bus,) = [c for c in containers(job) if c["name"] == "bus"]
    assert bus["args"] == ["bus", "provision"]
    check_own_password(spec, bus, ADMIN)
    assert [e["name"] for e in bus["env"]] == ["CMH_NATS_CREDENTIALS_DIR"]
    (volume,) = bus_secret_volumes(spec)
    assert [c["name"] for c in containers(job) if mounts_of(c, volume)] == ["bus"]
    settings = settings_from(env_of(rendered, bus), monkeypatch)
    check_trusts_the_ca(spec, bus, settings.nats_tls_ca_file)


def test_production_settings_satisfy_the_closed_bus_check(
    production: Build, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every pod that connects to NATS (the processes and the Job's bus step), with production's
    settings: `check_bus_settings` passes (closed, TLS), and the connection would be made as its
    own user, over TLS, to the Service named in the certificate."""
    pods = [(name, container_of(production.get("Deployment", name))) for name in PROCESSES]
    job = production.get("Job", MIGRATE_JOB)
    pods += [(ADMIN, c) for c in containers(job) if c["name"] == "bus"]
    monkeypatch.setattr(broker, "read_password", lambda d, i: f"<{i}'s password in {d}>")
    monkeypatch.setattr(
        broker, "ssl", SimpleNamespace(create_default_context=lambda cafile: f"<TLS trusting {cafile}>")
    )
    for identity, container in pods:
        settings = settings_from(env_of(production, container), monkeypatch)
        assert settings.environment == "production"
        check_bus_settings(settings)
        check_production(settings)  # the public address is set (issue 20)
        assert settings.nats_url == NATS_URL
        directory = settings.nats_credentials_dir
        assert directory is not None
        options = connect_options(settings, identity)
        assert options["user"] == identity
        assert options["password"] == f"<{identity}'s password in {directory}>"
        assert options["tls"] == f"<TLS trusting {settings.nats_tls_ca_file}>"
    ca = production.get("ConfigMap", CA_CONFIG_MAP)
    assert set(ca["data"]) == {"ca.crt"}
    assert PRODUCTION / "secrets" / "nats-ca.crt" in production.missing_files + production.files_read


def test_the_settings_dial_nats_over_tls() -> None:
    lines = (KUBERNETES / "base" / "settings.env").read_text().splitlines()
    settings = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert settings["CMH_NATS_URL"] == NATS_URL
    assert all(url.startswith("tls://") for url in settings["CMH_NATS_URL"].split(","))
    assert settings["CMH_NATS_TLS_CA_FILE"].endswith("/ca.crt")


# --- the NATS release -------------------------------------------------------------------------------


def json_patch_adds(patches: list[dict[str, Any]], path: str) -> list[dict[str, Any]]:
    assert all(patch["op"] == "add" for patch in patches)
    return [patch["value"] for patch in patches if patch["path"] == path]


def test_nats_values_include_the_authorization_from_its_secret() -> None:
    """config.merge's `$include` (the chart writes `include <path>;` into nats.conf, and NATS
    resolves it beside that file) lands in the mount that container.patch adds, of the volume that
    podTemplate.patch adds from the Secret the README makes; under /etc/, which the chart's
    reloader mounts too, so that a new Secret is applied without a restart."""
    values = nats_values()
    include = values["config"]["merge"]["$include"]
    path = posixpath.normpath(posixpath.join(posixpath.dirname(NATS_CONFIG), include))
    (mount,) = [
        m
        for m in json_patch_adds(values["container"]["patch"], "/volumeMounts/-")
        if m["mountPath"] == posixpath.dirname(path)
    ]
    assert mount["readOnly"] is True and mount["mountPath"].startswith("/etc/")
    (volume,) = [
        v
        for v in json_patch_adds(values["podTemplate"]["patch"], "/spec/volumes/-")
        if v["name"] == mount["name"]
    ]
    secret = volume["secret"]["secretName"]
    readme = (ROOT / "deploy" / "README.md").read_text()
    command = f"kubectl -n nats create secret generic {secret} --from-file={posixpath.basename(path)}="
    assert command in readme, command
    assert "cmh bus authorization --credentials" in readme


def test_nats_values_enable_tls_with_the_certificate_for_the_service() -> None:
    """Client TLS from the Secret cert-manager makes (nats-tls.yaml), whose certificate names the
    host of CMH_NATS_URL and is signed by the CA the overlay hands to the pods; the servers
    advertise no other address (the chart's default, kept), so clients never dial a name outside it."""
    values = nats_values()
    tls = values["config"]["nats"]["tls"]
    assert tls["enabled"] is True
    assert values["config"]["cluster"].get("noAdvertise", True) is True
    documents = nats_tls()
    assert {d["metadata"]["namespace"] for d in documents} == {"nats"}
    certificates = {d["metadata"]["name"]: d["spec"] for d in documents if d["kind"] == "Certificate"}
    issuers = {d["metadata"]["name"]: d["spec"] for d in documents if d["kind"] == "Issuer"}
    (server,) = [c for c in certificates.values() if c["secretName"] == tls["secretName"]]
    assert urlsplit(NATS_URL).hostname in server["dnsNames"]
    assert "server auth" in server["usages"]
    ca_secret = issuers[server["issuerRef"]["name"]]["ca"]["secretName"]
    (ca,) = [c for c in certificates.values() if c["secretName"] == ca_secret]
    assert ca["isCA"] is True
    readme = (ROOT / "deploy" / "README.md").read_text()
    assert f"kubectl -n nats get secret {ca_secret}" in readme  # how the overlay's CA file is made
