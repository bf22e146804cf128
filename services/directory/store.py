"""Writing the published directory: organisations, services and everything filters and search read
beside them, in the caller's transaction, with one event per change so triage can match needs to
services from its own read-model. Only moderation approval and trusted imports call `publish`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import time
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.events import ServicePublished, ServiceWithdrawn
from contracts.postcodes import normalise_district
from contracts.timezones import london_today
from services.directory import oruk
from services.directory.domain import Slot, weekly_slots
from services.directory.models import (
    Organization,
    Place,
    Service,
    ServiceAtLocation,
    ServiceDistrict,
    ServiceSlot,
    ServiceTerm,
    Taxonomy,
    TaxonomyTerm,
)
from services.directory.schemas import OrganizationIn, ServiceProposal
from shared.events import make_event
from shared.outbox import add_event
from shared.sqltypes import utcnow

SERVICE = "directory"


class RuleBroken(Exception):
    """A proposal that cannot be published as it stands (answered as 422, nothing stored)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Published:
    service_id: str
    changed: bool
    created: bool


def content_hash(document: dict[str, Any]) -> str:
    stable = {key: value for key, value in document.items() if key != "last_modified"}
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()


# --- taxonomy ------------------------------------------------------------------------------------


async def load_taxonomy(session: AsyncSession, taxonomy: dict[str, Any]) -> int:
    """Upsert a taxonomy and its terms from an HSDS taxonomy object; returns terms written."""
    terms = taxonomy.get("taxonomy_terms", [])
    header = {key: value for key, value in taxonomy.items() if key != "taxonomy_terms"}
    await session.merge(Taxonomy(id=header["id"], name=header["name"], document=json.dumps(header)))
    for term in terms:
        document = {**term, "taxonomy_id": header["id"]}
        await session.merge(
            TaxonomyTerm(
                id=term["id"],
                taxonomy_id=header["id"],
                code=term.get("code"),
                name=term["name"],
                parent_id=term.get("parent_id"),
                document=json.dumps(document),
            )
        )
    return len(terms)


async def adopt_terms(session: AsyncSession, terms: Iterable[dict[str, Any]]) -> None:
    """Keep the taxonomy terms an imported feed defines inline (its own vocabulary), so its
    services can be searched by them; terms we already hold are left as they are."""
    for term in terms:
        if not (term.get("id") and term.get("name")) or await session.get(TaxonomyTerm, term["id"]):
            continue
        taxonomy_id = term.get("taxonomy_id")
        if taxonomy_id and await session.get(Taxonomy, taxonomy_id) is None:
            name = term.get("taxonomy") or "Imported taxonomy"
            header = {
                "id": taxonomy_id,
                "name": name,
                "description": f"{name} (terms adopted from an imported feed)",
            }
            session.add(Taxonomy(id=taxonomy_id, name=name, document=json.dumps(header)))
            await session.flush()
        document = {key: value for key, value in term.items() if value is not None}
        document.setdefault("description", term["name"])
        session.add(
            TaxonomyTerm(
                id=term["id"], taxonomy_id=taxonomy_id, code=term.get("code"), name=term["name"],
                parent_id=term.get("parent_id"), document=json.dumps(document),
            )
        )  # fmt: skip
    await session.flush()


async def term_documents(session: AsyncSession, term_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    wanted = sorted(set(term_ids))
    if not wanted:
        return {}
    rows = (await session.scalars(select(TaxonomyTerm).where(TaxonomyTerm.id.in_(wanted)))).all()
    found = {row.id: json.loads(row.document) for row in rows}
    unknown = [term_id for term_id in wanted if term_id not in found]
    if unknown:
        raise RuleBroken("taxonomy_term_ids", f"unknown taxonomy terms: {', '.join(unknown[:5])}")
    return found


# --- places read-model ---------------------------------------------------------------------------


async def apply_place(session: AsyncSession, data: dict[str, Any]) -> None:
    """Keep a registry place (from its upserted / retired event: the whole timeline) as it stands
    today, and re-derive the districts of every service with a declared service area.

    A change dated in the future takes effect here when the next event for the place arrives
    (registry restructures are announced by events on the day they are recorded)."""
    today = london_today()
    timeline = data.get("timeline") or []
    current = next(
        (
            row
            for row in timeline
            if row["valid_from"] <= today.isoformat()
            and (row["valid_to"] is None or row["valid_to"] > today.isoformat())
        ),
        None,
    )
    latest = current or (timeline[-1] if timeline else {"attributes": {}})
    attributes = latest.get("attributes", {})
    place = await session.get(Place, data["id"])
    if place is None:
        place = Place(id=data["id"])
        session.add(place)
    place.key = attributes.get("key", place.key or data["id"])
    place.name = attributes.get("name", place.name or data["id"])
    place.districts = json.dumps(attributes.get("postcode_districts", []))
    place.active = current is not None
    await session.flush()
    for service in (await session.scalars(select(Service).where(Service.has_service_area.is_(True)))).all():
        document = json.loads(service.document)
        await _replace_districts(session, service.id, await _districts(session, document["service_areas"]))


async def _districts(session: AsyncSession, areas: list[dict[str, Any]]) -> set[str]:
    if not areas:
        return set()
    places = {
        key: json.loads(districts)
        for key, name, districts in (
            await session.execute(
                select(Place.key, Place.name, Place.districts).where(Place.active.is_(True))
            )
        ).all()
        for key in (key.lower(), name.lower())
    }
    covered: set[str] = set()
    for area in areas:
        if area.get("extent_type") == "postcode_districts" and area.get("extent"):
            covered.update(normalise_district(d) for d in area["extent"].split(","))
        place_key = (
            (area.get("uri") or "").rsplit("/place/", 1)[-1] if "/place/" in (area.get("uri") or "") else None
        )
        for name in (place_key, area.get("name")):
            if name and name.lower() in places:
                covered.update(places[name.lower()])
    return covered


async def _replace_districts(session: AsyncSession, service_id: str, districts: set[str]) -> None:
    await session.execute(delete(ServiceDistrict).where(ServiceDistrict.service_id == service_id))
    session.add_all(ServiceDistrict(service_id=service_id, district=d) for d in sorted(districts))


# --- organisations -------------------------------------------------------------------------------


async def organization_for(
    session: AsyncSession, identifier: str, scheme: str, details: OrganizationIn | None
) -> Organization:
    """The organisation with this charity / company number, created or refreshed from `details`."""
    organization = await session.scalar(select(Organization).where(Organization.identifier == identifier))
    if organization is None and details is None:
        raise RuleBroken(
            "organization", "give the organisation's name and description with its first service"
        )
    if details is not None:
        org_id = (
            organization.id if organization else str(details.id or oruk.link_id("organization", identifier))
        )
        document = oruk.organization_document(details, identifier=identifier, scheme=scheme, org_id=org_id)
        if organization is None:
            organization = Organization(id=org_id, identifier=identifier, identifier_scheme=scheme)
            session.add(organization)
        if organization.document != json.dumps(document):
            organization.document = json.dumps(document)
            organization.name = details.name
            organization.vcfse_category = details.vcfse_category.value if details.vcfse_category else None
            organization.modified_at = utcnow()
        await session.flush()
    assert organization is not None
    return organization


# --- services ------------------------------------------------------------------------------------


async def publish(
    session: AsyncSession,
    proposal: ServiceProposal,
    *,
    identifier: str,
    scheme: str,
    actor: str,
) -> Published:
    """Make `proposal` (with ids) the published service of the organisation `identifier`."""
    assert proposal.id is not None
    service_id = str(proposal.id)
    organization = await organization_for(session, identifier, scheme, proposal.organization)
    existing = await session.get(Service, service_id)
    if existing is not None and existing.organization_id != organization.id:
        raise RuleBroken("id", "this service id belongs to another organisation")
    terms = await term_documents(session, (str(t) for t in proposal.taxonomy_term_ids))
    now = utcnow()
    document = oruk.service_document(
        proposal, organization=json.loads(organization.document), terms=terms, modified_at=now
    )
    digest = content_hash(document)
    if existing is not None and existing.content_hash == digest:
        return Published(service_id, changed=False, created=False)
    service = existing or Service(id=service_id, version=0)
    service.organization_id = organization.id
    service.name = proposal.name
    service.status = proposal.status
    service.minimum_age = proposal.minimum_age
    service.maximum_age = proposal.maximum_age
    service.has_service_area = bool(proposal.service_areas)
    service.document = json.dumps(document)
    service.content_hash = digest
    service.version += 1
    service.modified_at = now
    if existing is None:
        session.add(service)
    await session.flush()
    await _replace_side_rows(session, service, document, terms, new=existing is None)
    add_event(
        session,
        make_event(SERVICE, "service", "published", ServicePublished(**published_event(service, document))),
    )
    return Published(service_id, changed=True, created=existing is None)


async def _replace_side_rows(
    session: AsyncSession,
    service: Service,
    document: dict[str, Any],
    terms: dict[str, dict[str, Any]],
    *,
    new: bool,
) -> None:
    if not new:
        for table in (ServiceTerm, ServiceSlot, ServiceAtLocation):
            await session.execute(delete(table).where(table.service_id == service.id))
    session.add_all(
        ServiceTerm(service_id=service.id, taxonomy_term_id=term_id, taxonomy_id=term.get("taxonomy_id"))
        for term_id, term in terms.items()
    )
    session.add_all(
        ServiceSlot(
            service_id=service.id,
            day=slot.day,
            opens_minute=slot.opens_minute,
            closes_minute=slot.closes_minute,
        )
        for slot in _slots(document)
    )
    for sal in document["service_at_locations"]:
        location = sal["location"]
        address = (location.get("addresses") or [{}])[0]
        session.add(
            ServiceAtLocation(
                id=sal["id"],
                service_id=service.id,
                location_id=sal["location_id"],
                latitude=location.get("latitude"),
                longitude=location.get("longitude"),
                postcode=address.get("postal_code"),
                document=json.dumps(sal),
            )
        )
    districts = await _districts(session, document["service_areas"])
    if districts or not new:
        await _replace_districts(session, service.id, districts)
    await _index_for_search(session, service, document, terms, new=new)


def _slots(document: dict[str, Any]) -> list[Slot]:
    slots = []
    for schedule in document["schedules"]:
        opens = time.fromisoformat(schedule["opens_at"]) if "opens_at" in schedule else None
        closes = time.fromisoformat(schedule["closes_at"]) if "closes_at" in schedule else None
        slots.extend(weekly_slots(schedule.get("byday"), opens, closes))
    return slots


# Each lexeme of a service's tsvector with the service's ts_rank for that lexeme as a prefix query
# (the tsquery `'lexeme':*`, quoted as tsquery input wants), and its name for the page order.
INDEX_RANKS = (
    "INSERT INTO directory_fts_ranks (lexeme, score, name, service_id) "
    r"SELECT t.lexeme, ts_rank(f.document, ('''' || replace(replace(t.lexeme, '\', '\\'), '''', '''''') "
    "|| ''':*')::tsquery), :name, f.service_id "
    "FROM directory_fts f, unnest(f.document) t WHERE f.service_id = :id"
)


async def _index_for_search(
    session: AsyncSession,
    service: Service,
    document: dict[str, Any],
    terms: dict[str, dict[str, Any]],
    *,
    new: bool,
) -> None:
    term_text = " ".join(f"{t['name']} {t.get('description', '')}" for t in terms.values())
    values = {
        "id": service.id,
        "name": document["name"],
        "description": document.get("description", "") + " " + document["organization"]["name"],
        "terms": term_text,
    }
    if session.bind.dialect.name == "sqlite":
        if not new:
            await session.execute(
                text("DELETE FROM directory_fts WHERE service_id = :id"), {"id": service.id}
            )
        await session.execute(
            text(
                "INSERT INTO directory_fts (service_id, name, description, terms) "
                "VALUES (:id, :name, :description, :terms)"
            ),
            values,
        )
    else:
        await session.execute(
            text(
                "INSERT INTO directory_fts (service_id, document) VALUES (:id, "
                "setweight(to_tsvector('english', :name), 'A') || "
                "setweight(to_tsvector('english', :terms), 'A') || "
                "setweight(to_tsvector('english', :description), 'B')) "
                "ON CONFLICT (service_id) DO UPDATE SET document = EXCLUDED.document"
            ),
            values,
        )
        # The impact-ordered index (queries._ranked_page), rewritten with the tsvector it derives from.
        if not new:
            await session.execute(
                text("DELETE FROM directory_fts_ranks WHERE service_id = :id"), {"id": service.id}
            )
        await session.execute(text(INDEX_RANKS), {"id": service.id, "name": service.name})


async def withdraw(session: AsyncSession, service_id: str) -> bool:
    """Take a service out of the published directory (its edits and history stay)."""
    service = await session.get(Service, service_id)
    if service is None:
        return False
    for table in (ServiceTerm, ServiceSlot, ServiceAtLocation, ServiceDistrict):
        await session.execute(delete(table).where(table.service_id == service_id))
    await session.execute(text("DELETE FROM directory_fts WHERE service_id = :id"), {"id": service_id})
    await session.delete(service)
    add_event(
        session,
        make_event(
            SERVICE,
            "service",
            "withdrawn",
            ServiceWithdrawn(
                service_id=service_id, version=service.version + 1, organization_id=service.organization_id
            ),
        ),
    )
    return True


def published_event(service: Service, document: dict[str, Any]) -> dict[str, Any]:
    """What triage keeps to match needs to services (no call back to the directory needed)."""
    return {
        "service_id": service.id,
        "version": service.version,
        "organization_id": document["organization_id"],
        "organization_name": document["organization"]["name"],
        "organization_identifier": document["organization"]["organization_identifiers"][0]["identifier"],
        "name": document["name"],
        "status": document["status"],
        "minimum_age": document.get("minimum_age"),
        "maximum_age": document.get("maximum_age"),
        "needs": [
            {
                "taxonomy_term_id": a["taxonomy_term_id"],
                "code": a["taxonomy_term"].get("code"),
                "name": a["taxonomy_term"]["name"],
            }
            for a in document["attributes"]
        ],
        "service_areas": [
            {"name": a["name"], "uri": a.get("uri"), "extent": a.get("extent")}
            for a in document["service_areas"]
        ],
        "slots": [
            {"day": s.day, "opens": s.opens.strftime("%H:%M"), "closes": s.closes.strftime("%H:%M")}
            for s in _slots(document)
        ],
        "locations": [
            {
                "service_at_location_id": sal["id"],
                "name": sal["location"].get("name"),
                "latitude": sal["location"].get("latitude"),
                "longitude": sal["location"].get("longitude"),
                "postcode": (sal["location"].get("addresses") or [{}])[0].get("postal_code"),
            }
            for sal in document["service_at_locations"]
        ],
        "languages": [language.get("name") for language in document["languages"]],
        "free": all((cost.get("amount") or 0) == 0 for cost in document["cost_options"]),
        "url": document.get("url"),
        "email": document.get("email"),
        "last_modified": document["last_modified"],
    }


async def counts(session: AsyncSession) -> dict[str, int]:
    return {
        "services": int(await session.scalar(select(func.count()).select_from(Service)) or 0),
        "organizations": int(await session.scalar(select(func.count()).select_from(Organization)) or 0),
    }
