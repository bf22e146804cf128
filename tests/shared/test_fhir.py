"""The shared FHIR plumbing: search value parsing (pure, property-tested), OperationOutcomes for
errors on FHIR paths, and the gateway's CapabilityStatement (validated with `fhir.resources`)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request

from contracts.timezones import LONDON
from gateway.fhir import SUPPORTED, capability_statement
from shared.errors import Problem, is_fhir_path, operation_outcome, problem_body
from shared.fhir import Paging, paging, parse_date, reference_id, searchset, split_token
from shared.fhir_terms import care_plan_status

UTC_MOMENTS = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2040, 12, 31), timezones=st.just(LONDON)
)


def validate(resource: dict[str, Any]) -> None:
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def request_for(path: str, query: str = "") -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": path,
            "query_string": query.encode(),
            "headers": [],
            "scheme": "http",
            "server": ("testserver", 80),
        }
    )


# --- date search values ------------------------------------------------------------------------


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2040, 12, 30)), UTC_MOMENTS)
def test_a_day_means_the_whole_london_day(day: date, moment: datetime) -> None:
    value = parse_date(day.isoformat())
    inside = moment.astimezone(LONDON).date() == day
    assert value.matches(moment) is inside
    assert parse_date("ne" + day.isoformat()).matches(moment) is not inside


@given(
    st.sampled_from(
        ["2026", "2026-03", "2026-03-29", "2026-10-25", "2026-11-25T10:15:00Z", "2026-11-25T10:15+01:00"]
    ),
    UTC_MOMENTS,
)
def test_prefixes_partition_the_timeline(value: str, moment: datetime) -> None:
    """lt, eq and gt split every moment into exactly one; ge = eq or gt; le = lt or eq."""
    lt, eq, gt = (parse_date(p + value).matches(moment) for p in ("lt", "eq", "gt"))
    assert [lt, eq, gt].count(True) == 1
    assert parse_date("ge" + value).matches(moment) == (eq or gt)
    assert parse_date("le" + value).matches(moment) == (lt or eq)
    assert parse_date("sa" + value).matches(moment) == gt and parse_date("eb" + value).matches(moment) == lt


def test_date_precision_and_clock_changes() -> None:
    month = parse_date("2026-02")
    assert month.start == datetime(2026, 2, 1, tzinfo=LONDON) and month.end == datetime(
        2026, 3, 1, tzinfo=LONDON
    )
    december = parse_date("2026-12")
    assert december.end == datetime(2027, 1, 1, tzinfo=LONDON)
    spring_forward = parse_date("2026-03-29")  # 23 hours long in London
    assert spring_forward.end - spring_forward.start == timedelta(hours=23)
    instant = parse_date("ge2026-11-25T10:15:30Z")
    assert instant.end - instant.start == timedelta(seconds=1)


@pytest.mark.parametrize(
    "bad", ["", "2026-13", "2026-02-30", "26-01-01", "2026-11-25T10:15", "xx2026", "2026-11-25T25:00Z"]
)
def test_bad_dates_are_refused_without_echo(bad: str) -> None:
    with pytest.raises(Problem) as refused:
        parse_date(bad)
    assert refused.value.status == 400 and (not bad or bad not in str(refused.value.detail))


# --- tokens, references, paging ------------------------------------------------------------------


@given(st.text(alphabet="abc:/.-", max_size=20), st.text(alphabet="0123456789", min_size=1, max_size=12))
def test_tokens_split_at_the_bar(system: str, code: str) -> None:
    assert split_token(f"{system}|{code}") == (system, code)
    assert split_token(code) == (None, code)


def test_references_name_their_type() -> None:
    assert reference_id("Patient/abc-1", "Patient") == "abc-1"
    assert reference_id("https://x.nhs.uk/fhir/Patient/abc", "Patient") == "abc"
    assert reference_id("abc", "Patient") == "abc"
    for bad in ("Organization/abc", "Patient/a b", "Patient/" + "x" * 65):
        with pytest.raises(Problem):
            reference_id(bad, "Patient")


def test_paging_is_capped_and_links_walk_every_page() -> None:
    assert paging(request_for("/x/fhir/ServiceRequest", "_count=1000")).count == 100
    with pytest.raises(Problem):
        paging(request_for("/x/fhir/ServiceRequest", "_count=-1"))
    request = request_for("/triage/fhir/ServiceRequest", "status=active&_count=2&_offset=2")
    bundle = searchset(request, [], base="https://gw/fhir", total=5, page=Paging(2, 2))
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    assert links["next"] == "https://gw/fhir/ServiceRequest?status=active&_count=2&_offset=4"
    assert links["previous"].endswith("_offset=0") and links["last"].endswith("_offset=4")
    validate(bundle)


def test_care_plan_status() -> None:
    assert care_plan_status(agreed=False, discharged=False) == "draft"
    assert care_plan_status(agreed=True, discharged=False) == "active"
    assert care_plan_status(agreed=True, discharged=True) == "completed"
    assert care_plan_status(agreed=False, discharged=True) == "revoked"


# --- errors and the CapabilityStatement ----------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 403, 404, 406, 409, 412, 413, 422, 429, 500, 502, 504])
def test_every_problem_reads_as_a_valid_operation_outcome(status: int) -> None:
    body = problem_body(
        status, "Title", "Detail", errors=[{"location": ["body", "subject"], "message": "field required"}]
    )
    outcome = operation_outcome(body)
    validate(outcome)
    assert "Detail" in outcome["issue"][0]["diagnostics"] and len(outcome["issue"]) == 2


def test_fhir_paths() -> None:
    assert is_fhir_path("/fhir/ServiceRequest") and is_fhir_path("/triage/fhir/Task/1")
    assert is_fhir_path("/fhir") and not is_fhir_path("/triage/referrals")


def test_capability_statement_validates_and_lists_every_resource() -> None:
    statement = capability_statement("https://gw.example/fhir", "0.1.0")
    validate(statement)
    served = {entry["type"] for entry in statement["rest"][0]["resource"]}
    assert served == set(SUPPORTED)
    service_request = next(e for e in statement["rest"][0]["resource"] if e["type"] == "ServiceRequest")
    assert service_request["conditionalCreate"] is True
    assert {"create", "read", "vread", "search-type"} == {i["code"] for i in service_request["interaction"]}


def test_resource_response_carries_etag_and_last_modified() -> None:
    from shared.fhir import resource_response

    answer = resource_response(
        {
            "resourceType": "Task",
            "id": "t1",
            "meta": {"versionId": "3", "lastUpdated": "2026-03-01T10:15:30.123+01:00"},
        }
    )
    assert answer.headers["ETag"] == 'W/"3"'
    assert answer.headers["Last-Modified"] == "Sun, 01 Mar 2026 09:15:30 GMT"


def test_last_modified_ignores_what_is_not_an_instant() -> None:
    from shared.fhir import last_modified

    assert last_modified(None) is None
    assert last_modified("2026-03-01") is None
    assert last_modified("not a date") is None
    assert last_modified("2026-03-01T10:00:00Z") == "Sun, 01 Mar 2026 10:00:00 GMT"


def test_operation_outcome_issues_name_the_element_as_fhirpath() -> None:
    from shared.errors import fhirpath, operation_outcome

    assert fhirpath(["body", "identifier", 0, "value"]) == "identifier[0].value"
    assert fhirpath(["query", "status"]) == "status"
    assert fhirpath(["body"]) is None
    outcome = operation_outcome(
        {
            "status": 400,
            "errors": [{"location": ["body", "subject", "reference"], "message": "m"}, {"message": "n"}],
        }
    )
    assert outcome["issue"][1]["expression"] == ["subject.reference"]
    assert "expression" not in outcome["issue"][2]
