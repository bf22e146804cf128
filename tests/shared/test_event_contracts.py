"""The typed event contracts (`contracts/events.py`) against their producers and consumers.

Generated from the suite's own tables, so a new subject, subscription or handler is covered
without anyone listing it: every catalogued subject has a model; every field a consumer's handler
reads from an event is declared by the model of a subject that consumer takes; `make_event` holds
producers to the model; the consumer refuses a broken payload before any handler runs.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import BaseModel, ValidationError

from cmh.serving import PROCESSES, app_factory_path
from contracts.events import EVENT_MODELS, EventPayload, ReferralRouted, ServiceWithdrawn
from contracts.vocabulary import Priority, Route
from shared.consumer import EventConsumer, Subscription
from shared.event_catalogue import CATALOGUE, payload_fields, subject_matches
from shared.events import ContractBroken, make_event
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_every_catalogued_subject_has_its_own_model() -> None:
    assert set(EVENT_MODELS) == set(CATALOGUE)
    for subject, model in EVENT_MODELS.items():
        assert subject == model.SUBJECT and CATALOGUE[subject].model is model
        assert model.model_config.get("frozen") is True, subject
    assert len({id(model) for model in EVENT_MODELS.values()}) == len(EVENT_MODELS)  # one each


def test_the_contracts_import_only_the_standard_library_and_pydantic() -> None:
    assert "__future__" in sys.stdlib_module_names
    for path in (ROOT / "contracts").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                top = node.module.split(".")[0]
                assert top in sys.stdlib_module_names | {"contracts", "pydantic"}, (path, top)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] in sys.stdlib_module_names, (path, alias.name)


# --- producers ------------------------------------------------------------------------------------

ROUTED = {"referral_id": "r-1", "person_id": "p-1", "priority": 2, "route": "focused_support"}


def test_a_producer_sends_only_what_the_model_declares() -> None:
    with pytest.raises(ContractBroken, match="does not declare: nhs_number"):
        make_event("triage", "referral", "routed", {**ROUTED, "nhs_number": "9434765919"})
    with pytest.raises(ContractBroken, match="does not declare: nhs_number"):
        make_event("triage", "referral", "routed", ReferralRouted(**ROUTED, nhs_number="9434765919"))


def test_a_producer_sends_every_required_field_with_its_type() -> None:
    with pytest.raises(ContractBroken, match="person_id: missing") as refused:
        make_event("triage", "referral", "routed", {"referral_id": "r-1"})
    with pytest.raises(ContractBroken, match="route: enum"):
        make_event("triage", "referral", "routed", {**ROUTED, "route": "somewhere"})
    with pytest.raises(ContractBroken, match="received_at"):  # a time without its UTC offset
        make_event("triage", "referral", "routed", {**ROUTED, "received_at": "2026-01-05T10:00:00"})
    assert "r-1" not in str(refused.value)  # names fields, never their values


def test_a_model_goes_only_on_its_own_subject() -> None:
    with pytest.raises(ContractBroken, match=r"not the contract of cmh\.triage\.referral\.closed"):
        make_event("triage", "referral", "closed", ReferralRouted(**ROUTED))
    event = make_event("directory", "service", "withdrawn", ServiceWithdrawn(service_id="s-1", version=3))
    assert event.data == {"service_id": "s-1", "version": 3}  # what was set, nothing added


def test_the_wire_shape_is_what_the_producer_gave() -> None:
    at = datetime(2026, 1, 5, 10, 0, 0, 123456, tzinfo=UTC)
    event = make_event(
        "triage", "referral", "routed", {**ROUTED, "decided_at": at.isoformat(), "team_id": None}
    )
    assert event.data == {**ROUTED, "decided_at": at.isoformat(), "team_id": None}
    payload = event.payload_as(ReferralRouted)
    assert payload.decided_at == at and payload.priority is Priority.URGENT
    assert payload.route is Route.FOCUSED_SUPPORT


def test_a_consumer_tolerates_a_field_a_newer_producer_adds() -> None:
    event = make_event("triage", "referral", "routed", ROUTED)
    newer = event.model_copy(update={"data": {**event.data, "added_later": True}})
    assert newer.payload_as(ReferralRouted).referral_id == "r-1"
    with pytest.raises(ContractBroken, match="not a ServiceWithdrawn"):
        newer.payload_as(ServiceWithdrawn)


def test_a_payload_is_frozen() -> None:
    payload = ReferralRouted(**ROUTED)
    with pytest.raises(ValidationError):
        payload.referral_id = "r-2"  # type: ignore[misc]


# --- consumers: every field a handler reads is one its subjects' models declare -------------------


def _subscriptions() -> Iterator[tuple[str, Subscription]]:
    """Every process's durable consumers, as the processes build them."""
    for process in PROCESSES:
        module = importlib.import_module(app_factory_path(process).partition(":")[0])
        if process == "gateway":
            from gateway.audit import audit_subscription

            yield process, audit_subscription()
        elif process == "reporting":
            from services.reporting import projections

            yield process, projections.subscription(Settings(reporting_pseudonym_key="contract-test"))
        else:
            yield from ((process, subscription) for subscription in module.SPEC.subscriptions)


def _handlers() -> Iterator[tuple[str, ModuleType, str, list[str]]]:
    """(process, its handler's module and name, the subjects it takes) for every durable."""
    for process, subscription in _subscriptions():
        module = inspect.getmodule(subscription.handler)
        assert module is not None
        name = getattr(subscription.handler, "__func__", subscription.handler).__name__
        yield process, module, name, list(subscription.subjects)


def _taken(filters: list[str]) -> list[str]:
    return sorted(s for s in CATALOGUE if any(subject_matches(pattern, s) for pattern in filters))


def _declared(subjects: list[str]) -> set[str]:
    """Every field name the subjects' models declare, at any depth."""
    names = set()
    for subject in subjects:
        for path, _kind, _required in payload_fields(EVENT_MODELS[subject]):
            names.add(path.rsplit(".", 1)[-1].removesuffix("[]"))
    return names


def _is_event_data(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "data" and isinstance(node.value, ast.Name)


def _payload_names(function: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    """The names in a handler function bound to an event's data: a `data` parameter, or a local
    assigned from `event.data` (`data = event.data or {}`)."""
    names = {arg.arg for arg in function.args.args if arg.arg == "data"}
    for node in ast.walk(function):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = node.value.values[0] if isinstance(node.value, ast.BoolOp) else node.value
            if _is_event_data(value) or _is_typed_payload(value):
                names.add(node.targets[0].id)
    return names


def _is_typed_payload(node: ast.expr) -> bool:
    """`event.payload_as(Model)` (its fields are read as attributes)."""
    return (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "payload_as"
    )


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    """A module's functions and methods by name (methods also as `Class.name`)."""
    found: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found[node.name] = node
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    found[item.name] = found.get(item.name, item)
    return found


def _reached(tree: ast.Module, handler: str) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    """The handler and every function of its module it calls, directly or not (`f(...)`,
    `self.f(...)`, `Class.f(...)`)."""
    functions = _functions(tree)
    seen: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    pending = [handler]
    while pending:
        name = pending.pop()
        if name in seen or name not in functions:
            continue
        seen[name] = functions[name]
        for node in ast.walk(functions[name]):
            if isinstance(node, ast.Call):
                func = node.func
                pending.append(func.id if isinstance(func, ast.Name) else getattr(func, "attr", ""))
            elif isinstance(node, ast.Name | ast.Attribute):  # a handler passed on (a dispatch table)
                pending.append(node.id if isinstance(node, ast.Name) else node.attr)
    return list(seen.values())


def fields_read(module: ModuleType, handler: str) -> Iterator[tuple[int, str]]:
    """(line, key) of every constant key a handler (and what it calls) reads from an event's data."""
    tree = ast.parse(Path(inspect.getfile(module)).read_text())
    for function in _reached(tree, handler):
        names = _payload_names(function)

        def is_payload(node: ast.expr, names: set[str] = names) -> bool:
            return (isinstance(node, ast.Name) and node.id in names) or _is_event_data(node)

        for node in ast.walk(function):
            key = None
            if isinstance(node, ast.Subscript) and is_payload(node.value):
                key = node.slice
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and is_payload(node.func.value)
                and node.args
            ):
                key = node.args[0]
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                yield node.lineno, key.value
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in names
                and node.attr not in {"get", "items", "keys", "values", "model_dump"}
            ):
                yield node.lineno, node.attr


SUBSCRIPTIONS = list(_handlers())


def test_the_subscription_table_is_found() -> None:
    handlers = {f"{module.__name__}.{handler}" for _, module, handler, _ in SUBSCRIPTIONS}
    assert len(handlers) >= 10, handlers
    assert {
        "services.careplan.store.apply_referral_event",
        "services.reporting.projections.apply",
    } <= handlers
    assert "gateway.audit.store_audit_event" in handlers


@pytest.mark.parametrize(
    ("process", "module", "handler", "filters"),
    SUBSCRIPTIONS,
    ids=[f"{process}:{module.__name__}.{handler}" for process, module, handler, _ in SUBSCRIPTIONS],
)
def test_every_field_a_consumer_reads_is_declared_by_its_producer(
    process: str, module: ModuleType, handler: str, filters: list[str]
) -> None:
    subjects = _taken(filters)
    assert subjects, f"{process} subscribes to {filters}, which no catalogued subject matches"
    declared = _declared(subjects)
    reads = [(module, line, key) for line, key in fields_read(module, handler)]
    if any(".registry." in subject for subject in subjects):  # the one registry applier they share
        registry = importlib.import_module("shared.registry_events")
        reads += [(registry, line, key) for line, key in fields_read(registry, "apply_registry_event")]
    undeclared = [f"{m.__name__}:{line} reads {key!r}" for m, line, key in reads if key not in declared]
    assert reads, f"{module.__name__}.{handler}: the reader found no field read"
    assert not undeclared, f"fields no model of {subjects} declares: {undeclared}"


@pytest.mark.parametrize(
    ("process", "subscription"), list(_subscriptions()), ids=lambda value: getattr(value, "durable", value)
)
def test_every_subscription_declares_the_models_of_what_it_takes(
    process: str, subscription: Subscription
) -> None:
    """The model(s) a subscription's handler is written for cover every subject its filters take, so
    the consumer's check (`shared.consumer`) never refuses an event the bus delivers to it."""
    assert subscription.models != (EventPayload,), f"{subscription.durable} declares no payload model"
    for subject in _taken(list(subscription.subjects)):
        model = EVENT_MODELS[subject]
        assert issubclass(model, subscription.models), (
            f"{subscription.durable} takes {subject} ({model.__name__}) but reads "
            f"{', '.join(m.__name__ for m in subscription.models)}"
        )


def test_the_field_reader_finds_reads() -> None:
    from services.careplan import store

    read = {key for _, key in fields_read(store, "apply_referral_event")}
    assert {"received_at", "reaccess_episode_id", "episode_rule"} <= read


def test_every_model_builds_from_its_required_fields_alone() -> None:
    """A producer that sends only what is required is understood (defaults are the consumer's)."""
    samples: dict[str, object] = {
        "text": "x",
        "integer": 1,
        "time": "2026-01-05T10:00:00+00:00",
        "boolean": True,
    }
    for subject, model in EVENT_MODELS.items():
        data = _minimal(model, samples)
        assert isinstance(model.model_validate(data), EventPayload), subject


def _minimal(model: type[BaseModel], samples: dict[str, object]) -> dict[str, object]:
    data: dict[str, object] = {}
    for name, field in model.model_fields.items():
        if not field.is_required():
            continue
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            data[name] = _minimal(annotation, samples)
        elif "list[" in str(annotation):
            data[name] = []
        elif "Literal" in str(annotation):
            data[name] = annotation.__args__[0]  # type: ignore[union-attr]
        else:
            kind = {str: "text", int: "integer", datetime: "time", bool: "boolean"}.get(annotation)  # type: ignore[call-overload]
            data[name] = samples[kind] if kind else samples["text"]
    return data


def test_the_consumer_refuses_a_payload_its_handler_was_not_written_for() -> None:
    """A subject the filters take but the declared model does not cover is refused (dead-lettered by
    the consumer), never handed to a handler that would misread it."""

    async def handler(_session: object, _event: object) -> None:  # pragma: no cover - never called
        raise AssertionError

    subscription = Subscription(
        durable="contract-test", subjects=["cmh.triage.referral.>"], handler=handler, model=ReferralRouted
    )
    consumer = EventConsumer(None, None, Settings(), "triage", subscription)  # type: ignore[arg-type]
    consumer._check(make_event("triage", "referral", "routed", ROUTED))
    with pytest.raises(ContractBroken, match="not what contract-test reads"):
        consumer._check(
            make_event("triage", "referral", "closed", {"referral_id": "r-1", "person_id": "p-1"})
        )
