"""FHIR's result parameters (`_summary`, `_elements`, `_total`, `_pretty`, FHIR R4 search
§3.1.1.5) and the `Prefer: handling` rule for search parameters the server does not know, as pure
functions over FHIR JSON. The gateway applies them once to every `/fhir` answer
(`gateway.fhir.FhirRoute`), so no service answers them route by route.

Which elements are summary and which mandatory is data, generated from the FHIR element
definitions by `tools/fhir_elements.py` into `fhir_elements.json` beside this module.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from shared.errors import OUTCOME_CODES, OUTCOME_DISPLAYS
from shared.fhir_terms import SUBSETTED_TAG

ELEMENTS_FILE = Path(__file__).with_name("fhir_elements.json")
# Every resource type the suite serves (and the CapabilityStatement, the terminology it publishes).
SHAPED_TYPES: tuple[str, ...] = (
    "CapabilityStatement", "CarePlan", "CodeSystem", "ConceptMap", "EpisodeOfCare", "HealthcareService",
    "Location", "Organization", "Patient", "PractitionerRole", "Provenance", "ServiceRequest",
    "Subscription", "Task", "ValueSet",
)  # fmt: skip
RESULT_PARAMETERS = frozenset({"_summary", "_elements", "_total", "_pretty"})
SUMMARY_VALUES = ("true", "false", "text", "data", "count")
TOTAL_VALUES = ("none", "estimate", "accurate")
_ELEMENT = re.compile(r"^(?:[A-Z][A-Za-z]{1,63}\.)?[a-z][A-Za-z0-9]{0,63}$")
_ALWAYS = ("resourceType", "id", "meta")  # every subset keeps what identifies it


class ResultParameterError(ValueError):
    """A result parameter with a value FHIR does not define; `parameter` names it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True)
class ResultShape:
    """What the caller asked the answer to look like."""

    summary: str | None = None
    elements: frozenset[str] | None = None
    total: str | None = None
    pretty: bool = False

    @property
    def subsets(self) -> bool:
        return self.elements is not None or self.summary in ("true", "text", "data")

    @property
    def plain(self) -> bool:
        return not self.subsets and self.summary != "count" and self.total != "none" and not self.pretty


@cache
def element_facts() -> dict[str, dict[str, frozenset[str]]]:
    data = json.loads(ELEMENTS_FILE.read_text())["types"]
    return {
        resource_type: {kind: frozenset(names) for kind, names in facts.items()}
        for resource_type, facts in data.items()
    }


def _one(params: Sequence[tuple[str, str]], name: str) -> str | None:
    values = [value.strip() for key, value in params if key == name]
    if len(values) > 1:
        raise ResultParameterError(name, f"{name} may be given once")
    return values[0] if values else None


def result_shape(params: Sequence[tuple[str, str]], resource_type: str | None) -> ResultShape:
    """The shape the result parameters ask for; `ResultParameterError` for a value FHIR does not
    define (never guessed)."""
    summary = _one(params, "_summary")
    if summary is not None and summary not in SUMMARY_VALUES:
        raise ResultParameterError("_summary", "_summary is one of " + ", ".join(SUMMARY_VALUES))
    total = _one(params, "_total")
    if total is not None and total not in TOTAL_VALUES:
        raise ResultParameterError("_total", "_total is one of " + ", ".join(TOTAL_VALUES))
    pretty = _one(params, "_pretty")
    if pretty is not None and pretty not in ("true", "false"):
        raise ResultParameterError("_pretty", "_pretty is true or false")
    listed = _one(params, "_elements")
    elements: frozenset[str] | None = None
    if listed is not None:
        if summary not in (None, "false"):
            raise ResultParameterError("_elements", "_elements and _summary cannot be combined")
        names = [part.strip() for part in listed.split(",")]
        if not all(_ELEMENT.match(name) for name in names):
            raise ResultParameterError(
                "_elements", "_elements lists top-level element names, comma-separated"
            )
        prefixed = [name.partition(".") for name in names]
        if any(sep and prefix != resource_type for prefix, sep, _ in prefixed):
            raise ResultParameterError("_elements", "an _elements prefix must be the resource type searched")
        elements = frozenset(rest if sep else prefix for prefix, sep, rest in prefixed)
    return ResultShape(summary=summary, elements=elements, total=total, pretty=pretty == "true")


def shape_resource(resource: dict[str, Any], shape: ResultShape) -> dict[str, Any]:
    """The resource as the shape asks: a subset is tagged SUBSETTED and claims no profile (a part
    cannot meet one, FHIR R4 §3.1.1.5.7); mandatory and modifier elements are always kept."""
    if not shape.subsets:
        return resource
    facts = element_facts().get(str(resource.get("resourceType")))
    if facts is None:
        return resource  # not a type the facts cover: whole, unmarked
    if shape.summary == "data":
        kept = {name: value for name, value in resource.items() if name != "text"}
    else:
        if shape.elements is not None:
            wanted = shape.elements | facts["mandatory"]
        elif shape.summary == "text":
            wanted = facts["mandatory"] | {"text"}
        else:  # true
            wanted = facts["summary"] | facts["mandatory"]
        # A modifier changes what the rest means: a part without it could be read wrongly.
        wanted |= {"modifierExtension"}
        wanted |= {f"_{name}" for name in wanted}  # a primitive's own extensions go with it
        kept = {name: value for name, value in resource.items() if name in _ALWAYS or name in wanted}
    meta = {key: value for key, value in dict(kept.get("meta") or {}).items() if key != "profile"}
    tags = [tag for tag in meta.get("tag", []) if tag.get("code") != SUBSETTED_TAG["code"]]
    meta["tag"] = [*tags, SUBSETTED_TAG]
    kept["meta"] = meta
    return kept


def outcome_entry(ignored: Sequence[str]) -> dict[str, Any]:
    """The Bundle entry (search mode `outcome`) naming each search parameter left out under
    `Prefer: handling=lenient`."""
    return {
        "resource": {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "warning",
                    "code": "not-supported",
                    "details": {
                        "coding": [
                            {
                                "system": OUTCOME_CODES,
                                "code": "MSG_PARAM_UNKNOWN",
                                "display": OUTCOME_DISPLAYS["MSG_PARAM_UNKNOWN"],
                            }
                        ],
                        "text": "Search parameter not supported",
                    },
                    "diagnostics": f"search parameter {name} is not supported here and was ignored "
                    "(Prefer: handling=lenient)",
                    "expression": [name],
                }
                for name in ignored
            ],
        },
        "search": {"mode": "outcome"},
    }


def shape_answer(body: dict[str, Any], shape: ResultShape, ignored: Sequence[str] = ()) -> dict[str, Any]:
    """A whole answer (a searchset Bundle or one resource) as the caller asked for it."""
    if body.get("resourceType") != "Bundle" or body.get("type") != "searchset":
        return shape_resource(body, shape)
    bundle = dict(body)
    entries = [dict(entry) for entry in bundle.get("entry", [])]
    if shape.summary == "count":
        entries = [entry for entry in entries if entry.get("search", {}).get("mode") == "outcome"]
    for entry in entries:
        if entry.get("search", {}).get("mode") == "match" and isinstance(entry.get("resource"), dict):
            entry["resource"] = shape_resource(entry["resource"], shape)
    if ignored:
        entries.append(outcome_entry(ignored))
    if entries:
        bundle["entry"] = entries
    else:
        bundle.pop("entry", None)  # FHIR JSON has no empty arrays
    if shape.total == "none":
        bundle.pop("total", None)
    return bundle


def unknown_parameters(
    params: Sequence[tuple[str, str]], known: frozenset[str]
) -> tuple[list[tuple[str, str]], list[str]]:
    """The parameters to send on and the names of those the server does not know (in order,
    each once)."""
    kept, unknown = [], []
    for name, value in params:
        if name in known:
            kept.append((name, value))
        elif name not in unknown:
            unknown.append(name)
    return kept, unknown
