"""Build the directory's reference JSON from its hand-written data, and check it against ORUK / HSDS 3.0.

A build tool, not run-time code: the directory reads only the generated JSON. From the data in
``services/directory/reference/`` it generates, beside that data:

* ``needs-taxonomy.json`` from ``needs-taxonomy.yaml``: one HSDS 3.0 taxonomy object (CMH Suite
  community mental health support needs), each term mapped to published vocabularies where a
  mapping was verified;
* ``sample-directory.json`` from ``sample-directory.yaml``, ``sample-organisations.csv`` and
  ``sample-locations.csv``: a clearly labelled SAMPLE feed of fictional VCFSE services in
  Lancashire and South Cumbria, each a fully nested HSDS service.

It also reads the project's own copies of the Open Referral UK schemas (``standards/oruk``), the
postcode district centroids beside the data and the registry's Lancashire and South Cumbria
reference. Usage, from the repository root::

    .venv/bin/python -m tools.directory_reference           # check: exit 1 if invalid or stale
    .venv/bin/python -m tools.directory_reference --write   # regenerate the JSON (`make reference`)

`make test` runs the check (tests/directory/test_reference_current.py). The reference folder's
README.md gives the provenance of the data.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import json
import re
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

JSON = dict[str, Any]

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "services" / "directory" / "reference"
UK_SCHEMAS = ROOT / "services" / "directory" / "standards" / "oruk"
CENTROIDS = REFERENCE / "uk-outcode-centroids.csv"
LSC_REFERENCE = ROOT / "services" / "registry" / "reference" / "lsc-organisation.json"

# The hand-written data.
TAXONOMY_SOURCE = REFERENCE / "needs-taxonomy.yaml"
DIRECTORY_SOURCE = REFERENCE / "sample-directory.yaml"
ORGANISATIONS_SOURCE = REFERENCE / "sample-organisations.csv"
LOCATIONS_SOURCE = REFERENCE / "sample-locations.csv"

# What it generates.
TAXONOMY_PATH = REFERENCE / "needs-taxonomy.json"
DIRECTORY_PATH = REFERENCE / "sample-directory.json"
GENERATED_BY = "tools/directory_reference.py"
WRITE_COMMAND = "make reference (.venv/bin/python -m tools.directory_reference --write)"

# Deterministic identifiers: uuid5(NAMESPACE, "<readable name>").
NAMESPACE = uuid.UUID("6f1c2a52-9d7e-4c1b-8a43-2b0d6c1e5a10")
TERM_URI_BASE = "https://cmh-suite.nhs.uk/taxonomy/needs/"

# SKOS mapping relations, read as "<our term> <relation> <their concept>".
RELATIONS = frozenset({"exactMatch", "closeMatch", "broadMatch", "narrowMatch", "relatedMatch"})
VCFSE_CATEGORIES = frozenset({"voluntary", "community", "faith", "social_enterprise"})


def uid(name: str) -> str:
    """Return the deterministic UUID (as a string) for a readable name."""
    return str(uuid.uuid5(NAMESPACE, name))


# ---------------------------------------------------------------------------------------------
# Reading the data
# ---------------------------------------------------------------------------------------------


class DataError(ValueError):
    """The hand-written data is malformed (a missing field, a value of the wrong type)."""


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _field(record: dict[str, Any], key: str, kind: type, where: str, default: Any = ...) -> Any:
    """`record[key]`, which must be a `kind` (YAML reads 10:00 as a number: quote times)."""
    if key not in record:
        if default is ...:
            raise DataError(f"{where}: missing {key!r}")
        return default
    value = record[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DataError(f"{where}: {key!r} must be a {kind.__name__}, not {value!r}")
    return value


def _strings(values: Any, where: str) -> tuple[str, ...]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise DataError(f"{where}: must be a list of strings, not {values!r}")
    return tuple(values)


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise DataError(f"{_rel(path)}: must be a mapping")
    return data


def load_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file whose leading `#` lines are comments (provenance, notes)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    body = [line for line in lines if not line.startswith("#")]
    return list(csv.DictReader(body))


# ---------------------------------------------------------------------------------------------
# The needs taxonomy
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    code: str
    name: str
    description: str
    parent: str | None = None
    mappings: tuple[JSON, ...] = ()


@dataclass(frozen=True)
class Taxonomy:
    name: str
    description: str
    uri: str
    version: str
    open_eligibility_uri: str
    # Open Eligibility elements are identified by their `id` (the name): a verified mapping is a
    # path of ids. The LGA (esd) lists by (vocabulary, code) -> (label, uri).
    open_eligibility_paths: frozenset[tuple[str, ...]]
    esd: dict[tuple[str, str], tuple[str, str]]
    terms: tuple[Term, ...]

    @property
    def id(self) -> str:
        return uid("needs-taxonomy")


def _mapping(raw: Any, vocab: Taxonomy, where: str) -> JSON:
    """A term's mapping to a verified code: an Open Eligibility path or an LGA (esd) list item."""
    if not isinstance(raw, dict) or len(raw) != 2 or "relation" not in raw:
        raise DataError(f"{where}: a mapping is {{relation: ..., <vocabulary>: <code or path>}}")
    relation = _field(raw, "relation", str, where)
    (vocabulary,) = (k for k in raw if k != "relation")
    if vocabulary == "openEligibility":
        path = _strings(raw[vocabulary], f"{where}: openEligibility")
        if path not in vocab.open_eligibility_paths:
            raise DataError(f"{where}: unverified Open Eligibility path: {path}")
        return {
            "vocabulary": "openEligibility",
            "code": path[-1],
            "label": path[-1],
            "path": list(path),
            "uri": vocab.open_eligibility_uri,
            "relation": relation,
        }
    code = _field(raw, vocabulary, str, where)
    if (vocabulary, code) not in vocab.esd:
        raise DataError(f"{where}: unverified mapping {vocabulary}:{code}")
    label, uri = vocab.esd[(vocabulary, code)]
    return {"vocabulary": vocabulary, "code": code, "label": label, "uri": uri, "relation": relation}


def load_taxonomy(path: Path = TAXONOMY_SOURCE) -> Taxonomy:
    data = load_yaml(path)
    where = _rel(path)
    vocabularies = _field(data, "vocabularies", dict, where)
    oe = _field(vocabularies, "openEligibility", dict, f"{where}: vocabularies")
    esd: dict[tuple[str, str], tuple[str, str]] = {}
    for name in vocabularies:
        if name == "openEligibility":
            continue
        for code, item in _field(vocabularies, name, dict, f"{where}: vocabularies").items():
            at = f"{where}: vocabularies: {name}: {code}"
            esd[(name, str(code))] = (_field(item, "label", str, at), _field(item, "uri", str, at))
    taxonomy = Taxonomy(
        name=_field(data, "name", str, where),
        description=_field(data, "description", str, where),
        uri=_field(data, "uri", str, where),
        version=_field(data, "version", str, where),
        open_eligibility_uri=_field(oe, "uri", str, f"{where}: openEligibility"),
        open_eligibility_paths=frozenset(
            _strings(p, f"{where}: openEligibility: paths")
            for p in _field(oe, "paths", list, f"{where}: openEligibility")
        ),
        esd=esd,
        terms=(),
    )
    terms = []
    for n, raw in enumerate(_field(data, "terms", list, where), start=1):
        at = f"{where}: term {raw.get('code', n) if isinstance(raw, dict) else n}"
        if not isinstance(raw, dict):
            raise DataError(f"{at}: must be a mapping")
        terms.append(
            Term(
                code=_field(raw, "code", str, at),
                name=_field(raw, "name", str, at),
                description=_field(raw, "description", str, at),
                parent=_field(raw, "parent", str, at, None),
                mappings=tuple(_mapping(m, taxonomy, at) for m in _field(raw, "mappings", list, at, [])),
            )
        )
    return replace(taxonomy, terms=tuple(terms))


def term_id(code: str) -> str:
    return uid(f"needs-taxonomy:{code}")


def term_object(taxonomy: Taxonomy, term: Term, *, with_mappings: bool) -> JSON:
    obj: JSON = {
        "id": term_id(term.code),
        "code": term.code,
        "name": term.name,
        "description": term.description,
    }
    # The UK profile types parent_id as a string (uuid), so JSON null is rejected: top-level
    # terms leave parent_id out instead.
    if term.parent is not None:
        obj["parent_id"] = term_id(term.parent)
    obj["taxonomy"] = taxonomy.name
    obj["taxonomy_id"] = taxonomy.id
    obj["term_uri"] = TERM_URI_BASE + term.code
    if with_mappings:
        # Not an HSDS field: published under the extension prefix the standard reserves (x_).
        obj["x_mappings"] = [dict(m) for m in term.mappings]
    return obj


def build_taxonomy(taxonomy: Taxonomy) -> JSON:
    return {
        "id": taxonomy.id,
        "name": taxonomy.name,
        "description": taxonomy.description,
        "uri": taxonomy.uri,
        "version": taxonomy.version,
        "taxonomy_terms": [term_object(taxonomy, t, with_mappings=True) for t in taxonomy.terms],
    }


# ---------------------------------------------------------------------------------------------
# The sample directory (fictional organisations and services)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Organisation:
    key: str
    name: str
    description: str
    category: str
    scheme: str
    number: str
    domain: str


@dataclass(frozen=True)
class Location:
    key: str
    name: str
    address_1: str
    city: str
    county: str
    postcode: str
    place: str
    accessibility: str | None = None


@dataclass(frozen=True)
class Schedule:
    freq: str
    byday: str
    opens_at: str
    closes_at: str
    description: str


@dataclass(frozen=True)
class Cost:
    amount: float
    option: str
    description: str


@dataclass(frozen=True)
class Service:
    key: str
    name: str
    organisation: str
    description: str
    location: str
    places: tuple[str, ...]
    area: str
    schedules: tuple[Schedule, ...]
    needs: tuple[str, ...]
    phone: str
    contact: str
    languages: tuple[tuple[str, str], ...]
    cost: Cost
    minimum_age: int | None = None
    maximum_age: int | None = None
    alert: str | None = None


@dataclass(frozen=True)
class Directory:
    notice: str
    phone_description: str
    identifier_schemes: dict[str, str]
    places: dict[str, str]  # the registry's place keys and names
    organisations: dict[str, Organisation]
    locations: dict[str, Location]
    services: tuple[Service, ...]


def load_organisations(path: Path = ORGANISATIONS_SOURCE) -> dict[str, Organisation]:
    orgs = {}
    for row in load_csv(path):
        org = Organisation(**row)
        orgs[org.key] = org
    return orgs


def load_locations(path: Path = LOCATIONS_SOURCE) -> dict[str, Location]:
    locs = {}
    for row in load_csv(path):
        accessibility = row.pop("accessibility") or None
        loc = Location(**row, accessibility=accessibility)
        locs[loc.key] = loc
    return locs


def _service(raw: Any, where: str) -> Service:
    if not isinstance(raw, dict):
        raise DataError(f"{where}: must be a mapping")
    at = f"{where}: service {raw.get('key', '?')}"
    schedules = []
    for n, s in enumerate(_field(raw, "schedules", list, at), start=1):
        sat = f"{at}: schedule {n}"
        if not isinstance(s, dict):
            raise DataError(f"{sat}: must be a mapping")
        schedules.append(Schedule(*(_field(s, k, str, sat) for k in Schedule.__dataclass_fields__)))
    languages = _field(raw, "languages", dict, at)
    cost = _field(raw, "cost", dict, at)
    return Service(
        key=_field(raw, "key", str, at),
        name=_field(raw, "name", str, at),
        organisation=_field(raw, "organisation", str, at),
        description=_field(raw, "description", str, at),
        location=_field(raw, "location", str, at),
        places=_strings(_field(raw, "places", list, at), f"{at}: places"),
        area=_field(raw, "area", str, at),
        schedules=tuple(schedules),
        needs=_strings(_field(raw, "needs", list, at), f"{at}: needs"),
        phone=_field(raw, "phone", str, at),
        contact=_field(raw, "contact", str, at),
        languages=tuple((_field(languages, code, str, at), str(code)) for code in languages),
        cost=Cost(
            _field(cost, "amount", float, f"{at}: cost"),
            _field(cost, "option", str, f"{at}: cost"),
            _field(cost, "description", str, f"{at}: cost"),
        ),
        minimum_age=_field(raw, "minimum_age", int, at, None),
        maximum_age=_field(raw, "maximum_age", int, at, None),
        alert=_field(raw, "alert", str, at, None),
    )


def load_directory(path: Path = DIRECTORY_SOURCE) -> Directory:
    data = load_yaml(path)
    where = _rel(path)
    registry = json.loads(LSC_REFERENCE.read_text(encoding="utf-8"))
    return Directory(
        notice=_field(data, "notice", str, where),
        phone_description=_field(data, "phone_description", str, where),
        identifier_schemes=_field(data, "identifier_schemes", dict, where),
        places={p["key"]: p["name"] for p in registry["places"]},
        organisations=load_organisations(),
        locations=load_locations(),
        services=tuple(_service(s, where) for s in _field(data, "services", list, where)),
    )


def load_centroids() -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    with CENTROIDS.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            out[row["outcode"]] = (float(row["latitude"]), float(row["longitude"]))
    return out


def load_place_districts() -> dict[str, set[str]]:
    data = json.loads(LSC_REFERENCE.read_text(encoding="utf-8"))
    return {p["key"]: set(p["postcode_districts"]) for p in data["places"]}


def outcode(postcode: str) -> str:
    return postcode.split()[0]


def organisation_object(directory: Directory, org: Organisation) -> JSON:
    org_id = uid(f"sample-directory:organization:{org.key}")
    return {
        "id": org_id,
        "name": org.name,
        "description": org.description,
        "email": f"hello@{org.domain}",
        "website": f"https://{org.domain}/",
        "vcfse_category": org.category,
        "organization_identifiers": [
            {
                "id": uid(f"sample-directory:organization-identifier:{org.key}"),
                "organization_id": org_id,
                "identifier_scheme": org.scheme,
                "identifier_type": directory.identifier_schemes[org.scheme],
                "identifier": org.number,
            }
        ],
    }


def location_object(loc: Location, centroids: dict[str, tuple[float, float]]) -> JSON:
    loc_id = uid(f"sample-directory:location:{loc.key}")
    lat, lon = centroids[outcode(loc.postcode)]
    obj: JSON = {
        "id": loc_id,
        "location_type": "physical",
        "name": loc.name,
        "latitude": lat,
        "longitude": lon,
        "addresses": [
            {
                "id": uid(f"sample-directory:address:{loc.key}"),
                "location_id": loc_id,
                "address_1": loc.address_1,
                "city": loc.city,
                "state_province": loc.county,
                "postal_code": loc.postcode,
                "country": "GB",
                "address_type": "physical",
            }
        ],
    }
    if loc.accessibility:
        obj["accessibility"] = [
            {
                "id": uid(f"sample-directory:accessibility:{loc.key}"),
                "location_id": loc_id,
                "description": loc.accessibility,
            }
        ]
    return obj


def service_object(
    taxonomy: Taxonomy, directory: Directory, svc: Service, centroids: dict[str, tuple[float, float]]
) -> JSON:
    org = directory.organisations[svc.organisation]
    loc = directory.locations[svc.location]
    terms = {t.code: t for t in taxonomy.terms}
    service_id = uid(f"sample-directory:service:{svc.key}")
    location = location_object(loc, centroids)
    contact_id = uid(f"sample-directory:contact:{svc.key}")

    obj: JSON = {
        "id": service_id,
        "organization_id": uid(f"sample-directory:organization:{org.key}"),
        "name": svc.name,
        "description": svc.description,
        "url": f"https://{org.domain}/services/{svc.key}",
        "email": f"{svc.key}@{org.domain}",
        "status": "active",
    }
    if svc.minimum_age is not None:
        obj["minimum_age"] = svc.minimum_age
    if svc.maximum_age is not None:
        obj["maximum_age"] = svc.maximum_age
    if svc.alert:
        obj["alert"] = svc.alert
    obj["organization"] = organisation_object(directory, org)
    obj["service_at_locations"] = [
        {
            "id": uid(f"sample-directory:service-at-location:{svc.key}:{loc.key}"),
            "service_id": service_id,
            "location_id": location["id"],
            "location": location,
        }
    ]
    obj["schedules"] = [
        {
            "id": uid(f"sample-directory:schedule:{svc.key}:{n}"),
            "service_id": service_id,
            "freq": s.freq,
            "byday": s.byday,
            "opens_at": s.opens_at,
            "closes_at": s.closes_at,
            "description": s.description,
            "attending_type": "In person",
        }
        for n, s in enumerate(svc.schedules, start=1)
    ]
    obj["service_areas"] = [
        {
            "id": uid(f"sample-directory:service-area:{svc.key}:{place}"),
            "service_id": service_id,
            "name": directory.places[place],
            "service_area": svc.area,
            "lsc_place": place,
        }
        for place in svc.places
    ]
    obj["languages"] = [
        {
            "id": uid(f"sample-directory:language:{svc.key}:{code}"),
            "service_id": service_id,
            "name": name,
            "code": code,
        }
        for name, code in svc.languages
    ]
    obj["cost_options"] = [
        {
            "id": uid(f"sample-directory:cost-option:{svc.key}"),
            "service_id": service_id,
            "option": svc.cost.option,
            "amount": svc.cost.amount,
            "amount_description": svc.cost.description,
        }
    ]
    obj["contacts"] = [
        {
            "id": contact_id,
            "service_id": service_id,
            "name": svc.contact,
            "title": svc.contact,
            "phones": [
                {
                    "id": uid(f"sample-directory:phone:{svc.key}"),
                    "contact_id": contact_id,
                    "number": svc.phone,
                    "description": directory.phone_description,
                }
            ],
        }
    ]
    obj["attributes"] = [
        {
            "id": uid(f"sample-directory:attribute:{svc.key}:{code}"),
            "link_id": service_id,
            "link_type": "need",
            "taxonomy_term_id": term_id(code),
            "taxonomy_term": term_object(taxonomy, terms[code], with_mappings=False),
        }
        for code in svc.needs
    ]
    return obj


def build_directory(
    taxonomy: Taxonomy, directory: Directory, centroids: dict[str, tuple[float, float]]
) -> JSON:
    return {
        "sample": True,
        "notice": directory.notice,
        "generated_by": GENERATED_BY,
        "taxonomy_id": taxonomy.id,
        "services": [service_object(taxonomy, directory, s, centroids) for s in directory.services],
    }


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _retrieve(uri: str) -> Resource:
    path = Path(urlparse(uri).path)
    return Resource.from_contents(
        json.loads(path.read_text(encoding="utf-8")), default_specification=DRAFT202012
    )


REGISTRY: Registry[Any] = Registry(retrieve=_retrieve)


def validator_for(schema_path: Path) -> Draft202012Validator:
    """A 2020-12 validator whose relative $refs resolve against the schema file's location."""
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    schema["$id"] = schema_path.resolve().as_uri()
    return Draft202012Validator(schema, registry=REGISTRY, format_checker=Draft202012Validator.FORMAT_CHECKER)


def schema_errors(validator: Draft202012Validator, instance: Any, label: str) -> list[str]:
    return [
        f"{label}: {'/'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
        for err in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    ]


UUID_KEYS = re.compile(r"(^id$|_id$)")
PHONE = re.compile(r"^(01632 960\d{3}|07700 900\d{3})$")
CHARITY = re.compile(r"^\d{6,8}$")
COMPANY = re.compile(r"^\d{8}$")
HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def _walk(value: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield f"{path}/{k}", k, v
            yield from _walk(v, f"{path}/{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}/{i}")


def local_checks(
    vocab: Taxonomy, notice: str, schemes: dict[str, str], taxonomy: JSON, directory: JSON
) -> list[str]:
    """Checks the JSON Schemas cannot express (or do not enforce without extra packages)."""
    errors: list[str] = []
    centroids = load_centroids()
    districts = load_place_districts()

    for doc_name, doc in (("taxonomy", taxonomy), ("directory", directory)):
        for path, key, value in _walk(doc):
            if UUID_KEYS.search(key) and isinstance(value, str):
                try:
                    uuid.UUID(value)
                except ValueError:
                    errors.append(f"{doc_name}{path}: not a uuid")
            if key in {"uri", "url", "website", "term_uri"} and isinstance(value, str):
                parsed = urlparse(value)
                if not (parsed.scheme in {"http", "https"} and parsed.netloc):
                    errors.append(f"{doc_name}{path}: not an absolute http(s) URI")

    codes = [t["code"] for t in taxonomy["taxonomy_terms"]]
    ids = {t["id"] for t in taxonomy["taxonomy_terms"]}
    if len(set(codes)) != len(codes):
        errors.append("taxonomy: duplicate term codes")
    if taxonomy["id"] != str(uuid.uuid5(NAMESPACE, "needs-taxonomy")):
        errors.append("taxonomy: id is not uuid5(namespace, 'needs-taxonomy')")
    for t in taxonomy["taxonomy_terms"]:
        if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", t["code"]):
            errors.append(f"term {t['code']}: code is not a lowercase slug")
        if t["id"] != str(uuid.uuid5(NAMESPACE, f"needs-taxonomy:{t['code']}")):
            errors.append(f"term {t['code']}: id is not uuid5(namespace, 'needs-taxonomy:<code>')")
        if "parent_id" in t and t["parent_id"] not in ids:
            errors.append(f"term {t['code']}: parent_id is not a term in this taxonomy")
        for m in t["x_mappings"]:
            if m["relation"] not in RELATIONS:
                errors.append(f"term {t['code']}: unknown mapping relation {m['relation']}")
            if m["vocabulary"] == "openEligibility":
                if tuple(m["path"]) not in vocab.open_eligibility_paths or m["code"] != m["path"][-1]:
                    errors.append(f"term {t['code']}: unverified Open Eligibility mapping {m['path']}")
            elif (m["vocabulary"], m["code"]) not in vocab.esd:
                errors.append(f"term {t['code']}: unverified mapping {m['vocabulary']}:{m['code']}")

    terms_by_id = {t["id"]: t for t in taxonomy["taxonomy_terms"]}
    if directory.get("sample") is not True or directory.get("notice") != notice:
        errors.append("directory: must be labelled as sample data")
    for svc in directory["services"]:
        name = svc["name"]
        org = svc["organization"]
        if org["vcfse_category"] not in VCFSE_CATEGORIES:
            errors.append(f"{name}: bad vcfse_category")
        for ident in org["organization_identifiers"]:
            pattern = CHARITY if ident["identifier_scheme"] == "GB-CHC" else COMPANY
            if ident["identifier_scheme"] not in schemes or not pattern.fullmatch(ident["identifier"]):
                errors.append(f"{name}: malformed organisation identifier {ident['identifier']}")
        for key in ("email", "url"):
            value = str(svc.get(key, ""))
            host = (urlparse(value).netloc if key == "url" else value.partition("@")[2]).lower()
            if not host.endswith("example.org"):
                errors.append(f"{name}: {key} is not on example.org")
        for contact in svc["contacts"]:
            for phone in contact["phones"]:
                if not PHONE.fullmatch(phone["number"]):
                    errors.append(f"{name}: phone {phone['number']} is not an Ofcom drama number")
        for sched in svc["schedules"]:
            if not (HHMM.fullmatch(sched["opens_at"]) and HHMM.fullmatch(sched["closes_at"])):
                errors.append(f"{name}: schedule times must be HH:MM")
        area_places = {a["lsc_place"] for a in svc["service_areas"]}
        for sal in svc["service_at_locations"]:
            loc = sal["location"]
            postcode = loc["addresses"][0]["postal_code"]
            district = outcode(postcode)
            if (loc["latitude"], loc["longitude"]) != centroids[district]:
                errors.append(f"{name}: coordinates are not the {district} centroid")
            if not any(district in districts[p] for p in area_places):
                errors.append(f"{name}: {postcode} is not in a postcode district of the places served")
        for attr in svc["attributes"]:
            term = terms_by_id.get(attr["taxonomy_term_id"])
            if term is None:
                errors.append(f"{name}: attribute term {attr['taxonomy_term_id']} is not in the taxonomy")
                continue
            expected = {k: v for k, v in term.items() if k != "x_mappings"}
            if attr["taxonomy_term"] != expected:
                errors.append(f"{name}: nested taxonomy_term differs from the taxonomy file")
        if "maximum_age" in svc and svc["maximum_age"] < svc.get("minimum_age", 0):
            errors.append(f"{name}: maximum_age below minimum_age")
    return errors


def validate(
    vocab: Taxonomy, notice: str, schemes: dict[str, str], taxonomy: JSON, directory: JSON
) -> list[str]:
    uk = UK_SCHEMAS
    errors: list[str] = []

    errors += schema_errors(validator_for(uk / "taxonomy.json"), taxonomy, "taxonomy (UK taxonomy.json)")
    term_validator = validator_for(uk / "taxonomy_term.json")
    for t in taxonomy["taxonomy_terms"]:
        errors += schema_errors(term_validator, t, f"term {t['code']} (UK taxonomy_term.json)")

    uk_service = validator_for(uk / "compiled" / "service.json")
    uk_phone = validator_for(uk / "phone.json")
    for svc in directory["services"]:
        errors += schema_errors(uk_service, svc, f"{svc['name']} (UK compiled/service.json)")
        # Phones are not part of the UK nested service (see README): checked against phone.json.
        for contact in svc["contacts"]:
            for phone in contact["phones"]:
                errors += schema_errors(uk_phone, phone, f"{svc['name']} phone (UK phone.json)")

    if not errors:  # the local checks assume schema-valid input
        errors += local_checks(vocab, notice, schemes, taxonomy, directory)
    return errors


# ---------------------------------------------------------------------------------------------
# Building, checking, writing
# ---------------------------------------------------------------------------------------------


def dump(data: JSON) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class Build:
    outputs: dict[Path, str]  # each generated file and the text the data generates for it
    errors: list[str]  # why the generated data is invalid; nothing may be written while any
    summary: str


def build() -> Build:
    """Generate both JSON files from the data, and validate them."""
    try:
        vocab = load_taxonomy()
        directory = load_directory()
        missing = [
            f"unknown term {c!r} on service {s.key}"
            for s in directory.services
            for c in s.needs
            if c not in {t.code for t in vocab.terms}
        ]
    except (DataError, KeyError, TypeError) as exc:
        return Build({}, [f"data: {exc}"], "")
    if missing:
        return Build({}, [f"data: {m}" for m in missing], "")
    taxonomy = build_taxonomy(vocab)
    try:
        feed = build_directory(vocab, directory, load_centroids())
    except KeyError as exc:
        return Build({}, [f"data: unknown key {exc}"], "")
    errors = validate(vocab, directory.notice, directory.identifier_schemes, taxonomy, feed)
    mapped = sum(1 for t in vocab.terms if t.mappings)
    orgs = {s.organisation for s in directory.services}
    summary = (
        f"{len(vocab.terms)} terms ({mapped} with verified mappings), "
        f"{len(directory.services)} services from {len(orgs)} organisations"
    )
    return Build({TAXONOMY_PATH: dump(taxonomy), DIRECTORY_PATH: dump(feed)}, errors, summary)


def stale(outputs: dict[Path, str]) -> list[str]:
    """Each generated file that differs from what the data generates, with the start of the diff."""
    problems = []
    for path, text in outputs.items():
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            diff = difflib.unified_diff(
                current.splitlines(), text.splitlines(), "committed", "generated", lineterm="", n=1
            )
            head = "\n".join(list(diff)[:20])
            problems.append(f"{_rel(path)} is not what the data generates: run {WRITE_COMMAND}\n{head}")
    return problems


def problems() -> list[str]:
    """Everything wrong with the reference data and the JSON generated from it; empty when current."""
    result = build()
    return result.errors or stale(result.outputs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.directory_reference", description=__doc__.splitlines()[0]
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "--check", action="store_true", help="write nothing; fail if invalid or stale (default)"
    )
    action.add_argument("--write", action="store_true", help="regenerate the JSON from the data")
    args = parser.parse_args(argv)
    result = build()
    if result.errors:
        for err in result.errors:
            print(f"INVALID {err}", file=sys.stderr)
        if args.write:
            print("nothing written", file=sys.stderr)
        return 1
    if args.write:
        for path, text in result.outputs.items():
            current = path.read_text(encoding="utf-8") if path.exists() else None
            if current != text:
                path.write_text(text, encoding="utf-8")
            print(f"{_rel(path)}: {'already up to date' if current == text else 'rewritten'}")
    else:
        out_of_date = stale(result.outputs)
        if out_of_date:
            print("\n".join(out_of_date), file=sys.stderr)
            return 1
    print(f"ok: {result.summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
