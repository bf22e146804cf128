"""Open Referral UK / HSDS 3.0 lets a publisher add fields only with the `x_` prefix: every field of
every object in every ORUK answer is one the standard's schema names, or starts with `x_`
(issue 20 §5). Walked over the compiled schemas, so a field added to a document later is caught."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from tests.directory.support import TERMS, Directory, proposal
from tests.directory.test_search import _publish

STANDARDS = Path(__file__).parents[2] / "services" / "directory" / "standards"
COMPILED = STANDARDS / "oruk" / "compiled"


@cache
def _core_fields(object_name: str) -> frozenset[str]:
    """The fields HSDS 3.0 core defines for an object (the UK profile lists some of them only)."""
    path = STANDARDS / "hsds" / f"{object_name}.json"
    return frozenset(json.loads(path.read_text()).get("properties", {})) if path.exists() else frozenset()


def _foreign(document: Any, schema: dict[str, Any], where: str) -> list[str]:
    """Field paths in `document` that `schema` does not name and that lack the x_ prefix."""
    out: list[str] = []
    if isinstance(document, list):
        for index, item in enumerate(document):
            out += _foreign(item, schema.get("items", {}), f"{where}[{index}]")
    elif isinstance(document, dict):
        properties = schema.get("properties")
        for key, value in document.items():
            if properties is None:
                continue  # a free-form object in the standard
            if key not in properties:
                if not key.startswith("x_") and key not in _core_fields(str(schema.get("name", ""))):
                    out.append(f"{where}.{key}")
                continue
            out += _foreign(value, properties[key], f"{where}.{key}")
    return out


def _schema(name: str) -> dict[str, Any]:
    return dict(json.loads((COMPILED / f"{name}.json").read_text()))


async def test_every_field_is_the_standards_or_an_x_extension(directory: Directory) -> None:
    ids = await _publish(directory, proposal(name="Housing help", taxonomy_term_ids=[TERMS["housing"]]))
    service = (await directory.get(f"/services/{ids[0]}")).json()
    answers = {
        "service": service,
        "organization": (await directory.get(f"/organizations/{service['organization_id']}")).json(),
    }
    for page, item_schema in (
        ("/services", "service_list"),
        ("/service_at_locations", "service_at_location_list"),
    ):
        for index, item in enumerate((await directory.get(page)).json()["contents"]):
            answers[f"{page}[{index}]"] = (item, item_schema)
    foreign: list[str] = []
    for name, answer in answers.items():
        document, schema = answer if isinstance(answer, tuple) else (answer, name)
        foreign += _foreign(document, _schema(schema), name)
    assert not foreign, foreign
