"""The one home of what a route needs from its app: typed `Annotated` dependencies for the database,
the settings and the clock, and the typed state object every service app carries.

A route asks for what it needs by type, never by reaching into `request.app.state`:

    async def worklist(db: DatabaseDep, now: NowDep, ...) -> ...

`ServiceState` *is* the app's `app.state` (Starlette's `State`, with its attributes declared), built
once by `create_service_app`: `service_state(app).db` and `app.state.db` are the same object, so
code (and tests) that still set `app.state.clock` move the clock every reader sees.

The clock is one injectable "now" for the whole service: routes read it through `ClockDep` /
`NowDep` (a test may override `clock` in `app.dependency_overrides`, or set the state's clock,
which workers and consumers read too); the default is `shared.sqltypes.utcnow`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Protocol, TypeVar, overload

from fastapi import Depends
from starlette.datastructures import State
from starlette.requests import HTTPConnection

from shared.db import Database
from shared.settings import Settings
from shared.sqltypes import utcnow

if TYPE_CHECKING:
    from shared.auth import TokenVerifier
    from shared.background import BackgroundWorker
    from shared.broker import Broker
    from shared.consumer import EventConsumer
    from shared.outbox import OutboxRelay


class Clock(Protocol):
    """Now, as a timezone-aware UTC datetime: `clock()`. `utcnow` is one; so is any
    `lambda: fixed_moment` a test sets."""

    def __call__(self) -> datetime: ...


system_clock: Clock = utcnow


class ServiceState(State):
    """A service app's state, typed: what `create_service_app` builds in its lifespan, in one
    object. A service with state of its own subclasses it (declares its attributes, sets them in
    `__init__`) and names the subclass in its `ServiceSpec.state`."""

    service_name: str
    settings: Settings
    db: Database
    broker: Broker
    relay: OutboxRelay
    consumers: list[EventConsumer]
    workers: list[BackgroundWorker]
    token_verifier: TokenVerifier
    clock: Clock
    draining: bool

    def __init__(self) -> None:
        super().__init__()
        self.clock = system_clock
        self.draining = False

    def now(self) -> datetime:
        return self.clock()


S = TypeVar("S", bound=State)  # a service's ServiceState subclass, or another app's typed state


@overload
def service_state(owner: Any) -> ServiceState: ...


@overload
def service_state(owner: Any, kind: type[S]) -> S: ...


def service_state(owner: Any, kind: type[State] = ServiceState) -> State:
    """The typed state of an app, or of the app serving a request (`Request`, `WebSocket`):
    `ServiceState` unless another kind is asked for (a service's subclass, the gateway's state)."""
    app = owner.app if isinstance(owner, HTTPConnection) else owner
    state = app.state
    if not isinstance(state, kind):
        raise TypeError(f"the app's state is {type(state).__name__}, not {kind.__name__}")
    return state


def state_of(kind: type[S]) -> Callable[[HTTPConnection], Awaitable[S]]:
    """A dependency answering a service's own state subclass: `Annotated[X, Depends(state_of(X))]`."""

    async def dependency(connection: HTTPConnection) -> S:
        return service_state(connection, kind)

    dependency.__name__ = f"state_of_{kind.__name__}"
    return dependency


# These dependencies are `async def` though they never wait: FastAPI runs a plain `def` one in its
# thread pool, a thread hop (and its CPU) per dependency per request for a field read.
async def state(connection: HTTPConnection) -> ServiceState:
    return service_state(connection)


StateDep = Annotated[ServiceState, Depends(state)]


async def database(app_state: StateDep) -> Database:
    return app_state.db


async def settings(app_state: StateDep) -> Settings:
    return app_state.settings


async def clock(app_state: StateDep) -> Clock:
    """The service's clock; override this one (`app.dependency_overrides[clock]`) to move "now"
    for every route."""
    return app_state.clock


ClockDep = Annotated[Clock, Depends(clock)]


async def now(current: ClockDep) -> datetime:
    """The clock read once for a request: every dependant of one request sees the same moment."""
    return current()


DatabaseDep = Annotated[Database, Depends(database)]
SettingsDep = Annotated[Settings, Depends(settings)]
NowDep = Annotated[datetime, Depends(now)]
