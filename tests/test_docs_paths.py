"""Every repository path the prose cites exists: the markdown, YAML and TOML files, and the comments
and docstrings of the Python code. A renamed or deleted file, or a docstring pointing at a module
that never held what it says, fails here instead of sending a newcomer looking.

A path is cited from the repository root and starts with a top-level directory; `<name>`, `{name}`
and `*` stand for any one path segment. `file.py:name` must also define `name` (a function, a
class or a module-level assignment; `Class.method` is checked by its class)."""

from __future__ import annotations

import ast
import functools
import io
import os
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP = (
    "bench", "cmh", "contracts", "deploy", "docs", "examples", "gateway", "services", "shared", "tests", "tools",
)  # fmt: skip
SKIPPED_DIRS = {
    ".git", ".venv", "var", "node_modules", "__pycache__", "build", "dist",
    ".hypothesis", ".import_linter_cache", ".mypy_cache", ".pytest_cache", ".ruff_cache",
}  # fmt: skip
PROSE_SUFFIXES = {".md", ".yaml", ".yml", ".toml"}
PROSE_NAMES = {"Makefile", "Dockerfile"}
_TOP = "|".join(TOP)
CITED = re.compile(
    rf"(?<![\w./\-])(?:\.\./)?((?:{_TOP})/[\w.<>*{{}}\-/]*[\w>*}}/])(?::([A-Za-z_]\w*(?:\.\w+)?))?"
)
# Paths that are cited on purpose although the repository does not hold them, and why.
NOT_IN_THE_REPOSITORY = (
    "shared/reference/",  # the project handout's reference data (the copies are in services/*/reference/)
    "deploy/secrets/",  # made by the operator before `docker compose up`, never committed
    "deploy/kubernetes/overlays/production/secrets/",  # made by the operator before `kubectl apply`
    "deploy/gateway/",  # `kubectl exec deploy/gateway`: a Kubernetes Deployment, not a file
)


def prose_files(root: Path = ROOT) -> Iterator[Path]:
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = sorted(
            d
            for d in subdirectories
            if d not in SKIPPED_DIRS
            and not d.endswith(".egg-info")
            and not (Path(directory) / d / "pyvenv.cfg").exists()  # any virtualenv (`make lock`'s)
        )
        for name in sorted(names):
            path = Path(directory) / name
            if path.suffix == ".py" or path.suffix in PROSE_SUFFIXES or name in PROSE_NAMES:
                yield path


def prose(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of what a reader reads as prose: a Python file's comments and docstrings, and
    every line of any other file."""
    source = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix != ".py":
        yield from enumerate(source.splitlines(), 1)
        return
    if not CITED.search(source):  # most modules cite nothing: skip tokenising them
        return
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string
    pending: list[ast.AST] = [ast.parse(source)]
    while pending:
        node = pending.pop()
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = body[0] if body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                yield first.lineno, first.value.value
        pending.extend(body)
        for extra in ("orelse", "finalbody", "handlers"):
            pending.extend(getattr(node, extra, None) or [])


@functools.cache
def defined_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def missing(text: str, root: Path = ROOT) -> list[str]:
    """The paths (and `file.py:name`s) `text` cites that `root` does not hold."""
    out = []
    for match in CITED.finditer(text):
        if match.group(0).startswith("../"):  # the handout, beside the repository
            continue
        cited, name = match.group(1).rstrip("/"), match.group(2)
        if f"{cited}/".startswith(NOT_IN_THE_REPOSITORY):
            continue
        pattern = re.sub(r"<[^>/]*>|\{[^}/]*\}", "*", cited)
        found = list(root.glob(pattern)) if "*" in pattern else [root / pattern]
        if not any(path.exists() for path in found):
            out.append(cited)
        elif (
            name
            and pattern.endswith(".py")
            and "*" not in pattern
            and name.split(".")[0] not in defined_names(root / pattern)
        ):
            out.append(f"{cited}:{name}")
    return out


def test_the_checker_finds_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "db.py").write_text("class Database:\n    pass\n\nLIMIT = 1\n")
    (tmp_path / "services" / "triage").mkdir(parents=True)
    (tmp_path / "services" / "triage" / "domain.py").write_text("")
    assert missing("see `shared/db.py` and shared/db.py:Database.transaction, or LIMIT in", tmp_path) == []
    assert missing("shared/db.py:LIMIT; services/<name>/domain.py; services/*/domain.py", tmp_path) == []
    assert missing("`shared/gone.py`, services/triage/gone/", tmp_path) == [
        "shared/gone.py",
        "services/triage/gone",
    ]
    assert missing("shared/db.py:nothing_here", tmp_path) == ["shared/db.py:nothing_here"]
    assert missing("services/<name>/store.py", tmp_path) == ["services/<name>/store.py"]
    assert missing("../shared/DESIGN.md, shared/reference/x.json, cmh.triage.> and var/x", tmp_path) == []


def test_the_checker_reads_comments_and_docstrings_only(tmp_path: Path) -> None:
    path = tmp_path / "module.py"
    path.write_text(
        '"""See shared/a.py."""\n\nX = "shared/b.py"  # shared/c.py\n\n\n'
        'class C:\n    def f(self):\n        """shared/d.py"""\n'
    )
    assert sorted(prose(path)) == [(1, "See shared/a.py."), (3, "# shared/c.py"), (8, "shared/d.py")]


def test_every_path_the_prose_cites_exists() -> None:
    offences = [
        f"{path.relative_to(ROOT)}:{line}: {cited}"
        for path in prose_files()
        for line, text in prose(path)
        for cited in missing(text)
    ]
    assert not offences, "cited paths the repository does not hold:\n" + "\n".join(offences)
