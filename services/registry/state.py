"""The registry's typed app state: the shared `ServiceState` and the coverage snapshot cache."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from services.registry.snapshot import SnapshotCache
from shared.deps import ServiceState, state_of


class RegistryState(ServiceState):
    snapshots: SnapshotCache  # coverage snapshots by London date, for /resolve

    def __init__(self) -> None:
        super().__init__()
        self.snapshots = SnapshotCache()


RegistryStateDep = Annotated[RegistryState, Depends(state_of(RegistryState))]
