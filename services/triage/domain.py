"""Triage screening rules, as pure functions (no I/O, no database, no clock: `at` is passed in).

Triage is a trusted assessor, not an eligibility gate: `screen` always ends with an offer (a
clinical route, a team, or named partner services), and every step it takes is recorded as a
`Rule` a clinician can read. Coverage (place, network, pathway, candidate teams) comes from
`shared.coverage`, the same rules the registry answers `/registry/resolve` with.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any

from contracts.vocabulary import Priority, Route, Source
from shared.clocks import crisis_target_minutes
from shared.coverage import Resolution, Snapshot, TeamCandidate, TeamView, open_at, resolve
from shared.problems import Refusal
from shared.timezones import LONDON

# --- enums -------------------------------------------------------------------------------------
# Priority, Source and Route are the suite's shared vocabulary (contracts/vocabulary.py).


URGENCY_ORDER: tuple[Priority, ...] = (
    Priority.EMERGENCY,
    Priority.VERY_URGENT,
    Priority.URGENT,
    Priority.ROUTINE,
)
_RANK = {priority: rank for rank, priority in enumerate(URGENCY_ORDER)}


def more_urgent(a: Priority, b: Priority) -> Priority:
    """The more urgent of two priorities (by clinical urgency, not by MHSDS code)."""
    return a if _RANK[Priority(a)] <= _RANK[Priority(b)] else b


class Risk(StrEnum):
    SUICIDAL_IDEATION = "suicidal_ideation"
    SUICIDAL_INTENT = "suicidal_intent"
    SUICIDAL_PLAN = "suicidal_plan"
    RECENT_SELF_HARM = "recent_self_harm"
    HARM_TO_OTHERS = "harm_to_others"
    SAFEGUARDING = "safeguarding"
    PSYCHOSIS = "psychosis"
    SUBSTANCE_USE = "substance_use"


# Indicators that someone may come to harm within hours: never routine, never merely urgent.
IMMINENT_RISKS: frozenset[Risk] = frozenset(
    {Risk.SUICIDAL_INTENT, Risk.SUICIDAL_PLAN, Risk.RECENT_SELF_HARM, Risk.HARM_TO_OTHERS, Risk.PSYCHOSIS}
)


class RequestedUrgency(StrEnum):
    ROUTINE = "routine"
    URGENT = "urgent"
    VERY_URGENT = "very_urgent"
    EMERGENCY = "emergency"


REQUESTED_PRIORITY: dict[RequestedUrgency, Priority] = {
    RequestedUrgency.ROUTINE: Priority.ROUTINE,
    RequestedUrgency.URGENT: Priority.URGENT,
    RequestedUrgency.VERY_URGENT: Priority.VERY_URGENT,
    RequestedUrgency.EMERGENCY: Priority.EMERGENCY,
}


class Need(StrEnum):
    """Presenting needs. Clinical needs are triage's own snake_case codes; the VCFSE support needs
    are exactly the codes of the directory's needs taxonomy
    (services/directory/reference/needs-taxonomy.json, hyphens kept), so a need can be matched
    against partner services without translation."""

    # clinical
    LOW_MOOD = "low_mood"
    ANXIETY = "anxiety"
    TRAUMA = "trauma"
    OCD = "ocd"
    SELF_HARM = "self_harm"
    PSYCHOSIS = "psychosis"
    BIPOLAR = "bipolar"
    EATING_DIFFICULTIES = "eating_difficulties"
    PERSONALITY_DIFFICULTIES = "personality_difficulties"
    MEMORY_CONCERNS = "memory_concerns"
    NEURODEVELOPMENTAL = "neurodevelopmental"
    SUBSTANCE_USE = "substance_use"
    # VCFSE support (directory needs taxonomy codes)
    HOUSING = "housing"
    HOMELESSNESS = "homelessness"
    TENANCY_SUPPORT = "tenancy-support"
    BENEFITS_DEBT = "benefits-debt"
    WELFARE_BENEFITS = "welfare-benefits"
    DEBT_ADVICE = "debt-advice"
    EMPLOYMENT_TRAINING = "employment-training"
    ALCOHOL_AND_DRUG_SUPPORT = "substance-use"
    ALCOHOL = "alcohol"
    DRUGS = "drugs"
    LONELINESS_SOCIAL_INCLUSION = "loneliness-social-inclusion"
    CARERS_SUPPORT = "carers-support"
    PEER_SUPPORT = "peer-support"
    PHYSICAL_ACTIVITY_WELLBEING = "physical-activity-wellbeing"
    SAFE_SPACES = "safe-spaces"
    CRISIS_CAFE = "crisis-cafe"
    BEREAVEMENT = "bereavement"
    SUICIDE_PREVENTION = "suicide-prevention"
    DOMESTIC_ABUSE = "domestic-abuse"
    CULTURALLY_SPECIFIC = "culturally-specific"
    LGBTQ_SUPPORT = "lgbtq-support"
    YOUNG_PEOPLE = "young-people"
    COUNSELLING = "counselling"
    FOOD_ESSENTIALS = "food-essentials"
    LEGAL_ADVICE = "legal-advice"
    DIGITAL_INCLUSION = "digital-inclusion"
    EATING_DIFFICULTIES_SUPPORT = "eating-difficulties"
    NEURODIVERSITY = "neurodiversity"
    VETERANS_SUPPORT = "veterans-support"


CLINICAL_NEEDS: frozenset[Need] = frozenset(
    {
        Need.LOW_MOOD, Need.ANXIETY, Need.TRAUMA, Need.OCD, Need.SELF_HARM, Need.PSYCHOSIS, Need.BIPOLAR,
        Need.EATING_DIFFICULTIES, Need.PERSONALITY_DIFFICULTIES, Need.MEMORY_CONCERNS,
        Need.NEURODEVELOPMENTAL, Need.SUBSTANCE_USE,
    }
)  # fmt: skip
# Needs that call for medium/long-term specialist support rather than a short front-door offer.
COMPLEX_NEEDS: frozenset[Need] = frozenset(
    {Need.PSYCHOSIS, Need.BIPOLAR, Need.EATING_DIFFICULTIES, Need.PERSONALITY_DIFFICULTIES}
)
SOCIAL_NEEDS: frozenset[Need] = frozenset(Need) - CLINICAL_NEEDS


@dataclass(frozen=True)
class Rule:
    """One rule that fired: a stable id for audit and tests, and a sentence for the clinician."""

    id: str
    text: str


def _aware(at: datetime, what: str = "a moment") -> None:
    # Opening hours and deadlines are judged across clock changes: a naive time is ambiguous.
    if at.tzinfo is None or at.tzinfo.utcoffset(at) is None:
        raise ValueError(f"{what} needs a time zone")


# --- priority ----------------------------------------------------------------------------------


def _risk_list(risks: Iterable[Risk]) -> str:
    return ", ".join(sorted(str(r).replace("_", " ") for r in risks))


def suggest_priority(
    risks: frozenset[Risk], source: Source, requested: RequestedUrgency | None, *, crisis_path: bool = False
) -> tuple[Priority, list[Rule]]:
    """The clinical response priority the risk indicators call for, and why. A referrer's
    requested urgency can raise it, never lower it: the risks set a floor. A referral raised on
    the crisis path is at least urgent, so it is never lost from the crisis queue: it keeps a
    deadline until a practitioner records contact or downgrades it with a reason."""
    rules: list[Rule] = []
    if Risk.SUICIDAL_INTENT in risks and Risk.SUICIDAL_PLAN in risks:
        priority = Priority.EMERGENCY
        rules.append(Rule("P1-intent-and-plan", "Suicidal intent with a plan: emergency (priority 1)."))
    elif Risk.HARM_TO_OTHERS in risks and Risk.PSYCHOSIS in risks:
        priority = Priority.EMERGENCY
        rules.append(
            Rule(
                "P1-harm-to-others-and-psychosis",
                "Risk of harm to others with psychotic symptoms: emergency (priority 1).",
            )
        )
    elif imminent := IMMINENT_RISKS & risks:
        priority = Priority.VERY_URGENT
        rules.append(
            Rule(
                "P4-imminent-risk",
                f"Imminent risk indicated ({_risk_list(imminent)}): very urgent (priority 4).",
            )
        )
    elif source == Source.AE:
        priority = Priority.VERY_URGENT
        rules.append(
            Rule("P4-ae-liaison", "Referred from A&E: very urgent, for psychiatric liaison within the hour.")
        )
    elif Risk.SUICIDAL_IDEATION in risks:
        priority = Priority.URGENT
        rules.append(
            Rule("P2-suicidal-ideation", "Suicidal thoughts without intent or plan: urgent (priority 2).")
        )
    elif Risk.SAFEGUARDING in risks:
        priority = Priority.URGENT
        rules.append(Rule("P2-safeguarding", "Safeguarding concern: urgent (priority 2)."))
    else:
        priority = Priority.ROUTINE
        rules.append(Rule("P3-no-risk-indicators", "No urgent risk indicators: routine (priority 3)."))

    if requested is not None:
        asked = REQUESTED_PRIORITY[RequestedUrgency(requested)]
        if more_urgent(asked, priority) != priority:
            rules.append(
                Rule(
                    "P-requested-raises",
                    f"The referrer asked for {asked.name.lower().replace('_', ' ')}, more urgent than the "
                    f"risks alone call for: raised to priority {int(asked)}.",
                )
            )
            priority = asked
        elif asked != priority:
            rules.append(
                Rule(
                    "P-requested-not-lowered",
                    f"The referrer asked for {asked.name.lower().replace('_', ' ')}; a request never lowers "
                    f"the priority the risks call for.",
                )
            )
    if crisis_path and priority == Priority.ROUTINE:
        priority = Priority.URGENT
        rules.append(
            Rule(
                "P2-crisis-path",
                "Raised on the crisis path without coded risk indicators: at least urgent (priority 2), on the "
                "crisis queue with a deadline until contact is recorded or a practitioner downgrades it.",
            )
        )
    return priority, rules


# --- crisis targets ----------------------------------------------------------------------------


# Minutes from referral to the first attended face-to-face contact. The brief sets no stricter
# target for an emergency than for very urgent; the suite uses the one-hour A&E liaison standard.
def crisis_target(priority: Priority, source: Source) -> int | None:
    """Minutes to first face-to-face contact (`shared.clocks`, one definition with reporting);
    an A&E referral is seen by liaison within the hour."""
    return crisis_target_minutes(int(priority), source.value)


def deadline(received_at: datetime, priority: Priority, source: Source) -> datetime | None:
    """When the first face-to-face contact is due (the crisis queue is ordered by this)."""
    _aware(received_at, "the time a referral was received")
    minutes = crisis_target(priority, source)
    # Elapsed minutes, not wall-clock: added in UTC, so a clock change inside the window is no error.
    return None if minutes is None else received_at.astimezone(UTC) + timedelta(minutes=minutes)


# --- identity ----------------------------------------------------------------------------------

_NHS_DIGITS = re.compile(r"[0-9]{10}")


def nhs_number_valid(value: str) -> bool:
    """NHS number: 10 digits (spaces and hyphens ignored) whose last is the modulus 11 check digit
    of the first nine (weights 10 down to 2; 11 → 0; 10 means no valid number has these nine)."""
    digits = value.replace(" ", "").replace("-", "")
    if not _NHS_DIGITS.fullmatch(digits):  # ASCII only: str.isdigit would admit other scripts
        return False
    total = sum(int(d) * w for d, w in zip(digits[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(digits[9])


def normalise_nhs_number(value: str) -> str:
    """The 10 digits of a valid NHS number, or ValueError."""
    if not nhs_number_valid(value):
        raise ValueError("not a valid NHS number (10 digits with a modulus 11 check digit)")
    return value.replace(" ", "").replace("-", "")


def _letters(value: str) -> str:
    # Casefold first (ß → ss), then NFKD splits accents into combining marks, which are not letters.
    return "".join(ch for ch in unicodedata.normalize("NFKD", value.casefold()) if ch.isalpha())


def name_key(given: str, family: str) -> str:
    """A matching key for names typed differently ('Zoë O'Brien' = 'zoe obrien'): used to flag
    possible duplicates for a person, never to merge them."""
    return f"{_letters(family)}|{_letters(given)}"


def age_on(birth: date, day: date) -> int:
    """Completed years on `day`. Someone born on 29 February turns a year older on 1 March in a
    common year (their birthday has not been reached on 28 February)."""
    if day < birth:
        raise ValueError("the day is before the date of birth")
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


# --- out of area -------------------------------------------------------------------------------

# UK postcode areas and the Crown Dependencies, by the area's Royal Mail name.
POSTCODE_AREAS: dict[str, str] = {
    "AB": "Aberdeen", "AL": "St Albans", "B": "Birmingham", "BA": "Bath", "BB": "Blackburn",
    "BD": "Bradford", "BH": "Bournemouth", "BL": "Bolton", "BN": "Brighton", "BR": "Bromley",
    "BS": "Bristol", "BT": "Belfast", "CA": "Carlisle", "CB": "Cambridge", "CF": "Cardiff",
    "CH": "Chester", "CM": "Chelmsford", "CO": "Colchester", "CR": "Croydon", "CT": "Canterbury",
    "CV": "Coventry", "CW": "Crewe", "DA": "Dartford", "DD": "Dundee", "DE": "Derby", "DG": "Dumfries",
    "DH": "Durham", "DL": "Darlington", "DN": "Doncaster", "DT": "Dorchester", "DY": "Dudley",
    "E": "London E", "EC": "London EC", "EH": "Edinburgh", "EN": "Enfield", "EX": "Exeter",
    "FK": "Falkirk", "FY": "Blackpool", "G": "Glasgow", "GL": "Gloucester", "GU": "Guildford",
    "GY": "Guernsey", "HA": "Harrow", "HD": "Huddersfield", "HG": "Harrogate", "HP": "Hemel Hempstead",
    "HR": "Hereford", "HS": "Outer Hebrides", "HU": "Hull", "HX": "Halifax", "IG": "Ilford",
    "IM": "Isle of Man", "IP": "Ipswich", "IV": "Inverness", "JE": "Jersey", "KA": "Kilmarnock",
    "KT": "Kingston upon Thames", "KW": "Kirkwall", "KY": "Kirkcaldy", "L": "Liverpool", "LA": "Lancaster",
    "LD": "Llandrindod Wells", "LE": "Leicester", "LL": "Llandudno", "LN": "Lincoln", "LS": "Leeds",
    "LU": "Luton", "M": "Manchester", "ME": "Rochester", "MK": "Milton Keynes", "ML": "Motherwell",
    "N": "London N", "NE": "Newcastle upon Tyne", "NG": "Nottingham", "NN": "Northampton",
    "NP": "Newport", "NR": "Norwich", "NW": "London NW", "OL": "Oldham", "OX": "Oxford", "PA": "Paisley",
    "PE": "Peterborough", "PH": "Perth", "PL": "Plymouth", "PO": "Portsmouth", "PR": "Preston",
    "RG": "Reading", "RH": "Redhill", "RM": "Romford", "S": "Sheffield", "SA": "Swansea",
    "SE": "London SE", "SG": "Stevenage", "SK": "Stockport", "SL": "Slough", "SM": "Sutton",
    "SN": "Swindon", "SO": "Southampton", "SP": "Salisbury", "SR": "Sunderland", "SS": "Southend-on-Sea",
    "ST": "Stoke-on-Trent", "SW": "London SW", "SY": "Shrewsbury", "TA": "Taunton", "TD": "Galashiels",
    "TF": "Telford", "TN": "Tonbridge", "TQ": "Torquay", "TR": "Truro", "TS": "Cleveland",
    "TW": "Twickenham", "UB": "Southall", "W": "London W", "WA": "Warrington", "WC": "London WC",
    "WD": "Watford", "WF": "Wakefield", "WN": "Wigan", "WR": "Worcester", "WS": "Walsall",
    "WV": "Wolverhampton", "YO": "York", "ZE": "Lerwick",
}  # fmt: skip

_AREA = re.compile(r"[A-Z]+")


def receiving_area(district: str) -> str:
    """The postcode area a district belongs to, named for the referral onward: 'M1' → 'postcode
    area M (Manchester)'."""
    match = _AREA.match(re.sub(r"\s+", "", district or "").upper())
    area = match.group(0) if match else ""
    name = POSTCODE_AREAS.get(area)
    return f"postcode area {area} ({name})" if name else f"postcode area {area}"


# --- directory matching ------------------------------------------------------------------------


@dataclass(frozen=True)
class DirectoryServiceView:
    """What triage keeps of a published partner service (from directory events)."""

    service_id: str
    name: str
    organization_name: str
    needs: frozenset[str]  # needs taxonomy codes
    districts: frozenset[str]  # postcode districts its service areas cover
    has_service_area: bool  # False: no declared area, serves everywhere
    minimum_age: int | None
    maximum_age: int | None
    slots: tuple[tuple[int, time, time], ...]  # (weekday, Monday 0; opens; closes), Europe/London
    active: bool


@dataclass(frozen=True)
class ServiceMatch:
    service_id: str
    name: str
    organization_name: str
    needs_matched: tuple[str, ...]
    open_now: bool


_END_OF_DAY = time(23, 59)  # a day-only HSDS schedule is stored as 00:00-23:59: all day


def _slot_open(slots: Iterable[tuple[int, time, time]], weekday: int, now: time) -> bool:
    for day, opens, closes in slots:
        if closes > opens:
            if day == weekday and opens <= now and (now < closes or closes == _END_OF_DAY):
                return True
        elif (day == weekday and now >= opens) or (day == (weekday - 1) % 7 and now < closes):
            return True  # runs past midnight
    return False


def _serves(service: DirectoryServiceView, needs: frozenset[str], district: str, age: int) -> bool:
    return (
        service.active
        and bool(service.needs & needs)
        and (not service.has_service_area or district in service.districts)
        and (service.minimum_age is None or age >= service.minimum_age)
        and (service.maximum_age is None or age <= service.maximum_age)
    )


def _district_key(district: str | None) -> str:
    return re.sub(r"\s+", "", district or "").upper()


class DirectoryIndex:
    """Published partner services filed by need and by the districts they cover, so matching a
    referral looks only at the services that could serve it (not every service in the directory:
    at 50,000 services a full scan per referral dominated intake). Inactive services are not
    filed; a service with no declared area is filed under "anywhere" for each of its needs.
    Updated in place as services change: `put` replaces a service, `remove` forgets it."""

    def __init__(self, services: Iterable[DirectoryServiceView] = ()) -> None:
        self._services: dict[str, DirectoryServiceView] = {}
        self._by_need_district: dict[tuple[str, str], dict[str, DirectoryServiceView]] = {}
        self._by_need_anywhere: dict[str, dict[str, DirectoryServiceView]] = {}
        for service in services:
            self.put(service)

    def __len__(self) -> int:
        return len(self._services)

    def _slots(self, service: DirectoryServiceView) -> Iterable[dict[str, DirectoryServiceView]]:
        for need in service.needs:
            if not service.has_service_area:
                yield self._by_need_anywhere.setdefault(need, {})
            else:
                for district in service.districts:
                    yield self._by_need_district.setdefault((need, district), {})

    def put(self, service: DirectoryServiceView) -> None:
        self.remove(service.service_id)
        if not service.active:
            return
        self._services[service.service_id] = service
        for slot in self._slots(service):
            slot[service.service_id] = service

    def remove(self, service_id: str) -> None:
        service = self._services.pop(service_id, None)
        if service is not None:
            for slot in self._slots(service):
                slot.pop(service_id, None)

    def candidates(self, needs: Iterable[str], district: str) -> list[DirectoryServiceView]:
        """Every filed service meeting one of `needs` that covers `district` or declares no area
        (a superset of what `match_services` keeps: it still checks age and opening)."""
        district = _district_key(district)
        found: dict[str, DirectoryServiceView] = {}
        for need in needs:
            found.update(self._by_need_district.get((need, district), {}))
            found.update(self._by_need_anywhere.get(need, {}))
        return list(found.values())


def match_services(
    services: Iterable[DirectoryServiceView] | DirectoryIndex,
    needs: frozenset[str],
    district: str,
    age: int,
    at: datetime,
    limit: int = 5,
) -> list[ServiceMatch]:
    """Partner services for these needs where the person lives, at their age: the most needs met
    first, then those open now (so a warm handover can happen today), then by name."""
    _aware(at)
    if limit < 0:
        raise ValueError("limit cannot be negative")
    local = at.astimezone(LONDON)
    weekday, now = local.weekday(), local.time().replace(tzinfo=None)
    district = _district_key(district)
    wanted = frozenset(str(n) for n in needs)
    if isinstance(services, DirectoryIndex):
        services = services.candidates(wanted, district)
    matches = [
        ServiceMatch(
            service.service_id,
            service.name,
            service.organization_name,
            tuple(sorted(service.needs & wanted)),
            _slot_open(service.slots, weekday, now),
        )
        for service in services
        if _serves(service, wanted, district, age)
    ]
    matches.sort(key=lambda m: (-len(m.needs_matched), not m.open_now, m.name.casefold(), m.service_id))
    return matches[:limit]


# --- re-access ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Discharge:
    """The person's most recent discharge, with the named worker who stays their key contact."""

    episode_id: str
    team_id: str
    named_worker_id: str | None
    discharged_at: datetime
    reaccess_until: datetime


# --- screening ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferralFacts:
    age: int  # completed years at referral
    source: Source
    risks: frozenset[Risk]
    needs: frozenset[str]
    requested: RequestedUrgency | None
    consent_to_share: bool
    postcode: str
    referring_org: str | None = None  # ODS code of the referrer (an A&E's trust finds its liaison team)
    crisis_path: bool = False  # raised through the crisis app's path: never off the crisis queue


@dataclass(frozen=True)
class Suggestion:
    priority: Priority
    pathway: str | None
    alongside: tuple[str, ...]
    place: dict[str, str] | None
    network: dict[str, str] | None
    route: Route
    team: dict[str, Any] | None
    signposts: tuple[ServiceMatch, ...]
    receiving_area: str | None
    target_minutes: int | None
    rules: tuple[Rule, ...]
    reaccess_episode_id: str | None
    named_worker_id: str | None
    # The person's most recent discharge, as context for triage, inside the window or not.
    previous_episode: dict[str, Any] | None = None


CRISIS_PRIORITIES = frozenset({Priority.EMERGENCY, Priority.VERY_URGENT})


def _label(offer: str) -> str:
    return offer.replace("_", " ")


def _team_dict(team: TeamView, is_open: bool, reasons: Iterable[str]) -> dict[str, Any]:
    return {
        "id": team.id,
        "key": team.key,
        "name": team.name,
        "offer": team.offer,
        "open": is_open,
        "reasons": list(reasons),
    }


def _pick(resolution: Resolution, *, open_only: bool = False) -> TeamCandidate | None:
    """The first open candidate, else (unless only open will do) the first candidate."""
    for candidate in resolution.teams:
        if candidate.open:
            return candidate
    if open_only or not resolution.teams:
        return None
    return resolution.teams[0]


@dataclass
class _Routing:
    route: Route
    team: dict[str, Any] | None = None


class _Screen:
    """One screening: the facts, the coverage and the rules fired so far."""

    def __init__(self, facts: ReferralFacts, snapshot: Snapshot, at: datetime, rules: list[Rule]) -> None:
        self.facts, self.snapshot, self.at, self.rules = facts, snapshot, at, rules

    def resolve(self, offer: str) -> Resolution:
        return resolve(self.snapshot, self.facts.postcode, self.facts.age, offer, self.at)

    def team(self, offer: str, *, open_only: bool = False) -> dict[str, Any] | None:
        candidate = _pick(self.resolve(offer), open_only=open_only)
        return None if candidate is None else _team_dict(candidate.team, candidate.open, candidate.reasons)

    def no_team(self, offer: str, district: str, pathway: str | None) -> None:
        who = f" for the {pathway} pathway" if pathway else ""
        self.rules.append(
            Rule(
                "R-no-team",
                f"No team offers {_label(offer)} in {district}{who}: the triage team arranges the offer directly.",
            )
        )


def hospital_liaison(snapshot: Snapshot, facts: ReferralFacts, at: datetime) -> dict[str, Any] | None:
    """The liaison team of the hospital an A&E referral comes from (registry key `liaison-<ods>`):
    it sees the person in the department, wherever they live."""
    if facts.source != Source.AE or not facts.referring_org:
        return None
    key = f"liaison-{facts.referring_org.lower()}"
    for team in snapshot.teams:
        if team.key == key:
            is_open, reason = open_at(team.hours, at)
            return _team_dict(team, is_open, [reason])
    return None


def _crisis(screen: _Screen, district: str, discharge: Discharge | None) -> _Routing:
    facts, rules = screen.facts, screen.rules
    routing: _Routing | None = None
    if facts.source == Source.AE:
        team = hospital_liaison(screen.snapshot, facts, screen.at) or screen.team("liaison")
        if team is not None:
            rules.append(
                Rule("R-ae-liaison", f"Referred from A&E: {team['name']} sees the person in the department.")
            )
            routing = _Routing(Route.CRISIS_RESPONSE, team)
        else:
            rules.append(
                Rule("R-ae-no-liaison", f"No liaison team is recorded for {district}: crisis routing.")
            )
    if routing is None:
        response = screen.resolve("crisis_response")
        open_team = _pick(response, open_only=True)
        if open_team is not None:
            rules.append(
                Rule(
                    "R-crisis-team-open",
                    f"{open_team.team.name} is open now: a crisis response on the day.",
                )
            )
            routing = _Routing(Route.CRISIS_RESPONSE, _team_dict(open_team.team, True, open_team.reasons))
        else:
            if response.teams:
                closed = response.teams[0]
                hours = closed.reasons[-1] if closed.reasons else "closed"
                rules.append(Rule("R-crisis-team-closed", f"{closed.team.name} is {hours}."))
            else:
                rules.append(Rule("R-no-crisis-team", f"No crisis response team covers {district}."))
            line = screen.team("crisis_line", open_only=True)
            if line is not None:
                rules.append(Rule("R-crisis-line", f"{line['name']} is open now: the round-the-clock route."))
                routing = _Routing(Route.CRISIS_LINE, line)
            else:
                home = screen.team("home_treatment")
                if home is not None:
                    rules.append(Rule("R-home-treatment", f"No crisis line open: {home['name']}."))
                    routing = _Routing(Route.HOME_TREATMENT, home)
    if routing is None:
        # Still an offer: the route stands and the on-call clinician finds the team.
        rules.append(
            Rule(
                "R-no-crisis-service",
                f"No crisis service is recorded for {district}: escalate to the on-call clinician now.",
            )
        )
        routing = _Routing(Route.CRISIS_RESPONSE)
    if discharge is not None and screen.at < discharge.reaccess_until:
        rules.append(
            Rule(
                "R-tell-named-worker",
                f"Discharged from episode {discharge.episode_id} within the re-access window: the named "
                "worker's team is to be told; the crisis route stands.",
            )
        )
    return routing


def _reaccess(screen: _Screen, discharge: Discharge) -> _Routing:
    team: dict[str, Any] = {"id": discharge.team_id}
    for view in screen.snapshot.teams:
        if view.id == discharge.team_id:
            is_open, hours = open_at(view.hours, screen.at)
            team = _team_dict(
                view, is_open, [f"named worker's team for episode {discharge.episode_id}", hours]
            )
            break
    local_until = discharge.reaccess_until.astimezone(LONDON).date().isoformat()
    screen.rules.append(
        Rule(
            "R-reaccess",
            f"Discharged within the re-access window (until {local_until}): straight back to the named "
            f"worker's team{' (' + team['name'] + ')' if 'name' in team else ''}.",
        )
    )
    screen.rules.append(
        Rule("R-reaccess-linked", "no new assessment: previous assessment and plan are linked")
    )
    return _Routing(Route.REACCESS, team)


def _urgent(screen: _Screen, district: str, pathway: str | None) -> _Routing:
    if screen.facts.source == Source.INPATIENT_DISCHARGE:
        offer, route = "home_treatment", Route.HOME_TREATMENT
        text = "Urgent, after an inpatient stay: home treatment, seen within 24 hours."
        rule_id = "R-urgent-home-treatment"
    else:
        offer, route = "crisis_response", Route.CRISIS_RESPONSE
        text = "Urgent: the crisis response team assesses within 24 hours, whether or not it is open now."
        rule_id = "R-urgent-crisis-response"
    screen.rules.append(Rule(rule_id, text))
    team = screen.team(offer)
    if team is None:
        screen.no_team(offer, district, pathway)
    return _Routing(route, team)


def _routine(screen: _Screen, district: str, pathway: str | None, matches: list[ServiceMatch]) -> _Routing:
    facts, rules = screen.facts, screen.rules
    needs = facts.needs
    complex_needs = sorted(str(n) for n in COMPLEX_NEEDS if n in needs)
    if complex_needs:
        rules.append(
            Rule(
                "R-complex-needs",
                f"Complex needs ({', '.join(n.replace('_', ' ') for n in complex_needs)}): focused support "
                "from the team for the person's pathway.",
            )
        )
        route = Route.FOCUSED_SUPPORT
    elif facts.source == Source.INPATIENT_DISCHARGE:
        rules.append(Rule("R-inpatient-discharge", "After an inpatient stay: the secondary care front door."))
        route = Route.FRONT_DOOR_SECONDARY
    elif any(n in CLINICAL_NEEDS for n in needs):
        rules.append(
            Rule("R-clinical-needs", "Mental health needs without complexity: the primary care front door.")
        )
        route = Route.FRONT_DOOR_PRIMARY
    elif facts.consent_to_share and matches:
        rules.append(
            Rule(
                "R-vcfse-signpost",
                "Practical and social needs only, with consent: signpost to partner services.",
            )
        )
        route = Route.VCFSE_SIGNPOST
    elif facts.consent_to_share:
        rules.append(
            Rule(
                "R-no-partner-service",
                "No matching partner service was found for these needs here: staying well support instead.",
            )
        )
        route = Route.STAYING_WELL
    else:
        rules.append(
            Rule(
                "R-staying-well",
                "No clinical needs and no consent to share with partners: staying well support.",
            )
        )
        route = Route.STAYING_WELL
    if route == Route.VCFSE_SIGNPOST:
        return _Routing(route)  # the named partner services are the offer
    team = screen.team(str(route))
    if team is None and route in (Route.FRONT_DOOR_PRIMARY, Route.FRONT_DOOR_SECONDARY):
        # Front doors may not serve every pathway (e.g. CAMHS): the pathway's focused support team does.
        team = screen.team("focused_support")
        if team is not None:
            rules.append(
                Rule(
                    "R-front-door-pathway",
                    f"No front door serves the {pathway} pathway in {district}: {team['name']} instead.",
                )
            )
            route = Route.FOCUSED_SUPPORT
    if team is None:
        screen.no_team(str(route), district, pathway)
    return _Routing(route, team)


def screen(
    facts: ReferralFacts,
    snapshot: Snapshot,
    services: Sequence[DirectoryServiceView] | DirectoryIndex,
    discharge: Discharge | None,
    at: datetime,
) -> Suggestion:
    """The suggested priority, pathway, route, team and signposts for a referral, with the rules
    that fired. A suggestion, not a decision: a clinician accepts or overrides it."""
    _aware(at)
    priority, rules = suggest_priority(
        facts.risks, facts.source, facts.requested, crisis_path=facts.crisis_path
    )
    target = crisis_target(priority, facts.source)
    coverage = resolve(snapshot, facts.postcode, facts.age, None, at)
    district = coverage.district

    if coverage.out_of_area:
        area = receiving_area(district)
        liaison = hospital_liaison(snapshot, facts, at)
        if liaison is not None:
            # In our A&E now: liaison sees them here; follow-up belongs to their home area.
            rules.append(
                Rule(
                    "R-ae-liaison-out-of-area",
                    f"Referred from A&E: {liaison['name']} sees the person in the department; they live in "
                    f"{district}, so follow-up is referred on to {area}.",
                )
            )
            return Suggestion(
                priority,
                None,
                (),
                None,
                None,
                Route.CRISIS_RESPONSE,
                liaison,
                (),
                area,
                target,
                tuple(rules),
                None,
                None,
            )
        rules.append(Rule("R-out-of-area", f"{district} is outside this system: refer on to {area}."))
        return Suggestion(
            priority,
            None,
            (),
            None,
            None,
            Route.OUT_OF_AREA,
            None,
            (),
            area,
            target,
            tuple(rules),
            None,
            None,
        )

    # The pathway comes from the age bands alone, so a child is never on the adult pathway.
    pathway = coverage.pathway.key if coverage.pathway else None
    if coverage.pathway is not None:
        rules.append(Rule("A-pathway-by-age", f"Age {facts.age} at referral: {coverage.pathway.name}."))
    else:
        rules.append(Rule("A-no-pathway", f"Age {facts.age} at referral: no age-banded pathway recorded."))
    rules.append(Rule("C-coverage", "; ".join(r for r in coverage.reasons if not r.startswith("age ")) + "."))

    social = frozenset(str(n) for n in facts.needs if n in SOCIAL_NEEDS)
    matches = match_services(services, social, district, facts.age, at) if social else []

    work = _Screen(facts, snapshot, at, rules)
    live = discharge is not None and at < discharge.reaccess_until
    reaccess: Discharge | None = None
    if discharge is not None and not live:
        # Context, not a route: the clinician sees who knew the person.
        until = discharge.reaccess_until.astimezone(LONDON).date().isoformat()
        worker = f", named worker {discharge.named_worker_id}" if discharge.named_worker_id else ""
        rules.append(
            Rule(
                "R-reaccess-window-ended",
                f"The re-access window after episode {discharge.episode_id} (team {discharge.team_id}{worker}) "
                f"ended on {until}: screened as a new referral; the previous episode is context.",
            )
        )
    if priority in CRISIS_PRIORITIES or facts.crisis_path:
        routing = _crisis(work, district, discharge)  # a crisis takes precedence over re-access
    else:
        if discharge is not None and live:
            reaccess = discharge
            routing = _reaccess(work, discharge)
        elif priority == Priority.URGENT:
            routing = _urgent(work, district, pathway)
        else:
            routing = _routine(work, district, pathway, matches)

    # Signposts name options alongside any route; offering them to partners needs consent.
    signposts: tuple[ServiceMatch, ...] = ()
    if social:
        names = ", ".join(m.name for m in matches)
        if not matches:
            rules.append(Rule("S-no-match", "No partner service matches these needs for this person here."))
        elif facts.consent_to_share:
            signposts = tuple(matches)
            rules.append(Rule("S-signposts", f"Partner services for these needs: {names}."))
        else:
            rules.append(
                Rule(
                    "S-needs-consent",
                    f"Partner services match ({names}) but there is no consent to share: tell the person "
                    "about them; no handover is offered.",
                )
            )
    if target is not None:
        rules.append(Rule("T-target", f"First face-to-face contact due within {target} minutes of referral."))

    return Suggestion(
        priority=priority,
        pathway=pathway,
        alongside=tuple(p.key for p in coverage.alongside),
        place=(
            {"id": coverage.place.id, "key": coverage.place.key, "name": coverage.place.name}
            if coverage.place
            else None
        ),
        network=(
            {"id": coverage.network.id, "key": coverage.network.key, "name": coverage.network.name}
            if coverage.network
            else None
        ),
        route=routing.route,
        team=routing.team,
        signposts=signposts,
        receiving_area=None,
        target_minutes=target,
        rules=tuple(rules),
        reaccess_episode_id=reaccess.episode_id if reaccess else None,
        named_worker_id=reaccess.named_worker_id if reaccess else None,
        previous_episode=(
            {
                "episode_id": discharge.episode_id,
                "team_id": discharge.team_id,
                "named_worker_id": discharge.named_worker_id,
                "discharged_at": discharge.discharged_at.isoformat(),
                "reaccess_until": discharge.reaccess_until.isoformat(),
                "within_reaccess_window": live,
            }
            if discharge is not None
            else None
        ),
    )


# --- decisions and the referral lifecycle --------------------------------------------------------


class DecisionAction(StrEnum):
    ACCEPT = "accept"  # take the suggestion as it stands
    OVERRIDE = "override"  # choose another route or team (with a reason) before routing
    DECLINE = "decline"  # not for this service, still with an alternative offer
    CLOSE = "close"  # a duplicate, withdrawn or completed referral (with a reason)
    TRANSFER = "transfer"  # after routing: another team or route, applied to the episode
    REPRIORITISE = "reprioritise"  # change the clinical priority (with a reason), e.g. a crisis downgrade


class ReferralStatus(StrEnum):
    RECEIVED = "received"  # awaiting triage
    ROUTED = "routed"  # with a clinical team (careplan opens the episode)
    SIGNPOSTED = "signposted"  # the offer is named partner services
    CLOSED = "closed"  # declined with an alternative, or closed with a reason


class Intake(StrEnum):
    """How a referral enters the lifecycle."""

    SCREENED = "screened"  # awaits a triage decision
    REACCESS = "reaccess"  # within the re-access window: straight back to the named worker's team


class Target(StrEnum):
    """Where a decision leads, before the route is known: the route decides between the two."""

    BY_ROUTE = "by_route"  # routed to a team, or signposted when the route is the VCFSE signpost
    ROUTED = "routed"
    SAME = "same"  # the status stays (a transfer, a change of priority)
    CLOSED = "closed"


@dataclass(frozen=True)
class Transition:
    target: Target
    events: tuple[str, ...]  # the `cmh.triage.referral.<verb>` events this transition publishes
    note: str


# The referral lifecycle, as data: which decision each status allows, where it leads and what it
# publishes. Anything not listed is refused (409) and publishes nothing. Besides these, any
# decision that changes the priority publishes `prioritised`, and offering partner services
# (with consent) publishes `signposted`, which the directory turns into warm handovers.
INTAKE: dict[Intake, tuple[ReferralStatus, tuple[str, ...]]] = {
    Intake.SCREENED: (ReferralStatus.RECEIVED, ("received", "prioritised")),
    Intake.REACCESS: (ReferralStatus.ROUTED, ("received", "prioritised", "routed")),
}
LIFECYCLE: dict[ReferralStatus, dict[DecisionAction, Transition]] = {
    ReferralStatus.RECEIVED: {
        DecisionAction.ACCEPT: Transition(Target.BY_ROUTE, ("routed",), "the suggestion is accepted"),
        DecisionAction.OVERRIDE: Transition(Target.BY_ROUTE, ("routed",), "another route or team"),
        DecisionAction.DECLINE: Transition(Target.CLOSED, ("closed",), "declined, with an alternative"),
        DecisionAction.CLOSE: Transition(Target.CLOSED, ("closed",), "closed with a reason"),
        DecisionAction.REPRIORITISE: Transition(Target.SAME, ("prioritised",), "priority changed"),
    },
    ReferralStatus.ROUTED: {
        DecisionAction.TRANSFER: Transition(
            Target.SAME, ("transferred",), "careplan moves the open episode to the new team"
        ),
        DecisionAction.CLOSE: Transition(
            Target.CLOSED, ("closed",), "careplan ends the open episode (discharged: referral closed)"
        ),
        DecisionAction.REPRIORITISE: Transition(Target.SAME, ("prioritised",), "priority changed"),
    },
    ReferralStatus.SIGNPOSTED: {
        DecisionAction.OVERRIDE: Transition(Target.ROUTED, ("routed",), "a clinical route after all"),
        DecisionAction.CLOSE: Transition(Target.CLOSED, ("closed",), "closed with a reason"),
        DecisionAction.REPRIORITISE: Transition(Target.SAME, ("prioritised",), "priority changed"),
    },
    ReferralStatus.CLOSED: {},
}
# Routes with a clinical team, where careplan keeps an episode (careplan's CLINICAL_ROUTES: a test
# holds the two equal). A signpost, the crisis line and out of area have no episode.
EPISODE_ROUTES: frozenset[Route] = frozenset(
    {
        Route.CRISIS_RESPONSE, Route.HOME_TREATMENT, Route.FRONT_DOOR_PRIMARY, Route.FRONT_DOOR_SECONDARY,
        Route.FOCUSED_SUPPORT, Route.STAYING_WELL, Route.REACCESS,
    }
)  # fmt: skip


class DecisionRefused(Refusal, ValueError):
    """A triage decision the rules do not allow; `field` names the input to fix (the one
    `Refusal`: 422 "Triage rule broken")."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__("triage", field, message)


class TransitionRefused(ValueError):
    """A decision the referral's current status does not allow (409: nothing changes)."""

    def __init__(
        self, status: ReferralStatus, action: DecisionAction, allowed: Sequence[DecisionAction]
    ) -> None:
        hint = {
            (ReferralStatus.ROUTED, DecisionAction.OVERRIDE): " Use transfer to move it to another team.",
            (ReferralStatus.ROUTED, DecisionAction.ACCEPT): " It was accepted already.",
            (ReferralStatus.ROUTED, DecisionAction.DECLINE): " Close it with a reason instead.",
        }.get((status, action), "")
        allowed_text = ", ".join(a.value for a in allowed) or "nothing: it is closed"
        message = f"a {status.value} referral cannot take '{action.value}' (allowed: {allowed_text}).{hint}"
        super().__init__(message)
        self.status = status
        self.action = action
        self.message = message


@dataclass(frozen=True)
class Step:
    """What an allowed decision does: the status it leads to and the lifecycle events it publishes."""

    source: ReferralStatus
    target: ReferralStatus
    events: tuple[str, ...]
    ends_episode: bool  # closing a routed referral ends its open episode


def next_step(status: ReferralStatus | str, action: DecisionAction | str, route: Route | None) -> Step:
    """The lifecycle step a decision takes from `status` with the chosen `route`, or
    `TransitionRefused` when the status does not allow it."""
    status, action = ReferralStatus(status), DecisionAction(action)
    allowed = LIFECYCLE[status]
    transition = allowed.get(action)
    if transition is None:
        raise TransitionRefused(status, action, tuple(allowed))
    events = transition.events
    if transition.target is Target.BY_ROUTE:
        target = ReferralStatus.SIGNPOSTED if route == Route.VCFSE_SIGNPOST else ReferralStatus.ROUTED
        if target is ReferralStatus.SIGNPOSTED:
            events = ("signposted",)  # the offer is the partner services: that event carries them
    elif transition.target is Target.SAME:
        target = status
    else:
        target = ReferralStatus(transition.target.value)
    return Step(
        status,
        target,
        events,
        ends_episode=status is ReferralStatus.ROUTED and target is ReferralStatus.CLOSED,
    )


def intake_step(reaccess: bool) -> tuple[ReferralStatus, tuple[str, ...]]:
    """The status a new referral starts in and the events its intake publishes."""
    return INTAKE[Intake.REACCESS if reaccess else Intake.SCREENED]


def check_decision(
    action: DecisionAction,
    *,
    route: Route | None,
    signposts: Sequence[str],
    reason: str | None,
    consent_to_share: bool,
    team_id: str | None = None,
    priority_changed: bool = False,
) -> None:
    """Refuse decisions that break the rules: an override needs a reason and a route; a decline
    needs a reason and still an alternative offer (triage is not an eligibility gate); anything
    offered to a partner needs the person's consent to share; a transfer names the receiving
    clinical team and why; a change of priority says why."""
    try:
        action = DecisionAction(action)
    except ValueError:
        raise DecisionRefused("action", f"{action!r} is not a triage decision") from None
    has_reason = bool(reason and reason.strip())
    offered = [s for s in signposts if s and s.strip()]
    # A close (a duplicate, a withdrawn referral) needs its reason too, or it would be a silent decline.
    needs_reason = (DecisionAction.OVERRIDE, DecisionAction.DECLINE, DecisionAction.CLOSE, DecisionAction.TRANSFER,
                    DecisionAction.REPRIORITISE)  # fmt: skip
    if action in needs_reason and not has_reason:
        raise DecisionRefused(
            "reason", f"{'an' if action == DecisionAction.OVERRIDE else 'a'} {action.value} needs a reason"
        )
    if action == DecisionAction.OVERRIDE and route is None:
        raise DecisionRefused("route", "an override needs the route chosen instead")
    if action == DecisionAction.DECLINE and route is None and not offered:
        raise DecisionRefused(
            "route",
            "a decline must still offer an alternative: a route, or at least one signposted service",
        )
    if action == DecisionAction.TRANSFER:
        if route is not None and route not in EPISODE_ROUTES:
            raise DecisionRefused(
                "route",
                f"a transfer moves the episode to another clinical team; {route.value} has none "
                "(close the referral with a reason and offer it instead)",
            )
        if not team_id:
            raise DecisionRefused("team_id", "a transfer names the receiving team")
        if offered:
            raise DecisionRefused(
                "signposts", "a transfer moves the episode; offer partner services separately"
            )
    if action == DecisionAction.REPRIORITISE and not priority_changed:
        raise DecisionRefused("priority", "a reprioritise gives the new priority")
    if (route == Route.VCFSE_SIGNPOST or offered) and not consent_to_share:
        raise DecisionRefused(
            "consent_to_share", "signposting to a partner service needs the person's consent to share"
        )


# What a decision leaves the referral with. The route stands unless the decision names another
# (an accept takes the suggested one); the team is the one named, else, where the decision keeps
# the referral where it is (or takes the suggested route), the current one.
_KEEPS_ROUTE = frozenset({DecisionAction.TRANSFER, DecisionAction.REPRIORITISE, DecisionAction.CLOSE})
_KEEPS_TEAM = frozenset({DecisionAction.ACCEPT, DecisionAction.REPRIORITISE, DecisionAction.CLOSE})


def decided_route(
    action: DecisionAction, named_route: str | None, current_route: str | None, suggested_route: str | None
) -> str | None:
    """The route a decision leaves the referral on: an accept takes the suggestion; a transfer,
    reprioritise or close keeps the current route unless it names another; anything else takes the
    route it names (or none)."""
    if action is DecisionAction.ACCEPT:
        return suggested_route
    if action in _KEEPS_ROUTE and named_route is None:
        return current_route
    return named_route


def decided_team(
    action: DecisionAction,
    named_team: str | None,
    current_team: str | None,
    route: str | None,
    suggested_route: str | None,
) -> str | None:
    """The team a decision leaves the referral with (`route` as `decided_route` chose it): a
    transfer only ever the team it names (a route alone does not say who receives it); otherwise
    the named team, else the current one when the decision keeps the referral where it is (accept,
    reprioritise, close) or lands on the suggested route, else none."""
    if action is DecisionAction.TRANSFER:
        return named_team
    if named_team:
        return named_team
    if action in _KEEPS_TEAM or route == suggested_route:
        return current_team
    return None


class TransferImpossible(ValueError):
    """A transfer with nothing left to move (409: nothing changes)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def check_transfer_possible(action: DecisionAction, episode_open: bool | None) -> None:
    """A transfer moves the referral's open episode: once that episode is discharged there is
    nothing to move (`episode_open` None: no episode yet, the transfer moves the referral)."""
    if action is DecisionAction.TRANSFER and episode_open is False:
        raise TransferImpossible(
            "the referral's episode has been discharged: a transfer would move nothing (make a new referral)"
        )


def check_transfer(
    action: DecisionAction,
    *,
    team_id: str | None,
    current_team: str | None,
    route: str | None,
    current_route: str | None,
) -> None:
    """A transfer moves the referral somewhere else: to another team, or onto another route."""
    if action is DecisionAction.TRANSFER and team_id == current_team and route == current_route:
        raise DecisionRefused("team_id", "a transfer moves the referral to another team or route")


def check_backdating(received_at: datetime, now: datetime, limit: timedelta, reason: str | None) -> None:
    """A received time further back than `limit` needs a reason: the clocks start then."""
    if received_at < now - limit and not (reason and reason.strip()):
        raise DecisionRefused(
            "backdated_reason",
            f"received_at is more than {limit.days} days ago: say why it is recorded this late",
        )


def held_for_identity(step: Step, action: DecisionAction, *, in_review: bool, crisis: bool) -> bool:
    """Whether a decision waits for the referral's identity review: routing (or moving) opens an
    episode under the person on file, who may not be this person. A crisis is routed regardless
    (the review stays visible)."""
    moves_into_care = (
        step.target is ReferralStatus.ROUTED and step.source is not ReferralStatus.ROUTED
    ) or action is DecisionAction.TRANSFER
    return in_review and not crisis and moves_into_care
