"""FHIR R4 (UK Core) views of triage: a referral as a ServiceRequest, its triage as a Task, each
decision as a Provenance, the person as a Patient, and an incoming ServiceRequest parsed into the
`ReferralIn` the native intake takes. Pure functions, no I/O; the API is `fhir_api`.

Split along its seams (issue 19):

- `terms`: the profiles, identifier and code systems, extensions, fixed codes, the maps between
  FHIR value sets and native ones, and the search parameters each resource answers;
- `identifiers`: organisation identifier systems, and partner identifiers as stored and searched;
- `render`: native referral, decisions and person -> ServiceRequest, Task, Provenance, Patient;
- `parse`: an incoming ServiceRequest -> `ReferralIn`, refusing (as an OperationOutcome) any
  element it cannot take, by name and without echoing the value.

Every name callers used from the single module is re-exported here, so `fhir.<name>` still works.
"""

from __future__ import annotations

from services.triage.fhir.identifiers import (
    organisation_identifier,
    organisation_system,
    partner_identifier_fragment,
    partner_value_fragment,
    with_partner_elements_kept,
    with_partner_identifiers,
)
from services.triage.fhir.parse import (
    FIELD_ELEMENTS,
    MAX_PARTNER_IDENTIFIERS,
    PATIENT_ELEMENT,
    PartnerElements,
    element_for,
    partner_elements,
    partner_identifiers,
    referral_from_service_request,
)
from services.triage.fhir.render import (
    identity_flag,
    patient,
    provenance,
    service_request,
    task_for_triage,
)
from services.triage.fhir.terms import (
    AWAITING_TRIAGE,
    CHARITY_SYSTEM,
    CLIENT_SYSTEM,
    CONSENT_EXTENSION,
    CONTROL_PARAMETERS,
    DECISION_ACTIVITY_CODES,
    DIRECTORY_SERVICE_SYSTEM,
    END_USER_SYSTEM,
    FHIR_GENDER,
    FHIR_PRIORITY,
    IDENTITY_REVIEW_CODE,
    IDENTITY_REVIEW_EXTENSION,
    IDENTITY_REVIEW_REASON_CODES,
    NEED_CODES,
    NHS_NUMBER_VERIFICATION_EXTENSION,
    NOT_DECISIONS,
    PATIENT_CHAIN_PARAMETERS,
    PATIENT_PROFILE,
    PRIORITY_CODES,
    PRIORITY_EXTENSION,
    PROVENANCE_AGENT_TYPES,
    REFERRAL_SYSTEM,
    REQUESTED_URGENCY,
    RISK_ASSESSMENT_ID,
    RISK_CODES,
    ROUTE_CODES,
    SEARCH_PARAMETERS,
    SERVICE_REQUEST_PROFILE,
    SERVICE_REQUESTED_CODES,
    SEX_FROM_GENDER,
    SOURCE_CODES,
    SPA_REFERRAL_CODE,
    SPA_REFERRAL_TEXT,
    TASK_CODES,
    TRIAGE_INPUT_CODES,
    TRIAGE_OUTCOME_CODES,
    TRIAGE_OUTPUT_CODES,
    TRIAGE_TASK_CODE,
)

__all__ = [
    "AWAITING_TRIAGE",
    "CHARITY_SYSTEM",
    "CLIENT_SYSTEM",
    "CONSENT_EXTENSION",
    "CONTROL_PARAMETERS",
    "DECISION_ACTIVITY_CODES",
    "DIRECTORY_SERVICE_SYSTEM",
    "END_USER_SYSTEM",
    "FHIR_GENDER",
    "FHIR_PRIORITY",
    "FIELD_ELEMENTS",
    "IDENTITY_REVIEW_CODE",
    "IDENTITY_REVIEW_EXTENSION",
    "IDENTITY_REVIEW_REASON_CODES",
    "MAX_PARTNER_IDENTIFIERS",
    "NEED_CODES",
    "NHS_NUMBER_VERIFICATION_EXTENSION",
    "NOT_DECISIONS",
    "PATIENT_CHAIN_PARAMETERS",
    "PATIENT_ELEMENT",
    "PATIENT_PROFILE",
    "PRIORITY_CODES",
    "PRIORITY_EXTENSION",
    "PROVENANCE_AGENT_TYPES",
    "REFERRAL_SYSTEM",
    "REQUESTED_URGENCY",
    "RISK_ASSESSMENT_ID",
    "RISK_CODES",
    "ROUTE_CODES",
    "SEARCH_PARAMETERS",
    "SERVICE_REQUESTED_CODES",
    "SERVICE_REQUEST_PROFILE",
    "SEX_FROM_GENDER",
    "SOURCE_CODES",
    "SPA_REFERRAL_CODE",
    "SPA_REFERRAL_TEXT",
    "TASK_CODES",
    "TRIAGE_INPUT_CODES",
    "TRIAGE_OUTCOME_CODES",
    "TRIAGE_OUTPUT_CODES",
    "TRIAGE_TASK_CODE",
    "PartnerElements",
    "element_for",
    "identity_flag",
    "organisation_identifier",
    "organisation_system",
    "partner_elements",
    "partner_identifier_fragment",
    "partner_identifiers",
    "partner_value_fragment",
    "patient",
    "provenance",
    "referral_from_service_request",
    "service_request",
    "task_for_triage",
    "with_partner_elements_kept",
    "with_partner_identifiers",
]
