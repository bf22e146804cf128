"""Referrals sent through the gateway while a fault runs, as a careful client sends them, and what
the stores then hold: the part of the fault suites that is the same on either topology (the
PostgreSQL cluster of conftest.py, and `cmh run`'s embedded one of test_embedded_faults.py).

A topology says where its gateway is, which tokens submit and decide, and how its stores are
queried (`query`); the rest is here."""

from __future__ import annotations

import abc
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

# Teams in the registry's seeded reference data (triage's read-model holds them all once it is ready).
TEAMS_IN_REFERENCE = 45
# How long a client keeps trying one referral, and how long it waits before a retry at most (it
# honours Retry-After up to this).
CLIENT_DEADLINE = 90.0
LONGEST_RETRY_WAIT = 2.0

# Each store's rows per referral: triage's referrals, careplan's episodes, reporting's counts.
HOLDINGS: dict[str, tuple[str, str]] = {
    "triage": ("triage", "SELECT id, 1 FROM triage_referrals"),
    "careplan": ("careplan", "SELECT referral_id, count(*) FROM careplan_episodes GROUP BY referral_id"),
    "reporting": ("reporting", "SELECT referral_id, count(*) FROM reporting_referrals GROUP BY referral_id"),
    "reporting_episodes": (
        "reporting", "SELECT referral_id, count(*) FROM reporting_episodes GROUP BY referral_id",
    ),
}  # fmt: skip

_DIGITS_AS_LETTERS = str.maketrans("0123456789", "abcdefghij")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(interval)


def report(name: str, text: str) -> None:
    print(f"[fault] {name}: {text}")  # shown with -s; the closing note quotes these


@dataclass
class Outcome:
    """What clients saw for one batch of referrals."""

    sent: int = 0
    accepted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # never accepted within the deadline
    # Failed answers (retried), by status code or the connection error's name.
    refusals: Counter[str] = field(default_factory=Counter)
    busy_without_retry_after: int = 0  # 503s that did not say when to try again
    elapsed: float = 0.0
    last_failure: dict[str, str] = field(default_factory=dict)  # path -> what it last got

    @property
    def refused_answers(self) -> int:
        return sum(self.refusals.values())

    def summary(self) -> str:
        refused = ", ".join(f"{what} x{n}" for what, n in sorted(self.refusals.items()))
        return (
            f"sent {self.sent}, accepted {len(self.accepted)}, never accepted {len(self.failed)}, "
            f"refused {self.refused_answers}{f' ({refused})' if refused else ''} and retried, "
            f"{self.elapsed:.1f}s"
        )


@dataclass(frozen=True)
class Tally:
    """The stores against what clients saw: `lost`, accepted referrals missing from a store;
    `doubled`, accepted referrals held more than once by a store; `stray`, referrals stored that no
    client saw accepted (a 2xx never answered, or a retry stored as a second referral)."""

    lost: int
    doubled: int
    stray: int
    by_store: dict[str, dict[str, int]]
    rows: dict[str, int]

    @classmethod
    def of(cls, holdings: dict[str, dict[str, int]], expected: set[str]) -> Tally:
        by_store = {
            store: {
                "lost": len(expected - set(rows)),
                "doubled": sum(1 for key, n in rows.items() if n > 1 and key in expected),
                "stray": len(set(rows) - expected),
            }
            for store, rows in holdings.items()
        }
        lost = {key for store, rows in holdings.items() for key in expected - set(rows)}
        doubled = {key for rows in holdings.values() for key, n in rows.items() if n > 1 and key in expected}
        stray = {key for rows in holdings.values() for key in set(rows) - expected}
        rows = {store: sum(held.values()) for store, held in holdings.items()}
        return cls(len(lost), len(doubled), len(stray), by_store, rows)

    @property
    def settled(self) -> bool:
        return self.lost == self.doubled == self.stray == 0

    def summary(self) -> str:
        rows = ", ".join(f"{store} {n}" for store, n in self.rows.items())
        return f"lost={self.lost}, doubled={self.doubled}, stray={self.stray} (rows: {rows})"


class ReferralTraffic(abc.ABC):
    """Clients of one running suite: `tokens["ehr"]` submits referrals, `tokens["clinician"]`
    accepts them; `accepted` is every referral any client saw accepted, across batches."""

    tokens: dict[str, dict[str, str]]
    accepted: list[str]

    @property
    @abc.abstractmethod
    def gateway(self) -> str:
        """The gateway's base URL."""

    @abc.abstractmethod
    def query(self, owner: str, sql: str) -> list[Any]:
        """The rows a read-only query of one service's store returns."""

    # --- traffic --------------------------------------------------------------------------------

    def referrals(self, count: int, label: str, *, during: Callable[[], None] | None = None) -> Outcome:
        """Submit and accept `count` referrals through the gateway, 6 at a time, as a careful client
        would: a failed answer is retried with the same Idempotency-Key (and the decision with
        If-Match), after the Retry-After it names, until accepted or 90 s pass. `during` runs in
        parallel (the fault)."""
        outcome = Outcome(sent=count)
        started = time.monotonic()
        run = uuid.uuid4().hex[:8]
        with (
            ThreadPoolExecutor(max_workers=7) as pool,
            httpx.Client(base_url=self.gateway, timeout=10) as http,
        ):
            fault = pool.submit(during) if during else None
            results = list(pool.map(lambda i: self._one(http, f"{label}-{run}-{i}", outcome), range(count)))
            if fault is not None:
                fault.result()
        for key, referral_id in results:
            (outcome.accepted if referral_id else outcome.failed).append(referral_id or key)
        self.accepted.extend(outcome.accepted)
        outcome.elapsed = time.monotonic() - started
        return outcome

    def _one(self, http: httpx.Client, key: str, outcome: Outcome) -> tuple[str, str | None]:
        deadline = time.monotonic() + CLIENT_DEADLINE
        body = {
            "person": {
                # One person per referral: names match on letters alone (digits are dropped), so the
                # key's digits become letters; the same person twice would be linked, not opened twice.
                "given_name": f"Fault{key.replace('-', '').translate(_DIGITS_AS_LETTERS)[:40]}", "family_name": "Tester",
                "birth_date": "1980-02-02", "postcode": "PR1 3BQ",
            },
            "source": "gp", "needs": ["low_mood"], "consent_to_share": False,
        }  # fmt: skip
        referral_id = None
        while referral_id is None and time.monotonic() < deadline:
            answer = self._send(
                http, "POST", "/triage/referrals", outcome, self.tokens["ehr"], key, body=body
            )
            if answer is not None and answer.status_code == 201:
                referral_id = answer.json()["id"]
        while referral_id is not None and time.monotonic() < deadline:
            decided = self._send(
                http, "POST", f"/triage/referrals/{referral_id}/decisions", outcome, self.tokens["clinician"],
                None, body={"action": "accept"}, if_match='"1"',
            )  # fmt: skip
            if decided is not None and decided.status_code == 200:
                return key, referral_id
            if decided is not None and decided.status_code == 412:  # an earlier try got through
                read = self._send(
                    http, "GET", f"/triage/referrals/{referral_id}", outcome, self.tokens["clinician"]
                )
                if read is not None and read.status_code == 200 and read.json()["status"] == "routed":
                    return key, referral_id
        return key, None

    def _send(
        self, http: httpx.Client, method: str, path: str, outcome: Outcome, auth: dict[str, str],
        key: str | None = None, *, body: dict[str, Any] | None = None, if_match: str | None = None,
    ) -> httpx.Response | None:  # fmt: skip
        headers = dict(auth)
        if key:
            headers["Idempotency-Key"] = key
        if if_match:
            headers["If-Match"] = if_match
        try:
            answer = http.request(method, path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            outcome.refusals[type(exc).__name__] += 1
            outcome.last_failure[f"{method} {path}"] = type(exc).__name__
            time.sleep(0.2)
            return None
        if answer.status_code >= 500 or answer.status_code == 429:
            outcome.refusals[str(answer.status_code)] += 1
            outcome.last_failure[f"{method} {path}"] = f"{answer.status_code} {answer.text[:200]}"
            retry_after = answer.headers.get("retry-after", "")
            if answer.status_code == 503 and not retry_after:
                outcome.busy_without_retry_after += 1
            wait = float(retry_after) if retry_after.isdigit() else 0.2
            time.sleep(min(wait, LONGEST_RETRY_WAIT))
            return None
        if answer.status_code >= 400 and answer.status_code != 412:
            raise AssertionError(f"{method} {path}: {answer.status_code} {answer.text}")
        return answer

    # --- what the stores hold -------------------------------------------------------------------

    def holdings(self) -> dict[str, dict[str, int]]:
        """For each store, how many rows each referral has."""
        return {store: dict(self.query(owner, sql)) for store, (owner, sql) in HOLDINGS.items()}

    def tally(self) -> Tally:
        return Tally.of(self.holdings(), set(self.accepted))

    def assert_nothing_lost_or_doubled(self, timeout: float = 90) -> str:
        """Every accepted referral once in triage, its episode once in careplan, counted once in
        reporting (referral and episode); and nothing stored that no client saw accepted."""
        last: list[Tally] = []
        started = time.monotonic()

        def settled() -> bool:
            last[:] = [self.tally()]
            return last[0].settled

        try:
            wait_until(settled, timeout, "every store holds each accepted referral once", interval=0.5)
        except AssertionError:
            tally = last[0]
            raise AssertionError(
                f"stores disagree with what clients saw: {tally.summary()}; by store {tally.by_store}"
            ) from None
        return f"{last[0].summary()}, settled {time.monotonic() - started:.1f}s after the last answer"
