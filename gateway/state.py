"""The gateway's typed app state: what its lifespan builds, in one object (`app.state` itself, as
for the services: shared/deps.py). Routes ask for `GatewayStateDep`; helpers given a request use
`gateway_state(request)`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends
from starlette.datastructures import State

from shared.deps import service_state, state_of

if TYPE_CHECKING:
    import httpcore
    import httpx

    from gateway.keys import KeyManager
    from gateway.openapi import OpenApiMerger
    from gateway.proxy import Upstreams
    from gateway.tokens import TokenService
    from shared.auth import TokenVerifier
    from shared.broker import Broker
    from shared.db import Database
    from shared.settings import Settings


class GatewayState(State):
    settings: Settings
    db: Database
    key_manager: KeyManager
    token_service: TokenService
    token_verifier: TokenVerifier
    upstream: httpx.AsyncClient  # one pooled client for every service (readiness, OpenAPI, lookups)
    upstream_pool: httpcore.AsyncConnectionPool  # the proxy's own connections (gateway/proxy.py)
    upstream_timeouts: dict[str, float]
    upstreams: Upstreams  # each service's replicas, in turn
    broker: Broker
    openapi: OpenApiMerger
    draining: bool

    def __init__(self) -> None:
        super().__init__()
        self.draining = False


def gateway_state(owner: Any) -> GatewayState:
    """The gateway's state, of its app or of the app serving a request."""
    return service_state(owner, GatewayState)


GatewayStateDep = Annotated[GatewayState, Depends(state_of(GatewayState))]
