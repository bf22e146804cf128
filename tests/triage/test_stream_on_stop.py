"""An open crisis stream ends as soon as its process starts to stop (issue 21 §6): the app
reconnects (from Last-Event-ID) to a replica that stays, and the graceful stop is not held open
until its timeout."""

from __future__ import annotations

import asyncio
import time

from cmh.serving import DrainingServer
from shared.service import is_draining, start_draining
from tests.triage.support import CLINICIAN, Triage


async def test_an_open_crisis_stream_ends_when_the_process_starts_to_stop(triage: Triage) -> None:
    async def stop_soon() -> float:
        await asyncio.sleep(0.5)
        start_draining(triage.app)
        return time.monotonic()

    stopping = asyncio.create_task(stop_soon())
    answer = await asyncio.wait_for(triage.client.get("/triage/crisis/stream", headers=CLINICIAN), timeout=10)
    ended = time.monotonic()
    assert answer.status_code == 200 and answer.text.startswith("retry: 1000")
    assert ended - await stopping < 2  # within a poll or two of the stop, not at a timeout


def test_a_stop_signal_starts_draining_even_with_no_drain_period() -> None:
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()
    server = DrainingServer(uvicorn.Config(app), drain_seconds=0)
    server.app = app
    server.handle_exit(15, None)
    assert is_draining(app) and server.should_exit
