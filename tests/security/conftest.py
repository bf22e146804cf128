"""A real stack for security tests: the gateway and a probe service under uvicorn on loopback
ports, a real nats-server, and clients registered in the gateway's store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import APIRouter, FastAPI, Request

from cmh.migrations import migrate
from gateway.app import create_app as create_gateway
from shared.audit import AuditAction, AuditOutcome, record_access
from shared.auth import Caller, ensure_organisation, requires
from shared.db import Database
from shared.errors import Problem
from shared.migrations import new_metadata
from shared.nats_server import free_port
from shared.service import ServiceSpec, create_service_app
from shared.settings import Settings
from tests.support import register_clients, serve

PERSON = "person-7f3a"


@dataclass
class Probe:
    """A triage-like service whose handlers count how often they run."""

    calls: list[str] = field(default_factory=list)
    # Referral r-1 was made by GP practice A81001 about PERSON.
    referrals: dict[str, tuple[str, str]] = field(default_factory=lambda: {"r-1": ("A81001", PERSON)})

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/triage/probe")

        @router.get("/referrals/{referral_id}")
        async def read_referral(
            referral_id: str, request: Request, caller: Caller = requires("referral:read")
        ) -> dict[str, Any]:
            self.calls.append(f"read:{caller.client_id}")
            owner, person = self.referrals.get(referral_id, (None, None))
            if owner is None or person is None:
                raise Problem(404, "No such referral")
            db: Database = request.app.state.db
            try:
                ensure_organisation(caller, owner, resource="referral")
            except Problem:
                async with db.transaction() as session:
                    record_access(
                        session,
                        caller,
                        service="triage",
                        action=AuditAction.READ,
                        resource_type="Referral",
                        resource_ids=[referral_id],
                        person_ids=[person],
                        outcome=AuditOutcome.DENIED,
                    )
                raise
            async with db.transaction() as session:
                record_access(
                    session,
                    caller,
                    service="triage",
                    action=AuditAction.READ,
                    resource_type="Referral",
                    resource_ids=[referral_id],
                    person_ids=[person],
                )
            return {"id": referral_id, "person": person}

        @router.post("/decisions")
        async def decide(request: Request, caller: Caller = requires("triage:decide")) -> dict[str, int]:
            body = await request.body()
            self.calls.append(f"decide:{caller.client_id}")
            return {"received": len(body)}

        return router


@dataclass
class Stack:
    settings: Settings
    gateway_url: str
    service_url: str
    probe: Probe
    gateway_db: Database
    gateway_app: FastAPI
    secrets: dict[str, str]

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.gateway_url, timeout=10)

    def service(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.service_url, timeout=10)

    async def token(self, client_id: str, scope: str | None = None) -> str:
        data = {"grant_type": "client_credentials"}
        if scope:
            data["scope"] = scope
        async with self.client() as http:
            response = await http.post("/oauth2/token", data=data, auth=(client_id, self.secrets[client_id]))
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])


CLIENTS = {
    "gp-a81001": ("A81001", "ods", "partner_ehr", "referral:submit referral:read", None),
    "gp-b82002": ("B82002", "ods", "partner_ehr", "referral:submit referral:read", None),
    "registry-reader": ("RW5", "ods", "partner_ehr", "registry:read", None),
    "crisis-rw5": ("RW5", "ods", "crisis_app", "referral:read triage:decide crisis:respond", None),
    "auditor": ("QE1", "ods", "admin", "audit:read", None),
    "slow-lane": ("A81003", "ods", "partner_ehr", "referral:read", 6),
}


@pytest.fixture
async def stack_factory(make_settings: Callable[..., Settings]) -> AsyncIterator[Callable[..., Any]]:
    started: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []
    databases: list[Database] = []

    async def build(**overrides: Any) -> Stack:
        gateway_port, service_port = free_port(), free_port()
        settings = make_settings(
            triage_url=f"http://127.0.0.1:{service_port}",
            gateway_port=gateway_port,
            jwks_url=f"http://127.0.0.1:{gateway_port}/.well-known/jwks.json",
            jwks_min_refresh_seconds=0,
            **overrides,
        )
        for owner in ("gateway", "triage"):
            await migrate(owner, settings.database_url_for(owner), schema=settings.database_schema_for(owner))
        gateway_db = Database(
            settings.database_url_for("gateway"), schema=settings.database_schema_for("gateway")
        )
        databases.append(gateway_db)
        async with gateway_db.transaction() as session:
            secrets = await register_clients(session, CLIENTS)
        probe = Probe()
        spec = ServiceSpec(
            name="triage", title="probe", description="", metadata=new_metadata(), routers=[probe.router()]
        )
        gateway_app = create_gateway(settings)
        started.append(await serve(gateway_app, gateway_port))
        started.append(await serve(create_service_app(spec, settings), service_port))
        return Stack(
            settings=settings,
            gateway_url=f"http://127.0.0.1:{gateway_port}",
            service_url=f"http://127.0.0.1:{service_port}",
            probe=probe,
            gateway_db=gateway_db,
            gateway_app=gateway_app,
            secrets=secrets,
        )

    try:
        yield build
    finally:
        for server, task in reversed(started):
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, timeout=10)
        for db in databases:
            await db.dispose()


@pytest.fixture
async def stack(stack_factory: Callable[..., Any]) -> Stack:
    return await stack_factory()
