"""Load the Lancashire and South Cumbria reference structure (reference/lsc-organisation.json),
idempotently: ids are derived from natural keys, and a record already holding the same attributes
is left alone (no new version, no event). A second run changes nothing."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.registry import store
from services.registry.domain import Validity
from services.registry.models import MIGRATIONS, RegistryRecord
from services.registry.schemas import ATTRIBUTES, Kind

REFERENCE = Path(__file__).parent / "reference" / "lsc-organisation.json"
SEED_FROM = date(2022, 7, 1)  # ICBs established
SEED_ACTOR = "seed"
NAMESPACE = uuid.UUID("0f5b8f0e-5c3f-4a34-9a4e-2d7c3c1a7e10")

COUNCIL_GSS = {
    "blackburn-with-darwen": "E06000008",
    "blackpool": "E06000009",
    "lancashire": "E10000017",
    "south-cumbria": "E06000064",
}
# Which locality network's hospital each acute trust runs (for its liaison team).
ACUTE_NETWORK = {
    "RXL": "fylde-coast",
    "RXR": "pennine-lancashire",
    "RXN": "central-lancashire",
    "RTX": "the-bay",
}
OFFER_KEYS = {  # reference key -> ServiceOffer
    "borough-triage": "triage",
    "crisis-response": "crisis_response",
    "crisis-line": "crisis_line",
    "home-treatment": "home_treatment",
    "front-door-primary": "front_door_primary",
    "front-door-secondary": "front_door_secondary",
    "focused-support": "focused_support",
    "staying-well": "staying_well",
    "outreach": "outreach",
    "liaison": "liaison",
}
ALL_WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEKDAYS = ALL_WEEK[:5]


def seed_id(kind: Kind, key: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{kind.value}:{key}"))


def _hours(days: tuple[str, ...], opens: str, closes: str) -> dict[str, Any]:
    return {"weekly": {day: [{"opens": opens, "closes": closes}] for day in days}}


ALWAYS = {"always_open": True}
HOURS = {
    "triage": _hours(ALL_WEEK, "08:00", "20:00"),
    "crisis_response": _hours(ALL_WEEK, "08:00", "22:00"),
    "home_treatment": ALWAYS,
    "crisis_line": ALWAYS,
    "liaison": ALWAYS,
}


@dataclass(frozen=True)
class Desired:
    kind: Kind
    key: str
    attributes: dict[str, Any]

    @property
    def id(self) -> str:
        return seed_id(self.kind, self.key)


def desired_records(reference: dict[str, Any]) -> Iterator[Desired]:
    """The seeded structure, parents before children."""
    icb = reference["icb"]
    provider = reference["mental_health_provider"]
    icb_id = seed_id(Kind.ORGANISATION, icb["ods_code"])
    provider_id = seed_id(Kind.ORGANISATION, provider["ods_code"])
    org = Kind.ORGANISATION
    yield Desired(
        org,
        icb["ods_code"],
        {"kind": "icb", "code": icb["ods_code"], "code_system": "ods", "name": icb["name"]},
    )
    for sub in reference["sub_icb_locations"]:
        yield Desired(
            org,
            sub["ods_code"],
            {
                "kind": "sub_icb_location",
                "code": sub["ods_code"],
                "code_system": "ods",
                "name": sub["name"],
                "parent_id": icb_id,
            },
        )
    yield Desired(
        org,
        provider["ods_code"],
        {
            "kind": "provider_trust",
            "code": provider["ods_code"],
            "code_system": "ods",
            "name": provider["name"],
        },
    )
    for trust in reference["acute_trusts"]:
        yield Desired(
            org,
            trust["ods_code"],
            {"kind": "acute_trust", "code": trust["ods_code"], "code_system": "ods", "name": trust["name"]},
        )
    for place in reference["places"]:
        gss = COUNCIL_GSS[place["key"]]
        yield Desired(
            org,
            gss,
            {
                "kind": "local_authority",
                "code": gss,
                "code_system": "gss",
                "name": place["upper_tier_council"],
            },
        )
        yield Desired(
            Kind.PLACE,
            place["key"],
            {
                "key": place["key"],
                "name": place["name"],
                "upper_tier_council": place["upper_tier_council"],
                "icb_id": icb_id,
                "postcode_districts": place["postcode_districts"],
            },
        )
    networks = provider["networks"]
    for network in networks:
        yield Desired(
            Kind.NETWORK,
            network["key"],
            {
                "key": network["key"],
                "name": network["name"],
                "kind": network["kind"],
                "provider_id": provider_id,
                "postcode_districts": network["postcode_districts"],
            },
        )
    for pathway in provider["clinical_pathways"]:
        yield Desired(
            Kind.PATHWAY,
            pathway["key"],
            {
                "key": pathway["key"],
                "name": pathway["name"],
                "age_min": pathway["age_min"],
                "age_max": pathway["age_max"],
            },
        )
    yield from _teams(reference, provider_id)


def _teams(reference: dict[str, Any], provider_id: str) -> Iterator[Desired]:
    offers = {OFFER_KEYS[o["key"]]: o for o in reference["service_offers"]}
    networks = reference["mental_health_provider"]["networks"]
    footprint = sorted(
        {d for p in reference["places"] for d in p["postcode_districts"]}
        | {d for n in networks for d in n["postcode_districts"]}
    )

    def team(
        key: str, name: str, offer: str, network_key: str, coverage: list[str], pathways: list[str]
    ) -> Desired:
        return Desired(
            Kind.TEAM,
            key,
            {
                "key": key,
                "name": name,
                "service_offer": offer,
                "mhsds_team_type": offers[offer].get("mhsds_team_type"),
                "pathways": pathways,
                "network_id": seed_id(Kind.NETWORK, network_key),
                "provider_id": provider_id,
                "coverage": coverage,
                "opening_hours": HOURS.get(offer, _hours(WEEKDAYS, "09:00", "17:00")),
                "caseload_capacity": None if offer in ("triage", "crisis_line") else 120,
            },
        )

    for network in networks:
        if network["kind"] != "locality":
            continue
        districts = network["postcode_districts"]
        short = network["name"].split(" (")[0]
        for offer in ("triage", "crisis_response", "home_treatment", "staying_well", "outreach"):
            yield team(
                f"{network['key']}-{offer.replace('_', '-')}",
                f"{short} {offers[offer]['name']}",
                offer,
                network["key"],
                districts,
                [],
            )
        for offer in ("front_door_primary", "front_door_secondary"):
            yield team(
                f"{network['key']}-{offer.replace('_', '-')}", f"{short} {offers[offer]['name']}", offer, network["key"], districts,
                ["adult-mh", "older-adult-mh"],
            )  # fmt: skip
        for pathway in ("camhs", "adult-mh", "older-adult-mh"):
            yield team(
                f"{network['key']}-focused-support-{pathway}", f"{short} focused support ({pathway})", "focused_support",
                network["key"], districts, [pathway],
            )  # fmt: skip
    specialist = next(n for n in networks if n["kind"] == "specialist")
    yield team(
        "lsc-crisis-line",
        "Lancashire and South Cumbria 24/7 crisis line",
        "crisis_line",
        specialist["key"],
        footprint,
        [],
    )
    for trust in reference["acute_trusts"]:
        network_key = ACUTE_NETWORK[trust["ods_code"]]
        districts = next(n for n in networks if n["key"] == network_key)["postcode_districts"]
        yield team(
            f"liaison-{trust['ods_code'].lower()}",
            f"Psychiatric liaison, {trust['name']}",
            "liaison",
            network_key,
            districts,
            [],
        )


@dataclass
class SeedReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0


async def seed(session: AsyncSession, reference: dict[str, Any] | None = None) -> SeedReport:
    reference = reference or json.loads(REFERENCE.read_text())
    report = SeedReport()
    for desired in desired_records(reference):
        attributes: BaseModel = ATTRIBUTES[desired.kind].model_validate(desired.attributes)
        record = await session.get(RegistryRecord, desired.id)
        if record is None:
            await store.create(
                session, desired.kind, attributes, Validity(SEED_FROM), SEED_ACTOR, record_id=desired.id
            )
            report.created += 1
            continue
        found = await store.timeline(session, desired.kind, desired.id)
        if json.loads(found.last.attributes) == attributes.model_dump(mode="json"):
            report.unchanged += 1
            continue
        await store.change(
            session,
            desired.kind,
            desired.id,
            attributes,
            max(store.today(), found.last.valid_from),
            None,
            SEED_ACTOR,
        )
        report.updated += 1
    return report


async def is_empty(session: AsyncSession) -> bool:
    return await session.scalar(select(RegistryRecord.id).limit(1)) is None


async def seed_database(settings: Any, *, only_if_empty: bool = False) -> SeedReport | None:
    """Migrate the registry's database and seed it (the `cmh seed` and first-start path)."""
    from shared.db import Database
    from shared.migrations import migrate

    url, schema = settings.database_url_for("registry"), settings.database_schema_for("registry")
    await migrate("registry", url, directory=MIGRATIONS, schema=schema)
    db = Database(url, schema=schema, pool_size=2)
    try:
        async with db.transaction() as session:
            if only_if_empty and not await is_empty(session):
                return None
            return await seed(session)
    finally:
        await db.dispose()
