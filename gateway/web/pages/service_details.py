"""What the partner and moderation pages share about a directory service, from what the API gives:
a service's published Open Referral UK document turned back into the proposal shape the partner
API takes (so an edit made on a page changes only the fields the page shows and keeps the rest as
published), the fields a page lets partners change, each field in words, the difference between
two versions field by field, and dates as NHS.UK writes them. Pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

LONDON = ZoneInfo("Europe/London")
DAY_NAMES = {
    "MO": "Monday", "TU": "Tuesday", "WE": "Wednesday", "TH": "Thursday", "FR": "Friday",
    "SA": "Saturday", "SU": "Sunday",
}  # fmt: skip
STATUS_NAMES = {
    "active": "Running",
    "inactive": "Not running",
    "temporarily closed": "Temporarily closed",
    "defunct": "Closed for good",
}


def when(value: object) -> str:
    """An API timestamp as "3 December 2026, 14:05" (UK time); "" for none."""
    if not value:
        return ""
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(LONDON)
    return f"{moment.day} {moment:%B %Y, %H:%M}"


@dataclass(frozen=True)
class Field:
    """A field of a service a partner may change on the edit page."""

    name: str
    label: str
    kind: str = "text"  # text, long, url, email, age, status
    hint: str | None = None
    required: bool = False


EDITABLE: tuple[Field, ...] = (
    Field("name", "Service name", required=True),
    Field("description", "Description", "long", "What the service offers and who runs it.", required=True),
    Field("status", "Is the service running?", "status"),
    Field("url", "Web page", "url", "The full address, starting https://"),
    Field("email", "Email address", "email"),
    Field(
        "eligibility_description", "Who it is for", "long", "Beyond the age range, for example carers only."
    ),
    Field("application_process", "How to get support", "long", "For example, drop in, or phone to book."),
    Field("fees_description", "Costs", "long", "Leave empty if the service is free."),
    Field("interpretation_services", "Interpreting", "long", "Languages or interpreters you can arrange."),
    Field("minimum_age", "Youngest age", "age", "In years. Leave empty if there is no lower limit."),
    Field("maximum_age", "Oldest age", "age", "In years. Leave empty if there is no upper limit."),
)
EDITABLE_NAMES = tuple(field.name for field in EDITABLE)
# The rest of a service, shown in words on its pages and in a moderator's diff (changed on a page
# only by the fields above; a partner's own system can change them through the API).
OTHER_LABELS = {
    "contacts": "Contacts",
    "locations": "Locations and opening times",
    "schedules": "Opening times",
    "service_areas": "Areas covered",
    "languages": "Languages",
    "cost_options": "Cost options",
    "taxonomy_term_ids": "Needs it meets",
    "organization": "Organisation details",
}
LABELS: dict[str, str] = {field.name: field.label for field in EDITABLE} | OTHER_LABELS


def _first(items: Any) -> dict[str, Any]:
    return items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}


def _schedule(schedule: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: schedule.get(key)
        for key in ("id", "byday", "opens_at", "closes_at", "valid_from", "valid_to", "description")
    }


def _area(area: Mapping[str, Any]) -> dict[str, Any]:
    uri = str(area.get("uri") or "")
    place = uri.rsplit("/place/", 1)[-1] if "/place/" in uri else None
    extent = str(area.get("extent") or "") if area.get("extent_type") == "postcode_districts" else ""
    return {
        "id": area.get("id"),
        "name": area.get("name") or place or "Area",
        "place": place,
        "districts": [d.strip() for d in extent.split(",") if d.strip()],
    }


def proposal_from_published(document: Mapping[str, Any]) -> dict[str, Any]:
    """The partner API's proposal for a published HSDS service (the directory's own mapping,
    `services.directory.importer.proposal_from_hsds`, seen from outside: ids kept, so an edit
    keeps every link). No `organization`: the organisation's details stay as they are."""
    by_location: dict[str, list[dict[str, Any]]] = {}
    service_schedules: list[dict[str, Any]] = []
    for schedule in document.get("schedules") or []:
        sal = schedule.get("service_at_location_id")
        (by_location.setdefault(sal, []) if sal else service_schedules).append(_schedule(schedule))
    locations: list[dict[str, Any]] = []
    for sal in document.get("service_at_locations") or []:
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
                    "region": address.get("region"),
                    "postal_code": address.get("postal_code", ""),
                }
                if address.get("address_1")
                else None,
                "accessibility": [
                    a["description"] for a in location.get("accessibility") or [] if a.get("description")
                ],
                "schedules": by_location.get(str(sal.get("id", "")), []),
            }
        )
    return {
        "id": document.get("id"),
        "name": document.get("name"),
        "description": document.get("description") or document.get("name"),
        "url": document.get("url"),
        "email": document.get("email"),
        "status": document.get("status", "active"),
        "fees_description": document.get("fees"),
        "eligibility_description": document.get("eligibility_description"),
        "application_process": document.get("application_process"),
        "interpretation_services": document.get("interpretation_services"),
        "minimum_age": document.get("minimum_age"),
        "maximum_age": document.get("maximum_age"),
        "taxonomy_term_ids": [
            a["taxonomy_term_id"] for a in document.get("attributes") or [] if a.get("taxonomy_term_id")
        ],
        "service_areas": [_area(area) for area in document.get("service_areas") or []],
        "languages": [
            {"id": lang.get("id"), "name": lang.get("name") or lang.get("code"), "code": lang.get("code")}
            for lang in document.get("languages") or []
            if lang.get("name") or lang.get("code")
        ],
        "cost_options": [
            {key: cost.get(key) for key in ("id", "option", "amount", "amount_description")}
            for cost in document.get("cost_options") or []
        ],
        "contacts": [
            {
                "id": contact.get("id"),
                "name": contact.get("name"),
                "title": contact.get("title"),
                "email": contact.get("email"),
                "phone": _first(contact.get("phones")).get("number"),
            }
            for contact in document.get("contacts") or []
        ],
        "schedules": service_schedules,
        "locations": locations,
    }


def term_names(document: Mapping[str, Any] | None) -> dict[str, str]:
    """Taxonomy term id → its name, from a published document's attributes."""
    names: dict[str, str] = {}
    for attribute in (document or {}).get("attributes") or []:
        term = attribute.get("taxonomy_term") or {}
        if attribute.get("taxonomy_term_id") and term.get("name"):
            names[str(attribute["taxonomy_term_id"])] = str(term["name"])
    return names


def _days(byday: object) -> str:
    codes = [part.strip().upper() for part in str(byday or "").split(",") if part.strip()]
    if not codes or len(codes) == 7:
        return "Every day"
    return ", ".join(DAY_NAMES.get(code, code) for code in codes)


def _hours(schedule: Mapping[str, Any]) -> str:
    opens, closes = schedule.get("opens_at"), schedule.get("closes_at")
    times = f" {str(opens)[:5]} to {str(closes)[:5]}" if opens and closes else ""
    note = f" ({schedule['description']})" if schedule.get("description") else ""
    return f"{_days(schedule.get('byday'))}{times}{note}"


def _lines(items: list[str]) -> str:
    return "\n".join(items) if items else "None given"


def readable(proposal: Mapping[str, Any], terms: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every field of a proposal in words, by field name (the page's labels are in LABELS)."""
    terms = terms or {}
    shown: dict[str, str] = {}
    for field in EDITABLE:
        value = proposal.get(field.name)
        if field.kind == "status":
            shown[field.name] = STATUS_NAMES.get(str(value or "active"), str(value))
        elif value is None or value == "":
            shown[field.name] = "Not given"
        else:
            shown[field.name] = str(value)
    contacts = [
        ", ".join(dict.fromkeys(str(c[key]) for key in ("name", "title", "phone", "email") if c.get(key)))
        for c in proposal.get("contacts") or []
    ]
    shown["contacts"] = _lines([line for line in contacts if line])
    locations: list[str] = []
    for location in proposal.get("locations") or []:
        address = location.get("address") or {}
        place = ", ".join(
            str(address[key]) for key in ("address_1", "address_2", "city", "postal_code") if address.get(key)
        )
        line = location.get("name") or "Location"
        line += f": {place}" if place else ""
        locations.append(line)
        locations += [f"  {_hours(s)}" for s in location.get("schedules") or []]
        locations += [f"  Access: {text}" for text in location.get("accessibility") or []]
    shown["locations"] = _lines(locations)
    shown["schedules"] = _lines([_hours(s) for s in proposal.get("schedules") or []])
    shown["service_areas"] = _lines(
        [
            str(area.get("name")) + (f" ({', '.join(area['districts'])})" if area.get("districts") else "")
            for area in proposal.get("service_areas") or []
        ]
    )
    shown["languages"] = _lines([str(lang.get("name")) for lang in proposal.get("languages") or []])
    costs = []
    for cost in proposal.get("cost_options") or []:
        amount = cost.get("amount")
        words = [str(cost["option"])] if cost.get("option") else []
        if amount is not None and float(amount) > 0:
            words.append(f"£{float(amount):.2f}")
        elif amount is not None and not words:
            words.append("Free")
        if cost.get("amount_description"):
            words.append(str(cost["amount_description"]))
        costs.append(", ".join(words))
    shown["cost_options"] = _lines([line for line in costs if line])
    shown["taxonomy_term_ids"] = _lines(
        [terms.get(str(term), str(term)) for term in proposal.get("taxonomy_term_ids") or []]
    )
    organization = proposal.get("organization")
    shown["organization"] = (
        f"{organization.get('name')}: {organization.get('description')}"
        if isinstance(organization, Mapping)
        else "Unchanged"
    )
    return shown


@dataclass(frozen=True)
class Change:
    field: str
    label: str
    current: str
    proposed: str


def changes(
    current: Mapping[str, Any] | None, proposed: Mapping[str, Any], terms: Mapping[str, str] | None = None
) -> list[Change]:
    """The fields whose words differ between the published service (none for a new one) and an
    edit, in the pages' order."""
    after = readable(proposed, terms)
    before = readable(current, terms) if current is not None else None
    found = []
    for name in (*EDITABLE_NAMES, *OTHER_LABELS):
        if name == "organization" and not isinstance(proposed.get("organization"), Mapping):
            continue  # an edit without organisation details leaves them as they are
        old = before[name] if before is not None else "Not published"
        if before is None or old != after[name]:
            found.append(Change(name, LABELS[name], old, after[name]))
    return found
