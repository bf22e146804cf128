"""`cmh directory import`: files (JSON, ndjson) and a paged ORUK API, every record validated,
rejections reported with reasons while the rest import, and the same import changing nothing."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from services.directory.cli import run_import
from services.directory.models import Service
from services.directory.seed import sample_services
from shared.db import Database
from shared.messaging_models import OutboxMessage
from shared.settings import get_settings


def _counts() -> tuple[int, int]:
    async def count() -> tuple[int, int]:
        settings = get_settings()
        db = Database(settings.database_url_for("directory"))
        try:
            async with db.session() as session:
                services = int(await session.scalar(select(func.count()).select_from(Service)) or 0)
                events = int(await session.scalar(select(func.count()).select_from(OutboxMessage)) or 0)
            return services, events
        finally:
            await db.dispose()

    return asyncio.run(count())


def test_import_is_idempotent_and_shows_progress(cmh: Any, tmp_path: Path) -> None:
    feed = tmp_path / "feed.json"
    feed.write_text(json.dumps({"contents": sample_services(), "total_items": 16}))
    code, out, err = cmh("directory", "import", str(feed))
    assert code == 0 and out.startswith("16 read: 16 created, 0 updated, 0 unchanged, 0 rejected")
    assert "importing" in err and "16/16" in err  # the progress bar
    services, events = _counts()
    assert services == 16 and events == 16  # one published event per service
    code, out, _ = cmh("directory", "import", str(feed), "--quiet")
    assert code == 0 and "0 created, 0 updated, 16 unchanged" in out
    assert _counts() == (16, 16)
    # A real change to one record is one update and one event.
    changed = sample_services()
    changed[0]["description"] += " Now also on Sundays."
    feed.write_text(json.dumps(changed))
    assert "0 created, 1 updated, 15 unchanged" in cmh("directory", "import", str(feed), "--quiet")[1]
    assert _counts() == (16, 17)


def test_rejected_records_are_reported_with_reasons_and_the_rest_import(cmh: Any, tmp_path: Path) -> None:
    good, *_ = sample_services()
    no_name = {key: value for key, value in copy.deepcopy(good).items() if key != "name"}
    backwards = copy.deepcopy(good)
    backwards["id"] = "2f1c5d0e-8f5e-4b7a-9a51-6c1d2e3f4a5b"
    backwards["schedules"][0].update(opens_at="17:00", closes_at="09:00")
    unknown_term = copy.deepcopy(good)
    unknown_term["id"] = "3a2b1c0d-9e8f-4a7b-8c6d-5e4f3a2b1c0d"
    unknown_term["attributes"] = [
        {
            "id": "4b3c2d1e-0f9a-4b8c-9d7e-6f5a4b3c2d1e",
            "taxonomy_term_id": "5c4d3e2f-1a0b-4c9d-8e7f-6a5b4c3d2e1f",
        }
    ]
    lines = [json.dumps(r) for r in (good, no_name, backwards, unknown_term)] + ["{not json"]
    feed = tmp_path / "feed.ndjson"
    feed.write_text("\n".join(lines) + "\n")
    code, out, _ = cmh("directory", "import", str(feed), "--quiet")
    assert code == 1
    assert out.splitlines()[0] == "5 read: 1 created, 0 updated, 0 unchanged, 4 rejected"
    assert "'name' is a required property" in out
    assert "closes_at 09:00 is not after opens_at 17:00" in out
    assert "unknown taxonomy terms: 5c4d3e2f-1a0b-4c9d-8e7f-6a5b4c3d2e1f" in out
    assert "rejected record 4 (no id)" in out
    assert _counts()[0] == 1


def test_an_unreadable_source_is_a_clear_error(cmh: Any, tmp_path: Path) -> None:
    code, _, err = cmh("directory", "import", str(tmp_path / "missing.json"), "--quiet")
    assert code == 2 and "cannot read" in err


def test_a_paged_oruk_api_is_followed_and_list_items_fetched_whole(cmh: Any) -> None:
    records = {record["id"]: record for record in sample_services()}
    ids = sorted(records)
    per_page = 5
    requests: list[str] = []

    def api(request: httpx.Request) -> httpx.Response:
        requests.append(str(request.url))
        path = request.url.path
        if path.startswith("/api/services/"):
            return httpx.Response(200, json=records[path.rsplit("/", 1)[-1]])
        page = int(request.url.params.get("page", "1"))
        chunk = ids[(page - 1) * per_page : page * per_page]
        pages = -(-len(ids) // per_page)
        items = [{"id": i, "name": records[i]["name"], "status": "active"} for i in chunk]
        return httpx.Response(
            200,
            json={
                "contents": items,
                "total_items": len(ids),
                "total_pages": pages,
                "page_number": page,
                "last_page": page == pages,
            },
        )

    client = httpx.Client(transport=httpx.MockTransport(api))
    report = asyncio.run(
        run_import("https://partner.example.org/api/services", progress=False, client=client)
    )
    assert (report.read, report.created, len(report.rejected)) == (16, 16, 0)
    assert (
        sum("page=" in url for url in requests) == 3
        and sum("/api/services/" in url for url in requests) == 16
    )
