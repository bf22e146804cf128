"""The UK profile's age and schedule filters have one definition each: the SQL in
`services.directory.queries` answers them, and the pure `age_matches` / `slot_matches` are their
oracle. For many generated directories and queries, the real query (on SQLite, and on PostgreSQL
when CMH_TEST_DATABASE_URL is set) returns exactly the services the oracle says, and counts them."""

from __future__ import annotations

import json
from datetime import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from services.directory import queries
from services.directory.domain import DAYS, Slot, age_matches, slot_matches, weekly_slots
from services.directory.models import Organization, Service, ServiceSlot
from tests.directory.support import Directory

ORGANIZATION = "00000000-0000-4000-8000-00000000000a"
ages = st.none() | st.integers(0, 99)
# Filters may carry seconds (the API takes any time): the slots are kept to the minute.
filter_times = st.none() | st.times().map(lambda t: t.replace(microsecond=0))
filter_ages = st.none() | st.integers(0, 200).map(lambda n: n / 2)  # the API takes fractions


@st.composite
def schedules(draw: st.DrawFn) -> list[Slot]:
    opens = draw(st.integers(0, 23 * 60 + 58))
    closes = draw(st.integers(opens + 1, 23 * 60 + 59))
    byday = draw(
        st.none() | st.lists(st.sampled_from(DAYS), min_size=1, max_size=3, unique=True).map(",".join)
    )
    timed = draw(st.booleans())  # a day-only schedule is open all day
    return weekly_slots(
        byday,
        time(opens // 60, opens % 60) if timed else None,
        time(closes // 60, closes % 60) if timed else None,
    )


@st.composite
def directories(draw: st.DrawFn) -> list[tuple[int | None, int | None, list[Slot]]]:
    entries = draw(st.lists(st.tuples(ages, ages, st.lists(schedules(), max_size=2)), max_size=8))
    return [(low, high, [slot for schedule in slots for slot in schedule]) for low, high, slots in entries]


@st.composite
def filter_sets(draw: st.DrawFn) -> queries.Filters:
    return queries.Filters(
        minimum_age=draw(filter_ages),
        maximum_age=draw(filter_ages),
        day=draw(st.none() | st.sampled_from(DAYS)),
        start_time=draw(filter_times),
        end_time=draw(filter_times),
    )


async def _load(directory: Directory, entries: list[tuple[int | None, int | None, list[Slot]]]) -> list[str]:
    ids = [f"00000000-0000-4000-8000-{index:012d}" for index in range(len(entries))]
    async with directory.app.state.db.transaction() as session:
        for table in (ServiceSlot, Service, Organization):
            await session.execute(delete(table))
        session.add(
            Organization(
                id=ORGANIZATION,
                name="Oracle",
                identifier="GB-CHC-0000000",
                identifier_scheme="GB-CHC",
                document="{}",
            )
        )
        await session.flush()
        for service_id, (low, high, _) in zip(ids, entries, strict=True):
            session.add(
                Service(
                    id=service_id, organization_id=ORGANIZATION, name=f"service {service_id[-3:]}",
                    status="active", minimum_age=low, maximum_age=high, has_service_area=False,
                    document=json.dumps({"id": service_id}), content_hash=service_id,
                )
            )  # fmt: skip
        await session.flush()
        for service_id, (_, _, slots) in zip(ids, entries, strict=True):
            for slot in slots:
                session.add(
                    ServiceSlot(
                        service_id=service_id, day=slot.day, opens_minute=slot.opens_minute,
                        closes_minute=slot.closes_minute,
                    )
                )  # fmt: skip
    return ids


def _oracle(entry: tuple[int | None, int | None, list[Slot]], filters: queries.Filters) -> bool:
    low, high, slots = entry
    if not age_matches(low, high, at_least=filters.minimum_age, at_most=filters.maximum_age):
        return False
    if filters.day is None and filters.start_time is None and filters.end_time is None:
        return True
    # One slot must meet every schedule filter at once (not one the day and another the times).
    return any(
        slot_matches(slot, day=filters.day, start=filters.start_time, end=filters.end_time) for slot in slots
    )


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(directories(), st.lists(filter_sets(), min_size=1, max_size=4))
async def test_the_sql_filters_return_exactly_what_the_oracle_says(
    directory: Directory,
    entries: list[tuple[int | None, int | None, list[Slot]]],
    filter_list: list[queries.Filters],
) -> None:
    ids = await _load(directory, entries)
    async with directory.app.state.db.session() as session:
        for filters in filter_list:
            documents, total = await queries.services(session, filters, offset=0, limit=None)
            found = [json.loads(document)["id"] for document in documents]
            expected = {
                service_id for service_id, entry in zip(ids, entries, strict=True) if _oracle(entry, filters)
            }
            assert set(found) == expected, filters
            assert len(found) == len(set(found)) == total
            # Paged, the count is the same and the first page is the first of the whole.
            page, paged_total = await queries.services(session, filters, offset=0, limit=2)
            assert paged_total == total and page == documents[:2]
