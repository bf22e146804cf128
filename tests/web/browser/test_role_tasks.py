"""Each role's main task in a real browser (Debian's Chromium), against the whole suite and a real
OpenID Connect provider: the role's demo person signs in through the provider's form, does the
task by clicking and typing on the pages as a person would (controls found by their labels and
names), sees the result on the page (and, where quick, through the API), and signs out through
the provider's end-session confirmation. The data each task starts from is put in through the
API first, with the page tests' own helpers (tests/web/test_*_pages.py)."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import pytest_asyncio

from contracts.timezones import LONDON
from gateway.web.demo_people import DEMO_PEOPLE, DemoPerson
from gateway.web.pages.team import short_id
from gateway.web.pages.triage import when
from gateway.web.roles import Role
from tests.e2e.test_care_journey import People, _ready
from tests.support import eventually
from tests.web.browser.conftest import map_demo_people
from tests.web.browser.support import choose_person, new_context, sign_in
from tests.web.conftest import WebSuite
from tests.web.test_crisis_pages import api_read, crisis_referral
from tests.web.test_moderation_pages import DARWEN, _propose
from tests.web.test_partner_pages import HANDOVERS, _signposted
from tests.web.test_reporting_pages import nhs_number
from tests.web.test_team_pages import _assessed, _episode, _london_now, _practitioner
from tests.web.test_triage_pages import refer

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page

pytestmark = pytest.mark.asyncio(loop_scope="module")


def demo(role: Role, organisation: str | None = None) -> DemoPerson:
    return next(
        person
        for person in DEMO_PEOPLE
        if role in person.roles and organisation in (None, person.organisation)
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mapped(web_suite: WebSuite) -> WebSuite:
    await map_demo_people(web_suite)
    return web_suite


@pytest_asyncio.fixture(loop_scope="module")
async def context(chromium: Browser) -> AsyncIterator[BrowserContext]:
    """One browser context (its own cookies) for the test, the pages' CSP enforced."""
    opened = await new_context(chromium)
    try:
        yield opened
    finally:
        await opened.close()


async def sign_out(page: Page, web: WebSuite, name: str) -> None:
    """The header's "Sign out", the provider's end-session confirmation, the signed-out page."""
    assert name in await page.locator("header").inner_text()
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(re.compile(re.escape(web.provider) + "/oauth2/end_session"))
    await page.get_by_role("button", name="End session").click()
    await page.wait_for_url(re.compile(re.escape(f"{web.url}/app/signed-out")))
    await page.get_by_role("heading", name="You have signed out").wait_for()
    assert name not in await page.locator("header").inner_text()


async def test_a_triage_practitioner_accepts_a_gp_referral(mapped: WebSuite, context: BrowserContext) -> None:
    from playwright.async_api import expect

    person = demo(Role.TRIAGE_PRACTITIONER)
    referral = await refer(mapped, "browser-triage", nhs_number=nhs_number(5100000))
    page = await context.new_page()
    await sign_in(page, mapped.url, person.subject)

    await page.get_by_role("link", name="Referrals to triage").first.click()
    await page.get_by_role("heading", name="Referrals awaiting a decision").wait_for()
    link = page.get_by_role("link", name=f"{when(referral['received_at'])} referral from GP")
    await link.click()
    await page.get_by_role("heading", name="Referral for Alex Example").wait_for()
    await page.get_by_role("button", name=re.compile(r"^Accept: ")).click()

    await page.wait_for_url(f"{mapped.url}/app/triage?done=accepted")
    await expect(page.get_by_role("alert")).to_contain_text("Decision recorded")
    await expect(page.locator(f'a[href="/app/triage/referrals/{referral["id"]}"]')).to_have_count(0)
    assert (await api_read(mapped, referral["id"]))["status"] == "routed"
    await sign_out(page, mapped, person.name)


async def test_a_crisis_practitioner_records_a_first_contact(
    mapped: WebSuite, context: BrowserContext
) -> None:
    from playwright.async_api import expect

    person = demo(Role.CRISIS_PRACTITIONER)
    received = datetime.now(UTC) - timedelta(minutes=30)  # so a contact "now" is after it
    referral = await crisis_referral(mapped, "browser-crisis", nhs_number(5200000), received)
    page = await context.new_page()
    await sign_in(page, mapped.url, person.subject, next_path="/app/crisis")
    await page.wait_for_url(f"{mapped.url}/app/crisis")

    await page.get_by_role("link", name=re.compile(r"^Record first contact for the referral")).click()
    await page.wait_for_url(f"{mapped.url}/app/crisis/referrals/{referral['id']}")
    now = datetime.now(LONDON)
    await page.get_by_label("Day", exact=True).fill(str(now.day))
    await page.get_by_label("Month", exact=True).fill(str(now.month))
    await page.get_by_label("Year", exact=True).fill(str(now.year))
    await page.get_by_label("Time of the contact").fill(now.strftime("%H:%M"))
    await page.get_by_role("button", name="Record the first contact").click()

    await page.wait_for_url(f"{mapped.url}/app/crisis?done=contact")
    await expect(page.get_by_role("alert")).to_contain_text("Contact recorded")
    await expect(page.get_by_role("link", name=re.compile(r"^Record first contact"))).to_have_count(0)
    assert (await api_read(mapped, referral["id"]))["first_contact_at"] is not None
    await sign_out(page, mapped, person.name)


async def test_a_team_lead_assigns_a_named_worker_and_records_a_contact_and_the_plan(
    mapped: WebSuite, context: BrowserContext
) -> None:
    from playwright.async_api import expect

    person = demo(Role.TEAM_LEAD)
    suite = mapped.suite
    await _ready(suite)
    async with httpx.AsyncClient(base_url=suite.url, timeout=15) as http:
        people = People(suite, http)
        await people.login("gp-ehr", "crisis-app", "lscft-clinician", "registry-admin")
        await _practitioner(people, "Nadia Hussain", "LSC-7201")
        # Received two days ago and assessed yesterday: a contact and a plan "now" come after.
        episode = await _episode(people, nhs_number(5300000), "browser-team", received_days_ago=2)
        await _assessed(people, episode, 1)
    base = f"{mapped.url}/app/team/episodes/{episode['id']}"
    page = await context.new_page()
    await sign_in(page, mapped.url, person.subject, next_path="/app/team")
    await page.wait_for_url(f"{mapped.url}/app/team")

    await page.get_by_role("link", name=f"Person {short_id(episode['person_id'])}").click()
    await page.wait_for_url(base)
    await page.get_by_role("link", name="Assign named worker").click()
    nadia = page.get_by_label(re.compile(r"^Nadia Hussain"))

    async def offered() -> bool:  # careplan learns the team's practitioners from the registry
        if await nadia.count():
            return True
        await page.reload()
        return False

    await eventually(offered, timeout=20, interval=0.2)
    await nadia.check()
    await page.get_by_role("button", name="Assign named worker").click()
    await page.wait_for_url(f"{base}?done=named_worker")
    await expect(page.get_by_text("The named worker is assigned.")).to_be_visible()
    await expect(page.locator("main")).to_contain_text("Nadia Hussain")

    now = _london_now()
    await page.get_by_role("link", name="Record a contact").click()
    await page.get_by_label("Date", exact=True).fill(now["date"])
    await page.get_by_label("Time", exact=True).fill(now["time"])
    await page.get_by_label("Yes", exact=True).check()
    await page.get_by_label("Telephone", exact=True).check()
    await page.get_by_role("button", name="Record contact").click()
    await page.wait_for_url(f"{base}?done=contact")
    await expect(page.get_by_text("The contact is recorded.")).to_be_visible()
    await expect(page.locator("main")).to_contain_text("Telephone, attended")

    await page.get_by_role("link", name="Write the care plan").click()
    await page.get_by_label("Date", exact=True).fill(now["date"])
    await page.get_by_label("Time", exact=True).fill(now["time"])
    await page.get_by_label("Needs", exact=True).fill("Low mood\nSleep")
    await page.get_by_label("Goals", exact=True).fill("Walk the dog every morning")
    await page.get_by_label("Crisis plan", exact=True).fill("Call the crisis line")
    await page.get_by_label("Contingency plan", exact=True).fill("The duty worker calls")
    await page.get_by_label("Review by").fill("2027-06-01")
    await page.get_by_role("button", name="Save care plan").click()
    await page.wait_for_url(f"{base}?done=plan")

    await page.get_by_role("link", name="Record the person's agreement to the care plan").click()
    await page.get_by_label("Date", exact=True).fill(now["date"])
    await page.get_by_label("Time", exact=True).fill(now["time"])
    await page.get_by_label("In person", exact=True).check()
    await page.get_by_role("button", name="Record agreement").click()
    await page.wait_for_url(f"{base}?done=agreement")
    await expect(page.get_by_text("The person's agreement to the care plan is recorded.")).to_be_visible()

    async with httpx.AsyncClient(base_url=suite.url, timeout=15) as http:
        read = await http.get(
            f"/careplan/episodes/{episode['id']}", headers=await suite.bearer("lscft-clinician")
        )
    body = read.json()
    assert body["named_worker_id"] and body["clocks"]["plan"]["state"] == "met", body["clocks"]
    await sign_out(page, mapped, person.name)


async def test_a_vcfse_partner_accepts_a_warm_handover(mapped: WebSuite, context: BrowserContext) -> None:
    from playwright.async_api import expect

    person = demo(Role.VCFSE_STAFF, "1000001")
    async with httpx.AsyncClient(base_url=mapped.url, timeout=10) as http:
        await _signposted(
            mapped,
            http,
            "browser-partner",
            nhs_number=nhs_number(5400000),
            given_name="Robin",
            family_name="Handover",
        )
    page = await context.new_page()
    await sign_in(page, mapped.url, person.subject)
    await page.get_by_role("link", name="Warm handovers").first.click()
    await page.wait_for_url(f"{mapped.url}{HANDOVERS}")
    link = page.get_by_role("link", name="Robin Handover")

    async def offered() -> bool:  # the handover is offered once the decision reaches the directory
        if await link.count():
            return True
        await page.reload()
        return False

    await eventually(offered, timeout=20, interval=0.2)
    await link.click()
    await page.get_by_role("button", name="Accept handover").click()
    await page.wait_for_url(re.compile(r"\?done=accepted$"))
    await expect(page.locator("main")).to_contain_text("You have accepted this handover")
    await expect(page.get_by_role("button", name="Complete handover")).to_be_visible()
    await sign_out(page, mapped, person.name)


async def test_a_directory_moderator_approves_a_partners_edit(
    mapped: WebSuite, context: BrowserContext
) -> None:
    from playwright.async_api import expect

    person = demo(Role.DIRECTORY_MODERATOR)
    partner = demo(Role.VCFSE_STAFF, "1000001")
    new_name = "Darwen Peer Support Group (Thursdays)"
    async with mapped.browser() as proposer:  # the partner's edit, through the pages over HTTP
        await proposer.sign_in(partner.subject)
        sent = await _propose(proposer, name=new_name, minimum_age="16")
        assert sent.status_code == 303, sent.text[:500]

    page = await context.new_page()
    await sign_in(page, mapped.url, person.subject, next_path="/app/moderation/edits")
    await page.wait_for_url(f"{mapped.url}/app/moderation/edits")
    await page.get_by_role("link", name="Darwen Peer Support Group").click()
    await page.get_by_role("heading", name="What this edit changes").wait_for()
    main = page.locator("main")
    await expect(main).to_contain_text(new_name)
    await expect(main).to_contain_text("Youngest age")
    await page.get_by_role("button", name="Approve and publish").click()
    await page.wait_for_url(re.compile(r"\?done=approved$"))
    await expect(main).to_contain_text("approved and published")

    async with httpx.AsyncClient(base_url=mapped.url, timeout=10) as http:
        public = (await http.get(f"/directory/services/{DARWEN}")).json()
    assert public["name"] == new_name and public["minimum_age"] == 16
    await sign_out(page, mapped, person.name)


async def test_an_icb_analyst_follows_the_plain_link_filters_and_downloads_a_csv(
    mapped: WebSuite, context: BrowserContext
) -> None:
    from playwright.async_api import expect

    person = demo(Role.ICB_ANALYST)
    page = await context.new_page()
    opened = await page.goto(f"{mapped.url}/reporting/dashboard")
    assert opened is not None and opened.status == 200  # the sign-in page, not a 401
    await page.get_by_role("heading", name="Sign in to CMH Suite").wait_for()
    await page.get_by_role("button", name=re.compile(r"^Sign in with ")).click()
    await choose_person(page, person.subject)
    await page.wait_for_url(f"{mapped.url}/app/reporting")
    await page.get_by_role("heading", name="Community mental health reporting").wait_for()

    await page.get_by_label("Break down by").select_option(label="Place")
    await page.get_by_role("button", name="Show figures").click()
    await page.wait_for_url(re.compile(r"/app/reporting\?.*by=place"))
    await expect(page.get_by_label("Break down by")).to_have_value("place")

    async with page.expect_download() as started:
        await page.get_by_role("link", name=re.compile(r"^Download CSV of referrals")).first.click()
    download = await started.value
    assert re.fullmatch(r"cmh-referrals-.*by-place\.csv", download.suggested_filename), (
        download.suggested_filename
    )
    saved = await download.path()
    text = await asyncio.to_thread(Path(saved).read_text, encoding="utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    assert len(rows) > 1 and rows[0], rows
    await sign_out(page, mapped, person.name)
