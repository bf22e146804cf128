"""CMH Suite's published terminology: its own CodeSystems and ValueSets, and the ConceptMaps to and
from partners' codes (SNOMED CT, FHIR request priority), as FHIR R4 JSON beside this module.

The JSON is generated (`python -m tools.terminology --write`) from the enums that define the codes
and the hand-written maps in tools/terminology_data/maps.yaml; a test fails when it is stale. The
gateway serves these resources at `/fhir/CodeSystem`, `/fhir/ValueSet` and `/fhir/ConceptMap`;
triage's FHIR intake translates partners' codings with `translate`, and its renderer adds the
SNOMED CT equivalent of its own codes with `equivalent_in`. Read once, then held in memory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

DATA_DIR = Path(__file__).parent
SNOMED_CT = "http://snomed.info/sct"
REQUEST_PRIORITY = "http://hl7.org/fhir/request-priority"
CMH_VALUE_SETS = "https://cmh-suite.nhs.uk/ValueSet/"
CMH_CONCEPT_MAPS = "https://cmh-suite.nhs.uk/ConceptMap/"
PUBLISHER = "CMH Suite"
TERMINOLOGY_VERSION = "1.0.0"
TERMINOLOGY_TYPES = ("CodeSystem", "ValueSet", "ConceptMap")
# Equivalences that translate a code at intake (the suite's code means the same or more).
TRANSLATING = frozenset({"equivalent", "equal", "wider", "subsumes"})


@cache
def _resources() -> Mapping[str, Mapping[str, dict[str, Any]]]:
    by_type: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in TERMINOLOGY_TYPES}
    for path in sorted(DATA_DIR.glob("*.json")):
        resource = json.loads(path.read_text())
        by_type[resource["resourceType"]][resource["id"]] = _with_meta(resource)
    return MappingProxyType(by_type)


def _with_meta(resource: dict[str, Any]) -> dict[str, Any]:
    """Version and last change for every read (ETag, Last-Modified): the version is a digest of
    the content, so it changes exactly when a regenerated resource does; the change is its
    publication date."""
    content = json.dumps(resource, sort_keys=True, separators=(",", ":")).encode()
    meta = {
        "versionId": hashlib.sha256(content).hexdigest()[:16],
        "lastUpdated": f"{resource['date']}T00:00:00Z",
    }
    return {"resourceType": resource["resourceType"], "id": resource["id"], "meta": meta, **resource}


def resources(resource_type: str) -> list[dict[str, Any]]:
    """Every published resource of a type (a copy each, so callers may decorate them)."""
    return [json.loads(json.dumps(r)) for r in _resources()[resource_type].values()]


def resource(resource_type: str, resource_id: str) -> dict[str, Any] | None:
    found = _resources().get(resource_type, {}).get(resource_id)
    return json.loads(json.dumps(found)) if found is not None else None


@cache
def _maps() -> Mapping[tuple[str, str], Mapping[str, tuple[str, ...]]]:
    """(source system, target system) -> source code -> target codes that translate it."""
    out: dict[tuple[str, str], dict[str, tuple[str, ...]]] = {}
    for concept_map in _resources()["ConceptMap"].values():
        for group in concept_map["group"]:
            table = out.setdefault((group["source"], group["target"]), {})
            for element in group["element"]:
                targets = tuple(
                    t["code"] for t in element.get("target", []) if t["equivalence"] in TRANSLATING
                )
                table[element["code"]] = table.get(element["code"], ()) + targets
    return MappingProxyType(out)


def translate(source_system: str, code: str, target_system: str) -> tuple[str, ...]:
    """The target codes a published ConceptMap gives for `code` (none when it is not mapped, or
    only more narrowly or inexactly: the suite never guesses a partner's meaning)."""
    return _maps().get((source_system, target_system), {}).get(code, ())


@cache
def _equivalents() -> Mapping[tuple[str, str, str], dict[str, str]]:
    """(system, code, target system) -> the equivalent target coding, from the reverse maps."""
    out: dict[tuple[str, str, str], dict[str, str]] = {}
    for concept_map in _resources()["ConceptMap"].values():
        for group in concept_map["group"]:
            for element in group["element"]:
                for target in element.get("target", []):
                    if target["equivalence"] == "equivalent":
                        key = (group["source"], element["code"], group["target"])
                        out.setdefault(
                            key,
                            {"system": group["target"], "code": target["code"], "display": target["display"]},
                        )
    return MappingProxyType(out)


def equivalent_in(target_system: str, system: str, code: str) -> dict[str, str] | None:
    """The coding in `target_system` equivalent to one of the suite's codes, with its display, or
    None when the published reverse map has none."""
    found = _equivalents().get((system, code, target_system))
    return dict(found) if found is not None else None
