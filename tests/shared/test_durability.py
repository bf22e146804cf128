"""An acknowledged write is durable in every mode (issue 21 §1): SQLite commits with
synchronous=FULL, the bundled single nats-server syncs every JetStream write to disk before it
acknowledges it; a cluster relies on replication to a quorum instead (README, Durability)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from shared.db import Database
from shared.nats_server import EmbeddedNatsServer, NatsCluster, free_port, wait_for_jetstream


async def test_sqlite_commits_reach_the_disk_before_they_are_acknowledged(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/durable.db")
    try:
        async with db.session() as session:
            assert await session.scalar(text("PRAGMA synchronous")) == 2  # FULL
            assert await session.scalar(text("PRAGMA journal_mode")) == "wal"
    finally:
        await db.dispose()


def test_the_bundled_server_syncs_every_write_and_starts_with_it(tmp_path: Path) -> None:
    server = EmbeddedNatsServer(tmp_path / "nats", port=free_port())
    assert "sync_interval: always" in server.server_config()
    server.start()
    try:
        # The server took the option (an unknown or bad one stops it starting) and JetStream answers.
        assert "sync_interval: always" in server.server_config_file.read_text()
        wait_for_jetstream(server.url, timeout=15)
    finally:
        server.stop(graceful=False)


def test_a_cluster_relies_on_its_quorum_not_each_nodes_fsync(tmp_path: Path) -> None:
    cluster = NatsCluster(tmp_path / "cluster")
    assert all("sync_interval" not in node.server_config() for node in cluster.nodes)
