"""deploy/prometheus/alerts.yaml and deploy/grafana/cmh-pipeline.json: the rules are what
cmh/alerts.py renders, every metric they name is one the suite exports, each has its texts, and the
dashboard has a panel for every metric an alert watches."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from prometheus_client import REGISTRY

import services.careplan.app
import services.notify.delivery
import shared.consumer
import shared.metrics
import shared.outbox
from cmh.alerts import RULES, Sample, metric_names, parse, render

DEPLOY = Path(__file__).parents[2] / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
DASHBOARD = DEPLOY / "grafana" / "cmh-pipeline.json"
assert shared.metrics and shared.outbox and shared.consumer  # the modules whose metrics are registered
assert services.careplan.app and services.notify.delivery


def shipped_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    (group,) = document["groups"]
    return list(group["rules"])


def registered_metrics() -> set[str]:
    """Every family and series name the process registry exports (a counter's `_total` too)."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(f"{family.name}_total")
    return names


def test_the_rule_file_is_what_cmh_alerts_renders() -> None:
    assert ALERTS.read_text() == render(), "run: python -m cmh.alerts > deploy/prometheus/alerts.yaml"


def test_every_metric_an_alert_names_is_exported_by_the_suite() -> None:
    names = {name for rule in shipped_rules() for name in metric_names(rule["expr"])}
    assert names, "no metric found in the rules"
    assert names <= registered_metrics(), names - registered_metrics()
    assert names <= set(re.findall(r'"(cmh_[a-z_]+)"', Path(shared.metrics.__file__).read_text()))


@pytest.mark.parametrize("rule", shipped_rules(), ids=lambda rule: rule["alert"])
def test_each_rule_is_complete(rule: dict[str, Any]) -> None:
    assert re.fullmatch(r"Cmh[A-Z][A-Za-z]+", rule["alert"])
    assert re.fullmatch(r"\d+[smh]", rule["for"])
    assert rule["labels"]["severity"] in {"warning", "critical"}
    for text in ("summary", "description", "runbook"):
        assert len(rule["annotations"][text]) > 20, text
    parse(rule["expr"])  # one of the forms cmh status and the tests evaluate


def test_the_expected_alerts_are_shipped() -> None:
    assert {rule["alert"] for rule in shipped_rules()} == {
        "CmhBrokerDown",
        "CmhOutboxStalled",
        "CmhConsumerLagging",
        "CmhDeadLetters",
        "CmhWebhookBacklog",
        "CmhClockScanStale",
        "CmhAuditIngestionStale",
    }
    assert len(RULES) == len(shipped_rules())


def test_the_evaluator_reads_the_forms_used() -> None:
    connected = parse("cmh_broker_connected == 0")
    assert connected.firing([Sample("cmh_broker_connected", {"service": "triage"}, 0.0)]) == [
        {"service": "triage"}
    ]
    assert connected.firing([Sample("cmh_broker_connected", {"service": "triage"}, 1.0)]) == []
    stale = parse(
        "time() - cmh_clock_scan_last_success_timestamp_seconds > 5 * cmh_clock_scan_interval_seconds"
    )
    samples = [
        Sample("cmh_clock_scan_last_success_timestamp_seconds", {}, 1000.0),
        Sample("cmh_clock_scan_interval_seconds", {}, 60.0),
    ]
    assert stale.firing(samples, now=1299.0) == []
    assert stale.firing(samples, now=1301.0) == [{}]
    audit = parse('time() - cmh_consumer_last_progress_timestamp_seconds{durable="gateway-audit"} > 600')
    other = Sample("cmh_consumer_last_progress_timestamp_seconds", {"durable": "reporting"}, 0.0)
    assert audit.firing([other], now=10_000) == []
    with pytest.raises(ValueError, match="not a form"):
        parse("rate(cmh_outbox_published_total[5m]) > 1")


def test_the_dashboard_has_a_panel_for_every_alerted_metric() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "cmh-pipeline" and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        assert panel["type"] and panel["title"] and panel["targets"]
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert all(target["expr"] and target["refId"] for target in panel["targets"])
    plotted = {
        name
        for panel in panels
        for target in panel["targets"]
        for name in re.findall(r"cmh_[a-z_]+", target["expr"])
    }
    alerted = {name for rule in shipped_rules() for name in metric_names(rule["expr"])}
    assert alerted <= plotted, alerted - plotted
    assert plotted <= registered_metrics(), plotted - registered_metrics()
