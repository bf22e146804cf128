"""FHIR R4 (UK Core) views of registry records, as pure functions from `RecordOut` to JSON.

No I/O here: the API layer fetches what a resource refers to and passes it in. Identifier
systems are NHS England's where one exists (ODS); the suite's own (teams, places, staff) live
under `https://cmh-suite.nhs.uk/Id/`. Codes without a published FHIR code system (service offer,
MHSDS team type, pathway, roles) use the suite's code systems under `/CodeSystem/`, named so a
partner can map them.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any

from services.registry.schemas import (
    WEEKDAYS,
    CodeSystem,
    OrganisationKind,
    RecordOut,
)

UK_CORE = "https://fhir.hl7.org.uk/StructureDefinition/"
ODS_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"
GSS_SYSTEM = "http://statistics.data.gov.uk/id/statistical-geography"
CHARITY_SYSTEM = "https://cmh-suite.nhs.uk/Id/charity-number"
COMPANY_SYSTEM = "https://cmh-suite.nhs.uk/Id/company-number"
TEAM_SYSTEM = "https://cmh-suite.nhs.uk/Id/team"
PLACE_SYSTEM = "https://cmh-suite.nhs.uk/Id/place"
STAFF_SYSTEM = "https://cmh-suite.nhs.uk/Id/staff"

_CODES = "https://cmh-suite.nhs.uk/CodeSystem/"
OFFER_CODES = _CODES + "service-offer"
MHSDS_TEAM_TYPE_CODES = _CODES + "mhsds-team-type"  # NHS Data Dictionary ServTeamTypeRefToMH
PATHWAY_CODES = _CODES + "pathway"
ORGANISATION_KIND_CODES = _CODES + "organisation-kind"
TEAM_ROLE_CODES = _CODES + "team-role"
LEADERSHIP_ROLE_CODES = _CODES + "leadership-role"
PROFESSION_CODES = _CODES + "profession"
HL7_ORGANISATION_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"
HL7_LOCATION_TYPE = "http://terminology.hl7.org/CodeSystem/location-physical-type"

IDENTIFIER_SYSTEMS: dict[CodeSystem, str] = {
    CodeSystem.ODS: ODS_SYSTEM,
    CodeSystem.GSS: GSS_SYSTEM,
    CodeSystem.CHARITY: CHARITY_SYSTEM,
    CodeSystem.COMPANY: COMPANY_SYSTEM,
}

# The nearest HL7 organization-type for each kind; ours rides alongside for precision.
_HL7_ORGANISATION_TYPE: dict[OrganisationKind, tuple[str, str]] = {
    OrganisationKind.ICB: ("pay", "Payer"),
    OrganisationKind.SUB_ICB_LOCATION: ("pay", "Payer"),
    OrganisationKind.PROVIDER_TRUST: ("prov", "Healthcare Provider"),
    OrganisationKind.ACUTE_TRUST: ("prov", "Healthcare Provider"),
    OrganisationKind.PCN: ("prov", "Healthcare Provider"),
    OrganisationKind.GP_PRACTICE: ("prov", "Healthcare Provider"),
    OrganisationKind.LOCAL_AUTHORITY: ("govt", "Government"),
    OrganisationKind.VCFSE: ("cg", "Community Group"),
}

_FHIR_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # FHIR days-of-week codes match ours
_END_OF_DAY = "23:59:59"
_START_OF_DAY = "00:00:00"


def _words(code: str) -> str:
    return code.replace("_", " ").capitalize()


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    return {"system": system, "code": code, "display": display or _words(code)}


def _meta(record: RecordOut, profile: str) -> dict[str, Any]:
    return {
        "versionId": str(record.version),
        "lastUpdated": _instant(record.recorded_at),
        "profile": [UK_CORE + profile],
    }


def _instant(moment: datetime) -> str:
    # FHIR instants need a zone; stored moments are UTC.
    return moment.isoformat() if moment.tzinfo else moment.isoformat() + "+00:00"


def _reference(
    resource_type: str, record_id: str | None, display: str | None = None
) -> dict[str, str] | None:
    if record_id is None:
        return None
    reference = {"reference": f"{resource_type}/{record_id}"}
    if display:
        reference["display"] = display
    return reference


def period(record: RecordOut) -> dict[str, str]:
    """The validity as a FHIR Period. `valid_to` is exclusive; a Period's end date is the last
    day included, so it is the day before."""
    result = {"start": record.valid_from.isoformat()}
    if record.valid_to is not None:
        result["end"] = (record.valid_to - timedelta(days=1)).isoformat()
    return result


def _drop_empty(resource: dict[str, Any]) -> dict[str, Any]:
    # FHIR forbids empty elements and nulls.
    return {key: value for key, value in resource.items() if value not in (None, [], {}, "")}


def organization(record: RecordOut) -> dict[str, Any]:
    attributes = record.attributes
    kind = OrganisationKind(attributes["kind"])
    hl7_code, hl7_display = _HL7_ORGANISATION_TYPE[kind]
    return _drop_empty(
        {
            "resourceType": "Organization",
            "id": record.id,
            "meta": _meta(record, "UKCore-Organization"),
            "identifier": [
                {
                    "system": IDENTIFIER_SYSTEMS[CodeSystem(attributes["code_system"])],
                    "value": attributes["code"],
                }
            ],
            "active": record.status == "active",
            "type": [
                {
                    "coding": [
                        _coding(HL7_ORGANISATION_TYPE, hl7_code, hl7_display),
                        _coding(ORGANISATION_KIND_CODES, kind.value, _words(kind.value)),
                    ]
                }
            ],
            "name": attributes["name"],
            "partOf": _reference("Organization", attributes.get("parent_id")),
        }
    )


def location_for_place(record: RecordOut) -> dict[str, Any]:
    """A place as an area Location; the postcode districts it covers are in its description."""
    attributes = record.attributes
    districts = attributes.get("postcode_districts", [])
    description = f"{attributes['name']} place, aligned with {attributes['upper_tier_council']}"
    if districts:
        description += "; postcode districts " + ", ".join(districts)
    return _drop_empty(
        {
            "resourceType": "Location",
            "id": record.id,
            "meta": _meta(record, "UKCore-Location"),
            "identifier": [{"system": PLACE_SYSTEM, "value": attributes["key"]}],
            "status": "active" if record.status == "active" else "inactive",
            "name": attributes["name"],
            "description": description,
            "mode": "kind",
            "physicalType": {"coding": [_coding(HL7_LOCATION_TYPE, "area", "Area")]},
            "managingOrganization": _reference("Organization", attributes.get("icb_id")),
        }
    )


def _clock(value: str | time) -> str:
    moment = value if isinstance(value, time) else time.fromisoformat(value)
    return moment.strftime("%H:%M:%S")


def available_times(opening_hours: dict[str, Any]) -> list[dict[str, Any]]:
    """Weekly opening as FHIR availableTime. FHIR times cannot pass midnight, so an overnight
    interval (closes ≤ opens) becomes the evening on its day and the early hours of the next."""
    if opening_hours.get("always_open"):
        return [{"daysOfWeek": list(_FHIR_DAYS), "allDay": True}]
    slots: list[tuple[int, str, str]] = []
    weekly = opening_hours.get("weekly", {})
    for index, day in enumerate(WEEKDAYS):
        for interval in weekly.get(day, []):
            opens, closes = _clock(interval["opens"]), _clock(interval["closes"])
            if closes > opens:
                slots.append((index, opens, closes))
                continue
            slots.append((index, opens, _END_OF_DAY))
            if closes != _START_OF_DAY:
                slots.append(((index + 1) % 7, _START_OF_DAY, closes))
    slots.sort()
    # Group days that share the same hours, the way FHIR expresses a week.
    grouped: dict[tuple[str, str], list[str]] = {}
    for index, opens, closes in slots:
        grouped.setdefault((opens, closes), []).append(_FHIR_DAYS[index])
    return [
        {"daysOfWeek": days, "availableStartTime": opens, "availableEndTime": closes}
        for (opens, closes), days in grouped.items()
    ]


def healthcare_service(team: RecordOut, *, coverage_place_ids: list[str]) -> dict[str, Any]:
    attributes = team.attributes
    offer = attributes["service_offer"]
    team_type = attributes.get("mhsds_team_type")
    capacity = attributes.get("caseload_capacity")
    comment = (
        f"Postcode districts covered: {', '.join(attributes['coverage'])}"
        if attributes.get("coverage")
        else None
    )
    return _drop_empty(
        {
            "resourceType": "HealthcareService",
            "id": team.id,
            "meta": _meta(team, "UKCore-HealthcareService"),
            "identifier": [{"system": TEAM_SYSTEM, "value": attributes["key"]}],
            "active": team.status == "active",
            "providedBy": _reference("Organization", attributes.get("provider_id")),
            "category": [{"coding": [_coding(OFFER_CODES, offer)]}],
            "type": [{"coding": [_coding(MHSDS_TEAM_TYPE_CODES, team_type, team_type)]}] if team_type else [],
            "name": attributes["name"],
            "comment": comment,
            "coverageArea": [{"reference": f"Location/{place_id}"} for place_id in coverage_place_ids],
            "program": [{"coding": [_coding(PATHWAY_CODES, key)]} for key in attributes.get("pathways", [])],
            "availableTime": available_times(attributes["opening_hours"]),
            "availabilityExceptions": (
                "Times are local (Europe/London)."
                + (f" Caseload capacity {capacity}." if capacity is not None else "")
            ),
        }
    )


def _practitioner_reference(practitioner: RecordOut) -> dict[str, Any]:
    # Practitioners are not served as resources; a logical reference by staff id is resolvable.
    attributes = practitioner.attributes
    return {
        "identifier": {"system": STAFF_SYSTEM, "value": attributes["staff_id"]},
        "display": attributes["name"],
    }


def _profession(practitioner: RecordOut) -> dict[str, Any]:
    return {"coding": [_coding(PROFESSION_CODES, practitioner.attributes["profession"])]}


def practitioner_role_for_membership(
    membership: RecordOut, practitioner: RecordOut, team: RecordOut
) -> dict[str, Any]:
    role = membership.attributes["role"]
    return _drop_empty(
        {
            "resourceType": "PractitionerRole",
            "id": membership.id,
            "meta": _meta(membership, "UKCore-PractitionerRole"),
            "identifier": [{"system": STAFF_SYSTEM, "value": practitioner.attributes["staff_id"]}],
            "active": membership.status == "active",
            "period": period(membership),
            "practitioner": _practitioner_reference(practitioner),
            "organization": _reference("Organization", team.attributes.get("provider_id")),
            "code": [{"coding": [_coding(TEAM_ROLE_CODES, role)]}, _profession(practitioner)],
            "healthcareService": [_reference("HealthcareService", team.id, team.attributes["name"])],
        }
    )


def practitioner_role_for_leadership(
    role: RecordOut, practitioner: RecordOut, *, led: RecordOut | None = None
) -> dict[str, Any]:
    """A network triumvirate role or a pathway lead; `led` is the network or pathway led."""
    kind = role.attributes["role"]
    code: dict[str, Any] = {"coding": [_coding(LEADERSHIP_ROLE_CODES, kind)]}
    provider_id = None
    if led is not None:
        code["text"] = f"{_words(kind)}, {led.attributes['name']}"
        provider_id = led.attributes.get("provider_id")
    return _drop_empty(
        {
            "resourceType": "PractitionerRole",
            "id": role.id,
            "meta": _meta(role, "UKCore-PractitionerRole"),
            "identifier": [{"system": STAFF_SYSTEM, "value": practitioner.attributes["staff_id"]}],
            "active": role.status == "active",
            "period": period(role),
            "practitioner": _practitioner_reference(practitioner),
            "organization": _reference("Organization", provider_id),
            "code": [code, _profession(practitioner)],
        }
    )
