"""Build the VCFSE directory reference data and validate it against the ORUK / HSDS 3.0 schemas.

This is a build tool, not runtime code. It writes two files next to itself:

* ``needs-taxonomy.json``: one HSDS 3.0 taxonomy object (CMH Suite community mental health
  support needs), with each term mapped to published vocabularies where a mapping was verified.
* ``sample-directory.json``: a clearly labelled SAMPLE feed of fictional VCFSE services in
  Lancashire and South Cumbria, each a fully nested HSDS service.

It reads the project's own copies: the Open Referral UK schemas (``../standards/oruk``), the
postcode district centroids beside it, and the registry's Lancashire and South Cumbria reference.

Usage (from the repository root)::

    .venv/bin/python services/directory/reference/build_reference.py          # write and validate
    .venv/bin/python services/directory/reference/build_reference.py --check  # fail if files differ

See README.md in this folder for provenance.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

JSON = dict[str, Any]

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[2]
UK_SCHEMAS = HERE.parent / "standards" / "oruk"
CENTROIDS = HERE / "uk-outcode-centroids.csv"
LSC_REFERENCE = REPO_ROOT / "services" / "registry" / "reference" / "lsc-organisation.json"

TAXONOMY_PATH = HERE / "needs-taxonomy.json"
DIRECTORY_PATH = HERE / "sample-directory.json"
GENERATED_BY = "services/directory/reference/build_reference.py"

# Deterministic identifiers: uuid5(NAMESPACE, "<readable name>").
NAMESPACE = uuid.UUID("6f1c2a52-9d7e-4c1b-8a43-2b0d6c1e5a10")
TERM_URI_BASE = "https://cmh-suite.nhs.uk/taxonomy/needs/"


def uid(name: str) -> str:
    """Return the deterministic UUID (as a string) for a readable name."""
    return str(uuid.uuid5(NAMESPACE, name))


# ---------------------------------------------------------------------------------------------
# Published vocabularies. Every code below was checked against the source text named here;
# see README.md. Do not add a code that has not been checked against its source.
# ---------------------------------------------------------------------------------------------

# Open Eligibility human services taxonomy (Aunt Bertha), XML file "taxonomy", version 1.05
# (update_date 6/21/2013). The XML has no numeric codes: each element is identified by its
# `id` attribute (the term name), so a mapping records that id as `code` and the ancestor ids
# as `path`. The ORUK guidance names this file as the "openEligibility:" vocabulary.
OPEN_ELIGIBILITY_URI = (
    "https://github.com/auntbertha/openeligibility/blob/1593480895ac3c35c77594cc18660e30da8740ce/taxonomy"
)
# The element paths used below, copied from that file (XML entities unescaped).
OPEN_ELIGIBILITY_VERIFIED_PATHS: frozenset[tuple[str, ...]] = frozenset(
    {
        ("Housing",),
        ("Housing", "Emergency Shelter"),
        ("Housing", "Help Find Housing"),
        ("Housing", "Housing Advice"),
        ("Money",),
        ("Money", "Government Benefits"),
        ("Money", "Financial Education", "Credit Counseling"),
        ("Work",),
        ("Work", "Supported Employment"),
        ("Health", "Addiction & Recovery"),
        ("Care", "Daytime Care", "Relief for Caregivers"),
        ("Care", "Support Network", "Peer Support"),
        ("Care", "Support Network", "Counseling"),
        ("Care", "Support Network", "Support Groups", "Bereavement"),
        ("Care", "End-of-Life Care", "Bereavement"),
        ("Emergency", "Psychiatric Emergency Services"),
        ("Emergency", "Immediate Safety", "Help Escape Violence"),
        ("Food",),
        ("Goods",),
        ("Legal", "Advocacy & Legal Aid"),
        ("Education", "Skills & Training", "Computer Class"),
        ("Goods", "Technology", "Internet"),
    }
)

# LGA (esd) identifiers quoted, with their labels, in the Open Referral UK guidance
# OpenReferralUK/human-services pages/Data/UseOfTaxonomies.md
# (commit 3b902df0d94c85b507f1ac3d08288d7ea732b419). Only these were verifiable offline.
ESD_VERIFIED: dict[tuple[str, str], tuple[str, str]] = {
    ("esdNeed", "69"): ("Social inclusion", "http://id.esd.org.uk/need/69"),
    ("esdServiceType", "298"): ("Carers support groups", "http://id.esd.org.uk/service/298"),
}

# SKOS mapping relations, read as "<our term> <relation> <their concept>".
RELATIONS = frozenset({"exactMatch", "closeMatch", "broadMatch", "narrowMatch", "relatedMatch"})


def oe(relation: str, *path: str) -> JSON:
    """A mapping to an Open Eligibility (v1.05) element."""
    if path not in OPEN_ELIGIBILITY_VERIFIED_PATHS:
        raise ValueError(f"unverified Open Eligibility path: {path}")
    return {
        "vocabulary": "openEligibility",
        "code": path[-1],
        "label": path[-1],
        "path": list(path),
        "uri": OPEN_ELIGIBILITY_URI,
        "relation": relation,
    }


def esd(vocabulary: str, code: str, relation: str) -> JSON:
    """A mapping to an LGA (esd) list item quoted in the ORUK guidance."""
    label, uri = ESD_VERIFIED[(vocabulary, code)]
    return {"vocabulary": vocabulary, "code": code, "label": label, "uri": uri, "relation": relation}


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


TAXONOMY_NAME = "CMH Suite community mental health support needs"
TAXONOMY_DESCRIPTION = (
    "Kinds of practical, social and emotional support that people using community mental health "
    "services in Lancashire and South Cumbria often need, and that voluntary, community, faith "
    "and social enterprise (VCFSE) partners provide. Used to tag services in the VCFSE partner "
    "directory. Terms carry mappings to published vocabularies where one was verified."
)
TAXONOMY_URI = "https://cmh-suite.nhs.uk/taxonomy/needs"

TERMS: tuple[Term, ...] = (
    Term(
        "housing",
        "Housing",
        "Help with finding, keeping or improving a safe and settled home.",
        mappings=(oe("closeMatch", "Housing"),),
    ),
    Term(
        "homelessness",
        "Homelessness",
        "Support if you are homeless, sleeping rough or at risk of losing your home, including "
        "emergency accommodation and help to find somewhere to live.",
        parent="housing",
        mappings=(
            oe("narrowMatch", "Housing", "Emergency Shelter"),
            oe("narrowMatch", "Housing", "Help Find Housing"),
        ),
    ),
    Term(
        "tenancy-support",
        "Tenancy support",
        "Practical help to keep your tenancy, such as dealing with your landlord, rent arrears, "
        "repairs and running a home.",
        parent="housing",
        mappings=(oe("closeMatch", "Housing", "Housing Advice"),),
    ),
    Term(
        "benefits-debt",
        "Benefits and debt (money advice)",
        "Free, confidential advice about money worries, benefits and debt.",
        mappings=(oe("closeMatch", "Money"),),
    ),
    Term(
        "welfare-benefits",
        "Welfare benefits advice",
        "Help to check which benefits you can get, fill in forms and challenge decisions, for "
        "example about Universal Credit or Personal Independence Payment (PIP).",
        parent="benefits-debt",
        mappings=(oe("closeMatch", "Money", "Government Benefits"),),
    ),
    Term(
        "debt-advice",
        "Debt advice",
        "Help to deal with debts, arrears and bills, make a budget and talk to the people you owe money to.",
        parent="benefits-debt",
        mappings=(oe("closeMatch", "Money", "Financial Education", "Credit Counseling"),),
    ),
    Term(
        "employment-training",
        "Employment and training",
        "Support to find work or stay in work, volunteer, learn new skills or go back to education.",
        mappings=(oe("closeMatch", "Work"), oe("narrowMatch", "Work", "Supported Employment")),
    ),
    Term(
        "substance-use",
        "Alcohol and drug use",
        "Support if you are worried about your own or someone else's drinking or drug use, "
        "including recovery groups.",
        mappings=(oe("closeMatch", "Health", "Addiction & Recovery"),),
    ),
    Term(
        "alcohol",
        "Alcohol",
        "Support to cut down or stop drinking, and to stay in recovery.",
        parent="substance-use",
        mappings=(oe("broadMatch", "Health", "Addiction & Recovery"),),
    ),
    Term(
        "drugs",
        "Drugs",
        "Support if you use drugs, including staying safer and recovery support.",
        parent="substance-use",
        mappings=(oe("broadMatch", "Health", "Addiction & Recovery"),),
    ),
    Term(
        "loneliness-social-inclusion",
        "Loneliness and social connection",
        "Groups and activities where you can meet people, make friends and feel part of your community.",
        mappings=(esd("esdNeed", "69", "closeMatch"),),
    ),
    Term(
        "carers-support",
        "Support for carers",
        "Information, advice, breaks and groups for people who look after a family member or friend.",
        mappings=(
            esd("esdServiceType", "298", "narrowMatch"),
            oe("narrowMatch", "Care", "Daytime Care", "Relief for Caregivers"),
        ),
    ),
    Term(
        "peer-support",
        "Peer support",
        "Support from people who have their own experience of mental health problems, one to one "
        "or in groups.",
        mappings=(oe("exactMatch", "Care", "Support Network", "Peer Support"),),
    ),
    Term(
        "physical-activity-wellbeing",
        "Physical activity and wellbeing",
        "Walking groups, gentle exercise, sport and outdoor activities that help your body and your mind.",
    ),
    Term(
        "safe-spaces",
        "Safe spaces",
        "Welcoming, non-clinical places to go when you are struggling and want to talk to someone.",
    ),
    Term(
        "crisis-cafe",
        "Crisis cafés",
        "Evening and weekend safe spaces for people in emotional distress, as an alternative to "
        "going to A&E. If your life is in immediate danger, call 999.",
        parent="safe-spaces",
        mappings=(oe("relatedMatch", "Emergency", "Psychiatric Emergency Services"),),
    ),
    Term(
        "bereavement",
        "Bereavement support",
        "Support after the death of someone close to you, in a group or one to one.",
        mappings=(
            oe("exactMatch", "Care", "End-of-Life Care", "Bereavement"),
            oe("narrowMatch", "Care", "Support Network", "Support Groups", "Bereavement"),
        ),
    ),
    Term(
        "suicide-prevention",
        "Suicide prevention and suicide bereavement",
        "Support if you are having thoughts of suicide, and for people bereaved or affected by "
        "suicide. If your life is in immediate danger, call 999.",
    ),
    Term(
        "domestic-abuse",
        "Domestic abuse",
        "Confidential support if you are experiencing, or recovering from, domestic abuse, "
        "including help to stay safe.",
        mappings=(oe("closeMatch", "Emergency", "Immediate Safety", "Help Escape Violence"),),
    ),
    Term(
        "culturally-specific",
        "Culturally specific support",
        "Services run by and for particular communities, faiths or language groups, so you can "
        "get support in a way that fits your culture and language.",
    ),
    Term(
        "lgbtq-support",
        "LGBTQ+ support",
        "Support and social groups for lesbian, gay, bisexual, trans, queer and questioning people.",
    ),
    Term(
        "young-people",
        "Young people and transitions",
        "Support for young people aged about 11 to 25, including when moving from children's to "
        "adult services.",
    ),
    Term(
        "counselling",
        "Talking support and counselling (non-clinical)",
        "Listening services and counselling from voluntary and community organisations. These do "
        "not replace NHS Talking Therapies or care from your mental health team.",
        mappings=(oe("closeMatch", "Care", "Support Network", "Counseling"),),
    ),
    Term(
        "food-essentials",
        "Food and essentials",
        "Food banks, community pantries, free meals, and help with essentials such as clothing, "
        "toiletries and things for the home.",
        mappings=(oe("narrowMatch", "Food"), oe("narrowMatch", "Goods")),
    ),
    Term(
        "legal-advice",
        "Legal advice",
        "Free or low-cost legal advice, for example about housing, immigration, work or family matters.",
        mappings=(oe("closeMatch", "Legal", "Advocacy & Legal Aid"),),
    ),
    Term(
        "digital-inclusion",
        "Digital inclusion",
        "Help to get online and use a phone, tablet or computer, and to get a device or data.",
        mappings=(
            oe("narrowMatch", "Education", "Skills & Training", "Computer Class"),
            oe("relatedMatch", "Goods", "Technology", "Internet"),
        ),
    ),
    Term(
        "eating-difficulties",
        "Eating difficulties",
        "Support for people affected by eating problems or eating disorders, and for their family "
        "and friends.",
    ),
    Term(
        "neurodiversity",
        "Neurodiversity support",
        "Support for autistic people, people with ADHD and other neurodivergent people, with or "
        "without a diagnosis.",
    ),
    Term(
        "veterans-support",
        "Veterans' support",
        "Support for people who have served in the armed forces, and for their families.",
    ),
)

TERMS_BY_CODE: dict[str, Term] = {t.code: t for t in TERMS}
TAXONOMY_ID = uid("needs-taxonomy")


def term_id(code: str) -> str:
    return uid(f"needs-taxonomy:{code}")


def term_object(term: Term, *, with_mappings: bool) -> JSON:
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
    obj["taxonomy"] = TAXONOMY_NAME
    obj["taxonomy_id"] = TAXONOMY_ID
    obj["term_uri"] = TERM_URI_BASE + term.code
    if with_mappings:
        obj["mappings"] = [dict(m) for m in term.mappings]
    return obj


def build_taxonomy() -> JSON:
    return {
        "id": TAXONOMY_ID,
        "name": TAXONOMY_NAME,
        "description": TAXONOMY_DESCRIPTION,
        "uri": TAXONOMY_URI,
        "version": "1.0",
        "taxonomy_terms": [term_object(t, with_mappings=True) for t in TERMS],
    }


# ---------------------------------------------------------------------------------------------
# The sample directory (fictional organisations and services)
# ---------------------------------------------------------------------------------------------

NOTICE = "Sample data for demonstration: fictional organisations and services, not a real directory."

PLACES: dict[str, str] = {
    "blackburn-with-darwen": "Blackburn with Darwen",
    "blackpool": "Blackpool",
    "lancashire": "Lancashire",
    "south-cumbria": "South Cumbria",
}

SCHEME_LABELS = {
    "GB-CHC": "Registered charity number (Charity Commission for England and Wales)",
    "GB-COH": "Company number (Companies House)",
}
VCFSE_CATEGORIES = frozenset({"voluntary", "community", "faith", "social_enterprise"})


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
    byday: str
    opens_at: str
    closes_at: str
    description: str
    freq: str = "WEEKLY"


@dataclass(frozen=True)
class Service:
    key: str
    name: str
    organisation: str
    description: str
    location: str
    places: tuple[str, ...]
    area_text: str
    schedules: tuple[Schedule, ...]
    needs: tuple[str, ...]
    phone: str
    contact_title: str
    minimum_age: int | None = None
    maximum_age: int | None = None
    languages: tuple[tuple[str, str], ...] = (("English", "en"),)
    cost: tuple[float, str, str] = (0, "Free", "There is no charge for this service.")
    alert: str | None = None


ORGANISATIONS: tuple[Organisation, ...] = (
    Organisation(
        "fylde-coast-safe-haven",
        "Fylde Coast Safe Haven Trust",
        "A fictional local charity that runs an evening crisis café and listening support for "
        "adults in Blackpool.",
        "voluntary",
        "GB-CHC",
        "1299001",
        "fylde-coast-safe-haven.example.org",
    ),
    Organisation(
        "seaside-steps",
        "Seaside Steps Wellbeing CIC",
        "A fictional community interest company offering free walking and gentle exercise groups "
        "for mental wellbeing.",
        "social_enterprise",
        "GB-COH",
        "19876501",
        "seaside-steps.example.org",
    ),
    Organisation(
        "roshni-collective",
        "Roshni Women's Wellbeing Collective",
        "A fictional community group run by and for South Asian women in Blackburn with Darwen.",
        "community",
        "GB-CHC",
        "1299002",
        "roshni-collective.example.org",
    ),
    Organisation(
        "darwen-valley-peers",
        "Darwen Valley Peer Network",
        "A fictional peer-led community group for adults living with mental health problems.",
        "community",
        "GB-CHC",
        "1000001",
        "darwen-valley-peers.example.org",
    ),
    Organisation(
        "pennine-advice",
        "Pennine Money and Housing Advice",
        "A fictional independent advice charity offering free money, benefits, debt and housing advice.",
        "voluntary",
        "GB-CHC",
        "1299004",
        "pennine-advice.example.org",
    ),
    Organisation(
        "central-lancs-carers",
        "Central Lancashire Carers Together",
        "A fictional carers' charity supporting unpaid carers, including carers of people with "
        "mental health problems.",
        "voluntary",
        "GB-CHC",
        "1299005",
        "central-lancs-carers.example.org",
    ),
    Organisation(
        "next-step-youth",
        "Next Step Youth Wellbeing",
        "A fictional youth charity supporting young people aged 11 to 25 with their emotional wellbeing.",
        "voluntary",
        "GB-CHC",
        "1299006",
        "next-step-youth.example.org",
    ),
    Organisation(
        "east-lancs-recovery",
        "East Lancashire Recovery Community CIC",
        "A fictional recovery community interest company run by people in recovery from alcohol "
        "and drug use.",
        "social_enterprise",
        "GB-COH",
        "19876502",
        "east-lancs-recovery.example.org",
    ),
    Organisation(
        "safe-harbour",
        "Safe Harbour Domestic Abuse Support",
        "A fictional specialist charity supporting people affected by domestic abuse in East Lancashire.",
        "voluntary",
        "GB-CHC",
        "1299007",
        "safe-harbour.example.org",
    ),
    Organisation(
        "bay-rainbow-network",
        "Morecambe Bay Rainbow Network",
        "A fictional LGBTQ+ community group for people living around Morecambe Bay.",
        "community",
        "GB-CHC",
        "1299008",
        "bay-rainbow-network.example.org",
    ),
    Organisation(
        "westmorland-faith-bereavement",
        "Westmorland Faith Communities Bereavement Network",
        "A fictional network of local faith communities offering bereavement support to people "
        "of any faith or none.",
        "faith",
        "GB-CHC",
        "1299009",
        "westmorland-faith-bereavement.example.org",
    ),
    Organisation(
        "furness-community-pantry",
        "Furness Community Pantry",
        "A fictional church-based community pantry and drop-in for people living in Furness.",
        "faith",
        "GB-CHC",
        "1299010",
        "furness-community-pantry.example.org",
    ),
)

# Real street names with a real postcode on that street; the building names are fictional.
LOCATIONS: tuple[Location, ...] = (
    Location(
        "blackpool-corporation-street",
        "The Lantern Rooms",
        "The Lantern Rooms, Corporation Street",
        "Blackpool",
        "Lancashire",
        "FY1 1EJ",
        "blackpool",
        "Step-free entrance and an accessible toilet on the ground floor.",
    ),
    Location(
        "blackpool-church-street",
        "Seaside Steps meeting point",
        "Church Street",
        "Blackpool",
        "Lancashire",
        "FY1 1HL",
        "blackpool",
    ),
    Location(
        "blackburn-king-street",
        "Roshni Community Room",
        "Roshni Community Room, King Street",
        "Blackburn",
        "Lancashire",
        "BB2 2DH",
        "blackburn-with-darwen",
        "Women-only space. Lift to the first floor.",
    ),
    Location(
        "blackburn-preston-new-road",
        "Pennine Advice Centre",
        "Pennine Advice Centre, Preston New Road",
        "Blackburn",
        "Lancashire",
        "BB2 6AH",
        "blackburn-with-darwen",
    ),
    Location(
        "darwen-bolton-road",
        "Peer Network meeting room",
        "India Mill Business Centre, Bolton Road",
        "Darwen",
        "Lancashire",
        "BB3 1AE",
        "blackburn-with-darwen",
    ),
    Location(
        "preston-guildhall-street",
        "Ribble Carers' Hub",
        "Ribble Carers' Hub, Guildhall Street",
        "Preston",
        "Lancashire",
        "PR1 3NU",
        "lancashire",
    ),
    Location(
        "preston-friargate",
        "Next Step Youth Space",
        "Next Step Youth Space, Friargate",
        "Preston",
        "Lancashire",
        "PR1 2AT",
        "lancashire",
    ),
    Location(
        "burnley-manchester-road",
        "Recovery Café",
        "Recovery Café, Manchester Road",
        "Burnley",
        "Lancashire",
        "BB11 1HW",
        "lancashire",
    ),
    Location(
        "accrington-blackburn-road",
        "Safe Harbour outreach office",
        "Safe Harbour outreach office, Blackburn Road",
        "Accrington",
        "Lancashire",
        "BB5 1HF",
        "lancashire",
    ),
    Location(
        "morecambe-marine-road-central",
        "Bay Community Lounge",
        "Bay Community Lounge, Marine Road Central",
        "Morecambe",
        "Lancashire",
        "LA4 5BX",
        "lancashire",
    ),
    Location(
        "kendal-finkle-street",
        "Fellside Room",
        "Fellside Room, Finkle Street",
        "Kendal",
        "Cumbria",
        "LA9 4AB",
        "south-cumbria",
    ),
    Location(
        "barrow-ironworks-road",
        "Furness Community Pantry",
        "Trinity Enterprise Centre, Ironworks Road",
        "Barrow-in-Furness",
        "Cumbria",
        "LA14 2PN",
        "south-cumbria",
    ),
    Location(
        "ulverston-the-gill",
        "The Gill Community Room",
        "The Gill Community Room, The Gill",
        "Ulverston",
        "Cumbria",
        "LA12 7BJ",
        "south-cumbria",
    ),
)

EVERY_DAY = "MO,TU,WE,TH,FR,SA,SU"
WEEKDAYS = "MO,TU,WE,TH,FR"

SERVICES: tuple[Service, ...] = (
    Service(
        "lantern-crisis-cafe",
        "Lantern Crisis Café",
        "fylde-coast-safe-haven",
        "An evening safe space for adults in emotional distress or crisis. Drop in for a hot "
        "drink and a confidential talk with trained staff and volunteers, some with their own "
        "experience of mental health crisis. No referral or appointment needed. This is not an "
        "emergency service: if your life is in immediate danger, call 999.",
        "blackpool-corporation-street",
        ("blackpool",),
        "Adults living in or visiting Blackpool.",
        (Schedule(EVERY_DAY, "18:00", "23:00", "Open every evening, 6pm to 11pm, including bank holidays."),),
        ("crisis-cafe", "suicide-prevention"),
        "01632 960101",
        "Café coordinator",
        minimum_age=18,
    ),
    Service(
        "seafront-walk-and-talk",
        "Saturday Walk and Talk",
        "seaside-steps",
        "A friendly, gentle walk along the seafront every Saturday morning, finishing with a cup "
        "of tea. Walk at your own pace; walk leaders stay with the slowest walker. Good for "
        "meeting people and getting active.",
        "blackpool-church-street",
        ("blackpool",),
        "Anyone living in Blackpool and the Fylde coast.",
        (Schedule("SA", "10:00", "12:00", "Every Saturday, 10am to 12 noon. Meet on Church Street."),),
        ("physical-activity-wellbeing", "loneliness-social-inclusion"),
        "07700 900101",
        "Walk leader",
        minimum_age=16,
    ),
    Service(
        "roshni-wellbeing-circle",
        "Roshni South Asian Women's Wellbeing Circle",
        "roshni-collective",
        "A women-only wellbeing group for South Asian women, run in English, Urdu, Gujarati and "
        "Punjabi. Relaxed conversation, creative activities and talks on managing stress, sleep "
        "and low mood, with one-to-one listening support if you want it.",
        "blackburn-king-street",
        ("blackburn-with-darwen",),
        "Women living in Blackburn with Darwen.",
        (Schedule("TU,TH", "10:00", "13:00", "Tuesdays and Thursdays, 10am to 1pm."),),
        ("culturally-specific", "loneliness-social-inclusion", "counselling"),
        "01632 960102",
        "Group coordinator",
        minimum_age=18,
        languages=(("English", "en"), ("Urdu", "ur"), ("Gujarati", "gu"), ("Punjabi", "pa")),
    ),
    Service(
        "darwen-peer-support-group",
        "Darwen Peer Support Group",
        "darwen-valley-peers",
        "A weekly peer support group led by people with their own experience of mental health "
        "problems. Share what helps, or just listen. You do not need a diagnosis or a referral.",
        "darwen-bolton-road",
        ("blackburn-with-darwen",),
        "Adults living in Darwen and Blackburn.",
        (
            Schedule("MO,TU", "10:00", "16:00", "Mondays and Tuesdays, 10am to 4pm, drop in any time."),
            Schedule("WE", "18:30", "20:30", "Wednesday evening group, 6:30pm to 8:30pm."),
        ),
        ("peer-support", "loneliness-social-inclusion"),
        "01632 960103",
        "Peer support lead",
        minimum_age=18,
    ),
    Service(
        "pennine-money-advice",
        "Pennine Money Advice",
        "pennine-advice",
        "Free, confidential advice about benefits, debt and money worries. We can check what "
        "benefits you are entitled to, help with forms and appeals, and help you deal with debts "
        "and arrears. Appointments in person or by phone.",
        "blackburn-preston-new-road",
        ("blackburn-with-darwen", "lancashire"),
        "People living in Blackburn with Darwen and Pennine Lancashire.",
        (Schedule("MO,TU,TH", "10:00", "16:00", "Mondays, Tuesdays and Thursdays, 10am to 4pm."),),
        ("benefits-debt", "welfare-benefits", "debt-advice"),
        "01632 960104",
        "Advice line",
        minimum_age=18,
        languages=(("English", "en"), ("Polish", "pl"), ("Urdu", "ur")),
    ),
    Service(
        "pennine-tenancy-support",
        "Stay Put Tenancy and Housing Support",
        "pennine-advice",
        "Help to keep your home or find a new one. Housing caseworkers help with rent arrears, "
        "problems with landlords, repairs, homelessness applications and setting up a new home.",
        "blackburn-preston-new-road",
        ("blackburn-with-darwen",),
        "People living in Blackburn with Darwen.",
        (Schedule(WEEKDAYS, "09:30", "16:30", "Monday to Friday, 9:30am to 4:30pm."),),
        ("housing", "homelessness", "tenancy-support"),
        "01632 960105",
        "Housing caseworker",
        minimum_age=16,
    ),
    Service(
        "ribble-carers-hub",
        "Ribble Carers' Hub",
        "central-lancs-carers",
        "Information, advice and peer groups for unpaid carers, including people caring for "
        "someone with a mental health problem. We can help with carers' assessments, breaks and "
        "looking after your own wellbeing.",
        "preston-guildhall-street",
        ("lancashire",),
        "Unpaid carers in Preston, Chorley and South Ribble.",
        (Schedule("MO,WE,FR", "10:00", "15:00", "Mondays, Wednesdays and Fridays, 10am to 3pm."),),
        ("carers-support",),
        "01632 960106",
        "Carers support worker",
        minimum_age=18,
    ),
    Service(
        "next-step-youth-drop-in",
        "Next Step Youth Drop-in",
        "next-step-youth",
        "A drop-in for young people aged 11 to 25 who are finding things hard. Talk to a youth "
        "worker, join a group or book a one-to-one session with a counsellor. We also help with "
        "moving from children's to adult services.",
        "preston-friargate",
        ("lancashire",),
        "Young people living in Preston and Central Lancashire.",
        (
            Schedule("TU,TH", "15:30", "19:00", "Tuesdays and Thursdays after school, 3:30pm to 7pm."),
            Schedule("SA", "11:00", "15:00", "Saturdays, 11am to 3pm."),
        ),
        ("young-people", "counselling"),
        "07700 900102",
        "Youth worker",
        minimum_age=11,
        maximum_age=25,
    ),
    Service(
        "bay-rainbow-group",
        "Rainbow Bay LGBTQ+ Social and Support Group",
        "bay-rainbow-network",
        "A weekly social and peer support group for LGBTQ+ people. A safe, friendly space to "
        "meet others, talk and take part in activities.",
        "morecambe-marine-road-central",
        ("lancashire", "south-cumbria"),
        "People living around Morecambe Bay, including Lancaster, Morecambe and South Cumbria.",
        (Schedule("WE", "18:00", "20:30", "Wednesdays, 6pm to 8:30pm."),),
        ("lgbtq-support", "peer-support", "loneliness-social-inclusion"),
        "01632 960107",
        "Group facilitator",
        minimum_age=16,
    ),
    Service(
        "burnley-recovery-cafe",
        "Burnley Recovery Café",
        "east-lancs-recovery",
        "A recovery café and mutual aid groups for people affected by alcohol or drug use, run "
        "by people in recovery. Drop in for a brew, join a group, or get help to find treatment.",
        "burnley-manchester-road",
        ("lancashire",),
        "Adults living in Burnley, Pendle and the surrounding area.",
        (Schedule("MO,WE,FR", "10:00", "14:00", "Mondays, Wednesdays and Fridays, 10am to 2pm."),),
        ("substance-use", "alcohol", "drugs", "peer-support"),
        "01632 960108",
        "Recovery coordinator",
        minimum_age=18,
    ),
    Service(
        "safe-harbour-outreach",
        "Safe Harbour Domestic Abuse Outreach",
        "safe-harbour",
        "Confidential support for anyone experiencing domestic abuse: safety planning, emotional "
        "support and help with housing, money and legal matters. Appointments only at the "
        "outreach office; we never publish the address of our safe accommodation. In an "
        "emergency, call 999.",
        "accrington-blackburn-road",
        ("lancashire",),
        "People living in Hyndburn, Rossendale and East Lancashire.",
        (Schedule(WEEKDAYS, "09:00", "17:00", "Monday to Friday, 9am to 5pm, by appointment."),),
        ("domestic-abuse",),
        "01632 960109",
        "Outreach duty worker",
        minimum_age=16,
        languages=(("English", "en"), ("Urdu", "ur"), ("Polish", "pl")),
    ),
    Service(
        "fellside-bereavement-group",
        "Fellside Bereavement Support Group",
        "westmorland-faith-bereavement",
        "A weekly bereavement support group for adults, with trained volunteers. Open to people "
        "of any faith or none. One-to-one support can also be arranged.",
        "kendal-finkle-street",
        ("south-cumbria",),
        "Adults living in Kendal and South Lakeland.",
        (Schedule("TH", "14:00", "16:00", "Thursdays, 2pm to 4pm."),),
        ("bereavement",),
        "01632 960110",
        "Bereavement volunteer coordinator",
        minimum_age=18,
    ),
    Service(
        "fellside-suicide-bereavement-group",
        "Fellside Suicide Bereavement Peer Group",
        "westmorland-faith-bereavement",
        "A monthly peer group for adults bereaved or affected by suicide, facilitated by trained "
        "volunteers with their own experience of suicide loss.",
        "kendal-finkle-street",
        ("south-cumbria",),
        "Adults living in South Cumbria.",
        (
            Schedule(
                "1TU", "18:30", "20:30", "First Tuesday of every month, 6:30pm to 8:30pm.", freq="MONTHLY"
            ),
        ),
        ("suicide-prevention", "bereavement", "peer-support"),
        "01632 960111",
        "Group facilitator",
        minimum_age=18,
    ),
    Service(
        "furness-community-pantry",
        "Furness Community Pantry",
        "furness-community-pantry",
        "A community pantry where members choose their own food and essentials for a small "
        "weekly fee. Free emergency food parcels are also available, with no referral needed.",
        "barrow-ironworks-road",
        ("south-cumbria",),
        "People living in Barrow-in-Furness and Furness.",
        (Schedule("TU,FR", "10:00", "13:00", "Tuesdays and Fridays, 10am to 1pm."),),
        ("food-essentials",),
        "01632 960112",
        "Pantry coordinator",
        cost=(5, "Weekly pantry shop", "GBP 5 per weekly shop; emergency food parcels are free."),
    ),
    Service(
        "ulverston-digital-drop-in",
        "Ulverston Digital Drop-in",
        "furness-community-pantry",
        "Friendly help to get online: using a phone, tablet or computer, setting up email, "
        "applying for benefits online and booking appointments. Devices and data can sometimes "
        "be provided.",
        "ulverston-the-gill",
        ("south-cumbria",),
        "People living in Ulverston and Low Furness.",
        (Schedule("WE", "10:00", "12:00", "Wednesdays, 10am to 12 noon."),),
        ("digital-inclusion",),
        "01632 960113",
        "Digital volunteer",
    ),
    Service(
        "furness-veterans-breakfast",
        "Furness Veterans' Breakfast Club",
        "furness-community-pantry",
        "A Saturday breakfast club for armed forces veterans and their families: good food, good "
        "company, and help to connect with veterans' services.",
        "barrow-ironworks-road",
        ("south-cumbria",),
        "Veterans and their families living in Furness.",
        (Schedule("SA", "09:00", "11:00", "Saturdays, 9am to 11am."),),
        ("veterans-support", "loneliness-social-inclusion"),
        "07700 900103",
        "Breakfast club organiser",
        cost=(3.5, "Breakfast", "GBP 3.50 for breakfast; free if you cannot pay."),
    ),
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


def organisation_object(org: Organisation) -> JSON:
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
                "identifier_type": SCHEME_LABELS[org.scheme],
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


def service_object(svc: Service, centroids: dict[str, tuple[float, float]]) -> JSON:
    orgs = {o.key: o for o in ORGANISATIONS}
    locs = {loc.key: loc for loc in LOCATIONS}
    org = orgs[svc.organisation]
    loc = locs[svc.location]
    service_id = uid(f"sample-directory:service:{svc.key}")
    location = location_object(loc, centroids)
    contact_id = uid(f"sample-directory:contact:{svc.key}")
    amount, option, amount_description = svc.cost

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
    obj["organization"] = organisation_object(org)
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
            "name": PLACES[place],
            "service_area": svc.area_text,
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
            "option": option,
            "amount": amount,
            "amount_description": amount_description,
        }
    ]
    obj["contacts"] = [
        {
            "id": contact_id,
            "service_id": service_id,
            "name": svc.contact_title,
            "title": svc.contact_title,
            "phones": [
                {
                    "id": uid(f"sample-directory:phone:{svc.key}"),
                    "contact_id": contact_id,
                    "number": svc.phone,
                    "description": "Fictional number from the Ofcom range reserved for TV and radio drama.",
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
            "taxonomy_term": term_object(TERMS_BY_CODE[code], with_mappings=False),
        }
        for code in svc.needs
    ]
    return obj


def build_directory(centroids: dict[str, tuple[float, float]]) -> JSON:
    return {
        "sample": True,
        "notice": NOTICE,
        "generated_by": GENERATED_BY,
        "taxonomy_id": TAXONOMY_ID,
        "services": [service_object(s, centroids) for s in SERVICES],
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


def _walk(value: Any, path: str = "") -> list[tuple[str, str, Any]]:
    out: list[tuple[str, str, Any]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            out.append((f"{path}/{k}", k, v))
            out.extend(_walk(v, f"{path}/{k}"))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(_walk(v, f"{path}/{i}"))
    return out


def local_checks(taxonomy: JSON, directory: JSON) -> list[str]:
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
        for m in t["mappings"]:
            if m["relation"] not in RELATIONS:
                errors.append(f"term {t['code']}: unknown mapping relation {m['relation']}")
            if m["vocabulary"] == "openEligibility":
                if tuple(m["path"]) not in OPEN_ELIGIBILITY_VERIFIED_PATHS or m["code"] != m["path"][-1]:
                    errors.append(f"term {t['code']}: unverified Open Eligibility mapping {m['path']}")
            elif (m["vocabulary"], m["code"]) not in ESD_VERIFIED:
                errors.append(f"term {t['code']}: unverified mapping {m['vocabulary']}:{m['code']}")

    terms_by_id = {t["id"]: t for t in taxonomy["taxonomy_terms"]}
    if directory.get("sample") is not True or directory.get("notice") != NOTICE:
        errors.append("directory: must be labelled as sample data")
    for svc in directory["services"]:
        name = svc["name"]
        org = svc["organization"]
        if org["vcfse_category"] not in VCFSE_CATEGORIES:
            errors.append(f"{name}: bad vcfse_category")
        for ident in org["organization_identifiers"]:
            pattern = CHARITY if ident["identifier_scheme"] == "GB-CHC" else COMPANY
            if ident["identifier_scheme"] not in SCHEME_LABELS or not pattern.fullmatch(ident["identifier"]):
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
            expected = {k: v for k, v in term.items() if k != "mappings"}
            if attr["taxonomy_term"] != expected:
                errors.append(f"{name}: nested taxonomy_term differs from the taxonomy file")
        if "maximum_age" in svc and svc["maximum_age"] < svc.get("minimum_age", 0):
            errors.append(f"{name}: maximum_age below minimum_age")
    return errors


def validate(taxonomy: JSON, directory: JSON) -> list[str]:
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
        errors += local_checks(taxonomy, directory)
    return errors


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def dump(data: JSON) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="do not write; fail if the files are stale")
    args = parser.parse_args(argv)
    taxonomy = build_taxonomy()
    directory = build_directory(load_centroids())
    errors = validate(taxonomy, directory)
    if errors:
        for err in errors:
            print(f"INVALID {err}", file=sys.stderr)
        return 1

    outputs = {TAXONOMY_PATH: dump(taxonomy), DIRECTORY_PATH: dump(directory)}
    if args.check:
        stale = [
            p.name for p, text in outputs.items() if not p.exists() or p.read_text(encoding="utf-8") != text
        ]
        if stale:
            print(f"stale: {', '.join(stale)} (run build_reference.py)", file=sys.stderr)
            return 1
    else:
        for path, text in outputs.items():
            path.write_text(text, encoding="utf-8")

    mapped = sum(1 for t in taxonomy["taxonomy_terms"] if t["mappings"])
    orgs = {s["organization"]["id"] for s in directory["services"]}
    print(
        f"ok: {len(TERMS)} terms ({mapped} with verified mappings), "
        f"{len(directory['services'])} services from {len(orgs)} organisations"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
