"""The clinical safety hazard log (NHS DCB0129): load `docs/safety/hazard-log.yaml`, check it, and
generate the tables of `docs/safety/safety-case.md` from it.

    .venv/bin/python -m tests.safety.hazard_log              # check everything; exit 1 on any problem
    .venv/bin/python -m tests.safety.hazard_log --write      # regenerate the safety case's tables
    .venv/bin/python -m tests.safety.hazard_log --evidence-for services/triage/domain/*.py
                                                             # the evidence to re-run after changing a file

This module imports no service and no project code: controls are checked by reading the source
with `ast`, and evidence by asking pytest, in one subprocess, which tests it collects.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
LOG = ROOT / "docs" / "safety" / "hazard-log.yaml"
CASE = ROOT / "docs" / "safety" / "safety-case.md"
WRITE_COMMAND = ".venv/bin/python -m tests.safety.hazard_log --write"

# --- the DCB0129 / DCB0160 risk matrix ----------------------------------------------------------

SEVERITIES: tuple[str, ...] = ("minor", "significant", "considerable", "major", "catastrophic")
LIKELIHOODS: tuple[str, ...] = ("very low", "low", "medium", "high", "very high")

# MATRIX[likelihood][severity] -> clinical risk rating, exactly as the standard's matrix reads.
MATRIX: dict[str, dict[str, int]] = {
    "very high": {"minor": 3, "significant": 4, "considerable": 4, "major": 5, "catastrophic": 5},
    "high": {"minor": 2, "significant": 3, "considerable": 3, "major": 4, "catastrophic": 5},
    "medium": {"minor": 2, "significant": 2, "considerable": 3, "major": 3, "catastrophic": 4},
    "low": {"minor": 1, "significant": 2, "considerable": 2, "major": 3, "catastrophic": 4},
    "very low": {"minor": 1, "significant": 1, "considerable": 2, "major": 2, "catastrophic": 3},
}

RATINGS: dict[int, tuple[str, str]] = {
    5: ("very high", "Unacceptable level of risk."),
    4: ("high", "Mandatory elimination or control to reduce risk to an acceptable level."),
    3: (
        "medium",
        "Undesirable level of risk: attempts should be made to eliminate or control it; acceptable only "
        "when further risk reduction is impractical.",
    ),
    2: ("low", "Acceptable where the cost of further reduction outweighs the benefits gained."),
    1: ("very low", "Acceptable, no further action required."),
}

STATUSES: tuple[str, ...] = ("open", "controlled", "closed")
# The highest residual risk each status may carry. Closed: the residual risk is acceptable (1, or
# 2 where further reduction costs more than it gains). Controlled: every control is in place and
# evidenced, and what remains is at most 3 (undesirable, accepted only when further reduction is
# impractical). A residual 4 or 5 demands more control, so such a hazard can only be open.
MAX_RESIDUAL: dict[str, int] = {"open": 5, "controlled": 3, "closed": 2}


def risk_of(severity: str, likelihood: str) -> int:
    """The matrix cell for a severity and a likelihood."""
    return MATRIX[likelihood][severity]


# --- the log as data ------------------------------------------------------------------------------

ID_PATTERN = re.compile(r"HAZ-[0-9]{3}")
CODE_PATTERN = re.compile(r"(?P<path>[\w./-]+\.py):(?P<name>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")
NODE_PATTERN = re.compile(
    r"(?P<path>[\w./-]+\.py)::(?P<name>[A-Za-z_]\w*(?:::[A-Za-z_]\w*)*)(?P<param>\[.*\])?"
)

HAZARD_KEYS = {
    "id", "title", "hazard", "causes", "effects", "initial", "controls", "evidence", "residual", "status",
}  # fmt: skip
OPTIONAL_HAZARD_KEYS = {"issue"}
PENDING_KEYS = {"area", "title"}
OPTIONAL_PENDING_KEYS = {"note", "issue"}


@dataclass(frozen=True)
class Risk:
    severity: str
    likelihood: str
    risk: int

    def label(self) -> str:
        return f"{self.risk} ({self.severity}, {self.likelihood})"


@dataclass(frozen=True)
class Control:
    description: str
    code: str  # "path/to/file.py:function_or_Class" (or "Class.method", or a module-level name)

    @property
    def path(self) -> str:
        return self.code.rsplit(":", 1)[0]

    @property
    def name(self) -> str:
        return self.code.rsplit(":", 1)[-1]


@dataclass(frozen=True)
class Hazard:
    id: str
    title: str
    hazard: str
    causes: tuple[str, ...]
    effects: tuple[str, ...]
    initial: Risk
    controls: tuple[Control, ...]
    evidence: tuple[str, ...]
    residual: Risk
    status: str
    issue: int | None = None


@dataclass(frozen=True)
class Pending:
    """A hazard being analysed, not yet in the log: named so the gap is visible, never evidenced."""

    area: str
    title: str
    note: str = ""
    issue: int | None = None


@dataclass
class HazardLog:
    hazards: list[Hazard] = field(default_factory=list)
    pending: list[Pending] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what could not be read as a hazard


def _strings(value: Any, where: str, problems: list[str], *, allow_empty: bool = False) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        problems.append(f"{where}: must be a list of non-empty strings")
        return ()
    if not value and not allow_empty:
        problems.append(f"{where}: must not be empty")
    return tuple(value)


def _text(value: Any, where: str, problems: list[str]) -> str:
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{where}: must be a non-empty string")
        return ""
    return value.strip()


def _risk(value: Any, where: str, problems: list[str]) -> Risk | None:
    if not isinstance(value, Mapping) or set(value) != {"severity", "likelihood", "risk"}:
        problems.append(f"{where}: must have exactly severity, likelihood and risk")
        return None
    severity, likelihood, risk = value["severity"], value["likelihood"], value["risk"]
    ok = True
    if severity not in SEVERITIES:
        problems.append(f"{where}.severity: {severity!r} is not one of {', '.join(SEVERITIES)}")
        ok = False
    if likelihood not in LIKELIHOODS:
        problems.append(f"{where}.likelihood: {likelihood!r} is not one of {', '.join(LIKELIHOODS)}")
        ok = False
    if not isinstance(risk, int) or isinstance(risk, bool) or not 1 <= risk <= 5:
        problems.append(f"{where}.risk: {risk!r} is not a risk rating from 1 to 5")
        ok = False
    return Risk(severity, likelihood, risk) if ok else None


def _hazard(raw: Any, index: int, problems: list[str]) -> Hazard | None:
    if not isinstance(raw, Mapping):
        problems.append(f"hazards[{index}]: must be a mapping")
        return None
    where = str(raw.get("id") or f"hazards[{index}]")
    before = len(problems)
    missing = sorted(HAZARD_KEYS - set(raw))
    unknown = sorted(set(raw) - HAZARD_KEYS - OPTIONAL_HAZARD_KEYS)
    if missing:
        problems.append(f"{where}: missing {', '.join(missing)}")
    if unknown:
        problems.append(f"{where}: unknown keys {', '.join(map(str, unknown))}")
    if missing:
        return None
    hazard_id = _text(raw["id"], f"{where}.id", problems)
    if hazard_id and not ID_PATTERN.fullmatch(hazard_id):
        problems.append(f"{where}.id: must look like HAZ-001")
    controls: list[Control] = []
    if not isinstance(raw["controls"], list):
        problems.append(f"{where}.controls: must be a list")
    else:
        for n, control in enumerate(raw["controls"]):
            at = f"{where}.controls[{n}]"
            if not isinstance(control, Mapping) or set(control) != {"description", "code"}:
                problems.append(f"{at}: must have exactly description and code")
                continue
            description = _text(control["description"], f"{at}.description", problems)
            code = _text(control["code"], f"{at}.code", problems)
            if code and not CODE_PATTERN.fullmatch(code):
                problems.append(f"{at}.code: {code!r} is not 'path/to/file.py:function_or_class'")
            controls.append(Control(description, code))
    evidence = _strings(raw["evidence"], f"{where}.evidence", problems, allow_empty=True)
    for node in evidence:
        if not NODE_PATTERN.fullmatch(node):
            problems.append(f"{where}.evidence: {node!r} is not a pytest node id (tests/...py::test_name)")
    if len(set(evidence)) != len(evidence):
        problems.append(f"{where}.evidence: lists a node id twice")
    issue = raw.get("issue")
    if issue is not None and (not isinstance(issue, int) or isinstance(issue, bool)):
        problems.append(f"{where}.issue: must be an issue number")
    status = raw["status"]
    if status not in STATUSES:
        problems.append(f"{where}.status: {status!r} is not one of {', '.join(STATUSES)}")
    hazard = Hazard(
        id=hazard_id,
        title=_text(raw["title"], f"{where}.title", problems),
        hazard=_text(raw["hazard"], f"{where}.hazard", problems),
        causes=_strings(raw["causes"], f"{where}.causes", problems),
        effects=_strings(raw["effects"], f"{where}.effects", problems),
        initial=_risk(raw["initial"], f"{where}.initial", problems) or Risk("", "", 0),
        controls=tuple(controls),
        evidence=evidence,
        residual=_risk(raw["residual"], f"{where}.residual", problems) or Risk("", "", 0),
        status=str(status),
        issue=issue,
    )
    return hazard if len(problems) == before else None


def _pending(raw: Any, index: int, problems: list[str]) -> Pending | None:
    where = f"pending[{index}]"
    if not isinstance(raw, Mapping) or not set(raw) >= PENDING_KEYS:
        problems.append(f"{where}: must have area and title")
        return None
    unknown = sorted(set(raw) - PENDING_KEYS - OPTIONAL_PENDING_KEYS)
    if unknown:
        problems.append(f"{where}: unknown keys {', '.join(map(str, unknown))}")
    if "controls" in raw or "evidence" in raw:
        problems.append(f"{where}: claims controls or evidence: move it under hazards as a full entry")
        return None
    return Pending(
        area=_text(raw["area"], f"{where}.area", problems),
        title=_text(raw["title"], f"{where}.title", problems),
        note=str(raw.get("note") or "").strip(),
        issue=raw.get("issue"),
    )


def parse(document: Any) -> HazardLog:
    """The log from its YAML document ({pending: [...], hazards: [...]}), with what could not be read."""
    log = HazardLog()
    if not isinstance(document, Mapping) or not isinstance(document.get("hazards"), list):
        log.problems.append("the log must be a mapping with a 'hazards' list")
        return log
    unknown = sorted(set(document) - {"hazards", "pending"})
    if unknown:
        log.problems.append(f"unknown top-level keys {', '.join(map(str, unknown))}")
    seen: dict[str, int] = {}
    for index, raw in enumerate(document["hazards"]):
        if isinstance(raw, Mapping) and isinstance(raw.get("id"), str):
            if raw["id"] in seen:
                log.problems.append(f"{raw['id']}: duplicate id (hazards[{seen[raw['id']]}] and [{index}])")
            seen.setdefault(raw["id"], index)
        hazard = _hazard(raw, index, log.problems)
        if hazard is not None:
            log.hazards.append(hazard)
    for index, raw in enumerate(document.get("pending") or []):
        item = _pending(raw, index, log.problems)
        if item is not None:
            log.pending.append(item)
    titles = {h.title.casefold() for h in log.hazards}
    for item in log.pending:
        if item.title.casefold() in titles:
            log.problems.append(f"pending {item.title!r} is now a hazard: remove it from pending")
    return log


def load(path: Path = LOG) -> HazardLog:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        return HazardLog(problems=[f"{path}: cannot be read: {exc}"])
    return parse(document)


# --- checks ---------------------------------------------------------------------------------------


def check_risks(log: HazardLog) -> list[str]:
    """Each stated risk is its matrix cell; controls never raise a risk; the status fits the residual."""
    problems: list[str] = []
    for h in log.hazards:
        for which, r in (("initial", h.initial), ("residual", h.residual)):
            cell = risk_of(r.severity, r.likelihood)
            if r.risk != cell:
                problems.append(
                    f"{h.id}: {which} risk says {r.risk} but the matrix gives {cell} "
                    f"for {r.severity} severity and {r.likelihood} likelihood"
                )
        if h.residual.risk > h.initial.risk:
            problems.append(
                f"{h.id}: residual risk {h.residual.risk} is higher than initial {h.initial.risk}"
            )
        if SEVERITIES.index(h.residual.severity) > SEVERITIES.index(h.initial.severity):
            problems.append(f"{h.id}: residual severity is worse than the initial severity")
        if LIKELIHOODS.index(h.residual.likelihood) > LIKELIHOODS.index(h.initial.likelihood):
            problems.append(f"{h.id}: residual likelihood is higher than the initial likelihood")
        ceiling = MAX_RESIDUAL.get(h.status)
        if ceiling is not None and h.residual.risk > ceiling:
            problems.append(
                f"{h.id}: status {h.status} allows a residual risk of at most {ceiling}, not {h.residual.risk}"
            )
    return problems


def check_coverage(log: HazardLog) -> list[str]:
    """A hazard without a control, or a control without a test, fails the build."""
    problems: list[str] = []
    for h in log.hazards:
        if not h.controls:
            problems.append(f"{h.id}: has no control")
        if not h.evidence:
            problems.append(f"{h.id}: has no evidence (a test proving its controls)")
    return problems


def defined_names(source: str) -> set[str]:
    """Functions, classes (and their methods, as Class.method) and module-level names in a module."""
    names: set[str] = set()

    def visit(body: Iterable[ast.stmt], prefix: str, module_level: bool) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names.add(prefix + node.name)
            elif isinstance(node, ast.ClassDef):
                names.add(prefix + node.name)
                visit(node.body, f"{prefix}{node.name}.", False)
            elif module_level and isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    for name in ast.walk(target):
                        if isinstance(name, ast.Name):
                            names.add(name.id)
            elif module_level and isinstance(node, ast.If | ast.Try):
                visit(node.body, prefix, True)
                for handler in getattr(node, "handlers", ()):
                    visit(handler.body, prefix, True)
                visit(node.orelse, prefix, True)

    visit(ast.parse(source).body, "", True)
    return names


def check_code(log: HazardLog, root: Path = ROOT) -> list[str]:
    """Each control names a file in the repository and a function or class defined in it."""
    problems: list[str] = []
    parsed: dict[str, set[str] | str] = {}
    for h in log.hazards:
        for control in h.controls:
            path = control.path
            if path not in parsed:
                file = (root / path).resolve()
                if Path(path).is_absolute() or ".." in Path(path).parts or not file.is_relative_to(root):
                    parsed[path] = "is not a path inside the repository"
                elif not file.is_file():
                    parsed[path] = "does not exist"
                else:
                    try:
                        parsed[path] = defined_names(file.read_text(encoding="utf-8"))
                    except SyntaxError as exc:
                        parsed[path] = f"cannot be parsed ({exc.msg}, line {exc.lineno})"
            names = parsed[path]
            if isinstance(names, str):
                problems.append(f"{h.id}: control {control.code}: {path} {names}")
            elif control.name not in names:
                problems.append(f"{h.id}: control {control.code}: {control.name} is not defined in {path}")
    return problems


def evidence_files(log: HazardLog) -> list[str]:
    return sorted({node.split("::", 1)[0] for h in log.hazards for node in h.evidence})


@dataclass(frozen=True)
class Collected:
    node_ids: frozenset[str]
    error: str | None = None  # what pytest said when collection did not succeed


def collect(files: Sequence[str], root: Path = ROOT) -> Collected:
    """The node ids pytest collects from these test files: one subprocess for all of them."""
    present = [f for f in files if (root / f).is_file()]
    if not present:
        return Collected(frozenset())
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    command = [
        sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", f"--rootdir={root}",
        *present,
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    prefixes = tuple(f"{f}::" for f in present)
    ids = frozenset(line for line in done.stdout.splitlines() if line.startswith(prefixes))
    error = None
    if done.returncode not in (0, 5):  # 5: nothing collected, reported per node id below
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        error = f"pytest could not collect the evidence files (exit {done.returncode}):\n{tail}"
    return Collected(ids, error)


def matches(node: str, collected: frozenset[str] | set[str]) -> bool:
    """A node id with a [param] must be collected exactly; one without matches every parametrisation."""
    if node in collected:
        return True
    if "[" in node:
        return False
    return any(c.split("[", 1)[0] == node for c in collected)


def check_evidence(log: HazardLog, collected: Collected, root: Path = ROOT) -> list[str]:
    """Each evidence node id names a test file that exists and a test pytest collects from it."""
    problems: list[str] = [collected.error] if collected.error else []
    for h in log.hazards:
        for node in h.evidence:
            path = node.split("::", 1)[0]
            if not (root / path).is_file():
                problems.append(f"{h.id}: evidence {node}: {path} does not exist")
            elif not matches(node, collected.node_ids):
                problems.append(f"{h.id}: evidence {node} is not collected by pytest")
    return problems


# --- the safety case's generated tables -----------------------------------------------------------

BLOCKS = ("risk-matrix", "hazard-summary")


def _begin(block: str) -> str:
    return f"<!-- BEGIN GENERATED {block}: `{WRITE_COMMAND}`; do not edit by hand -->"


def _end(block: str) -> str:
    return f"<!-- END GENERATED {block} -->"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render_matrix() -> str:
    lines = [
        "| likelihood \\ severity | " + " | ".join(SEVERITIES) + " |",
        "|---|" + "---|" * len(SEVERITIES),
    ]
    lines += [
        f"| **{likelihood}** | " + " | ".join(str(MATRIX[likelihood][s]) for s in SEVERITIES) + " |"
        for likelihood in reversed(LIKELIHOODS)
    ]
    lines += ["", "| risk | rating | what it means |", "|---|---|---|"]
    lines += [f"| {risk} | {name} | {meaning} |" for risk, (name, meaning) in RATINGS.items()]
    lines += [
        "",
        "| status | highest residual risk allowed |",
        "|---|---|",
        *(f"| {status} | {MAX_RESIDUAL[status]} |" for status in STATUSES),
    ]
    return "\n".join(lines)


def _short(control: Control) -> str:
    """services/triage/domain/screening.py:screen -> triage.domain.screening.screen"""
    module = control.path.removesuffix(".py").replace("/", ".").removeprefix("services.")
    return f"{module}.{control.name}"


def render_summary(log: HazardLog) -> str:
    lines = [
        "| id | hazard | initial risk | controls | evidence | residual risk | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for h in log.hazards:
        controls = ", ".join(dict.fromkeys(f"`{_short(c)}`" for c in h.controls))
        lines.append(
            f"| {h.id} | {_cell(h.title)} | {h.initial.label()} | {controls} | {len(h.evidence)} "
            f"| {h.residual.label()} | {h.status} |"
        )
    by_risk = {r: sum(h.residual.risk == r for h in log.hazards) for r in RATINGS}
    lines += [
        "",
        f"{len(log.hazards)} hazards; residual risk "
        + ", ".join(f"{r}: {n}" for r, n in sorted(by_risk.items()) if n)
        + "; "
        + ", ".join(f"{s}: {sum(h.status == s for h in log.hazards)}" for s in STATUSES)
        + ".",
    ]
    if log.pending:
        lines += ["", "Being analysed, not yet in the log (no controls or evidence claimed):", ""]
        lines += [f"- **{_cell(p.area)}**: {_cell(p.title)}" for p in log.pending]
    return "\n".join(lines)


def render(text: str, log: HazardLog) -> str:
    """The safety case with every generated block regenerated from the log."""
    contents = {"risk-matrix": render_matrix(), "hazard-summary": render_summary(log)}
    for block in BLOCKS:
        pattern = re.compile(
            re.escape(f"<!-- BEGIN GENERATED {block}") + r".*?" + re.escape(_end(block)), re.DOTALL
        )
        found = pattern.search(text)
        if found is None:
            raise ValueError(f"the safety case has no generated {block} block ({_end(block)})")
        replacement = f"{_begin(block)}\n\n{contents[block]}\n\n{_end(block)}"
        text = text[: found.start()] + replacement + text[found.end() :]
    return text


def check_case(log: HazardLog, case: Path = CASE) -> list[str]:
    try:
        text = case.read_text(encoding="utf-8")
        fresh = render(text, log)
    except (OSError, ValueError) as exc:
        return [f"{case.name}: {exc}"]
    if fresh != text:
        return [f"{case.name}: its generated tables are out of date with the log: run `{WRITE_COMMAND}`"]
    return []


def quick_problems(log: HazardLog, root: Path = ROOT) -> list[str]:
    """Every check except collecting the evidence."""
    return [*log.problems, *check_coverage(log), *check_risks(log), *check_code(log, root)]


def all_problems(log: HazardLog, root: Path = ROOT, case: Path = CASE) -> list[str]:
    collected = collect(evidence_files(log), root)
    return [*quick_problems(log, root), *check_evidence(log, collected, root), *check_case(log, case)]


def evidence_for(log: HazardLog, paths: Iterable[str]) -> list[str]:
    """The evidence of every hazard with a control in one of these files (what to re-run)."""
    wanted = {Path(p).as_posix().removeprefix("./") for p in paths}
    nodes = [n for h in log.hazards if any(c.path in wanted for c in h.controls) for n in h.evidence]
    return list(dict.fromkeys(nodes))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.safety.hazard_log", description=__doc__.split("\n")[0]
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="regenerate the tables in safety-case.md")
    action.add_argument(
        "--evidence-for", nargs="+", metavar="FILE", help="evidence to re-run for changed files"
    )
    args = parser.parse_args(argv)
    log = load()
    if args.evidence_for:
        print("\n".join(evidence_for(log, args.evidence_for)))
        return 0
    if args.write:
        text = CASE.read_text(encoding="utf-8")
        fresh = render(text, log)
        if fresh != text:
            CASE.write_text(fresh, encoding="utf-8")
        print(f"{CASE.relative_to(ROOT)}: {'rewritten' if fresh != text else 'already up to date'}")
        problems = quick_problems(log)
    else:
        problems = all_problems(log)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"hazard log: {len(log.hazards)} hazards, no problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
