"""The typed dependencies (shared/deps.py, issue 19 item 5): they resolve through a real app, the
state they answer is the app's one typed state (`app.state` itself, so code setting
`app.state.clock` still moves it), overriding `clock` moves what a route sees, and no module of a
service or of the gateway reaches into `app.state` itself (a generated check over the source)."""

from __future__ import annotations

import ast
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from sqlalchemy import delete

from services.careplan import store
from services.careplan.app import create_app as create_careplan
from services.careplan.models import Episode
from shared.db import Database
from shared.deps import (
    ClockDep,
    DatabaseDep,
    NowDep,
    ServiceState,
    SettingsDep,
    StateDep,
    clock,
    service_state,
    state_of,
    system_clock,
)
from shared.migrations import new_metadata
from shared.service import ServiceSpec, create_service_app
from shared.settings import Settings
from tests.careplan.support import READER, TEAM
from tests.support import running_service
from tests.triage.support import registry_events

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = Settings(nats_url="nats://127.0.0.1:1", database_url="sqlite+aiosqlite:///:memory:")
FIXED = datetime(2026, 6, 1, 9, 30, tzinfo=UTC)


class ProbeState(ServiceState):
    """A service's own state, as triage, registry and reporting declare theirs."""

    counter: list[str]

    def __init__(self) -> None:
        super().__init__()
        self.counter = []


probe = APIRouter()
seen: dict[str, Any] = {}


@probe.get("/probe")
async def read_probe(
    db: DatabaseDep,
    settings: SettingsDep,
    current: ClockDep,
    now: NowDep,
    state: StateDep,
    own: ProbeState = Depends(state_of(ProbeState)),
) -> dict[str, str]:
    own.counter.append("called")
    seen.update(db=db, settings=settings, clock=current, now=now, state=state, own=own)
    return {"now": now.isoformat()}


def _probe_app() -> FastAPI:
    spec = ServiceSpec(
        name="triage", title="t", description="", metadata=new_metadata(), routers=[probe], state=ProbeState
    )
    return create_service_app(spec, SETTINGS)


async def _get(app: FastAPI, path: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        return await http.get(path, **kw)


async def test_the_dependencies_resolve_to_the_apps_one_typed_state() -> None:
    app = _probe_app()
    async with app.router.lifespan_context(app):
        state = service_state(app, ProbeState)
        assert state is app.state  # one object: the typed state is app.state
        assert state.clock is system_clock
        before = datetime.now(UTC)
        response = await _get(app, "/probe")
        assert response.status_code == 200, response.text
        assert seen["state"] is state and seen["own"] is state and state.counter == ["called"]
        assert isinstance(seen["db"], Database) and seen["db"] is app.state.db
        assert seen["settings"] is SETTINGS and seen["settings"] is app.state.settings
        assert seen["now"].tzinfo is not None and seen["now"].utcoffset() == timedelta(0)
        assert before <= seen["now"] <= datetime.now(UTC)
        # Setting the state's clock the old way moves it for routes (and workers) alike.
        app.state.clock = lambda: FIXED
        assert (await _get(app, "/probe")).json() == {"now": FIXED.isoformat()}
        assert state.now() == FIXED
        with pytest.raises(TypeError, match="not ProbeState"):
            service_state(FastAPI(), ProbeState)


async def test_overriding_the_clock_dependency_moves_now_for_a_route() -> None:
    app = _probe_app()
    later = FIXED + timedelta(days=3)
    app.dependency_overrides[clock] = lambda: lambda: later
    async with app.router.lifespan_context(app):
        assert (await _get(app, "/probe")).json() == {"now": later.isoformat()}
        assert seen["clock"]() == later
        app.dependency_overrides.clear()
        assert (await _get(app, "/probe")).json()["now"] != later.isoformat()


async def test_overriding_the_clock_moves_the_careplan_worklist(
    make_settings: Callable[..., Settings],
) -> None:
    """The worklist's days remaining and state are now's: the same episode, three clocks."""
    assessed = datetime(2026, 2, 2, 10, 0, tzinfo=UTC)
    episode = Episode(
        id=str(uuid.uuid4()), referral_id=str(uuid.uuid4()), person_id=str(uuid.uuid4()), team_id=TEAM,
        network_id="n", place_key="lancashire", owner_org="RW5", pathway="adult-mh", route="front_door_primary",
        priority=3, status="open", opened_at=assessed - timedelta(days=1),
        referral_received_at=assessed - timedelta(days=2), spell_started_at=assessed - timedelta(days=2),
        age_at_referral=40, first_assessment_completed_at=assessed, plan_agreed_at=None, version=1,
    )  # fmt: skip
    settings = make_settings(careplan_clock_scan_seconds=3600)
    async with running_service("careplan", create_careplan, settings) as (client, app):
        for worker in app.state.workers:  # no clock scan meanwhile: only the route reads the clock
            await worker.stop()
        async with service_state(app).db.transaction() as session:
            for event in registry_events(kinds=("team", "organisation")):
                await store.apply_registry_event(session, event)
            await session.execute(delete(Episode))
            session.add(episode)
        answers = {}
        for days in (10, 22, 30):
            moment = assessed + timedelta(days=days, hours=2)
            app.dependency_overrides[clock] = lambda moment=moment: lambda: moment
            response = await client.get("/careplan/worklist", headers=READER)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["as_of"] == moment.isoformat()
            [item] = body["items"]
            answers[days] = (item["days_remaining"], item["state"])
        assert answers == {10: (18, "running"), 22: (6, "at_risk"), 30: (-2, "breached")}


# --- the rule: no module of a service or of the gateway reads app.state itself ---------------------


def app_state_reads(source: str) -> list[int]:
    """Lines reading `<x>.app.state` or `app.state` (a request's own `request.state` is not the
    app's; installing the typed state, `app.state = ...`, is the one write allowed)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Attribute) and node.attr == "state"):
            continue
        owner = node.value
        of_app = (isinstance(owner, ast.Name) and owner.id == "app") or (
            isinstance(owner, ast.Attribute) and owner.attr == "app"
        )
        if of_app and not isinstance(node.ctx, ast.Store):
            lines.append(node.lineno)
    return lines


def test_the_rule_sees_what_it_forbids() -> None:
    assert app_state_reads("def f(request):\n    return request.app.state.db\n") == [2]
    assert app_state_reads("def f(self):\n    return self.app.state.clock()\n") == [2]
    assert app_state_reads("def f(app):\n    x = app.state\n") == [2]
    assert app_state_reads("def f(request, app):\n    request.state.x = 1\n    app.state = S()\n") == []


MODULES = sorted(
    path.relative_to(ROOT).as_posix()
    for package in ("services", "gateway")
    for path in (ROOT / package).rglob("*.py")
    if "migrations" not in path.parts
)


@pytest.mark.parametrize("module", MODULES)
def test_no_service_or_gateway_module_reads_app_state(module: str) -> None:
    reads = app_state_reads((ROOT / module).read_text())
    assert not reads, (
        f"{module} reads app.state at lines {reads}: ask for shared.deps' typed dependencies "
        "(DatabaseDep, SettingsDep, ClockDep/NowDep, a state_of(...) dependency) or use service_state()/"
        "gateway_state() in a helper or worker"
    )


def test_the_rule_covers_the_route_modules() -> None:
    for module in ("services/triage/api.py", "services/careplan/fhir_api.py", "gateway/proxy.py"):
        assert module in MODULES
