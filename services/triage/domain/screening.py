"""Screening a referral: out of area, re-access, and the route, team and partner services `screen`
suggests (always an offer: triage is a trusted assessor, not an eligibility gate)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from contracts.coverage import Resolution, Snapshot, TeamCandidate, TeamView, open_at, resolve
from contracts.timezones import LONDON
from contracts.vocabulary import Priority, Route, Source
from services.triage.domain.codes import (
    CLINICAL_NEEDS,
    COMPLEX_NEEDS,
    SOCIAL_NEEDS,
    RequestedUrgency,
    Risk,
    Rule,
    _aware,
)
from services.triage.domain.matching import DirectoryIndex, DirectoryServiceView, ServiceMatch, match_services
from services.triage.domain.priority import crisis_target, suggest_priority

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
