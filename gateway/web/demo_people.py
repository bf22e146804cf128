"""The demo people `cmh run` maps for its development OpenID Connect provider: one per role,
acting for the organisations the suite is seeded with (the registry's Lancashire and South Cumbria
reference, services/registry/reference/, and the sample directory's fictional charities,
services/directory/reference/sample-organisations.csv). Everyone here is fictional; the subjects
are what to type on the development provider's sign-in form."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.web.people import add_person, person_for_identity
from gateway.web.roles import Role
from shared.db import Database
from shared.settings import Settings

ICB = "QE1"  # NHS Lancashire and South Cumbria Integrated Care Board
TRUST = "RW5"  # Lancashire and South Cumbria NHS Foundation Trust
# The registry's "Central Lancashire focused support (adult-mh)" team: seeded under the id
# seed_id(Kind.TEAM, "central-lancashire-focused-support-adult-mh") (services/registry/seed.py: a
# uuid5 of the team's key, the same on every run). The gateway imports no service, so the id is
# written out here; tests/web/test_people_cli.py checks it against the seed.
DEMO_TEAM_KEY = "central-lancashire-focused-support-adult-mh"
DEMO_TEAM_ID = "f7b31b1b-31a4-5341-8ba9-80d31d7c8da9"
CHARITY_A = "1000001"  # Darwen Valley Peer Network (the demo-vcfse-partner client's charity too)
CHARITY_B = "1299001"  # Fylde Coast Safe Haven Trust
# `cmh run` records its development provider's issuer here (under var/), for `cmh users add`.
DEV_OIDC_ISSUER_FILE = "dev-oidc.issuer"


@dataclass(frozen=True)
class DemoPerson:
    subject: str
    name: str
    email: str
    organisation: str
    organisation_name: str
    organisation_system: str
    roles: tuple[Role, ...]
    team_id: str | None = None

    @property
    def claims(self) -> dict[str, str]:
        """What the development provider says of them (`--user-claims`)."""
        return {"sub": self.subject, "name": self.name, "email": self.email}


def _person(
    subject: str,
    name: str,
    organisation: str,
    organisation_name: str,
    role: Role,
    *,
    system: str = "ods",
    team_id: str | None = None,
) -> DemoPerson:
    return DemoPerson(subject, name, subject, organisation, organisation_name, system, (role,), team_id)


DEMO_PEOPLE: tuple[DemoPerson, ...] = (
    _person("sam.analyst@lsc-icb.example", "Sam Okafor", ICB, "Lancashire and South Cumbria ICB", Role.ICB_ANALYST),
    _person("tara.triage@lscft.example", "Tara Whitworth", TRUST, "LSCFT", Role.TRIAGE_PRACTITIONER),
    _person("chris.crisis@lscft.example", "Chris Atherton", TRUST, "LSCFT", Role.CRISIS_PRACTITIONER),
    _person(
        "nadia.worker@lscft.example", "Nadia Hussain", TRUST, "LSCFT, Central Lancashire focused support",
        Role.TEAM_MEMBER, team_id=DEMO_TEAM_ID,
    ),
    _person(
        "lee.lead@lscft.example", "Lee Parkinson", TRUST, "LSCFT, Central Lancashire focused support",
        Role.TEAM_LEAD, team_id=DEMO_TEAM_ID,
    ),
    _person("morgan.moderator@lsc-icb.example", "Morgan Hale", ICB, "Lancashire and South Cumbria ICB", Role.DIRECTORY_MODERATOR),
    _person(
        "priya.peers@darwen-valley-peers.example.org", "Priya Shah", CHARITY_A, "Darwen Valley Peer Network",
        Role.VCFSE_STAFF, system="charity",
    ),
    _person(
        "jo.haven@fylde-coast-safe-haven.example.org", "Jo Fletcher", CHARITY_B, "Fylde Coast Safe Haven Trust",
        Role.VCFSE_STAFF, system="charity",
    ),
    _person("alex.admin@lscft.example", "Alex Morgan", TRUST, "LSCFT", Role.ADMINISTRATOR),
)  # fmt: skip


async def seed_demo_people(settings: Settings, issuer: str) -> tuple[DemoPerson, ...]:
    """Map every demo person to `issuer` once (those mapped already, disabled or not, are left
    as they are: an operator's `cmh users disable` survives the next `cmh run`)."""
    from gateway.admin import _with_db

    async def work(db: Database) -> None:
        async with db.transaction() as session:
            for demo in DEMO_PEOPLE:
                if await person_for_identity(session, issuer, demo.subject, include_disabled=True):
                    continue
                await add_person(
                    session,
                    issuer=issuer,
                    subject=demo.subject,
                    name=demo.name,
                    organisation=demo.organisation,
                    organisation_system=demo.organisation_system,
                    roles=demo.roles,
                    team_id=demo.team_id,
                    email=demo.email,
                    single_point_of_access=settings.single_point_of_access_codes,
                )

    await _with_db(settings, work)
    return DEMO_PEOPLE


def demo_people_lines(people: tuple[DemoPerson, ...], sign_in_url: str) -> list[str]:
    """For the ready banner: where to sign in, and whom to sign in as."""
    lines = [
        f"sign in      {sign_in_url}   (development provider: pick one of the subjects below on its form)",
        "demo people:",
    ]
    for demo in people:
        roles = ", ".join(role.value for role in demo.roles)
        lines.append(
            f"  {demo.subject:<46} {demo.name:<16} {roles:<21} {demo.organisation_name} ({demo.organisation})"
        )
    return lines
