"""The codes and identifiers triage's FHIR R4 (UK Core) views speak: the profiles claimed, the
identifier and code systems, the extensions, the fixed codes, and the maps between FHIR's value
sets and triage's native ones (priority, requested urgency, gender).

Codes without a published FHIR code system (referral source, needs, risks, routes, the MHSDS
clinical response priority) use the suite's code systems under `CMH_CODES`, named here once so the
renderer, the parser, the API's searches, the gateway's CapabilityStatement and the tests name the
same URLs. Also the search parameters each resource answers. Constants only: no functions; the
maps from partners' codes are data (shared/terminology), read once.
"""

from __future__ import annotations

from services.triage.domain import RequestedUrgency
from shared.fhir_terms import CMH_CODES, CMH_EXTENSIONS, CMH_IDS, UK_CORE
from shared.terminology import REQUEST_PRIORITY, translate

# --- systems, profiles and codes ------------------------------------------------------------------

SERVICE_REQUEST_PROFILE = UK_CORE + "UKCore-ServiceRequest"
PATIENT_PROFILE = UK_CORE + "UKCore-Patient"
TASK_PROFILE = UK_CORE + "UKCore-Task"
# Patient.identifier (NHS number): UK Core's verification status (England's code system).
NHS_NUMBER_VERIFICATION_EXTENSION = UK_CORE + "Extension-UKCore-NHSNumberVerificationStatus"
NHS_NUMBER_VERIFICATION_SYSTEM = (
    "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland"
)
NOT_TRACED = ("02", "Number present but not traced")

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
# ServiceRequest.priority -> the urgency asked for, from the published ConceptMap (data, not code).
REQUESTED_URGENCY: dict[str, RequestedUrgency] = {
    code: RequestedUrgency(translate(REQUEST_PRIORITY, code, CMH_CODES + "requested-urgency")[0])
    for code in ("routine", "urgent", "asap", "stat")
}

# --- what a partner's ServiceRequest may carry ------------------------------------------------------
# Every element of an incoming ServiceRequest is one of: read into the referral (MAPPED), kept as
# sent and returned on every read (KEPT), or refused naming it (anything else, including elements
# FHIR does not define); `Prefer: handling=lenient` accepts the refusable ones with a warning
# instead. Nothing a partner sends disappears without a word.
SOURCE_OF_SERVICE_REQUEST_EXTENSION = UK_CORE + "Extension-UKCore-SourceOfServiceRequest"
PRACTITIONER_ROLE_PROFILE = UK_CORE + "UKCore-PractitionerRole"
SDS_USER_SYSTEM = "https://fhir.nhs.uk/Id/sds-user-id"
SDS_ROLE_PROFILE_SYSTEM = "https://fhir.nhs.uk/Id/sds-role-profile-id"
REQUESTER_ID = "requester"  # the contained PractitionerRole's id on read
MAPPED_ELEMENTS = frozenset(
    {
        "resourceType", "id", "meta", "contained", "extension", "identifier", "status", "intent",
        "category", "priority", "doNotPerform", "subject", "authoredOn", "requester", "reasonCode",
        "supportingInfo", "note",
    }
)  # fmt: skip
KEPT_ELEMENTS = frozenset(
    {
        "text", "language", "instantiatesCanonical", "instantiatesUri", "basedOn", "replaces",
        "requisition", "code", "orderDetail", "quantityQuantity", "quantityRatio", "quantityRange",
        "encounter", "occurrenceDateTime", "occurrencePeriod", "occurrenceTiming", "asNeededBoolean",
        "asNeededCodeableConcept", "locationCode", "locationReference", "reasonReference", "insurance",
        "specimen", "bodySite", "patientInstruction", "relevantHistory",
    }
)  # fmt: skip
# Elements that would contradict what triage decides, with why; refused (or dropped when lenient).
DECIDED_BY_TRIAGE: dict[str, str] = {
    "performer": "who provides care is triage's decision (returned on read once made)",
    "performerType": "who provides care is triage's decision (returned on read once made)",
}
# Elements that change the meaning of the rest: never ignorable, refused even when lenient.
MODIFIER_ELEMENTS = frozenset({"modifierExtension", "implicitRules"})
# The contained Patient becomes the person on file (shared by all their referrals), so nothing of
# it can be kept per referral: an element is read, or refused by name (dropped with a warning when
# lenient). Modifiers, and a death recorded, are refused even then: never silently ignored.
PATIENT_MAPPED_ELEMENTS = frozenset(
    {"resourceType", "id", "meta", "identifier", "name", "telecom", "gender", "birthDate", "address"}
)
PATIENT_NEVER_DROPPED = MODIFIER_ELEMENTS | {"active", "deceasedBoolean", "deceasedDateTime"}
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
