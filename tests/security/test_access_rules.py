"""Organisation binding has one home per service: its `access.py`. A route that reads the
caller's organisation itself (a filter written by hand, easy to forget on the next route, or an
owner stamped on a new record) fails here, so every read, change and new record goes through the
service's access rules (`owner_of(caller)` for the stamp)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ACCESS_MODULES = {"access.py"}


def _is_caller_organisation(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "organisation"
        and isinstance(node.value, ast.Name)
        and node.value.id.endswith("caller")
    )


def inline_organisation_checks(source: str) -> list[int]:
    """Lines using `caller.organisation` at all (a comparison, a filter, an owner stamped on a new
    record, an argument) or calling `ensure_organisation`."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if _is_caller_organisation(node):
            lines.append(node.lineno)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "ensure_organisation":
                lines.append(node.lineno)
    return sorted(lines)


def test_the_checker_sees_an_inline_filter() -> None:
    assert inline_organisation_checks("q.where(Referral.referring_org == caller.organisation)") == [1]
    assert inline_organisation_checks("ok = caller.organisation in (a, b)") == [1]
    assert inline_organisation_checks("ensure_organisation(caller, x)") == [1]
    assert inline_organisation_checks("Referral(referring_org=caller.organisation)") == [1]
    assert inline_organisation_checks("parse(body, caller.organisation)") == [1]
    assert inline_organisation_checks("Referral(referring_org=access.owner_of(caller))") == []


def test_no_route_filters_on_the_callers_organisation_outside_the_access_modules() -> None:
    offences = []
    for path in sorted([*ROOT.glob("services/**/*.py"), *ROOT.glob("gateway/*.py")]):
        if path.name in ACCESS_MODULES:
            continue
        for line in inline_organisation_checks(path.read_text()):
            offences.append(f"{path.relative_to(ROOT)}:{line}")
    assert not offences, f"caller.organisation outside services/<name>/access.py: {offences}"


def test_every_service_holding_person_data_has_its_access_module() -> None:
    for service in ("triage", "careplan", "directory", "notify"):
        assert (ROOT / "services" / service / "access.py").is_file(), service
