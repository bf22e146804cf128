"""The bare baseline for a Python HTTP write and read: a minimal FastAPI app under uvicorn (the
same server settings as `cmh serve`), one POST inserting one row with asyncpg and one GET running
`SELECT 1`. No auth, validation, outbox or audit: the ceiling the suite's endpoints are compared with.

    BENCH_BASELINE_DSN=postgresql://postgres@127.0.0.1:5432/test BENCH_BASELINE_SCHEMA=bench_x \
        .venv/bin/python -m bench.baseline_app --port 8190
"""

from __future__ import annotations

import argparse
import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import uvicorn
from fastapi import FastAPI, Request

DSN = os.environ.get("BENCH_BASELINE_DSN", "postgresql://postgres@127.0.0.1:5432/test")
SCHEMA = os.environ.get("BENCH_BASELINE_SCHEMA", "bench_baseline")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    pool = await asyncpg.create_pool(DSN, min_size=2, max_size=10)
    async with pool.acquire() as connection:
        await connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"')
        await connection.execute(
            f'CREATE TABLE IF NOT EXISTS "{SCHEMA}".rows '
            "(id uuid PRIMARY KEY, key text NOT NULL, body jsonb NOT NULL, "
            "created_at timestamptz NOT NULL DEFAULT now())"
        )
    app.state.pool = pool
    yield
    await pool.close()


app = FastAPI(lifespan=lifespan)


@app.post("/rows", status_code=201)
async def insert_row(request: Request) -> dict[str, str]:
    body = await request.json()
    row_id = uuid.uuid4()
    await request.app.state.pool.execute(
        f'INSERT INTO "{SCHEMA}".rows (id, key, body) VALUES ($1, $2, $3)',  # noqa: S608 - our schema name
        row_id,
        request.headers.get("idempotency-key", ""),
        json.dumps(body),
    )
    return {"id": str(row_id)}


@app.get("/ping")
async def ping(request: Request) -> dict[str, int]:
    return {"one": await request.app.state.pool.fetchval("SELECT 1")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8190)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
