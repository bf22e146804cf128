"""Identifiers on triage's FHIR views: which system an organisation code belongs to (ODS, or the
charity number VCFSE partners are known by), and the partner's own ServiceRequest identifiers as
they are kept inside `Referral.details` and looked for by a search or a conditional create.

The storage format and the search fragments live together here because a search matches the exact
JSON text the details were written with: change one and the other must follow.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from services.triage.fhir.terms import CHARITY_SYSTEM
from shared.fhir_terms import ODS_SYSTEM, identifier

_ODS_LIKE = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9]{3,10}$")


def organisation_system(code: str) -> str:
    """The identifier system of an organisation code: ODS for letters-and-digits codes, the
    charity number system for the all-digit codes VCFSE partners are known by."""
    return ODS_SYSTEM if _ODS_LIKE.match(code) else CHARITY_SYSTEM


def organisation_identifier(code: str) -> dict[str, str]:
    return identifier(organisation_system(code), code)


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


def with_partner_elements_kept(details_json: str, kept: dict[str, Any]) -> str:
    """`Referral.details` with the partner's elements kept as sent (other keys kept)."""
    details = json.loads(details_json)
    details["partner_elements"] = kept
    return json.dumps(details)
