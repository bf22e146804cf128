"""A long-running asyncio task owned by an app's lifespan (outbox relays, consumers)."""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod


class BackgroundWorker(ABC):
    task_name = "worker"

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self.stopping = False

    @abstractmethod
    async def run(self) -> None:
        """The worker's loop; it must end once `stopping` is set."""

    def start(self) -> None:
        if self._task is None:
            self.stopping = False
            self._task = asyncio.create_task(self.run(), name=self.task_name)

    async def stop(self) -> None:
        self.stopping = True
        task, self._task = self._task, None
        if task is None:
            return
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
