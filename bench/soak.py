"""Soak: mixed traffic through the gateway for a while, then errors, latencies and event lag.

    make soak                       # 5 minutes, 5 ticks a second (about 25 requests a second)
    SOAK_SECONDS=3600 make soak     # an hour
    .venv/bin/python -m bench.soak --seconds 600 --rate 40 --gateway http://127.0.0.1:8000 --var var

With `--gateway` it drives a suite already running (`make run` or `cmh cluster`), reading the demo
clients' secrets from `--var`/demo-clients.json; that suite's rate limits apply (start it with
CMH_RATE_LIMIT_PER_MINUTE and CMH_PUBLIC_RATE_LIMIT_PER_MINUTE raised, or 429s will dominate). The mix, per second of `--rate`: referrals
submitted by a partner EHR and accepted by a clinician (with Idempotency-Key, retried on failure),
worklist and FHIR reads, directory searches (public), and a reporting pull now and then. Event lag
is sampled: from a decision's answer until careplan shows the episode. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx

POSTCODES = ("PR1 3BQ", "BB2 2DH", "FY1 1EJ", "LA9 4DL", "LA1 1HP", "BB11 1BS")
SEARCHES = ("anxiety", "loneliness", "debt advice", "carers", "peer support", "food")


class Recorder:
    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[str, Counter[str]] = defaultdict(Counter)
        self.lags: list[float] = []

    async def timed(self, name: str, call: Awaitable[httpx.Response]) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            response = await call
        except httpx.HTTPError as exc:
            self.statuses[name][type(exc).__name__] += 1
            return None
        self.latencies[name].append((time.perf_counter() - started) * 1000)
        self.statuses[name][str(response.status_code)] += 1
        return response

    def report(self, seconds: float) -> str:
        lines = [
            f"soak: {seconds:.0f}s",
            f"{'operation':<22}{'count':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}  answers",
        ]
        for name in sorted(self.statuses):
            values = sorted(self.latencies[name]) or [0.0]
            p50, p95, p99 = (values[min(len(values) - 1, int(q * len(values)))] for q in (0.5, 0.95, 0.99))
            answers = ", ".join(f"{code}: {n}" for code, n in self.statuses[name].most_common())
            count = sum(self.statuses[name].values())
            lines.append(f"{name:<22}{count:>8}{p50:>9.1f}{p95:>9.1f}{p99:>9.1f}  {answers}")
        errors = sum(
            n for c in self.statuses.values() for code, n in c.items() if not code.startswith(("2", "4"))
        )
        lines.append(f"errors (5xx or no answer): {errors}")
        if self.lags:
            lags = sorted(self.lags)
            lines.append(
                f"event lag, decision answered → episode in careplan: n={len(lags)} "
                f"p50 {statistics.median(lags):.0f} ms, p99 {lags[min(len(lags) - 1, int(0.99 * len(lags)))]:.0f} ms"
            )
        return "\n".join(lines)


class Soak:
    def __init__(self, http: httpx.AsyncClient, secrets: dict[str, str], recorder: Recorder) -> None:
        self.http, self.secrets, self.recorder = http, secrets, recorder
        self.tokens: dict[str, dict[str, str]] = {}
        self.referrals: list[str] = []

    async def login(self) -> None:
        for client in ("demo-partner-ehr", "demo-crisis-app", "demo-reporting"):
            for _ in range(30):
                answer = await self.http.post(
                    "/oauth2/token",
                    data={"grant_type": "client_credentials"},
                    auth=(client, self.secrets[client]),
                )
                if answer.status_code != 429:
                    break
                await asyncio.sleep(float(answer.headers.get("retry-after", "1")))
            answer.raise_for_status()
            self.tokens[client] = {"Authorization": f"Bearer {answer.json()['access_token']}"}

    async def referral(self, sample_lag: bool) -> None:
        key = uuid.uuid4().hex
        body = {
            "person": {
                "given_name": f"Soak{key[:12]}", "family_name": "Tester", "birth_date": "1975-06-15",
                "postcode": random.choice(POSTCODES),
            },
            "source": "gp", "needs": [random.choice(["low_mood", "anxiety", "trauma"])], "consent_to_share": False,
        }  # fmt: skip
        headers = {**self.tokens["demo-partner-ehr"], "Idempotency-Key": key}
        for _ in range(5):
            created = await self.recorder.timed(
                "referral submit", self.http.post("/triage/referrals", json=body, headers=headers)
            )
            if created is not None and created.status_code == 201:
                break
            await asyncio.sleep(0.5)
        else:
            return
        referral_id = created.json()["id"]
        self.referrals.append(referral_id)
        decided = await self.recorder.timed(
            "triage decision",
            self.http.post(
                f"/triage/referrals/{referral_id}/decisions", json={"action": "accept"},
                headers={**self.tokens["demo-crisis-app"], "If-Match": '"1"'},
            ),
        )  # fmt: skip
        if (
            sample_lag
            and decided is not None
            and decided.status_code == 200
            and decided.json()["status"] == "routed"
        ):
            started = time.perf_counter()
            for _ in range(200):
                found = await self.http.get(
                    "/careplan/episodes",
                    params={"referral_id": referral_id},
                    headers=self.tokens["demo-crisis-app"],
                )
                if found.status_code == 200 and found.json()["items"]:
                    self.recorder.lags.append((time.perf_counter() - started) * 1000)
                    return
                await asyncio.sleep(0.02)

    async def reads(self) -> None:
        clinician = self.tokens["demo-crisis-app"]
        await self.recorder.timed(
            "triage worklist", self.http.get("/triage/referrals", params={"per_page": 20}, headers=clinician)
        )
        if self.referrals:
            await self.recorder.timed(
                "FHIR ServiceRequest",
                self.http.get(
                    f"/fhir/ServiceRequest/{random.choice(self.referrals)}",
                    headers=self.tokens["demo-partner-ehr"],
                ),
            )
        await self.recorder.timed("careplan worklist", self.http.get("/careplan/worklist", headers=clinician))

    async def directory(self) -> None:
        await self.recorder.timed(
            "directory search",
            self.http.get("/directory/services", params={"search": random.choice(SEARCHES), "per_page": 10}),
        )

    async def reporting(self) -> None:
        await self.recorder.timed(
            "reporting pull",
            self.http.get(
                "/reporting/four-week-waits",
                params={"period": time.strftime("%Y-%m"), "group_by": "place"},
                headers=self.tokens["demo-reporting"],
            ),
        )


async def drive(gateway: str, secrets: dict[str, str], seconds: float, rate: float) -> Recorder:
    recorder = Recorder()
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=gateway, timeout=30, limits=limits) as http:
        soak = Soak(http, secrets, recorder)
        await soak.login()
        tasks: set[asyncio.Task[None]] = set()
        deadline = time.monotonic() + seconds
        tick = 0
        logged_in = time.monotonic()
        while time.monotonic() < deadline:
            # Per tick: mostly reads, some referrals, a directory search, a reporting pull now and then.
            choices: list[Callable[[], Awaitable[None]]] = [soak.reads, soak.directory]
            choices.append(lambda sample=tick % 5 == 0: soak.referral(sample_lag=sample))
            if tick % 50 == 0:
                choices.append(soak.reporting)
            for make in choices:
                task = asyncio.create_task(make())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            tick += 1
            if time.monotonic() - logged_in > 120:
                await soak.login()  # tokens last minutes, a soak lasts longer
                logged_in = time.monotonic()
            await asyncio.sleep(random.expovariate(rate / 1.0) if rate > 0 else 1.0)
        await asyncio.gather(*tasks, return_exceptions=True)
    return recorder


@contextlib.contextmanager
def suite_started(var_dir: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """`cmh run` in a fresh var dir, until it says it is ready."""
    # One load generator is one client address: lift the per-client and per-address limits that
    # would otherwise answer most of the soak with 429.
    env = {
        **os.environ, "CMH_VAR_DIR": str(var_dir), "CMH_LOG_LEVEL": "WARNING",
        "CMH_RATE_LIMIT_PER_MINUTE": "1000000", "CMH_PUBLIC_RATE_LIMIT_PER_MINUTE": "1000000",
    }  # fmt: skip
    process = subprocess.Popen(  # our own CLI
        [sys.executable, "-m", "cmh.cli", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if "CMH Suite is ready" in line:
                break
            if process.poll() is not None:
                raise SystemExit("cmh run stopped before it was ready")
        secrets = json.loads((var_dir / "demo-clients.json").read_text())
        yield "http://127.0.0.1:8000", secrets
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", 300)))
    parser.add_argument(
        "--rate", type=float, default=float(os.environ.get("SOAK_RATE", 5)), help="ticks per second"
    )
    parser.add_argument("--gateway", help="a running suite's gateway (default: start one)")
    parser.add_argument(
        "--var", type=Path, default=Path("var"), help="where a running suite keeps demo-clients.json"
    )
    args = parser.parse_args()
    started = time.monotonic()
    if args.gateway:
        secrets = json.loads((args.var / "demo-clients.json").read_text())
        recorder = asyncio.run(drive(args.gateway, secrets, args.seconds, args.rate))
    else:
        with (
            tempfile.TemporaryDirectory(prefix="cmh-soak-") as var_dir,
            suite_started(Path(var_dir)) as (gateway, secrets),
        ):
            recorder = asyncio.run(drive(gateway, secrets, args.seconds, args.rate))
    print(recorder.report(time.monotonic() - started))


if __name__ == "__main__":
    main()
