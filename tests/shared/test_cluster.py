"""`cmh cluster`'s topology: replica ports and the URLs the gateway spreads over; it refuses SQLite
(replicas must share one database). The cluster itself is exercised process by process by the
fault tests (tests/faults)."""

from __future__ import annotations

from typing import Any

from cmh.supervisor import Topology, replica_port, replica_urls
from shared.settings import SERVICES, Settings


def test_replicas_listen_a_hundred_ports_apart_and_the_gateway_knows_them_all() -> None:
    settings = Settings()
    ports = {replica_port(settings, s, r) for s in SERVICES for r in (1, 2)}
    assert len(ports) == 2 * len(SERVICES) and settings.gateway_port not in ports
    urls = replica_urls(settings, "triage", 2)
    spread = Settings(triage_url=urls).service_urls("triage")
    assert spread == ["http://127.0.0.1:8101", "http://127.0.0.1:8201"]
    assert Topology() == Topology(replicas=1, nats_nodes=1)


def test_cmh_cluster_needs_postgresql(cmh: Any) -> None:
    code, _, err = cmh("cluster")
    assert code == 2 and "CMH_DATABASE_URL=postgresql" in err
