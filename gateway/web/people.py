"""The people who sign in, and how each maps to an organisation and roles: a local mapping kept
by `cmh users add|list|disable`, keyed by the provider's issuer and subject (the one identifier a
provider promises never to reuse). A person unknown here, or disabled, cannot sign in."""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.models import PERSON_CLIENT_PREFIX, Person
from gateway.web.roles import (
    Role,
    RolesConflict,
    kind_of,
    needs_single_point_of_access,
    needs_team,
    scopes_of,
)
from shared.auth import ClientKind
from shared.settings import Settings
from shared.sqltypes import utcnow

_ORGANISATION = re.compile(r"^[A-Z0-9]{3,16}$")
ORGANISATION_SYSTEMS = ("ods", "charity", "company")
DEFAULT_SINGLE_POINT_OF_ACCESS = frozenset(
    code.strip() for code in str(Settings.model_fields["single_point_of_access"].default).split(",")
)
_CHARITY_NUMBER = re.compile(r"^\d{6,8}$")  # England and Wales: 6-7 digits (1000001)
_COMPANY_NUMBER = re.compile(r"^([A-Z]{2}\d{6}|\d{8})$")  # Companies House: SC123456, 01234567


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
    single_point_of_access: Collection[str] = DEFAULT_SINGLE_POINT_OF_ACCESS,
) -> Person:
    """Map a provider identity to an organisation and roles (refused when the roles don't fit
    one kind of work, a team role has no team, or the identity is mapped already)."""
    organisation = _checked(organisation, organisation_system, roles, team_id, single_point_of_access)
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


def _checked(
    organisation: str,
    organisation_system: str,
    roles: Sequence[Role],
    team_id: str | None,
    single_point_of_access: Collection[str],
) -> str:
    """The organisation, normalised, once the mapping holds together (PeopleError if not)."""
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
    if needs_single_point_of_access(roles) and organisation not in single_point_of_access:
        raise PeopleError(
            "triage and crisis practitioners read every referral: only staff of the single point of "
            f"access ({', '.join(sorted(single_point_of_access))}; CMH_SINGLE_POINT_OF_ACCESS) may be one"
        )
    return organisation


@dataclass(frozen=True)
class ClaimNames:
    """Which of the provider's claims carry the mapping (settings `oidc_*_claim`)."""

    organisation: str
    roles: str
    team: str | None = None


def mapping_from_claims(
    claims: dict[str, object],
    names: ClaimNames,
    single_point_of_access: Collection[str] = DEFAULT_SINGLE_POINT_OF_ACCESS,
) -> tuple[str, str, tuple[Role, ...], str | None]:
    """(organisation, its system, roles, team) from the provider's claims; PeopleError when
    they are absent or do not hold together. A VCFSE partner's organisation is a charity number
    (digits) or a company number; everyone else's an ODS code."""
    organisation = claims.get(names.organisation)
    raw_roles = claims.get(names.roles)
    if not isinstance(organisation, str) or raw_roles is None:
        raise PeopleError("the provider's claims do not name an organisation and roles")
    values = [str(value) for value in raw_roles] if isinstance(raw_roles, list) else [str(raw_roles)]
    roles = parse_roles(values)
    team = claims.get(names.team) if names.team else None
    team_id = team if isinstance(team, str) and team.strip() else None
    try:
        kind = kind_of(roles)
    except RolesConflict as exc:
        raise PeopleError(str(exc)) from None
    if kind is ClientKind.VCFSE_PARTNER:
        number = organisation.strip().upper()
        if _CHARITY_NUMBER.match(number):
            system = "charity"
        elif _COMPANY_NUMBER.match(number):
            system = "company"
        else:
            raise PeopleError("a VCFSE partner's organisation is a charity or a company number")
    else:
        system = "ods"
    return _checked(organisation, system, roles, team_id, single_point_of_access), system, roles, team_id


async def person_from_claims(
    session: AsyncSession,
    *,
    issuer: str,
    subject: str,
    name: str,
    claims: dict[str, object],
    names: ClaimNames,
    single_point_of_access: Collection[str] = DEFAULT_SINGLE_POINT_OF_ACCESS,
) -> Person | None:
    """Someone `cmh users` does not know, mapped from the provider's claims (the provider is then
    the source of truth: the mapping is refreshed at every sign-in). None when the claims do not
    give a mapping that holds, or the person is disabled or mapped locally."""
    try:
        organisation, system, roles, team_id = mapping_from_claims(claims, names, single_point_of_access)
    except PeopleError:
        return None
    existing = await person_for_identity(session, issuer, subject, include_disabled=True)
    if existing is not None:
        if existing.disabled_at is not None or existing.mapped_from != "claims":
            return None
        changed = (existing.organisation, existing.roles, existing.team_id) != (
            organisation,
            " ".join(role.value for role in roles),
            team_id,
        )
        if changed:
            existing.organisation, existing.organisation_system = organisation, system
            existing.roles = " ".join(role.value for role in roles)
            existing.team_id = team_id
            existing.updated_at = utcnow()
            # A change of organisation or roles ends what was issued under the old ones.
            existing.tokens_revoked_before = existing.updated_at
        existing.name = name.strip()[:200] or existing.name
        return existing
    person = await add_person(
        session,
        issuer=issuer,
        subject=subject,
        name=name or subject,
        organisation=organisation,
        organisation_system=system,
        roles=roles,
        team_id=team_id,
        single_point_of_access=single_point_of_access,
    )
    person.mapped_from = "claims"
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
