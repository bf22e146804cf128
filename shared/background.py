"""A long-running asyncio task owned by an app's lifespan (outbox relays, consumers)."""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod


class BackgroundWorker(ABC):
    task_name = "worker"

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    @abstractmethod
    async def run(self) -> None: ...

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=self.task_name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


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
