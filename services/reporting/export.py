"""Bulk export, FHIR Bulk Data style (`reporting:export`).

`POST /reporting/$export?_type=Referral,Episode&_since=...` answers 202 with `Content-Location`
of the job; polling it answers 202 with `X-Progress` until the manifest (200: transactionTime,
request, requiresAccessToken, output[{type, url, count}], error). Files are NDJSON of the
pseudonymised projection records, fetched with a token by the client that asked; `_since` gives
only what changed since; DELETE cancels and removes. Jobs are claimed by one replica's worker
(a conditional UPDATE only one can win), so any number of replicas can run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.reporting.models import EpisodeFact, ExportFile, ExportJob, HandoverFact, ReferralFact
from shared.auth import Caller, requires
from shared.background import BackgroundWorker
from shared.db import Database
from shared.errors import Problem
from shared.sqltypes import utcnow

log = logging.getLogger("cmh.reporting.export")
router = APIRouter(prefix="/reporting", tags=["reporting export"])
TYPES: dict[str, Any] = {"Referral": ReferralFact, "Episode": EpisodeFact, "Handover": HandoverFact}
NDJSON = "application/fhir+ndjson"


def _record(row: Any) -> dict[str, Any]:
    """A projection row as an export record (already pseudonymous: keyed hashes and categories)."""
    out: dict[str, Any] = {}
    for column in row.__table__.columns:
        value = getattr(row, column.name)
        out[column.name] = value.isoformat() if isinstance(value, datetime) else value
    return out


def _job_url(request: Request, job_id: str) -> str:
    return f"{str(request.base_url).rstrip('/')}/reporting/$export/jobs/{job_id}"


async def _own_job(session: AsyncSession, caller: Caller, job_id: str) -> ExportJob:
    job = await session.get(ExportJob, job_id)
    if job is None or job.client_id != caller.client_id:
        raise Problem(404, "No such export", type_slug="not-found")
    return job


@router.post("/$export", status_code=202, summary="Start a bulk export (202 + Content-Location)")
async def kick_off(
    request: Request,
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
        id=str(uuid.uuid4()), client_id=caller.client_id, request_url=str(request.url), types=",".join(chosen),
        since=since, status="pending", progress=0, transaction_time=utcnow(),
    )  # fmt: skip
    async with request.app.state.db.transaction() as session:
        session.add(job)
    request.app.state.export_wakeup.set()
    return Response(status_code=202, headers={"Content-Location": _job_url(request, job.id)})


@router.get("/$export/jobs/{job_id}", summary="Poll an export: 202 with X-Progress, then the manifest")
async def status(job_id: str, request: Request, caller: Caller = requires("reporting:export")) -> Response:
    async with request.app.state.db.session() as session:
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
    return JSONResponse(
        {
            "transactionTime": job.transaction_time.isoformat(),
            "request": job.request_url,
            "requiresAccessToken": True,
            "output": [
                {"type": file_type, "url": f"{_job_url(request, job_id)}/files/{file_type}", "count": count}
                for file_type, count in files
            ],
            "error": [],
        }
    )


@router.get("/$export/jobs/{job_id}/files/{file_type}", summary="An export file (NDJSON)")
async def download(
    job_id: str, file_type: str, request: Request, caller: Caller = requires("reporting:export")
) -> Response:
    async with request.app.state.db.session() as session:
        await _own_job(session, caller, job_id)
        content = await session.scalar(
            select(ExportFile.content).where(ExportFile.job_id == job_id, ExportFile.type == file_type)
        )
    if content is None:
        raise Problem(404, "No such file", type_slug="not-found")

    async def chunks() -> AsyncIterator[bytes]:
        step = 64 * 1024
        for start in range(0, len(content), step):
            yield content[start : start + step].encode()

    return StreamingResponse(chunks(), media_type=NDJSON)


@router.delete("/$export/jobs/{job_id}", status_code=202, summary="Cancel an export and delete its files")
async def cancel(job_id: str, request: Request, caller: Caller = requires("reporting:export")) -> Response:
    async with request.app.state.db.transaction() as session:
        await _own_job(session, caller, job_id)
        await session.execute(delete(ExportFile).where(ExportFile.job_id == job_id))
        await session.execute(delete(ExportJob).where(ExportJob.id == job_id))
    return Response(status_code=202)


async def run_job(db: Database, job_id: str) -> None:
    """Write each type's NDJSON file, updating progress; a job deleted meanwhile just stops."""
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
            lines = "".join(json.dumps(_record(row), separators=(",", ":")) + "\n" for row in rows)
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
        self.app = app
        app.state.export_wakeup = asyncio.Event()

    async def claim(self) -> str | None:
        db: Database = self.app.state.db
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
        wakeup: asyncio.Event = self.app.state.export_wakeup
        while not self.stopping:
            try:
                job_id = await self.claim()
                if job_id is not None:
                    try:
                        await run_job(self.app.state.db, job_id)
                    except Exception as exc:
                        log.warning("export failed", extra={"error": type(exc).__name__})
                        async with self.app.state.db.transaction() as session:
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
