"""Importing an Open Referral UK / HSDS 3.0 feed: each record validated against the UK profile's
compiled service schema and the directory's own rules, then published (trusted imports are an
administrator's act, so they skip moderation but are kept in the edit history). A record that
fails is reported with its reasons and the rest carry on; importing the same feed again changes
nothing (content hashes)."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from pydantic import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from services.directory import store
from services.directory.models import EditHistory
from services.directory.schemas import IDENTIFIER_SCHEMES, ServiceProposal
from shared.db import Database

SCHEMAS = Path(__file__).parent / "standards" / "oruk"


@functools.cache
def schema_registry() -> Registry:
    """Every UK profile schema, addressable by its relative path (their `$ref`s are relative)."""
    resources = []
    for path in SCHEMAS.rglob("*.json"):
        if path.name == "uk-profile-openapi.json":
            continue
        contents = json.loads(path.read_text())
        resources.append(
            (path.relative_to(SCHEMAS).as_posix(), Resource.from_contents(contents, DRAFT202012))
        )
    return Registry().with_resources(resources)


@functools.cache
def validator(name: str) -> Draft202012Validator:
    """A validator for one UK profile schema, e.g. `compiled/service.json` or `taxonomy.json`."""
    schema = json.loads((SCHEMAS / name).read_text())
    return Draft202012Validator({**schema, "$id": name}, registry=schema_registry())


def schema_errors(document: Any, name: str, *, limit: int = 5) -> list[str]:
    errors = sorted(validator(name).iter_errors(document), key=lambda e: list(e.absolute_path))
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '(record)'}: {error.message}"[:300]
        for error in errors[:limit]
    ]


def _first(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    return (items or [{}])[0]


def proposal_from_hsds(record: dict[str, Any]) -> tuple[str, str, ServiceProposal]:
    """(identifier, scheme, proposal) for a fully nested HSDS service; raises ValueError."""
    organization = record.get("organization") or {}
    identifiers = organization.get("organization_identifiers") or []
    known = [i for i in identifiers if i.get("identifier_scheme") in IDENTIFIER_SCHEMES]
    if not known:
        raise ValueError("organization needs a charity or company number (GB-CHC, GB-SC, GB-NIC or GB-COH)")
    identifier = str(known[0]["identifier"]).strip().upper()
    scheme = known[0]["identifier_scheme"]
    by_location: dict[str, list[dict[str, Any]]] = {}
    service_schedules = []
    for schedule in record.get("schedules") or []:
        target = (
            by_location.setdefault(schedule["service_at_location_id"], [])
            if schedule.get("service_at_location_id")
            else service_schedules
        )
        target.append(_schedule(schedule))
    locations = []
    for sal in record.get("service_at_locations") or []:
        location = sal.get("location") or {}
        address = _first(location.get("addresses"))
        locations.append(
            {
                "id": location.get("id") or sal.get("location_id"),
                "service_at_location_id": sal.get("id"),
                "location_type": location.get("location_type", "physical"),
                "name": location.get("name") or address.get("address_1") or "Location",
                "description": location.get("description"),
                "latitude": location.get("latitude"),
                "longitude": location.get("longitude"),
                "address": {
                    "id": address.get("id"),
                    "address_1": address["address_1"],
                    "city": address.get("city", ""),
                    "region": address.get("state_province") or address.get("region"),
                    "postal_code": address.get("postal_code", ""),
                }
                if address.get("address_1")
                else None,
                "accessibility": [
                    a["description"] for a in location.get("accessibility") or [] if a.get("description")
                ],
                "schedules": by_location.get(sal.get("id", ""), []),
            }
        )
    proposal = ServiceProposal.model_validate(
        {
            "id": record.get("id"),
            "name": record.get("name"),
            "description": record.get("description") or record.get("name"),
            "url": record.get("url"),
            "email": record.get("email"),
            "status": record.get("status", "active"),
            "fees_description": record.get("fees") or record.get("fees_description"),
            "eligibility_description": record.get("eligibility_description"),
            "application_process": record.get("application_process"),
            "interpretation_services": record.get("interpretation_services"),
            "minimum_age": record.get("minimum_age"),
            "maximum_age": record.get("maximum_age"),
            "taxonomy_term_ids": [
                a["taxonomy_term_id"] for a in record.get("attributes") or [] if a.get("taxonomy_term_id")
            ],
            "service_areas": [_area(area) for area in record.get("service_areas") or []],
            "languages": [
                {
                    "id": language.get("id"),
                    "name": language.get("name") or language.get("code"),
                    "code": language.get("code"),
                }
                for language in record.get("languages") or []
                if language.get("name") or language.get("code")
            ],
            "cost_options": [
                {key: cost.get(key) for key in ("id", "option", "amount", "amount_description")}
                for cost in record.get("cost_options") or []
            ],
            "contacts": [
                {
                    "id": contact.get("id"),
                    "name": contact.get("name"),
                    "title": contact.get("title"),
                    "email": contact.get("email"),
                    "phone": _first(contact.get("phones")).get("number"),
                }
                for contact in record.get("contacts") or []
            ],
            "schedules": service_schedules,
            "locations": locations,
            "organization": {
                "id": organization.get("id"),
                "name": organization.get("name"),
                "description": organization.get("description") or organization.get("name"),
                "email": organization.get("email"),
                "website": organization.get("website"),
                "vcfse_category": organization.get("x_vcfse_category") or organization.get("vcfse_category"),
            },
        }
    )
    return identifier, scheme, proposal


def _schedule(schedule: dict[str, Any]) -> dict[str, Any]:
    return {
        key: schedule.get(key)
        for key in ("id", "byday", "opens_at", "closes_at", "valid_from", "valid_to", "description")
    }


def _area(area: dict[str, Any]) -> dict[str, Any]:
    uri = area.get("uri") or ""
    place = area.get("lsc_place") or (uri.rsplit("/place/", 1)[-1] if "/place/" in uri else None)
    districts = area.get("extent", "").split(",") if area.get("extent_type") == "postcode_districts" else []
    return {
        "id": area.get("id"),
        "name": area.get("name") or place or "Area",
        "place": place,
        "districts": [d.strip() for d in districts if d.strip()],
    }


@dataclass
class Rejected:
    index: int
    id: str | None
    reasons: list[str]


@dataclass
class ImportReport:
    read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[Rejected] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.read} read: {self.created} created, {self.updated} updated, "
            f"{self.unchanged} unchanged, {len(self.rejected)} rejected"
        )


def _pydantic_reasons(error: ValidationError) -> list[str]:
    return [
        f"{'/'.join(str(p) for p in e['loc']) or '(record)'}: {e['msg']}"[:300] for e in error.errors()[:5]
    ]


async def import_records(
    db: Database,
    records: Iterable[dict[str, Any]] | AsyncIterator[dict[str, Any]],
    *,
    actor: str,
    on_record: Any = None,
) -> ImportReport:
    report = ImportReport()

    async def each() -> AsyncIterator[dict[str, Any]]:
        if isinstance(records, AsyncIterator):
            async for record in records:
                yield record
        else:
            for record in records:
                yield record

    async for record in each():
        index = report.read
        report.read += 1
        record_id = record.get("id") if isinstance(record, dict) else None
        reasons = (
            schema_errors(record, "compiled/service.json")
            if isinstance(record, dict)
            else ["not a JSON object"]
        )
        if not reasons:
            try:
                identifier, scheme, proposal = proposal_from_hsds(record)
                async with db.transaction() as session:
                    await store.adopt_terms(
                        session,
                        [
                            a["taxonomy_term"]
                            for a in record.get("attributes") or []
                            if isinstance(a.get("taxonomy_term"), dict)
                        ],
                    )
                    published = await store.publish(
                        session, proposal, identifier=identifier, scheme=scheme, actor=actor
                    )
                    if published.changed:
                        session.add(
                            EditHistory(
                                edit_id="-", service_id=published.service_id, action="imported", state="published", actor=actor,
                            )
                        )  # fmt: skip
                if not published.changed:
                    report.unchanged += 1
                elif published.created:
                    report.created += 1
                else:
                    report.updated += 1
            except ValidationError as error:
                reasons = _pydantic_reasons(error)
            except (ValueError, KeyError) as error:
                reasons = [str(error)[:300]]
            except store.RuleBroken as broken:
                reasons = [f"{broken.field}: {broken.message}"]
        if reasons:
            report.rejected.append(Rejected(index, str(record_id) if record_id else None, reasons))
        if on_record is not None:
            on_record()
    return report


def records_in(payload: Any) -> Iterator[dict[str, Any]]:
    """Service records in a decoded JSON document: a Page, a list, {"services": [...]}, or one service."""
    if isinstance(payload, list):
        yield from payload
    elif isinstance(payload, dict) and "contents" in payload:
        yield from payload["contents"]
    elif isinstance(payload, dict) and "services" in payload and "name" not in payload:
        yield from payload["services"]
    else:
        yield payload


def read_lines(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """ndjson: one record per non-blank line (a bad line becomes a record that fails validation)."""
    for line in lines:
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError as error:
                yield {"__unparsable__": f"line is not JSON: {error.msg}"}
