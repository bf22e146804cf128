"""Triage's native records rendered as FHIR R4 (UK Core) resources, as pure functions (no I/O): a
referral as a ServiceRequest, its triage as a Task (with the identity-review flag when the NHS
number matched someone whose details disagree), each decision as a Provenance, and the person as a
Patient.

What leaves here is what a partner's system reads to act on a referral, so every element is built
from the records as stored, empty elements are dropped (FHIR forbids them), and an identity review
names only the kinds of detail that disagree, never the values on file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from contracts.vocabulary import PRIORITY_LABELS
from services.triage.fhir.identifiers import organisation_identifier
from services.triage.fhir.terms import (
    AWAITING_TRIAGE,
    CLIENT_SYSTEM,
    CONSENT_EXTENSION,
    DECISION_ACTIVITY_CODES,
    DIRECTORY_SERVICE_SYSTEM,
    END_USER_SYSTEM,
    FHIR_GENDER,
    FHIR_PRIORITY,
    IDENTITY_REVIEW_CODE,
    IDENTITY_REVIEW_EXTENSION,
    IDENTITY_REVIEW_REASON_CODES,
    KEPT_ELEMENTS,
    NEED_CODES,
    NHS_NUMBER_VERIFICATION_EXTENSION,
    NHS_NUMBER_VERIFICATION_SYSTEM,
    NOT_DECISIONS,
    NOT_TRACED,
    PATIENT_PROFILE,
    PRIORITY_CODES,
    PRIORITY_EXTENSION,
    PROVENANCE_AGENT_TYPES,
    REFERRAL_SYSTEM,
    REQUESTER_ID,
    RISK_ASSESSMENT_ID,
    RISK_CODES,
    ROUTE_CODES,
    SERVICE_REQUEST_PROFILE,
    SERVICE_REQUESTED_CODES,
    SOURCE_CODES,
    SOURCE_OF_SERVICE_REQUEST_EXTENSION,
    SPA_REFERRAL_CODE,
    SPA_REFERRAL_TEXT,
    TASK_CODES,
    TASK_PROFILE,
    TRIAGE_INPUT_CODES,
    TRIAGE_OUTCOME_CODES,
    TRIAGE_OUTPUT_CODES,
    TRIAGE_TASK_CODE,
)
from services.triage.models import Decision, Person, Referral
from shared.fhir_terms import (
    NHS_NUMBER_SYSTEM,
    TRIAGE_TASK_STATUS,
    coding,
    identifier,
    instant,
    reference,
    service_request_status,
)
from shared.terminology import SNOMED_CT, equivalent_in, translate

# The displays of the identity-review-reason codes (the Task's inputs and note name these kinds).
_IDENTITY_FIELDS = {
    "birth_date": "Date of birth differs",
    "name": "Name differs",
    "postcode": "Postcode differs",
}

_DISPLAYS = {"gp": "GP", "ae": "A&E", "vcfse": "VCFSE organisation", "ocd": "OCD"}


def _words(code: str) -> str:
    return _DISPLAYS.get(code) or code.replace("_", " ").replace("-", " ").capitalize()


def _utc(moment: datetime) -> str:
    return instant(moment.astimezone(UTC))


def _drop_empty(resource: dict[str, Any]) -> dict[str, Any]:
    # FHIR forbids empty elements and nulls.
    return {key: value for key, value in resource.items() if value not in (None, [], {}, "")}


def _latest(decisions: Sequence[Decision]) -> Decision | None:
    """The latest decision about the referral: the intake of a screened referral is not one (it
    awaits triage); a re-access routed straight back is."""
    made = [d for d in decisions if d.action not in NOT_DECISIONS]
    return max(made, key=lambda d: d.seq or 0) if made else None


def _details(referral: Referral) -> dict[str, Any]:
    return json.loads(referral.details) if referral.details else {}


def _directory_service(service_id: str) -> dict[str, Any]:
    # Partner services live in the directory, not here: a logical reference by their id.
    return {"type": "HealthcareService", "identifier": identifier(DIRECTORY_SERVICE_SYSTEM, service_id)}


def _priority_coding(priority: int) -> dict[str, str]:
    return coding(PRIORITY_CODES, str(priority), PRIORITY_LABELS[priority])


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
    rendered = _drop_empty(
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
            "status": service_request_status(
                referral.status, referral.route, referral.care_ended_at is not None
            ),
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
            "reasonCode": [_need_concept(need) for need in needs],
            "supportingInfo": [{"reference": f"#{RISK_ASSESSMENT_ID}", "type": "RiskAssessment"}]
            if risks
            else [],
            "note": [{"text": details["needs_text"]}] if details.get("needs_text") else [],
        }
    )
    return with_partner_elements(rendered, details.get("partner_elements") or {}, referral.source)


def _need_concept(need: str) -> dict[str, Any]:
    """A need as the suite's coding, with its SNOMED CT equivalent where the published map has one."""
    codings = [coding(NEED_CODES, need, _words(need))]
    snomed = equivalent_in(SNOMED_CT, NEED_CODES, need)
    if snomed is not None:
        codings.append(snomed)
    return {"coding": codings, "text": _words(need)}


def _with_suite_codings(concept: dict[str, Any], system: str) -> dict[str, Any]:
    """A partner's CodeableConcept as sent, with what the published maps add beside it: the
    suite's code for each SNOMED CT code, and the SNOMED CT equivalent of each suite code."""
    codings = [c for c in concept.get("coding", []) if isinstance(c, dict)]
    present = {(c.get("system"), c.get("code")) for c in codings}
    added: list[dict[str, str]] = []
    for item in codings:
        if not isinstance(item.get("code"), str):
            continue
        if item.get("system") == SNOMED_CT:
            added += [
                coding(system, code, _words(code)) for code in translate(SNOMED_CT, item["code"], system)
            ]
        elif item.get("system") == system:
            snomed = equivalent_in(SNOMED_CT, system, item["code"])
            added += [snomed] if snomed is not None else []
    for item in added:
        if (item["system"], item["code"]) not in present:
            present.add((item["system"], item["code"]))
            codings.append(item)
    return {**concept, "coding": codings}


def with_partner_elements(resource: dict[str, Any], kept: dict[str, Any], source: str) -> dict[str, Any]:
    """A rendered ServiceRequest with what the partner sent kept as sent: the elements the suite
    does not read, the partner's own codings (each with the suite's translation beside it), its
    extensions, and its requesting PractitionerRole. Without any, the UK Core source extension
    is added from the suite's source where SNOMED CT has an equivalent."""
    out = dict(resource)
    for name, value in kept.items():
        if name == "code":
            partner = (
                [c for c in (value.get("coding") or []) if isinstance(c, dict)]
                if isinstance(value, dict)
                else []
            )
            out["code"] = {**out["code"], "coding": out["code"]["coding"] + partner}
        elif name in KEPT_ELEMENTS or name.startswith("_"):
            out[name] = value
    if kept.get("reasonCode"):
        out["reasonCode"] = [
            _with_suite_codings(c, NEED_CODES) for c in kept["reasonCode"] if isinstance(c, dict)
        ]
    if kept.get("category"):
        concepts = [_with_suite_codings(c, SOURCE_CODES) for c in kept["category"] if isinstance(c, dict)]
        if not any(
            c.get("system") == SOURCE_CODES for concept in concepts for c in concept.get("coding", [])
        ):
            concepts.append(out["category"][0])
        out["category"] = concepts
    extensions = list(out.get("extension", [])) + list(kept.get("extension", []))
    if not any(e.get("url") == SOURCE_OF_SERVICE_REQUEST_EXTENSION for e in extensions):
        snomed = equivalent_in(SNOMED_CT, SOURCE_CODES, source)
        if snomed is not None:
            extensions.append(
                {"url": SOURCE_OF_SERVICE_REQUEST_EXTENSION, "valueCodeableConcept": {"coding": [snomed]}}
            )
    out["extension"] = extensions
    role = (kept.get("requester") or {}).get("practitionerRole")
    if role:
        out["contained"] = [*out.get("contained", []), {**role, "id": REQUESTER_ID}]
        out["requester"] = _drop_empty(
            {
                "reference": f"#{REQUESTER_ID}",
                "type": "PractitionerRole",
                "display": kept["requester"].get("display"),
            }
        )
    return out


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
                "profile": [TASK_PROFILE],
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


def _nhs_number_identifier(nhs_number: str) -> dict[str, Any]:
    """The NHS number with UK Core's verification status: the suite checks the check digit but
    does not trace numbers against PDS, so it says so ("present but not traced")."""
    return {
        "extension": [
            {
                "url": NHS_NUMBER_VERIFICATION_EXTENSION,
                "valueCodeableConcept": {"coding": [coding(NHS_NUMBER_VERIFICATION_SYSTEM, *NOT_TRACED)]},
            }
        ],
        **identifier(NHS_NUMBER_SYSTEM, nhs_number),
    }


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
                    # The person's details are versioned (If-Match on PATCH): the ETag is that version.
                    "versionId": str(person.version),
                    "lastUpdated": _utc(person.updated_at) if person.updated_at else None,
                    "profile": [PATIENT_PROFILE],
                }
            ),
            "identifier": [_nhs_number_identifier(person.nhs_number)] if person.nhs_number else [],
            "name": [name] if len(name) > 1 else [],
            "telecom": telecom,
            "gender": FHIR_GENDER.get(details.get("sex") or ""),
            "birthDate": person.birth_date.isoformat(),
            "address": [address] if len(address) > 1 else [],
        }
    )
