"""`cmh reconcile` (issue 21 §1): against a real nats-server and triage's own database, a stream
message removed after the outbox marked it published is found, by event id, and `--repair`
publishes it again so a second run is clean; an event a consumer acknowledged without applying
is found the same way. The comparison itself is a pure function, checked by properties."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import delete, select

from cmh.reconcile import (
    StreamEvent,
    missed_by_consumer,
    missing_from_stream,
    reconcile,
    report,
    subject_matches,
)
from cmh.serving import bus_plan
from services.triage.app import create_app
from shared.broker import connect_bus, ensure_stream
from shared.messaging_models import InboxMessage, OutboxMessage
from shared.settings import Settings
from tests.support import eventually, running_service
from tests.triage.support import Triage, load_registry, referral, registry_events


async def _published(app: object) -> list[OutboxMessage]:
    async with app.state.db.session() as session:  # type: ignore[attr-defined]
        rows = await session.scalars(select(OutboxMessage).where(OutboxMessage.published_at.is_not(None)))
        return list(rows.all())


async def test_a_removed_stream_message_is_found_and_repaired(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    since = datetime.now(UTC) - timedelta(minutes=1)
    async with running_service("triage", create_app, settings) as (client, app):
        await load_registry(app)
        triage = Triage(client, app)
        assert (await triage.submit(referral(), key="reconcile-1")).status_code == 201
        rows = await eventually(lambda: _published(app), timeout=10)
        event_id = rows[0].event_id

        plan = bus_plan()
        clean = await reconcile(settings, plan, since=since, processes=["triage"])
        assert clean.clean and clean.checked_outbox == len(rows), report(clean, repaired=False)

        # The stream loses the message (what a lost fsync or an old backup would do).
        connection = await connect_bus(settings)
        js = connection.jetstream()
        stored = await js.get_last_msg(settings.stream_name, rows[0].subject)
        assert stored.seq is not None
        await js.delete_msg(settings.stream_name, stored.seq)
        await connection.close()

        found = await reconcile(settings, plan, since=since, processes=["triage"])
        assert not found.clean and found.missing_from_stream["triage"] == [event_id]
        lines = report(found, repaired=False)
        assert any(event_id in line for line in lines)
        assert "Sam" not in "\n".join(lines) and "9434765919" not in "\n".join(lines)  # ids only

        repaired = await reconcile(settings, plan, since=since, processes=["triage"], repair=True)
        assert repaired.missing_from_stream["triage"] == [event_id]
        again = await reconcile(settings, plan, since=since, processes=["triage"])
        assert again.clean, report(again, repaired=False)


async def test_an_event_acknowledged_but_not_applied_is_found_and_applied_again(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    since = datetime.now(UTC) - timedelta(minutes=1)
    async with running_service("triage", create_app, settings) as (_client, app):
        team = next(e for e in registry_events(("team",)))
        await app.state.broker.wait_connected()  # the service made the stream and its consumers
        connection = await connect_bus(settings)
        await ensure_stream(connection.jetstream(), settings)
        await connection.jetstream().publish(
            team.nats_subject, team.to_json(), headers={"Nats-Msg-Id": team.id}
        )
        await connection.close()

        async def applied() -> list[str]:
            async with app.state.db.session() as session:
                found = await session.scalars(
                    select(InboxMessage.consumer).where(InboxMessage.event_id == team.id)
                )
                return list(found.all())

        durables = await eventually(applied, timeout=15)
        plan = bus_plan()

        async def acknowledged() -> bool:
            connection = await connect_bus(settings)
            try:
                info = await connection.jetstream().consumer_info(settings.stream_name, durables[0])
                return bool(info.ack_floor and info.ack_floor.stream_seq >= 1)
            finally:
                await connection.close()

        await eventually(acknowledged, timeout=10)
        assert (await reconcile(settings, plan, since=since, processes=["triage"])).clean
        # The inbox loses the record (a restore from an older backup of triage's database).
        async with app.state.db.transaction() as session:
            await session.execute(delete(InboxMessage).where(InboxMessage.event_id == team.id))

        found = await reconcile(settings, plan, since=since, processes=["triage"])
        assert found.missed_by_consumer[durables[0]] == [team.id]
        await reconcile(settings, plan, since=since, processes=["triage"], repair=True)
        await eventually(applied, timeout=15)  # applied again from the re-published event
        assert (await reconcile(settings, plan, since=since, processes=["triage"])).clean


_ids = st.lists(st.text("abcdef0123456789", min_size=1, max_size=4), unique=True, max_size=30)


@given(published=_ids, dropped=st.sets(st.integers(0, 29)))
def test_exactly_the_dropped_events_are_missing(published: list[str], dropped: set[int]) -> None:
    in_stream = {event_id for index, event_id in enumerate(published) if index not in dropped}
    assert missing_from_stream(published, in_stream) == [
        event_id for index, event_id in enumerate(published) if index in dropped
    ]


@given(
    events=st.lists(
        st.tuples(st.sampled_from(["cmh.registry.team.upserted", "cmh.triage.referral.received"]), _ids),
        max_size=20,
    ),
    floor=st.integers(0, 25),
)
def test_only_acknowledged_unapplied_events_on_the_consumers_subjects_are_missed(
    events: list[tuple[str, list[str]]], floor: int
) -> None:
    stream = [StreamEvent(seq, subject, f"e{seq}") for seq, (subject, _) in enumerate(events, start=1)]
    applied = {e.event_id for e in stream if e.seq % 3 == 0}
    dead = {e.event_id for e in stream if e.seq % 5 == 0}
    missed = missed_by_consumer(stream, ["cmh.registry.>"], floor, applied, dead)
    for event in stream:
        expected = (
            event.seq <= floor
            and event.subject.startswith("cmh.registry.")
            and event.event_id not in applied
            and event.event_id not in dead
        )
        assert (event.event_id in missed) == expected


def test_subject_matching_is_natss() -> None:
    assert subject_matches("cmh.registry.>", "cmh.registry.team.upserted")
    assert not subject_matches("cmh.registry.>", "cmh.registry")
    assert subject_matches("cmh.*.team.upserted", "cmh.registry.team.upserted")
    assert not subject_matches("cmh.*.team", "cmh.registry.team.upserted")
    assert subject_matches("cmh.triage.referral.received", "cmh.triage.referral.received")
