"""`cmh status`: the pipeline's health from the command line, the figures Prometheus alerts on
(issue 21, operations 4).

Every process of the suite is scraped on its `/metrics` (its API port plus
`CMH_METRICS_PORT_OFFSET`, at the addresses `cmh run` and `cmh cluster --replicas N` give them, or
wherever `--url NAME=URL` says), and the scrape is shown per process: the broker, the outbox, each
durable consumer, webhooks, the plan-clock scan and audit ingestion. Then every rule of
cmh/alerts.py is evaluated, by the evaluator Prometheus's rules are tested with, against those
samples: whether its condition is true now. A rule's `for` duration cannot be seen in one scrape;
Prometheus applies it, this does not. Exit 0 when every process answered and no condition is true,
1 otherwise, 2 when there is nothing to scrape.

Samples are labelled `process` (the name scraped, as Prometheus adds `instance`), so rules that
compare two series (`time() - a > 5 * b`) match them within one process. Labels are process and
durable names only: nothing here is about a person.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from cmh.alerts import AUDIT_DURABLE, RULES, Labels, Rule, Sample, parse, parse_exposition
from shared.metrics import metrics_port
from shared.settings import SERVICES, Settings

PROCESS_LABEL = "process"
DEFAULT_TIMEOUT = 3.0
FIRING, OK, NO_DATA = "firing", "ok", "no_data"

# --- where to scrape ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    process: str
    url: str  # the /metrics address


def default_targets(settings: Settings, replicas: int = 1) -> list[Target]:
    """Every process as `cmh run` (one of each) or `cmh cluster --replicas N` starts them: each
    service's replicas, then the gateway. Empty when no process serves /metrics (offset 0)."""
    from cmh.supervisor import replica_port

    offset = settings.metrics_port_offset
    processes: list[tuple[str, int]] = [
        (f"{service}-{replica}" if replicas > 1 else service, replica_port(settings, service, replica))
        for service in SERVICES
        for replica in range(1, replicas + 1)
    ]
    processes.append(("gateway", settings.gateway_port))
    targets: list[Target] = []
    for name, api_port in processes:
        port = metrics_port(api_port, offset)
        if port is not None:
            targets.append(Target(name, f"http://{settings.host}:{port}/metrics"))
    return targets


def parse_url_option(text: str) -> Target:
    """`NAME=URL`: a process's /metrics address (a bare `http://host:port` means its /metrics)."""
    name, sep, url = text.partition("=")
    parts = urlsplit(url.strip())
    if not sep or not name.strip() or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"--url wants NAME=http://host:port[/metrics], not {text!r}")
    url = url.strip()
    if parts.path in ("", "/"):
        url = url.rstrip("/") + "/metrics"
    return Target(name.strip(), url)


# --- scraping (I/O) -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scrape:
    target: Target
    samples: tuple[Sample, ...] | None  # None: the process did not answer with metrics
    error: str | None = None


def from_text(target: Target, text: str) -> Scrape:
    """A scrape's exposition text as samples labelled with the process."""
    try:
        samples = parse_exposition(text)
    except Exception as exc:  # whatever the parser makes of a page that is not an exposition
        return Scrape(target, None, f"not a Prometheus exposition ({type(exc).__name__})")
    return Scrape(
        target,
        tuple(Sample(s.name, {**s.labels, PROCESS_LABEL: target.process}, s.value) for s in samples),
    )


def scrape(target: Target, timeout: float = DEFAULT_TIMEOUT) -> Scrape:
    try:
        response = httpx.get(target.url, timeout=timeout)
    except httpx.HTTPError as exc:
        return Scrape(target, None, type(exc).__name__)  # ConnectError, ReadTimeout, ...
    if response.status_code != 200:
        return Scrape(target, None, f"answered HTTP {response.status_code}")
    return from_text(target, response.text)


def scrape_all(targets: Sequence[Target], timeout: float = DEFAULT_TIMEOUT) -> list[Scrape]:
    """Every target at once (a process that does not answer costs one timeout, not one each)."""
    with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
        return list(pool.map(lambda target: scrape(target, timeout), targets))


# --- what the samples say (pure) ------------------------------------------------------------------


@dataclass(frozen=True)
class ConsumerStatus:
    durable: str
    pending: float | None
    since_progress: float | None  # seconds
    dead_letters: float | None


@dataclass(frozen=True)
class ProcessStatus:
    process: str
    url: str
    error: str | None = None  # set: it did not answer
    broker_connected: bool | None = None
    outbox_backlog: float | None = None
    outbox_oldest_seconds: float | None = None
    consumers: tuple[ConsumerStatus, ...] = ()
    webhook_backlog: float | None = None
    webhook_oldest_seconds: float | None = None
    clock_scan_age: float | None = None
    clock_scan_interval: float | None = None

    @property
    def reachable(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class AlertState:
    rule: Rule
    state: str  # FIRING, OK or NO_DATA (no series of its metric among the answers)
    series: tuple[Labels, ...] = ()  # the label sets for which the condition is true

    def summaries(self) -> list[str]:
        return [_template(self.rule.summary, labels) for labels in self.series]


@dataclass(frozen=True)
class Report:
    at: float
    processes: tuple[ProcessStatus, ...]
    alerts: tuple[AlertState, ...]

    @property
    def unreachable(self) -> list[ProcessStatus]:
        return [p for p in self.processes if not p.reachable]

    @property
    def firing(self) -> list[AlertState]:
        return [a for a in self.alerts if a.state == FIRING]

    @property
    def healthy(self) -> bool:
        return not self.unreachable and not self.firing

    @property
    def audit_ingestion(self) -> tuple[str, ConsumerStatus] | None:
        for process in self.processes:
            for consumer in process.consumers:
                if consumer.durable == AUDIT_DURABLE:
                    return process.process, consumer
        return None


def _values(samples: Iterable[Sample], name: str, **labels: str) -> list[float]:
    return [
        s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def _one(values: list[float], pick: Any = max) -> float | None:
    return float(pick(values)) if values else None


def _age(now: float, timestamp: float | None) -> float | None:
    return None if timestamp is None else max(0.0, now - timestamp)


def process_status(scraped: Scrape, now: float) -> ProcessStatus:
    target = scraped.target
    if scraped.samples is None:
        return ProcessStatus(target.process, target.url, error=scraped.error or "did not answer")
    samples = scraped.samples
    connected = _values(samples, "cmh_broker_connected")
    backlog = _values(samples, "cmh_outbox_backlog")
    durables = sorted(
        {
            s.labels["durable"]
            for s in samples
            if s.name.startswith(("cmh_consumer_", "cmh_dead_letters")) and "durable" in s.labels
        }
    )
    consumers = tuple(
        ConsumerStatus(
            durable,
            _one(_values(samples, "cmh_consumer_pending", durable=durable)),
            _age(
                now, _one(_values(samples, "cmh_consumer_last_progress_timestamp_seconds", durable=durable))
            ),
            _one(_values(samples, "cmh_dead_letters", durable=durable)),
        )
        for durable in durables
    )
    return ProcessStatus(
        target.process,
        target.url,
        broker_connected=bool(min(connected)) if connected else None,
        outbox_backlog=sum(backlog) if backlog else None,
        outbox_oldest_seconds=_one(_values(samples, "cmh_outbox_oldest_unpublished_seconds")),
        consumers=consumers,
        webhook_backlog=_one(_values(samples, "cmh_webhook_backlog")),
        webhook_oldest_seconds=_one(_values(samples, "cmh_webhook_oldest_pending_seconds")),
        clock_scan_age=_age(
            now, _one(_values(samples, "cmh_clock_scan_last_success_timestamp_seconds"), min)
        ),
        clock_scan_interval=_one(_values(samples, "cmh_clock_scan_interval_seconds")),
    )


def evaluate(samples: Sequence[Sample], now: float, rules: Sequence[Rule] = RULES) -> list[AlertState]:
    """Each rule's condition against the samples, now (its `for` is not applied)."""
    states: list[AlertState] = []
    for rule in rules:
        condition = parse(rule.expr)
        series = condition.firing(samples, now)
        if series:
            states.append(AlertState(rule, FIRING, tuple(series)))
            continue
        present = any(
            s.name == condition.metric and all(s.labels.get(k) == v for k, v in condition.matchers.items())
            for s in samples
        )
        states.append(AlertState(rule, OK if present else NO_DATA))
    return states


def build_report(scrapes: Sequence[Scrape], now: float | None = None) -> Report:
    now = time.time() if now is None else now
    samples = [sample for scraped in scrapes for sample in scraped.samples or ()]
    return Report(
        at=now,
        processes=tuple(process_status(scraped, now) for scraped in scrapes),
        alerts=tuple(evaluate(samples, now)),
    )


# --- output ---------------------------------------------------------------------------------------


def _template(text: str, labels: Labels) -> str:
    return re.sub(r"\{\{\s*\$labels\.([a-zA-Z_]+)\s*\}\}", lambda m: labels.get(m.group(1), "?"), text)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86_400 * 2:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86_400}d"


def _count(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def _series(labels: Labels) -> str:
    where = labels.get(PROCESS_LABEL) or labels.get("service") or "-"
    return f"{where} ({labels['durable']})" if "durable" in labels else where


def render_text(report: Report) -> list[str]:
    stamp = datetime.fromtimestamp(report.at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    count = len(report.processes)
    lines = [f"cmh status at {stamp}: {count} process{'' if count == 1 else 'es'} scraped", ""]
    width = max([len(p.process) for p in report.processes] or [0])

    def row(label: str, text: str) -> None:
        lines.append(f"    {label:<18} {text}")

    for process in report.processes:
        if not process.reachable:
            lines.append(f"  {process.process:<{width}}  UNREACHABLE  {process.url}: {process.error}")
            continue
        lines.append(f"  {process.process:<{width}}  {process.url}")
        if process.broker_connected is not None:
            row("broker", "connected" if process.broker_connected else "NOT CONNECTED")
        if process.outbox_backlog is not None or process.outbox_oldest_seconds is not None:
            row(
                "outbox",
                f"{_count(process.outbox_backlog)} unpublished, "
                f"oldest {_duration(process.outbox_oldest_seconds)}",
            )
        for consumer in process.consumers:
            label = "audit ingestion" if consumer.durable == AUDIT_DURABLE else "consumer"
            row(
                label,
                f"{consumer.durable}: {_count(consumer.pending)} pending, "
                f"progress {_duration(consumer.since_progress)} ago, "
                f"{_count(consumer.dead_letters)} dead letters",
            )
        if process.webhook_backlog is not None:
            row(
                "webhooks",
                f"{_count(process.webhook_backlog)} pending, "
                f"oldest {_duration(process.webhook_oldest_seconds)}",
            )
        if process.clock_scan_age is not None or process.clock_scan_interval is not None:
            row(
                "clock scan",
                f"last {_duration(process.clock_scan_age)} ago, "
                f"every {_duration(process.clock_scan_interval)}",
            )
    lines += ["", "  alerts: is each rule's condition true now? (its `for` is Prometheus's to apply)"]
    name_width = max([len(a.rule.alert) for a in report.alerts] or [0])
    for alert in report.alerts:
        state = "FIRING" if alert.state == FIRING else alert.state.replace("_", " ")
        head = f"    {alert.rule.alert:<{name_width}}  {state}"
        if alert.state != FIRING:
            lines.append(head)
            continue
        lines.append(f"{head}  {alert.rule.severity}: {', '.join(_series(s) for s in alert.series)}")
        lines.extend(f"      {summary}" for summary in dict.fromkeys(alert.summaries()))
    lines.append("")
    if report.healthy:
        lines.append("  healthy: every process answered and no alert condition is true")
    else:
        problems = []
        if report.unreachable:
            problems.append(
                f"{len(report.unreachable)} unreachable ({', '.join(p.process for p in report.unreachable)})"
            )
        if report.firing:
            problems.append(f"{len(report.firing)} firing ({', '.join(a.rule.alert for a in report.firing)})")
        lines.append(f"  NOT HEALTHY: {'; '.join(problems)}")
    return lines


def _consumer_json(consumer: ConsumerStatus) -> dict[str, Any]:
    return {
        "durable": consumer.durable,
        "pending": consumer.pending,
        "seconds_since_progress": consumer.since_progress,
        "dead_letters": consumer.dead_letters,
    }


def as_json(report: Report) -> dict[str, Any]:
    processes: list[dict[str, Any]] = []
    for p in report.processes:
        entry: dict[str, Any] = {
            "process": p.process,
            "url": p.url,
            "reachable": p.reachable,
            "error": p.error,
        }
        if p.reachable:
            entry.update(
                broker_connected=p.broker_connected,
                outbox={"backlog": p.outbox_backlog, "oldest_unpublished_seconds": p.outbox_oldest_seconds}
                if p.outbox_backlog is not None or p.outbox_oldest_seconds is not None
                else None,
                consumers=[_consumer_json(c) for c in p.consumers],
                webhooks={"backlog": p.webhook_backlog, "oldest_pending_seconds": p.webhook_oldest_seconds}
                if p.webhook_backlog is not None
                else None,
                clock_scan={
                    "seconds_since_success": p.clock_scan_age,
                    "interval_seconds": p.clock_scan_interval,
                }
                if p.clock_scan_age is not None or p.clock_scan_interval is not None
                else None,
            )
        processes.append(entry)
    audit = report.audit_ingestion
    return {
        "at": datetime.fromtimestamp(report.at, UTC).isoformat().replace("+00:00", "Z"),
        "healthy": report.healthy,
        "processes": processes,
        "audit_ingestion": {"process": audit[0], **_consumer_json(audit[1])} if audit else None,
        "alerts": [
            {
                "alert": a.rule.alert,
                "severity": a.rule.severity,
                "expr": a.rule.expr,
                "for": a.rule.duration,
                "state": a.state,
                "series": [dict(labels) for labels in a.series],
                "summaries": list(dict.fromkeys(a.summaries())),
            }
            for a in report.alerts
        ],
    }


def run(
    settings: Settings,
    *,
    urls: Sequence[str] = (),
    replicas: int = 1,
    timeout: float = DEFAULT_TIMEOUT,
    as_json_output: bool = False,
) -> int:
    try:
        targets = [parse_url_option(url) for url in urls] or default_targets(settings, replicas)
    except ValueError as exc:
        print(f"cmh status: {exc}", file=sys.stderr)
        return 2
    if not targets:
        print(
            "cmh status: no process serves /metrics here (CMH_METRICS_PORT_OFFSET is 0); give --url NAME=URL",
            file=sys.stderr,
        )
        return 2
    report = build_report(scrape_all(targets, timeout))
    if as_json_output:
        print(json.dumps(as_json(report), indent=2))
    else:
        print("\n".join(render_text(report)))
    return 0 if report.healthy else 1
