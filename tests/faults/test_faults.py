"""Faults injected into a running cluster (see conftest): after each, every referral a client saw
accepted exists once in triage, has its episode once in careplan and is counted once in reporting,
and nothing is stored that no client saw accepted (so no 2xx was answered for something not stored,
and no retry stored twice). The tests run in order on one cluster; each adds referrals and checks
the whole history again."""

from __future__ import annotations

import asyncio
import json
import time

import nats
from nats.js.api import ConsumerConfig, DeliverPolicy

from tests.faults.conftest import Cluster
from tests.faults.traffic import report


def test_baseline_no_fault(cluster: Cluster) -> None:
    outcome = cluster.referrals(20, "baseline")
    assert not outcome.failed
    report("baseline", f"{outcome.summary()}; {cluster.assert_nothing_lost_or_doubled()}")


def test_a_nats_node_killed_during_a_stream_of_referrals(cluster: Cluster) -> None:
    leader = asyncio.run(_stream_leader(cluster))
    node = next(n for n in cluster.nats.nodes if n.server_name == leader)  # the worst one to lose

    def kill_node() -> None:
        time.sleep(0.5)
        assert node.process is not None
        node.process.kill()  # SIGKILL: its replicas of the stream are gone with it
        node.process.wait()
        node.process = None

    outcome = cluster.referrals(40, "nats-node", during=kill_node)
    assert not outcome.failed
    stored = cluster.assert_nothing_lost_or_doubled()
    report("nats node killed", f"stream leader {leader} killed; {outcome.summary()}; {stored}")
    node.start()  # it rejoins and catches up for the next tests


def test_postgresql_restarting_during_writes(cluster: Cluster) -> None:
    def restart() -> None:
        time.sleep(0.5)
        cluster.pg_link.cut()  # every connection dropped, new ones refused: a restart
        time.sleep(3)
        cluster.pg_link.restore()

    outcome = cluster.referrals(30, "postgres", during=restart)
    assert not outcome.failed and outcome.refused_answers > 0
    # The database briefly away is a 503 with Retry-After (shared.db.database_busy), never a 500.
    assert "500" not in outcome.refusals and outcome.busy_without_retry_after == 0, outcome.refusals
    report("postgresql restart", f"{outcome.summary()}; {cluster.assert_nothing_lost_or_doubled()}")


def test_a_replica_killed_mid_handler(cluster: Cluster) -> None:
    triage, careplan = cluster.process("triage", 1), cluster.process("careplan", 1)

    def kill_replicas() -> None:
        time.sleep(0.8)  # requests in flight on triage-1, episodes being opened on careplan-1
        triage.kill()
        careplan.kill()

    outcome = cluster.referrals(40, "replica", during=kill_replicas)
    assert not outcome.failed, outcome.last_failure
    stored = cluster.assert_nothing_lost_or_doubled()
    report("replicas killed", f"{outcome.summary()}; {stored}")
    triage.start()
    careplan.start()
    cluster.wait_ready([triage, careplan])


def test_the_network_to_the_broker_paused(cluster: Cluster) -> None:
    def partition() -> None:
        time.sleep(0.5)
        for link in cluster.nats_links:
            link.pause()
        time.sleep(4)
        for link in cluster.nats_links:
            link.restore()

    outcome = cluster.referrals(30, "partition", during=partition)
    assert not outcome.failed
    report("broker paused", f"{outcome.summary()}; {cluster.assert_nothing_lost_or_doubled()}")


def test_every_event_delivered_twice(cluster: Cluster) -> None:
    outcome = cluster.referrals(15, "twice")
    assert not outcome.failed
    cluster.assert_nothing_lost_or_doubled()
    republished = asyncio.run(_publish_everything_again(cluster))
    # Wait until every durable consumer has taken all of it, then nothing may have changed.
    asyncio.run(_until_consumers_idle(cluster))
    stored = cluster.assert_nothing_lost_or_doubled(timeout=10)
    report("every event twice", f"{republished} events published a second time; {stored}")


def test_reporting_stopped_for_a_while_catches_up(cluster: Cluster) -> None:
    reporting = cluster.process("reporting")
    reporting.terminate()
    outcome = cluster.referrals(20, "reporting-down")
    assert not outcome.failed
    held = cluster.holdings()
    missing = [r for r in outcome.accepted if r not in held["reporting"]]
    assert missing == outcome.accepted  # it really was away
    started = time.monotonic()
    reporting.start()
    cluster.wait_ready([reporting])
    stored = cluster.assert_nothing_lost_or_doubled()
    report(
        "reporting stopped",
        f"{outcome.summary()}; caught up {len(missing)} referrals in {time.monotonic() - started:.1f}s "
        f"after restart; {stored}",
    )


async def _publish_everything_again(cluster: Cluster) -> int:
    """Every triage and careplan event on the stream, sent again under a new message id (so
    JetStream's de-duplication does not hide it): consumers see each event twice."""
    connection = await nats.connect(servers=cluster.nats.url.split(","))
    try:
        js = connection.jetstream()
        count = 0
        for subject in ("cmh.triage.>", "cmh.careplan.>"):
            reader = await js.pull_subscribe(
                subject, durable=None, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
            )
            pending = (await reader.consumer_info()).num_pending
            while pending > 0:
                batch = await reader.fetch(min(pending, 200), timeout=5)
                for message in batch:
                    event_id = json.loads(message.data)["id"]
                    await js.publish(
                        message.subject, message.data, headers={"Nats-Msg-Id": f"again-{event_id}"}
                    )
                    count += 1
                pending -= len(batch)
            await reader.unsubscribe()
        return count
    finally:
        await connection.close()


async def _until_consumers_idle(cluster: Cluster) -> None:
    connection = await nats.connect(servers=cluster.nats.url.split(","))
    try:
        js = connection.jetstream()

        async def idle() -> bool:
            infos = await js.consumers_info("CMH")
            return all(i.num_pending == 0 and i.num_ack_pending == 0 for i in infos if i.config.durable_name)

        deadline = time.monotonic() + 60
        while not await idle():
            assert time.monotonic() < deadline, "consumers did not drain the repeated events"
            await asyncio.sleep(0.3)
    finally:
        await connection.close()


async def _stream_leader(cluster: Cluster) -> str:
    connection = await nats.connect(servers=cluster.nats.url.split(","))
    try:
        info = await connection.jetstream().stream_info("CMH")
        assert info.cluster is not None and info.config.num_replicas == 3
        return str(info.cluster.leader)
    finally:
        await connection.close()
