"""`cmh status` (issue 21, operations 4): the pipeline's health from every process's /metrics, and
each shipped alert rule's condition evaluated against it.

From exposition text (what a scrape returns): a healthy suite is all ok and exits 0; an outbox
stalled past the rule's minute makes `CmhOutboxStalled` fire and exits 1; a process that does not
answer is reported so, never as a traceback. Then for real: a service running against a real
nats-server with its /metrics served the way `cmh serve` serves it, `cmh status` pointed at it is
healthy; the broker stopped, `CmhBrokerDown` fires and the exit status is 1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cmh.alerts import RULES
from cmh.status import (
    FIRING,
    NO_DATA,
    OK,
    Report,
    Scrape,
    Target,
    build_report,
    default_targets,
    from_text,
    parse_url_option,
    render_text,
)
from shared import metrics
from shared.metrics import serve_metrics
from shared.nats_server import EmbeddedNatsServer, free_port
from shared.settings import SERVICES, Settings
from tests.shared.test_pipeline_alerts import scrape
from tests.shared.test_service_app import probe_app, running
from tests.support import eventually, migrate_for_test

NOW = 1_800_000_000.0
AUDIT = "gateway-audit"
PROCESSES = (*SERVICES, "gateway")  # as `cmh run` starts them

Cmh = Callable[..., tuple[int, str, str]]


def exposition(process: str, **overrides: float) -> str:
    """What a healthy process of the suite exports, the pipeline's gauges only; `overrides` set
    a gauge's value by its metric name (every series of it in the process)."""
    lines = [
        f'cmh_broker_connected{{service="{process}"}} 1.0',
        f'cmh_outbox_backlog{{service="{process}"}} 0.0',
        f'cmh_outbox_oldest_unpublished_seconds{{service="{process}"}} 0.0',
    ]
    durable = AUDIT if process == "gateway" else f"{process}-events"
    if process in ("gateway", "careplan", "reporting", "notify"):
        labels = f'service="{process}",durable="{durable}"'
        lines += [
            f"cmh_consumer_pending{{{labels}}} 0.0",
            f"cmh_consumer_last_progress_timestamp_seconds{{{labels}}} {NOW - 2}",
            f"cmh_dead_letters{{{labels}}} 0.0",
        ]
    if process == "notify":
        lines += [
            'cmh_webhook_backlog{service="notify"} 3.0',
            'cmh_webhook_oldest_pending_seconds{service="notify"} 4.0',
        ]
    if process == "careplan":
        lines += [
            f'cmh_clock_scan_last_success_timestamp_seconds{{service="careplan"}} {NOW - 30}',
            'cmh_clock_scan_interval_seconds{service="careplan"} 60.0',
        ]
    out = []
    for line in lines:
        name = line.split("{", 1)[0]
        value = overrides.get(name)
        out.append(line if value is None else f"{line.rsplit(' ', 1)[0]} {value}")
    return "\n".join(out) + "\n"


def suite(**broken: dict[str, float] | None) -> list[Scrape]:
    """A scrape of every process; `broken={process: {metric: value}}` changes one, None: it does
    not answer."""
    scrapes = []
    for process in PROCESSES:
        target = Target(process, f"http://127.0.0.1:1/{process}")
        if process in broken and broken[process] is None:
            scrapes.append(Scrape(target, None, "ConnectError"))
        else:
            scrapes.append(from_text(target, exposition(process, **(broken.get(process) or {}))))
    return scrapes


def states(report: Report) -> dict[str, str]:
    return {alert.rule.alert: alert.state for alert in report.alerts}


# --- from given metric text ----------------------------------------------------------------------


def test_a_healthy_suite_is_all_ok() -> None:
    report = build_report(suite(), now=NOW)
    assert report.healthy
    assert states(report) == {rule.alert: OK for rule in RULES}
    text = "\n".join(render_text(report))
    assert "healthy: every process answered" in text
    assert "FIRING" not in text and "UNREACHABLE" not in text
    # The figures the alerts watch, per process.
    notify = next(p for p in report.processes if p.process == "notify")
    assert (notify.webhook_backlog, notify.webhook_oldest_seconds) == (3.0, 4.0)
    careplan = next(p for p in report.processes if p.process == "careplan")
    assert (careplan.clock_scan_age, careplan.clock_scan_interval) == (30.0, 60.0)
    assert report.audit_ingestion is not None
    process, audit = report.audit_ingestion
    assert (process, audit.durable, audit.pending, audit.since_progress) == ("gateway", AUDIT, 0.0, 2.0)
    assert "audit ingestion    gateway-audit: 0 pending, progress 2s ago, 0 dead letters" in text
    assert "clock scan         last 30s ago, every 1m 00s" in text


def test_a_stalled_outbox_fires_its_alert_and_fails_the_status() -> None:
    report = build_report(suite(triage={"cmh_outbox_oldest_unpublished_seconds": 61.0}), now=NOW)
    assert not report.healthy
    assert states(report) == {
        rule.alert: FIRING if rule.alert == "CmhOutboxStalled" else OK for rule in RULES
    }
    (stalled,) = report.firing
    assert [dict(labels) for labels in stalled.series] == [{"service": "triage", "process": "triage"}]
    assert stalled.summaries() == ["triage's outbox has not published for over a minute"]
    text = "\n".join(render_text(report))
    assert "CmhOutboxStalled        FIRING  critical: triage" in text
    assert "NOT HEALTHY: 1 firing (CmhOutboxStalled)" in text

    # The rule's own threshold: a minute exactly is not yet over it.
    assert build_report(suite(triage={"cmh_outbox_oldest_unpublished_seconds": 60.0}), now=NOW).healthy


def test_each_condition_is_read_from_its_own_process() -> None:
    stale_scan = suite(careplan={"cmh_clock_scan_last_success_timestamp_seconds": NOW - 301})
    assert [a.rule.alert for a in build_report(stale_scan, now=NOW).firing] == ["CmhClockScanStale"]
    stale_audit = suite(gateway={"cmh_consumer_last_progress_timestamp_seconds": NOW - 601})
    (audit,) = build_report(stale_audit, now=NOW).firing
    assert audit.rule.alert == "CmhAuditIngestionStale"
    assert [labels["durable"] for labels in audit.series] == [AUDIT]
    dead = suite(reporting={"cmh_dead_letters": 2.0}, notify={"cmh_broker_connected": 0.0})
    assert {a.rule.alert for a in build_report(dead, now=NOW).firing} == {"CmhDeadLetters", "CmhBrokerDown"}


def test_a_process_that_does_not_answer_is_reported_unreachable() -> None:
    report = build_report(suite(careplan=None), now=NOW)
    assert not report.healthy
    assert [p.process for p in report.unreachable] == ["careplan"]
    # careplan alone exports the clock scan: with it silent, its rule has nothing to say.
    assert states(report)["CmhClockScanStale"] == NO_DATA
    assert not report.firing
    text = "\n".join(render_text(report))
    assert "careplan   UNREACHABLE  http://127.0.0.1:1/careplan: ConnectError" in text
    assert "NOT HEALTHY: 1 unreachable (careplan)" in text


def test_a_page_that_is_not_metrics_is_unreachable_not_a_traceback() -> None:
    scraped = from_text(Target("triage", "http://x/metrics"), "<html>hello</html>\n{{{")
    assert scraped.samples is None and scraped.error is not None
    assert "not a Prometheus exposition" in scraped.error


def test_the_addresses_are_the_suites_own() -> None:
    settings = Settings(host="127.0.0.1", gateway_port=8000, metrics_port_offset=1000)
    targets = {t.process: t.url for t in default_targets(settings)}
    assert list(targets) == list(PROCESSES)
    assert targets["gateway"] == "http://127.0.0.1:9000/metrics"
    assert targets["triage"] == f"http://127.0.0.1:{settings.triage_port + 1000}/metrics"
    cluster = {t.process: t.url for t in default_targets(settings, replicas=2)}
    assert cluster["triage-2"] == f"http://127.0.0.1:{settings.triage_port + 1100}/metrics"
    assert len(cluster) == 2 * len(SERVICES) + 1
    assert default_targets(settings.model_copy(update={"metrics_port_offset": 0})) == []
    assert parse_url_option("triage=http://10.0.0.5:9101") == Target("triage", "http://10.0.0.5:9101/metrics")
    with pytest.raises(ValueError, match="NAME="):
        parse_url_option("http://10.0.0.5:9101")


# --- for real: a running service's /metrics ------------------------------------------------------


@pytest.fixture
def fresh_pipeline_gauges() -> Iterator[None]:
    """The test process's registry holds series earlier tests left (another service's consumers, a
    clock scan long stopped); a real process exports only its own. Forget them."""
    gauges = (
        metrics.BROKER_CONNECTED,
        metrics.OUTBOX_BACKLOG,
        metrics.OUTBOX_OLDEST_UNPUBLISHED,
        metrics.CONSUMER_PENDING,
        metrics.CONSUMER_PROGRESS,
        metrics.DEAD_LETTERS,
        metrics.WEBHOOK_BACKLOG,
        metrics.WEBHOOK_OLDEST_PENDING,
        metrics.CLOCK_SCAN_LAST_SUCCESS,
        metrics.CLOCK_SCAN_INTERVAL,
    )
    for gauge in gauges:
        gauge.clear()
    yield
    for gauge in gauges:
        gauge.clear()


async def status(cmh: Cmh, *argv: str) -> tuple[int, str]:
    code, out, err = await asyncio.to_thread(cmh, "status", *argv)
    assert err == ""
    return code, out


@pytest.mark.usefixtures("fresh_pipeline_gauges")
async def test_cmh_status_against_a_running_service(
    make_settings: Callable[..., Settings], nats_server: EmbeddedNatsServer, cmh: Cmh
) -> None:
    settings = make_settings(outbox_poll_seconds=0.2)
    await migrate_for_test("triage", settings)
    port = free_port()
    server = serve_metrics("127.0.0.1", port)
    url = f"triage=http://127.0.0.1:{port}"

    async def connected() -> bool:
        return any(s.name == "cmh_broker_connected" and s.value == 1 for s in await scrape(port))

    try:
        async with running(probe_app(settings)) as client:
            await eventually(connected, timeout=30)
            code, out = await status(cmh, "--url", url)
            assert code == 0, out
            assert "broker             connected" in out
            assert "outbox             0 unpublished, oldest 0s" in out
            assert "healthy: every process answered" in out

            code, out = await status(cmh, "--url", url, "--json")
            document: dict[str, Any] = json.loads(out)
            assert code == 0 and document["healthy"] is True
            (triage,) = document["processes"]
            assert triage["reachable"] and triage["broker_connected"] is True
            assert {a["alert"]: a["state"] for a in document["alerts"]}["CmhBrokerDown"] == "ok"

            # Another process that does not answer: reported, and the status fails.
            silent = f"careplan=http://127.0.0.1:{free_port()}"
            code, out = await status(cmh, "--url", url, "--url", silent, "--timeout", "1")
            assert code == 1
            assert "careplan  UNREACHABLE" in out and "NOT HEALTHY: 1 unreachable (careplan)" in out

            nats_server.stop()
            assert (await client.post("/triage/probe/events")).status_code == 200  # waits in the outbox
            await eventually(lambda: _not(connected), timeout=30)
            code, out = await status(cmh, "--url", url, "--json")
            document = json.loads(out)
            assert code == 1 and document["healthy"] is False
            (broker_down,) = [a for a in document["alerts"] if a["alert"] == "CmhBrokerDown"]
            assert broker_down["state"] == "firing"
            assert broker_down["series"] == [{"service": "triage", "process": "triage"}]
            assert broker_down["summaries"] == ["triage has lost NATS"]
            code, out = await status(cmh, "--url", url)
            assert code == 1 and "broker             NOT CONNECTED" in out
            assert "CmhBrokerDown           FIRING  critical: triage" in out

            nats_server.start()
            await eventually(connected, timeout=30)
            code, out = await status(cmh, "--url", url)
            assert code == 0, out
    finally:
        server.shutdown()


async def _not(predicate: Callable[[], Any]) -> bool:
    return not await predicate()
