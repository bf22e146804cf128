"""`cmh directory import FILE_OR_URL`: load an Open Referral UK / HSDS 3.0 feed (JSON or ndjson,
a file or an API; an API's pages are followed) into the directory, with a progress bar, counts
and every rejected record with its reasons. Running it again changes nothing."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
from tqdm import tqdm

from services.directory.importer import ImportReport, import_records, read_lines, records_in
from services.directory.models import MIGRATIONS
from services.directory.seed import seed
from shared.db import Database
from shared.migrations import migrate
from shared.settings import get_settings

IMPORT_ACTOR = "cmh-import"


def _is_url(source: str) -> bool:
    return urlsplit(source).scheme in ("http", "https")


def _with_page(url: str, page: int) -> str:
    parts = urlsplit(url)
    query = dict(pair.split("=", 1) for pair in parts.query.split("&") if "=" in pair)
    query["page"] = str(page)
    return urlunsplit(parts._replace(query=urlencode(query)))


def _full(client: httpx.Client, url: str, item: dict[str, Any]) -> dict[str, Any]:
    """A list item of `/services` is not nested: read `/services/{id}` for the whole record."""
    if "service_at_locations" in item or "id" not in item:
        return item
    base = url.split("?", 1)[0].rstrip("/")
    response = client.get(f"{base}/{item['id']}")
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def feed(source: str, client: httpx.Client | None = None) -> tuple[Iterator[dict[str, Any]], int | None]:
    """(records, how many if known up front) from a file or URL (`client` for tests)."""
    if not _is_url(source):
        path = Path(source)
        if path.suffix in (".ndjson", ".jsonl"):
            lines = path.read_text().splitlines()
            return read_lines(lines), sum(1 for line in lines if line.strip())
        records = list(records_in(json.loads(path.read_text())))
        return iter(records), len(records)
    client = client or httpx.Client(timeout=30, follow_redirects=True, headers={"Accept": "application/json"})
    first = client.get(source)
    first.raise_for_status()
    if "ndjson" in first.headers.get("content-type", "") or source.split("?")[0].endswith(".ndjson"):
        lines = first.text.splitlines()
        return read_lines(lines), sum(1 for line in lines if line.strip())
    payload = first.json()
    total = payload.get("total_items") if isinstance(payload, dict) else None

    def pages() -> Iterator[dict[str, Any]]:
        current = payload
        page = int(current.get("page_number", 1)) if isinstance(current, dict) else 1
        while True:
            for item in records_in(current):
                yield _full(client, source, item)
            if not isinstance(current, dict) or "contents" not in current or current.get("last_page", True):
                break
            page += 1
            response = client.get(_with_page(source, page))
            response.raise_for_status()
            current = response.json()
        client.close()

    return pages(), total


async def run_import(
    source: str, *, progress: bool = True, client: httpx.Client | None = None
) -> ImportReport:
    settings = get_settings()
    url, schema = settings.database_url_for("directory"), settings.database_schema_for("directory")
    await migrate("directory", url, directory=MIGRATIONS, schema=schema)
    records, total = feed(source, client)
    db = Database(url, schema=schema, pool_size=2)
    await seed(db, sample=False)  # the needs taxonomy, so feeds using it are understood
    bar = tqdm(total=total, unit="record", desc="importing", disable=not progress, file=sys.stderr)
    try:
        return await import_records(db, records, actor=IMPORT_ACTOR, on_record=lambda: bar.update(1))
    finally:
        bar.close()
        await db.dispose()


def cmd_import(args: argparse.Namespace) -> int:
    try:
        report = asyncio.run(run_import(args.source, progress=not args.quiet))
    except (OSError, ValueError, httpx.HTTPError) as error:
        print(f"cannot read {args.source}: {error}", file=sys.stderr)
        return 2
    print(report.summary())
    for rejected in report.rejected:
        print(f"  rejected record {rejected.index} ({rejected.id or 'no id'}):")
        for reason in rejected.reasons:
            print(f"    - {reason}")
    return 1 if report.rejected else 0


def register(commands: Any) -> None:
    directory = commands.add_parser("directory", help="the VCFSE partner directory")
    actions = directory.add_subparsers(dest="directory_command", required=True)
    load = actions.add_parser("import", help="import an Open Referral UK / HSDS 3.0 feed (idempotent)")
    load.add_argument(
        "source", metavar="FILE_OR_URL", help="a .json / .ndjson file, or an ORUK API's /services URL"
    )
    load.add_argument("--quiet", action="store_true", help="no progress bar")
    load.set_defaults(func=cmd_import)
