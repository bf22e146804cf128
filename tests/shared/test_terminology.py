"""The suite's published terminology (shared/terminology): generated from the enums and the
hand-written maps and current; every map names only codes that exist; SNOMED CT referral sources
are members of the UK Core value set the extension is bound to; a code the maps do not place is
never translated; and every element of an R4 ServiceRequest is classified (read, kept or refused),
so nothing a partner sends can disappear without a word."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.servicerequest import ServiceRequest
from hypothesis import given
from hypothesis import strategies as st

from services.triage.fhir import partner_elements
from services.triage.fhir.terms import DECIDED_BY_TRIAGE, KEPT_ELEMENTS, MAPPED_ELEMENTS, MODIFIER_ELEMENTS
from shared import terminology
from shared.errors import Problem
from shared.fhir_terms import CMH_CODES
from shared.terminology import SNOMED_CT, TERMINOLOGY_TYPES, translate
from tools import terminology as build

ROOT = Path(__file__).resolve().parents[2]
UK_CORE_SOURCES = json.loads(
    (ROOT / "tools/terminology_data/UKCore-SourceOfServiceRequest-expansion.json").read_text()
)


def test_the_published_terminology_is_current() -> None:
    assert build.stale() == [], "run: python -m tools.terminology --write"


@pytest.mark.parametrize("kind", TERMINOLOGY_TYPES)
def test_every_resource_is_valid_fhir_with_a_unique_id_and_url(kind: str) -> None:
    resources = terminology.resources(kind)
    assert resources
    for resource in resources:
        get_fhir_model_class(kind).model_validate(resource)
    assert len({r["id"] for r in resources}) == len({r["url"] for r in resources}) == len(resources)


def _codes(system: str) -> set[str]:
    found = [cs for cs in terminology.resources("CodeSystem") if cs["url"] == system]
    return {c["code"] for c in found[0]["concept"]} if found else set()


def test_every_map_names_codes_that_exist_and_places_each_code_once() -> None:
    for concept_map in terminology.resources("ConceptMap"):
        for group in concept_map["group"]:
            for system, codes in ((group["source"], "source"), (group["target"], "target")):
                known = _codes(system)
                if not known:
                    continue  # SNOMED CT and FHIR's own systems are checked below
                named = (
                    [e["code"] for e in group["element"]]
                    if codes == "source"
                    else [t["code"] for e in group["element"] for t in e["target"]]
                )
                assert set(named) <= known, (concept_map["id"], set(named) - known)
            translating = [
                {t["code"] for t in e["target"] if t["equivalence"] in terminology.TRANSLATING}
                for e in group["element"]
            ]
            assert all(len(targets) <= 1 for targets in translating), concept_map["id"]
            assert len({e["code"] for e in group["element"]}) == len(group["element"]), concept_map["id"]


def test_snomed_referral_sources_are_in_the_uk_core_value_set() -> None:
    bound = {c["code"]: c["display"] for c in UK_CORE_SOURCES["contains"]}
    mapped = terminology.resource("ConceptMap", "snomed-to-cmh-referral-source")
    assert mapped is not None and mapped["sourceUri"] == UK_CORE_SOURCES["url"]
    for element in mapped["group"][0]["element"]:
        assert bound.get(element["code"]) == element["display"], element["code"]


def test_the_reverse_maps_invert_the_forward_maps() -> None:
    for slug in ("referral-source", "need"):
        system = CMH_CODES + slug
        for code in _codes(system):
            snomed = terminology.equivalent_in(SNOMED_CT, system, code)
            if snomed is not None:
                assert translate(SNOMED_CT, snomed["code"], system) == (code,)


@given(st.text(alphabet="0123456789", min_size=6, max_size=18))
def test_a_code_the_maps_do_not_list_is_never_translated(code: str) -> None:
    listed = {
        e["code"] for m in terminology.resources("ConceptMap") for g in m["group"] for e in g["element"]
    }
    if code not in listed:
        for slug in ("referral-source", "need"):
            assert translate(SNOMED_CT, code, CMH_CODES + slug) == ()


def _r4_elements() -> set[str]:
    names = {field.alias or name for name, field in ServiceRequest.model_fields.items()}
    return {n for n in names if not n.startswith("_") and n != "fhir_comments"} | {"resourceType"}


def test_every_r4_service_request_element_is_read_kept_or_refused_by_name() -> None:
    classes = [MAPPED_ELEMENTS, KEPT_ELEMENTS, frozenset(DECIDED_BY_TRIAGE), MODIFIER_ELEMENTS]
    assert set().union(*classes) == _r4_elements()
    assert sum(len(c) for c in classes) == len(_r4_elements()), "an element is in two classes"


@given(
    st.sets(st.sampled_from([*sorted(_r4_elements() - MAPPED_ELEMENTS), "favouriteColour", "x"]), max_size=6)
)
def test_partner_elements_keep_or_name_every_element(names: set[str]) -> None:
    resource = {"resourceType": "ServiceRequest", **dict.fromkeys(names, "value")}
    refusable = sorted(n for n in names if n not in KEPT_ELEMENTS)
    try:
        sorted_out = partner_elements(resource)
    except Problem as problem:
        assert refusable and any(f"ServiceRequest.{n}" in problem.detail for n in refusable)
    else:
        assert not refusable and set(sorted_out.kept) == names and sorted_out.dropped == []
    if names & MODIFIER_ELEMENTS:
        with pytest.raises(Problem):
            partner_elements(resource, lenient=True)
    else:
        lenient = partner_elements(resource, lenient=True)
        assert set(lenient.kept) | {e.removeprefix("ServiceRequest.") for e in lenient.dropped} == names
