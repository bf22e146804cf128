"""The Kubernetes manifests: every object valid against Kubernetes' own schemas, and the suite's
contract kept: one Deployment, Service, autoscaler and disruption budget per process, probes on
the process's port, settings that are real Settings fields and point at real Services, secrets
that exist, and generated files that are up to date.

No kustomize binary and no cluster: `tests/deploy/kustomize.py` builds the kustomizations and
`kubernetes-validate` (Kubernetes' OpenAPI schemas, bundled) checks each object.
"""

from __future__ import annotations

import importlib.util
import tomllib
from types import ModuleType
from typing import Any

import kubernetes_validate
import pytest
import yaml
from sqlalchemy.engine import make_url

from shared.bus_access import ADMIN
from shared.settings import DEFAULT_SERVICE_PORTS, SERVICES, Settings
from shared.settings import PROCESSES as SETTINGS_PROCESSES
from tests.deploy.kustomize import (
    BASE,
    KUBERNETES,
    ROOT,
    Build,
    containers,
    pod_spec,
    split_image,
)

# The oldest Kubernetes minor the manifests must be valid for (its schemas ship in the package).
KUBERNETES_VERSION = "1.30"
PROCESSES = {"gateway": Settings.model_fields["gateway_port"].default, **DEFAULT_SERVICE_PORTS}
assert set(PROCESSES) == {"gateway", *SERVICES}
# Custom resources of operators the suite relies on: kubernetes-validate has no schema for them.
CUSTOM_KINDS = {("postgresql.cnpg.io/v1", "Cluster")}
NATS_URL = "tls://nats.nats.svc.cluster.local:4222"  # release `nats`, namespace `nats`, TLS
# Every NATS user of the closed bus (issue 18 §2): the admin and each process.
BUS_IDENTITIES = (ADMIN, *SETTINGS_PROCESSES)
assert set(SETTINGS_PROCESSES) == set(PROCESSES)
# Secrets that every overlay makes for its environment (the base only refers to them): the
# pseudonym key, the gateway's KEK, (issue 18 §5) the password of each process's database role and
# (§2) the NATS password of each bus identity.
DATABASE_ROLE_SECRETS = {f"cmh-db-{name}" for name in PROCESSES}
NATS_SECRETS = {f"cmh-nats-{identity}" for identity in BUS_IDENTITIES}
OVERLAY_SECRETS = {"cmh-reporting", "cmh-gateway", *DATABASE_ROLE_SECRETS, *NATS_SECRETS}
# ... and the one ConfigMap: the CA of the NATS servers' certificate.
OVERLAY_CONFIG_MAPS = {"cmh-nats-ca"}
# Not a CMH_ setting, but libpq's (asyncpg reads it when the URL has no password): the role's
# password, kept out of the URL so that the URL is no secret.
PASSWORD_VARIABLE = "PGPASSWORD"


def is_overlay(build_: Build) -> bool:
    return build_.root != BASE


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cmh_deploy_generate", KUBERNETES / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def container_of(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def env_of(build_: Build, container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet would make it (secrets as placeholders)."""
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        config_map = build_.get("ConfigMap", source["configMapRef"]["name"])
        values |= config_map["data"]
    for variable in container.get("env", []):
        values[variable["name"]] = variable.get("value", f"<{variable['name']} from a Secret>")
    return values


def settings_field(variable: str) -> str | None:
    if not variable.startswith("CMH_"):
        return None
    name = variable.removeprefix("CMH_").lower()
    return name if name in Settings.model_fields else None


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for variable in list(Settings.model_fields):
        monkeypatch.delenv(f"CMH_{variable.upper()}", raising=False)
    for variable, value in env.items():
        if variable.startswith("CMH_") and "from a Secret" not in value:
            monkeypatch.setenv(variable, value)
    return Settings()


# --- files and schemas ---------------------------------------------------------------------------


def test_every_file_of_the_kustomizations_is_read(base: Build, production: Build) -> None:
    """A YAML file under deploy/kubernetes that no kustomization reads is dead (or forgotten)."""
    read = {path.resolve() for path in [*base.files_read, *production.files_read]}
    # Helm values and cert-manager objects for the NATS release, not kustomize input.
    read |= {KUBERNETES / "nats-values.yaml", KUBERNETES / "nats-tls.yaml"}
    on_disk = {
        path.resolve()
        for pattern in ("*.yaml", "*.env")
        for path in KUBERNETES.rglob(pattern)
        if "secrets" not in path.parts
    }
    assert sorted(on_disk - read) == []


def test_generated_process_files_are_up_to_date() -> None:
    generator = load_generator()
    outputs = generator.outputs()
    stale = [path.name for path, text in outputs.items() if not path.exists() or path.read_text() != text]
    assert stale == [], "run: .venv/bin/python deploy/kubernetes/generate.py"
    processes = sorted(path for path in outputs if path.parent == BASE / "processes")
    assert sorted((BASE / "processes").glob("*.yaml")) == processes
    assert [path.stem for path in processes] == sorted(PROCESSES)
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    used = {*kustomization["resources"], *(patch["path"] for patch in kustomization["patches"])}
    used |= {file for generator in kustomization["configMapGenerator"] for file in generator.get("files", [])}
    assert {str(path.relative_to(BASE)) for path in outputs} <= used


def test_every_object_is_valid_for_kubernetes(rendered: Build) -> None:
    """Strict: unknown fields are errors too. Only the operators' custom resources have no schema
    there, and they must be exactly the expected kinds (checked by hand below)."""
    without_schema = set()
    for obj in rendered.objects:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            without_schema.add((obj["apiVersion"], obj["kind"]))
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {error.message} at {list(error.path)}")
    assert without_schema == CUSTOM_KINDS


def test_postgres_is_a_cloudnativepg_cluster_of_three(rendered: Build) -> None:
    (cluster,) = rendered.of_kind("Cluster")
    spec = cluster["spec"]
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert spec["instances"] == 3
    assert spec["storage"]["size"]
    assert spec["bootstrap"]["initdb"] == {"database": "app", "owner": "app"}
    # CloudNativePG reads the major version from the tag: keep it a PostgreSQL major we test.
    assert spec["imageName"].startswith("ghcr.io/cloudnative-pg/postgresql:15")
    assert set(spec) <= {
        "instances",
        "imageName",
        "primaryUpdateStrategy",
        "bootstrap",
        "postgresql",
        "storage",
        "resources",
        "managed",  # issue 18 §5: the runtime roles (base/database-roles.yaml)
    }


def test_nats_values_make_a_three_node_jetstream_cluster() -> None:
    values = yaml.safe_load((KUBERNETES / "nats-values.yaml").read_text())
    assert values["config"]["cluster"] == {"enabled": True, "replicas": 3}
    file_store = values["config"]["jetstream"]["fileStore"]
    assert values["config"]["jetstream"]["enabled"] is True
    assert file_store["enabled"] is True and file_store["pvc"]["enabled"] is True


# --- one Deployment, Service, autoscaler and budget per process ----------------------------------


def test_one_of_each_per_process(rendered: Build) -> None:
    for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        assert sorted(obj["metadata"]["name"] for obj in rendered.of_kind(kind)) == sorted(PROCESSES), kind


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_deployment_serves_the_process_with_probes_on_its_port(rendered: Build, name: str) -> None:
    deployment = rendered.get("Deployment", name)
    container = container_of(deployment)
    port = PROCESSES[name]
    assert container["args"] == ["serve", name, "--port", str(port)]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    # Prometheus scrapes a port of its own, never the API port (issue 18 §6).
    metrics = port + Settings.model_fields["metrics_port_offset"].default
    assert ports == {"http": port, "metrics": metrics}

    def probe(kind: str) -> tuple[str, int]:
        get = container[kind]["httpGet"]
        target = get["port"]
        return get["path"], ports[target] if isinstance(target, str) else target

    # The gateway's readiness is its own, not the suite's: one service down must not empty the API.
    assert probe("readinessProbe") == ("/ready?scope=self" if name == "gateway" else "/ready", port)
    assert probe("livenessProbe") == ("/health", port)
    assert probe("startupProbe") == ("/health", port)
    assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(metrics)


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_service_autoscaler_and_budget_target_the_deployment(rendered: Build, name: str) -> None:
    deployment = rendered.get("Deployment", name)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()

    service = rendered.get("Service", name)
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [
        {
            "name": "http",
            "port": PROCESSES[name],
            "targetPort": "http",
            "protocol": "TCP",
            "appProtocol": "http",
        }
    ]

    autoscaler = rendered.get("HorizontalPodAutoscaler", name)
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": name,
    }
    (metric,) = autoscaler["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}

    budget = rendered.get("PodDisruptionBudget", name)
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_replicas_belong_to_the_autoscalers(base: Build, production: Build) -> None:
    """No Deployment sets `replicas` (an apply would reset the autoscaler's choice); the
    autoscalers keep two replicas at least, three in production."""
    for build_, least in ((base, 2), (production, 3)):
        assert all("replicas" not in d["spec"] for d in build_.of_kind("Deployment"))
        for autoscaler in build_.of_kind("HorizontalPodAutoscaler"):
            assert autoscaler["spec"]["minReplicas"] == least
            assert autoscaler["spec"]["maxReplicas"] == 6
            # A disruption budget of one leaves room to drain a node.
            assert autoscaler["spec"]["minReplicas"] > 1


def test_pods_are_locked_down_and_stop_gracefully(rendered: Build) -> None:
    for obj in [*rendered.of_kind("Deployment"), *rendered.of_kind("Job")]:
        spec = pod_spec(obj)
        assert spec is not None
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        for container in containers(obj):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert "emptyDir" in volumes[mount["name"]]
            assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
            assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
        if obj["kind"] == "Deployment":
            assert spec["terminationGracePeriodSeconds"] == 30
            (container,) = spec["containers"]
            command = container["lifecycle"]["preStop"]["exec"]["command"]
            assert command[0] == "sleep" and 0 < int(command[1]) < 30
            assert obj["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_every_pod_runs_the_one_image(base: Build, production: Build) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for build_ in (base, production):
        images = {c["image"] for obj in build_.objects for c in containers(obj)}
        assert len(images) == 1, images
        _name, tag = split_image(images.pop())
        assert tag == version  # released images are tagged with the package version
    (image,) = {c["image"] for obj in production.objects for c in containers(obj)}
    assert "/" in split_image(image)[0]  # a registry, not a bare name


def test_everything_lives_in_one_restricted_namespace(rendered: Build) -> None:
    (namespace,) = rendered.of_kind("Namespace")
    name = namespace["metadata"]["name"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in rendered.objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == name, obj["metadata"]["name"]


# --- settings, secrets and where things are ------------------------------------------------------


def test_every_cmh_variable_is_a_setting(rendered: Build) -> None:
    # The ConfigMaps read as environments (cmh-db-grants is a file, mounted in the migration Job).
    environments = {
        source["configMapRef"]["name"]
        for obj in rendered.objects
        for c in containers(obj)
        for source in c.get("envFrom", [])
    }
    variables = {key for name in environments for key in rendered.get("ConfigMap", name)["data"]}
    variables |= {e["name"] for obj in rendered.objects for c in containers(obj) for e in c.get("env", [])}
    cmh = {variable for variable in variables if variable.startswith("CMH_")}
    assert cmh, "no settings at all?"
    assert sorted(v for v in cmh if settings_field(v) is None) == []
    assert variables - cmh == {PASSWORD_VARIABLE}  # and nothing else is configured


def test_references_resolve(rendered: Build) -> None:
    """Every ConfigMap and Secret a pod reads (as variables or as volumes) is made here, or is the
    one CloudNativePG makes."""
    made = {
        (obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"]) for obj in rendered.objects
    }
    operator_secrets = {
        ("Secret", c["metadata"].get("namespace"), f"{c['metadata']['name']}-app")
        for c in rendered.of_kind("Cluster")
    }
    for obj in rendered.objects:
        namespace = obj["metadata"].get("namespace")
        for container in containers(obj):
            for source in container.get("envFrom", []):
                assert ("ConfigMap", namespace, source["configMapRef"]["name"]) in made
            for variable in container.get("env", []):
                reference = variable.get("valueFrom", {}).get("secretKeyRef")
                if reference is None:
                    continue
                key = ("Secret", namespace, reference["name"])
                if not is_overlay(rendered) and reference["name"] in OVERLAY_SECRETS:
                    continue
                assert key in made or key in operator_secrets, f"{obj['metadata']['name']}: {reference}"
                assert reference.get("optional") is not True
                if key in operator_secrets:
                    assert reference["key"] == "uri"  # postgresql://…, accepted by shared/db.py
                else:
                    secret = rendered.get("Secret", reference["name"])
                    assert reference["key"] in secret["data"]
        spec = pod_spec(obj)
        for volume in spec["volumes"] if spec else []:
            for kind, source, name_key in (
                ("Secret", "secret", "secretName"),
                ("ConfigMap", "configMap", "name"),
            ):
                if source not in volume:
                    continue
                name = volume[source][name_key]
                if not is_overlay(rendered) and name in OVERLAY_SECRETS | OVERLAY_CONFIG_MAPS:
                    continue
                assert (kind, namespace, name) in made, f"{obj['metadata']['name']}: {volume}"
                assert volume[source].get("optional") is not True
                data = rendered.get(kind, name)["data"]
                assert all(item["key"] in data for item in volume[source].get("items", [])), volume


def test_the_production_secret_is_read_from_an_ignored_file(production: Build) -> None:
    """The pseudonym key is never committed: it comes from a file under a `secrets/` folder that
    deploy/.gitignore ignores (so the build fails, rather than deploys a known key, without it)."""
    assert "secrets/" in (ROOT / "deploy" / ".gitignore").read_text().splitlines()
    secret_files = [p for p in production.files_read if "secrets" in p.parts] + production.missing_files
    assert secret_files, "the overlay reads no secret file"
    for path in secret_files:
        assert "secrets" in path.relative_to(ROOT / "deploy").parts


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_settings_point_at_the_services(rendered: Build, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    deployment = rendered.get("Deployment", name)
    env = env_of(rendered, container_of(deployment))
    settings = settings_from(env, monkeypatch)  # also: every value parses

    def service_url(service: str, port: int) -> str:
        assert rendered.get("Service", service)["spec"]["ports"][0]["port"] == port
        return f"http://{service}:{port}"

    for service in SERVICES:
        assert settings.service_url(service) == service_url(service, PROCESSES[service])
    assert (
        settings.effective_jwks_url()
        == service_url("gateway", PROCESSES["gateway"]) + "/.well-known/jwks.json"
    )
    assert settings.nats_url == NATS_URL
    assert settings.host == "0.0.0.0"
    assert str(settings.var_dir).startswith("/tmp/")  # the emptyDir: the root is read-only
    # issue 18 §5: its own role, on the CloudNativePG primary, with the password from its own
    # Secret; no fallback URL (the migration role's) in reach.
    assert "CMH_DATABASE_URL" not in env
    url = make_url(settings.database_url_for(name))
    assert (url.username, url.password) == (f"cmh_{name}", None)
    assert (url.host, url.port, url.database) == ("cmh-db-rw", 5432, "app")
    assert settings.database_schema_for(name) == name
    (password,) = [e for e in container_of(deployment)["env"] if e["name"] == PASSWORD_VARIABLE]
    assert password["valueFrom"]["secretKeyRef"] == {"name": f"cmh-db-{name}", "key": "password"}
    # Only reporting holds the pseudonym key, and every replica the same one (from one Secret).
    assert ("CMH_REPORTING_PSEUDONYM_KEY" in env) == (name == "reporting")
    # Only the gateway holds the key-encryption key of its signing keys, from one Secret.
    assert ("CMH_KEY_ENCRYPTION_KEY" in env) == (name == "gateway")


def test_stream_replicas(base: Build, production: Build, monkeypatch: pytest.MonkeyPatch) -> None:
    def replicas(build_: Build) -> int:
        return settings_from(
            env_of(build_, container_of(build_.get("Deployment", "gateway"))), monkeypatch
        ).stream_replicas

    assert replicas(base) == 1
    assert replicas(production) == 3


def test_database_connections_fit_the_cluster(rendered: Build, monkeypatch: pytest.MonkeyPatch) -> None:
    (cluster,) = rendered.of_kind("Cluster")
    max_connections = int(cluster["spec"]["postgresql"]["parameters"]["max_connections"])
    needed = 0
    for deployment in rendered.of_kind("Deployment"):
        settings = settings_from(env_of(rendered, container_of(deployment)), monkeypatch)
        most = rendered.get("HorizontalPodAutoscaler", deployment["metadata"]["name"])["spec"]["maxReplicas"]
        needed += most * 2 * settings.database_pool_size  # pool plus as much overflow (shared/db.py)
    assert needed + 20 <= max_connections  # room for the migration Job and the operator's own


def test_migration_job_migrates_grants_then_seeds(rendered: Build) -> None:
    """As the migration role (`app`, CloudNativePG's owner of the database): `cmh migrate`, then
    roles.sql from its ConfigMap (the generated file, unchanged), then (issue 18 §2) `cmh bus
    provision` (tests/deploy/test_closed_bus.py), then `cmh seed`."""
    (job,) = rendered.of_kind("Job")
    spec = pod_spec(job)
    assert spec is not None
    assert [c["name"] for c in spec["initContainers"]] == ["migrate", "grants", "bus"]
    migrate, grants, _bus = spec["initContainers"]
    assert migrate["args"] == ["migrate"]
    assert [c["args"] for c in spec["containers"]] == [["seed"]]
    assert spec["restartPolicy"] in ("OnFailure", "Never")
    gateway = container_of(rendered.get("Deployment", "gateway"))
    for container in containers(job):
        assert container["envFrom"] == gateway["envFrom"]
        if container["name"] == "bus":
            continue  # the bus needs no database, and the database steps no bus
        assert container["env"] == [
            {"name": "CMH_DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "cmh-db-app", "key": "uri"}}}
        ]

    (mount,) = [m for m in grants["volumeMounts"] if m["name"] != "tmp"]
    assert grants["command"][:2] == ["python", "-c"]
    assert grants["command"][-1] == f"{mount['mountPath']}/roles.sql"
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    config_map = rendered.get("ConfigMap", volume["configMap"]["name"])
    assert config_map["data"]["roles.sql"] == load_generator().grants_sql()


def test_production_gateway_needs_its_kek(production: Build, monkeypatch: pytest.MonkeyPatch) -> None:
    """issue 18 §5: production makes up no key, and the gateway's KEK comes from the overlay's
    Secret (read from an ignored file), the same for every replica."""
    gateway = container_of(production.get("Deployment", "gateway"))
    env = env_of(production, gateway)
    assert settings_from(env, monkeypatch).environment == "production"
    (variable,) = [e for e in gateway["env"] if e["name"] == "CMH_KEY_ENCRYPTION_KEY"]
    assert variable["valueFrom"]["secretKeyRef"] == {"name": "cmh-gateway", "key": "key-encryption-key"}
    assert any(path.name == "key-encryption.key" for path in production.missing_files + production.files_read)
