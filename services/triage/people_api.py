"""`/triage/people`: the person on file, changed only on purpose.

A referral never rewrites a person (what it says stays with the referral, as `person_as_referred`).
Changing a person's details is its own act:

- `PATCH /triage/people/{id}` (`triage:decide`): the fields to change and a reason, with
  `If-Match` (the person's ETag, their version; 428 without it, 412 when it has moved on). The
  previous and new values of the changed fields are kept in `triage_person_versions` with who
  (the client and the end user it asserts), when and why; `cmh.triage.person.updated` says which
  fields changed and the new version (ids only, never values). Audited.
- `GET /triage/people/{id}` (`referral:read`): the person on file; partners only for people their
  organisation referred (not through a referral whose identity is in review). Audited.
- `GET /triage/people/{id}/versions` (`triage:decide`): every version, oldest first. Audited.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.triage import access, identity, store
from services.triage.api import SERVICE
from services.triage.domain import name_key
from services.triage.models import Person, PersonVersion
from services.triage.schemas import (
    Contact,
    Name,
    PersonOut,
    PersonVersionsOut,
    valid_birth_date,
    valid_nhs_number,
    valid_postcode,
)
from shared.audit import AuditAction, record_access
from shared.auth import Caller, requires
from shared.deps import DatabaseDep
from shared.errors import Problem, problems
from shared.events import make_event
from shared.outbox import add_event
from shared.preconditions import RequiredIfMatch, check_versions, expected_versions
from shared.preconditions import etag as etag_of
from shared.sqltypes import utcnow
from shared.text import SafeLine, SafeText

router = APIRouter(prefix="/triage/people", tags=["triage people"], responses=problems(401, 403, 422))

DETAIL_FIELDS = (
    "given_name", "family_name", "contact", "ethnicity", "sex", "gender", "preferred_language",
    "interpreter_needed", "accessibility_needs",
)  # fmt: skip
REQUIRED_FIELDS = ("given_name", "family_name", "birth_date", "postcode")


class PersonUpdate(BaseModel):
    """The fields to change (those sent; `contact` and `accessibility_needs` are replaced whole),
    and why. Checked exactly as a referral's person is."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    reason: Annotated[SafeText, Field(min_length=1, max_length=2000)] = Field(
        description="Why the details change (e.g. 'confirmed with the person by phone: moved house')"
    )
    nhs_number: str | None = None
    given_name: Name | None = None
    family_name: Name | None = None
    birth_date: date | None = None
    postcode: str | None = Field(default=None, min_length=5, max_length=10)
    contact: Contact | None = None
    ethnicity: str | None = Field(default=None, pattern=r"^[A-Z]{1,2}$")
    sex: Literal["male", "female", "not_known", "not_specified"] | None = None
    gender: SafeLine | None = Field(default=None, max_length=50)
    preferred_language: SafeLine | None = Field(default=None, max_length=50)
    interpreter_needed: bool | None = None
    accessibility_needs: list[Annotated[SafeLine, Field(max_length=200)]] | None = Field(
        default=None, max_length=10
    )

    @field_validator("nhs_number")
    @classmethod
    def _nhs(cls, value: str | None) -> str | None:
        return valid_nhs_number(value)

    @field_validator("postcode")
    @classmethod
    def _postcode(cls, value: str | None) -> str | None:
        return None if value is None else valid_postcode(value)

    @field_validator("birth_date")
    @classmethod
    def _born(cls, value: date | None) -> date | None:
        return None if value is None else valid_birth_date(value)

    @model_validator(mode="after")
    def _present(self) -> PersonUpdate:
        for name in REQUIRED_FIELDS:
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be removed, only changed")
        if self.interpreter_needed is None and "interpreter_needed" in self.model_fields_set:
            raise ValueError("interpreter_needed is true or false")
        if not self.model_fields_set - {"reason"}:
            raise ValueError("name at least one field to change")
        return self


def person_out(person: Person) -> dict[str, Any]:
    return {
        "id": person.id,
        "version": person.version,
        **store.person_values(person),
        "created_at": person.created_at.isoformat() if person.created_at else None,
        "updated_at": person.updated_at.isoformat() if person.updated_at else None,
    }


def _version_out(row: PersonVersion) -> dict[str, Any]:
    return {
        "version": row.version,
        "changed_at": row.changed_at.isoformat(),
        "changed_by": {
            "client_id": row.client_id,
            "organisation": row.organisation,
            # As the calling system asserted them: the suite does not authenticate the end user.
            "end_user_id": row.end_user_id,
            "end_user_role": row.end_user_role,
        },
        "reason": row.reason,
        "referral_id": row.referral_id,
        "fields": json.loads(row.fields),
        "previous": json.loads(row.previous) if row.previous else None,
        "new": json.loads(row.new),
    }


def _audit(session: AsyncSession, caller: Caller, action: AuditAction, person_id: str, resource: str) -> None:
    record_access(
        session, caller, service=SERVICE, action=action, resource_type=resource,
        resource_ids=[person_id], person_ids=[person_id],
    )  # fmt: skip


def _json(body: dict[str, Any], *, etag: int | None = None) -> Response:
    headers = {"ETag": etag_of(etag)} if etag is not None else {}
    return Response(json.dumps(body), media_type="application/json", headers=headers)


async def _person(session: AsyncSession, caller: Caller, person_id: str, *, lock: bool = False) -> Person:
    return await access.readable_record(
        session, caller, Person, person_id, missing=Problem(404, "No such person", type_slug="not-found"),
        lock=lock,
    )  # fmt: skip


@router.get(
    "/{person_id}", response_model=PersonOut, responses=problems(404), summary="Read the person on file"
)
async def read_person(
    person_id: str, db: DatabaseDep, caller: Caller = requires("referral:read")
) -> Response:
    async with db.transaction() as session:
        person = await _person(session, caller, person_id)
        _audit(session, caller, AuditAction.READ, person.id, "Person")
        return _json(person_out(person), etag=person.version)


@router.get(
    "/{person_id}/versions",
    response_model=PersonVersionsOut,
    responses=problems(404),
    summary="Every version of the person's details: who, when, why, what",
)
async def person_versions(
    person_id: str, db: DatabaseDep, caller: Caller = requires("triage:decide")
) -> dict[str, Any]:
    async with db.transaction() as session:
        person = await _person(session, caller, person_id)
        rows = (
            await session.scalars(
                select(PersonVersion)
                .where(PersonVersion.person_id == person.id)
                .order_by(PersonVersion.version)
            )
        ).all()
        _audit(session, caller, AuditAction.READ, person.id, "PersonVersion")
        return {"person_id": person.id, "version": person.version, "items": [_version_out(r) for r in rows]}


@router.patch(
    "/{person_id}",
    summary="Change the person's details (versioned, with a reason)",
    response_model=PersonOut,
    responses=problems(
        400,
        404,
        409,
        412,
        428,
        _400="Bad If-Match",
        _409="Another person on file has this NHS number",
        _412="The person has changed since you read them",
    ),
)
async def update_person(
    person_id: str,
    body: PersonUpdate,
    db: DatabaseDep,
    caller: Caller = requires("triage:decide"),
    if_match: RequiredIfMatch = None,
) -> Response:
    expected = expected_versions(if_match, noun="person")
    async with db.transaction() as session:
        person = await _person(session, caller, person_id, lock=True)
        check_versions(expected, person.version, title="Person has changed", detail="Read them again.")
        current = store.person_values(person)
        wanted = body.model_dump(mode="json", exclude_unset=True, exclude={"reason"})
        changed = {name: value for name, value in wanted.items() if current.get(name) != value}
        if not changed:  # already so: nothing to version
            _audit(session, caller, AuditAction.READ, person.id, "Person")
            return _json(person_out(person), etag=person.version)
        number = changed.get("nhs_number")
        if number is not None:
            other = await session.scalar(
                select(Person.id).where(Person.nhs_number == number, Person.id != person.id)
            )
            if other is not None:
                raise Problem(
                    409,
                    "NHS number on file for another person",
                    "Another person on file has this NHS number: people are never merged here.",
                    type_slug="nhs-number-conflict",
                )
        if "given_name" in changed or "family_name" in changed:
            given = changed.get("given_name", current["given_name"])
            family = changed.get("family_name", current["family_name"])
            person.name_key = name_key(given, family)
            person.family_key = identity.family_key(family)
        details = json.loads(person.details)
        details.update({name: value for name, value in changed.items() if name in DETAIL_FIELDS})
        person.details = json.dumps(details)
        if "nhs_number" in changed:
            person.nhs_number = changed["nhs_number"]
        if "birth_date" in changed:
            person.birth_date = date.fromisoformat(changed["birth_date"])
        if "postcode" in changed:
            person.postcode = changed["postcode"]
        previous_version = person.version
        person.version = previous_version + 1
        person.updated_at = utcnow()
        fields = sorted(changed)
        session.add(
            PersonVersion(
                person_id=person.id, version=person.version, changed_at=person.updated_at,
                client_id=caller.client_id, organisation=access.owner_of(caller),
                end_user_id=caller.end_user_id, end_user_role=caller.end_user_role, reason=body.reason,
                referral_id=None, fields=json.dumps(fields),
                previous=json.dumps({name: current.get(name) for name in fields}),
                new=json.dumps({name: changed[name] for name in fields}),
            )
        )  # fmt: skip
        add_event(
            session,
            make_event(
                SERVICE,
                "person",
                "updated",
                {
                    "person_id": person.id,
                    "version": person.version,
                    "previous_version": previous_version,
                    "fields": fields,  # which fields changed; never their values
                    "changed_at": person.updated_at.isoformat(),
                },
                subject=person.id,
            ),
        )
        _audit(session, caller, AuditAction.UPDATE, person.id, "Person")
        await session.flush()
        return _json(person_out(person), etag=person.version)
