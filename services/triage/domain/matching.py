"""Matching partner services in the directory to a person's needs, district, age and the time."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time

from contracts.timezones import LONDON
from services.triage.domain.codes import _aware

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
