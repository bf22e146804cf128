"""What each kind of registry record holds (Pydantic v2: validated at the edge, stored as versions).

Every record is effective-dated: a series of versions, each valid over [valid_from, valid_to).
These models are the attributes of one version; the envelope (id, version, validity, ETag) is
`RecordOut`. Field names are the domain's; codes follow ODS, MHSDS and ONS where they exist.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contracts.postcodes import normalise_district
from shared.text import SafeLine

TIME_ZONE = "Europe/London"


class Kind(StrEnum):
    """The kinds of record, as they appear in URLs and event subjects."""

    ORGANISATION = "organisation"
    PLACE = "place"
    NETWORK = "network"
    PATHWAY = "pathway"
    TEAM = "team"
    PRACTITIONER = "practitioner"
    MEMBERSHIP = "membership"
    LEADERSHIP_ROLE = "leadership_role"


class OrganisationKind(StrEnum):
    ICB = "icb"
    SUB_ICB_LOCATION = "sub_icb_location"
    PROVIDER_TRUST = "provider_trust"
    ACUTE_TRUST = "acute_trust"
    PCN = "pcn"
    GP_PRACTICE = "gp_practice"
    LOCAL_AUTHORITY = "local_authority"
    VCFSE = "vcfse"


class CodeSystem(StrEnum):
    ODS = "ods"  # https://fhir.nhs.uk/Id/ods-organization-code
    GSS = "gss"  # ONS Government Statistical Service codes (local authorities)
    CHARITY = "charity"  # Charity Commission / OSCR / CCNI registered number
    COMPANY = "company"  # Companies House number


class ServiceOffer(StrEnum):
    TRIAGE = "triage"
    CRISIS_RESPONSE = "crisis_response"
    CRISIS_LINE = "crisis_line"
    HOME_TREATMENT = "home_treatment"
    FRONT_DOOR_PRIMARY = "front_door_primary"
    FRONT_DOOR_SECONDARY = "front_door_secondary"
    FOCUSED_SUPPORT = "focused_support"
    STAYING_WELL = "staying_well"
    OUTREACH = "outreach"
    LIAISON = "liaison"


class NetworkKind(StrEnum):
    LOCALITY = "locality"
    SPECIALIST = "specialist"


class LeadershipRoleKind(StrEnum):
    MEDICAL_DIRECTOR = "medical_director"
    NURSE_DIRECTOR = "nurse_director"
    OPERATIONS_DIRECTOR = "operations_director"
    PATHWAY_LEAD = "pathway_lead"


NETWORK_TRIUMVIRATE = (
    LeadershipRoleKind.MEDICAL_DIRECTOR,
    LeadershipRoleKind.NURSE_DIRECTOR,
    LeadershipRoleKind.OPERATIONS_DIRECTOR,
)

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
RecordId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:\-]+$")]
Key = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9\-]*$")]
Name = Annotated[SafeLine, Field(min_length=1, max_length=200)]  # shared.text: no control characters


class _Attributes(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# Code patterns per organisation kind (NHS ODS conventions; ONS GSS for councils).
CODE_PATTERNS: dict[OrganisationKind, tuple[CodeSystem, re.Pattern[str]]] = {
    OrganisationKind.ICB: (CodeSystem.ODS, re.compile(r"^Q[A-Z0-9]{2}$")),
    OrganisationKind.SUB_ICB_LOCATION: (CodeSystem.ODS, re.compile(r"^[0-9]{2}[A-Z0-9]$")),
    OrganisationKind.PROVIDER_TRUST: (CodeSystem.ODS, re.compile(r"^R[A-Z0-9]{2}$")),
    OrganisationKind.ACUTE_TRUST: (CodeSystem.ODS, re.compile(r"^R[A-Z0-9]{2}$")),
    OrganisationKind.PCN: (CodeSystem.ODS, re.compile(r"^U[0-9]{5}$")),
    OrganisationKind.GP_PRACTICE: (CodeSystem.ODS, re.compile(r"^[A-Z][0-9]{5}$")),
    OrganisationKind.LOCAL_AUTHORITY: (CodeSystem.GSS, re.compile(r"^E(06|07|08|09|10)[0-9]{6}$")),
}
VCFSE_CODE_PATTERNS: dict[CodeSystem, re.Pattern[str]] = {
    CodeSystem.CHARITY: re.compile(r"^([0-9]{6,8}|SC[0-9]{6}|NIC[0-9]{6})$"),
    CodeSystem.COMPANY: re.compile(r"^([0-9]{8}|[A-Z]{2}[0-9]{6})$"),
}


class OrganisationAttributes(_Attributes):
    kind: OrganisationKind
    code: str = Field(
        min_length=2, max_length=12, description="ODS code; GSS code for councils; charity/company no."
    )
    code_system: CodeSystem
    name: Name
    parent_id: RecordId | None = Field(default=None, description="The organisation this one belongs to")

    @field_validator("code")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.strip().upper()

    @model_validator(mode="after")
    def _code_matches_kind(self) -> OrganisationAttributes:
        if self.kind is OrganisationKind.VCFSE:
            pattern = VCFSE_CODE_PATTERNS.get(self.code_system)
            if pattern is None:
                raise ValueError("code_system of a VCFSE organisation must be charity or company")
        else:
            system, pattern = CODE_PATTERNS[self.kind]
            if self.code_system is not system:
                raise ValueError(f"code_system of a {self.kind.value} must be {system.value}")
        if not pattern.match(self.code):
            raise ValueError(
                f"code {self.code!r} is not a valid {self.code_system.value} code for a {self.kind.value}"
            )
        return self


def _districts(values: list[str]) -> list[str]:
    normalised = [normalise_district(value) for value in values]
    if len(set(normalised)) != len(normalised):
        raise ValueError("postcode districts must not repeat")
    return sorted(normalised)


class PlaceAttributes(_Attributes):
    key: Key
    name: Name
    upper_tier_council: Name
    icb_id: RecordId | None = None
    postcode_districts: list[str] = Field(default_factory=list)

    @field_validator("postcode_districts")
    @classmethod
    def _check_districts(cls, value: list[str]) -> list[str]:
        return _districts(value)


class NetworkAttributes(_Attributes):
    key: Key
    name: Name
    kind: NetworkKind
    provider_id: RecordId | None = Field(default=None, description="The provider trust running the network")
    postcode_districts: list[str] = Field(default_factory=list, description="Coverage of a locality network")

    @field_validator("postcode_districts")
    @classmethod
    def _check_districts(cls, value: list[str]) -> list[str]:
        return _districts(value)


class PathwayAttributes(_Attributes):
    key: Key
    name: Name
    age_min: int | None = Field(default=None, ge=0, le=130)
    age_max: int | None = Field(default=None, ge=0, le=130)

    @model_validator(mode="after")
    def _band(self) -> PathwayAttributes:
        if self.age_min is not None and self.age_max is not None and self.age_max < self.age_min:
            raise ValueError("age_max is below age_min")
        return self


class OpeningInterval(_Attributes):
    """Local wall-clock hours in Europe/London; `closes` ≤ `opens` runs past midnight."""

    opens: time
    closes: time

    @field_validator("opens", "closes")
    @classmethod
    def _naive(cls, value: time) -> time:
        if value.tzinfo is not None:
            raise ValueError("opening hours are local Europe/London times, without an offset")
        return value


class OpeningHours(_Attributes):
    time_zone: Literal["Europe/London"] = TIME_ZONE
    always_open: bool = Field(default=False, description="24/7 services (crisis line, home treatment)")
    weekly: dict[Weekday, list[OpeningInterval]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> OpeningHours:
        if self.always_open and any(self.weekly.values()):
            raise ValueError("a 24/7 service has no weekly intervals")
        return self


class TeamAttributes(_Attributes):
    key: Key
    name: Name
    service_offer: ServiceOffer
    mhsds_team_type: str | None = Field(
        default=None, pattern=r"^[A-Z][0-9]{2}$", description="MHSDS ServTeamTypeRefToMH"
    )
    pathways: list[Key] = Field(default_factory=list, description="Pathway keys served; empty: every pathway")
    network_id: RecordId
    provider_id: RecordId | None = None
    coverage: list[str] = Field(default_factory=list, description="Postcode districts the team covers")
    opening_hours: OpeningHours
    caseload_capacity: int | None = Field(default=None, ge=0, le=100_000)

    @field_validator("coverage")
    @classmethod
    def _check_coverage(cls, value: list[str]) -> list[str]:
        return _districts(value)


class Registration(_Attributes):
    body: Literal["GMC", "NMC", "HCPC", "SWE", "GPhC", "BACP", "UKCP", "other"]
    number: str = Field(min_length=3, max_length=20, pattern=r"^[A-Za-z0-9\-]+$")


class PractitionerAttributes(_Attributes):
    staff_id: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9\-]+$")
    name: Name
    profession: Literal[
        "psychiatrist",
        "mental_health_nurse",
        "psychologist",
        "occupational_therapist",
        "social_worker",
        "peer_support_worker",
        "support_worker",
        "pharmacist",
        "other",
    ]
    registration: Registration | None = None


class MembershipAttributes(_Attributes):
    practitioner_id: RecordId
    team_id: RecordId
    role: Literal["member", "team_lead", "clinical_lead"] = "member"


class LeadershipRoleAttributes(_Attributes):
    role: LeadershipRoleKind
    practitioner_id: RecordId
    network_id: RecordId | None = None
    pathway_id: RecordId | None = None

    @model_validator(mode="after")
    def _held_for_one_thing(self) -> LeadershipRoleAttributes:
        if self.role is LeadershipRoleKind.PATHWAY_LEAD:
            if self.pathway_id is None or self.network_id is not None:
                raise ValueError("a pathway lead leads a pathway (pathway_id), across all networks")
        elif self.network_id is None or self.pathway_id is not None:
            raise ValueError(f"a {self.role.value} leads a network (network_id)")
        return self


ATTRIBUTES: dict[Kind, type[_Attributes]] = {
    Kind.ORGANISATION: OrganisationAttributes,
    Kind.PLACE: PlaceAttributes,
    Kind.NETWORK: NetworkAttributes,
    Kind.PATHWAY: PathwayAttributes,
    Kind.TEAM: TeamAttributes,
    Kind.PRACTITIONER: PractitionerAttributes,
    Kind.MEMBERSHIP: MembershipAttributes,
    Kind.LEADERSHIP_ROLE: LeadershipRoleAttributes,
}

# URL collection names.
COLLECTIONS: dict[str, Kind] = {
    "organisations": Kind.ORGANISATION,
    "places": Kind.PLACE,
    "networks": Kind.NETWORK,
    "pathways": Kind.PATHWAY,
    "teams": Kind.TEAM,
    "practitioners": Kind.PRACTITIONER,
    "memberships": Kind.MEMBERSHIP,
    "leadership-roles": Kind.LEADERSHIP_ROLE,
}


class RecordOut(BaseModel):
    """One version of a record: the envelope and its attributes."""

    id: str
    kind: Kind
    version: int
    valid_from: date
    valid_to: date | None
    status: Literal["active", "retired", "future", "superseded"]
    recorded_at: datetime
    attributes: dict[str, Any]


class HistoryEntry(RecordOut):
    change: Literal["created", "updated", "retired"]
    recorded_by: str


class Page(BaseModel):
    items: list[RecordOut]
    page: int
    per_page: int
    total: int
