"""`cmh users add|list|disable` against a fresh, migrated gateway store (SQLite under a tmp var/),
the demo people `cmh run` maps, and production refusing the development provider."""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import func, select

from gateway.app import create_app as create_gateway
from gateway.models import Person, WebSessionRow
from gateway.web.demo_people import (
    CHARITY_A,
    CHARITY_B,
    DEMO_PEOPLE,
    DEMO_TEAM_ID,
    DEMO_TEAM_KEY,
    seed_demo_people,
)
from gateway.web.roles import Role
from services.registry.schemas import Kind
from services.registry.seed import REFERENCE, desired_records, seed_id
from shared.db import Database
from shared.settings import Settings, get_settings
from shared.sqltypes import utcnow

ROOT = Path(__file__).parents[2]
ISSUER = "https://login.lscft.example"
Cmh = Callable[..., tuple[int, str, str]]
T = TypeVar("T")


@pytest.fixture
def users(cmh: Cmh, monkeypatch: pytest.MonkeyPatch) -> Cmh:
    """`cmh users …` with the provider CMH_OIDC_ISSUER names."""
    monkeypatch.setenv("CMH_OIDC_ISSUER", ISSUER)
    get_settings.cache_clear()
    return lambda *argv: cmh("users", *argv)


def table(out: str) -> list[dict[str, str]]:
    """`cmh users list`'s table as rows (its columns are at least two spaces apart)."""
    lines = out.splitlines()
    header = lines[0]
    starts = [
        header.index(name)
        for name in ("id", "name", "organisation", "roles", "team", "state", "last signed in")
    ]
    names = [header[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    return [
        dict(
            zip(
                names,
                (line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)),
                strict=True,
            )
        )
        for line in lines[1:]
    ]


def added_id(out: str) -> str:
    assert out.startswith("added "), out
    return out.split()[1].rstrip(":")


def run_db(work: Callable[[Database], Awaitable[T]]) -> T:
    """Work on the store the command used (the cmh fixture's var/)."""
    settings = get_settings()

    async def go() -> T:
        db = Database(settings.database_url_for("gateway"), schema=settings.database_schema_for("gateway"))
        try:
            return await work(db)
        finally:
            await db.dispose()

    return asyncio.run(go())


def test_add_and_list(users: Cmh) -> None:
    code, out, err = users(
        "add", "--subject", "dana.worker@lscft.example", "--name", "Dana Price", "--organisation", "rw5",
        "--role", "team_member", "--role", "team_lead", "--team", DEMO_TEAM_ID, "--email", "dana@lscft.example",
    )  # fmt: skip
    assert (code, err) == (0, "")
    dana = added_id(out)
    code, out, _ = users(
        "add", "--subject", "ruth@charity.example", "--name", "Ruth Ellis", "--organisation", CHARITY_B,
        "--organisation-system", "charity", "--role", "vcfse_staff",
    )  # fmt: skip
    assert code == 0
    ruth = added_id(out)

    code, out, err = users("list")
    assert (code, err) == (0, "")
    rows = {row["id"]: row for row in table(out)}
    assert rows[dana] == {
        "id": dana,
        "name": "Dana Price",
        "organisation": "RW5 (ods)",
        "roles": "team_member,team_lead",
        "team": DEMO_TEAM_ID,
        "state": "active",
        "last signed in": "never",
    }
    assert rows[ruth]["organisation"] == f"{CHARITY_B} (charity)" and rows[ruth]["team"] == "-"

    async def stored(db: Database) -> Person | None:
        async with db.session() as session:
            return await session.get(Person, dana)

    person = run_db(stored)
    assert isinstance(person, Person)
    assert (person.issuer, person.subject, person.email) == (
        ISSUER,
        "dana.worker@lscft.example",
        "dana@lscft.example",
    )


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--organisation", "RW5", "--role", "ward_clerk"], "unknown role 'ward_clerk'"),
        (
            ["--organisation", "RW5", "--role", "triage_practitioner", "--role", "icb_analyst"],
            "one kind of work",
        ),
        (["--organisation", "RW5", "--role", "team_lead"], "need their team (--team)"),
        (["--organisation", "RW5", "--role", "vcfse_staff"], "VCFSE staff belong to a charity or company"),
        (["--organisation", "R W5!", "--role", "administrator"], "the organisation is an ODS code"),
    ],
)
def test_refusals_are_one_line_and_exit_2(users: Cmh, argv: list[str], reason: str) -> None:
    code, out, err = users("add", "--subject", "someone@lscft.example", "--name", "Some One", *argv)
    assert (code, out) == (2, "")
    assert err.startswith("cmh users: ") and reason in err and err.count("\n") == 1, err


def test_an_identity_is_mapped_once(users: Cmh) -> None:
    argv = (
        "add",
        "--subject",
        "sam@lsc-icb.example",
        "--name",
        "Sam",
        "--organisation",
        "QE1",
        "--role",
        "icb_analyst",
    )
    first = users(*argv)[1]
    code, out, err = users(*argv)
    assert (code, out) == (2, "")
    assert (
        err == f"cmh users: 'sam@lsc-icb.example' of {ISSUER} is mapped already (person {added_id(first)})\n"
    )
    # The same subject at another provider is another person.
    assert users(*argv, "--issuer", "https://other-idp.example")[0] == 0


def test_without_a_provider_add_says_what_to_do(cmh: Cmh, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CMH_OIDC_ISSUER", raising=False)
    get_settings.cache_clear()
    code, _, err = cmh(
        "users", "add", "--subject", "a", "--name", "A", "--organisation", "RW5", "--role", "administrator"
    )
    assert code == 2 and "pass --issuer or set CMH_OIDC_ISSUER" in err
    # Beside `cmh run`, its development provider (recorded under var/) is the default.
    settings = get_settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    (settings.var_dir / "dev-oidc.issuer").write_text("http://127.0.0.1:9400")
    code, out, _ = cmh(
        "users", "add", "--subject", "a", "--name", "A", "--organisation", "RW5", "--role", "administrator"
    )
    assert code == 0
    person = run_db(lambda db: _get(db, added_id(out)))
    assert isinstance(person, Person) and person.issuer == "http://127.0.0.1:9400"


async def _get(db: Database, person_id: str) -> Person | None:
    async with db.session() as session:
        return await session.get(Person, person_id)


def test_disable_ends_their_sessions_at_once(users: Cmh) -> None:
    lee = added_id(
        users("add", "--subject", "lee@lscft.example", "--name", "Lee", "--organisation", "RW5", "--role", "crisis_practitioner")[1]
    )  # fmt: skip
    other = added_id(
        users("add", "--subject", "kim@lscft.example", "--name", "Kim", "--organisation", "RW5", "--role", "crisis_practitioner")[1]
    )  # fmt: skip

    async def sign_in(db: Database) -> None:
        now = utcnow()
        async with db.transaction() as session:
            for key, person_id in (("a" * 64, lee), ("b" * 64, lee), ("c" * 64, other)):
                session.add(
                    WebSessionRow(
                        key_hash=key,
                        person_id=person_id,
                        csrf_token="t",
                        data="{}",
                        created_at=now,
                        last_seen_at=now,
                    )
                )

    run_db(sign_in)
    code, out, err = users("disable", lee)
    assert (code, err) == (0, "")
    assert out == f"disabled {lee} (Lee); 2 session(s) ended\n"

    async def sessions(db: Database) -> list[str | None]:
        async with db.session() as session:
            return list((await session.scalars(select(WebSessionRow.person_id))).all())

    assert run_db(sessions) == [other]
    person = run_db(lambda db: _get(db, lee))
    assert (
        isinstance(person, Person)
        and person.disabled_at is not None
        and person.tokens_revoked_before is not None
    )
    rows = {row["id"]: row for row in table(users("list")[1])}
    assert rows[lee]["state"] == "disabled" and rows[other]["state"] == "active"

    code, out, err = users("disable", "no-such-person")
    assert (code, out, err) == (2, "", "cmh users: no person 'no-such-person'\n")


# --- the demo people ------------------------------------------------------------------------------


def test_demo_people_cover_every_role_and_the_seeded_organisations() -> None:
    assert sorted(role for demo in DEMO_PEOPLE for role in demo.roles) == sorted([*Role, Role.VCFSE_STAFF])
    assert len({demo.subject for demo in DEMO_PEOPLE}) == len(DEMO_PEOPLE)
    reference = json.loads(REFERENCE.read_text())
    icb, trust = reference["icb"]["ods_code"], reference["mental_health_provider"]["ods_code"]
    by_role = {role: demo for demo in DEMO_PEOPLE for role in demo.roles}
    assert by_role[Role.ICB_ANALYST].organisation == by_role[Role.DIRECTORY_MODERATOR].organisation == icb
    assert {by_role[role].organisation for role in (Role.TRIAGE_PRACTITIONER, Role.CRISIS_PRACTITIONER)} == {
        trust
    }
    # The team people work in is one the registry seed really makes, under the id it makes.
    assert seed_id(Kind.TEAM, DEMO_TEAM_KEY) == DEMO_TEAM_ID
    team = next(r for r in desired_records(reference) if r.kind is Kind.TEAM and r.key == DEMO_TEAM_KEY)
    assert team.id == DEMO_TEAM_ID and team.attributes["provider_id"] == seed_id(Kind.ORGANISATION, trust)
    assert {by_role[role].team_id for role in (Role.TEAM_MEMBER, Role.TEAM_LEAD)} == {DEMO_TEAM_ID}
    # Two VCFSE partners: two of the sample directory's charities (organisation A cannot see B).
    sample = ROOT / "services/directory/reference/sample-organisations.csv"
    rows = csv.DictReader(line for line in sample.read_text().splitlines() if not line.startswith("#"))
    charities = {row["number"] for row in rows if row["scheme"] == "GB-CHC"}
    vcfse = [demo for demo in DEMO_PEOPLE if Role.VCFSE_STAFF in demo.roles]
    assert [demo.organisation for demo in vcfse] == [CHARITY_A, CHARITY_B] and {
        CHARITY_A,
        CHARITY_B,
    } <= charities
    assert all(demo.organisation_system == "charity" for demo in vcfse)


def test_seed_demo_people_is_idempotent(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path / "var", database_url=None)
    issuer = "http://127.0.0.1:9400"

    async def count() -> int:
        db = Database(settings.database_url_for("gateway"), schema=settings.database_schema_for("gateway"))
        try:
            async with db.session() as session:
                return int(await session.scalar(select(func.count()).select_from(Person)) or 0)
        finally:
            await db.dispose()

    assert asyncio.run(seed_demo_people(settings, issuer)) == DEMO_PEOPLE
    assert asyncio.run(seed_demo_people(settings, issuer)) == DEMO_PEOPLE
    assert asyncio.run(count()) == len(DEMO_PEOPLE)


# --- production refuses the development provider -------------------------------------------------


def test_production_refuses_the_development_provider_and_an_http_issuer() -> None:
    production = {"environment": "production", "public_url": "https://api.cmh.example.nhs.uk"}
    with pytest.raises(RuntimeError, match="refuses the development OpenID Connect provider"):
        create_gateway(Settings(**production, oidc_issuer="https://login.example", dev_oidc_provider=True))  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="requires an https CMH_OIDC_ISSUER"):
        create_gateway(Settings(**production, oidc_issuer="http://127.0.0.1:9400"))  # type: ignore[arg-type]
    create_gateway(Settings(**production, oidc_issuer="https://login.example"))  # type: ignore[arg-type]
