"""A person of organisation A cannot see organisation B's records through any page (issue 22),
generated from the pages themselves: people of each kind of work in two organisations sign in;
the one whose organisation holds the records walks every page reachable from home and notes every
address naming a record (a route with path parameters); the other then opens each of those
addresses and must get a refusal page (403/404) carrying none of the record's identifiers, and
none of their own pages may name them either. A page added later is walked without editing this.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from starlette.routing import Match

from gateway.web.demo_people import DEMO_PEOPLE
from gateway.web.people import PeopleError
from gateway.web.roles import Role
from tests.e2e.conftest import read_models_filled, referral_body
from tests.support import eventually
from tests.web.conftest import WebSuite
from tests.web.support import Browser

MAX_PAGES = 60  # per person: enough for every list and a few of each kind of detail page
_LINK = re.compile(r'href="(/app/[^"#]*)"')
_IDENTIFIER = re.compile(r"^(?=.*\d)[0-9A-Za-z-]{8,}$")  # a record's id, not a word like "assessment"
# Not pages to walk: leaving (sign-out is a form anyway), files, the sign-in dance.
_NOT_WALKED = ("/app/static/", "/app/sign-in", "/app/auth/", "/app/sign-out", "/app/signed-out")


@dataclass(frozen=True)
class Pair:
    """Two people doing the same work for different organisations: `owner`'s organisation holds
    the records the test makes; `intruder`'s does not."""

    work: str
    owner: str
    intruder: str


def demo(subject_start: str) -> Any:
    return next(person for person in DEMO_PEOPLE if person.subject.startswith(subject_start))


def route_params(app: Any, path: str) -> dict[str, str] | None:
    """The path parameters of the page route `path` matches (None: no route, {}: none)."""
    scope = {"type": "http", "path": path, "method": "GET", "root_path": ""}
    for route in iter_route_contexts(app.routes):
        match, child = route.matches(scope)
        if match is Match.FULL:
            return {k: str(v) for k, v in child.get("path_params", {}).items()}
    return None


async def walk(browser: Browser, start: Iterable[str]) -> dict[str, str]:
    """Every page reachable from `start` (bounded): address → HTML, 200s only."""
    seen: dict[str, str] = {}
    queue = list(start)
    while queue and len(seen) < MAX_PAGES:
        address = queue.pop(0)
        if address in seen or address.startswith(_NOT_WALKED):
            continue
        page = await browser.get(address)
        if page.status_code != 200 or not page.headers.get("content-type", "").startswith("text/html"):
            continue
        seen[address] = page.text
        for link in _LINK.findall(page.text):
            target = urljoin(address, link.replace("&amp;", "&"))
            if urlsplit(target).path not in {urlsplit(s).path for s in seen}:
                queue.append(target)
    return seen


async def make_records(web_suite: WebSuite) -> None:
    """Records of the owners' organisations: a referral awaiting triage, one accepted (an
    episode), one signposted to the sample charity 1000001 (a warm handover); the charity's own
    services are the directory's sample data."""
    suite = web_suite.suite
    await eventually(lambda: read_models_filled(suite.triage_app), timeout=30)
    gp = await suite.bearer("gp-ehr")
    spa = await suite.bearer("crisis-app")
    partner = await suite.bearer("vcfse-partner")
    clinician = await suite.bearer("lscft-clinician")
    async with httpx.AsyncClient(base_url=suite.url, timeout=15) as http:
        waiting = await http.post(
            "/triage/referrals", json=referral_body(), headers={**gp, "Idempotency-Key": "b-1"}
        )
        assert waiting.status_code == 201, waiting.text
        accepted = await http.post(
            "/triage/referrals",
            json=referral_body(nhs_number="9434765870", given_name="Robin"),
            headers={**gp, "Idempotency-Key": "b-2"},
        )
        assert accepted.status_code == 201, accepted.text
        decided = await http.post(
            f"/triage/referrals/{accepted.json()['id']}/decisions",
            json={"action": "accept", "route": "focused_support", "team_id": demo("lee.").team_id},
            headers=spa,
        )
        assert decided.status_code == 200, decided.text
        body = referral_body(nhs_number="9434765889", given_name="Kit", postcode="BB3 1AA")
        body["needs"] = ["peer-support", "loneliness-social-inclusion"]
        signposted = await http.post("/triage/referrals", json=body, headers={**gp, "Idempotency-Key": "b-3"})
        assert signposted.status_code == 201, signposted.text
        decided = await http.post(
            f"/triage/referrals/{signposted.json()['id']}/decisions", json={"action": "accept"}, headers=spa
        )
        assert decided.status_code == 200, decided.text

        async def offered() -> list[Any]:
            return list((await http.get("/directory/handovers", headers=partner)).json())

        await eventually(offered, timeout=20)

        async def opened() -> bool:
            found = await http.get(
                "/careplan/episodes", params={"referral_id": accepted.json()["id"]}, headers=clinician
            )
            return found.status_code == 200 and bool(found.json()["items"])

        await eventually(opened, timeout=20)


async def test_no_page_shows_a_person_of_one_organisation_what_belongs_to_another(
    web_suite: WebSuite,
) -> None:
    web_suite.settings.rate_limit_per_minute = 100_000
    gateway = web_suite.suite.apps["gateway"]
    charity_b = demo("jo.")
    pairs = [
        Pair("VCFSE partner", demo("priya.").subject, charity_b.subject),
        Pair("team lead", demo("lee.").subject, "lena.lead@other-trust.example"),
        Pair("team member", demo("nadia.").subject, "noor.worker@other-trust.example"),
    ]
    for person in DEMO_PEOPLE:
        await web_suite.person(
            person.subject,
            list(person.roles),
            organisation=person.organisation,
            organisation_system=person.organisation_system,
            name=person.name,
            team_id=person.team_id,
        )
    other_team = "00000000-0000-4000-8000-00000000b0b0"  # a team of the other trust's, holding nothing here
    for subject, role in (
        ("lena.lead@other-trust.example", Role.TEAM_LEAD),
        ("noor.worker@other-trust.example", Role.TEAM_MEMBER),
    ):
        await web_suite.person(subject, [role], organisation="RXN", team_id=other_team)
    # Triage and crisis practitioners read every referral (the single point of access): no one of
    # another organisation can be given those roles, so there is no intruder to try.
    for role in (Role.TRIAGE_PRACTITIONER, Role.CRISIS_PRACTITIONER):
        with pytest.raises(PeopleError, match="single point of access"):
            await web_suite.person(f"{role.value}@other-trust.example", [role], organisation="RXN")
    await make_records(web_suite)

    records_seen = 0
    for pair in pairs:
        async with web_suite.browser() as owner:
            await owner.sign_in(pair.owner)
            pages = await walk(owner, ["/app/"])
        named = {
            address: params for address in pages if (params := route_params(gateway, urlsplit(address).path))
        }
        records_seen += len(named)
        identifiers = {
            value for params in named.values() for value in params.values() if _IDENTIFIER.match(value)
        }
        async with web_suite.browser() as intruder:
            await intruder.sign_in(pair.intruder)
            for address in named:
                answer = await intruder.get(address)
                assert answer.status_code in (403, 404), (pair.work, address, answer.status_code)
                leaked = [i for i in identifiers if i in answer.text]
                assert not leaked, (pair.work, address, leaked)
            own = await walk(intruder, ["/app/"])
        for address, html in own.items():
            leaked = [i for i in identifiers if i in html]
            assert not leaked, (pair.work, "their own page", address, leaked)
    # The walk did reach records (the test would prove nothing if no page named one).
    assert records_seen >= 5, records_seen
