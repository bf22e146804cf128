"""The hazard log (docs/safety/hazard-log.yaml) agrees with the code, the tests and the safety case:
every hazard has controls that exist and evidence pytest collects, every risk is its DCB0129 matrix
cell, controls never raise a risk, statuses fit their residual risk, and the safety case's tables
are what the log generates. The checker is tested too, on small logs made to break each rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.safety import hazard_log as hl

# --- the real log ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def log() -> hl.HazardLog:
    return hl.load()


@pytest.fixture(scope="module")
def collected(log: hl.HazardLog) -> hl.Collected:
    return hl.collect(hl.evidence_files(log))  # one pytest subprocess for every evidence file


def report(problems: list[str]) -> str:
    return "\n".join(["", *problems])


def test_the_log_reads_with_unique_ids_and_no_malformed_entry(log: hl.HazardLog) -> None:
    assert log.problems == [], report(log.problems)
    assert log.hazards, "the hazard log is empty"
    ids = [h.id for h in log.hazards]
    assert len(ids) == len(set(ids))


def test_every_hazard_has_a_control_and_evidence(log: hl.HazardLog) -> None:
    problems = hl.check_coverage(log)
    assert problems == [], report(problems)


def test_every_risk_is_its_matrix_cell_and_controls_never_raise_it(log: hl.HazardLog) -> None:
    problems = hl.check_risks(log)
    assert problems == [], report(problems)


def test_every_control_names_code_that_exists(log: hl.HazardLog) -> None:
    problems = hl.check_code(log)
    assert problems == [], report(problems)


def test_every_evidence_node_id_is_collected_by_pytest(log: hl.HazardLog, collected: hl.Collected) -> None:
    problems = hl.check_evidence(log, collected)
    assert problems == [], report(problems)


def test_the_safety_case_tables_are_up_to_date_with_the_log(log: hl.HazardLog) -> None:
    problems = hl.check_case(log)
    assert problems == [], report(problems)


def test_the_checker_imports_no_project_code() -> None:
    code = (
        "import sys, tests.safety.hazard_log; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'services', 'gateway', 'shared'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=hl.ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


# --- the matrix ------------------------------------------------------------------------------------


def test_the_matrix_is_the_dcb0129_matrix() -> None:
    assert list(hl.MATRIX) == list(reversed(hl.LIKELIHOODS))
    assert all(list(row) == list(hl.SEVERITIES) for row in hl.MATRIX.values())
    # Corners and centre of the published matrix.
    assert hl.risk_of("minor", "very low") == 1
    assert hl.risk_of("catastrophic", "very high") == 5
    assert hl.risk_of("considerable", "medium") == 3
    assert hl.risk_of("catastrophic", "very low") == 3 and hl.risk_of("minor", "very high") == 3
    # Risk never falls as severity or likelihood rises.
    for likelihood in hl.LIKELIHOODS:
        row = [hl.risk_of(s, likelihood) for s in hl.SEVERITIES]
        assert row == sorted(row)
    for severity in hl.SEVERITIES:
        column = [hl.risk_of(severity, likelihood) for likelihood in hl.LIKELIHOODS]
        assert column == sorted(column)
    assert set(hl.RATINGS) == {1, 2, 3, 4, 5}


# --- the checker, on logs made to break each rule ---------------------------------------------------


def entry(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "HAZ-001",
        "title": "A hazard",
        "hazard": "Something goes wrong.",
        "causes": ["a cause"],
        "effects": ["an effect"],
        "initial": {"severity": "major", "likelihood": "medium", "risk": 3},
        "controls": [{"description": "a control", "code": "pkg/rules.py:check"}],
        "evidence": ["tests/test_rules.py::test_check"],
        "residual": {"severity": "major", "likelihood": "very low", "risk": 2},
        "status": "controlled",
    }
    base.update(changes)
    return base


def parse(*entries: dict[str, Any], pending: list[dict[str, Any]] | None = None) -> hl.HazardLog:
    document: dict[str, Any] = {"hazards": list(entries)}
    if pending is not None:
        document["pending"] = pending
    return hl.parse(yaml.safe_load(yaml.safe_dump(document)))


def problems_of(*entries: dict[str, Any]) -> list[str]:
    log = parse(*entries)
    return [*log.problems, *hl.check_coverage(log), *hl.check_risks(log)]


def test_a_well_formed_entry_passes() -> None:
    assert problems_of(entry()) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"controls": []}, "has no control"),
        ({"evidence": []}, "has no evidence"),
        ({"initial": {"severity": "major", "likelihood": "medium", "risk": 4}}, "matrix gives 3"),
        ({"residual": {"severity": "major", "likelihood": "very low", "risk": 1}}, "matrix gives 2"),
        (
            {"initial": {"severity": "major", "likelihood": "low", "risk": 3},
             "residual": {"severity": "major", "likelihood": "medium", "risk": 3}},
            "residual likelihood is higher",
        ),
        (
            {"initial": {"severity": "significant", "likelihood": "medium", "risk": 2},
             "residual": {"severity": "major", "likelihood": "very low", "risk": 2}},
            "residual severity is worse",
        ),
        (
            {"initial": {"severity": "significant", "likelihood": "high", "risk": 3},
             "residual": {"severity": "catastrophic", "likelihood": "low", "risk": 4}},
            "residual risk 4 is higher than initial 3",
        ),
        (
            {"residual": {"severity": "major", "likelihood": "medium", "risk": 3}, "status": "closed"},
            "status closed allows a residual risk of at most 2",
        ),
        (
            {"initial": {"severity": "major", "likelihood": "high", "risk": 4},
             "residual": {"severity": "major", "likelihood": "high", "risk": 4}},
            "status controlled allows a residual risk of at most 3",
        ),
        ({"status": "done"}, "is not one of open, controlled, closed"),
        ({"initial": {"severity": "awful", "likelihood": "medium", "risk": 3}}, "'awful' is not one of"),
        ({"initial": {"severity": "major", "likelihood": "medium"}}, "exactly severity, likelihood and risk"),
        ({"id": "H1"}, "must look like HAZ-001"),
        ({"evidences": ["x"]}, "unknown keys evidences"),
        ({"causes": []}, "causes: must not be empty"),
        ({"controls": [{"description": "no code"}]}, "exactly description and code"),
        ({"controls": [{"description": "d", "code": "pkg/rules.py"}]}, "is not 'path/to/file.py:"),
        ({"evidence": ["test_check"]}, "is not a pytest node id"),
        ({"evidence": ["tests/test_rules.py::test_check"] * 2}, "lists a node id twice"),
        ({"issue": "seventeen"}, "must be an issue number"),
    ],
)  # fmt: skip
def test_each_rule_is_enforced(changes: dict[str, Any], expected: str) -> None:
    problems = problems_of(entry(**changes))
    assert any(expected in p for p in problems), problems


def test_a_closed_hazard_with_an_acceptable_residual_risk_passes() -> None:
    assert problems_of(entry(status="closed")) == []
    open_and_high = entry(
        initial={"severity": "catastrophic", "likelihood": "high", "risk": 5},
        residual={"severity": "catastrophic", "likelihood": "medium", "risk": 4},
        status="open",
    )
    assert problems_of(open_and_high) == []


def test_duplicate_ids_are_refused() -> None:
    log = parse(entry(), entry(title="Another"))
    assert any("duplicate id" in p for p in log.problems), log.problems


def test_a_pending_hazard_cannot_claim_evidence_or_linger_once_logged() -> None:
    log = parse(entry(), pending=[{"area": "identity", "title": "A hazard"}])
    assert any("is now a hazard" in p for p in log.problems)
    log = parse(entry(), pending=[{"area": "crisis", "title": "T", "evidence": ["tests/x.py::test_y"]}])
    assert any("claims controls or evidence" in p for p in log.problems)
    log = parse(entry(), pending=[{"area": "crisis", "title": "Lost from the crisis view"}])
    assert log.problems == [] and [p.area for p in log.pending] == ["crisis"]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "rules.py").write_text(
        "LIMIT: int = 3\n"
        "ORDER = (1, 4, 2, 3)\n"
        "def check():\n    pass\n"
        "async def fetch():\n    pass\n"
        "class Rules:\n    def apply(self):\n        def inner():\n            pass\n"
    )
    (tmp_path / "pkg" / "broken.py").write_text("def (:\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_rules.py").write_text("")
    return tmp_path


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("pkg/rules.py:check", None),
        ("pkg/rules.py:fetch", None),
        ("pkg/rules.py:Rules", None),
        ("pkg/rules.py:Rules.apply", None),
        ("pkg/rules.py:LIMIT", None),
        ("pkg/rules.py:ORDER", None),
        ("pkg/rules.py:missing", "missing is not defined in pkg/rules.py"),
        ("pkg/rules.py:Rules.apply.inner", "is not defined"),
        ("pkg/rules.py:apply", "apply is not defined"),
        ("pkg/gone.py:check", "pkg/gone.py does not exist"),
        ("pkg/broken.py:check", "cannot be parsed"),
        ("../outside.py:check", "is not a path inside the repository"),
    ],
)
def test_controls_must_name_code_defined_in_the_file(repo: Path, code: str, expected: str | None) -> None:
    problems = hl.check_code(parse(entry(controls=[{"description": "d", "code": code}])), repo)
    if expected is None:
        assert problems == []
    else:
        assert len(problems) == 1 and expected in problems[0], problems


COLLECTED = hl.Collected(
    frozenset(
        {
            "tests/test_rules.py::test_check",
            "tests/test_rules.py::test_edges[0-camhs]",
            "tests/test_rules.py::test_edges[18-adult]",
            "tests/test_rules.py::TestRules::test_apply",
        }
    )
)


@pytest.mark.parametrize(
    ("node", "ok"),
    [
        ("tests/test_rules.py::test_check", True),
        ("tests/test_rules.py::test_edges", True),  # no [param]: any parametrisation
        ("tests/test_rules.py::test_edges[18-adult]", True),
        ("tests/test_rules.py::test_edges[65-older]", False),  # with [param]: exactly that one
        ("tests/test_rules.py::test_edge", False),  # a prefix of a name is not the name
        ("tests/test_rules.py::TestRules::test_apply", True),
        ("tests/test_rules.py::test_renamed", False),
        ("tests/test_gone.py::test_check", False),
    ],
)
def test_evidence_must_be_collected(repo: Path, node: str, ok: bool) -> None:
    problems = hl.check_evidence(parse(entry(evidence=[node])), COLLECTED, repo)
    assert (problems == []) is ok, problems


def test_a_collection_failure_is_reported(repo: Path) -> None:
    failed = hl.Collected(frozenset(), "pytest could not collect the evidence files (exit 2)")
    problems = hl.check_evidence(parse(entry()), failed, repo)
    assert problems[0].startswith("pytest could not collect") and "is not collected" in problems[1]


def test_collect_asks_pytest_for_node_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # a bare pytest is enough here, and quicker
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_tiny.py").write_text(
        "import pytest\n\n"
        "def test_one():\n    pass\n\n"
        "@pytest.mark.parametrize('n', [1, 2])\n"
        "def test_two(n):\n    pass\n"
    )
    (tmp_path / "tests" / "test_broken.py").write_text("import no_such_module_anywhere\n")
    got = hl.collect(["tests/test_tiny.py", "tests/test_broken.py", "tests/test_absent.py"], tmp_path)
    assert got.node_ids == {
        "tests/test_tiny.py::test_one",
        "tests/test_tiny.py::test_two[1]",
        "tests/test_tiny.py::test_two[2]",
    }
    assert got.error is not None and "exit 2" in got.error  # the broken file is reported, not ignored


def test_the_generated_tables_are_replaced_between_their_markers(tmp_path: Path) -> None:
    log = parse(entry(), pending=[{"area": "identity", "title": "Wrong person"}])
    case = tmp_path / "case.md"
    case.write_text(
        "# Case\n\n<!-- BEGIN GENERATED risk-matrix -->\nstale\n<!-- END GENERATED risk-matrix -->\n\n"
        "kept\n\n<!-- BEGIN GENERATED hazard-summary -->\n<!-- END GENERATED hazard-summary -->\n"
    )
    assert hl.check_case(log, case) != []
    case.write_text(hl.render(case.read_text(), log))
    assert hl.check_case(log, case) == []
    text = case.read_text()
    assert "stale" not in text and "kept" in text
    assert (
        "| HAZ-001 | A hazard | 3 (major, medium) | `pkg.rules.check` | 1 | 2 (major, very low) | controlled |"
        in text
    )
    assert "- **identity**: Wrong person" in text
    assert hl.render(text, log) == text  # regenerating is stable
    changed = parse(entry(status="closed"))
    assert hl.check_case(changed, case) != []  # a change to the log makes the table stale
    with pytest.raises(ValueError, match="no generated risk-matrix block"):
        hl.render("no markers", log)


def test_evidence_for_lists_what_to_rerun_after_changing_a_file() -> None:
    log = parse(
        entry(),
        entry(
            id="HAZ-002",
            controls=[{"description": "d", "code": "pkg/other.py:x"}],
            evidence=["tests/t.py::a"],
        ),
    )
    assert hl.evidence_for(log, ["pkg/rules.py"]) == ["tests/test_rules.py::test_check"]
    assert hl.evidence_for(log, ["./pkg/other.py", "pkg/rules.py"]) == [
        "tests/test_rules.py::test_check",
        "tests/t.py::a",
    ]
    assert hl.evidence_for(log, ["pkg/unrelated.py"]) == []
