"""Bulk export, FHIR Bulk Data style (`reporting:export`).

`POST /reporting/$export?_type=Referral,Episode&_since=...` answers 202 with `Content-Location`
of the job; polling it answers 202 with `X-Progress` until the manifest (200: transactionTime,
request, requiresAccessToken, output[{type, url, count}], error). Files are NDJSON, fetched with a
token by the client that asked; `_since` gives only what changed since; DELETE cancels and
removes. Jobs are claimed by one replica's worker (a conditional UPDATE only one can win), so any
number of replicas can run.

De-identified: each record is built from an allow-list of fields (`_FIELDS`; a new projection
column is not exported until listed): no source keys (referral, episode and handover ids become
keyed pseudonyms, `domain.pseudonym`, under the same key as the person pseudonym), dates to the day
(Europe/London, no times), ages as the reporting bands, and no sub-second times anywhere (the
manifest's transactionTime is to the second). Kick-off and every file download are audited
(`record_access`, action export) in the transaction committed before the answer: who (client,
organisation, end user, purpose), the job id and the file's type; no person ids, since the files
hold only pseudonyms the suite cannot map back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.timezones import london_date
from services.reporting.domain import age_band, pseudonym
from services.reporting.models import EpisodeFact, ExportFile, ExportJob, HandoverFact, ReferralFact
from services.reporting.projections import pseudonym_key
from services.reporting.schemas import ExportManifestOut
from shared.audit import AuditAction, AuditOutcome, record_access
from shared.auth import Caller, requires
from shared.background import BackgroundWorker
from shared.db import Database
from shared.deps import DatabaseDep, ServiceState, service_state, state_of
from shared.errors import Problem, problems
from shared.http import request_public_url
from shared.sqltypes import utcnow

log = logging.getLogger("cmh.reporting.export")
router = APIRouter(prefix="/reporting", tags=["reporting export"], responses=problems(401, 403, 422))
TYPES: dict[str, Any] = {"Referral": ReferralFact, "Episode": EpisodeFact, "Handover": HandoverFact}
NDJSON = "application/fhir+ndjson"
_AUDITABLE_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")  # a job id as the audit takes it (path text is untrusted)


SERVICE = "reporting"


class ReportingState(ServiceState):
    """Reporting's typed app state: the shared `ServiceState` and the export worker's wake-up."""

    export_wakeup: asyncio.Event  # set by a kick-off: the worker claims the job at once

    def __init__(self) -> None:
        super().__init__()
        self.export_wakeup = asyncio.Event()


ReportingStateDep = Annotated[ReportingState, Depends(state_of(ReportingState))]


def _day(value: datetime | None) -> str | None:
    return london_date(value).isoformat() if value is not None else None


def _ordinal_day(value: int | None) -> str | None:
    return date.fromordinal(value).isoformat() if value is not None else None


def _same(value: Any) -> Any:
    return value


# Each type's exported fields: (name in the file, source column, how it is de-identified). Only
# what is listed leaves; ids are replaced by pseudonyms (see `_record`).
_FIELDS: dict[str, tuple[tuple[str, str, Callable[[Any], Any]], ...]] = {
    "Referral": (
        ("person_key", "person_key", _same), ("received_date", "received_at", _day),
        ("source", "source", _same), ("priority", "priority", _same),
        ("suggested_route", "suggested_route", _same), ("route", "route", _same), ("status", "status", _same),
        ("place", "place", _same), ("network", "network", _same), ("team", "team", _same),
        ("pathway", "pathway", _same), ("age_band", "age_band", _same), ("sex", "sex", _same),
        ("ethnicity", "ethnicity", _same), ("crisis", "crisis", _same),
        ("first_contact_date", "first_contact_at", _day), ("response_minutes", "response_minutes", _same),
        ("updated_date", "updated_at", _day),
    ),
    "Episode": (
        ("person_key", "person_key", _same), ("place", "place", _same), ("network", "network", _same),
        ("team", "team", _same), ("pathway", "pathway", _same), ("age_band", "age_at_referral", age_band),
        ("sex", "sex", _same), ("ethnicity", "ethnicity", _same), ("source", "source", _same),
        ("priority", "priority", _same), ("reaccess", "reaccess", _same),
        ("opened_date", "opened_at", _day), ("referral_received_date", "referral_received_at", _day),
        ("spell_started_date", "spell_started_at", _day),
        ("first_assessment_completed_date", "first_assessment_completed_at", _day),
        ("plan_agreed_date", "plan_agreed_at", _day),
        ("first_attended_contact_date", "first_attended_contact_at", _day),
        ("first_outcome_measure_date", "first_outcome_measure_at", _day),
        ("first_meaningful_assessment_date", "first_meaningful_assessment_at", _day),
        ("first_intervention_date", "first_intervention_at", _day),
        ("assessment_started_date", "assessment_started_at", _day),
        ("advice_or_signposting_date", "advice_or_signposting_at", _day),
        ("discharged_date", "discharged_at", _day),
        ("plan_clock_start_date", "plan_start_day", _ordinal_day),
        ("plan_clock_stop_date", "plan_stop_day", _ordinal_day),
        ("national_clock_start_date", "national_start_day", _ordinal_day),
        ("national_clock_stop_date", "national_stop_day", _ordinal_day),
        ("at_risk_date", "at_risk_at", _day), ("breached_date", "breached_at", _day),
        ("updated_date", "updated_at", _day),
    ),
    "Handover": (
        ("person_key", "person_key", _same), ("service_id", "service_id", _same), ("state", "state", _same),
        ("offered_date", "offered_at", _day), ("accepted_date", "accepted_at", _day),
        ("completed_date", "completed_at", _day), ("declined_date", "declined_at", _day),
        ("updated_date", "updated_at", _day),
    ),
}  # fmt: skip
# The source keys each type carries, as (field in the file, column, pseudonym kind).
_IDS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "Referral": (("referral_key", "referral_id", "referral"),),
    "Episode": (("episode_key", "episode_id", "episode"), ("referral_key", "referral_id", "referral")),
    "Handover": (("handover_key", "handover_id", "handover"), ("referral_key", "referral_id", "referral")),
}


def _record(type_name: str, row: Any, key: bytes) -> dict[str, Any]:
    """A projection row as a de-identified export record."""
    out: dict[str, Any] = {
        name: pseudonym(kind, getattr(row, column), key) for name, column, kind in _IDS[type_name]
    }
    for name, column, transform in _FIELDS[type_name]:
        value = getattr(row, column)
        out[name] = None if value is None else transform(value)
    return out


def _public_request_url(request: Request) -> str:
    """The kick-off request as the client made it, at the public address (the manifest's `request`)."""
    query = f"?{request.url.query}" if request.url.query else ""
    return request_public_url(request, request.url.path + query)


def _job_url(request: Request, job_id: str) -> str:
    """The job's public address (the client polls it from outside: never this service's own)."""
    return request_public_url(request, f"/reporting/$export/jobs/{job_id}")


async def _own_job(session: AsyncSession, caller: Caller, job_id: str) -> ExportJob:
    job = await session.get(ExportJob, job_id)
    if job is None or job.client_id != caller.client_id:
        raise Problem(404, "No such export", type_slug="not-found")
    return job


@router.post(
    "/$export",
    status_code=202,
    response_class=Response,  # no body: Content-Location names the job
    responses={202: {"description": "Started: poll the job at Content-Location"}, **problems(400)},
    summary="Start a bulk export (202 + Content-Location)",
)
async def kick_off(
    request: Request,
    state: ReportingStateDep,
    caller: Caller = requires("reporting:export"),
    types: Annotated[str | None, Query(alias="_type", max_length=200)] = None,
    since: Annotated[datetime | None, Query(alias="_since")] = None,
) -> Response:
    chosen = [t.strip() for t in (types or ",".join(TYPES)).split(",") if t.strip()]
    unknown = [t for t in chosen if t not in TYPES]
    if unknown or not chosen:
        raise Problem(
            400, "Unsupported _type", f"Supported types: {', '.join(TYPES)}.", type_slug="unsupported-type",
            errors=[{"location": ["query", "_type"], "message": f"unknown: {', '.join(unknown)}", "type": "value_error"}],
        )  # fmt: skip
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    job = ExportJob(
        id=str(uuid.uuid4()), client_id=caller.client_id, request_url=_public_request_url(request), types=",".join(chosen),
        # The database's moment (not the injectable clock): the export's cut-off is compared with
        # the rows' own `updated_at`, which the database stamps.
        since=since, status="pending", progress=0, transaction_time=utcnow(),
    )  # fmt: skip
    async with state.db.transaction() as session:
        session.add(job)
        record_access(
            session, caller, service=SERVICE, action=AuditAction.EXPORT, resource_type="BulkExport",
            resource_ids=[job.id],
        )  # fmt: skip
    state.export_wakeup.set()
    return Response(status_code=202, headers={"Content-Location": _job_url(request, job.id)})


@router.get(
    "/$export/jobs/{job_id}",
    response_model=ExportManifestOut,
    responses={202: {"description": "Still running: X-Progress says how far"}, **problems(404, 500)},
    summary="Poll an export: 202 with X-Progress, then the manifest",
)
async def status(
    job_id: str, request: Request, db: DatabaseDep, caller: Caller = requires("reporting:export")
) -> Response | dict[str, Any]:
    async with db.session() as session:
        job = await _own_job(session, caller, job_id)
        files = (
            await session.execute(
                select(ExportFile.type, ExportFile.count).where(ExportFile.job_id == job_id)
            )
        ).all()
    if job.status in ("pending", "running"):
        return Response(status_code=202, headers={"X-Progress": f"{job.progress}%", "Retry-After": "1"})
    if job.status == "failed":
        raise Problem(
            500, "Export failed", job.error or "The export could not be completed.", type_slug="export-failed"
        )
    return {
        # To the second, rounded down (no sub-second times leave): a `_since` from it repeats
        # at most that second's changes, and misses none.
        "transactionTime": job.transaction_time.replace(microsecond=0).isoformat(),
        "request": job.request_url,
        "requiresAccessToken": True,
        "output": [
            {"type": file_type, "url": f"{_job_url(request, job_id)}/files/{file_type}", "count": count}
            for file_type, count in files
        ],
        "error": [],
    }


@router.get(
    "/$export/jobs/{job_id}/files/{file_type}",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The file: one resource a line",
            "content": {NDJSON: {"schema": {"type": "string"}}},
        },
        **problems(404),
    },
    summary="An export file (NDJSON)",
)
async def download(
    job_id: str, file_type: str, db: DatabaseDep, caller: Caller = requires("reporting:export")
) -> Response:
    async with db.transaction() as session:
        job = await session.get(ExportJob, job_id)
        own = job is not None and job.client_id == caller.client_id
        content = None
        if own:
            content = await session.scalar(
                select(ExportFile.content).where(ExportFile.job_id == job_id, ExportFile.type == file_type)
            )
        if content is not None or not own:
            # Audited before any byte is returned (committed with this transaction); another
            # client's job is a denied attempt, recorded without saying whether the job exists.
            record_access(
                session, caller, service=SERVICE, action=AuditAction.EXPORT,
                resource_type=file_type if file_type in TYPES else "BulkExport",
                resource_ids=[job_id] if _AUDITABLE_ID.match(job_id) else [],
                outcome=AuditOutcome.SUCCESS if own else AuditOutcome.DENIED,
            )  # fmt: skip
    if not own:
        raise Problem(404, "No such export", type_slug="not-found")
    if content is None:
        raise Problem(404, "No such file", type_slug="not-found")

    async def chunks() -> AsyncIterator[bytes]:
        step = 64 * 1024
        for start in range(0, len(content), step):
            yield content[start : start + step].encode()

    return StreamingResponse(chunks(), media_type=NDJSON)


@router.delete(
    "/$export/jobs/{job_id}",
    status_code=202,
    response_class=Response,  # no body
    responses={202: {"description": "Cancelled, its files deleted"}, **problems(404)},
    summary="Cancel an export and delete its files",
)
async def cancel(job_id: str, db: DatabaseDep, caller: Caller = requires("reporting:export")) -> Response:
    async with db.transaction() as session:
        await _own_job(session, caller, job_id)
        await session.execute(delete(ExportFile).where(ExportFile.job_id == job_id))
        await session.execute(delete(ExportJob).where(ExportJob.id == job_id))
    return Response(status_code=202)


async def run_job(db: Database, job_id: str, key: bytes) -> None:
    """Write each type's de-identified NDJSON file, updating progress; a job deleted meanwhile
    just stops. `key` is the pseudonymisation key (`projections.pseudonym_key`)."""
    async with db.session() as session:
        job = await session.get(ExportJob, job_id)
    if job is None:
        return
    types = job.types.split(",")
    for index, name in enumerate(types):
        model = TYPES[name]
        query = select(model)
        if job.since is not None:
            query = query.where(model.updated_at >= job.since)
        query = query.where(model.updated_at <= job.transaction_time)
        async with db.session() as session:
            rows = (await session.scalars(query)).all()
            lines = "".join(json.dumps(_record(name, row, key), separators=(",", ":")) + "\n" for row in rows)
        async with db.transaction() as session:
            if await session.get(ExportJob, job_id) is None:
                return  # cancelled
            session.add(ExportFile(job_id=job_id, type=name, count=len(rows), content=lines))
            await session.execute(
                update(ExportJob)
                .where(ExportJob.id == job_id)
                .values(progress=int(100 * (index + 1) / len(types)))
            )
    async with db.transaction() as session:
        await session.execute(
            update(ExportJob).where(ExportJob.id == job_id).values(status="complete", progress=100)
        )


class ExportWorker(BackgroundWorker):
    task_name = "reporting-export"

    def __init__(self, app: FastAPI) -> None:
        super().__init__()
        self.state = service_state(app, ReportingState)
        self.key = pseudonym_key(self.state.settings)

    async def claim(self) -> str | None:
        db = self.state.db
        async with db.session() as session:
            pending = (
                await session.scalars(select(ExportJob.id).where(ExportJob.status == "pending").limit(5))
            ).all()
        for job_id in pending:
            async with db.transaction() as session:
                claimed = await session.execute(
                    update(ExportJob)
                    .where(ExportJob.id == job_id, ExportJob.status == "pending")
                    .values(status="running")
                )
            if claimed.rowcount == 1:  # type: ignore[attr-defined]
                return job_id
        return None

    async def run(self) -> None:
        wakeup = self.state.export_wakeup
        while not self.stopping:
            try:
                job_id = await self.claim()
                if job_id is not None:
                    try:
                        await run_job(self.state.db, job_id, self.key)
                    except Exception as exc:
                        log.warning("export failed", extra={"error": type(exc).__name__})
                        async with self.state.db.transaction() as session:
                            await session.execute(
                                update(ExportJob)
                                .where(ExportJob.id == job_id)
                                .values(status="failed", error=type(exc).__name__)
                            )
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("export claim failed", extra={"error": type(exc).__name__})
            wakeup.clear()
            # asyncio.timeout, not wait_for: it cannot lose a cancellation racing the timeout.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await wakeup.wait()
