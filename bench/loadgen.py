"""An open-loop load generator that runs in its own process (so it does not share an event loop,
or the GIL, with the harness or the system under test), and `wrk` for closed-loop saturation.

Open loop: request *i* is due at `start + i / rate` whatever happened to earlier requests, and its
latency is counted from when it was due, not from when it was sent, so a stalled system cannot
hide its queueing (no coordinated omission). Requests go over a fixed pool of keep-alive
connections (64 by default, as wrk2 does) and wait for a free one; requests that would exceed
`max_in_flight` are counted as `dropped` and not sent; a run with drops did not sustain the rate.

Scenarios:
- `intake`: POST a new referral (unique person and Idempotency-Key) to `path`;
- `intake_accept`: as `intake`, then accept it (`POST .../decisions`, If-Match "1") with
  `decide_token`; the latency recorded is the submit's, the decision's goes under `decide`;
- `crisis`: as `intake` with a risk that makes the referral urgent (POST to the crisis path);
- `fhir`: as `intake`, as a UK Core ServiceRequest with a contained Patient (POST /fhir/ServiceRequest);
- `get`: GET a path from `paths` (label, path), round robin; latencies per label and overall;
- `post_row`: POST a small JSON body (the bare baseline app).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.fhir_terms import CMH_CODES, ODS_SYSTEM

POSTCODES = ("PR1 3BQ", "BB2 2DH", "FY1 1EJ", "LA9 4DL", "LA1 1HP", "BB11 1BS")
NEEDS = (["low_mood", "housing"], ["anxiety"], ["low_mood"], ["trauma"])
LUA = Path(__file__).with_name("wrk_post.lua")


@dataclass
class Plan:
    scenario: str
    base_url: str
    rate: float
    seconds: float
    path: str = ""
    token: str | None = None
    decide_token: str | None = None
    paths: list[tuple[str, str]] = field(default_factory=list)
    max_in_flight: int = 5000
    connections: int = 64
    warmup_seconds: float = 1.0
    label: str = ""
    requester_ods: str = "RXN"  # `fhir`: the submitting client's own organisation


def referral_body(key: str, rng: random.Random, *, urgent: bool = False) -> dict[str, Any]:
    """A new person each time; `urgent` adds a risk that screens above routine (a crisis referral
    only joins the crisis queue, and its stream, with a response deadline)."""
    return {
        "person": {
            "given_name": f"Bench{key[:10]}", "family_name": f"Load{key[10:16]}",
            "birth_date": f"{rng.randint(1940, 2005)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            "postcode": rng.choice(POSTCODES),
        },
        "source": "gp", "needs": rng.choice(NEEDS), "risks": ["suicidal_ideation"] if urgent else [],
        "consent_to_share": True,
    }  # fmt: skip


FHIR_JSON = "application/fhir+json"


def service_request_body(key: str, rng: random.Random, requester_ods: str) -> dict[str, Any]:
    """The same referral as `referral_body`, as a partner EHR sends it over FHIR."""
    return {
        "resourceType": "ServiceRequest",
        "contained": [{
            "resourceType": "Patient", "id": "patient",
            "name": [{"given": [f"Bench{key[:10]}"], "family": f"Load{key[10:16]}"}],
            "birthDate": f"{rng.randint(1940, 2005)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            "address": [{"postalCode": rng.choice(POSTCODES)}],
        }],
        "identifier": [{"system": "https://bench.cmh.example/referrals", "value": key}],
        "status": "active", "intent": "order", "priority": "routine",
        "category": [{"coding": [{"system": CMH_CODES + "referral-source", "code": "gp"}]}],
        "subject": {"reference": "#patient"},
        "requester": {"identifier": {"system": ODS_SYSTEM, "value": requester_ods}},
        "reasonCode": [{"coding": [{"system": CMH_CODES + "need", "code": need}]} for need in rng.choice(NEEDS)],
    }  # fmt: skip


def percentiles(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {
        "n": len(ordered),
        "p50_ms": at(0.50),
        "p95_ms": at(0.95),
        "p99_ms": at(0.99),
        "max_ms": round(ordered[-1], 2),
    }


class Connection:
    """One keep-alive HTTP/1.1 connection: a minimal client (Content-Length or chunked answers),
    far cheaper per request than httpx, so the generator is not the bottleneck."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None = None
    ) -> tuple[int, bytes]:
        reused = self.writer is not None
        try:
            return await self._exchange(method, path, headers, body)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            # A keep-alive connection the server closed while it sat idle (uvicorn closes them
            # after 5 s): nothing of an answer came back, so the request was never read. Send
            # it again on a new connection, as any HTTP client does; a connection that fails
            # fresh, or mid-answer, is a real failure.
            partial = getattr(exc, "partial", b"")
            if not reused or partial:
                raise
            return await self._exchange(method, path, headers, body)

    async def _exchange(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None:
            if not any(k.lower() == "content-type" for k in headers):
                lines.append("Content-Type: application/json")
            lines.append(f"Content-Length: {len(body)}")
        try:
            self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))
            head = await self.reader.readuntil(b"\r\n\r\n")
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            status = int(status_line.split()[1])
            answer = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
            if "content-length" in answer:
                data = await self.reader.readexactly(int(answer["content-length"]))
            elif answer.get("transfer-encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    if size == 0:
                        while (await self.reader.readuntil(b"\r\n")) != b"\r\n":
                            pass
                        break
                    chunks.append(await self.reader.readexactly(size))
                    await self.reader.readexactly(2)
                data = b"".join(chunks)
            else:
                data = b""
        except BaseException:
            self.close()
            raise
        if answer.get("connection", "").lower() == "close":
            self.close()
        return status, data


async def _drive(plan: Plan) -> dict[str, Any]:
    rng = random.Random()
    latencies: dict[str, list[float]] = defaultdict(list)
    statuses: Counter[str] = Counter()
    decide_statuses: Counter[str] = Counter()
    url = urlsplit(plan.base_url)
    connections: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(plan.connections):
        connections.put_nowait(Connection(url.hostname or "127.0.0.1", url.port or 80))
    auth = {"Authorization": f"Bearer {plan.token}"} if plan.token else {}
    decide_auth = {"Authorization": f"Bearer {plan.decide_token}", "If-Match": '"1"'}
    in_flight = 0
    dropped = 0
    ok_in_window = 0

    async def call(method: str, path: str, headers: dict[str, str], body: Any = None) -> tuple[int, bytes]:
        connection = await connections.get()
        try:
            payload = None if body is None else json.dumps(body).encode()
            return await asyncio.wait_for(connection.request(method, path, headers, payload), timeout=30)
        finally:
            connections.put_nowait(connection)

    async def one(index: int, due: float, measured: bool) -> None:
        nonlocal in_flight, ok_in_window
        in_flight += 1
        label = plan.scenario
        try:
            if plan.scenario == "get":
                label, path = plan.paths[index % len(plan.paths)]
                status, data = await call("GET", path, {})
            elif plan.scenario == "post_row":
                key = uuid.uuid4().hex
                status, data = await call(
                    "POST", plan.path, {"Idempotency-Key": key}, {"key": key, "n": index}
                )
            elif plan.scenario == "fhir":
                key = uuid.uuid4().hex
                body = service_request_body(key, rng, plan.requester_ods)
                headers = {**auth, "Idempotency-Key": key, "Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
                status, data = await call("POST", plan.path, headers, body)
            else:
                key = uuid.uuid4().hex
                body = referral_body(key, rng, urgent=plan.scenario == "crisis")
                status, data = await call("POST", plan.path, {**auth, "Idempotency-Key": key}, body)
            elapsed = (time.perf_counter() - due) * 1000
            if measured:
                statuses[str(status)] += 1
                if 200 <= status < 300:
                    latencies[label].append(elapsed)
                    ok_in_window += 1
            if plan.scenario == "intake_accept" and status == 201:
                started = time.perf_counter()
                decided, _ = await call(
                    "POST",
                    f"{plan.path}/{json.loads(data)['id']}/decisions",
                    decide_auth,
                    {"action": "accept"},
                )
                if measured:
                    decide_statuses[str(decided)] += 1
                    if 200 <= decided < 300:
                        latencies["decide"].append((time.perf_counter() - started) * 1000)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            if measured:
                statuses[type(exc).__name__] += 1
        finally:
            in_flight -= 1

    tasks: set[asyncio.Task[None]] = set()
    total = plan.warmup_seconds + plan.seconds
    count = int(total * plan.rate)
    start = time.perf_counter() + 0.05
    for index in range(count):
        due = start + index / plan.rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        measured = due - start >= plan.warmup_seconds
        if in_flight >= plan.max_in_flight:
            if measured:
                dropped += 1
            continue
        task = asyncio.create_task(one(index, due, measured))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    sent_until = time.perf_counter()
    if tasks:
        _, pending = await asyncio.wait(set(tasks), timeout=30)
        for task in pending:
            task.cancel()
        statuses["unanswered"] += len(pending)
        await asyncio.gather(*pending, return_exceptions=True)
    drained = time.perf_counter()
    while not connections.empty():
        connections.get_nowait().close()
    measured_seconds = sent_until - (start + plan.warmup_seconds)
    overall = [v for k, values in latencies.items() if k != "decide" for v in values]
    result: dict[str, Any] = {
        "label": plan.label or plan.scenario,
        "scenario": plan.scenario,
        "offered_rps": plan.rate,
        "connections": plan.connections,
        "seconds": round(measured_seconds, 2),
        "achieved_rps": round(ok_in_window / max(measured_seconds, drained - start - plan.warmup_seconds), 1),
        "statuses": dict(statuses),
        "dropped": dropped,
        **percentiles(overall),
    }
    if decide_statuses:
        result["decide"] = {"statuses": dict(decide_statuses), **percentiles(latencies["decide"])}
    if plan.scenario == "get":
        result["by_label"] = {k: percentiles(v) for k, v in latencies.items()}
    return result


def _run(plan_fields: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(_drive(Plan(**plan_fields)))


def _pin_generator() -> None:
    # On two cores nothing can be fully isolated; the generator takes the last core and the
    # suite is free to use both (the kernel still shares that core).
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) > 1:
        os.sched_setaffinity(0, {cores[-1]})


_pool: ProcessPoolExecutor | None = None


def pool() -> ProcessPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_pin_generator,
        )
    return _pool


def shutdown() -> None:
    global _pool
    if _pool is not None:
        _pool.shutdown(wait=True, cancel_futures=True)
        _pool = None


async def open_loop(plan: Plan) -> dict[str, Any]:
    """Run `plan` in the generator process; the caller's event loop stays free (subscribers)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(pool(), _run, asdict(plan))


def wrk_available() -> str | None:
    return shutil.which("wrk")


def wrk_post(url: str, token: str | None, seconds: int, connections: int, threads: int = 1) -> dict[str, Any]:
    """Closed-loop saturation: `connections` keep-alive connections POSTing new referrals (or rows)
    as fast as they are answered. Latency percentiles from wrk (service time, closed loop)."""
    binary = wrk_available()
    if binary is None:
        return {"skipped": "wrk not installed"}
    env = {**os.environ, "WRK_TOKEN": token or "", "WRK_RUN": uuid.uuid4().hex[:8]}
    completed = subprocess.run(  # noqa: S603 - wrk from PATH, our own arguments
        [
            binary,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "30s",
            "--latency",
            "-s",
            str(LUA),
            url,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    for line in completed.stdout.splitlines():
        if line.startswith("JSON "):
            figures = json.loads(line[5:])
            duration = figures.pop("duration_us") / 1e6
            good = figures["requests"] - figures["non2xx"] - figures["socket_errors"]
            return {
                "connections": connections,
                "seconds": round(duration, 2),
                "requests": figures["requests"],
                "non2xx": figures["non2xx"],
                "socket_errors": figures["socket_errors"],
                "rps": round(good / duration, 1),
                "p50_ms": figures["p50_us"] / 1000,
                "p90_ms": figures["p90_us"] / 1000,
                "p99_ms": figures["p99_us"] / 1000,
                "max_ms": figures["max_us"] / 1000,
            }
    return {"error": (completed.stdout + completed.stderr)[-800:]}
