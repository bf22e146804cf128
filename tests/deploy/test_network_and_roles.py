"""issue 18 §5 on Kubernetes: network policies, one database role per process, and an audit trail
the gateway's runtime role can only append to.

The policies and roles are read from the built kustomizations (`tests/deploy/kustomize.py`); the
grants are checked as text always, and applied to scratch schemas and roles on PostgreSQL when
`CMH_TEST_DATABASE_URL` is set.
"""

from __future__ import annotations

import base64
import importlib.util
import ipaddress
import os
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import yaml
from sqlalchemy.engine import make_url

from gateway.models import AuditPerson, AuditRecord
from shared.settings import DATABASE_OWNERS, SERVICES, Settings
from tests.deploy.kustomize import MIGRATE_JOB, ROOT, Build
from tests.deploy.test_manifests import (
    PROCESSES,
    container_of,
    env_of,
    load_generator,
    settings_from,
)

PRIVATE = [
    ipaddress.ip_network(cidr)
    for cidr in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "127.0.0.0/8")
]
AUDIT_TABLES = {AuditRecord.__tablename__, AuditPerson.__tablename__}
DATABASE_PODS = {"cnpg.io/cluster": "cmh-db"}


def policies(build_: Build) -> list[dict[str, Any]]:
    return build_.of_kind("NetworkPolicy")


def selects(policy: dict[str, Any], pod_labels: dict[str, str]) -> bool:
    """Whether the policy's podSelector picks pods with these labels (matchLabels and `In`)."""
    selector = policy["spec"]["podSelector"]
    if not set(selector) <= {"matchLabels", "matchExpressions"}:
        raise AssertionError(f"unexpected selector {selector}")
    if not selector.get("matchLabels", {}).items() <= pod_labels.items():
        return False
    return all(pod_labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", []))


def pod_labels_of(build_: Build, kind: str, name: str) -> dict[str, str]:
    return build_.get(kind, name)["spec"]["template"]["metadata"]["labels"]


def process_policy(build_: Build, name: str) -> dict[str, Any]:
    (policy,) = [p for p in policies(build_) if p["metadata"]["name"] == name]
    return policy


def peer_pod_name(peer: dict[str, Any]) -> str | None:
    """The process (or Job) a same-namespace pod peer names, or None for any other peer."""
    if set(peer) != {"podSelector"}:
        return None
    return peer["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name")


def ports_of(rule: dict[str, Any]) -> set[tuple[str, int]]:
    assert rule.get("ports"), f"a rule open on every port: {rule}"
    return {(port["protocol"], port["port"]) for port in rule["ports"]}


def is_private(cidr: str) -> bool:
    network = ipaddress.ip_network(cidr)
    return any(network.subnet_of(private) for private in PRIVATE)


# --- network policies -----------------------------------------------------------------------------


METRICS_OFFSET = Settings.model_fields["metrics_port_offset"].default


def is_scrape(rule: dict[str, Any]) -> bool:
    """Prometheus's rule: its pods in the monitoring namespace, on a metrics port only."""
    return all(peer.get("namespaceSelector", {}).get("matchLabels") == {"kubernetes.io/metadata.name": "monitoring"}
               for peer in rule["from"])  # fmt: skip


def api_rules(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for rule in policy["spec"].get("ingress", []) if not is_scrape(rule)]


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_prometheus_reaches_only_the_metrics_port(rendered: Build, name: str) -> None:
    (scrape,) = [rule for rule in process_policy(rendered, name)["spec"]["ingress"] if is_scrape(rule)]
    assert ports_of(scrape) == {("TCP", PROCESSES[name] + METRICS_OFFSET)}
    assert all(peer["podSelector"]["matchLabels"] for peer in scrape["from"])  # its pods, not the namespace


def test_the_namespace_denies_by_default(rendered: Build) -> None:
    """A policy selecting every pod, for both directions, with no rule: whatever is not allowed
    by another policy is refused, in and out, for every pod (the PostgreSQL pods included)."""
    (deny,) = [p for p in policies(rendered) if p["spec"]["podSelector"] == {}]
    assert sorted(deny["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]


def test_every_pod_has_a_policy_of_its_own(rendered: Build) -> None:
    """Each process, the migration Job and the PostgreSQL pods: exactly one policy beyond the
    default deny selects them, and it governs both directions."""
    pods = {name: pod_labels_of(rendered, "Deployment", name) for name in PROCESSES}
    pods[MIGRATE_JOB] = pod_labels_of(rendered, "Job", MIGRATE_JOB)
    pods["cmh-db"] = {**DATABASE_PODS, "cnpg.io/instanceRole": "primary"}  # as CloudNativePG labels them
    specific = [p for p in policies(rendered) if p["spec"]["podSelector"] != {}]
    for name, labels in pods.items():
        (policy,) = [p for p in specific if selects(p, labels)]
        assert policy["metadata"]["name"] == name
        assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]


def test_a_new_process_is_covered_by_the_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    """The policies come from the process list: a process added there gets its own policy, the
    gateway's edge to it, PostgreSQL's door, a database role and its grants, with nothing else."""
    generator = load_generator()
    monkeypatch.setattr(generator, "processes", lambda: {**PROCESSES, "newcomer": 8199})
    monkeypatch.setattr(generator, "DATABASE_OWNERS", (*DATABASE_OWNERS, "newcomer"))
    documents = list(yaml.safe_load_all(generator.render("newcomer", 8199)))
    (policy,) = [d for d in documents if d["kind"] == "NetworkPolicy"]
    (rule,) = api_rules(policy)
    assert [peer_pod_name(peer) for peer in rule["from"]] == ["gateway"]
    gateway = generator.network_policy("gateway", PROCESSES["gateway"])["spec"]
    assert any(
        peer_pod_name(peer) == "newcomer" and ports_of(rule) == {("TCP", 8199)}
        for rule in gateway["egress"]
        for peer in rule["to"]
    )
    database = [p for p in generator.shared_network_policies() if p["metadata"]["name"] == "cmh-db"]
    (clients,) = database[0]["spec"]["ingress"][0]["from"]
    assert "newcomer" in clients["podSelector"]["matchExpressions"][0]["values"]
    roles = {role["name"]: role for role in generator.managed_roles()["spec"]["managed"]["roles"]}
    assert roles["cmh_newcomer"]["passwordSecret"] == {"name": "cmh-db-newcomer"}
    assert 'GRANT USAGE ON SCHEMA "newcomer" TO "cmh_newcomer";' in generator.grants_sql()


def test_only_the_gateway_accepts_traffic_from_outside_the_namespace(rendered: Build) -> None:
    """A peer with a namespaceSelector or an ipBlock is outside the namespace: the gateway takes
    the ingress controller's requests; the PostgreSQL pods the operator's; nothing else."""
    outside: dict[str, list[dict[str, Any]]] = {}
    for policy in policies(rendered):
        for rule in api_rules(policy):  # Prometheus's scrape: test_prometheus_reaches_only_the_metrics_port
            ports_of(rule)
            for peer in rule["from"]:
                if "namespaceSelector" in peer or "ipBlock" in peer:
                    outside.setdefault(policy["metadata"]["name"], []).append(peer)
    assert set(outside) == {"gateway", "cmh-db"}
    (controller,) = outside["gateway"]
    assert "ipBlock" not in controller
    assert controller["podSelector"]["matchLabels"]  # the controller's pods, not its whole namespace
    (operator,) = outside["cmh-db"]
    assert operator["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "cnpg-system"}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_a_service_accepts_only_the_gateway_on_its_port(rendered: Build, name: str) -> None:
    (rule,) = api_rules(process_policy(rendered, name))
    assert [peer_pod_name(peer) for peer in rule["from"]] == ["gateway"]
    assert ports_of(rule) == {("TCP", PROCESSES[name])}


def test_http_edges_are_the_ones_the_settings_name(rendered: Build, monkeypatch: pytest.MonkeyPatch) -> None:
    """The HTTP calls between processes are the gateway's to each service (CMH_<SERVICE>_URL) and
    each service's to the gateway's JWKS (CMH_JWKS_URL); services call no other service. Every
    such edge, and no other, is open at both ends: the caller's egress and the callee's ingress."""
    wanted: set[tuple[str, str, int]] = set()
    for name in PROCESSES:
        settings = settings_from(
            env_of(rendered, container_of(rendered.get("Deployment", name))), monkeypatch
        )
        if name == "gateway":
            urls = [settings.service_url(service) for service in SERVICES]
        else:
            urls = [settings.effective_jwks_url()]
        for url in urls:
            parsed = urlsplit(url)
            wanted.add((name, str(parsed.hostname), int(parsed.port or 80)))

    egress, ingress = set(), set()
    for name in PROCESSES:
        spec = process_policy(rendered, name)["spec"]
        for rule in spec["egress"]:
            for peer in rule["to"]:
                if (callee := peer_pod_name(peer)) in PROCESSES:
                    egress |= {(name, callee, port) for _protocol, port in ports_of(rule)}
        for rule in spec["ingress"]:
            for peer in rule["from"]:
                if (caller := peer_pod_name(peer)) in PROCESSES:
                    ingress |= {(caller, name, port) for _protocol, port in ports_of(rule)}
    assert egress == wanted
    assert ingress == wanted


def test_processes_reach_only_postgres_nats_dns_and_each_other(rendered: Build) -> None:
    """Every egress peer of a process is PostgreSQL's pods on 5432, the NATS servers (namespace
    `nats`) on 4222, DNS in kube-system on 53, another process (checked above) or, for notify
    only, public HTTPS (checked below)."""
    for name in PROCESSES:
        for rule in process_policy(rendered, name)["spec"]["egress"]:
            ports = ports_of(rule)
            for peer in rule["to"]:
                if peer_pod_name(peer) in PROCESSES:
                    continue
                if peer == {"podSelector": {"matchLabels": DATABASE_PODS}}:
                    assert ports == {("TCP", 5432)}
                elif "ipBlock" in peer:
                    assert name == "notify"
                else:
                    namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                    if namespace == "nats":
                        assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "nats"
                        assert ports == {("TCP", 4222)}
                    else:
                        assert namespace == "kube-system", peer
                        assert ports == {("UDP", 53), ("TCP", 53)}


def test_only_notify_reaches_the_internet_and_never_private_addresses(rendered: Build) -> None:
    """Every address block any pod may reach is private (the CloudNativePG pods' Kubernetes API)
    but notify's one: HTTPS to anywhere except the private, link-local and loopback ranges."""
    public: dict[str, list[tuple[dict[str, Any], set[tuple[str, int]]]]] = {}
    for policy in policies(rendered):
        for rule in policy["spec"].get("egress", []):
            for peer in rule["to"]:
                block = peer.get("ipBlock")
                if block is not None and not is_private(block["cidr"]):
                    public.setdefault(policy["metadata"]["name"], []).append((block, ports_of(rule)))
    assert set(public) == {"notify"}
    ((block, ports),) = public["notify"]
    assert ports == {("TCP", 443)}
    excluded = [ipaddress.ip_network(cidr) for cidr in block["except"]]
    assert all(any(private.subnet_of(e) for e in excluded) for private in PRIVATE)


def test_the_migration_job_reaches_only_postgres_nats_and_dns(rendered: Build) -> None:
    """PostgreSQL for the migrations, grants and seed; NATS on 4222 for `cmh bus provision`
    (issue 18 §2); DNS; nothing else, and nobody reaches it."""
    spec = process_policy(rendered, MIGRATE_JOB)["spec"]
    assert "ingress" not in spec
    reached = set()
    for rule in spec["egress"]:
        for peer in rule["to"]:
            assert "ipBlock" not in peer
            if peer == {"podSelector": {"matchLabels": DATABASE_PODS}}:
                assert ports_of(rule) == {("TCP", 5432)}
                reached.add("postgres")
                continue
            namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            if namespace == "nats":
                assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "nats"
                assert ports_of(rule) == {("TCP", 4222)}
            else:
                assert namespace == "kube-system", peer
                assert ports_of(rule) == {("UDP", 53), ("TCP", 53)}
            reached.add(namespace)
    assert reached == {"postgres", "nats", "kube-system"}
    database = process_policy(rendered, "cmh-db")["spec"]["ingress"][0]
    (clients,) = database["from"]
    (expression,) = clients["podSelector"]["matchExpressions"]
    assert sorted(expression["values"]) == sorted([*PROCESSES, MIGRATE_JOB])
    assert ports_of(database) == {("TCP", 5432)}


# --- one role per process ---------------------------------------------------------------------------


def test_each_process_connects_as_its_own_role(rendered: Build) -> None:
    """No two Deployments share a role or a password Secret, none can read the migration role's
    Secret, and the Cluster declares exactly these roles, unprivileged, passwords from them."""
    secrets: dict[str, str] = {}
    for name in PROCESSES:
        deployment = rendered.get("Deployment", name)
        references = {
            variable["valueFrom"]["secretKeyRef"]["name"]
            for variable in container_of(deployment)["env"]
            if "valueFrom" in variable
        }
        assert "cmh-db-app" not in references
        (url,) = [v["value"] for v in container_of(deployment)["env"] if v["name"].endswith("_DATABASE_URL")]
        (password,) = [
            v["valueFrom"]["secretKeyRef"]
            for v in container_of(deployment)["env"]
            if v["name"] == "PGPASSWORD"
        ]
        secrets[make_url(url).username or ""] = password["name"]
    assert secrets == {f"cmh_{name}": f"cmh-db-{name}" for name in PROCESSES}
    assert len(set(secrets.values())) == len(PROCESSES)

    (cluster,) = rendered.of_kind("Cluster")
    roles = {role["name"]: role for role in cluster["spec"]["managed"]["roles"]}
    assert set(roles) == {f"cmh_{owner}" for owner in DATABASE_OWNERS} == set(secrets)
    for name, role in roles.items():
        assert role["passwordSecret"] == {"name": secrets[name]}
        assert role["login"] is True and role["ensure"] == "present"
        for power in ("superuser", "createdb", "createrole", "replication", "bypassrls"):
            assert role[power] is False, (name, power)


def test_production_makes_each_role_secret_from_an_ignored_file(production: Build) -> None:
    """CloudNativePG wants a basic-auth Secret whose username is the role; the name has no hash
    (the Cluster refers to it, and kustomize does not rewrite names in custom resources); the
    reload label makes the operator apply a changed password."""
    for name in PROCESSES:
        secret = production.get("Secret", f"cmh-db-{name}")
        assert secret["type"] == "kubernetes.io/basic-auth"
        assert base64.b64decode(secret["data"]["username"]).decode() == f"cmh_{name}"
        assert "password" in secret["data"]
        assert secret["metadata"]["labels"] == {"cnpg.io/reload": "true"}
        assert ("Secret", f"cmh-db-{name}") in production.unhashed
        assert any(
            path.name == f"db-{name}.password" and "secrets" in path.parts
            for path in production.missing_files + production.files_read
        )


# --- the grants, as text ----------------------------------------------------------------------------


def statements(sql: str) -> list[str]:
    """Top-level statements, comments dropped; a DO block is one statement."""
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    parts = re.split(r"(\$grants\$.*?\$grants\$)", body, flags=re.S)  # keep DO bodies whole
    found: list[str] = []
    for part in parts:
        if part.startswith("$grants$"):
            found[-1] += part
        else:
            pieces = part.split(";")
            if found and found[-1].rstrip().endswith("$grants$"):
                found[-1] += pieces.pop(0)
            found += pieces
    return [" ".join(statement.split()) for statement in found if statement.strip()]


def append_only_tables_of_the_migration() -> set[str]:
    path = ROOT / "gateway" / "migrations" / "versions" / "0002_security.py"
    spec = importlib.util.spec_from_file_location("cmh_gateway_0002", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return set(module.APPEND_ONLY)


def test_the_grants_let_the_gateway_only_append_to_the_audit_trail() -> None:
    """The runtime role gets no UPDATE, DELETE or TRUNCATE on the audit tables (the tables the
    migration guards with its append-only triggers): not by name, not by a schema-wide grant,
    not by default privileges, not by the loop over the other tables; and it is revoked."""
    generator = load_generator()
    sql = generator.grants_sql()
    assert (ROOT / "deploy" / "kubernetes" / "base" / "roles.sql").read_text() == sql
    assert append_only_tables_of_the_migration() == AUDIT_TABLES == set(generator.APPEND_ONLY["gateway"])
    all_statements = statements(sql)
    assert all_statements[0] == "BEGIN" and all_statements[-1] == "COMMIT"  # one transaction
    gateway = [s for s in all_statements if '"cmh_gateway"' in s or "'cmh_gateway'" in s]
    assert gateway
    changing = re.compile(r"\b(UPDATE|DELETE|TRUNCATE|ALL PRIVILEGES|ALL)\b")
    for statement in gateway:
        if not statement.startswith(("GRANT", "ALTER DEFAULT PRIVILEGES", "DO")):
            continue
        granted = statement.split(" ON ", 1)[0] if statement.startswith("GRANT") else statement
        if statement.startswith("DO"):
            # The one grant of UPDATE and DELETE: on every gateway table but the audit trail.
            (excluded,) = re.findall(r"NOT IN \(([^)]*)\)", statement)
            assert {t.strip().strip("'") for t in excluded.split(",")} == AUDIT_TABLES
            continue
        if "ON SEQUENCES" in statement or "ALL SEQUENCES" in statement:
            assert "UPDATE" not in statement  # no setval either
            continue
        if statement.startswith("ALTER DEFAULT PRIVILEGES"):
            granted = statement.split(" GRANT ", 1)[1].split(" ON ", 1)[0]
        assert not changing.search(granted.replace("ALL TABLES", "")), statement
    revokes = [s for s in gateway if s.startswith("REVOKE")]
    for table in AUDIT_TABLES:
        (revoke,) = [s for s in revokes if f'"gateway"."{table}"' in s]
        assert {"UPDATE", "DELETE", "TRUNCATE"} <= set(re.findall(r"[A-Z]+", revoke.split(" ON ")[0]))
        assert all_statements.index(revoke) > max(
            all_statements.index(s) for s in gateway if s.startswith("GRANT")
        )


def test_each_role_is_granted_only_its_own_schema() -> None:
    for statement in statements(load_generator().grants_sql()):
        if statement in ("BEGIN", "COMMIT"):
            continue
        schemas = set(re.findall(r'"(\w+)"\."|(?:SCHEMA|EXISTS) "(\w+)"|schemaname = \'(\w+)\'', statement))
        names = {name for group in schemas for name in group if name}
        roles = set(re.findall(r"\bcmh_(\w+)\b", statement))
        assert len(names) == 1, statement
        assert roles <= names, statement


# --- the grants, applied to PostgreSQL --------------------------------------------------------------


@pytest.fixture
async def scratch() -> AsyncIterator[tuple[str, str, str]]:
    """(url, schema prefix, role prefix): scratch roles for every owner, dropped afterwards with
    their schemas."""
    url = os.environ.get("CMH_TEST_DATABASE_URL")
    if not url:
        pytest.skip("CMH_TEST_DATABASE_URL is unset: the grants are checked as text only")
    token = uuid.uuid4().hex[:8]
    schema_prefix, role_prefix = f"grants_{token}_", f"cmh_{token}_"
    roles = [f"{role_prefix}{owner}" for owner in DATABASE_OWNERS]
    owner = await asyncpg.connect(url)
    try:
        for role in roles:
            await owner.execute(f'CREATE ROLE "{role}" LOGIN')
        yield url, schema_prefix, role_prefix
    finally:
        for name in DATABASE_OWNERS:
            await owner.execute(f'DROP SCHEMA IF EXISTS "{schema_prefix}{name}" CASCADE')
        for role in roles:
            await owner.execute(f'DROP OWNED BY "{role}"')
            await owner.execute(f'DROP ROLE "{role}"')
        await owner.close()


async def test_the_gateway_role_can_append_and_read_the_audit_trail_but_not_change_it(
    scratch: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway's real migrations, then roles.sql (as the owner, as the Job does), then the
    runtime role connecting with its own name as the Deployment does: it inserts and reads audit
    rows, but UPDATE, DELETE and TRUNCATE are refused by privileges (before the triggers are even
    reached), it cannot lift the triggers, other gateway tables stay writable, and another
    service's schema is out of its reach."""
    from cmh.migrations import migrate

    url, schema_prefix, role_prefix = scratch
    schema, role = f"{schema_prefix}gateway", f"{role_prefix}gateway"
    await migrate("gateway", url, schema=schema)
    owner = await asyncpg.connect(url)
    try:
        await owner.execute(load_generator().grants_sql(schema_prefix, role_prefix))
        # A table a later migration adds to a service: the default privileges cover it at once.
        await owner.execute(f'CREATE TABLE "{schema_prefix}triage".later (id int)')
    finally:
        await owner.close()

    monkeypatch.setenv("PGPASSWORD", "unused-here")  # the Deployments' way; this server trusts
    parsed = make_url(url)
    as_runtime = str(parsed.set(username=role, password=None).render_as_string(hide_password=False))
    runtime = await asyncpg.connect(as_runtime, server_settings={"search_path": schema})
    try:
        assert await runtime.fetchval("SELECT current_user") == role
        audit_id = await runtime.fetchval(
            "INSERT INTO audit_records (event_id, occurred_at, recorded_at, service, action, resource_type,"
            " resource_ids, outcome, client_id, organisation, client_kind, purpose_of_use, chain_hash)"
            " VALUES ('e1', now(), now(), 'triage', 'read', 'Referral', '[]', 'success', 'c1', 'X26',"
            " 'provider', 'TREAT', 'h') RETURNING id"
        )
        await runtime.execute(
            "INSERT INTO audit_record_persons (audit_id, person_id) VALUES ($1, 'p1')", audit_id
        )
        assert await runtime.fetchval("SELECT count(*) FROM audit_records") == 1
        assert await runtime.fetchval("SELECT count(*) FROM audit_record_persons") == 1

        for statement in (
            "UPDATE audit_records SET outcome = 'denied'",
            "DELETE FROM audit_records",
            "UPDATE audit_record_persons SET person_id = 'p2'",
            "DELETE FROM audit_record_persons",
            "TRUNCATE audit_records CASCADE",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for table"):
                await runtime.execute(statement)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="must be owner"):
            await runtime.execute("ALTER TABLE audit_records DISABLE TRIGGER audit_records_append_only")

        # The rest of its schema is its to change (used assertions are deleted when they expire).
        await runtime.execute("INSERT INTO used_client_assertions VALUES ('c1', 'j1', now())")
        assert await runtime.execute("UPDATE used_client_assertions SET jti = 'j2'") == "UPDATE 1"
        assert await runtime.execute("DELETE FROM used_client_assertions") == "DELETE 1"
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for schema"):
            await runtime.fetchval(f'SELECT count(*) FROM "{schema_prefix}triage".later')
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match=r"must be owner|permission denied"):
            await runtime.execute("CREATE TABLE audit_copy (id int)")
    finally:
        await runtime.close()

    triage = await asyncpg.connect(str(parsed.set(username=f"{role_prefix}triage").render_as_string(False)))
    try:
        assert await triage.fetchval(f'SELECT count(*) FROM "{schema_prefix}triage".later') == 0
        assert await triage.execute(f'INSERT INTO "{schema_prefix}triage".later VALUES (1)') == "INSERT 0 1"
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for schema"):
            await triage.fetchval(f'SELECT count(*) FROM "{schema}".audit_records')
    finally:
        await triage.close()
