"""Write the Kubernetes manifests made from the list of processes, so a new process is covered.

Every process (the gateway and each service) gets the same five objects in
base/processes/<name>.yaml, made here once rather than copied seven times by hand:

- a Deployment: `cmh serve <name> --port <port>`, probes (startup and liveness on /health,
  readiness on /ready), requests and limits, a locked-down security context with an emptyDir on
  /tmp, a preStop pause so endpoints drain before SIGTERM, the shared settings (ConfigMap
  `cmh-config`) and its own database role: `CMH_<NAME>_DATABASE_URL` names the role `cmh_<name>`
  and `PGPASSWORD` comes from that role's Secret `cmh-db-<name>`; and its own NATS user on the
  closed bus (shared/bus_access.py): only its own password, `<name>.password` from the Secret
  `cmh-nats-<name>`, is mounted in CMH_NATS_CREDENTIALS_DIR, beside the CA of the NATS servers'
  TLS certificate (ConfigMap `cmh-nats-ca`, CMH_NATS_TLS_CA_FILE in settings.env);
- a ClusterIP Service on the process's port;
- a HorizontalPodAutoscaler (CPU 70%, 2 to 6 replicas); the Deployment has no `replicas`, so
  applying the manifests never fights the autoscaler;
- a PodDisruptionBudget (at least one replica up during voluntary disruptions);
- a NetworkPolicy: who may reach it, and what it may reach (issue 18 §5).

And, from the same list (issue 18 §5, keys and roles):

- base/network-policies.yaml: the namespace's default deny, and the policies of the PostgreSQL
  pods and the migration Job;
- base/database-roles.yaml: a patch of the `cmh-db` Cluster declaring the runtime roles
  (CloudNativePG `spec.managed.roles`, each with its password Secret);
- base/roles.sql: the grants the migration Job applies after `cmh migrate`, as the migration role
  that owns every schema and table: each runtime role uses its own schema only, and the
  gateway's role may only INSERT and SELECT the audit trail.

The outputs are committed; tests/deploy checks that they are what this script writes.

    .venv/bin/python deploy/kubernetes/generate.py           # rewrite
    .venv/bin/python deploy/kubernetes/generate.py --check   # exit 1 if out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from gateway.models import AuditPerson, AuditRecord
from shared.bus_access import ADMIN, password_file
from shared.db import check_schema_name
from shared.settings import DATABASE_OWNERS, DEFAULT_SERVICE_PORTS, SERVICES, Settings

BASE_DIR = Path(__file__).parent / "base"
OUTPUT_DIR = BASE_DIR / "processes"
NETWORK_POLICIES = BASE_DIR / "network-policies.yaml"
DATABASE_ROLES = BASE_DIR / "database-roles.yaml"
GRANTS_SQL = BASE_DIR / "roles.sql"
IMAGE = "cmh-suite"  # the kustomizations' `images:` give it a registry and a tag
PART_OF = "cmh-suite"
CONFIG_MAP = "cmh-config"
# CloudNativePG's application Secret for the `cmh-db` Cluster; its `uri` is a postgresql:// URL,
# which shared/db.py accepts as it is (it picks the asyncpg driver itself). It is the migration
# role's (`app`, owner of the database, so of every schema and table): only the migration Job
# reads it, the processes connect as their own roles.
DATABASE_SECRET = "cmh-db-app"  # noqa: S105 - the name of a Secret, not a secret
DATABASE_CLUSTER = "cmh-db"
DATABASE_HOST = "cmh-db-rw"  # CloudNativePG's Service for the primary of the Cluster
DATABASE_NAME = "app"
DATABASE_PORT = 5432
MIGRATE_JOB = "cmh-migrate"
# The reporting pseudonym key: made by each overlay's secretGenerator from a file never committed.
PSEUDONYM_SECRET = "cmh-reporting"  # noqa: S105 - the name of a Secret, not a secret
PSEUDONYM_KEY = "pseudonym-key"
# issue 18 §5: the key-encryption key sealing the gateway's signing keys, from each overlay's
# secretGenerator (never committed). Every replica must hold the same one.
GATEWAY_SECRET = "cmh-gateway"  # noqa: S105 - the name of a Secret, not a secret
KEK_KEY = "key-encryption-key"
# issue 18 §2, the closed bus: every process connects to NATS as its own user. Its password is the
# key `password` of its own Secret `cmh-nats-<identity>` (each overlay makes one per identity, the
# `admin` too, which only the migration Job mounts), mounted alone as `<identity>.password` in
# CMH_NATS_CREDENTIALS_DIR: a pod holds no other identity's password.
NATS_CREDENTIALS_DIR = "/var/run/cmh/nats"
NATS_PASSWORD_KEY = "password"  # noqa: S105 - the key of a Secret, not a secret
# TLS to NATS: the CA that signed the servers' certificate (nats-tls.yaml), a ConfigMap each overlay
# makes; CMH_NATS_TLS_CA_FILE (base/settings.env) names the file in this directory.
NATS_CA_CONFIG_MAP = "cmh-nats-ca"
NATS_CA_DIR = "/etc/cmh/nats-ca"
NATS_CA_KEY = "ca.crt"

# issue 18 §5, NetworkPolicies: where the pods outside this namespace are. Each is a namespace
# (selected by the label Kubernetes puts on every namespace) and the labels of its pods.
INGRESS_CONTROLLER = ("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
# Prometheus scrapes /metrics on each process's metrics port (API port + CMH_METRICS_PORT_OFFSET),
# never the API port (issue 18 §6).
PROMETHEUS = ("monitoring", {"app.kubernetes.io/name": "prometheus"})
METRICS_OFFSET = Settings.model_fields["metrics_port_offset"].default
NATS = ("nats", {"app.kubernetes.io/name": "nats", "app.kubernetes.io/instance": "nats"})  # nats-values.yaml
NATS_PORT = 4222
CNPG_OPERATOR = ("cnpg-system", {"app.kubernetes.io/name": "cloudnative-pg"})
DNS = ("kube-system", None)  # any DNS server there (kube-dns, CoreDNS, NodeLocal DNSCache)
# Addresses that are never the public internet: notify's webhooks may not go there (the same rule
# as its own address check, shared by the network now).
PRIVATE_RANGES = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "127.0.0.0/8"]
# CloudNativePG's instance manager talks to the Kubernetes API. Its address is the cluster's own
# (the `kubernetes` Service resolves to it after NAT, which is what policies see); the private
# ranges cover most clusters: narrow them to your control plane's addresses in an overlay.
KUBERNETES_API = (PRIVATE_RANGES[:3], [443, 6443])
# Only notify talks to the outside: webhooks to partner systems, HTTPS only.
PUBLIC_HTTPS = {"notify"}

MIN_REPLICAS = 2
MAX_REPLICAS = 6
CPU_TARGET_PERCENT = 70
PRE_STOP_SECONDS = 5
TERMINATION_GRACE_SECONDS = 30
RUN_AS = 10001  # the image's user (deploy/Dockerfile)

HEADER = (
    "# Generated by deploy/kubernetes/generate.py: edit that script, not this file, then run\n"
    "#   .venv/bin/python deploy/kubernetes/generate.py\n"
)


def processes() -> dict[str, int]:
    """Each process and the port it serves on: the same defaults as shared/settings.py."""
    gateway_port = Settings.model_fields["gateway_port"].default
    return {"gateway": gateway_port, **{name: DEFAULT_SERVICE_PORTS[name] for name in SERVICES}}


def labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": PART_OF}


def metadata(name: str) -> dict[str, Any]:
    component = "gateway" if name == "gateway" else "service"
    return {"name": name, "labels": {**labels(name), "app.kubernetes.io/component": component}}


def http_get(path: str) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}}


def database_role(owner: str, prefix: str = "cmh_") -> str:
    """The PostgreSQL role a process connects as (issue 18 §5: one per schema owner)."""
    return f"{prefix}{owner}"


def database_secret(owner: str) -> str:
    """The Secret holding that role's password (made by each overlay; read by CloudNativePG too)."""
    return f"cmh-db-{owner}"


def bus_identities() -> tuple[str, ...]:
    """Every NATS user of the closed bus: the admin (stream and consumers) and each process."""
    return (ADMIN, *processes())


def nats_secret(identity: str) -> str:
    """The Secret holding one identity's NATS password (made by each overlay)."""
    return f"cmh-nats-{identity}"


def nats_volumes(identity: str) -> list[dict[str, Any]]:
    """The identity's own password, as `<identity>.password` (the file shared/bus_access.py
    reads), and the NATS servers' CA."""
    password = password_file(Path(NATS_CREDENTIALS_DIR), identity).name
    return [
        {
            "name": "nats-credentials",
            "secret": {
                "secretName": nats_secret(identity),
                "items": [{"key": NATS_PASSWORD_KEY, "path": password}],
            },
        },
        {
            "name": "nats-ca",
            "configMap": {"name": NATS_CA_CONFIG_MAP, "items": [{"key": NATS_CA_KEY, "path": NATS_CA_KEY}]},
        },
    ]


def nats_mounts() -> list[dict[str, Any]]:
    return [
        {"name": "nats-credentials", "mountPath": NATS_CREDENTIALS_DIR, "readOnly": True},
        {"name": "nats-ca", "mountPath": NATS_CA_DIR, "readOnly": True},
    ]


def env(name: str) -> list[dict[str, Any]]:
    # The URL names the role and is no secret; the password comes from the role's own Secret as
    # PGPASSWORD, which asyncpg reads when the URL has none (so it needs no escaping either). No
    # CMH_DATABASE_URL: a process has no fallback to the migration role.
    url = f"postgresql://{database_role(name)}@{DATABASE_HOST}:{DATABASE_PORT}/{DATABASE_NAME}"
    variables: list[dict[str, Any]] = [
        {"name": f"CMH_{name.upper()}_DATABASE_URL", "value": url},
        {
            "name": "PGPASSWORD",
            "valueFrom": {"secretKeyRef": {"name": database_secret(name), "key": "password"}},
        },
        # The closed bus: its own NATS user, the password mounted from its own Secret.
        {"name": "CMH_NATS_CREDENTIALS_DIR", "value": NATS_CREDENTIALS_DIR},
    ]
    if name == "reporting":
        # Not optional: a replica without it would make up its own key and its own pseudonyms.
        variables.append(
            {
                "name": "CMH_REPORTING_PSEUDONYM_KEY",
                "valueFrom": {"secretKeyRef": {"name": PSEUDONYM_SECRET, "key": PSEUDONYM_KEY}},
            }
        )
    if name == "gateway":
        # issue 18 §5: not optional either: a replica would make up its own KEK under /tmp.
        variables.append(
            {
                "name": "CMH_KEY_ENCRYPTION_KEY",
                "valueFrom": {"secretKeyRef": {"name": GATEWAY_SECRET, "key": KEK_KEY}},
            }
        )
    return variables


def container(name: str, port: int) -> dict[str, Any]:
    return {
        "name": name,
        "image": IMAGE,
        "args": ["serve", name, "--port", str(port)],
        "ports": [
            {"name": "http", "containerPort": port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": port + METRICS_OFFSET, "protocol": "TCP"},
        ],
        "envFrom": [{"configMapRef": {"name": CONFIG_MAP}}],
        "env": env(name),
        # Up to a minute to start (migrations are the Job's business, not the process's).
        "startupProbe": {**http_get("/health"), "periodSeconds": 2, "failureThreshold": 30},
        "livenessProbe": {
            **http_get("/health"),
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        # /ready: can this pod take work (its database; NATS away is only "degraded", or a broker
        # outage would take every pod out). The gateway's asks only about itself: one service
        # being down must not take the whole API out of the load balancer (deploy/README.md).
        "readinessProbe": {
            **http_get("/ready?scope=self" if name == "gateway" else "/ready"),
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "resources": {
            "requests": {"cpu": "250m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        },
        # The endpoint is removed while the pod still serves; then SIGTERM (uvicorn finishes
        # in-flight requests, consumers hand unacknowledged events back to JetStream).
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_SECONDS)]}}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - the pod's own emptyDir
            *nats_mounts(),
        ],
    }


def deployment(name: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(name),
        "spec": {
            "selector": {"matchLabels": labels(name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": metadata(name)["labels"],
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(port + METRICS_OFFSET),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_AS,
                        "runAsGroup": RUN_AS,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": labels(name)},
                        }
                    ],
                    "containers": [container(name, port)],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}, *nats_volumes(name)],
                },
            },
        },
    }


def service(name: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(name),
        "spec": {
            "type": "ClusterIP",
            "selector": labels(name),
            "ports": [
                {"name": "http", "port": port, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"}
            ],
        },
    }


def autoscaler(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": MIN_REPLICAS,
            "maxReplicas": MAX_REPLICAS,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": CPU_TARGET_PERCENT},
                    },
                }
            ],
        },
    }


def disruption_budget(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(name),
        "spec": {"minAvailable": 1, "selector": {"matchLabels": labels(name)}},
    }


# --- issue 18 §5: network policies -----------------------------------------------------------------


def _peer(namespace: str, pods: dict[str, str] | None) -> dict[str, Any]:
    peer: dict[str, Any] = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}
    if pods:
        peer["podSelector"] = {"matchLabels": pods}
    return peer


def _ports(*ports: int, protocol: str = "TCP") -> list[dict[str, Any]]:
    return [{"protocol": protocol, "port": port} for port in ports]


def _database_pods() -> dict[str, Any]:
    return {"podSelector": {"matchLabels": {"cnpg.io/cluster": DATABASE_CLUSTER}}}


def _dns_egress() -> dict[str, Any]:
    return {"to": [_peer(*DNS)], "ports": [*_ports(53, protocol="UDP"), *_ports(53)]}


def _database_egress() -> dict[str, Any]:
    return {"to": [_database_pods()], "ports": _ports(DATABASE_PORT)}


def _nats_egress() -> dict[str, Any]:
    return {"to": [_peer(*NATS)], "ports": _ports(NATS_PORT)}


def network_policy(name: str, port: int) -> dict[str, Any]:
    """What one process accepts and reaches. The gateway: from the ingress controller and (for the
    JWKS) the services; to every service. A service: from the gateway only, on its port; to the
    gateway's JWKS. Every process: PostgreSQL, NATS and DNS; notify also public HTTPS; and
    Prometheus on the metrics port only."""
    gateway_port = processes()["gateway"]
    services = {service: p for service, p in processes().items() if service != "gateway"}
    if name == "gateway":
        ingress = [
            {"from": [_peer(*INGRESS_CONTROLLER)], "ports": _ports(port)},
            {
                "from": [
                    {"podSelector": {"matchLabels": labels(service)}} for service in services
                ],  # the services fetch the signing keys (CMH_JWKS_URL)
                "ports": _ports(port),
            },
        ]
        http_egress = [
            {"to": [{"podSelector": {"matchLabels": labels(service)}}], "ports": _ports(service_port)}
            for service, service_port in services.items()
        ]
    else:
        ingress = [{"from": [{"podSelector": {"matchLabels": labels("gateway")}}], "ports": _ports(port)}]
        http_egress = [
            {"to": [{"podSelector": {"matchLabels": labels("gateway")}}], "ports": _ports(gateway_port)}
        ]
    ingress.append({"from": [_peer(*PROMETHEUS)], "ports": _ports(port + METRICS_OFFSET)})
    egress = [
        _dns_egress(),
        _database_egress(),
        _nats_egress(),
        *http_egress,
    ]
    if name in PUBLIC_HTTPS:
        egress.append(
            {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": PRIVATE_RANGES}}], "ports": _ports(443)}
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(name),
        "spec": {
            "podSelector": {"matchLabels": labels(name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    }


def shared_network_policies() -> list[dict[str, Any]]:
    """The namespace's default deny, then what the PostgreSQL pods and the migration Job need."""
    part_of = {"app.kubernetes.io/part-of": PART_OF}
    clients = sorted([*processes(), MIGRATE_JOB])
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "default-deny", "labels": part_of},
            # Every pod of the namespace, in and out: what is allowed is allowed by a policy below
            # or in processes/*.yaml, and a pod nobody wrote a policy for reaches nothing.
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": DATABASE_CLUSTER,
                "labels": {**part_of, "app.kubernetes.io/name": DATABASE_CLUSTER},
            },
            "spec": {
                **_database_pods(),
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {
                        "from": [
                            {
                                "podSelector": {
                                    "matchLabels": part_of,
                                    "matchExpressions": [
                                        {"key": "app.kubernetes.io/name", "operator": "In", "values": clients}
                                    ],
                                }
                            }
                        ],
                        "ports": _ports(DATABASE_PORT),
                    },
                    # The operator asks each instance manager for its status (8000) and connects
                    # to PostgreSQL; the instances replicate from each other.
                    {"from": [_peer(*CNPG_OPERATOR)], "ports": _ports(8000, DATABASE_PORT)},
                    {"from": [_database_pods()], "ports": _ports(8000, DATABASE_PORT)},
                ],
                "egress": [
                    _dns_egress(),
                    {"to": [_database_pods()], "ports": _ports(8000, DATABASE_PORT)},
                    {
                        "to": [{"ipBlock": {"cidr": cidr}} for cidr in KUBERNETES_API[0]],
                        "ports": _ports(*KUBERNETES_API[1]),
                    },
                ],
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": MIGRATE_JOB, "labels": {**part_of, "app.kubernetes.io/name": MIGRATE_JOB}},
            "spec": {
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": MIGRATE_JOB, **part_of}},
                "policyTypes": ["Ingress", "Egress"],
                # PostgreSQL (migrations, grants, seed) and NATS (`cmh bus provision`); it accepts nothing.
                "egress": [_dns_egress(), _database_egress(), _nats_egress()],
            },
        },
    ]


# --- issue 18 §5: database roles and grants --------------------------------------------------------


def managed_roles() -> dict[str, Any]:
    """A patch of the Cluster: CloudNativePG creates each runtime role and keeps its password that
    of the role's Secret. The roles own nothing and have no attribute but LOGIN; what they may
    do is what roles.sql grants."""
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": DATABASE_CLUSTER},
        "spec": {
            "managed": {
                "roles": [
                    {
                        "name": database_role(owner),
                        "ensure": "present",
                        "comment": f"CMH Suite: the {owner} process (deploy/kubernetes/base/roles.sql)",
                        "login": True,
                        "superuser": False,
                        "createdb": False,
                        "createrole": False,
                        "replication": False,
                        "bypassrls": False,
                        "inherit": False,
                        "passwordSecret": {"name": database_secret(owner)},
                    }
                    for owner in DATABASE_OWNERS
                ]
            }
        },
    }


# Tables a runtime role may add rows to and read, never change: the audit trail and its person rows.
APPEND_ONLY: dict[str, tuple[str, ...]] = {
    "gateway": (AuditRecord.__tablename__, AuditPerson.__tablename__),
}
READ_WRITE = "SELECT, INSERT, UPDATE, DELETE"
APPEND = "SELECT, INSERT"


def grants_sql(schema_prefix: str = "", role_prefix: str = "cmh_") -> str:
    """The grants, run by the migration role (owner of every schema and table) after each
    `cmh migrate`. Idempotent. The prefixes let the tests apply them to scratch schemas and roles."""
    lines = [
        "-- Generated by deploy/kubernetes/generate.py (grants_sql): edit that, not this file.",
        "-- Run by the migration Job after `cmh migrate`, as the migration role, which owns every schema",
        "-- and table (so runtime roles can neither change the tables nor lift the audit triggers).",
        "BEGIN;",
    ]
    for owner in DATABASE_OWNERS:
        # Plain lower-case identifiers only (shared/db.py's rule), so they are safe to write into SQL.
        schema = check_schema_name(f"{schema_prefix}{owner}")
        role = check_schema_name(database_role(owner, role_prefix))
        append_only = APPEND_ONLY.get(owner, ())
        lines += [
            "",
            f"-- {owner}: the role {role} uses the schema {schema} and nothing else.",
            f'CREATE SCHEMA IF NOT EXISTS "{schema}";',
            f'REVOKE ALL ON SCHEMA "{schema}" FROM PUBLIC;',
            f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}";',
            f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA "{schema}" TO "{role}";',
            f'ALTER DEFAULT PRIVILEGES IN SCHEMA "{schema}" GRANT USAGE, SELECT ON SEQUENCES TO "{role}";',
        ]
        if not append_only:
            lines += [
                f'GRANT {READ_WRITE} ON ALL TABLES IN SCHEMA "{schema}" TO "{role}";',
                f'ALTER DEFAULT PRIVILEGES IN SCHEMA "{schema}" GRANT {READ_WRITE} ON TABLES TO "{role}";',
            ]
            continue
        excluded = ", ".join(f"'{table}'" for table in append_only)
        lines += [
            # New tables start append-only (a new audit table is safe by default); every table but
            # the audit trail then gets UPDATE and DELETE by name.
            f'ALTER DEFAULT PRIVILEGES IN SCHEMA "{schema}" GRANT {APPEND} ON TABLES TO "{role}";',
            f'GRANT {APPEND} ON ALL TABLES IN SCHEMA "{schema}" TO "{role}";',
            "DO $grants$",
            "DECLARE grant_table text;",
            "BEGIN",
            f"    FOR grant_table IN SELECT tablename FROM pg_tables WHERE schemaname = '{schema}'",  # noqa: S608 - checked names
            f"            AND tablename NOT IN ({excluded}) LOOP",
            f"        EXECUTE format('GRANT UPDATE, DELETE ON %I.%I TO %I', '{schema}', grant_table, '{role}');",
            "    END LOOP;",
            "END",
            "$grants$;",
        ]
        lines += [
            f'REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON "{schema}"."{table}" FROM "{role}";'
            for table in append_only
        ]
    lines += ["", "COMMIT;", ""]
    return "\n".join(lines)


def dump(documents: list[dict[str, Any]]) -> str:
    return HEADER + yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False, width=120)


def render(name: str, port: int) -> str:
    return dump(
        [
            deployment(name, port),
            service(name, port),
            autoscaler(name),
            disruption_budget(name),
            network_policy(name, port),
        ]
    )


def outputs() -> dict[Path, str]:
    files = {OUTPUT_DIR / f"{name}.yaml": render(name, port) for name, port in processes().items()}
    files[NETWORK_POLICIES] = dump(shared_network_policies())
    files[DATABASE_ROLES] = dump([managed_roles()])
    files[GRANTS_SQL] = grants_sql()
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report files that are out of date")
    args = parser.parse_args(argv)
    wanted = outputs()
    stale = [path for path, text in wanted.items() if not path.exists() or path.read_text() != text]
    extra = sorted(set(OUTPUT_DIR.glob("*.yaml")) - set(wanted))  # a process that no longer exists
    if args.check:
        for path in stale:
            print(f"out of date: {path}", file=sys.stderr)
        for path in extra:
            print(f"not generated: {path}", file=sys.stderr)
        return 1 if stale or extra else 0
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    for path in extra:
        path.unlink()
    for path, text in wanted.items():
        path.write_text(text)
    print(f"wrote {len(wanted)} files in {BASE_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
