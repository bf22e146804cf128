"""Every event into the reporting projections, pseudonymised on the way in.

A person becomes `person_key` (a keyed hash); names, NHS numbers, contact details and free text
never reach these tables (the events carry none, and nothing here copies a free-text field).
Applying an event is idempotent (the consumer's inbox applies each once; upserts by natural key
make a replay during a rebuild land the same way).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.clocks import national_clock, plan_clock
from contracts.events import EpisodeFacts, HandoverUpdated, ReferralEvent
from contracts.timezones import london_date
from services.reporting.domain import age_band, ethnicity_group, person_key, sex_category
from services.reporting.models import EpisodeFact, HandoverFact, ReferralFact
from shared.consumer import Subscription
from shared.events import CloudEvent
from shared.settings import Settings
from shared.sqltypes import utcnow

DURABLE = "reporting-projections"
# careplan record kinds → the episode fact each first-of time updates
RECORD_FIRSTS = {
    "contact": "first_attended_contact_at",
    "outcome_measure": "first_outcome_measure_at",
    "intervention": "first_intervention_at",
    "advice": "advice_or_signposting_at",
}
# Named record kinds only: `cmh.careplan.*.recorded` would also bring careplan's audit events,
# which only the gateway reads (issue 18).
SUBJECTS = (
    "cmh.triage.referral.>",
    "cmh.careplan.episode.>",
    "cmh.careplan.plan.agreed",
    "cmh.careplan.clock.>",
    *(f"cmh.careplan.{record}.recorded" for record in (*RECORD_FIRSTS, "assessment")),
    "cmh.directory.handover.updated",
)


Fact = ReferralFact | EpisodeFact | HandoverFact
F = TypeVar("F", ReferralFact, EpisodeFact, HandoverFact)
# session.info key: the facts a batch's events touch, loaded by `Projector.prepare` (None for a
# fact not yet projected), so the handlers find them without a query each.
_KNOWN = "cmh_reporting_facts"


async def _fact(session: AsyncSession, model: type[F], key: str) -> F | None:
    known: dict[tuple[type[Fact], str], Fact | None] | None = session.info.get(_KNOWN)
    if known is not None and (model, key) in known:
        return known[(model, key)]  # type: ignore[return-value]
    return await session.get(model, key)


def _new(session: AsyncSession, fact: Fact, key: str) -> None:
    session.add(fact)
    known: dict[tuple[type[Fact], str], Fact | None] | None = session.info.get(_KNOWN)
    if known is not None:
        known[(type(fact), key)] = fact


def pseudonym_key(settings: Settings) -> bytes:
    """The keyed hash's key: from settings, else a random key kept under var/ (embedded runs)."""
    if settings.reporting_pseudonym_key is not None:
        return settings.reporting_pseudonym_key.get_secret_value().encode()
    path = Path(settings.var_dir) / "reporting-pseudonym.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip().encode()


def _at(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def _earliest(current: datetime | None, new: datetime | None) -> datetime | None:
    if new is None:
        return current
    return new if current is None or new < current else current


def _day(moment: datetime | None) -> int | None:
    return london_date(moment).toordinal() if moment is not None else None


def refresh_clock_days(fact: EpisodeFact) -> None:
    """The clocks' start and stop as London day numbers (a stop does not depend on "now")."""
    from services.reporting.aggregates import episode_facts

    facts = episode_facts(fact)
    now = utcnow()
    plan, national = plan_clock(facts, now), national_clock(facts, now)
    fact.plan_start_day, fact.plan_stop_day = _day(plan.start), _day(plan.stop)
    fact.national_start_day, fact.national_stop_day = _day(national.start), _day(national.stop)
    fact.discharged_day = _day(fact.discharged_at)


class Projector:
    def __init__(self, key: bytes) -> None:
        self.key = key

    async def prepare(self, session: AsyncSession, events: Sequence[CloudEvent]) -> None:
        """A batch's facts in one query per table (the consumer's `prepare`): per event, the
        lookups were most of this consumer's time (py-spy: `AsyncSession.get` 60 %)."""
        wanted: dict[type[Fact], set[str]] = {ReferralFact: set(), EpisodeFact: set(), HandoverFact: set()}
        for event in events:
            data, kind = event.data or {}, event.type
            if kind.startswith("cmh.triage.referral."):
                wanted[ReferralFact].add(data["referral_id"])
            elif kind.startswith("cmh.careplan.") and data.get("episode_id"):
                wanted[EpisodeFact].add(data["episode_id"])
                wanted[ReferralFact].add(data["referral_id"])  # an opening copies the referral's facts
            elif kind == "cmh.directory.handover.updated":
                wanted[HandoverFact].add(data["handover_id"])
        known: dict[tuple[type[Fact], str], Fact | None] = {}
        for model, keys in wanted.items():
            if not keys:
                continue
            column = model.__mapper__.primary_key[0]
            found = {
                getattr(row, column.key): row
                for row in await session.scalars(select(model).where(column.in_(keys)))
            }
            known.update(((model, key), found.get(key)) for key in keys)
        session.info[_KNOWN] = known

    async def apply(self, session: AsyncSession, event: CloudEvent) -> None:
        data = event.data or {}
        kind = event.type
        if kind.startswith("cmh.triage.referral."):
            await self._referral(session, kind.rsplit(".", 1)[-1], data, event)
        elif kind.startswith("cmh.careplan.") and data.get("episode_id"):
            await self._episode(session, kind, data, event)
        elif kind == "cmh.directory.handover.updated":
            await self._handover(session, data, event)

    async def _referral(
        self, session: AsyncSession, verb: str, data: dict[str, Any], event: CloudEvent
    ) -> None:
        fact = await _fact(session, ReferralFact, data["referral_id"])
        if fact is None:
            if "person_id" not in data or "received_at" not in data:
                return
            fact = ReferralFact(
                referral_id=data["referral_id"],
                person_key=person_key(data["person_id"], self.key),
                received_at=datetime.fromisoformat(data["received_at"]),
            )
            _new(session, fact, data["referral_id"])
        for field in ("source", "place", "pathway"):
            if data.get(field) is not None:
                setattr(fact, field, data[field])
        if data.get("network_id") is not None:
            fact.network = data["network_id"]
        if data.get("team_id") is not None:
            fact.team = data["team_id"]
        if data.get("priority") is not None:
            fact.priority = int(data["priority"])
        if data.get("age") is not None:
            fact.age_band = age_band(int(data["age"]))
        if "sex" in data:
            fact.sex = sex_category(data.get("sex"))
        if "ethnicity" in data:
            fact.ethnicity = ethnicity_group(data.get("ethnicity"))
        if data.get("crisis") is not None:
            fact.crisis = bool(data["crisis"])
        if verb == "prioritised" and data.get("suggested_route"):
            fact.suggested_route = data["suggested_route"]
        if verb in ("routed", "transferred"):
            fact.route, fact.status = data.get("route"), "routed"
        elif verb == "signposted" and fact.status != "routed":
            fact.route = fact.route or "vcfse_signpost"
            fact.status = "signposted"
        elif verb == "closed":
            fact.status = "closed"
            fact.route = fact.route or data.get("alternative_route")
        elif verb == "contacted":
            fact.first_contact_at = _at(data.get("first_contact_at"))
            fact.response_minutes = data.get("response_minutes")
        fact.updated_at = utcnow()

    async def _episode(
        self, session: AsyncSession, kind: str, data: dict[str, Any], event: CloudEvent
    ) -> None:
        fact = await _fact(session, EpisodeFact, data["episode_id"])
        if fact is None:
            if "referral_received_at" not in data:
                return
            fact = EpisodeFact(
                episode_id=data["episode_id"],
                referral_id=data["referral_id"],
                person_key=person_key(data["person_id"], self.key),
                age_at_referral=int(data.get("age_at_referral", 0)),
                opened_at=event.time or utcnow(),
                referral_received_at=datetime.fromisoformat(data["referral_received_at"]),
                spell_started_at=datetime.fromisoformat(
                    data.get("spell_started_at") or data["referral_received_at"]
                ),
            )
            _new(session, fact, data["episode_id"])
            referral = await _fact(session, ReferralFact, data["referral_id"])
            if referral is not None:
                for field in ("age_band", "sex", "ethnicity", "source", "priority"):
                    setattr(fact, field, getattr(referral, field))
        fact.place, fact.network, fact.team, fact.pathway = (
            data.get("place"),
            data.get("network_id"),
            data.get("team_id"),
            data.get("pathway"),
        )
        at = _at(data.get("at"))
        if kind == "cmh.careplan.episode.opened":
            fact.reaccess = bool(data.get("reaccess"))
            # A re-access episode's plan clock starts at its opening (the linked assessment stands).
            started = _at(data.get("plan_clock_started_at"))
            fact.first_assessment_completed_at = _earliest(fact.first_assessment_completed_at, started)
        elif kind == "cmh.careplan.episode.discharged":
            fact.discharged_at = _at(data.get("discharged_at"))
        elif kind == "cmh.careplan.plan.agreed":
            fact.plan_agreed_at = _earliest(fact.plan_agreed_at, _at(data.get("agreed_at")))
        elif kind == "cmh.careplan.clock.at_risk":
            fact.at_risk_at = fact.at_risk_at or event.time
        elif kind == "cmh.careplan.clock.breached":
            fact.breached_at = fact.breached_at or event.time
        elif kind == "cmh.careplan.clock.corrected":
            self._clock_corrected(fact, data)
        elif kind.endswith(".recorded"):
            record = kind.split(".")[2]
            if record == "contact" and not data.get("attended"):
                pass
            elif record in RECORD_FIRSTS:
                setattr(fact, RECORD_FIRSTS[record], _earliest(getattr(fact, RECORD_FIRSTS[record]), at))
            elif record == "assessment":
                fact.assessment_started_at = _earliest(fact.assessment_started_at, at)
                fact.first_assessment_completed_at = _earliest(fact.first_assessment_completed_at, at)
                if data.get("meaningful"):
                    fact.first_meaningful_assessment_at = _earliest(fact.first_meaningful_assessment_at, at)
        refresh_clock_days(fact)
        fact.updated_at = utcnow()

    @staticmethod
    def _clock_corrected(fact: EpisodeFact, data: dict[str, Any]) -> None:
        """A late entry withdrew an at-risk or breach event: it is no longer counted. The plan
        clock's stop the correction carries is applied too (were the agreement not yet projected,
        the withdrawn breach would otherwise still be counted from the day numbers)."""
        if data.get("withdrawn") == "breached":
            fact.breached_at = None
        elif data.get("withdrawn") == "at_risk":
            fact.at_risk_at = None
        plan = (data.get("clocks") or {}).get("plan") or {}
        if plan.get("state") in ("met", "breached"):
            fact.plan_agreed_at = _earliest(fact.plan_agreed_at, _at(plan.get("stop")))

    async def _handover(self, session: AsyncSession, data: dict[str, Any], event: CloudEvent) -> None:
        fact = await _fact(session, HandoverFact, data["handover_id"])
        if fact is None:
            fact = HandoverFact(
                handover_id=data["handover_id"],
                referral_id=data["referral_id"],
                person_key=person_key(data["person_id"], self.key),
                service_id=data["service_id"],
                state=data["state"],
                offered_at=_at(data.get("at")) or utcnow(),
                version=0,
            )
            _new(session, fact, data["handover_id"])
        if int(data.get("version", 0)) < fact.version:
            return  # an older state arriving late
        fact.version = int(data.get("version", 0))
        fact.state = data["state"]
        at = _at(data.get("at"))
        if data["state"] == "accepted":
            fact.accepted_at = fact.accepted_at or at
        elif data["state"] == "completed":
            fact.completed_at = fact.completed_at or at
        elif data["state"] == "declined":
            fact.declined_at = fact.declined_at or at
        fact.updated_at = utcnow()


def subscription(settings: Settings) -> Subscription:
    projector = Projector(pseudonym_key(settings))
    return Subscription(
        durable=DURABLE,
        subjects=list(SUBJECTS),
        handler=projector.apply,
        prepare=projector.prepare,
        model=(ReferralEvent, EpisodeFacts, HandoverUpdated),
    )
