"""docs/benchmarks.md and the SVG plots from a results file written by bench/run.py.

    .venv/bin/python -m bench.report [bench/results/2026-11-25.json]   # default: the newest

SVG is drawn by hand (as services/reporting/dashboard.py does): no plotting library.
"""

from __future__ import annotations

import argparse
import json
import math
from html import escape
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RESULTS = Path(__file__).resolve().parent / "results"
NOTES = Path(__file__).resolve().parent / "notes.md"
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 640, 360, 64, 180, 36, 48
COLOURS = {"gateway": "#1f5fa8", "direct": "#d0730c", "baseline": "#2b8a3e"}


def _svg_frame(title: str, x_label: str, y_label: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(title)}" '
        f'width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="18" text-anchor="middle" font-size="13">{escape(title)}</text>',
        f'<text x="{LEFT + (WIDTH - LEFT - RIGHT) / 2}" y="{HEIGHT - 10}" text-anchor="middle">{escape(x_label)}</text>',
        f'<text x="14" y="{TOP + (HEIGHT - TOP - BOTTOM) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {TOP + (HEIGHT - TOP - BOTTOM) / 2})">{escape(y_label)}</text>',
    ]


def line_chart(
    title: str,
    x_label: str,
    y_label: str,
    series: list[tuple[str, str, bool, list[tuple[float, float]]]],
    *,
    log_y: bool,
    diagonal: bool = False,
) -> str:
    """series: (label, colour, dashed, [(x, y)]). A log y axis for latencies (they span decades)."""
    points = [p for _, _, _, values in series for p in values if p[1] is not None and p[1] > 0]
    parts = _svg_frame(title, x_label, y_label)
    if not points:
        parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no data</text></svg>')
        return "\n".join(parts)
    x_max = max(p[0] for p in points) * 1.05
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    if log_y:
        low = 10 ** math.floor(math.log10(min(p[1] for p in points)))
        high = 10 ** math.ceil(math.log10(max(p[1] for p in points)))
        high = max(high, low * 10)
        ticks = [low * 10**k for k in range(round(math.log10(high / low)) + 1)]

        def y_of(v: float) -> float:
            return TOP + plot_h * (
                1 - (math.log10(v) - math.log10(low)) / (math.log10(high) - math.log10(low))
            )
    else:
        high = max(max(p[1] for p in points), x_max if diagonal else 0) * 1.1
        step = 10 ** math.floor(math.log10(high / 2))
        ticks = [step * k for k in range(int(high / step) + 1)]

        def y_of(v: float) -> float:
            return TOP + plot_h * (1 - v / high)

    def x_of(v: float) -> float:
        return LEFT + plot_w * v / x_max

    parts.append(
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" stroke="#444"/>'
    )
    parts.append(f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="#444"/>')
    for tick in ticks:
        y = y_of(tick)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>')
    xs = sorted({p[0] for p in points})
    for x in xs:
        parts.append(f'<text x="{x_of(x):.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">{x:g}</text>')
    if diagonal:
        parts.append(
            f'<line x1="{x_of(0):.1f}" y1="{y_of(0):.1f}" x2="{x_of(x_max):.1f}" y2="{y_of(x_max):.1f}" '
            'stroke="#999" stroke-dasharray="2 3"/>'
        )
    legend_y = TOP + 4
    for label, colour, dashed, values in series:
        shown = [(x, y) for x, y in values if y is not None and y > 0]
        if not shown:
            continue
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        path = " ".join(f"{x_of(x):.1f},{y_of(y):.1f}" for x, y in shown)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        for x, y in shown:
            parts.append(f'<circle cx="{x_of(x):.1f}" cy="{y_of(y):.1f}" r="3" fill="{colour}"/>')
        lx = LEFT + plot_w + 12
        parts.append(
            f'<line x1="{lx}" y1="{legend_y}" x2="{lx + 24}" y2="{legend_y}" stroke="{colour}" stroke-width="2"{dash}/>'
        )
        parts.append(f'<text x="{lx + 30}" y="{legend_y + 4}">{escape(label)}</text>')
        legend_y += 18
    parts.append("</svg>")
    return "\n".join(parts)


def _series(points: list[dict[str, Any]], field: str) -> list[tuple[float, float]]:
    return [(p["offered_rps"], p.get(field)) for p in points if "offered_rps" in p]


def plots(report: dict[str, Any], stem: str) -> list[Path]:
    results = report.get("results", {})
    intake, base = results.get("intake", {}), results.get("baseline_http", {})
    sweeps = {
        "gateway": intake.get("gateway_sweep", []),
        "direct": intake.get("direct_sweep", []),
        "baseline": base.get("insert_sweep", []),
    }
    names = {"gateway": "via gateway", "direct": "direct to triage", "baseline": "bare insert"}
    latency: list[tuple[str, str, bool, list[tuple[float, float]]]] = []
    throughput: list[tuple[str, str, bool, list[tuple[float, float]]]] = []
    for key, points in sweeps.items():
        if not isinstance(points, list):
            continue
        latency.append((f"{names[key]} p50", COLOURS[key], False, _series(points, "p50_ms")))
        latency.append((f"{names[key]} p99", COLOURS[key], True, _series(points, "p99_ms")))
        throughput.append((names[key], COLOURS[key], False, _series(points, "achieved_rps")))
    written = []
    for name, svg in (
        (f"{stem}-intake-latency.svg", line_chart(
            "Referral intake: latency against offered load (open loop)", "offered referrals/s",
            "latency, ms (log)", latency, log_y=True)),
        (f"{stem}-intake-throughput.svg", line_chart(
            "Referral intake: achieved against offered load", "offered referrals/s",
            "answered 2xx/s", throughput, log_y=False, diagonal=True)),
    ):  # fmt: skip
        path = DOCS / name
        path.write_text(svg + "\n")
        written.append(path)
    return written


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _sweep_table(title: str, points: Any) -> list[str]:
    if not isinstance(points, list) or not points:
        return [
            f"*{title}: not measured ({points.get('error') if isinstance(points, dict) else 'missing'})*",
            "",
        ]
    lines = [
        f"**{title}**", "",
        "| offered /s | achieved 2xx /s | p50 ms | p95 ms | p99 ms | max ms | dropped | answers |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]  # fmt: skip
    for p in points:
        answers = ", ".join(f"{k}: {v}" for k, v in p.get("statuses", {}).items())
        lines.append(
            f"| {_fmt(p.get('offered_rps'))} | {_fmt(p.get('achieved_rps'))} | {_fmt(p.get('p50_ms'))} "
            f"| {_fmt(p.get('p95_ms'))} | {_fmt(p.get('p99_ms'))} | {_fmt(p.get('max_ms'))} "
            f"| {_fmt(p.get('dropped'))} | {answers} |"
        )
    return [*lines, ""]


def _wrk_line(title: str, result: Any) -> str:
    if not isinstance(result, dict) or "rps" not in result:
        return f"- {title}: not measured ({result.get('skipped') or result.get('error') if isinstance(result, dict) else 'missing'})"
    return (
        f"- {title}: **{_fmt(result['rps'])} req/s** 2xx over {_fmt(result['seconds'])} s with "
        f"{result['connections']} connections; p50 {_fmt(result['p50_ms'])} ms, p99 {_fmt(result['p99_ms'])} ms; "
        f"non-2xx {result['non2xx']}, socket errors {result['socket_errors']}"
    )


def _cpu_section(cpu: dict[str, Any], before: dict[str, Any] | None) -> list[str]:
    """CPU per referral by process (bench/cpu.py), beside the same measurement taken before the
    changes when the run carries one (`cpu_before`: the cpu_per_referral stage's result, run on the
    earlier commit on the same machine)."""
    out = ["## CPU per referral, by process", ""]
    if "submit" not in cpu:
        return [*out, f"*not measured: {cpu.get('error', 'missing')}*", ""]
    columns: list[tuple[str, dict[str, Any]]] = []
    for name, label in (("submit", "submit"), ("submit_and_accept", "submit + accept")):
        if before and name in before:
            columns.append((f"before, {label} @ {_fmt(before[name]['rate'])}/s", before[name]))
        if name in cpu:
            columns.append((f"after, {label} @ {_fmt(cpu[name]['rate'])}/s", cpu[name]))
    processes = sorted(
        {p for _, column in columns for p in column.get("ms_per_unit_by_process", {})},
        key=lambda p: -cpu["submit"].get("ms_per_unit_by_process", {}).get(p, 0.0),
    )
    out += [
        "CPU time (user + system, every thread) read from `/proc/<pid>/stat` for every process of the suite "
        "(found by its var dir), every PostgreSQL backend and the nats-server, from the first referral until "
        "each has been relayed and applied by every consumer, net of what the idle suite uses over the same "
        "time; divided by the referrals answered 201. Submit + accept also opens an episode (careplan).",
        "",
        "| process | " + " | ".join(title for title, _ in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for process in processes:
        cells = [_fmt(column.get("ms_per_unit_by_process", {}).get(process)) for _, column in columns]
        out.append(f"| {process} | " + " | ".join(f"{c} ms" for c in cells) + " |")
    out.append("| **all** | " + " | ".join(f"**{_fmt(c.get('ms_per_unit'))} ms**" for _, c in columns) + " |")
    out.append("| referrals | " + " | ".join(str(c.get("units")) for _, c in columns) + " |")
    return [*out, ""]


def _fhir_section(fhir: dict[str, Any]) -> list[str]:
    out = ["## FHIR intake", ""]
    if not fhir.get("points"):
        return [*out, f"*not measured: {fhir.get('error', 'missing')}*", ""]
    out += [
        "`POST /fhir/ServiceRequest` through the gateway (a UK Core ServiceRequest with a contained Patient, "
        "read into the same referral as the native create: FHIR parsing, terminology mapping, the same "
        "transaction) beside the native `POST /triage/referrals`, open loop, each step after the other.",
        "",
    ]
    rows = []
    for point in fhir["points"]:
        rows += [{**point["fhir"], "offered_rps": f"{_fmt(point['rate'])} FHIR"},
                 {**point["native"], "offered_rps": f"{_fmt(point['rate'])} native"}]  # fmt: skip
    return out + _sweep_table("FHIR beside native", rows)


def markdown(report: dict[str, Any], source: Path, svgs: list[Path]) -> str:
    m = report.get("machine", {})
    cfg = report.get("config", {})
    results = report.get("results", {})
    out = [
        "# Benchmarks",
        "",
        "Generated by `bench/report.py` from "
        f"`{source.relative_to(ROOT) if source.is_relative_to(ROOT) else source}` "
        f"({report.get('mode')} run, {report.get('started_at')} → {report.get('finished_at')}). "
        "Re-run with `make bench` (full) or `.venv/bin/python -m bench.run --quick`; not part of `make test`.",
        "",
        "## Machine",
        "",
        f"- {m.get('cores')} cores ({m.get('usable_cores')} usable), {m.get('cpu_model')}; {m.get('ram_gib')} GiB RAM; "
        f"Linux {m.get('kernel')}",
        f"- Python {m.get('python')}, PostgreSQL {m.get('postgresql')}, {m.get('nats_server')}, "
        f"load generator: {m.get('wrk') or 'no wrk'} + open-loop asyncio HTTP/1.1 generator in its own process",
        f"- {m.get('co_located', '')}; one process per service (`cmh run`), one nats-server (JetStream, file storage)",
        "",
        "## Data",
        "",
        "- registry: the seeded Lancashire and South Cumbria reference (ICS-sized), as `cmh run` seeds it",
        f"- directory: {_fmt(cfg.get('services'))} synthetic services loaded through the publish path "
        f"(bench/directory_search.py): {report.get('data', {}).get('directory', 'reused or not loaded')}",
        f"- reporting: {_fmt(report.get('data', {}).get('reporting_episodes', cfg.get('episodes')))} historical "
        "episodes (and their referrals) as projections, with COPY (bench/reporting_pull.py)",
        "",
        "## Summary: every figure beside its baseline",
        "",
        "| figure | value | baseline | baseline figure | ratio | target | met |",
        "|---|---:|---:|---|---:|---|---|",
    ]
    for row in report.get("summary", []):
        met = {True: "yes", False: "**no**", None: ""}[row.get("met")]
        unit = row.get("unit", "")
        out.append(
            f"| {row['figure']} | {_fmt(row['value'])} {unit} | {_fmt(row.get('baseline'))} "
            f"| {row.get('baseline_figure', '')} | {_fmt(row.get('ratio'))} | {row.get('target') or ''} | {met} |"
        )
    intake, base = results.get("intake", {}), results.get("baseline_http", {})
    out += ["", "## Referral intake", ""]
    out += [
        "`POST /triage/referrals` with a new person and Idempotency-Key each time (token verification, "
        "validation, identity matching, screening, the transaction with its outbox events and audit), "
        "open loop at fixed offered rates: latency counted from when each request was *due*, so queueing "
        "shows (no coordinated omission); requests go over 64 keep-alive connections, those beyond 5,000 in "
        "flight are dropped and counted, and those unanswered 30 s after the step are counted as `unanswered`. "
        "After an overloaded step the harness waits until one referral is answered within 1 s before the next.",
        "",
    ]
    for path in svgs:
        out += [f"![{path.stem}]({path.name})", ""]
    out += _sweep_table("Through the gateway", intake.get("gateway_sweep", intake))
    out += _sweep_table("Direct to triage (port 8101, same token)", intake.get("direct_sweep", intake))
    out += _sweep_table("Baseline: bare FastAPI + asyncpg, one INSERT", base.get("insert_sweep", base))
    out += [
        "Saturation (closed loop, wrk; latency here is service time at that concurrency):",
        "",
        _wrk_line("through the gateway", intake.get("gateway_saturation")),
        _wrk_line("direct to triage", intake.get("direct_saturation")),
        _wrk_line("bare insert baseline", base.get("insert_saturation")),
        "",
    ]
    half = intake.get("half_saturation", {})
    if half.get("gateway"):
        out += _sweep_table(
            f"At half the gateway's saturation ({_fmt(half['rate'])}/s), beside the bare insert at the same rate",
            [{**half["gateway"], "offered_rps": f"{_fmt(half['rate'])} (gateway)"},
             {**half.get("bare", {}), "offered_rps": f"{_fmt(half['rate'])} (bare)"}],
        )  # fmt: skip
    out += _cpu_section(results.get("cpu_per_referral", {}), report.get("cpu_before"))
    out += _fhir_section(results.get("fhir_intake", {}))
    lags, js = results.get("event_lag", {}), results.get("jetstream_baseline", {})
    out += ["## Event lag", ""]
    if lags.get("by_rate"):
        out += [
            "Referrals submitted and accepted through the gateway at a fixed offered rate. A NATS subscriber "
            "takes the time of `cmh.triage.referral.routed` (stamped inside the decision's transaction, just "
            "before commit) and the arrival of `cmh.careplan.episode.opened` for the same referral: two outbox "
            "relays, one durable consumer and careplan's transaction lie in between.",
            "",
            "| offered /s | achieved /s | submit p99 ms | decision p99 ms | n | lag p50 ms | lag p95 ms | lag p99 ms "
            "| max ms | by event times p50 / p99 ms | routed | never opened in window |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
        ]
        for lag in lags["by_rate"]:
            if "routed_to_opened_at_subscriber" not in lag:
                out.append(f"| {lag.get('rate')} | *{lag.get('error', 'missing')}* |")
                continue
            sub, ev, load = (
                lag["routed_to_opened_at_subscriber"],
                lag["routed_to_opened_event_time"],
                lag["load"],
            )
            out.append(
                f"| {_fmt(lag['rate'])} | {_fmt(load.get('achieved_rps'))} | {_fmt(load.get('p99_ms'))} "
                f"| {_fmt(load.get('decide', {}).get('p99_ms'))} | {sub.get('n')} | {_fmt(sub.get('p50_ms'))} "
                f"| {_fmt(sub.get('p95_ms'))} | {_fmt(sub.get('p99_ms'))} | {_fmt(sub.get('max_ms'))} "
                f"| {_fmt(ev.get('p50_ms'))} / {_fmt(ev.get('p99_ms'))} | {lag['routed']} | {lag['never_opened']} |"
            )
        out.append("")
    else:
        out += [f"*not measured: {lags.get('error', 'missing')}*", ""]
    if "p50_ms" in js:
        out += [
            f"Baseline: a bare JetStream publish (awaiting the ack) → durable push consumer loop at "
            f"{_fmt(js['rate'])} msg/s: p50 {_fmt(js['p50_ms'])} ms, p99 {_fmt(js['p99_ms'])} ms (n={js['n']}).",
            "",
        ]
    crisis = results.get("crisis_stream", {})
    out += ["## Crisis stream", ""]
    if "p50_ms" in crisis:
        out += [
            f"Crisis referrals (`POST /triage/crisis/referrals`) at {_fmt(crisis['rate'])}/s through the gateway while a "
            "subscriber holds `GET /triage/crisis/stream` (crisis:respond) through the gateway; from the referral's "
            f"`received_at` to the `new` event at the subscriber: n={crisis['n']}, p50 {_fmt(crisis['p50_ms'])} ms, "
            f"p95 {_fmt(crisis['p95_ms'])} ms, p99 {_fmt(crisis['p99_ms'])} ms, max {_fmt(crisis['max_ms'])} ms.",
            "",
        ]
    else:
        out += [f"*not measured: {crisis.get('error', crisis.get('n', 'missing'))}*", ""]
    directory = results.get("directory", {})
    out += ["## Directory", ""]
    if "by_label" in directory:
        out += [
            f"Public queries through the gateway (no token), open loop at {_fmt(directory['offered_rps'])}/s, "
            f"a mix of five kinds round robin (answers: {directory.get('statuses')}).",
            "",
            "| query | n | p50 ms | p95 ms | p99 ms | max ms |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for label, f in directory["by_label"].items():
            out.append(
                f"| {label} | {f.get('n')} | {_fmt(f.get('p50_ms'))} | {_fmt(f.get('p95_ms'))} "
                f"| {_fmt(f.get('p99_ms'))} | {_fmt(f.get('max_ms'))} |"
            )
        ping = base.get("select1_at_50", {})
        out += [
            "",
            f"Baseline: bare FastAPI GET running `SELECT 1` at 50/s: p50 {_fmt(ping.get('p50_ms'))} ms, "
            f"p99 {_fmt(ping.get('p99_ms'))} ms.",
            "",
        ]
    else:
        out += [f"*not measured: {directory.get('error', 'missing')}*", ""]
    reporting = results.get("reporting", {})
    out += ["## Reporting", ""]
    if "http_median_ms" in reporting:
        ip = reporting["in_process"]
        out += [
            f"`GET /reporting/four-week-waits?from=2021-12-01&to=2026-11-24&group_by=place` through the gateway over "
            f"{_fmt(report.get('data', {}).get('reporting_episodes', cfg.get('episodes')))} episodes, {reporting['rounds']} "
            f"rounds: median {_fmt(reporting['http_median_ms'])} ms, max {_fmt(reporting['http_max_ms'])} ms "
            f"({reporting['groups']} groups). In process (`aggregates.four_week_waits`, no HTTP): median "
            f"{_fmt(ip.get('pull_median_ms'))} ms. Raw SQL: the same statements the aggregate runs "
            "(one `clock_statement` per clock, imported from services/reporting/aggregates.py and compiled "
            "with literal binds, not replicated) through asyncpg: "
            f"median {_fmt(ip.get('raw_sql_median_ms'))} ms.",
            "",
        ]
        if reporting.get("every_measure"):
            out += [
                "Every measure in process (the real aggregate function) beside a hand-written PostgreSQL "
                "statement computing the same figures over the same data (bench/reporting_pull.py "
                "`measure_every`), grouped by place, alternated round by round; the figures are checked "
                "to agree group by group.",
                "",
                "| measure | groups | pull median ms | pull Python CPU ms | raw SQL median ms | ratio | agrees |",
                "|---|---:|---:|---:|---:|---:|---|",
                *(
                    f"| {name} | {m.get('groups')} | {_fmt(m.get('pull_median_ms'))} | "
                    f"{_fmt(m.get('pull_cpu_median_ms'))} | {_fmt(m.get('raw_sql_median_ms'))} | "
                    f"{_fmt(m.get('ratio'))} | {'yes' if m.get('agrees_with_raw_sql') else '**no**'} |"
                    for name, m in reporting["every_measure"].items()
                ),
                "",
            ]
    else:
        out += [f"*not measured: {reporting.get('error', 'missing')}*", ""]
    catchup = results.get("consumer_catchup", {})
    out += ["## Consumers catching up", ""]
    if catchup.get("consumers"):
        out += [
            f"A backlog of {_fmt(catchup.get('published'))} events for {_fmt(catchup.get('referrals'))} referrals "
            "(received, prioritised, routed, episode opened, the audit record: each built by `make_event`) "
            "published to a nats-server of the stage's own, then each service's real durable consumer run alone "
            "until nothing is pending (bench/consumer_catchup.py). CPU is the consumer's process and nats-server; "
            "PostgreSQL's is in the CPU-per-referral table above.",
            "",
            "| consumer | events | seconds | events/s | CPU s per 1,000 events | nats-server CPU s per 1,000 |",
            "|---|---:|---:|---:|---:|---:|",
            *(
                f"| {name} | {_fmt(c.get('events'))} | {_fmt(c.get('seconds'))} | {_fmt(c.get('events_per_s'))} | "
                f"{_fmt(c.get('cpu_s_per_1000'))} | {_fmt(c.get('nats_cpu_s_per_1000'))} |"
                for name, c in catchup["consumers"].items()
            ),
            "",
        ]
    else:
        out += [f"*not measured: {catchup.get('error', 'missing')}*", ""]
    durability = results.get("durability", {})
    out += ["## Durability cost", ""]
    if "before" in durability and "after" in durability:
        before, after = durability["before"], durability["after"]
        out += [
            "Intake in process (bench/triage_intake.py --durability, SQLite, one referral at a time), "
            "without and with the durability defaults (issue 21 §1):",
            "",
            "| Settings | referrals/s | p50 ms | p99 ms | outbox drained after (s) |",
            "|---|---|---|---|---|",
            *(
                f"| SQLite synchronous={row['sqlite_synchronous']}, JetStream sync always: "
                f"{'yes' if row['jetstream_sync_always'] else 'no'} | {_fmt(row['intake_per_second'])} | "
                f"{_fmt(row['p50_ms'])} | {_fmt(row['p99_ms'])} | {_fmt(row['outbox_drained_after_s'])} |"
                for row in (before, after)
            ),
            "",
        ]
    else:
        out += [f"*not measured: {durability.get('error', 'missing')}*", ""]
    failed = [name for name, value in results.items() if isinstance(value, dict) and "error" in value]
    missed = [row["figure"] for row in report.get("summary", []) if row.get("met") is False]
    out += [
        "## Targets not met, and caveats",
        "",
        *(f"- not met: {figure}" for figure in missed),
        *(f"- stage failed: {name}: {results[name]['error']}" for name in failed),
        "- Everything is co-located on one machine: the load generator (and wrk), PostgreSQL, nats-server, "
        "the six services and the gateway share the cores, so every figure includes that contention. The "
        "open-loop generator is pinned to the last core; nothing else is pinned.",
        "- The open-loop generator is Python (a minimal asyncio HTTP/1.1 client, not httpx, which cost too much "
        "CPU per request here) in its own process; it sustained 400/s against the bare baseline. Saturation is "
        "measured with wrk (closed loop, 32 connections) where it is installed.",
        "- Crisis-stream and event-lag clocks are wall clocks on the same machine; the start is a time stamped "
        "inside the committing transaction (received_at / the routed event's time), so a few ms of commit are "
        "included.",
    ]
    if report.get("mode") == "quick":
        out.append(
            "- This is a --quick run: 5,000 services and 100,000 episodes, 8 s per step. The full sizes are "
            "`make bench`."
        )
    return "\n".join(out) + "\n"


def comparison(source: Path) -> list[str]:
    """A further run's summary (e.g. the same stages with a smaller directory), beside the main one."""
    report = json.loads(source.read_text())
    cfg = report.get("config", {})
    out = [
        "",
        f"## Further run: `{source.name}`",
        "",
        f"{report.get('mode')} run, {report.get('started_at')}; {_fmt(cfg.get('services'))} directory services, "
        f"{_fmt(cfg.get('episodes'))} episodes, {cfg.get('seconds_per_step')} s per step, stages: "
        f"{', '.join(report.get('results', {}))}.",
        "",
        "| figure | value | baseline | ratio | target | met |",
        "|---|---:|---:|---:|---|---|",
    ]
    for row in report.get("summary", []):
        met = {True: "yes", False: "**no**", None: ""}[row.get("met")]
        out.append(
            f"| {row['figure']} | {_fmt(row['value'])} {row.get('unit', '')} | {_fmt(row.get('baseline'))} "
            f"| {_fmt(row.get('ratio'))} | {row.get('target') or ''} | {met} |"
        )
    intake = report.get("results", {}).get("intake", {})
    out += ["", *_sweep_table("Intake through the gateway", intake.get("gateway_sweep", intake))]
    out += _sweep_table("Intake direct to triage", intake.get("direct_sweep", intake))
    return out


def write(source: Path, also: list[Path] | None = None) -> Path:
    report = json.loads(source.read_text())
    DOCS.mkdir(exist_ok=True)
    svgs = plots(report, "benchmarks")
    target = DOCS / "benchmarks.md"
    text = markdown(report, source, svgs)
    for other in also or []:
        text += "\n".join(comparison(other)) + "\n"
    if NOTES.exists():  # findings written by whoever read the figures, kept beside the harness
        text += "\n" + NOTES.read_text()
    target.write_text(text)
    print(f"bench | wrote {target} and {', '.join(str(p.relative_to(ROOT)) for p in svgs)}")
    return target


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("results", nargs="?", type=Path)
    parser.add_argument("--also", type=Path, nargs="*", default=[], help="further runs to summarise after it")
    args = parser.parse_args()
    source = args.results or max(RESULTS.glob("*.json"), key=lambda p: p.stat().st_mtime)
    write(source.resolve(), [p.resolve() for p in args.also])


if __name__ == "__main__":
    main()
