"""Build the FHIR R4 element facts the gateway needs to answer `_summary` and `_elements`: for each
resource type the suite serves, its summary elements (`isSummary`, plus `modifierExtension`: a
modifier is never left out) and its mandatory elements (min 1, always returned).

A build tool, not run-time code: it reads the element definitions of the FHIR specification as
the `fhir.resources` package (R4B models, whose elements for these types are R4's) carries them,
and writes ``shared/fhir_elements.json``, which the gateway reads. Usage, from the repository root::

    .venv/bin/python -m tools.fhir_elements           # check: exit 1 if the JSON is stale
    .venv/bin/python -m tools.fhir_elements --write   # regenerate it

`make test` runs the check (tests/shared/test_fhir_results.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from shared.fhir_results import ELEMENTS_FILE, SHAPED_TYPES


def build() -> dict[str, Any]:
    from fhir.resources.R4B import get_fhir_model_class

    facts: dict[str, Any] = {
        "source": "HL7 FHIR R4 element definitions (isSummary, min), as the fhir.resources package carries them",
        "types": {},
    }
    for resource_type in SHAPED_TYPES:
        summary, mandatory = [], []
        for field in get_fhir_model_class(resource_type).model_fields.values():
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            if not extra.get("element_property") or field.alias is None:
                continue
            if extra.get("summary_element_property") or field.alias == "modifierExtension":
                summary.append(field.alias)
            if extra.get("element_required") or field.is_required():
                mandatory.append(field.alias)
        facts["types"][resource_type] = {"summary": sorted(summary), "mandatory": sorted(mandatory)}
    return facts


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--write", action="store_true", help="regenerate the JSON")
    args = parser.parse_args(argv)
    wanted = render()
    if args.write:
        ELEMENTS_FILE.write_text(wanted)
        return 0
    if not ELEMENTS_FILE.exists() or ELEMENTS_FILE.read_text() != wanted:
        print("stale FHIR element facts (run python -m tools.fhir_elements --write)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
