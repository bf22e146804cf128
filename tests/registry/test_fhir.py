"""FHIR R4 views of the registry: every resource the API serves validates against the R4 models of
`fhir.resources` (R4B, whose Organization, HealthcareService, Location, PractitionerRole and
Bundle are R4's), carries a UK Core profile, and is found by its identifier."""

from __future__ import annotations

from datetime import time
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import given
from hypothesis import strategies as st

from services.registry import fhir
from services.registry.schemas import WEEKDAYS
from shared.deps import service_state
from shared.http import public_url
from tests.fhir_conformance import valid
from tests.registry.support import ADMIN, NETWORK, READ, Registry, team_attributes

MINUTES_A_DAY = 24 * 60
MINUTES_A_WEEK = 7 * MINUTES_A_DAY


# --- opening hours as availableTime (pure) -----------------------------------------------------


def _minute(value: str | time) -> int:
    moment = value if isinstance(value, time) else time.fromisoformat(value)
    return moment.hour * 60 + moment.minute


def weekly_minutes(weekly: dict[str, list[dict[str, str]]]) -> set[int]:
    """The minutes of the week a schedule is open; `closes` ≤ `opens` runs past midnight."""
    covered: set[int] = set()
    for index, day in enumerate(WEEKDAYS):
        for interval in weekly.get(day, []):
            start, end = _minute(interval["opens"]), _minute(interval["closes"])
            if end <= start:
                end += MINUTES_A_DAY
            covered.update((index * MINUTES_A_DAY + m) % MINUTES_A_WEEK for m in range(start, end))
    return covered


def fhir_minutes(slots: list[dict[str, Any]]) -> set[int]:
    covered: set[int] = set()
    for slot in slots:
        for day in slot["daysOfWeek"]:
            index = WEEKDAYS.index(day)
            if slot.get("allDay"):
                start, end = 0, MINUTES_A_DAY
            else:
                start = _minute(slot["availableStartTime"])
                end = (
                    MINUTES_A_DAY
                    if slot["availableEndTime"] == "23:59:59"
                    else _minute(slot["availableEndTime"])
                )
            covered.update(index * MINUTES_A_DAY + m for m in range(start, end))
    return covered


clock = st.integers(0, MINUTES_A_DAY - 1).map(lambda m: f"{m // 60:02d}:{m % 60:02d}")
interval = st.fixed_dictionaries({"opens": clock, "closes": clock}).filter(
    lambda i: i["opens"] != i["closes"]
)
weekly = st.dictionaries(st.sampled_from(WEEKDAYS), st.lists(interval, min_size=1, max_size=2), max_size=7)


@given(weekly)
def test_available_time_covers_exactly_the_opening_minutes(schedule: dict[str, Any]) -> None:
    slots = fhir.available_times({"weekly": schedule})
    assert fhir_minutes(slots) == weekly_minutes(schedule)
    get_fhir_model_class("HealthcareService").model_validate({"availableTime": slots})


def test_overnight_hours_split_at_midnight_and_always_open_is_all_day() -> None:
    slots = fhir.available_times({"weekly": {"sun": [{"opens": "22:00", "closes": "02:00"}]}})
    assert slots == [
        {"daysOfWeek": ["mon"], "availableStartTime": "00:00:00", "availableEndTime": "02:00:00"},
        {"daysOfWeek": ["sun"], "availableStartTime": "22:00:00", "availableEndTime": "23:59:59"},
    ]
    assert fhir.available_times({"always_open": True}) == [{"daysOfWeek": list(WEEKDAYS), "allDay": True}]


# --- through the API ---------------------------------------------------------------------------


async def _ids(registry: Registry, collection: str) -> list[str]:
    page = await registry.client.get(f"/registry/{collection}", params={"per_page": 200}, headers=READ)
    return [item["id"] for item in page.json()["items"]]


async def _fhir(registry: Registry, path: str, **params: Any) -> tuple[int, dict[str, Any], str]:
    response = await registry.client.get(f"/registry/fhir/{path}", params=params, headers=READ)
    return response.status_code, response.json(), response.headers["content-type"]


async def test_every_seeded_organisation_team_and_place_reads_as_valid_fhir(registry: Registry) -> None:
    checked = 0
    for collection, resource_type in (
        ("organisations", "Organization"),
        ("teams", "HealthcareService"),
        ("places", "Location"),
    ):
        for record_id in await _ids(registry, collection):
            status, body, media = await _fhir(registry, f"{resource_type}/{record_id}")
            assert status == 200 and media.startswith("application/fhir+json")
            assert valid(body)["resourceType"] == resource_type and body["id"] == record_id
            checked += 1
    # Every seeded record but networks and pathways, which are not FHIR resources.
    not_fhir = len(await _ids(registry, "networks")) + len(await _ids(registry, "pathways"))
    assert checked == 76 - not_fhir and not_fhir == 9


async def test_organisation_identifier_type_and_parent(registry: Registry) -> None:
    status, bundle, _ = await _fhir(registry, "Organization", identifier=f"{fhir.ODS_SYSTEM}|rw5")
    assert status == 200 and valid(bundle)["type"] == "searchset" and bundle["total"] == 1
    trust = bundle["entry"][0]["resource"]
    assert trust["identifier"] == [{"system": fhir.ODS_SYSTEM, "value": "RW5"}] and trust["active"] is True
    assert {c["code"] for c in trust["type"][0]["coding"]} == {"prov", "provider_trust"}
    public = public_url(service_state(registry.app).settings, "/fhir")  # never the registry's own base
    assert bundle["entry"][0]["fullUrl"] == f"{public}/Organization/{trust['id']}"
    assert "partOf" not in trust  # a trust answers to no parent organisation
    # A sub-ICB location's parent link resolves to the ICB.
    _, sub_icb, _ = await _fhir(registry, "Organization", identifier=f"{fhir.ODS_SYSTEM}|00Q")
    parent_id = sub_icb["entry"][0]["resource"]["partOf"]["reference"].removeprefix("Organization/")
    _, icb, _ = await _fhir(registry, f"Organization/{parent_id}")
    assert icb["identifier"][0]["value"].startswith("Q") and icb["type"][0]["coding"][0]["code"] == "pay"
    # Without a system, by value alone; with another numbering's system, nothing.
    assert (await _fhir(registry, "Organization", identifier="RW5"))[1]["total"] == 1
    assert (await _fhir(registry, "Organization", identifier=f"{fhir.CHARITY_SYSTEM}|RW5"))[1]["total"] == 0
    assert (await _fhir(registry, "Organization", identifier="https://example.org/other|RW5"))[1][
        "total"
    ] == 0


async def test_healthcare_service_carries_offer_hours_coverage_and_provider(registry: Registry) -> None:
    created = await registry.create(
        "teams",
        team_attributes(
            key="blackburn-night-cafe",
            opening_hours={"weekly": {"fri": [{"opens": "22:00", "closes": "02:00"}]}},
            mhsds_team_type="C02",
            pathways=["adult-mh"],
        ),
    )
    assert created.status_code == 201, created.text
    status, bundle, _ = await _fhir(
        registry, "HealthcareService", identifier=f"{fhir.TEAM_SYSTEM}|blackburn-night-cafe"
    )
    assert status == 200 and valid(bundle)["total"] == 1
    service = bundle["entry"][0]["resource"]
    assert service["category"][0]["coding"][0]["code"] == "outreach"
    assert service["type"][0]["coding"][0] == {
        "system": fhir.MHSDS_TEAM_TYPE_CODES,
        "code": "C02",
        "display": "C02",
    }
    assert service["program"][0]["coding"][0]["code"] == "adult-mh"
    assert service["availableTime"] == [
        {"daysOfWeek": ["fri"], "availableStartTime": "22:00:00", "availableEndTime": "23:59:59"},
        {"daysOfWeek": ["sat"], "availableStartTime": "00:00:00", "availableEndTime": "02:00:00"},
    ]
    assert "Europe/London" in service["availabilityExceptions"]
    # BB1/BB2 lie in the Blackburn with Darwen place: coverage points at that Location.
    places = {
        place_id: (await _fhir(registry, f"Location/{place_id}"))[1]
        for place_id in await _ids(registry, "places")
    }
    covered = [places[ref["reference"].removeprefix("Location/")]["name"] for ref in service["coverageArea"]]
    assert covered == ["Blackburn with Darwen"]


async def test_locations_list_and_search_by_place_key(registry: Registry) -> None:
    status, everything, _ = await _fhir(registry, "Location")
    assert status == 200 and valid(everything)["total"] == 4
    _, one, _ = await _fhir(registry, "Location", identifier=f"{fhir.PLACE_SYSTEM}|south-cumbria")
    location = valid(one)["entry"][0]["resource"]
    assert location["physicalType"]["coding"][0]["code"] == "area" and "LA9" in location["description"]
    assert location["managingOrganization"]["reference"].startswith("Organization/")


async def test_practitioner_roles_for_memberships_and_leadership(registry: Registry) -> None:
    practitioner = await registry.create(
        "practitioners",
        {
            "staff_id": "LSC-00042",
            "name": "Dr Amina Patel",
            "profession": "psychiatrist",
            "registration": {"body": "GMC", "number": "7012345"},
        },
        valid_from="2025-01-01",
    )
    assert practitioner.status_code == 201, practitioner.text
    practitioner_id = practitioner.json()["id"]
    team_id = (await _ids(registry, "teams"))[0]
    membership = await registry.create(
        "memberships",
        {"practitioner_id": practitioner_id, "team_id": team_id, "role": "clinical_lead"},
        valid_from="2025-06-01",
        valid_to="2030-01-01",
    )
    assert membership.status_code == 201, membership.text
    leadership = await registry.create(
        "leadership-roles",
        {"role": "medical_director", "practitioner_id": practitioner_id, "network_id": NETWORK["the-bay"]},
        valid_from="2025-06-01",
    )
    assert leadership.status_code == 201, leadership.text

    status, bundle, _ = await _fhir(registry, "PractitionerRole", identifier=f"{fhir.STAFF_SYSTEM}|LSC-00042")
    assert status == 200 and valid(bundle)["total"] == 2
    roles = {entry["resource"]["id"]: entry["resource"] for entry in bundle["entry"]}
    member = roles[membership.json()["id"]]
    assert member["period"] == {"start": "2025-06-01", "end": "2029-12-31"}  # valid_to is exclusive
    assert member["practitioner"]["identifier"]["value"] == "LSC-00042"
    assert member["healthcareService"][0]["reference"] == f"HealthcareService/{team_id}"
    assert [c["coding"][0]["code"] for c in member["code"]] == ["clinical_lead", "psychiatrist"]
    director = roles[leadership.json()["id"]]
    assert director["code"][0]["coding"][0]["code"] == "medical_director"
    network = (await registry.client.get(f"/registry/networks/{NETWORK['the-bay']}", headers=READ)).json()
    assert director["code"][0]["text"] == f"Medical director, {network['attributes']['name']}"
    assert (
        director["organization"]["reference"].startswith("Organization/") and "end" not in director["period"]
    )
    # Read one by id.
    status, read, _ = await _fhir(registry, f"PractitionerRole/{membership.json()['id']}")
    assert status == 200 and valid(read) == member


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("Organization/no-such-id", {}, 404, "not-found"),
        ("HealthcareService/no-such-id", {}, 404, "not-found"),
        ("PractitionerRole/no-such-id", {}, 404, "not-found"),
        ("Patient", {"identifier": "x"}, 404, "not-supported"),
        ("Organization", {}, 400, "required"),
        ("Organization", {"identifier": f"{fhir.ODS_SYSTEM}|"}, 400, "value"),
    ],
)
async def test_errors_are_operation_outcomes(
    registry: Registry, path: str, params: dict[str, str], status: int, code: str
) -> None:
    got, body, media = await _fhir(registry, path, **params)
    assert got == status and media.startswith("application/fhir+json")
    assert valid(body)["issue"][0]["code"] == code


async def test_fhir_views_need_registry_read(registry: Registry) -> None:
    assert (await registry.client.get("/registry/fhir/Location")).status_code == 401
    assert (await registry.client.get("/registry/fhir/Location", headers=ADMIN)).status_code == 200
