"""The people who sign in, and how each maps to an organisation and roles: a local mapping kept
by `cmh users add|list|disable`, keyed by the provider's issuer and subject (the one identifier a
provider promises never to reuse). A person unknown here, or disabled, cannot sign in."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.models import PERSON_CLIENT_PREFIX, Person
from gateway.web.roles import Role, RolesConflict, kind_of, needs_team, scopes_of
from shared.auth import ClientKind
from shared.sqltypes import utcnow

_ORGANISATION = re.compile(r"^[A-Z0-9]{3,16}$")
ORGANISATION_SYSTEMS = ("ods", "charity", "company")


class PeopleError(ValueError):
    """A person cannot be added or changed as asked (the message says why)."""


@dataclass(frozen=True)
class SignedInPerson:
    """What a page needs about the person signed in (kept out of the ORM row)."""

    id: str
    name: str
    organisation: str
    organisation_system: str
    roles: tuple[Role, ...]
    team_id: str | None

    @property
    def client_id(self) -> str:
        return f"{PERSON_CLIENT_PREFIX}{self.id}"

    @property
    def kind(self) -> ClientKind:
        return kind_of(self.roles)

    @property
    def scopes(self) -> frozenset[str]:
        return scopes_of(self.roles)

    def has(self, role: Role) -> bool:
        return role in self.roles


def signed_in(person: Person) -> SignedInPerson:
    return SignedInPerson(
        id=person.id,
        name=person.name,
        organisation=person.organisation,
        organisation_system=person.organisation_system,
        roles=tuple(Role(role) for role in person.roles.split()),
        team_id=person.team_id,
    )


def parse_roles(values: Sequence[str]) -> tuple[Role, ...]:
    roles: list[Role] = []
    for value in values:
        for name in value.replace(",", " ").split():
            try:
                role = Role(name)
            except ValueError:
                raise PeopleError(
                    f"unknown role {name!r}: one of {', '.join(r.value for r in Role)}"
                ) from None
            if role not in roles:
                roles.append(role)
    if not roles:
        raise PeopleError("at least one role is needed")
    return tuple(roles)


async def add_person(
    session: AsyncSession,
    *,
    issuer: str,
    subject: str,
    name: str,
    organisation: str,
    organisation_system: str,
    roles: Sequence[Role],
    team_id: str | None = None,
    email: str | None = None,
) -> Person:
    """Map a provider identity to an organisation and roles (refused when the roles don't fit
    one kind of work, a team role has no team, or the identity is mapped already)."""
    try:
        kind = kind_of(roles)
    except RolesConflict as exc:
        raise PeopleError(str(exc)) from None
    organisation = organisation.strip().upper()
    if not _ORGANISATION.match(organisation):
        raise PeopleError("the organisation is an ODS code, a charity or a company number")
    if organisation_system not in ORGANISATION_SYSTEMS:
        raise PeopleError(f"the organisation system is one of {', '.join(ORGANISATION_SYSTEMS)}")
    if (kind is ClientKind.VCFSE_PARTNER) != (organisation_system in ("charity", "company")):
        raise PeopleError("VCFSE staff belong to a charity or company; everyone else to an ODS organisation")
    if needs_team(roles) and not team_id:
        raise PeopleError("team members and team leads need their team (--team)")
    if not subject.strip() or not name.strip():
        raise PeopleError("the subject and the name are needed")
    existing = await person_for_identity(session, issuer, subject, include_disabled=True)
    if existing is not None:
        raise PeopleError(f"{subject!r} of {issuer} is mapped already (person {existing.id})")
    now = utcnow()
    person = Person(
        id=uuid.uuid4().hex[:16],
        issuer=issuer.rstrip("/"),
        subject=subject.strip(),
        name=name.strip()[:200],
        email=email,
        organisation=organisation,
        organisation_system=organisation_system,
        roles=" ".join(role.value for role in roles),
        team_id=team_id,
        created_at=now,
        updated_at=now,
    )
    session.add(person)
    return person


async def person_for_identity(
    session: AsyncSession, issuer: str, subject: str, *, include_disabled: bool = False
) -> Person | None:
    query = select(Person).where(Person.issuer == issuer.rstrip("/"), Person.subject == subject)
    if not include_disabled:
        query = query.where(Person.disabled_at.is_(None))
    return (await session.scalars(query)).one_or_none()


async def active_person(session: AsyncSession, person_id: str) -> Person | None:
    return (
        await session.scalars(select(Person).where(Person.id == person_id, Person.disabled_at.is_(None)))
    ).one_or_none()


async def list_people(session: AsyncSession) -> Sequence[Person]:
    return (await session.scalars(select(Person).order_by(Person.organisation, Person.name))).all()


async def disable_person(session: AsyncSession, person_id: str) -> Person:
    """Disabled: cannot sign in, and every token already issued for them is refused (revocation
    by their client id, as for a disabled client)."""
    person = await session.get(Person, person_id)
    if person is None:
        raise PeopleError(f"no person {person_id!r}")
    now = utcnow()
    person.disabled_at = person.tokens_revoked_before = now
    person.updated_at = now
    return person
