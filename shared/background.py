"""A long-running asyncio task owned by an app's lifespan (outbox relays, consumers)."""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator


class BackgroundWorker(ABC):
    task_name = "worker"

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self.stopping = False
        self._busy = 0

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Mark work that a graceful stop lets finish (a batch of events, a relay pass); outside it
        the worker only waits, and a stop cancels it at once."""
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1

    @abstractmethod
    async def run(self) -> None:
        """The worker's loop; it must end once `stopping` is set."""

    def start(self) -> None:
        if self._task is None:
            self.stopping = False
            self._task = asyncio.create_task(self.run(), name=self.task_name)

    async def stop(self, grace: float = 0.0) -> None:
        """Stop: with `grace`, work marked `busy` gets up to that long to finish (the loop sees
        `stopping` and ends, or is cancelled while it waits for more)."""
        self.stopping = True
        task, self._task = self._task, None
        if task is None:
            return
        deadline = asyncio.get_running_loop().time() + grace
        while self._busy and not task.done() and asyncio.get_running_loop().time() < deadline:
            await asyncio.wait({task}, timeout=0.02)
        # Libraries below us can swallow a cancellation (nats-py turns one into
        # TooManyStalledMsgsError): keep cancelling until the task has really ended.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            task.result()


class Every:
    """True at most once per `seconds` (for housekeeping inside a busy loop)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._last = float("-inf")

    def due(self) -> bool:
        now = asyncio.get_running_loop().time()
        if now - self._last < self.seconds:
            return False
        self._last = now
        return True
