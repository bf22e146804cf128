"""One check for every FHIR resource a test receives: valid R4 (the fhir.resources models refuse
unknown elements, bad codes and formats) and true to the UK Core profile it claims.

The UK Core checks read tests/fixtures/uk_core_profiles.json (the profiles' differentials, copied
from HL7 UK's UK Core 2.0.0 with its attribution): a resource whose type the gateway's
CapabilityStatement serves under a UK Core profile must claim it in `meta.profile` when served; an element a
profile caps at one (extension slices) appears at most once; identifiers carry system and value;
the NHS number's verification status is a code of the value set its extension is bound to
(required binding). What UK Core leaves as must-support only is not checked here."""

from __future__ import annotations

import json
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

UK_CORE = "https://fhir.hl7.org.uk/StructureDefinition/"
PROFILES = Path(__file__).parent / "fixtures" / "uk_core_profiles.json"
VERIFICATION_EXTENSION = UK_CORE + "Extension-UKCore-NHSNumberVerificationStatus"
VERIFICATION_CODES = {
    "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland": {
        f"0{n}" for n in range(1, 8)
    },
}


@cache
def _profiles() -> dict[str, Any]:
    return dict(json.loads(PROFILES.read_text())["profiles"])


@cache
def claimed_profiles() -> dict[str, str]:
    """Resource type -> the UK Core profile the gateway's CapabilityStatement claims for it."""
    from gateway.fhir import SUPPORTED

    return {kind: spec["profile"] for kind, spec in SUPPORTED.items() if spec["profile"]}


def _check_uk_core(resource: dict[str, Any], *, contained: bool = False) -> None:
    kind = resource["resourceType"]
    profile = claimed_profiles().get(kind)
    meta = resource.get("meta", {})
    subsetted = any(tag.get("code") == "SUBSETTED" for tag in meta.get("tag", []))
    # Claimed when served whole (a body a test sends has no meta; a part claims nothing).
    if profile is not None and not contained and meta and not subsetted:
        assert profile in _profiles(), f"{profile} is not a UK Core profile"
        assert profile in meta.get("profile", []), f"{kind} does not claim {profile}"
    urls = Counter(e.get("url") for e in resource.get("extension", []))
    uk_core_twice = [url for url, n in urls.items() if str(url).startswith(UK_CORE) and n > 1]
    assert not uk_core_twice, f"{kind} repeats UK Core extensions capped at one: {uk_core_twice}"
    for item in resource.get("identifier", []):
        assert item.get("system") and item.get("value"), f"{kind}.identifier needs system and value"
        for extension in item.get("extension", []):
            if extension["url"] == VERIFICATION_EXTENSION:
                for coding in extension["valueCodeableConcept"]["coding"]:
                    assert coding["code"] in VERIFICATION_CODES.get(coding["system"], set()), coding
    for inner in resource.get("contained", []):
        _check_uk_core(inner, contained=True)
    for entry in resource.get("entry", []):
        _check_uk_core(entry["resource"])


def valid(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource, once it is valid FHIR R4 and true to its UK Core profile claims."""
    model = get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    assert model.id == resource.get("id")
    _check_uk_core(resource)
    return resource
