"""docs/security/asvs.md names, for each control, the test that proves it: every test it names
must exist, so the table cannot cite a test that was renamed or never written."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "docs" / "security" / "asvs.md"
CITED = re.compile(r"(tests/[\w/]+\.py)(?:::(\w+))?")


def _functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_cited_test_exists() -> None:
    cited = CITED.findall(TABLE.read_text())
    assert len(cited) > 20
    missing = []
    for file_name, function in cited:
        path = ROOT / file_name
        if not path.is_file() or (function and function not in _functions(path)):
            missing.append(f"{file_name}::{function}" if function else file_name)
    assert not missing, missing
