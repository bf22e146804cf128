"""FHIR R4 (UK Core) views of triage, as pure functions (no I/O): a referral as a ServiceRequest,
its triage as a Task, the person as a Patient, and an incoming ServiceRequest parsed into the
`ReferralIn` the native intake takes.

Codes without a published FHIR code system (referral source, needs, risks, routes, the MHSDS
clinical response priority) use the suite's code systems under `CMH_CODES`, exported here so the
gateway's CapabilityStatement and the tests name the same URLs. An incoming resource is checked
structurally here (fhir.resources is a test-only dependency); every refusal names the element and
never echoes what was sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from contracts.vocabulary import PRIORITY_LABELS
from services.triage.domain import Need, RequestedUrgency, Risk, Source
from services.triage.models import Decision, Person, Referral
from services.triage.schemas import ReferralIn
from shared.errors import Problem
from shared.fhir import invalid
from shared.fhir_terms import (
    CMH_CODES,
    CMH_EXTENSIONS,
    CMH_IDS,
    NHS_NUMBER_SYSTEM,
    ODS_SYSTEM,
    SERVICE_REQUEST_STATUS,
    TRIAGE_TASK_STATUS,
    UK_CORE,
    coding,
    identifier,
    instant,
    reference,
)

# --- systems, profiles and codes ------------------------------------------------------------------

SERVICE_REQUEST_PROFILE = UK_CORE + "UKCore-ServiceRequest"
PATIENT_PROFILE = UK_CORE + "UKCore-Patient"

REFERRAL_SYSTEM = CMH_IDS + "referral"  # ServiceRequest.identifier: our referral id
CHARITY_SYSTEM = CMH_IDS + "charity-number"  # requesters that have no ODS code
DIRECTORY_SERVICE_SYSTEM = CMH_IDS + "directory-service"  # partner services signposted to

SOURCE_CODES = CMH_CODES + "referral-source"  # domain.Source
NEED_CODES = CMH_CODES + "need"  # domain.Need
RISK_CODES = CMH_CODES + "risk"  # domain.Risk
ROUTE_CODES = CMH_CODES + "route"  # domain.Route
SERVICE_REQUESTED_CODES = CMH_CODES + "service-requested"
PRIORITY_CODES = CMH_CODES + "clinical-response-priority"  # MHSDS ClinRespPriorityType, 1-4
TASK_CODES = CMH_CODES + "task"
TRIAGE_OUTCOME_CODES = CMH_CODES + "triage-outcome"  # Task.businessStatus: the latest decision
TRIAGE_OUTPUT_CODES = CMH_CODES + "triage-output"  # Task.output.type: route | priority | signpost

PRIORITY_EXTENSION = CMH_EXTENSIONS + "clinical-response-priority"
CONSENT_EXTENSION = CMH_EXTENSIONS + "consent-to-share-with-vcfse"
# Identity: the NHS number matched a person on file whose date of birth or name disagrees. The
# Task carries the flag (extension, valueBoolean), one input per disagreeing field, and a note.
IDENTITY_REVIEW_EXTENSION = CMH_EXTENSIONS + "identity-review"
TRIAGE_INPUT_CODES = CMH_CODES + "triage-input"  # Task.input.type: identity-review
IDENTITY_REVIEW_REASON_CODES = CMH_CODES + "identity-review-reason"  # birth_date | name | postcode
IDENTITY_REVIEW_CODE = "identity-review"
_IDENTITY_FIELDS = {
    "birth_date": "Date of birth differs",
    "name": "Name differs",
    "postcode": "Postcode differs",
}

# Provenance: who made each decision about a referral (the calling system, and the clinician it
# asserts, recorded as asserted), when, what and why.
CLIENT_SYSTEM = CMH_IDS + "client"  # Provenance.agent (device): the calling system's client id
END_USER_SYSTEM = CMH_IDS + "end-user"  # Provenance.agent (author): the asserted end user
DECISION_ACTIVITY_CODES = CMH_CODES + "triage-decision"  # Provenance.activity: the decision's action
PROVENANCE_AGENT_TYPES = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"

SPA_REFERRAL_CODE = "spa-referral"
SPA_REFERRAL_TEXT = "Referral to community mental health services (single point of access)"
TRIAGE_TASK_CODE = "triage"
AWAITING_TRIAGE = "awaiting-triage"
# History rows that are not triage decisions: a screened referral's intake, the first contact.
NOT_DECISIONS = frozenset({"received", "contact"})
RISK_ASSESSMENT_ID = "risk"

# Triage priority (MHSDS code) <-> ServiceRequest.priority (request-priority).
FHIR_PRIORITY: dict[int, str] = {1: "stat", 4: "asap", 2: "urgent", 3: "routine"}
REQUESTED_URGENCY: dict[str, RequestedUrgency] = {
    "routine": RequestedUrgency.ROUTINE,
    "urgent": RequestedUrgency.URGENT,
    "asap": RequestedUrgency.VERY_URGENT,
    "stat": RequestedUrgency.EMERGENCY,
}
# Person.sex (NHS person stated gender) <-> Patient.gender.
FHIR_GENDER: dict[str, str] = {
    "male": "male",
    "female": "female",
    "not_known": "unknown",
    "not_specified": "unknown",
}
SEX_FROM_GENDER: dict[str, str] = {
    "male": "male",
    "female": "female",
    "unknown": "not_known",
    "other": "not_specified",
}

# Search parameters each resource answers (name -> FHIR type), for the API and the
# CapabilityStatement; `_format`, `_count` and `_offset` are accepted on every search besides.
_PATIENT_CHAIN = ("patient.identifier", "patient:identifier", "subject.identifier", "subject:identifier")
SEARCH_PARAMETERS: dict[str, dict[str, str]] = {
    "Provenance": {"target": "reference"},
    "ServiceRequest": {
        "_id": "token",
        "identifier": "token",
        "patient": "reference",
        **dict.fromkeys(_PATIENT_CHAIN, "token"),
        "requester.identifier": "token",
        "requester:identifier": "token",
        "status": "token",
        "authored": "date",
    },
    "Task": {
        "_id": "token",
        "focus": "reference",
        "patient": "reference",
        **dict.fromkeys(_PATIENT_CHAIN, "token"),
        "status": "token",
    },
    "Patient": {"_id": "token", "identifier": "token"},
}
CONTROL_PARAMETERS = ("_format", "_count", "_offset")
PATIENT_CHAIN_PARAMETERS = _PATIENT_CHAIN

_ODS_LIKE = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9]{3,10}$")
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$")
_URI = re.compile(r"^(https?://|urn:)[\x21-\x7e]{1,250}$")
_IDENTIFIER_VALUE = re.compile(r"^[\x20-\x7e]{1,128}$")
MAX_PARTNER_IDENTIFIERS = 10
PATIENT_ELEMENT = "ServiceRequest.contained[Patient]"


_DISPLAYS = {"gp": "GP", "ae": "A&E", "vcfse": "VCFSE organisation", "ocd": "OCD"}


def _words(code: str) -> str:
    return _DISPLAYS.get(code) or code.replace("_", " ").replace("-", " ").capitalize()


def _utc(moment: datetime) -> str:
    return instant(moment.astimezone(UTC))


def _drop_empty(resource: dict[str, Any]) -> dict[str, Any]:
    # FHIR forbids empty elements and nulls.
    return {key: value for key, value in resource.items() if value not in (None, [], {}, "")}


def organisation_system(code: str) -> str:
    """The identifier system of an organisation code: ODS for letters-and-digits codes, the
    charity number system for the all-digit codes VCFSE partners are known by."""
    return ODS_SYSTEM if _ODS_LIKE.match(code) else CHARITY_SYSTEM


def organisation_identifier(code: str) -> dict[str, str]:
    return identifier(organisation_system(code), code)


def _latest(decisions: Sequence[Decision]) -> Decision | None:
    """The latest decision about the referral: the intake of a screened referral is not one (it
    awaits triage); a re-access routed straight back is."""
    made = [d for d in decisions if d.action not in NOT_DECISIONS]
    return max(made, key=lambda d: d.seq or 0) if made else None


def _details(referral: Referral) -> dict[str, Any]:
    return json.loads(referral.details) if referral.details else {}


def partner_identifier_fragment(system: str, value: str) -> str:
    """The exact JSON text a partner identifier is stored as inside `Referral.details` (the
    details are written with `json.dumps` defaults): what a search looks for."""
    return json.dumps({"system": system, "value": value})


def partner_value_fragment(value: str) -> str:
    """The end of any stored partner identifier with this value, whatever its system."""
    return '"value": ' + json.dumps(value) + "}"


def with_partner_identifiers(details_json: str, identifiers: Sequence[dict[str, str]]) -> str:
    """`Referral.details` with the partner's own identifiers added (other keys kept)."""
    details = json.loads(details_json)
    details["partner_identifiers"] = [{"system": i["system"], "value": i["value"]} for i in identifiers]
    return json.dumps(details)


def _directory_service(service_id: str) -> dict[str, Any]:
    # Partner services live in the directory, not here: a logical reference by their id.
    return {"type": "HealthcareService", "identifier": identifier(DIRECTORY_SERVICE_SYSTEM, service_id)}


def _priority_coding(priority: int) -> dict[str, str]:
    return coding(PRIORITY_CODES, str(priority), PRIORITY_LABELS[priority])


# --- resources out --------------------------------------------------------------------------------


def service_request(
    referral: Referral, person: Person | None, decisions: Sequence[Decision]
) -> dict[str, Any]:
    """The referral as a UK Core ServiceRequest: what was asked, by whom, for whom, and (by its
    status, priority and performer) what triage made of it."""
    details = _details(referral)
    risks = details.get("risks") or []
    needs = details.get("needs") or []
    subject: dict[str, Any] = reference("Patient", referral.person_id)
    if person is not None and person.nhs_number:
        subject["identifier"] = identifier(NHS_NUMBER_SYSTEM, person.nhs_number)
    contained = []
    if risks:
        contained.append(
            {
                "resourceType": "RiskAssessment",
                "id": RISK_ASSESSMENT_ID,
                "status": "final",
                "subject": reference("Patient", referral.person_id),
                "occurrenceDateTime": _utc(referral.received_at),
                "prediction": [
                    {"outcome": {"coding": [coding(RISK_CODES, risk, _words(risk))], "text": _words(risk)}}
                    for risk in risks
                ],
            }
        )
    latest = _latest(decisions)
    performer: list[dict[str, Any]] = []
    if referral.status == "routed" and referral.team_id:
        performer.append(reference("HealthcareService", referral.team_id))
    elif referral.status == "signposted" and latest is not None:
        performer.extend(_directory_service(s) for s in json.loads(latest.signposts or "[]"))
    return _drop_empty(
        {
            "resourceType": "ServiceRequest",
            "id": referral.id,
            "meta": {
                "versionId": str(referral.version),
                "lastUpdated": _utc(referral.updated_at or referral.received_at),
                "profile": [SERVICE_REQUEST_PROFILE],
            },
            "contained": contained,
            "extension": [
                {"url": PRIORITY_EXTENSION, "valueCoding": _priority_coding(referral.priority)},
                {"url": CONSENT_EXTENSION, "valueBoolean": bool(referral.consent_to_share)},
            ],
            "identifier": [
                identifier(REFERRAL_SYSTEM, referral.id),
                *(identifier(i["system"], i["value"]) for i in details.get("partner_identifiers", [])),
            ],
            "status": SERVICE_REQUEST_STATUS[referral.status],
            "intent": "order",
            "category": [{"coding": [coding(SOURCE_CODES, referral.source, _words(referral.source))]}],
            "priority": FHIR_PRIORITY[referral.priority],
            "code": {
                "coding": [coding(SERVICE_REQUESTED_CODES, SPA_REFERRAL_CODE, SPA_REFERRAL_TEXT)],
                "text": SPA_REFERRAL_TEXT,
            },
            "subject": subject,
            "authoredOn": _utc(referral.authored_at or referral.received_at),
            "requester": {
                "type": "Organization",
                "identifier": organisation_identifier(referral.referring_org),
            },
            "performer": performer,
            "reasonCode": [
                {"coding": [coding(NEED_CODES, need, _words(need))], "text": _words(need)} for need in needs
            ],
            "supportingInfo": [{"reference": f"#{RISK_ASSESSMENT_ID}", "type": "RiskAssessment"}]
            if risks
            else [],
            "note": [{"text": details["needs_text"]}] if details.get("needs_text") else [],
        }
    )


def task_for_triage(referral: Referral, decisions: Sequence[Decision]) -> dict[str, Any]:
    """The triage of a referral as a Task focused on its ServiceRequest: requested until a
    clinician decides, then completed; businessStatus names the decision, outputs what it chose."""
    latest = _latest(decisions)
    action = latest.action if latest is not None else AWAITING_TRIAGE
    outputs: list[dict[str, Any]] = []
    if latest is not None:
        if latest.route:
            outputs.append(
                {
                    "type": {"coding": [coding(TRIAGE_OUTPUT_CODES, "route", "Route")]},
                    "valueCodeableConcept": {
                        "coding": [coding(ROUTE_CODES, latest.route, _words(latest.route))],
                        "text": _words(latest.route),
                    },
                }
            )
        priority = latest.priority or referral.priority
        outputs.append(
            {
                "type": {"coding": [coding(TRIAGE_OUTPUT_CODES, "priority", "Priority")]},
                "valueCodeableConcept": {
                    "coding": [_priority_coding(priority)],
                    "text": PRIORITY_LABELS[priority],
                },
            }
        )
        for service_id in json.loads(latest.signposts or "[]"):
            outputs.append(
                {
                    "type": {"coding": [coding(TRIAGE_OUTPUT_CODES, "signpost", "Signpost")]},
                    "valueReference": _directory_service(service_id),
                }
            )
    status = TRIAGE_TASK_STATUS[referral.status]
    period = {"start": _utc(referral.received_at)}
    if status == "completed" and latest is not None and latest.at:
        period["end"] = _utc(latest.at)
    return _drop_empty(
        {
            "resourceType": "Task",
            "id": referral.id,
            "meta": {
                "versionId": str(referral.version),
                "lastUpdated": _utc(referral.updated_at or referral.received_at),
            },
            "status": status,
            "statusReason": {"text": latest.reason} if latest is not None and latest.reason else None,
            "businessStatus": {
                "coding": [coding(TRIAGE_OUTCOME_CODES, action, _words(action))],
                "text": action,
            },
            "intent": "order",
            "priority": FHIR_PRIORITY[referral.priority],
            "code": {"coding": [coding(TASK_CODES, TRIAGE_TASK_CODE, "Triage")], "text": "Triage"},
            "focus": reference("ServiceRequest", referral.id),
            "for": reference("Patient", referral.person_id),
            "executionPeriod": period,
            "authoredOn": _utc(referral.received_at),
            "lastModified": _utc(referral.updated_at or referral.received_at),
            "requester": {
                "type": "Organization",
                "identifier": organisation_identifier(referral.referring_org),
            },
            "owner": reference("HealthcareService", referral.team_id) if referral.team_id else None,
            "output": outputs,
            **identity_flag(referral),
        }
    )


def identity_flag(referral: Referral) -> dict[str, Any]:
    """Task elements saying the referral's identity is in review (none when it is not): the
    `identity-review` extension, an input naming each field that disagrees, and a note. Kinds
    only, never the values on file."""
    if not referral.identity_review_open or not referral.identity_review:
        return {}
    review = json.loads(referral.identity_review)
    reasons = [r for r in review.get("reasons", []) if r in _IDENTITY_FIELDS]
    names = [_IDENTITY_FIELDS[r].removesuffix(" differs").lower() for r in reasons] or ["details"]
    what = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
    what += " differs" if names in (["date of birth"], ["name"], ["postcode"]) else " differ"
    return {
        "extension": [{"url": IDENTITY_REVIEW_EXTENSION, "valueBoolean": True}],
        "input": [
            {
                "type": {
                    "coding": [coding(TRIAGE_INPUT_CODES, IDENTITY_REVIEW_CODE, "Identity to be confirmed")],
                    "text": "Identity to be confirmed",
                },
                "valueCodeableConcept": {
                    "coding": [coding(IDENTITY_REVIEW_REASON_CODES, reason, _IDENTITY_FIELDS[reason])],
                    "text": _IDENTITY_FIELDS[reason],
                },
            }
            for reason in reasons
        ],
        "note": [
            {
                "text": "Identity to be confirmed: the NHS number matches a person on file whose "
                f"{what} from this referral. Not merged; the person on file is unchanged."
            }
        ],
    }


def provenance(referral: Referral, decision: Decision) -> dict[str, Any]:
    """One decision about a referral as a Provenance of its Task and ServiceRequest: what was
    decided (activity), when (recorded), why (reason), by which system (device agent) and by which
    clinician as that system asserts them (author agent; the suite does not authenticate them)."""
    agents: list[dict[str, Any]] = []
    if decision.end_user_id or decision.end_user_role:
        author: dict[str, Any] = {
            "type": {"coding": [coding(PROVENANCE_AGENT_TYPES, "author", "Author")]},
            "who": {
                "type": "Practitioner",
                "display": "asserted by the calling system",
                **(
                    {"identifier": identifier(END_USER_SYSTEM, decision.end_user_id)}
                    if decision.end_user_id
                    else {}
                ),
            },
        }
        if decision.end_user_role:
            author["role"] = [{"text": decision.end_user_role}]
        agents.append(author)
    agents.append(
        {
            "type": {"coding": [coding(PROVENANCE_AGENT_TYPES, "enterer", "Enterer")]},
            "who": {"type": "Device", "identifier": identifier(CLIENT_SYSTEM, decision.actor)},
        }
    )
    return _drop_empty(
        {
            "resourceType": "Provenance",
            "id": f"{referral.id}-{decision.seq}",
            "target": [reference("Task", referral.id), reference("ServiceRequest", referral.id)],
            "occurredDateTime": _utc(decision.at),
            "recorded": _utc(decision.at),
            "activity": {
                "coding": [coding(DECISION_ACTIVITY_CODES, decision.action, _words(decision.action))],
                "text": decision.action,
            },
            "reason": [{"text": decision.reason}] if decision.reason else [],
            "agent": agents,
        }
    )


def patient(person: Person) -> dict[str, Any]:
    """The person as a UK Core Patient: NHS number when known, name, birth date, gender,
    postcode and contact details."""
    details = json.loads(person.details) if person.details else {}
    contact = details.get("contact") or {}
    telecom = []
    if contact.get("phone"):
        telecom.append({"system": "phone", "value": contact["phone"]})
    if contact.get("email"):
        telecom.append({"system": "email", "value": contact["email"]})
    address = _drop_empty({"use": "home", "text": contact.get("address"), "postalCode": person.postcode})
    name = _drop_empty(
        {
            "use": "official",
            "family": details.get("family_name"),
            "given": [details["given_name"]] if details.get("given_name") else [],
        }
    )
    return _drop_empty(
        {
            "resourceType": "Patient",
            "id": person.id,
            "meta": _drop_empty(
                {
                    "lastUpdated": _utc(person.updated_at) if person.updated_at else None,
                    "profile": [PATIENT_PROFILE],
                }
            ),
            "identifier": [identifier(NHS_NUMBER_SYSTEM, person.nhs_number)] if person.nhs_number else [],
            "name": [name] if len(name) > 1 else [],
            "telecom": telecom,
            "gender": FHIR_GENDER.get(details.get("sex") or ""),
            "birthDate": person.birth_date.isoformat(),
            "address": [address] if len(address) > 1 else [],
        }
    )


# --- a ServiceRequest in --------------------------------------------------------------------------

# Where each ReferralIn field came from, to name the element when the model refuses a value.
FIELD_ELEMENTS: dict[str, str] = {
    "person.nhs_number": f"{PATIENT_ELEMENT}.identifier",
    "person.given_name": f"{PATIENT_ELEMENT}.name.given",
    "person.family_name": f"{PATIENT_ELEMENT}.name.family",
    "person.birth_date": f"{PATIENT_ELEMENT}.birthDate",
    "person.postcode": f"{PATIENT_ELEMENT}.address.postalCode",
    "person.contact.phone": f"{PATIENT_ELEMENT}.telecom",
    "person.contact.email": f"{PATIENT_ELEMENT}.telecom",
    "person.contact.address": f"{PATIENT_ELEMENT}.address.text",
    "person.sex": f"{PATIENT_ELEMENT}.gender",
    "source": "ServiceRequest.category",
    "needs": "ServiceRequest.reasonCode",
    "needs_text": "ServiceRequest.note",
    "risks": "ServiceRequest.supportingInfo",
    "requested_urgency": "ServiceRequest.priority",
    "consent_to_share": "ServiceRequest.extension",
    "authored_at": "ServiceRequest.authoredOn",
}


def element_for(location: Sequence[str | int]) -> str:
    """The FHIR element a ReferralIn field (a validation error's location) came from."""
    parts = [str(part) for part in location if not isinstance(part, int) and not str(part).isdigit()]
    for size in range(len(parts), 0, -1):
        element = FIELD_ELEMENTS.get(".".join(parts[:size]))
        if element is not None:
            return element
    return "ServiceRequest"


def _required(element: str) -> Problem:
    return invalid(f"{element} is required", status=422, code="required")


def _bad(element: str, what: str) -> Problem:
    return invalid(f"{element} {what}", status=422, code="invalid")


def _unknown_code(element: str, system: str) -> Problem:
    return invalid(f"{element} has a code that is not in {system}", status=422, code="code-invalid")


def _object(value: Any, element: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(element, "must be a JSON object")
    return value


def _list(value: Any, element: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(element, "must be a JSON array")
    return value


def _string(value: Any, element: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _bad(element, "must be a non-empty string")
    return value


def _no_modifier_extensions(resource: dict[str, Any], element: str) -> None:
    # A modifier extension changes the meaning of what carries it: one not understood is refused.
    if resource.get("modifierExtension"):
        raise invalid(f"{element}.modifierExtension is not supported", status=422, code="not-supported")


def _codes(concept: Any, system: str, element: str) -> list[str]:
    """The codes of `system` in a CodeableConcept."""
    found = []
    for index, item in enumerate(_list(_object(concept, element).get("coding"), f"{element}.coding")):
        item = _object(item, f"{element}.coding[{index}]")
        if item.get("system") == system:
            found.append(_string(item.get("code"), f"{element}.coding[{index}].code"))
    return found


def _one_code(concept: Any, system: str, element: str) -> str | None:
    codes = set(_codes(concept, system, element))
    if len(codes) > 1:
        raise _bad(element, f"has more than one code from {system}")
    return codes.pop() if codes else None


def _enum(enum: Any, code: str, element: str, system: str) -> Any:
    try:
        return enum(code)
    except ValueError:
        raise _unknown_code(element, system) from None


def partner_identifiers(resource: dict[str, Any]) -> list[dict[str, str]]:
    """The partner's own identifiers of the ServiceRequest (system and value each), kept so a
    conditional create (`If-None-Exist: identifier=system|value`) finds the referral again."""
    found: list[dict[str, str]] = []
    items = _list(resource.get("identifier"), "ServiceRequest.identifier")
    if len(items) > MAX_PARTNER_IDENTIFIERS:
        raise _bad("ServiceRequest.identifier", f"may have at most {MAX_PARTNER_IDENTIFIERS} entries")
    for index, item in enumerate(items):
        element = f"ServiceRequest.identifier[{index}]"
        item = _object(item, element)
        system, value = item.get("system"), item.get("value")
        if system is None:
            raise invalid(f"{element}.system is required", status=422, code="required")
        if not isinstance(system, str) or not _URI.match(system):
            raise _bad(
                f"{element}.system", "must be an absolute URI (http, https or urn) of at most 256 characters"
            )
        if system == REFERRAL_SYSTEM:
            raise invalid(
                f"{element}.system is this service's own referral identifier, assigned on create",
                status=422,
                code="business-rule",
            )
        if not isinstance(value, str) or not _IDENTIFIER_VALUE.match(value):
            raise _bad(f"{element}.value", "must be 1 to 128 printable ASCII characters")
        entry = {"system": system, "value": value}
        if entry not in found:
            found.append(entry)
    return found


def _contained(resource: dict[str, Any]) -> dict[str, dict[str, Any]]:
    contained: dict[str, dict[str, Any]] = {}
    for index, item in enumerate(_list(resource.get("contained"), "ServiceRequest.contained")):
        element = f"ServiceRequest.contained[{index}]"
        item = _object(item, element)
        kind = item.get("resourceType")
        if kind not in ("Patient", "RiskAssessment"):
            raise invalid(
                f"{element}: only a Patient and RiskAssessments may be contained",
                status=422,
                code="not-supported",
            )
        local_id = item.get("id")
        if not isinstance(local_id, str) or not _FHIR_ID.match(local_id):
            raise _bad(f"{element}.id", "must be a FHIR id (1-64 letters, digits, '-' or '.')")
        if local_id in contained:
            raise _bad(f"{element}.id", "is used by another contained resource")
        _no_modifier_extensions(item, element)
        contained[local_id] = item
    return contained


def _local(ref: Any, element: str, contained: dict[str, dict[str, Any]], kind: str) -> dict[str, Any]:
    """The contained resource `ref` ({"reference": "#id"}) points to, which must be a `kind`."""
    text = _object(ref, element).get("reference")
    if not isinstance(text, str) or not text.startswith("#"):
        raise invalid(f"{element} must reference a contained {kind} (#id)", status=422, code="not-supported")
    target = contained.get(text[1:])
    if target is None or target.get("resourceType") != kind:
        raise _bad(element, f"does not reference a contained {kind}")
    return target


def _person(patient_resource: dict[str, Any]) -> dict[str, Any]:
    element = PATIENT_ELEMENT
    names = [
        _object(n, f"{element}.name[{i}]")
        for i, n in enumerate(_list(patient_resource.get("name"), f"{element}.name"))
    ]
    if not names:
        raise _required(f"{element}.name")
    name = next((n for n in names if n.get("use") == "official"), names[0])
    given = [_string(g, f"{element}.name.given") for g in _list(name.get("given"), f"{element}.name.given")]
    if not given:
        raise _required(f"{element}.name.given")
    if name.get("family") is None:
        raise _required(f"{element}.name.family")
    family = _string(name.get("family"), f"{element}.name.family")
    birth = patient_resource.get("birthDate")
    if birth is None:
        raise _required(f"{element}.birthDate")
    if not isinstance(birth, str) or not _DATE.match(birth):
        raise _bad(f"{element}.birthDate", "must be a full date (YYYY-MM-DD)")
    addresses = [
        _object(a, f"{element}.address[{i}]")
        for i, a in enumerate(_list(patient_resource.get("address"), f"{element}.address"))
    ]
    with_postcode = [a for a in addresses if a.get("postalCode") is not None]
    if not with_postcode:
        raise _required(f"{element}.address.postalCode")
    address = next((a for a in with_postcode if a.get("use") == "home"), with_postcode[0])
    postcode = _string(address.get("postalCode"), f"{element}.address.postalCode")
    lines = [
        _string(line, f"{element}.address.line")
        for line in _list(address.get("line"), f"{element}.address.line")
    ]
    address_text = address.get("text")
    if address_text is not None:
        address_text = _string(address_text, f"{element}.address.text")
    elif lines:
        address_text = ", ".join(lines)
    nhs_numbers = []
    for index, item in enumerate(_list(patient_resource.get("identifier"), f"{element}.identifier")):
        item = _object(item, f"{element}.identifier[{index}]")
        if item.get("system") == NHS_NUMBER_SYSTEM:
            nhs_numbers.append(_string(item.get("value"), f"{element}.identifier[{index}].value"))
    if len(set(nhs_numbers)) > 1:
        raise _bad(f"{element}.identifier", "has more than one NHS number")
    sex = None
    gender = patient_resource.get("gender")
    if gender is not None:
        if not isinstance(gender, str) or gender not in SEX_FROM_GENDER:
            raise invalid(
                f"{element}.gender is not male, female, other or unknown", status=422, code="code-invalid"
            )
        sex = SEX_FROM_GENDER[gender]
    phone = email = None
    for index, item in enumerate(_list(patient_resource.get("telecom"), f"{element}.telecom")):
        item = _object(item, f"{element}.telecom[{index}]")
        system = item.get("system")
        if system in ("phone", "sms") and phone is None:
            phone = _string(item.get("value"), f"{element}.telecom[{index}].value")
        elif system == "email" and email is None:
            email = _string(item.get("value"), f"{element}.telecom[{index}].value")
    contact = {
        k: v for k, v in (("phone", phone), ("email", email), ("address", address_text)) if v is not None
    }
    person: dict[str, Any] = {
        "given_name": " ".join(given),
        "family_name": family,
        "birth_date": birth,
        "postcode": postcode,
        "contact": contact,
    }
    if nhs_numbers:
        person["nhs_number"] = nhs_numbers[0]
    if sex is not None:
        person["sex"] = sex
    return person


def _authored(value: Any) -> datetime:
    element = "ServiceRequest.authoredOn"
    if not isinstance(value, str) or not _DATE_TIME.match(value):
        raise _bad(element, "must be a dateTime with a time and a time zone")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(element, "is not a date and time that exists") from None


def _validation_problem(error: ValidationError) -> Problem:
    """422 naming the FHIR element of each refused field; never the values sent."""
    errors = []
    for item in error.errors(include_url=False, include_input=False, include_context=False):
        location = [str(part) for part in item.get("loc", ())]
        message = str(item.get("msg", "invalid"))
        if location and location[-1] == "email":
            message = "not a valid email address"  # the email checker's words may quote the address
        if not location and "authored_at" in message:
            location = ["authored_at"]
            message = message.replace("authored_at", "authoredOn")
        errors.append({"location": [element_for(location)], "message": message, "type": "invalid"})
    return Problem(
        422,
        "Invalid FHIR request",
        "The ServiceRequest has elements that are not valid.",
        type_slug="fhir-invalid",
        fhir_code="invalid",
        errors=errors,
    )


def referral_from_service_request(resource: Any, caller_organisation: str) -> ReferralIn:
    """An incoming ServiceRequest as the referral the native intake takes; a Problem (422,
    OperationOutcome naming the element, or 403 for someone else's requester) if it is not one."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "ServiceRequest":
        raise _bad("resourceType", "must be ServiceRequest")
    _no_modifier_extensions(resource, "ServiceRequest")
    if resource.get("status") is None:
        raise _required("ServiceRequest.status")
    if resource.get("status") != "active":
        raise invalid(
            "ServiceRequest.status must be active for a new referral", status=422, code="code-invalid"
        )
    if resource.get("intent") is None:
        raise _required("ServiceRequest.intent")
    if resource.get("intent") != "order":
        raise invalid("ServiceRequest.intent must be order", status=422, code="code-invalid")
    if resource.get("doNotPerform") is True:
        raise invalid("ServiceRequest.doNotPerform is not supported", status=422, code="not-supported")

    # The requester is the caller's own organisation: nobody refers on another's behalf.
    requester = resource.get("requester")
    if requester is None:
        raise _required("ServiceRequest.requester")
    requester_id = _object(
        _object(requester, "ServiceRequest.requester").get("identifier"),
        "ServiceRequest.requester.identifier",
    )
    if requester_id.get("system") not in (ODS_SYSTEM, CHARITY_SYSTEM):
        raise invalid(
            "ServiceRequest.requester.identifier.system must be the ODS code or charity number system",
            status=422,
            code="code-invalid",
        )
    organisation = _string(requester_id.get("value"), "ServiceRequest.requester.identifier.value")
    if organisation.strip().upper() != caller_organisation.upper():
        raise Problem(
            403,
            "Forbidden",
            "ServiceRequest.requester.identifier must be the calling organisation",
            type_slug="forbidden",
            fhir_code="forbidden",
        )

    partner_identifiers(resource)  # checked here so any refusal comes before anything is stored
    contained = _contained(resource)
    if resource.get("subject") is None:
        raise _required("ServiceRequest.subject")
    person = _person(_local(resource["subject"], "ServiceRequest.subject", contained, "Patient"))

    sources = set()
    for index, concept in enumerate(_list(resource.get("category"), "ServiceRequest.category")):
        code = _one_code(concept, SOURCE_CODES, f"ServiceRequest.category[{index}]")
        if code is not None:
            sources.add(_enum(Source, code, f"ServiceRequest.category[{index}]", SOURCE_CODES))
    if not sources:
        raise invalid(
            f"ServiceRequest.category needs a coding from {SOURCE_CODES} (the referral source)",
            status=422,
            code="required",
        )
    if len(sources) > 1:
        raise _bad("ServiceRequest.category", "names more than one referral source")

    needs = []
    for index, concept in enumerate(_list(resource.get("reasonCode"), "ServiceRequest.reasonCode")):
        element = f"ServiceRequest.reasonCode[{index}]"
        codes = _codes(concept, NEED_CODES, element)
        if not codes:
            raise invalid(f"{element} needs a coding from {NEED_CODES}", status=422, code="code-invalid")
        needs.extend(_enum(Need, code, element, NEED_CODES) for code in codes)

    risks: list[Risk] = []
    for index, ref in enumerate(_list(resource.get("supportingInfo"), "ServiceRequest.supportingInfo")):
        element = f"ServiceRequest.supportingInfo[{index}]"
        assessment = _local(ref, element, contained, "RiskAssessment")
        for p_index, prediction in enumerate(
            _list(assessment.get("prediction"), "RiskAssessment.prediction")
        ):
            p_element = f"ServiceRequest.contained[RiskAssessment].prediction[{p_index}].outcome"
            codes = _codes(_object(prediction, p_element).get("outcome"), RISK_CODES, p_element)
            if not codes:
                raise invalid(
                    f"{p_element} needs a coding from {RISK_CODES}", status=422, code="code-invalid"
                )
            for code in codes:
                risk = _enum(Risk, code, p_element, RISK_CODES)
                if risk not in risks:
                    risks.append(risk)

    notes = []
    for index, note in enumerate(_list(resource.get("note"), "ServiceRequest.note")):
        notes.append(
            _string(
                _object(note, f"ServiceRequest.note[{index}]").get("text"),
                f"ServiceRequest.note[{index}].text",
            )
        )

    requested = None
    if resource.get("priority") is not None:
        if not isinstance(resource["priority"], str) or resource["priority"] not in REQUESTED_URGENCY:
            raise invalid(
                "ServiceRequest.priority is not routine, urgent, asap or stat",
                status=422,
                code="code-invalid",
            )
        requested = REQUESTED_URGENCY[resource["priority"]]

    consent = False
    for index, extension in enumerate(_list(resource.get("extension"), "ServiceRequest.extension")):
        extension = _object(extension, f"ServiceRequest.extension[{index}]")
        if extension.get("url") == CONSENT_EXTENSION:
            if not isinstance(extension.get("valueBoolean"), bool):
                raise _bad(f"ServiceRequest.extension[{index}].valueBoolean", "must be true or false")
            consent = extension["valueBoolean"]

    data: dict[str, Any] = {
        "person": person,
        "source": sources.pop(),
        "needs": needs,
        "needs_text": "\n\n".join(notes) if notes else None,
        "risks": risks,
        "requested_urgency": requested,
        "consent_to_share": consent,
    }
    if resource.get("authoredOn") is not None:
        # When the referrer wrote it; the single point of access receives it now (the clocks start then).
        data["authored_at"] = _authored(resource["authoredOn"])
    try:
        return ReferralIn.model_validate(data)
    except ValidationError as error:
        raise _validation_problem(error) from None
