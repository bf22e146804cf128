"""The event contracts: every subject the suite publishes, who publishes it, what it means and which
person data its payload carries (the payload's fields are its model in `contracts/events.py`) (issue 18 §2: events carry only the person data the consumer needs,
and the contracts say which carry any).

`person_data` names the payload fields that identify or describe a person: a name, NHS number, date
of birth, postcode or address, phone, email, or free text that may be about them (dotted paths; `[]`
for each item of a list). A pseudonymous `person_id` is not person data by itself: `person_id` says
only that one is present. `demographics` names the categories (age, sex, ethnicity) that reporting
groups by: not identifiers, but they narrow a person down together with others, so they are listed.

`tests/shared/test_event_catalogue.py` holds this to the code: every subject published anywhere is
here, every consumer's filter matches one, and sample payloads built by the producers carry exactly
the person data declared. `docs/events.md` is rendered from it (with each subject's consumers,
from the bus plan the caller gives, `cmh.serving.bus_plan`): `python -m cmh.event_catalogue
--write`, or `--check`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from contracts.events import AUDITED_SERVICES, RECORD_KINDS, REGISTRY_KINDS, EventPayload, model_for
from contracts.vocabulary import Priority, Route, Source

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "events.md"


@dataclass(frozen=True)
class EventContract:
    subject: str
    producer: str
    meaning: str
    person_data: tuple[str, ...] = ()
    person_id: bool = True
    demographics: tuple[str, ...] = ()
    note: str = ""

    @property
    def model(self) -> type[EventPayload]:
        """The payload's model (`contracts/events.py`): what the producer builds, consumers read."""
        model = model_for(self.subject)
        if model is None:
            raise LookupError(f"{self.subject} has no model in contracts/events.py")
        return model

    @property
    def carries_person_data(self) -> bool:
        return bool(self.person_data)

    def person_data_text(self) -> str:
        parts = []
        if self.person_data:
            parts.append(", ".join(f"`{field}`" for field in self.person_data))
        else:
            parts.append("none")
        if self.person_id:
            parts.append("person id")
        if self.demographics:
            parts.append("demographics: " + ", ".join(f"`{field}`" for field in self.demographics))
        text = "; ".join(parts)
        return f"{text} ({self.note})" if self.note else text


_REFERRAL_DEMOGRAPHICS = ("sex", "ethnicity", "age")
_EPISODE_DEMOGRAPHICS = ("age_at_referral",)


def _triage() -> list[EventContract]:
    def referral(verb: str, meaning: str, person_data: tuple[str, ...] = (), note: str = "") -> EventContract:
        return EventContract(
            f"cmh.triage.referral.{verb}", "triage", meaning, person_data,
            demographics=_REFERRAL_DEMOGRAPHICS, note=note,
        )  # fmt: skip

    return [
        referral("received", "A referral arrived (screened, or a re-access) and is on file."),
        referral("prioritised", "Its priority was suggested at intake or changed by a clinician."),
        referral("routed", "Routed to a clinical team, by a clinician or straight back on re-access."),
        referral(
            "transferred",
            "A routed referral moved to another team or route.",
            person_data=("reason",),
            note="`reason`: the clinician's free text, kept by careplan with the episode's transfer",
        ),
        referral(
            "closed",
            "Closed or declined; `episode_rule` says whether its episode ends.",
            person_data=("reason",),
            note="`reason`: the clinician's free text, kept by careplan with the discharge it makes",
        ),
        referral(
            "completed",
            "The episode of care a routed referral was in has ended: the request is fulfilled.",
        ),
        referral(
            "signposted", "Offered partner services (which, and whether the person consented to share)."
        ),
        EventContract(
            "cmh.triage.handover.requested",
            "triage",
            "The warm handovers the directory offers; with consent, who to contact. Only the directory reads it.",
            person_data=(
                "person.name",
                "person.phone",
                "person.email",
                "person.preferred_language",
                "person.interpreter_needed",
                "note",
            ),
            note="`person` and `note` (the referral's needs text) only with consent to share",
        ),
        referral("contacted", "The first face-to-face contact, against the response target."),
        referral(
            "identity_settled",
            "An identity review closed: the person on file confirmed, or a new person made.",
            note="`previous_person_id` is a person id too",
        ),
        EventContract(
            "cmh.triage.person.updated",
            "triage",
            "A person's record changed: which fields, never their values.",
        ),
    ]


def _careplan() -> list[EventContract]:
    def episode(subject: str, meaning: str) -> EventContract:
        return EventContract(subject, "careplan", meaning, demographics=_EPISODE_DEMOGRAPHICS)

    return [
        episode("cmh.careplan.episode.opened", "An episode of care opened for a routed referral."),
        episode("cmh.careplan.episode.linked", "A second referral joined the team's open episode."),
        episode("cmh.careplan.episode.transferred", "An open episode moved to another team or route."),
        episode("cmh.careplan.episode.discharged", "An episode ended (`reason` is a discharge code)."),
        episode(
            "cmh.careplan.plan.agreed", "The episode's care plan was first agreed: the plan clock stops."
        ),
        episode("cmh.careplan.clock.at_risk", "The four-week plan clock is close to breaching."),
        episode("cmh.careplan.clock.breached", "The four-week plan clock breached."),
        episode("cmh.careplan.clock.corrected", "A late entry withdrew an at-risk or breach event."),
        *(
            episode(
                f"cmh.careplan.{kind}.recorded",
                f"An episode's {kind.replace('_', ' ')} record was kept (facts and codes, no free text).",
            )
            for kind in RECORD_KINDS
        ),
    ]


PRACTITIONER_DATA = ("timeline[].attributes.name", "timeline[].attributes.registration")


def _registry() -> list[EventContract]:
    contracts = []
    for kind in REGISTRY_KINDS:
        for verb, meaning in (
            ("upserted", "created or changed (the record's whole timeline)"),
            ("retired", "retired (the record's whole timeline)"),
        ):
            practitioner = kind == "practitioner"
            contracts.append(
                EventContract(
                    f"cmh.registry.{kind}.{verb}",
                    "registry",
                    f"A registry {kind.replace('_', ' ')} was {meaning}.",
                    person_data=PRACTITIONER_DATA if practitioner else (),
                    person_id=False,
                    note="a practitioner (staff, not a person in care): name and professional registration"
                    if practitioner
                    else "",
                )
            )
    return contracts


def _directory() -> list[EventContract]:
    return [
        EventContract(
            "cmh.directory.service.published",
            "directory",
            "A partner service was published or changed (what triage matches needs to).",
            person_id=False,
            note="names, email and location postcodes are the organisation's and its service's",
        ),
        EventContract(
            "cmh.directory.service.withdrawn",
            "directory",
            "A partner service was taken out of the directory.",
            person_id=False,
        ),
        EventContract(
            "cmh.directory.handover.updated",
            "directory",
            "A warm handover was offered, accepted, declined or completed (its state, no reason).",
        ),
    ]


def _audit() -> list[EventContract]:
    return [
        EventContract(
            f"cmh.{service}.audit.recorded",
            service,
            "An access to person-identifiable data (who, what, why, outcome) for the gateway's audit trail.",
            note="`person_ids`: person ids only",
        )
        for service in AUDITED_SERVICES
    ]


CATALOGUE: dict[str, EventContract] = {
    contract.subject: contract
    for contract in (*_triage(), *_careplan(), *_registry(), *_directory(), *_audit())
}


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is one token, a final `>` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for index, part in enumerate(want):
        if part == ">":
            return len(have) > index
        if index >= len(have) or (part != "*" and part != have[index]):
            return False
    return len(want) == len(have)


def consumers_of(subject: str, plan: Mapping[str, Mapping[str, list[str]]]) -> list[str]:
    """The durables (from `bus_plan()`) whose filters take this subject."""
    return sorted(
        durable
        for durables in plan.values()
        for durable, filters in durables.items()
        if any(subject_matches(pattern, subject) for pattern in filters)
    )


def _annotation(annotation: Any) -> str:
    """A field's type as a reader of the contract says it: `time`, `text`, `Route or null`."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _annotation(args[0])
    if origin in (Union, UnionType):
        kinds = [_annotation(arg) for arg in args if arg is not type(None)]
        return " or ".join(kinds) + (" or null" if type(None) in args else "")
    if origin is Literal:
        return " / ".join(f"`{value}`" for value in args)
    if origin is list:
        return f"list of {_annotation(args[0])}"
    if origin is dict:
        return "object"
    names = {str: "text", int: "integer", float: "number", bool: "boolean", datetime: "time"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def payload_fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, str, bool]]:
    """(dotted path, type, required) of a model's fields, nested models' fields after their own."""
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        yield path, _annotation(field.annotation), field.is_required()
        for inner, listed in _nested(field.annotation):
            yield from payload_fields(inner, f"{path}{'[]' if listed else ''}.")


def _nested(annotation: Any, listed: bool = False) -> Iterator[tuple[type[BaseModel], bool]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation, listed
        return
    for arg in get_args(annotation):
        yield from _nested(arg, listed or get_origin(annotation) is list)


def render(plan: Mapping[str, Mapping[str, list[str]]]) -> str:
    """`docs/events.md`, with each subject's consumers from `plan` (`cmh.serving.bus_plan()`)."""
    carrying = [c.subject for c in CATALOGUE.values() if c.carries_person_data]
    lines = [
        "# Event contracts",
        "",
        "Generated from `shared/event_catalogue.py` by `python -m cmh.event_catalogue --write`;",
        "`tests/shared/test_event_catalogue.py` fails when this file is out of date. Consumers are the",
        "durables of `cmh.serving.bus_plan()` whose filters take the subject.",
        "",
        "*Person data* lists the payload fields that identify or describe a person (names, NHS number,",
        "date of birth, postcode or address, phone, email, free text); *none* means ids and codes only.",
        "A pseudonymous person id is not person data by itself (*person id* says one is present);",
        "*demographics* are the categories reporting groups by.",
        "",
        f"{len(CATALOGUE)} subjects; {len(carrying)} carry person data: "
        + ", ".join(f"`{subject}`" for subject in carrying)
        + ".",
        "",
        "| Subject | Producer | Meaning | Consumers | Person data |",
        "| --- | --- | --- | --- | --- |",
    ]
    for contract in sorted(CATALOGUE.values(), key=lambda c: c.subject):
        consumers = ", ".join(consumers_of(contract.subject, plan)) or "none"
        lines.append(
            f"| `{contract.subject}` | {contract.producer} | {contract.meaning.replace('|', '/')} "
            f"| {consumers} | {contract.person_data_text().replace('|', '/')} |"
        )
    lines += [
        "",
        "## Vocabularies",
        "",
        "The codes `contracts/vocabulary.py` defines once for every service:",
        "",
    ]
    for vocabulary in (Priority, Route, Source):
        codes = ", ".join(
            f"`{member.value}` ({member.name.lower().replace('_', ' ')})" for member in vocabulary
        )
        lines.append(f"- **{vocabulary.__name__}**: {codes}")
    lines += [
        "",
        "## Payloads",
        "",
        "Each subject's `data` is its model in `contracts/events.py`: the producer may send no field",
        "it does not declare, and consumers get it validated before their handler runs (a field a",
        "newer producer adds is tolerated). Fields marked *required* are always present; the rest may",
        "be absent or null. Times are ISO 8601 with a UTC offset.",
    ]
    for contract in sorted(CATALOGUE.values(), key=lambda c: c.subject):
        model = contract.model
        lines += ["", f"### `{contract.subject}`: `{model.__name__}`", ""]
        lines += [
            f"- `{path}`: {kind}{' (required)' if required else ''}"
            for path, kind, required in payload_fields(model)
        ]
    return "\n".join(lines) + "\n"
