"""Open Referral UK (HSDS 3.0 UK profile) documents, as pure functions.

A service is turned into its fully nested HSDS object once, when it is published; list items,
service-at-location items and organisation views are cut from that stored document, so every
read answers from one source of truth. Fields the UK profile does not define carry an `x_` prefix
(the profile allows local properties with a recognisable naming convention).
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from typing import Any

from services.directory.domain import parse_byday
from services.directory.schemas import LocationIn, OrganizationIn, ScheduleIn, ServiceProposal

HSDS_VERSION = "3.0"
UK_PROFILE = "https://github.com/OpenReferralUK/uk-profile"
IDENTIFIER_TYPES = {
    "GB-CHC": "Charity number (England and Wales)",
    "GB-SC": "Charity number (Scotland)",
    "GB-NIC": "Charity number (Northern Ireland)",
    "GB-COH": "Company number",
}
_LINKS = uuid.UUID("3f8e2d6c-1b7a-4c59-9e0d-5a2b8c7f4e61")  # namespace for derived link ids

SERVICE_LIST_FIELDS = (
    "id", "organization_id", "name", "description", "url", "email", "status", "fees", "accreditations",
    "minimum_age", "maximum_age", "assured_date", "assurer_email", "alert", "last_modified",
)  # fmt: skip
ORGANIZATION_LIST_FIELDS = (
    "id", "name", "description", "email", "website", "logo", "uri", "parent_organization_id",
)  # fmt: skip
LOCATION_LIST_FIELDS = (
    "id", "location_type", "name", "description", "latitude", "longitude", "external_identifier",
    "external_identifier_type",
)  # fmt: skip


def _clean(document: dict[str, Any]) -> dict[str, Any]:
    """HSDS types are strict: absent beats null."""
    return {key: value for key, value in document.items() if value is not None}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def link_id(*parts: str) -> str:
    return str(uuid.uuid5(_LINKS, "/".join(parts)))


def organization_document(
    org: OrganizationIn, *, identifier: str, scheme: str, org_id: str
) -> dict[str, Any]:
    return _clean(
        {
            "id": org_id,
            "name": org.name,
            "description": org.description,
            "email": _text(org.email),
            "website": _text(org.website),
            "organization_identifiers": [
                {
                    "id": link_id(org_id, "identifier", scheme),
                    "organization_id": org_id,
                    "identifier_scheme": scheme,
                    "identifier_type": IDENTIFIER_TYPES.get(scheme, "Identifier"),
                    "identifier": identifier,
                }
            ],
            "x_vcfse_category": org.vcfse_category.value if org.vcfse_category else None,
        }
    )


def schedule_document(
    schedule: ScheduleIn, *, service_id: str | None, sal_id: str | None = None
) -> dict[str, Any]:
    assert schedule.id is not None
    return _clean(
        {
            "id": str(schedule.id),
            "service_id": service_id,
            "service_at_location_id": sal_id,
            "freq": "WEEKLY",
            "byday": ",".join(parse_byday(schedule.byday)),
            "opens_at": schedule.opens_at.strftime("%H:%M") if schedule.opens_at else None,
            "closes_at": schedule.closes_at.strftime("%H:%M") if schedule.closes_at else None,
            "valid_from": schedule.valid_from.isoformat() if schedule.valid_from else None,
            "valid_to": schedule.valid_to.isoformat() if schedule.valid_to else None,
            "description": schedule.description,
        }
    )


def location_document(location: LocationIn) -> dict[str, Any]:
    assert location.id is not None
    location_id = str(location.id)
    address = location.address
    return _clean(
        {
            "id": location_id,
            "location_type": location.location_type,
            "name": location.name,
            "description": location.description,
            "latitude": location.latitude,
            "longitude": location.longitude,
            "addresses": [
                _clean(
                    {
                        "id": str(address.id or link_id(location_id, "address")),
                        "location_id": location_id,
                        "address_1": address.address_1
                        + (f", {address.address_2}" if address.address_2 else ""),
                        "city": address.city,
                        "region": address.region,
                        "state_province": address.region or address.city,
                        "postal_code": address.postal_code,
                        "country": "GB",
                        "address_type": location.location_type,
                    }
                )
            ]
            if address
            else [],
            "accessibility": [
                {
                    "id": link_id(location_id, "accessibility", str(index)),
                    "location_id": location_id,
                    "description": text,
                }
                for index, text in enumerate(location.accessibility)
            ],
        }
    )


def service_document(
    proposal: ServiceProposal,
    *,
    organization: dict[str, Any],
    terms: dict[str, dict[str, Any]],
    modified_at: datetime,
) -> dict[str, Any]:
    """The fully nested HSDS service (`compiled/service.json`). `proposal` has ids (`with_ids`);
    `terms` holds the taxonomy term documents its `taxonomy_term_ids` name."""
    assert proposal.id is not None
    service_id = str(proposal.id)
    schedules = [schedule_document(s, service_id=service_id) for s in proposal.schedules]
    service_at_locations = []
    for location in proposal.locations:
        sal_id = str(location.service_at_location_id)
        schedules += [schedule_document(s, service_id=service_id, sal_id=sal_id) for s in location.schedules]
        service_at_locations.append(
            {
                "id": sal_id,
                "service_id": service_id,
                "location_id": str(location.id),
                "location": location_document(location),
            }
        )
    return _clean(
        {
            "id": service_id,
            "organization_id": organization["id"],
            "name": proposal.name,
            "description": proposal.description,
            "url": _text(proposal.url),
            "email": _text(proposal.email),
            "status": proposal.status,
            "fees": proposal.fees_description,
            "eligibility_description": proposal.eligibility_description,
            "application_process": proposal.application_process,
            "interpretation_services": proposal.interpretation_services,
            "minimum_age": proposal.minimum_age,
            "maximum_age": proposal.maximum_age,
            "last_modified": modified_at.isoformat(),
            "schedules": schedules,
            "service_areas": [
                _clean(
                    {
                        "id": str(area.id),
                        "service_id": service_id,
                        "name": area.name,
                        "extent": ",".join(area.districts) if area.districts else None,
                        "extent_type": "postcode_districts" if area.districts else None,
                        "uri": f"https://cmh-suite.nhs.uk/place/{area.place}" if area.place else None,
                    }
                )
                for area in proposal.service_areas
            ],
            "service_at_locations": service_at_locations,
            "languages": [
                _clean(
                    {
                        "id": str(language.id),
                        "service_id": service_id,
                        "name": language.name,
                        "code": language.code,
                    }
                )
                for language in proposal.languages
            ],
            "organization": organization,
            "funding": [],
            "cost_options": [
                _clean(
                    {
                        "id": str(cost.id),
                        "service_id": service_id,
                        "option": cost.option,
                        "amount": cost.amount,
                        "amount_description": cost.amount_description,
                    }
                )
                for cost in proposal.cost_options
            ],
            "contacts": [
                _clean(
                    {
                        "id": str(contact.id),
                        "service_id": service_id,
                        "name": contact.name,
                        "title": contact.title,
                        "email": _text(contact.email),
                        "phones": [
                            {
                                "id": link_id(str(contact.id), "phone"),
                                "contact_id": str(contact.id),
                                "number": contact.phone,
                            }
                        ]
                        if contact.phone
                        else None,
                    }
                )
                for contact in proposal.contacts
            ],
            "attributes": [
                {
                    "id": link_id(service_id, "attribute", str(term_id)),
                    "link_id": service_id,
                    "link_type": "service",
                    "taxonomy_term_id": str(term_id),
                    "taxonomy_term": terms[str(term_id)],
                }
                for term_id in proposal.taxonomy_term_ids
            ],
        }
    )


def service_list_item(document: dict[str, Any]) -> dict[str, Any]:
    item = {key: document[key] for key in SERVICE_LIST_FIELDS if key in document}
    item["organization"] = organization_list_item(document["organization"])
    return item


def organization_list_item(document: dict[str, Any]) -> dict[str, Any]:
    return {key: document[key] for key in ORGANIZATION_LIST_FIELDS if key in document}


def minimal_item(document: dict[str, Any]) -> dict[str, Any]:
    return {"id": document["id"], "last_modified": document["last_modified"]}


def service_at_location_item(
    sal: dict[str, Any], service: dict[str, Any], *, full: bool, distance_m: float | None = None
) -> dict[str, Any]:
    """A service-at-location with its location and service (list form unless `full`)."""
    location = (
        sal["location"]
        if full
        else {k: sal["location"][k] for k in LOCATION_LIST_FIELDS if k in sal["location"]}
    )
    if full:
        nested = {key: value for key, value in service.items() if key != "service_at_locations"}
    else:
        nested = service_list_item(service)
    item = {
        "id": sal["id"],
        "service_id": sal["service_id"],
        "location_id": sal["location_id"],
        "location": location,
        "service": nested,
    }
    if distance_m is not None:
        item["x_distance_metres"] = round(distance_m)
    return item


def page(contents: list[dict[str, Any]], *, total: int, page_number: int, per_page: int) -> dict[str, Any]:
    total_pages = max(1, math.ceil(total / per_page)) if total else 0
    return {
        "total_items": total,
        "total_pages": total_pages,
        "page_number": page_number,
        "size": len(contents),
        "first_page": page_number == 1,
        "last_page": page_number >= total_pages,
        "empty": total == 0,
        "contents": contents,
    }
