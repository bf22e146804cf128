"""FHIR's result parameters and the unknown-parameter rule as pure functions (shared/fhir_results.py):
the element facts are current, a subset is marked and keeps what FHIR says must stay, a value
FHIR does not define is refused by name, and `_summary=count` / `_total=none` shape a Bundle."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.fhir_results import (
    RESULT_PARAMETERS,
    SHAPED_TYPES,
    SUMMARY_VALUES,
    TOTAL_VALUES,
    ResultParameterError,
    ResultShape,
    element_facts,
    result_shape,
    shape_answer,
    shape_resource,
    unknown_parameters,
)
from shared.fhir_terms import SUBSETTED_TAG
from tests.fhir_conformance import valid
from tools import fhir_elements

SERVICE_REQUEST: dict[str, Any] = {
    "resourceType": "ServiceRequest",
    "id": "sr-1",
    "meta": {
        "versionId": "2",
        "profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-ServiceRequest"],
    },
    "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">A referral</div>'},
    "status": "active",
    "intent": "order",
    "priority": "urgent",
    "subject": {"reference": "Patient/p-1"},
    "authoredOn": "2026-01-05T10:00:00Z",
    "note": [{"text": "Low mood for six weeks"}],
    "modifierExtension": [{"url": "https://example.org/x", "valueBoolean": True}],
}


def test_the_element_facts_are_current() -> None:
    assert fhir_elements.main([]) == 0, "run: python -m tools.fhir_elements --write"


def test_every_shaped_type_has_its_facts_and_mandatory_elements_are_summary_or_identity() -> None:
    facts = element_facts()
    assert set(SHAPED_TYPES) <= set(facts)
    assert facts["ServiceRequest"]["mandatory"] == {"status", "intent", "subject"}
    assert {"status", "subject", "priority", "authoredOn"} <= facts["ServiceRequest"]["summary"]
    assert "note" not in facts["ServiceRequest"]["summary"]


def test_summary_true_keeps_summary_and_mandatory_elements_marked_without_profile() -> None:
    shaped = shape_resource(SERVICE_REQUEST, result_shape([("_summary", "true")], "ServiceRequest"))
    assert "note" not in shaped and "text" not in shaped
    assert {"status", "intent", "subject", "priority", "authoredOn", "modifierExtension"} <= set(shaped)
    assert shaped["meta"] == {"versionId": "2", "tag": [SUBSETTED_TAG]}
    valid(shaped)
    assert "profile" in SERVICE_REQUEST["meta"], "the resource given is not changed"


def test_summary_text_and_data() -> None:
    text = shape_resource(SERVICE_REQUEST, result_shape([("_summary", "text")], "ServiceRequest"))
    assert set(text) == {
        "resourceType",
        "id",
        "meta",
        "text",
        "status",
        "intent",
        "subject",
        "modifierExtension",
    }
    data = shape_resource(SERVICE_REQUEST, result_shape([("_summary", "data")], "ServiceRequest"))
    assert "text" not in data and data["note"] == SERVICE_REQUEST["note"]
    whole = shape_resource(SERVICE_REQUEST, result_shape([("_summary", "false")], "ServiceRequest"))
    assert whole is SERVICE_REQUEST


def test_elements_keep_what_is_asked_and_what_must_stay() -> None:
    shape = result_shape([("_elements", "ServiceRequest.note, priority")], "ServiceRequest")
    assert shape.elements == {"note", "priority"}
    shaped = shape_resource(SERVICE_REQUEST, shape)
    assert set(shaped) == {
        "resourceType", "id", "meta", "note", "priority", "status", "intent", "subject", "modifierExtension",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ([("_summary", "some")], "_summary"),
        ([("_summary", "true"), ("_summary", "false")], "_summary"),
        ([("_total", "all")], "_total"),
        ([("_pretty", "yes")], "_pretty"),
        ([("_elements", "a.b.c")], "_elements"),
        ([("_elements", "Patient.name")], "_elements"),  # a prefix other than the type searched
        ([("_elements", "note"), ("_summary", "true")], "_elements"),
        ([("_elements", "")], "_elements"),
    ],
)
def test_a_value_fhir_does_not_define_is_refused_by_name(params: list[tuple[str, str]], named: str) -> None:
    with pytest.raises(ResultParameterError) as refused:
        result_shape(params, "ServiceRequest")
    assert refused.value.parameter == named


def _bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }


def test_count_and_total_none_and_an_ignored_parameter_on_a_bundle() -> None:
    bundle = _bundle([SERVICE_REQUEST, {**SERVICE_REQUEST, "id": "sr-2"}])
    counted = valid(shape_answer(bundle, result_shape([("_summary", "count")], "ServiceRequest")))
    assert counted["total"] == 2 and "entry" not in counted
    untotalled = valid(shape_answer(bundle, ResultShape(total="none"), ignored=["colour"]))
    assert "total" not in untotalled
    matches = [e for e in untotalled["entry"] if e["search"]["mode"] == "match"]
    outcome = [e for e in untotalled["entry"] if e["search"]["mode"] == "outcome"]
    assert [m["resource"]["id"] for m in matches] == ["sr-1", "sr-2"]
    assert [i["expression"] for i in outcome[0]["resource"]["issue"]] == [["colour"]]
    assert outcome[0]["resource"]["issue"][0]["details"]["coding"][0]["code"] == "MSG_PARAM_UNKNOWN"


def test_unknown_parameters_are_named_once_in_order() -> None:
    kept, unknown = unknown_parameters(
        [("status", "active"), ("colour", "blue"), ("size", "l"), ("colour", "red")], frozenset({"status"})
    )
    assert kept == [("status", "active")] and unknown == ["colour", "size"]


_values = st.sampled_from(["true", "false", "text", "data", "count", "none", "estimate", "accurate", "", "x"])


@given(
    summary=st.one_of(st.none(), _values),
    total=st.one_of(st.none(), _values),
    pretty=st.one_of(st.none(), _values),
    elements=st.one_of(
        st.none(), st.lists(st.sampled_from(["status", "note", "priority", "Bad", "a.b"]), min_size=1)
    ),
)
def test_any_result_parameters_are_taken_or_refused_never_anything_else(
    summary: str | None, total: str | None, pretty: str | None, elements: list[str] | None
) -> None:
    params = [
        (name, value)
        for name, value in (("_summary", summary), ("_total", total), ("_pretty", pretty))
        if value is not None
    ]
    if elements is not None:
        params.append(("_elements", ",".join(elements)))
    assert {name for name, _ in params} <= RESULT_PARAMETERS
    try:
        shape = result_shape(params, "ServiceRequest")
    except ResultParameterError as refused:
        assert refused.parameter in {name for name, _ in params}
        return
    assert shape.summary in (None, *SUMMARY_VALUES) and shape.total in (None, *TOTAL_VALUES)
    shaped = shape_resource(SERVICE_REQUEST, shape)
    # Whatever was asked, the answer identifies the resource, keeps what is mandatory and modifying,
    # and says when it is a part.
    assert {"resourceType", "id", "status", "intent", "subject", "modifierExtension"} <= set(shaped)
    assert (SUBSETTED_TAG in shaped["meta"].get("tag", [])) == shape.subsets
    assert ("profile" in shaped["meta"]) == (not shape.subsets)
    valid(shaped)
