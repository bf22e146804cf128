"""The event contracts (`shared/event_catalogue.py`) against the code: every subject published is
catalogued, every consumer's filter takes a catalogued subject, `docs/events.md` is current, and
payloads built by the producers carry exactly the person data the catalogue declares (issue 18 §2)."""

from __future__ import annotations

import ast
import importlib
import itertools
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cmh.serving import bus_plan
from contracts.clocks import ClockEvent
from services.careplan.app import create_app as create_careplan
from services.registry.schemas import Kind
from services.triage import domain as triage_domain
from services.triage.app import create_app as create_triage
from shared.event_catalogue import CATALOGUE, DOC_PATH, consumers_of, render, subject_matches
from shared.events import make_event
from shared.settings import Settings
from tests.careplan.support import apply, closed, routed, transferred
from tests.support import outbox_events, running_service
from tests.triage.support import CLINICIAN, EHR, load_registry, referral, registry_events

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*(ROOT / "services").rglob("*.py"), *(ROOT / "gateway").rglob("*.py")])
SOURCES = [path for path in SOURCES if "migrations" not in path.parts]


def _audit_calls() -> set[str]:
    """What in shared/audit.py stages an audit entry for a `service` (functions, and classes whose
    `__init__` takes one): `cmh.<service>.audit.recorded`, for each service that calls them."""
    names = set()
    for node in ast.parse((ROOT / "shared/audit.py").read_text()).body:
        functions = [node] if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else []
        if isinstance(node, ast.ClassDef):
            functions = [f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"]
        for function in functions:
            arguments = [*function.args.args, *function.args.kwonlyargs]
            if any(argument.arg == "service" for argument in arguments):
                names.add(node.name)
    return names - {"audit_data"}  # builds the entry; its callers (above) stage it


AUDIT_CALLS = _audit_calls()


# --- (a) every subject published anywhere is catalogued -----------------------------------------


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _constants(tree: ast.Module) -> dict[str, str]:
    """A module's string constants, its own and those it imports by name."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                value = getattr(importlib.import_module(node.module), alias.name, None)
                if isinstance(value, str):
                    found[alias.asname or alias.name] = value
        elif (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value.value
    return found


def _calls(tree: ast.AST, name: str) -> Iterator[ast.Call]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if called == name:
                yield node


def _careplan_record_kinds() -> set[str]:
    """The kinds `store.record(...)` publishes as `cmh.careplan.<kind>.recorded` (not publish=False)."""
    kinds = set()
    for call in _calls(_tree(ROOT / "services/careplan/store.py"), "record"):
        if len(call.args) < 3 or not isinstance(call.args[2], ast.Constant):
            continue
        if any(
            k.arg == "publish" and isinstance(k.value, ast.Constant) and k.value.value is False
            for k in call.keywords
        ):
            continue
        kinds.add(call.args[2].value)
    return kinds


def _registry_verbs() -> set[str]:
    calls = _calls(_tree(ROOT / "services/registry/store.py"), "_emit")
    return {call.args[3].value for call in calls if isinstance(call.args[3], ast.Constant)}


def _triage_verbs() -> set[str]:
    verbs = {verb for _, events in triage_domain.INTAKE.values() for verb in events}
    for transitions in triage_domain.LIFECYCLE.values():
        for transition in transitions.values():
            verbs.update(transition.events)
    return verbs


# The dynamic arguments of make_event, by file and expression: the modules' own lists of values.
DYNAMIC: dict[tuple[str, str], Callable[[], set[str]]] = {
    ("services/triage/store.py", "verb"): _triage_verbs,
    ("services/careplan/store.py", "kind"): _careplan_record_kinds,
    ("services/careplan/store.py", "clock_event.value"): lambda: {e.value for e in ClockEvent},
    ("services/registry/store.py", "kind.value"): lambda: {k.value for k in Kind},
    ("services/registry/store.py", "verb"): _registry_verbs,
}


def _values(node: ast.expr, relative: str, constants: dict[str, str]) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.Name) and node.id in constants:
        return {constants[node.id]}
    resolver = DYNAMIC.get((relative, ast.unparse(node)))
    if resolver is None:
        raise AssertionError(
            f"{relative}:{node.lineno}: make_event argument {ast.unparse(node)!r} is neither a literal nor "
            "a known list of values: add its values to DYNAMIC and its subjects to the catalogue"
        )
    values = resolver()
    assert values, (relative, ast.unparse(node))
    return values


def published_subjects() -> set[str]:
    subjects = set()
    for path in SOURCES:
        relative = path.relative_to(ROOT).as_posix()
        tree = _tree(path)
        constants = _constants(tree)
        for call in _calls(tree, "make_event"):
            service, entity, verb = (_values(arg, relative, constants) for arg in call.args[:3])
            subjects.update(f"cmh.{s}.{e}.{v}" for s, e, v in itertools.product(service, entity, verb))
        for name in AUDIT_CALLS:
            for call in _calls(tree, name):
                [service] = [k.value for k in call.keywords if k.arg == "service"]
                subjects.update(f"cmh.{s}.audit.recorded" for s in _values(service, relative, constants))
        for call in _calls(tree, "CloudEvent"):
            raise AssertionError(f"{relative}:{call.lineno}: build events with make_event")
    return subjects


def test_every_published_subject_is_catalogued() -> None:
    subjects = published_subjects()
    assert len(subjects) > 40  # the collection found the producers
    missing = sorted(subjects - set(CATALOGUE))
    assert not missing, f"published but not in shared/event_catalogue.py: {missing}"
    stale = sorted(set(CATALOGUE) - subjects)
    assert not stale, f"catalogued but published nowhere: {stale}"


def test_the_collection_reads_dynamic_subjects() -> None:
    subjects = published_subjects()
    assert {"cmh.triage.referral.transferred", "cmh.triage.referral.signposted"} <= subjects
    assert {"cmh.careplan.clock.breached", "cmh.careplan.review.recorded"} <= subjects
    assert "cmh.careplan.transfer.recorded" not in subjects  # published by its caller, not `record`
    assert {"cmh.registry.leadership_role.retired", "cmh.notify.audit.recorded"} <= subjects
    assert {"record_access", "record_access_to", "AccessDenied"} <= AUDIT_CALLS


def test_each_contract_is_well_formed() -> None:
    for subject, contract in CATALOGUE.items():
        assert subject == contract.subject and subject.split(".")[1] == contract.producer
        assert contract.meaning and len(contract.meaning) < 120
        assert len(set(contract.person_data)) == len(contract.person_data)


# --- (b) every consumer's filter takes a catalogued subject -------------------------------------


def test_subject_matching() -> None:
    assert subject_matches("cmh.*.audit.recorded", "cmh.triage.audit.recorded")
    assert subject_matches("cmh.triage.referral.>", "cmh.triage.referral.routed")
    assert not subject_matches("cmh.triage.>", "cmh.triage")
    assert not subject_matches("cmh.*.audit", "cmh.triage.audit.recorded")
    assert not subject_matches("cmh.triage.referral.routed", "cmh.triage.referral.closed")


def test_every_consumer_filter_matches_a_catalogued_subject() -> None:
    unmatched = [
        (process, durable, pattern)
        for process, durables in bus_plan().items()
        for durable, patterns in durables.items()
        for pattern in patterns
        if not any(subject_matches(pattern, subject) for subject in CATALOGUE)
    ]
    assert not unmatched, f"consumer filters no catalogued subject matches: {unmatched}"


def test_person_data_reaches_only_consumers_named_for_it() -> None:
    """Which durables receive events with person data (a change here is a decision to review)."""
    plan = bus_plan()
    receiving = {s: consumers_of(s, plan) for s, c in CATALOGUE.items() if c.carries_person_data}
    # The contact details for a warm handover reach the directory alone, not everyone hearing
    # of the signposting (journey, notifications, reporting).
    assert receiving["cmh.triage.handover.requested"] == ["directory-handovers"]
    assert "cmh.triage.referral.signposted" not in receiving
    assert receiving["cmh.registry.practitioner.upserted"] == ["careplan-registry"]


# --- (4) docs/events.md is generated and current ------------------------------------------------


def test_docs_events_md_is_current() -> None:
    assert DOC_PATH.exists() and DOC_PATH.read_text() == render(bus_plan()), (
        "docs/events.md is out of date: run python -m cmh.event_catalogue --write"
    )


# --- (c) the declared person data is what the producers put in ----------------------------------

GIVEN, FAMILY, PHONE, EMAIL = "Zebedee", "Quintrell", "07700 900123", "zebedee@example.org"
NEEDS_TEXT = "NEEDSTEXT: low mood since the bereavement"
REASON = "REASONTEXT: spoke to the person's daughter"
MARKERS = (
    GIVEN,
    FAMILY,
    PHONE,
    EMAIL,
    "943 476 5919",
    "9434765919",
    "1990-04-02",
    "PR1 3BQ",
    "NEEDSTEXT",
    "REASONTEXT",
)
# Keys that name person data wherever they appear in a person's event.
PERSON_KEYS = {
    "given_name",
    "family_name",
    "nhs_number",
    "birth_date",
    "postcode",
    "address",
    "phone",
    "email",
}


def _paths(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, f"{prefix}{key}" if not prefix else f"{prefix}.{key}")
    elif isinstance(value, list):
        for item in value:
            yield from _paths(item, f"{prefix}[]")
    else:
        yield prefix, value


def person_data_in(data: dict[str, Any]) -> set[str]:
    """The paths of a payload holding a marker value or named as person data."""
    found = set()
    for path, value in _paths(data):
        leaf = path.rsplit(".", 1)[-1].removesuffix("[]")
        if (isinstance(value, str) and any(marker in value for marker in MARKERS)) or leaf in PERSON_KEYS:
            found.add(path)
    return found


def assert_honest(subject: str, data: dict[str, Any], *, all_declared_present: bool = True) -> None:
    contract = CATALOGUE[subject]
    found = person_data_in(data)
    undeclared = found - set(contract.person_data)
    assert not undeclared, f"{subject} carries person data its contract does not declare: {undeclared}"
    present = {path for path, _ in _paths(data)}
    if all_declared_present:
        absent = set(contract.person_data) - present
        assert not absent, f"{subject} declares person data its payload does not carry: {absent}"
    assert ("person_id" in data) == contract.person_id, subject
    for field in contract.demographics:
        assert field in data, (subject, field)


def _person_referral() -> dict[str, Any]:
    return referral(
        person={
            "given_name": GIVEN, "family_name": FAMILY, "contact": {"phone": PHONE, "email": EMAIL},
            "ethnicity": "A",
        },
        needs_text=NEEDS_TEXT,
    )  # fmt: skip


async def test_triage_referral_events_carry_what_they_declare(make_settings: Callable[..., Settings]) -> None:
    clinician = {**CLINICIAN, "X-End-User-Id": "dr.jones", "X-End-User-Role": "team_lead"}
    async with running_service("triage", create_triage, make_settings()) as (client, app):
        await load_registry(app)
        submitted = await client.post(
            "/triage/referrals",
            json=_person_referral(),
            headers={**EHR, "Idempotency-Key": "catalogue-1"},
        )
        assert submitted.status_code == 201, submitted.text
        path = f"/triage/referrals/{submitted.json()['id']}/decisions"
        for body in (
            {"action": "reprioritise", "priority": 2, "reason": REASON},
            {"action": "accept", "reason": REASON},
            {
                "action": "transfer", "route": "focused_support", "reason": REASON,
                "team_id": "fylde-coast-focused-support-adult-mh",
            },
            {"action": "close", "reason": REASON},
        ):  # fmt: skip
            response = await client.post(path, json=body, headers=clinician)
            assert response.status_code == 200, response.text
        events = [e for e in await outbox_events(app) if ".audit." not in e["type"]]
    verbs = [e["type"] for e in events]
    for verb in ("received", "prioritised", "routed", "transferred", "closed"):
        assert f"cmh.triage.referral.{verb}" in verbs
    for event in events:
        assert_honest(event["type"], event["data"])
    # The clinician's reason goes only where careplan keeps it.
    for event in events:
        assert ("reason" in event["data"]) == event["type"].endswith((".transferred", ".closed")), event[
            "type"
        ]


class _People:
    """A session that holds one person, for the signpost payload builder."""

    def __init__(self, details: dict[str, Any]) -> None:
        self.person = SimpleNamespace(details=json.dumps(details))

    async def get(self, _model: Any, _id: str) -> Any:
        return self.person


@pytest.mark.parametrize("consent", [True, False])
async def test_the_signposted_handover_carries_contact_details_only_with_consent(consent: bool) -> None:
    from services.triage.store import _handover_data, _signpost_facts

    referral = SimpleNamespace(
        id="r-1", person_id="p-1", referring_org="P81001", status="signposted", version=2,
        consent_to_share=consent, place_key="lancashire", identity_review_open=False, person_as_referred=None,
        details=json.dumps({"needs": ["loneliness"], "needs_text": NEEDS_TEXT, "sex": "female"}),
    )  # fmt: skip
    person = {
        "given_name": GIVEN, "family_name": FAMILY, "contact": {"phone": PHONE, "email": EMAIL},
        "preferred_language": "Polish", "interpreter_needed": True, "birth_date": "1990-04-02",
    }  # fmt: skip
    data = await _handover_data(_People(person), referral, ["svc-1"])  # type: ignore[arg-type]
    assert_honest("cmh.triage.handover.requested", data, all_declared_present=consent)
    assert person_data_in(_signpost_facts(referral, ["svc-1"])) == set()  # type: ignore[arg-type]
    if not consent:
        assert person_data_in(data) == set() and "person" not in data and "note" not in data


async def test_careplan_episode_events_leave_triage_reasons_behind(
    make_settings: Callable[..., Settings],
) -> None:
    from services.careplan import store

    received = datetime.now(UTC) - timedelta(days=3)
    triage_events = [
        routed("r-cat", received_at=received, decided_at=received + timedelta(hours=1)),
        transferred("r-cat", received_at=received, decided_at=received + timedelta(days=1)),
        closed("r-cat", received_at=received, decided_at=received + timedelta(days=2)),
    ]
    for event in triage_events:
        event.data["reason"] = REASON
    settings = make_settings(careplan_clock_scan_seconds=3600)
    async with running_service("careplan", create_careplan, settings) as (_client, app):
        for worker in app.state.workers:
            await worker.stop()
        async with app.state.db.transaction() as session:
            for event in registry_events(kinds=("team", "organisation")):
                await store.apply_registry_event(session, event)
        await apply(SimpleNamespace(app=app), *triage_events)  # type: ignore[arg-type]
        events = [e for e in await outbox_events(app) if ".audit." not in e["type"]]
    kinds = {e["type"] for e in events}
    assert {"cmh.careplan.episode.opened", "cmh.careplan.episode.transferred"} <= kinds
    assert {"cmh.careplan.episode.discharged", "cmh.careplan.discharge.recorded"} <= kinds
    for event in events:
        assert_honest(event["type"], event["data"])


def test_handover_updates_carry_no_person_data() -> None:
    from services.directory.handovers import _updated_event

    handover = SimpleNamespace(
        id="h-1", referral_id="r-1", person_id="p-1", service_id="svc-1", owner="GB-CHC-1", state="declined",
        reason=REASON, version=2, updated_at=datetime.now(UTC),
    )  # fmt: skip
    assert_honest("cmh.directory.handover.updated", _updated_event(handover, "partner-app"))  # type: ignore[arg-type]


def test_audit_entries_carry_ids_only() -> None:
    from shared.audit import AuditAction, audit_data

    data = audit_data(
        _caller(), service="triage", action=AuditAction.READ, resource_type="Referral",
        resource_ids=["r-1"], person_ids=["p-1"],
    )  # fmt: skip
    event = make_event("triage", "audit", "recorded", data)
    found = person_data_in(event.data)
    assert not found and "person_id" not in event.data and event.data["person_ids"] == ["p-1"]


def _caller() -> Any:
    return SimpleNamespace(
        client_id="c", organisation="RW5", kind=SimpleNamespace(value="admin"), end_user_id=None,
        end_user_role=None, purpose=SimpleNamespace(value="direct_care"), token_id="t",
    )  # fmt: skip
