"""What partners propose and feeds carry, validated at the edge (Pydantic v2).

`ServiceProposal` is the one internal shape of a service: a partner's edit and an imported HSDS
record both become one, and `oruk.service_document` turns it into the published HSDS object.
Ids are UUIDs, kept across edits so links (and partners' bookmarks) stay stable.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, time
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, HttpUrl, field_validator, model_validator

from contracts.postcodes import InvalidPostcode, normalise_postcode
from services.directory.domain import ScheduleError, check_coordinates, weekly_slots
from shared.text import SafeLine, SafeText

# shared.text: no control characters or invisible formatting (line breaks only in long text).
Text = Annotated[SafeLine, Field(min_length=1, max_length=255)]
LongText = Annotated[SafeText, Field(min_length=1, max_length=10_000)]


def new_id() -> str:
    return str(uuid.uuid4())


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class VcfseCategory(StrEnum):
    VOLUNTARY = "voluntary"
    COMMUNITY = "community"
    FAITH = "faith"
    SOCIAL_ENTERPRISE = "social_enterprise"


# Org-id.guide schemes for UK charities and companies (as ORUK organization_identifiers use).
IDENTIFIER_SCHEMES = {"GB-CHC", "GB-SC", "GB-NIC", "GB-COH"}


class OrganizationIn(_In):
    id: uuid.UUID | None = None
    name: Text
    description: LongText
    email: EmailStr | None = None
    website: HttpUrl | None = None
    vcfse_category: VcfseCategory | None = None


class ScheduleIn(_In):
    id: uuid.UUID | None = None
    byday: str | None = Field(default=None, max_length=40, description="RFC 5545 days: MO,TU,...")
    opens_at: time | None = None
    closes_at: time | None = None
    valid_from: date | None = None
    valid_to: date | None = None
    description: str | None = Field(default=None, max_length=500)

    @model_validator(mode="after")
    def _consistent(self) -> ScheduleIn:
        try:
            weekly_slots(self.byday, self.opens_at, self.closes_at)
        except ScheduleError as exc:
            raise ValueError(str(exc)) from None
        if self.valid_from and self.valid_to and self.valid_to < self.valid_from:
            raise ValueError("valid_to is before valid_from")
        return self


class AddressIn(_In):
    id: uuid.UUID | None = None
    address_1: Text
    address_2: str | None = Field(default=None, max_length=255)
    city: Text
    region: str | None = Field(default=None, max_length=100)
    postal_code: str = Field(min_length=5, max_length=10)

    @field_validator("postal_code")
    @classmethod
    def _postcode(cls, value: str) -> str:
        try:
            return normalise_postcode(value)[0]
        except InvalidPostcode as exc:
            raise ValueError(str(exc)) from None


class LocationIn(_In):
    id: uuid.UUID | None = None
    service_at_location_id: uuid.UUID | None = None
    location_type: Literal["physical", "postal", "virtual"] = "physical"
    name: Text
    description: str | None = Field(default=None, max_length=2000)
    latitude: float | None = None
    longitude: float | None = None
    address: AddressIn | None = None
    accessibility: list[Annotated[str, Field(max_length=500)]] = Field(default_factory=list, max_length=20)
    schedules: list[ScheduleIn] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _coordinates(self) -> LocationIn:
        try:
            check_coordinates(self.latitude, self.longitude)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        return self


class ContactIn(_In):
    id: uuid.UUID | None = None
    name: str | None = Field(default=None, max_length=255)
    title: str | None = Field(default=None, max_length=255)
    email: EmailStr | None = None
    phone: str | None = Field(default=None, max_length=30, pattern=r"^[0-9 +()\-]{6,30}$")


class CostIn(_In):
    id: uuid.UUID | None = None
    option: str | None = Field(default=None, max_length=255)
    amount: float | None = Field(default=None, ge=0)
    amount_description: str | None = Field(default=None, max_length=500)


class LanguageIn(_In):
    id: uuid.UUID | None = None
    name: Text
    code: str | None = Field(default=None, pattern=r"^[a-z]{2,3}$", description="ISO 639 code")


class ServiceAreaIn(_In):
    """A place of the ICS (by registry key or name), or explicit postcode districts."""

    id: uuid.UUID | None = None
    name: Text
    place: str | None = Field(default=None, max_length=64, description="Registry place key")
    districts: list[Annotated[str, Field(max_length=8)]] = Field(default_factory=list, max_length=500)


class ServiceProposal(_In):
    id: uuid.UUID | None = None
    name: Text
    description: LongText
    url: HttpUrl | None = None
    email: EmailStr | None = None
    status: Literal["active", "inactive", "defunct", "temporarily closed"] = "active"
    fees_description: str | None = Field(default=None, max_length=2000)
    eligibility_description: str | None = Field(
        default=None, max_length=2000, description="Who it is for, beyond the age range (HSDS)"
    )
    application_process: str | None = Field(default=None, max_length=2000, description="How to get support")
    interpretation_services: str | None = Field(default=None, max_length=500)
    minimum_age: int | None = Field(default=None, ge=0, le=130)
    maximum_age: int | None = Field(default=None, ge=0, le=130)
    taxonomy_term_ids: list[uuid.UUID] = Field(default_factory=list, max_length=50)
    service_areas: list[ServiceAreaIn] = Field(default_factory=list, max_length=50)
    languages: list[LanguageIn] = Field(default_factory=list, max_length=30)
    cost_options: list[CostIn] = Field(default_factory=list, max_length=20)
    contacts: list[ContactIn] = Field(default_factory=list, max_length=20)
    schedules: list[ScheduleIn] = Field(default_factory=list, max_length=50)
    locations: list[LocationIn] = Field(default_factory=list, max_length=50)
    organization: OrganizationIn | None = Field(
        default=None, description="The partner's organisation details (needed on its first service)"
    )

    @model_validator(mode="after")
    def _ages(self) -> ServiceProposal:
        if (
            self.minimum_age is not None
            and self.maximum_age is not None
            and self.maximum_age < self.minimum_age
        ):
            raise ValueError("maximum_age is below minimum_age")
        return self

    def with_ids(self) -> ServiceProposal:
        """The same proposal with a UUID on everything that lacked one (kept on later edits)."""
        data = self.model_dump(mode="json")

        def fill(node: Any, key: str | None = None) -> None:
            if isinstance(node, dict):
                if "id" in node and node["id"] is None and key != "organization":
                    node["id"] = new_id()
                if "service_at_location_id" in node and node["service_at_location_id"] is None:
                    node["service_at_location_id"] = new_id()
                for child_key, child in node.items():
                    fill(child, child_key)
            elif isinstance(node, list):
                for child in node:
                    fill(child, key)

        fill(data)
        return ServiceProposal.model_validate(data)


class EditOut(BaseModel):
    id: str
    service_id: str
    state: str
    version: int
    created_by: str
    created_at: datetime
    updated_at: datetime
    reviewed_by: str | None
    review_reason: str | None
    proposal: ServiceProposal


class ReviewIn(_In):
    reason: str = Field(min_length=3, max_length=2000, description="Why: shown to the partner")


class EditHistoryOut(BaseModel):
    edit_id: str
    action: str
    state: str
    actor: str
    reason: str | None
    at: datetime


class HandoverOut(BaseModel):
    id: str
    referral_id: str
    service_id: str
    state: str
    reason: str | None
    version: int
    offered_at: datetime
    updated_at: datetime
    person: dict[str, Any]
    needs: list[str]
    note: str | None


class HandoverDecision(_In):
    reason: str | None = Field(default=None, max_length=2000)


# --- Open Referral UK answers ------------------------------------------------------------------
# HSDS 3.0 documents (UK profile) as the standard defines them: the fields named here are the
# ones every document has; the rest are the standard's own (kept as stored, never reshaped).


class OrukDocument(BaseModel):
    """An HSDS 3.0 object: its `id`, then the standard's fields for its kind."""

    model_config = ConfigDict(extra="allow")

    id: str


class OrukNamed(OrukDocument):
    name: str


class OrukOrganization(OrukNamed):
    services: list[dict[str, Any]] = Field(description="Its services: list items, or full with full_service")


class OrukPage(BaseModel):
    """An HSDS page of results."""

    model_config = ConfigDict(extra="forbid")

    total_items: int
    total_pages: int
    page_number: int
    size: int
    first_page: bool
    last_page: bool
    empty: bool
    contents: list[dict[str, Any]]


class OrukPublisher(BaseModel):
    name: str
    description: str
    url: str


class OrukAbout(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str
    profile: str
    openapi_url: str
    publisher: OrukPublisher
    x_services: int = Field(description="How many services are published")


class OrukLocatedPage(OrukPage):
    """A page of services at locations, with what was made of the postcode given."""

    x_postcode: dict[str, Any] | None = Field(
        default=None, description="The postcode, its district and the centre used (when a postcode was given)"
    )


class PartnerServiceOut(BaseModel):
    """One of the partner's published services."""

    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    version: int
    last_modified: str = Field(json_schema_extra={"format": "date-time"})


class ServiceWithdrawnOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    service_id: str
    state: Literal["withdrawn"]
