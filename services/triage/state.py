"""Triage's typed app state: the shared `ServiceState` and the crisis queue's wake-up."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends

from shared.deps import ServiceState, state_of


class TriageState(ServiceState):
    crisis_changed: asyncio.Event  # wakes this replica's crisis streams at once

    def __init__(self) -> None:
        super().__init__()
        self.crisis_changed = asyncio.Event()


TriageStateDep = Annotated[TriageState, Depends(state_of(TriageState))]
