"""The clock scheduler's metrics: when it last completed a scan, and how often it scans (what the
`ClockScanStale` alert compares them against, deploy/prometheus/alerts.yaml)."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import REGISTRY

from services.careplan.app import create_app
from shared.settings import Settings
from tests.support import eventually, running_service


async def test_the_clock_scan_records_when_it_last_completed(make_settings: Callable[..., Settings]) -> None:
    before = time.time()
    async with running_service("careplan", create_app, make_settings(careplan_clock_scan_seconds=0.1)):
        # Set as the scheduler starts, then moved on by each scan (two at least here).
        first = await eventually(lambda: _last_scan(after=before))
        second = await eventually(lambda: _last_scan(after=first))
        await eventually(lambda: _last_scan(after=second))
        assert REGISTRY.get_sample_value("cmh_clock_scan_interval_seconds", {"service": "careplan"}) == 0.1


def _last_scan(*, after: float) -> float | None:
    value = REGISTRY.get_sample_value(
        "cmh_clock_scan_last_success_timestamp_seconds", {"service": "careplan"}
    )
    return value if value is not None and value > after else None
