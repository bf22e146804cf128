"""The must-show test of the pipeline's alerts (issue 21, operations 4): a service running against a
real nats-server, the broker stopped, an event committed: the shipped `CmhBrokerDown` and
`CmhOutboxStalled` rules (read from deploy/prometheus/alerts.yaml, evaluated against a real
`/metrics` scrape) become true; the broker started again, they clear.

`CmhOutboxStalled`'s threshold is 60 s; the test evaluates the shipped expression with its number
lowered to 1 s (`LOWERED_OUTBOX_THRESHOLD`), so it does not wait a minute: the metric, the
comparison and the labels are the rule's own. `for:` durations are Prometheus's to apply, not
evaluated here."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml  # type: ignore[import-untyped]

from cmh.alerts import Condition, Sample, parse, parse_exposition
from shared.metrics import serve_metrics
from shared.nats_server import EmbeddedNatsServer, free_port
from shared.settings import Settings
from tests.shared.test_service_app import probe_app, running
from tests.support import eventually, migrate_for_test

ALERTS = Path(__file__).parents[2] / "deploy" / "prometheus" / "alerts.yaml"
LOWERED_OUTBOX_THRESHOLD = 1.0  # seconds, instead of the rule's 60 (see the module's docstring)


def shipped(alert: str) -> Condition:
    (group,) = yaml.safe_load(ALERTS.read_text())["groups"]
    (rule,) = [rule for rule in group["rules"] if rule["alert"] == alert]
    return parse(rule["expr"])


async def scrape(port: int) -> list[Sample]:
    def get() -> str:
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        response.raise_for_status()
        return response.text

    return parse_exposition(await asyncio.to_thread(get))


async def test_stopping_the_broker_makes_the_stall_alerts_fire_and_starting_it_clears_them(
    make_settings: Callable[..., Settings], nats_server: EmbeddedNatsServer
) -> None:
    broker_down = shipped("CmhBrokerDown")
    stalled_rule = shipped("CmhOutboxStalled")
    assert stalled_rule.number == 60
    stalled = dataclasses.replace(stalled_rule, number=LOWERED_OUTBOX_THRESHOLD)

    settings = make_settings(outbox_poll_seconds=0.2)
    await migrate_for_test("triage", settings)
    port = free_port()
    metrics = serve_metrics("127.0.0.1", port)
    triage = {"service": "triage"}

    async def firing(condition: Condition) -> bool:
        return triage in condition.firing(await scrape(port))

    async def clear() -> bool:
        return not await firing(broker_down) and not await firing(stalled)

    try:
        async with running(probe_app(settings)) as client:
            await eventually(clear, timeout=30)  # connected, and the relay has found nothing waiting

            nats_server.stop()
            assert (await client.post("/triage/probe/events")).status_code == 200  # committed
            await eventually(lambda: firing(broker_down), timeout=30)
            await eventually(lambda: firing(stalled), timeout=30)
            assert not stalled_rule.firing(await scrape(port))  # the real 60 s not reached yet

            nats_server.start()
            await eventually(clear, timeout=30)
    finally:
        metrics.shutdown()
