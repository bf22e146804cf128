"""Build CMH Suite's published terminology (FHIR R4 CodeSystems, ValueSets and ConceptMaps) as JSON.

A build tool, not run-time code. The suite's own code systems are generated from the enums that
define the codes (contracts/vocabulary.py and triage's domain), so a published code cannot drift
from what the services accept; the maps to and from SNOMED CT come from the hand-written
``tools/terminology_data/maps.yaml``. The JSON goes to ``shared/terminology/``, which the gateway
serves at ``/fhir/CodeSystem``, ``/fhir/ValueSet`` and ``/fhir/ConceptMap`` and triage's FHIR
intake reads to translate partners' codings. Usage, from the repository root::

    .venv/bin/python -m tools.terminology           # check: exit 1 if the JSON is stale
    .venv/bin/python -m tools.terminology --write   # regenerate it

`make test` runs the check (tests/shared/test_terminology.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from contracts.vocabulary import PRIORITY_LABELS, Route, Source
from services.triage.domain import DecisionAction, Need, RequestedUrgency, Risk
from shared.fhir_terms import CMH_CODES
from shared.terminology import (
    CMH_CONCEPT_MAPS,
    CMH_VALUE_SETS,
    DATA_DIR,
    PUBLISHER,
    REQUEST_PRIORITY,
    SNOMED_CT,
    TERMINOLOGY_VERSION,
)

MAPS = Path(__file__).parent / "terminology_data" / "maps.yaml"
DATE = "2026-12-02"


def _words(code: str) -> str:
    return code.replace("_", " ").replace("-", " ").capitalize()


# Each of the suite's code systems: (id, title, description, [(code, display)]).
def _enum_concepts(enum: Iterable[StrEnum]) -> list[tuple[str, str]]:
    return [(member.value, _words(member.value)) for member in enum]


CODE_SYSTEMS: list[tuple[str, str, str, list[tuple[str, str]]]] = [
    (
        "referral-source",
        "CMH Suite referral source",
        "Who referred the person to the single point of access (ServiceRequest.category).",
        _enum_concepts(Source),
    ),
    (
        "need",
        "CMH Suite presenting need",
        "The needs a referral presents (ServiceRequest.reasonCode): triage's clinical needs and the "
        "directory's VCFSE support needs.",
        _enum_concepts(Need),
    ),
    (
        "risk",
        "CMH Suite risk indicator",
        "Risk indicators a referral reports (the contained RiskAssessment's prediction.outcome).",
        _enum_concepts(Risk),
    ),
    (
        "route",
        "CMH Suite route",
        "Where triage sends a referral: a clinical pathway, a VCFSE offer, or a close.",
        _enum_concepts(Route),
    ),
    (
        "clinical-response-priority",
        "Clinical response priority (MHSDS ClinRespPriorityType)",
        "The clinical response priority triage sets (1 emergency, 2 urgent, 3 routine, 4 very urgent).",
        [(str(code), label.capitalize()) for code, label in sorted(PRIORITY_LABELS.items())],
    ),
    (
        "requested-urgency",
        "CMH Suite requested urgency",
        "How urgently the referrer asks for a response (from ServiceRequest.priority).",
        _enum_concepts(RequestedUrgency),
    ),
    (
        "triage-decision",
        "CMH Suite triage decision",
        "What a triage clinician decided about a referral (Task.businessStatus, Provenance.activity).",
        _enum_concepts(DecisionAction),
    ),
]

# ServiceRequest.priority (FHIR request-priority) -> the suite's requested urgency.
REQUEST_PRIORITY_MAP: list[tuple[str, str]] = [
    ("routine", RequestedUrgency.ROUTINE.value),
    ("urgent", RequestedUrgency.URGENT.value),
    ("asap", RequestedUrgency.VERY_URGENT.value),
    ("stat", RequestedUrgency.EMERGENCY.value),
]


def _meta(resource_type: str, resource_id: str, url: str, name: str, title: str) -> dict[str, Any]:
    return {
        "resourceType": resource_type,
        "id": resource_id,
        "url": url,
        "version": TERMINOLOGY_VERSION,
        "name": name,
        "title": title,
        "status": "active",
        "experimental": False,
        "date": DATE,
        "publisher": PUBLISHER,
    }


def _name(slug: str) -> str:
    """A computable name: `CMH` then the id's words (`cmh-` not repeated)."""
    words = slug.removeprefix("cmh-").split("-")
    return "CMH" + "".join(word.upper() if word in ("cmh",) else word.capitalize() for word in words)


def code_system(slug: str, title: str, description: str, concepts: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        **_meta("CodeSystem", f"cmh-{slug}", CMH_CODES + slug, _name(slug), title),
        "description": description,
        "caseSensitive": True,
        "valueSet": CMH_VALUE_SETS + slug,
        "content": "complete",
        "count": len(concepts),
        "concept": [{"code": code, "display": display} for code, display in concepts],
    }


def value_set(slug: str, title: str, description: str) -> dict[str, Any]:
    return {
        **_meta("ValueSet", f"cmh-{slug}", CMH_VALUE_SETS + slug, _name(slug), f"{title} (all codes)"),
        "description": description,
        "compose": {"include": [{"system": CMH_CODES + slug}]},
    }


def concept_map(
    map_id: str,
    title: str,
    source: tuple[str, str | None],
    target: tuple[str, str],
    elements: list[dict[str, Any]],
    description: str,
) -> dict[str, Any]:
    (source_system, source_value_set), (target_system, target_value_set) = source, target
    resource = {
        **_meta("ConceptMap", map_id, CMH_CONCEPT_MAPS + map_id, _name(map_id), title),
        "description": description,
        "copyright": "SNOMED CT codes are used under the NHS England SNOMED CT affiliate licence."
        if SNOMED_CT in (source_system, target_system)
        else None,
        "targetUri": target_value_set,
        "group": [{"source": source_system, "target": target_system, "element": elements}],
    }
    if source_value_set:
        resource["sourceUri"] = source_value_set
    return {key: value for key, value in resource.items() if value is not None}


def build() -> dict[str, dict[str, Any]]:
    """Every resource, by file name."""
    out: dict[str, dict[str, Any]] = {}
    for slug, title, description, concepts in CODE_SYSTEMS:
        out[f"CodeSystem-cmh-{slug}.json"] = code_system(slug, title, description, concepts)
        out[f"ValueSet-cmh-{slug}.json"] = value_set(slug, title, description)
    displays = {slug: dict(concepts) for slug, _, _, concepts in CODE_SYSTEMS}
    maps = yaml.safe_load(MAPS.read_text())
    for slug, spec in maps.items():
        codes = displays[slug]
        forward = [
            {
                "code": entry["code"],
                "display": entry["display"],
                "target": [
                    {
                        "code": entry["target"],
                        "display": codes[entry["target"]],
                        "equivalence": entry["equivalence"],
                    }
                ],
            }
            for entry in spec["entries"]
        ]
        map_id = f"snomed-to-cmh-{slug}"
        out[f"ConceptMap-{map_id}.json"] = concept_map(
            map_id,
            spec["title"],
            (SNOMED_CT, spec["source_value_set"]),
            (CMH_CODES + slug, CMH_VALUE_SETS + slug),
            forward,
            f"Translates a partner's SNOMED CT coding into the suite's {slug} code. Codes not listed "
            "are refused at intake, naming the element, unless the same concept also carries a suite code.",
        )
        reverse = [
            {
                "code": entry["target"],
                "display": codes[entry["target"]],
                "target": [{"code": entry["code"], "display": entry["display"], "equivalence": "equivalent"}],
            }
            for entry in spec["entries"]
            if entry.get("preferred")
        ]
        reverse_id = f"cmh-{slug}-to-snomed"
        out[f"ConceptMap-{reverse_id}.json"] = concept_map(
            reverse_id,
            spec["reverse_title"],
            (CMH_CODES + slug, CMH_VALUE_SETS + slug),
            (SNOMED_CT, spec["source_value_set"]),
            reverse,
            f"The SNOMED CT concept the suite adds beside its own {slug} code when it renders one; "
            "only codes with an equivalent SNOMED CT concept are listed.",
        )
    out["ConceptMap-request-priority-to-cmh-requested-urgency.json"] = concept_map(
        "request-priority-to-cmh-requested-urgency",
        "FHIR request priority to CMH Suite requested urgency",
        (REQUEST_PRIORITY, "http://hl7.org/fhir/ValueSet/request-priority"),
        (CMH_CODES + "requested-urgency", CMH_VALUE_SETS + "requested-urgency"),
        [
            {
                "code": source,
                "target": [
                    {
                        "code": target,
                        "display": displays["requested-urgency"][target],
                        "equivalence": "equivalent",
                    }
                ],
            }
            for source, target in REQUEST_PRIORITY_MAP
        ],
        "ServiceRequest.priority as the urgency the referrer asked for; triage sets the clinical "
        "response priority itself.",
    )
    return out


def _text(resource: dict[str, Any]) -> str:
    return json.dumps(resource, indent=2, ensure_ascii=False) + "\n"


def stale() -> list[str]:
    """The files that differ from what would be generated (or should not be there)."""
    wanted = build()
    present = {path.name for path in DATA_DIR.glob("*.json")}
    differ = [
        name
        for name, resource in wanted.items()
        if name not in present or (DATA_DIR / name).read_text() != _text(resource)
    ]
    return sorted(differ + [name for name in present - wanted.keys()])


def write() -> None:
    wanted = build()
    for path in DATA_DIR.glob("*.json"):
        if path.name not in wanted:
            path.unlink()
    for name, resource in wanted.items():
        (DATA_DIR / name).write_text(_text(resource))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="regenerate the JSON")
    args = parser.parse_args(argv)
    if args.write:
        write()
        return 0
    differ = stale()
    if differ:
        print("stale terminology (run python -m tools.terminology --write): " + ", ".join(differ))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
