"""CPU time per unit of work, by process, from /proc: every process of one running suite (found by
its CMH_VAR_DIR in /proc/<pid>/environ, so the harness and the load generator are not counted),
every PostgreSQL backend and the nats-server.

A referral's CPU is spread over many processes (the gateway, triage and its outbox relay, every
consumer, PostgreSQL, nats-server), so a figure from one process alone would hide most of it. The
background cost of an idle suite (pollers, heartbeats, the harness's own backlog queries) is
measured over a quiet interval and subtracted, pro rata, from the loaded interval.
"""

from __future__ import annotations

import os
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
TICK_SECONDS = 1 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
_SERVE = re.compile(r"cmh\.cli serve (\S+)")


def _label(pid: int, var_dir: str) -> str | None:
    """The suite component a process is, or None when it is not part of this suite."""
    try:
        comm = (PROC / str(pid) / "comm").read_text().strip()
        if comm in ("postgres", "postmaster"):
            return "PostgreSQL"
        environ = (PROC / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:  # gone, or not ours to read
        return None
    if f"CMH_VAR_DIR={var_dir}".encode() not in environ:
        return None
    if comm.startswith("nats-server"):
        return "nats-server"
    try:
        argv = (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    if "cmh.cli run" in argv:
        return "supervisor (cmh run)"
    served = _SERVE.search(argv)  # `cmh serve <process> --port N`: one service, or the gateway
    if served:
        return served.group(1)
    # Anything else with this var dir is the harness or its load generator: not the suite.
    return "oidc provider" if "oidc_provider_mock" in argv else None


def _cpu_seconds(pid: int) -> float | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # Fields after the command name (which may hold spaces), closed by the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) * TICK_SECONDS  # utime + stime, all threads


@dataclass
class Snapshot:
    taken_at: float
    seconds: dict[int, tuple[str, float]]  # pid -> (label, CPU seconds so far)


def snapshot(var_dir: str | Path) -> Snapshot:
    seconds: dict[int, tuple[str, float]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        label = _label(pid, str(var_dir))
        if label is None:
            continue
        cpu = _cpu_seconds(pid)
        if cpu is not None:
            seconds[pid] = (label, cpu)
    return Snapshot(time.monotonic(), seconds)


def used(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds used between two snapshots, by component. A process that started in between
    counts from zero; one that ended in between is lost (pooled connections and the suite's
    processes live for the whole run, so this is small)."""
    by_label: dict[str, float] = defaultdict(float)
    for pid, (label, cpu) in after.seconds.items():
        start = before.seconds.get(pid)
        by_label[label] += cpu - (start[1] if start and start[0] == label else 0.0)
    return dict(by_label)


def per_unit(
    idle: tuple[Snapshot, Snapshot], loaded: tuple[Snapshot, Snapshot], units: int
) -> dict[str, object]:
    """CPU ms per unit of work by component, net of the idle rate measured over `idle`."""
    idle_seconds = max(idle[1].taken_at - idle[0].taken_at, 1e-9)
    idle_rate = {label: cpu / idle_seconds for label, cpu in used(*idle).items()}
    loaded_seconds = loaded[1].taken_at - loaded[0].taken_at
    gross = used(*loaded)
    net = {label: max(0.0, cpu - idle_rate.get(label, 0.0) * loaded_seconds) for label, cpu in gross.items()}
    by_process = {
        label: round(cpu * 1000 / max(units, 1), 2)
        for label, cpu in sorted(net.items(), key=lambda item: -item[1])
    }
    return {
        "units": units,
        "loaded_seconds": round(loaded_seconds, 1),
        "idle_seconds": round(idle_seconds, 1),
        "idle_cpu_percent": {label: round(rate * 100, 2) for label, rate in idle_rate.items()},
        "ms_per_unit_by_process": by_process,
        "ms_per_unit": round(sum(net.values()) * 1000 / max(units, 1), 2),
        "gross_ms_per_unit": round(sum(gross.values()) * 1000 / max(units, 1), 2),
    }
