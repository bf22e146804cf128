"""The pipeline's alert rules (issue 21, operations 4), written once: rendered into
`deploy/prometheus/alerts.yaml` (`python -m cmh.alerts > deploy/prometheus/alerts.yaml`; a test
checks the file is up to date) and evaluated by `cmh status` against what it reads itself.

Every expression has one of the few forms the tiny evaluator below understands, all plain PromQL:

    metric{label="value"} OP number
    time() - metric{...} OP number
    time() - metric{...} OP number * other_metric{...}

so a rule means the same in Prometheus, in `cmh status` and in the tests that evaluate the
shipped file against scraped samples. Labels are process and durable names only, never a person.
"""

from __future__ import annotations

import operator
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

GROUP = "cmh-pipeline"


@dataclass(frozen=True)
class Rule:
    alert: str
    expr: str
    duration: str  # Prometheus `for`
    severity: str
    summary: str
    description: str
    runbook: str

    def as_prometheus(self) -> dict[str, Any]:
        return {
            "alert": self.alert,
            "expr": self.expr,
            "for": self.duration,
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook": self.runbook,
            },
        }


AUDIT_DURABLE = "gateway-audit"  # gateway/audit.py

RULES: tuple[Rule, ...] = (
    Rule(
        "CmhBrokerDown",
        "cmh_broker_connected == 0",
        "1m",
        "critical",
        "{{ $labels.service }} has lost NATS",
        "The process is still ready (its outbox buffers what it publishes) but no event flows to or "
        'from it; its /ready says "nats": "degraded".',
        "Check the NATS servers (pods, `nats server check jetstream`), the network policy to them, "
        "and the process's NATS credentials. Nothing is lost: relays and consumers resume the moment "
        "it reconnects.",
    ),
    Rule(
        "CmhOutboxStalled",
        "cmh_outbox_oldest_unpublished_seconds > 60",
        "2m",
        "critical",
        "{{ $labels.service }}'s outbox has not published for over a minute",
        "Events are committed but the relay cannot publish them (NATS away, the stream refusing "
        "them): episodes, audit, reporting and notifications fall behind.",
        "See CmhBrokerDown first. If NATS is up: the relay's log (`outbox relay paused`, its error), "
        "cmh_outbox_publish_failures_total, and the stream's limits (`nats stream info`).",
    ),
    Rule(
        "CmhConsumerLagging",
        "cmh_consumer_pending > 1000",
        "5m",
        "warning",
        "{{ $labels.durable }} ({{ $labels.service }}) is over 1000 events behind",
        "The durable consumer has more than a thousand events to apply or acknowledge; its read "
        "models (episodes, reporting, audit, notifications) are stale.",
        "Look at the consumer's database (slow, locked) and its log (`event handler failed`, "
        "`consumer paused`); scale the service out (every replica consumes); `cmh status`.",
    ),
    Rule(
        "CmhDeadLetters",
        "cmh_dead_letters > 0",
        "1m",
        "warning",
        "{{ $labels.durable }} has dead-lettered events",
        "Events the consumer could never apply (a handler failing every try, a broken contract) are "
        "parked on cmh.deadletter.<durable>; what they should have changed has not happened.",
        "Read them as the bus admin (`nats stream view CMH --subject cmh.deadletter.<durable>`): "
        "the Cmh-Dead-Letter-Reason header says why. Fix the cause, republish, then purge the subject.",
    ),
    Rule(
        "CmhWebhookBacklog",
        "cmh_webhook_backlog > 500",
        "15m",
        "warning",
        "Over 500 webhook deliveries are waiting",
        "Partners' endpoints are failing or slow, or the delivery worker is stuck: partners' copies "
        "of referral status fall behind.",
        "Look at cmh_notify_delivery_attempts_total by outcome and at subscriptions in `error`; a "
        "partner's endpoint down is theirs to fix (deliveries wait, then are abandoned).",
    ),
    Rule(
        "CmhClockScanStale",
        "time() - cmh_clock_scan_last_success_timestamp_seconds > 5 * cmh_clock_scan_interval_seconds",
        "5m",
        "critical",
        "careplan has not completed a plan-clock scan for five intervals",
        "The four-week plan clock is not being checked: breaches are neither raised nor reported.",
        "careplan's log (`clock scan failed`, its error) and its database; the scan runs in every "
        "replica, so every replica failing points at the database.",
    ),
    Rule(
        "CmhAuditIngestionStale",
        f'time() - cmh_consumer_last_progress_timestamp_seconds{{durable="{AUDIT_DURABLE}"}} > 600',
        "5m",
        "critical",
        "The gateway has not ingested audit events for ten minutes while some wait",
        "Accesses to person data are recorded by the services but not reaching the audit store "
        "(the consumer is neither applying events nor caught up).",
        "See CmhBrokerDown and CmhConsumerLagging for gateway-audit; the gateway's database; "
        "`cmh status`. Audit events wait on the stream, none are lost.",
    ),
)


def render(rules: Sequence[Rule] = RULES) -> str:
    import yaml  # type: ignore[import-untyped]  # a development dependency: rendering only

    header = (
        "# Generated from cmh/alerts.py (python -m cmh.alerts > deploy/prometheus/alerts.yaml); edit\n"
        "# the rules there. A Prometheus rule file; with the Prometheus Operator, put `groups` into a\n"
        "# PrometheusRule's spec.\n"
    )
    body = {"groups": [{"name": GROUP, "rules": [rule.as_prometheus() for rule in rules]}]}
    return header + str(yaml.safe_dump(body, sort_keys=False, width=100, allow_unicode=True))


# --- a tiny evaluator for the forms above --------------------------------------------------------

Labels = Mapping[str, str]


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Labels
    value: float


_SELECTOR = r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?"
_EXPR = re.compile(
    rf"^\s*(time\(\)\s*-\s*)?{_SELECTOR}\s*(==|!=|>=|<=|>|<)\s*([0-9.eE+-]+)(?:\s*\*\s*{_SELECTOR})?\s*$"
)
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"([^"]*)"\s*')
_OPS: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
}


@dataclass(frozen=True)
class Condition:
    """A parsed expression: [time() -] left OP number [* right]."""

    since: bool
    metric: str
    matchers: Labels
    op: str
    number: float
    factor_metric: str | None = None
    factor_matchers: Labels = field(default_factory=dict)

    def firing(self, samples: Iterable[Sample], now: float | None = None) -> list[Labels]:
        """The label sets of the series for which the condition holds (empty: it does not)."""
        samples = list(samples)
        now = time.time() if now is None else now
        compare = _OPS[self.op]
        found: list[Labels] = []
        for sample in _select(samples, self.metric, self.matchers):
            value = now - sample.value if self.since else sample.value
            threshold = self.number
            if self.factor_metric is not None:
                # One-to-one vector matching, as Prometheus does: the same labels on both sides.
                right = [
                    s
                    for s in _select(samples, self.factor_metric, self.factor_matchers)
                    if dict(s.labels) == dict(sample.labels)
                ]
                if not right:
                    continue
                threshold = self.number * right[0].value
            if compare(value, threshold):
                found.append(sample.labels)
        return found


def parse(expr: str) -> Condition:
    match = _EXPR.match(expr)
    if match is None:
        raise ValueError(f"not a form cmh.alerts evaluates: {expr!r}")
    since, metric, matchers, op, number, factor, factor_matchers = match.groups()
    return Condition(
        since=bool(since),
        metric=metric,
        matchers=_matchers(matchers),
        op=op,
        number=float(number),
        factor_metric=factor,
        factor_matchers=_matchers(factor_matchers),
    )


def metric_names(expr: str) -> set[str]:
    condition = parse(expr)
    return {condition.metric, *([condition.factor_metric] if condition.factor_metric else [])}


def _matchers(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    found: dict[str, str] = {}
    for part in text.split(","):
        match = _MATCHER.fullmatch(part)
        if match is None:
            raise ValueError(f'only label="value" matchers are evaluated: {text!r}')
        found[match.group(1)] = match.group(2)
    return found


def _select(samples: Iterable[Sample], name: str, matchers: Labels) -> list[Sample]:
    return [s for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in matchers.items())]


def parse_exposition(text: str) -> list[Sample]:
    """Samples from a Prometheus text exposition (a /metrics scrape)."""
    from prometheus_client.parser import text_string_to_metric_families

    return [
        Sample(sample.name, dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
