"""How the ICS covers a postcode, as pure functions (no I/O): pathways by age, team opening hours
in Europe/London, and resolving a postcode to place, network, pathway and candidate teams.

The registry answers `/registry/resolve` with these over its own tables; triage applies the same
rules to the read-model it keeps from registry events, so both always agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

from contracts.postcodes import normalise_postcode
from contracts.timezones import LONDON

WEEKDAY_KEYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


# --- pathways ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PathwayBand:
    key: str
    name: str
    age_min: int | None
    age_max: int | None

    @property
    def age_banded(self) -> bool:
        return self.age_min is not None or self.age_max is not None

    def admits(self, age: int) -> bool:
        return (self.age_min is None or age >= self.age_min) and (self.age_max is None or age <= self.age_max)


def pathway_for_age(
    pathways: Iterable[PathwayBand], age: int
) -> tuple[PathwayBand | None, list[PathwayBand]]:
    """The age-banded pathway for an age (CAMHS 0-17, adult 18-64, older adults 65+), and the
    pathways without an age band that run alongside (physical health)."""
    if age < 0:
        raise ValueError("age cannot be negative")
    banded = sorted(
        (p for p in pathways if p.age_banded and p.admits(age)), key=lambda p: (p.age_min or 0, p.key)
    )
    alongside = sorted((p for p in pathways if not p.age_banded), key=lambda p: p.key)
    return (banded[0] if banded else None), alongside


# --- opening hours -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    opens: time
    closes: time  # closes <= opens: runs past midnight into the next day


@dataclass(frozen=True)
class Hours:
    always_open: bool = False
    weekly: dict[str, tuple[Interval, ...]] = field(default_factory=dict)


def _fmt(value: time) -> str:
    return value.strftime("%H:%M")


def open_at(hours: Hours, at: datetime) -> tuple[bool, str]:
    """Whether a service is open at an instant, judged on Europe/London wall-clock time, and why."""
    if at.tzinfo is None:
        raise ValueError("a moment needs a time zone")
    if hours.always_open:
        return True, "open 24 hours, 7 days"
    local = at.astimezone(LONDON)
    today = WEEKDAY_KEYS[local.weekday()]
    yesterday = WEEKDAY_KEYS[(local.weekday() - 1) % 7]
    now = local.time().replace(tzinfo=None)
    for interval in hours.weekly.get(today, ()):
        overnight = interval.closes <= interval.opens
        if interval.opens <= now and (overnight or now < interval.closes):
            return True, f"open {today} {_fmt(interval.opens)}-{_fmt(interval.closes)} {LONDON.key}"
    for interval in hours.weekly.get(yesterday, ()):
        if interval.closes <= interval.opens and now < interval.closes:
            return (
                True,
                f"open {yesterday} {_fmt(interval.opens)}-{_fmt(interval.closes)} (overnight) {LONDON.key}",
            )
    return False, f"closed at {local:%a %H:%M} {LONDON.key}; {_next_opening(hours, local)}"


def _next_opening(hours: Hours, local: datetime) -> str:
    for offset in range(8):
        day = local + timedelta(days=offset)
        key = WEEKDAY_KEYS[day.weekday()]
        for interval in sorted(hours.weekly.get(key, ()), key=lambda i: i.opens):
            if offset > 0 or interval.opens > local.time().replace(tzinfo=None):
                return f"next opens {key} {_fmt(interval.opens)}"
    return "no opening hours recorded"


# --- resolve -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlaceView:
    id: str
    key: str
    name: str
    districts: frozenset[str]


@dataclass(frozen=True)
class NetworkView:
    id: str
    key: str
    name: str
    kind: str
    districts: frozenset[str]


@dataclass(frozen=True)
class TeamView:
    id: str
    key: str
    name: str
    offer: str
    network_id: str
    pathways: frozenset[str]  # empty: every pathway
    coverage: frozenset[str]
    hours: Hours
    mhsds_team_type: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """The registry as at one date: what resolve needs, indexed by district."""

    places: Sequence[PlaceView]
    networks: Sequence[NetworkView]
    pathways: Sequence[PathwayBand]
    teams: Sequence[TeamView]
    place_by_district: dict[str, PlaceView] = field(default_factory=dict)
    networks_by_district: dict[str, list[NetworkView]] = field(default_factory=dict)
    teams_by_district: dict[str, list[TeamView]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        places: Sequence[PlaceView],
        networks: Sequence[NetworkView],
        pathways: Sequence[PathwayBand],
        teams: Sequence[TeamView],
    ) -> Snapshot:
        place_by_district = {district: place for place in places for district in place.districts}
        networks_by_district: dict[str, list[NetworkView]] = {}
        for network in networks:
            for district in network.districts:
                networks_by_district.setdefault(district, []).append(network)
        teams_by_district: dict[str, list[TeamView]] = {}
        for team in teams:
            for district in team.coverage:
                teams_by_district.setdefault(district, []).append(team)
        return cls(
            places, networks, pathways, teams, place_by_district, networks_by_district, teams_by_district
        )


@dataclass(frozen=True)
class TeamCandidate:
    team: TeamView
    open: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Resolution:
    postcode: str
    district: str
    out_of_area: bool
    place: PlaceView | None
    network: NetworkView | None
    pathway: PathwayBand | None
    alongside: tuple[PathwayBand, ...]
    offer: str | None
    teams: tuple[TeamCandidate, ...]
    reasons: tuple[str, ...]


def resolve(
    snapshot: Snapshot, postcode: str, age: int | None, offer: str | None, at: datetime
) -> Resolution:
    """Place, network, pathway and candidate teams for a postcode; explicit when out of area."""
    formatted, district = normalise_postcode(postcode)
    reasons: list[str] = []
    place = snapshot.place_by_district.get(district)
    locality = [n for n in snapshot.networks_by_district.get(district, []) if n.kind == "locality"]
    network = locality[0] if locality else None
    if place:
        reasons.append(f"{district} is in {place.name}")
    if network:
        reasons.append(f"{district} is served by the {network.name} network")
    if place is None and network is None:
        return Resolution(
            formatted, district, True, None, None, None, (), offer, (),
            (f"{district} is outside every place and network of this system",),
        )  # fmt: skip
    if place is None:
        reasons.append(f"{district} is outside the four places but inside a provider network")

    pathway: PathwayBand | None = None
    alongside: list[PathwayBand] = []
    if age is not None:
        pathway, alongside = pathway_for_age(snapshot.pathways, age)
        reasons.append(f"age {age}: {pathway.name}" if pathway else f"age {age}: no age-banded pathway")

    candidates: list[TeamCandidate] = []
    if offer is not None:
        for team in snapshot.teams_by_district.get(district, []):
            if team.offer != offer:
                continue
            if pathway is not None and team.pathways and pathway.key not in team.pathways:
                continue
            is_open, hours_reason = open_at(team.hours, at)
            why = [f"covers {district}", f"offers {offer.replace('_', ' ')}"]
            if pathway is not None:
                why.append(f"serves {pathway.key}" if team.pathways else "serves every pathway")
            why.append(hours_reason)
            candidates.append(TeamCandidate(team, is_open, tuple(why)))
        candidates.sort(
            key=lambda c: (not c.open, c.team.network_id != (network.id if network else None), c.team.name)
        )
        if not candidates:
            reasons.append(f"no team offers {offer.replace('_', ' ')} in {district}")
    return Resolution(
        formatted,
        district,
        False,
        place,
        network,
        pathway,
        tuple(alongside),
        offer,
        tuple(candidates),
        tuple(reasons),
    )


def hours_of(opening_hours: Mapping[str, Any]) -> Hours:
    """Opening hours as stored in a team's attributes → `Hours`."""
    weekly = {
        day: tuple(
            Interval(time.fromisoformat(i["opens"]), time.fromisoformat(i["closes"])) for i in intervals
        )
        for day, intervals in dict(opening_hours.get("weekly") or {}).items()
    }
    return Hours(always_open=bool(opening_hours.get("always_open")), weekly=weekly)


def snapshot_from(records: Mapping[str, Iterable[tuple[str, Mapping[str, Any]]]]) -> Snapshot:
    """A snapshot from (record id, attributes) pairs per kind: "place", "network", "pathway", "team"."""
    places = [
        PlaceView(rid, a["key"], a["name"], frozenset(a.get("postcode_districts") or []))
        for rid, a in records.get("place", ())
    ]
    networks = [
        NetworkView(rid, a["key"], a["name"], a["kind"], frozenset(a.get("postcode_districts") or []))
        for rid, a in records.get("network", ())
    ]
    pathways = [
        PathwayBand(a["key"], a["name"], a.get("age_min"), a.get("age_max"))
        for _rid, a in records.get("pathway", ())
    ]
    teams = [
        TeamView(
            id=rid,
            key=a["key"],
            name=a["name"],
            offer=a["service_offer"],
            network_id=a["network_id"],
            pathways=frozenset(a.get("pathways") or []),
            coverage=frozenset(a.get("coverage") or []),
            hours=hours_of(a["opening_hours"]),
            mhsds_team_type=a.get("mhsds_team_type"),
        )
        for rid, a in records.get("team", ())
    ]
    return Snapshot.build(places, networks, pathways, teams)
