"""FHIR R4 (UK Core) plumbing every service's `/fhir` views share: responses, search parameter
parsing (token, reference, date with prefixes, `_count` / `_offset`, `_format`), searchset Bundles
with paging links. The identifier systems, status mappings and small JSON shapes, which need no
web framework, are in `shared/fhir_terms.py`.

Errors are raised as `Problem(..., fhir_code=<IssueType>)`; on FHIR paths `shared.errors` answers
them as OperationOutcome. The parsers are pure (no I/O) and property-tested.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import JSONResponse

from contracts.timezones import LONDON
from shared.errors import FHIR_JSON, Problem
from shared.http import request_public_url
from shared.params import MAX_OFFSET, bounded_int

DEFAULT_COUNT = 20
MAX_COUNT = 100
# `_format` values meaning JSON ("+" arrives as a space when a client forgets to encode it).
_JSON_FORMATS = frozenset(
    {"json", "application/json", "application/fhir+json", "fhir+json", "application/fhir json", "fhir json"}
)
FORWARDED_BASE_HEADER = "X-Forwarded-Fhir-Base"
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


MAX_JSON_DEPTH = 32  # FHIR resources nest far less; deeper bodies only exhaust the parser's stack


def parse_json_body(raw: bytes, *, what: str = "the body") -> Any:
    """A FHIR request body parsed as JSON, refused (400) when it is not JSON or nests deeper
    than `MAX_JSON_DEPTH` (Python's parser raised RecursionError: a 500). The depth is counted
    before parsing, so no deep structure is ever built."""
    depth = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise invalid(f"{what} nests deeper than {MAX_JSON_DEPTH} levels", code="too-costly")
        elif byte in (0x5D, 0x7D):
            depth -= 1
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise invalid(f"{what} is not JSON", outcome_code="MSG_CANT_PARSE_CONTENT") from None


def invalid(
    diagnostics: str,
    *,
    status: int = 400,
    code: str = "invalid",
    expression: str | None = None,
    outcome_code: str | None = None,
) -> Problem:
    """A request FHIR rules refuse (answered as an OperationOutcome on FHIR paths): `code` the
    IssueType, `expression` the element or parameter at fault, `outcome_code` HL7's message code
    (`shared.errors.OUTCOME_DISPLAYS`) for the issue's coded details."""
    extensions: dict[str, str] = {"fhir_code": code}
    if expression:
        extensions["expression"] = expression
    if outcome_code:
        extensions["outcome_code"] = outcome_code
    return Problem(
        status, "Invalid FHIR request", diagnostics, type_slug="fhir-invalid", **dict[str, Any](extensions)
    )


# A parameter name worth echoing back (a name a caller could have meant), not arbitrary input.
SEARCH_PARAMETER_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


def shown_parameter(name: str) -> str | None:
    """The parameter's name as an answer may show it, or None when it is not a plausible name."""
    return name if SEARCH_PARAMETER_NAME.match(name) else None


def unknown_search_parameter(name: str, resource_type: str, hint: str) -> Problem:
    """400 naming a search parameter the server does not support (MSG_PARAM_UNKNOWN, the name as
    the issue's expression), the same from the gateway and from a service."""
    shown = shown_parameter(name)
    return invalid(
        f"search parameter{f' {shown}' if shown else ''} is not supported for {resource_type}; {hint}",
        code="not-supported",
        expression=shown,
        outcome_code="MSG_PARAM_UNKNOWN",
    )


def not_found(resource_type: str, resource_id: str) -> Problem:
    return Problem(
        404,
        "Not found",
        f"{resource_type}/{resource_id} is not known",
        type_slug="not-found",
        fhir_code="not-found",
    )


def fhir_response(
    resource: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(resource, status_code=status, media_type=FHIR_JSON, headers=headers)


def resource_response(
    resource: dict[str, Any], status: int = 200, *, location: str | None = None
) -> JSONResponse:
    """A single resource, with its version as a weak ETag and its last change (FHIR REST §3.1.0.3)."""
    headers: dict[str, str] = {}
    meta = resource.get("meta", {})
    if "versionId" in meta:
        headers["ETag"] = f'W/"{meta["versionId"]}"'
    modified = last_modified(meta.get("lastUpdated"))
    if modified is not None:
        headers["Last-Modified"] = modified
    if location:
        headers["Location"] = location
    return fhir_response(resource, status, headers)


def last_modified(last_updated: Any) -> str | None:
    """`meta.lastUpdated` (a FHIR instant) as an HTTP date for `Last-Modified` (RFC 9110 §5.6.7),
    or None when it is absent or not an instant with a zone."""
    if not isinstance(last_updated, str):
        return None
    try:
        moment = datetime.fromisoformat(last_updated.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return format_datetime(moment.astimezone(UTC).replace(microsecond=0), usegmt=True)


def lenient_handling(request: Request) -> bool:
    """`Prefer: handling=lenient` (FHIR's search and create leniency); strict otherwise."""
    return any(
        part.strip().lower() == "handling=lenient"
        for value in request.headers.getlist("prefer")
        for part in re.split(r"[;,]", value)
    )


def dropped_warning(elements: Sequence[str]) -> dict[str, Any]:
    """The warning OperationOutcome of a lenient create: one issue per element not kept."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "warning",
                "code": "not-supported",
                "diagnostics": f"{element} was not kept (Prefer: handling=lenient)",
                "expression": [element],
            }
            for element in elements
        ],
    }


def check_format(request: Request) -> None:
    """Only JSON is served: `_format` or an Accept header asking for anything else gets 406."""
    requested = request.query_params.get("_format")
    if requested is not None and requested.strip().lower() not in _JSON_FORMATS:
        raise invalid("only JSON is supported (_format=json)", status=406, code="not-supported")
    accept = request.headers.get("accept", "").lower()
    if accept and not any(kind in accept for kind in ("*/*", "application/*", "json")):
        raise invalid("only application/fhir+json is supported", status=406, code="not-supported")


# --- search parameters ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Paging:
    count: int
    offset: int


def paging(request: Request, *, default: int = DEFAULT_COUNT, maximum: int = MAX_COUNT) -> Paging:
    """`_count` (a server may return fewer than asked: capped at `maximum`) and `_offset`."""

    def number(name: str, fallback: int, least: int) -> int:
        raw = request.query_params.get(name)
        if raw is None:
            return fallback
        value = bounded_int(raw, least=least, most=MAX_OFFSET)
        if value is None:
            raise invalid(f"{name} must be a whole number from {least} to {MAX_OFFSET}")
        return value

    return Paging(count=min(number("_count", default, 0), maximum), offset=number("_offset", 0, 0))


def split_token(value: str) -> tuple[str | None, str]:
    """A token search value: `system|code` -> (system, code); `code` -> (None, code); `|code` ->
    ("", code) (no system)."""
    system, bar, code = value.partition("|")
    return (system, code) if bar else (None, value)


def reference_id(value: str, resource_type: str) -> str:
    """The id in a reference search value: `id`, `Type/id` or an absolute URL ending `Type/id`."""
    parts = value.rstrip("/").split("/")
    if len(parts) >= 2:
        if parts[-2] != resource_type:
            raise invalid(f"expected a reference to {resource_type}")
        candidate = parts[-1]
    else:
        candidate = parts[0]
    if not _ID.match(candidate):
        raise invalid(f"{resource_type} ids are 1-64 letters, digits, '-' or '.'")
    return candidate


DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")
_DATE_VALUE = re.compile(
    r"^(?P<year>\d{4})(-(?P<month>\d{2})(-(?P<day>\d{2})"
    r"(T(?P<time>\d{2}:\d{2}(:\d{2}(\.\d+)?)?)(?P<zone>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


@dataclass(frozen=True)
class DateRange:
    """A date search value: the prefix and the half-open range [start, end) its precision means."""

    prefix: str
    start: datetime
    end: datetime

    def matches(self, moment: datetime) -> bool:
        if self.prefix == "eq":
            return self.start <= moment < self.end
        if self.prefix == "ne":
            return not (self.start <= moment < self.end)
        if self.prefix in ("gt", "sa"):
            return moment >= self.end
        if self.prefix == "ge":
            return moment >= self.start
        if self.prefix in ("lt", "eb"):
            return moment < self.start
        return moment < self.end  # le


def parse_date(value: str) -> DateRange:
    """`[prefix]YYYY[-MM[-DD[Thh:mm[:ss[.f]][zone]]]]`. Dates mean Europe/London days; a time needs
    a zone (FHIR: a dateTime with a time has one)."""
    prefix = value[:2] if value[:2] in DATE_PREFIXES else "eq"
    text = value[2:] if value[:2] in DATE_PREFIXES else value
    match = _DATE_VALUE.match(text)
    if match is None:
        raise invalid("dates are YYYY, YYYY-MM, YYYY-MM-DD or a dateTime with a time zone")
    year, month, day = int(match["year"]), match["month"], match["day"]
    try:
        if match["time"] is not None:
            if match["zone"] is None:
                raise invalid("a dateTime search value with a time needs a time zone")
            moment = datetime.fromisoformat(f"{text[:10]}T{match['time']}{_zone(match['zone'])}")
            precision = timedelta(seconds=1) if match["time"].count(":") == 2 else timedelta(minutes=1)
            start = moment.replace(microsecond=0) if precision == timedelta(seconds=1) else moment
            return DateRange(prefix, start, start + precision)
        if day is not None:
            first = date(year, int(month or 1), int(day))
            following = first + timedelta(days=1)
        elif month is not None:
            first = date(year, int(month), 1)
            following = date(year + (first.month == 12), first.month % 12 + 1, 1)
        else:
            first, following = date(year, 1, 1), date(year + 1, 1, 1)
    except ValueError:
        raise invalid("that date does not exist") from None
    return DateRange(prefix, _london_midnight(first), _london_midnight(following))


def _zone(zone: str) -> str:
    return "+00:00" if zone == "Z" else zone


def _london_midnight(day: date) -> datetime:
    # In UTC: arithmetic and SQL comparisons then count real hours across clock changes.
    return datetime.combine(day, time(0), tzinfo=LONDON).astimezone(UTC)


# --- resources and Bundles -----------------------------------------------------------------------


def fhir_base(request: Request) -> str:
    """The FHIR base in links, fullUrls and Locations: the public `/fhir`, as the gateway names it
    (it says so in a header), or, called directly (service tests), `/fhir` at the public address
    (`shared.http.public_base`). Never the service's own `/<service>/fhir`, which is internal, nor
    the caller's Host header."""
    forwarded = request.headers.get(FORWARDED_BASE_HEADER)
    if forwarded:
        return forwarded.rstrip("/")
    return request_public_url(request, "/fhir")


def searchset(
    request: Request,
    resources: list[dict[str, Any]],
    *,
    base: str,
    total: int,
    page: Paging,
    included: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A searchset Bundle with `self`, `first`, `previous`, `next` and `last` links (by `_offset`),
    each relative to the base the caller used."""
    resource_type = request.url.path.rstrip("/").rsplit("/", 1)[-1]

    def link(relation: str, offset: int) -> dict[str, str]:
        params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("_offset", "_count")]
        params += [("_count", str(page.count)), ("_offset", str(offset))]
        return {"relation": relation, "url": f"{base}/{resource_type}?{urlencode(params)}"}

    links = [link("self", page.offset), link("first", 0)]
    if page.count:
        if page.offset > 0:
            links.append(link("previous", max(0, page.offset - page.count)))
        if page.offset + page.count < total:
            links.append(link("next", page.offset + page.count))
        links.append(link("last", max(0, (total - 1) // page.count * page.count)))
    entries = [
        {
            "fullUrl": f"{base}/{resource['resourceType']}/{resource['id']}",
            "resource": resource,
            "search": {"mode": "match"},
        }
        for resource in resources
    ]
    entries += [
        {
            "fullUrl": f"{base}/{resource['resourceType']}/{resource['id']}",
            "resource": resource,
            "search": {"mode": "include"},
        }
        for resource in included or []
    ]
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": total, "link": links}
    if entries:
        bundle["entry"] = entries  # FHIR JSON has no empty arrays
    return bundle
