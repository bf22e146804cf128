"""An incoming FHIR R4 (UK Core) ServiceRequest, with its contained Patient and RiskAssessments,
parsed into the `ReferralIn` triage's native intake takes, as pure functions (no I/O).

The resource is checked structurally here (fhir.resources is a test-only dependency) before
`ReferralIn` validates the values: a refusal is a `Problem` the API answers as an OperationOutcome
(422 naming the element, or 403 when the requester is not the caller's own organisation), and it
never echoes what was sent. `element_for` maps a native field back to the element it came from,
for this parser's validation errors and for the API's refusals of the native intake alike.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from services.triage.domain import Need, Risk, Source
from services.triage.fhir.terms import (
    CHARITY_SYSTEM,
    CONSENT_EXTENSION,
    DECIDED_BY_TRIAGE,
    KEPT_ELEMENTS,
    MAPPED_ELEMENTS,
    MODIFIER_ELEMENTS,
    NEED_CODES,
    PATIENT_MAPPED_ELEMENTS,
    PATIENT_NEVER_DROPPED,
    REFERRAL_SYSTEM,
    REQUESTED_URGENCY,
    RISK_CODES,
    SDS_USER_SYSTEM,
    SEX_FROM_GENDER,
    SOURCE_CODES,
    SOURCE_OF_SERVICE_REQUEST_EXTENSION,
)
from services.triage.schemas import ReferralIn
from shared.errors import Problem
from shared.fhir import invalid
from shared.fhir_terms import NHS_NUMBER_SYSTEM, ODS_SYSTEM
from shared.terminology import SNOMED_CT, translate

_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$")
_URI = re.compile(r"^(https?://|urn:)[\x21-\x7e]{1,250}$")
_IDENTIFIER_VALUE = re.compile(r"^[\x20-\x7e]{1,128}$")
MAX_PARTNER_IDENTIFIERS = 10
PATIENT_ELEMENT = "ServiceRequest.contained[Patient]"

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


def _suite_codes(concept: Any, system: str, element: str, *, refuse_unmapped: bool = False) -> list[str]:
    """The suite's codes (in `system`) a CodeableConcept carries: its own codings from `system`,
    else its SNOMED CT codings translated by the published ConceptMap. A SNOMED CT code with no
    map is refused when `refuse_unmapped` (the concept means nothing else), else left alone."""
    own = _codes(concept, system, element)
    if own:
        return list(dict.fromkeys(own))
    snomed = _codes(concept, SNOMED_CT, element)
    translated: list[str] = []
    for code in snomed:
        translated.extend(t for t in translate(SNOMED_CT, code, system) if t not in translated)
    if snomed and not translated and refuse_unmapped:
        raise invalid(
            f"{element} has a SNOMED CT code the suite has no map for (its ConceptMaps are at "
            f"/fhir/ConceptMap); add a coding from {system}",
            status=422,
            code="code-invalid",
        )
    return translated


def _requester(
    resource: dict[str, Any], contained: dict[str, dict[str, Any]], caller_organisation: str
) -> None:
    """The requester is the caller's own organisation (nobody refers on another's behalf): an
    Organization by its ODS code or charity number, or a contained PractitionerRole (the referring
    clinician's SDS user and role profile ids) at that organisation."""
    requester = resource.get("requester")
    if requester is None:
        raise _required("ServiceRequest.requester")
    requester = _object(requester, "ServiceRequest.requester")
    if isinstance(requester.get("reference"), str):
        role = _local(requester, "ServiceRequest.requester", contained, "PractitionerRole")
        element = "ServiceRequest.contained[PractitionerRole]"
        organisation = _object(
            _object(role.get("organization"), f"{element}.organization").get("identifier"),
            f"{element}.organization.identifier",
        )
        _identifier_of(role.get("practitioner"), f"{element}.practitioner", SDS_USER_SYSTEM, required=False)
        for index, item in enumerate(_list(role.get("identifier"), f"{element}.identifier")):
            _identifier_of({"identifier": item}, f"{element}.identifier[{index}]", None, required=False)
        where = f"{element}.organization.identifier"
    else:
        organisation = _object(requester.get("identifier"), "ServiceRequest.requester.identifier")
        where = "ServiceRequest.requester.identifier"
    if organisation.get("system") not in (ODS_SYSTEM, CHARITY_SYSTEM):
        raise invalid(
            f"{where}.system must be the ODS code or charity number system",
            status=422,
            code="code-invalid",
        )
    code = _string(organisation.get("value"), f"{where}.value")
    if code.strip().upper() != caller_organisation.upper():
        raise Problem(
            403,
            "Forbidden",
            f"{where} must be the calling organisation",
            type_slug="forbidden",
            fhir_code="forbidden",
        )


def _identifier_of(ref: Any, element: str, system: str | None, *, required: bool) -> str | None:
    """The identifier value of a logical reference, checked for shape (and system, if given)."""
    if ref is None:
        if required:
            raise _required(element)
        return None
    item = _object(_object(ref, element).get("identifier"), f"{element}.identifier")
    if system is not None and item.get("system") != system:
        raise invalid(f"{element}.identifier.system must be {system}", status=422, code="code-invalid")
    if not isinstance(item.get("system"), str) or not _URI.match(item["system"]):
        raise _bad(f"{element}.identifier.system", "must be an absolute URI of at most 256 characters")
    value = item.get("value")
    if not isinstance(value, str) or not _IDENTIFIER_VALUE.match(value):
        raise _bad(f"{element}.identifier.value", "must be 1 to 128 printable ASCII characters")
    return value


def _patient_elements(patient: dict[str, Any], *, lenient: bool) -> list[str]:
    """The contained Patient's elements the suite does not read: refused by name, or (lenient)
    listed as dropped; a modifier or a recorded death is refused even when lenient."""
    dropped = []
    for name in patient:
        if name in PATIENT_MAPPED_ELEMENTS:
            continue
        element = f"{PATIENT_ELEMENT}.{name}"
        if name in PATIENT_NEVER_DROPPED or not lenient:
            raise invalid(
                f"{element} is not an element the suite takes on the person"
                + (
                    ""
                    if name in PATIENT_NEVER_DROPPED
                    else "; send `Prefer: handling=lenient` to have it dropped with a warning"
                ),
                status=422,
                code="not-supported",
            )
        dropped.append(element)
    return dropped


@dataclass(frozen=True)
class PartnerElements:
    """What of a partner's ServiceRequest is kept as sent (returned on every read beside what the
    suite made of it), and what `Prefer: handling=lenient` let through dropped, by element."""

    kept: dict[str, Any]
    dropped: list[str]


def partner_elements(resource: Any, *, lenient: bool = False) -> PartnerElements:
    """Sort every element of an incoming ServiceRequest: read into the referral (MAPPED), kept as
    sent (KEPT, plus the partner's own codings and extensions), or refused by name (422) — unless
    `lenient`, when refusable ones are dropped and listed. Modifiers are refused even then."""
    if not isinstance(resource, dict):
        raise _bad("resourceType", "must be ServiceRequest")
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for name in resource:
        element = f"ServiceRequest.{name}"
        if name in MODIFIER_ELEMENTS:
            raise invalid(
                f"{element} is not supported (it would change the meaning of the rest)",
                status=422,
                code="not-supported",
            )
        if name in KEPT_ELEMENTS or (name.startswith("_") and name[1:] in KEPT_ELEMENTS | MAPPED_ELEMENTS):
            # Kept as sent; `_x` is FHIR JSON's id and extensions of the primitive x.
            kept[name] = resource[name]
        elif name in MAPPED_ELEMENTS:
            continue
        else:
            why = DECIDED_BY_TRIAGE.get(name, "is not an element the suite takes (FHIR R4 ServiceRequest)")
            if not lenient:
                raise invalid(
                    f"{element}: {why}; send `Prefer: handling=lenient` to have it dropped with a warning",
                    status=422,
                    code="not-supported" if name in DECIDED_BY_TRIAGE else "structure",
                )
            dropped.append(element)
    for item in _list(resource.get("contained"), "ServiceRequest.contained"):
        if isinstance(item, dict) and item.get("resourceType") == "Patient":
            dropped += _patient_elements(item, lenient=lenient)
    # The partner's own codings and extensions, returned as sent beside the suite's.
    for name in ("category", "reasonCode"):
        if resource.get(name):
            kept[name] = resource[name]
    extensions = [
        e
        for e in _list(resource.get("extension"), "ServiceRequest.extension")
        if isinstance(e, dict) and e.get("url") != CONSENT_EXTENSION
    ]
    if extensions:
        kept["extension"] = extensions
    requester = resource.get("requester")
    if isinstance(requester, dict) and isinstance(requester.get("reference"), str):
        roles = [
            c
            for c in _list(resource.get("contained"), "ServiceRequest.contained")
            if isinstance(c, dict)
            and c.get("resourceType") == "PractitionerRole"
            and "#" + str(c.get("id")) == requester["reference"]
        ]
        if roles:
            role = {k: v for k, v in roles[0].items() if k != "id"}
            kept["requester"] = {"practitionerRole": role, "display": requester.get("display")}
    return PartnerElements(kept=kept, dropped=dropped)


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
        if kind not in ("Patient", "RiskAssessment", "PractitionerRole"):
            raise invalid(
                f"{element}: only a Patient, RiskAssessments and the requester's PractitionerRole "
                "may be contained",
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


def referral_from_service_request(
    resource: Any, caller_organisation: str, *, lenient: bool = False
) -> ReferralIn:
    """An incoming ServiceRequest as the referral the native intake takes; a Problem (422,
    OperationOutcome naming the element, or 403 for someone else's requester) if it is not one.
    `lenient` (`Prefer: handling=lenient`) lets elements the suite would refuse through, dropped;
    `partner_elements` says which."""
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

    partner_elements(resource, lenient=lenient)  # refused here so nothing is stored
    contained = _contained(resource)
    _requester(resource, contained, caller_organisation)
    partner_identifiers(resource)  # checked here so any refusal comes before anything is stored
    if resource.get("subject") is None:
        raise _required("ServiceRequest.subject")
    person = _person(_local(resource["subject"], "ServiceRequest.subject", contained, "Patient"))

    sources: set[Source] = set()
    for index, concept in enumerate(_list(resource.get("category"), "ServiceRequest.category")):
        # A category may say other things too (the kind of request); those are kept, not refused.
        element = f"ServiceRequest.category[{index}]"
        sources.update(
            _enum(Source, c, element, SOURCE_CODES) for c in _suite_codes(concept, SOURCE_CODES, element)
        )
    for index, extension in enumerate(_list(resource.get("extension"), "ServiceRequest.extension")):
        element = f"ServiceRequest.extension[{index}]"
        if _object(extension, element).get("url") != SOURCE_OF_SERVICE_REQUEST_EXTENSION:
            continue
        concept = extension.get("valueCodeableConcept")
        if concept is None:
            raise _required(f"{element}.valueCodeableConcept")
        codes = _suite_codes(concept, SOURCE_CODES, f"{element}.valueCodeableConcept", refuse_unmapped=True)
        sources.update(_enum(Source, c, element, SOURCE_CODES) for c in codes)
    if not sources:
        raise invalid(
            "the referral source is needed: the UK Core SourceOfServiceRequest extension (SNOMED CT) "
            f"or a ServiceRequest.category coding from {SOURCE_CODES}",
            status=422,
            code="required",
        )
    if len(sources) > 1:
        raise _bad("ServiceRequest.category", "names more than one referral source")

    needs = []
    for index, concept in enumerate(_list(resource.get("reasonCode"), "ServiceRequest.reasonCode")):
        element = f"ServiceRequest.reasonCode[{index}]"
        codes = _suite_codes(concept, NEED_CODES, element, refuse_unmapped=True)
        if not codes:
            raise invalid(
                f"{element} needs a SNOMED CT coding the suite maps (ConceptMap/snomed-to-cmh-need) "
                f"or a coding from {NEED_CODES}",
                status=422,
                code="code-invalid",
            )
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
