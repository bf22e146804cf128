"""FHIR R4 (UK Core) terms: the identifier systems, the FHIR status of each state the suite has,
and the small JSON shapes (instant, reference, identifier, coding). Pure data and functions, no web
framework, so that domain modules may use them (`shared.fhir` is the HTTP plumbing)."""

from __future__ import annotations

from datetime import datetime

from contracts.vocabulary import EPISODE_ROUTES

UK_CORE = "https://fhir.hl7.org.uk/StructureDefinition/"
NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
ODS_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"
CMH_IDS = "https://cmh-suite.nhs.uk/Id/"
CMH_CODES = "https://cmh-suite.nhs.uk/CodeSystem/"
CMH_EXTENSIONS = "https://cmh-suite.nhs.uk/StructureDefinition/"

# The FHIR status of each resource the suite derives from its own states: one home each, used by the
# services' FHIR views, their searches and the notifications partners receive.
SERVICE_REQUEST_STATUSES: tuple[str, ...] = ("active", "completed", "revoked")


def service_request_status(referral_status: str, route: str | None, care_ended: bool) -> str:
    """A referral's ServiceRequest status in FHIR's meaning: `active` while what was asked for is
    under way (awaiting triage, then for as long as the episode of care it went to is open; a
    referral linked to an open episode as new information follows that episode), `completed` once
    it is done (the episode ended; or triage's answer was the whole of it: partner services, the
    crisis line, another area), `revoked` when declined or closed. The Task carries what triage
    decided; this says whether the request still stands."""
    if referral_status == "received":
        return "active"
    if referral_status == "routed":
        return "active" if route in EPISODE_ROUTES and not care_ended else "completed"
    if referral_status == "signposted":
        return "completed"
    return "revoked"  # closed


TRIAGE_TASK_STATUS: dict[str, str] = {
    "received": "requested",
    "routed": "completed",
    "signposted": "completed",
    "closed": "completed",
}
EPISODE_OF_CARE_STATUS: dict[str, str] = {"open": "active", "discharged": "finished"}


def care_plan_status(*, agreed: bool, discharged: bool) -> str:
    """draft until agreed with the person, then active; at discharge completed (or revoked if the
    plan was never agreed)."""
    if discharged:
        return "completed" if agreed else "revoked"
    return "active" if agreed else "draft"


def instant(moment: datetime) -> str:
    """A FHIR instant: seconds precision, always with its zone."""
    return moment.isoformat(timespec="seconds")


def reference(resource_type: str, resource_id: str, display: str | None = None) -> dict[str, str]:
    ref = {"reference": f"{resource_type}/{resource_id}"}
    if display:
        ref["display"] = display
    return ref


def identifier(system: str, value: str) -> dict[str, str]:
    return {"system": system, "value": value}


def coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


# meta.tag on a resource served in part (a notification's focus, `_elements`, `_summary`): it
# claims no profile, because a part cannot meet one (FHIR R4 §3.1.1.5.7, search §3.1.1.5.11).
SUBSETTED_TAG: dict[str, str] = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "subsetted",
}
