"""The gateway's own cost per proxied request (issue 23): the real gateway app and a trivial upstream,
each as its own uvicorn process (as `cmh run` serves them), with the bundled nats-server.

    .venv/bin/python -m bench.gateway_hop [--requests 2000] [--concurrency 1 8] [--upstream-ms 0]

For each concurrency it sends the same small JSON POST (a referral's size, with a bearer token and
an Idempotency-Key) through the gateway and then straight to the upstream, and reports the gateway
process's CPU per proxied request (utime + stime from /proc, so the load generator and the upstream
are not counted) and p50/p99 via the gateway and direct. `--upstream-ms` makes the upstream wait
that long before answering (a stand-in for a real service's time, e.g. triage's ~9 ms), which is
what "p50 via gateway / direct" is judged against; the added milliseconds are reported as well.
Not part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from shared.nats_server import EmbeddedNatsServer, free_port
from shared.settings import Settings

CLIENT_ID = "bench-hop"
# About a referral's size, either way.
REQUEST_BODY = json.dumps(
    {
        "person": {
            "given_name": "Person",
            "family_name": "Bench",
            "birth_date": "1980-01-01",
            "postcode": "PR1 3BQ",
        },
        "source": "gp",
        "needs": ["low_mood", "housing"],
        "risks": [],
        "consent_to_share": True,
    }
).encode()
ANSWER_BODY = json.dumps(
    {"id": "0" * 36, "status": "received", "route": "community", "padding": "x" * 400}
).encode()
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (its threads included) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def upstream_app(delay_seconds: float) -> Any:
    """A bare ASGI service: reads the body, waits `delay_seconds`, answers a small JSON."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        if delay_seconds:
            await asyncio.sleep(delay_seconds)
        await send(
            {
                "type": "http.response.start",
                "status": 201,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(ANSWER_BODY)).encode()),
                    (b"location", b"/triage/referrals/1"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": ANSWER_BODY})

    return app


def _serve(role: str, port: int, delay_ms: float) -> None:
    """The child processes' entry point."""
    if role == "gateway":
        from cmh.serving import serve

        serve("gateway", Settings(), host="127.0.0.1", port=port)
        return
    import uvicorn

    uvicorn.run(upstream_app(delay_ms / 1000), host="127.0.0.1", port=port, log_config=None, access_log=False)


async def _prepare(settings: Settings) -> str:
    """The gateway's database, a client with room to spare under its rate limit, and its token."""
    from cmh.migrations import migrate_all
    from gateway.admin import mint_token
    from gateway.clients import add_client
    from shared.db import Database

    await migrate_all(settings, ("gateway",))
    db = Database(settings.database_url_for("gateway"))
    async with db.transaction() as session:
        await add_client(
            session, client_id=CLIENT_ID, name="bench", organisation="P81001", organisation_system="ods",
            kind="partner_ehr", scopes="referral:submit referral:read", rate_limit_per_minute=10_000_000,
        )  # fmt: skip
    await db.dispose()
    return await mint_token(settings, CLIENT_ID)


async def _wait_until_up(url: str) -> None:
    deadline = time.monotonic() + 60.0
    async with httpx.AsyncClient() as client:
        while True:
            try:
                await client.get(url, timeout=1.0)
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


async def _load(base: str, token: str, requests: int, concurrency: int) -> list[float]:
    """`requests` POSTs with `concurrency` in flight (closed loop); each one's milliseconds."""
    samples: list[float] = []
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:

        async def worker() -> None:
            for index in counter:
                headers = {
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/json",
                    "Idempotency-Key": f"hop-{index}",
                }
                started = time.perf_counter()
                response = await client.post("/triage/referrals", content=REQUEST_BODY, headers=headers)
                samples.append((time.perf_counter() - started) * 1000)
                if response.status_code != 201:
                    raise RuntimeError(f"{response.status_code}: {response.text[:300]}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * fraction))], 3)


async def measure(
    requests: int = 2000, concurrency: tuple[int, ...] = (1, 8), upstream_ms: float = 0.0
) -> dict[str, Any]:
    """Start the suite's gateway and a trivial upstream, load both, and report per concurrency:
    gateway CPU ms per proxied request, p50/p99 via gateway and direct, their ratio."""
    with tempfile.TemporaryDirectory(prefix="cmh-hop-") as scratch:
        nats = EmbeddedNatsServer(Path(scratch) / "nats")
        nats.store_dir.mkdir()
        nats.start()
        upstream_port, gateway_port = free_port(), free_port()
        env = {
            **os.environ,
            "CMH_VAR_DIR": scratch,
            "CMH_NATS_URL": nats.url,
            "CMH_TRIAGE_URL": f"http://127.0.0.1:{upstream_port}",
            "CMH_GATEWAY_PORT": str(gateway_port),
            "CMH_METRICS_PORT_OFFSET": "0",
            "CMH_LOG_LEVEL": "WARNING",
        }
        for name in [n for n in env if n.startswith("CMH_") and "DATABASE" in n]:
            del env[name]  # the gateway's SQLite file in the scratch directory
        settings = Settings(var_dir=Path(scratch), nats_url=nats.url, gateway_port=gateway_port)
        token = await _prepare(settings)
        processes: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for role, port in (("upstream", upstream_port), ("gateway", gateway_port)):
                processes[role] = subprocess.Popen(  # noqa: S603, ASYNC220 - this interpreter, this module; before any load
                    [sys.executable, "-m", "bench.gateway_hop", "--serve", role, "--port", str(port),
                     "--upstream-ms", str(upstream_ms)],
                    env=env,
                )  # fmt: skip
            await _wait_until_up(f"http://127.0.0.1:{upstream_port}/")
            await _wait_until_up(f"http://127.0.0.1:{gateway_port}/health")
            gateway_base, direct_base = (
                f"http://127.0.0.1:{gateway_port}",
                f"http://127.0.0.1:{upstream_port}",
            )
            await _load(gateway_base, token, 200, 4)  # warm-up: imports, pools, caches
            results: dict[str, Any] = {"requests": requests, "upstream_ms": upstream_ms, "runs": {}}
            gateway_pid = processes["gateway"].pid
            for in_flight in concurrency:
                before = cpu_seconds(gateway_pid)
                started = time.perf_counter()
                via = await _load(gateway_base, token, requests, in_flight)
                wall = time.perf_counter() - started
                cpu = cpu_seconds(gateway_pid) - before
                direct = await _load(direct_base, token, requests, in_flight)
                via_p50, direct_p50 = statistics.median(via), statistics.median(direct)
                results["runs"][str(in_flight)] = {
                    "gateway_cpu_ms_per_request": round(cpu * 1000 / requests, 3),
                    "gateway_requests_per_s": round(requests / wall, 1),
                    "via_p50_ms": round(via_p50, 3),
                    "via_p99_ms": _percentile(via, 0.99),
                    "direct_p50_ms": round(direct_p50, 3),
                    "direct_p99_ms": _percentile(direct, 0.99),
                    "p50_ratio": round(via_p50 / direct_p50, 3),
                    "p50_added_ms": round(via_p50 - direct_p50, 3),
                }
            results["gateway_pid"] = gateway_pid
            return results
        finally:
            for process in processes.values():
                process.terminate()
            for process in processes.values():
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
            nats.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--upstream-ms", type=float, default=0.0)
    parser.add_argument("--serve", choices=["gateway", "upstream"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve, args.port, args.upstream_ms)
        return
    print(
        json.dumps(asyncio.run(measure(args.requests, tuple(args.concurrency), args.upstream_ms)), indent=2)
    )


if __name__ == "__main__":
    main()
