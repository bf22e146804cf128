"""Audit tamper evidence (issue 18 §5): rows appended through the real paths chain, and `verify`
names the first row changed, or the row after one removed, as an attacker owning the tables would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from cmh.migrations import migrate
from gateway.audit import record_gateway_access, store_audit_event
from gateway.audit_chain import verify_chain
from shared.audit import AuditAction, audit_data
from shared.auth import Caller, ClientKind, PurposeOfUse
from shared.db import Database
from shared.events import CloudEvent
from shared.settings import Settings

CALLER = Caller("gp-a81001", "A81001", ClientKind.PARTNER_EHR, frozenset(), "tok-1", PurposeOfUse.TREAT)


@pytest.fixture
async def db(database_settings: dict[str, object]) -> AsyncIterator[Database]:
    settings = Settings(**database_settings)  # type: ignore[arg-type]
    url, schema = settings.database_url_for("gateway"), settings.database_schema_for("gateway")
    await migrate("gateway", url, schema=schema)
    database = Database(url, schema=schema, pool_size=2)
    # Three rows: two from the gateway's own requests, one from a service's audit event.
    await record_gateway_access(
        database, CALLER, action=AuditAction.READ, resource_type="Person", person_ids=["p-1"]
    )
    data = audit_data(
        CALLER, service="triage", action=AuditAction.SEARCH, resource_type="Referral", person_ids=["p-2"]
    )
    async with database.transaction() as session:
        await store_audit_event(
            session, CloudEvent(source="/cmh/triage", type="cmh.triage.audit.recorded", data=data)
        )
    await record_gateway_access(
        database, CALLER, action=AuditAction.READ, resource_type="Person", person_ids=["p-3"]
    )
    yield database
    await database.dispose()


async def _as_table_owner(db: Database, statement: str) -> None:
    """Lift the append-only triggers as the tables' owner could, and change the trail."""
    async with db.transaction() as session:
        if db.dialect == "postgresql":
            await session.execute(text("ALTER TABLE audit_records DISABLE TRIGGER USER"))
            await session.execute(text("ALTER TABLE audit_record_persons DISABLE TRIGGER USER"))
        else:
            for name in (
                "audit_records_no_update",
                "audit_records_no_delete",
                "audit_record_persons_no_delete",
            ):
                await session.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
        await session.execute(text(statement))


async def test_intact_chain_verifies(db: Database) -> None:
    report = await verify_chain(db)
    assert report.count == 3 and report.broken_id is None


async def test_changed_field_names_that_row(db: Database) -> None:
    await _as_table_owner(db, "UPDATE audit_records SET outcome = 'denied' WHERE id = 2")
    report = await verify_chain(db)
    assert (report.broken_id, report.broken_position) == (2, 2)


async def test_removed_row_is_detected(db: Database) -> None:
    await _as_table_owner(db, "DELETE FROM audit_record_persons WHERE audit_id = 2")
    await _as_table_owner(db, "DELETE FROM audit_records WHERE id = 2")
    report = await verify_chain(db)
    assert (report.broken_id, report.broken_position) == (3, 2)


def test_cmh_audit_verify(cmh) -> None:  # type: ignore[no-untyped-def]
    # A fresh store: the command migrates it, finds it intact and says how many rows.
    code, out, _ = cmh("audit", "verify")
    assert code == 0 and out.strip() == "audit chain intact: 0 rows"


async def test_batches_and_concurrent_appenders_keep_one_chain(db: Database) -> None:
    """The consumer appends a batch in one transaction (the chain's end read once, then carried);
    several appenders at once still make one unbroken chain in id order."""

    async def batch(offset: int) -> None:
        async with db.transaction() as session:
            for index in range(10):
                data = audit_data(
                    CALLER, service="careplan", action=AuditAction.READ, resource_type="Episode",
                    person_ids=[f"p-{offset + index}"],
                )  # fmt: skip
                event = CloudEvent(source="/cmh/careplan", type="cmh.careplan.audit.recorded", data=data)
                await store_audit_event(session, event)

    await asyncio.gather(*(batch(100 * n) for n in range(4)))
    report = await verify_chain(db)
    assert report.broken_id is None, report
    assert report.count == 3 + 40


async def test_a_consumer_sized_batch_is_inserted_in_chain_order(db: Database) -> None:
    """A batch's rows are inserted together at its flush (one multi-row statement, not one each):
    their ids still follow the order they were chained in."""
    async with db.transaction() as session:
        for index in range(250):
            data = audit_data(
                CALLER, service="careplan", action=AuditAction.READ, resource_type="Episode",
                person_ids=[f"p-{index}", f"q-{index}"],
            )  # fmt: skip
            event = CloudEvent(source="/cmh/careplan", type="cmh.careplan.audit.recorded", data=data)
            await store_audit_event(session, event)
    report = await verify_chain(db)
    assert report.broken_id is None, report
    assert report.count == 3 + 250
