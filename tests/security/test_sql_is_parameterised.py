"""OWASP ASVS 5.3.4: SQL is parameterised. A lint over the suite's code: no SQL text is built by
formatting (f-strings, `%`, `+`, `.format`) where it reaches `text()` or an `execute()`; values go
in as bound parameters. The few statements that must name an identifier (a schema) are listed
with the reason the name is safe."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("services", "gateway", "shared")
SQL_CALLS = {"text", "execute", "exec_driver_sql", "executescript", "scalar", "scalars"}
# Where formatted statements are allowed, and why each is safe: they name identifiers, never values.
IDENTIFIERS_ONLY = {
    "migrations/versions/": "DDL naming the migration's own tables, triggers and statistics (constants)",
    "shared/migrations.py": "CREATE SCHEMA for the service's schema name, from settings, never from a request",
}


def _formatted(node: ast.AST) -> bool:
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(part, ast.FormattedValue) for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
        return any(
            isinstance(side, ast.Constant) and isinstance(side.value, str) for side in (node.left, node.right)
        ) or (_formatted(node.left) or _formatted(node.right))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return isinstance(node.func.value, ast.Constant) and isinstance(node.func.value.value, str)
    return False


def _called(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def formatted_sql(path: Path) -> list[int]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and _called(node) in SQL_CALLS
            and node.args
            and _formatted(node.args[0])
        ):
            found.append(node.lineno)
    return found


def test_no_sql_is_built_by_formatting() -> None:
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = str(path.relative_to(ROOT))
            if any(place in relative for place in IDENTIFIERS_ONLY):
                continue
            offenders += [f"{relative}:{line}" for line in formatted_sql(path)]
    assert not offenders, offenders


def test_the_lint_finds_what_it_forbids(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from sqlalchemy import text\n"
        "def f(session, nhs):\n"
        "    session.execute(text(f\"SELECT * FROM people WHERE nhs = '{nhs}'\"))\n"
        "    session.execute(text('SELECT * FROM people WHERE nhs = %s' % nhs))\n"
        "    session.execute(text('SELECT * FROM people WHERE nhs = :nhs'), {'nhs': nhs})\n"
    )
    assert formatted_sql(sample) == [3, 4]
