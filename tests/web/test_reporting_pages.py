"""The ICB analyst's reporting pages: signing in from the old dashboard's plain link, the measures
under disclosure control with filters, a CSV of each table, the bulk export, and refusals as
pages (another role, another person's export)."""

from __future__ import annotations

import csv
import io
import json
import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from gateway.web.roles import Role
from tests.e2e.conftest import read_models_filled, referral_body
from tests.support import eventually
from tests.web.conftest import WebSuite
from tests.web.support import Browser

ANALYST = "sam.analyst@lsc-icb.example"
OTHER_ANALYST = "kim.analyst@other-icb.example"
PARTNER = "jo.partner@darwen-peer.example"


def nhs_number(seed: int) -> str:
    """A valid NHS number (modulus 11) for each seed."""
    n = seed
    while True:
        digits = [int(c) for c in f"9{n:08d}"]
        check = 11 - sum(d * (10 - i) for i, d in enumerate(digits)) % 11
        if check != 10:
            return "".join(map(str, digits)) + str(0 if check == 11 else check)
        n += 1000


class Tables(HTMLParser):
    """Each table's caption and its rows' cell texts (a responsive table's hidden headings left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._caption: str | None = None
        self._in_caption = False
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = dict(attrs).get("class") or ""
        if tag == "caption":
            self._in_caption, self._caption = True, ""
        elif tag == "tr" and self._caption is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "span" and "nhsuk-table__heading" in classes:
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "caption":
            self._in_caption = False
            self.tables[self._caption or ""] = []
        elif tag == "span" and self._skip:
            self._skip -= 1
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._caption is not None:
            self.tables[self._caption].append(self._row)
            self._row = None
        elif tag == "table":
            self._caption = None

    def handle_data(self, data: str) -> None:
        if self._in_caption and self._caption is not None:
            self._caption += data.strip()
        elif self._cell is not None and not self._skip:
            self._cell.append(data)


def tables(html: str) -> dict[str, list[list[str]]]:
    parser = Tables()
    parser.feed(html)
    return parser.tables


async def submit_referrals(web_suite: WebSuite, postcodes: list[str]) -> list[dict[str, Any]]:
    """GP referrals through the API, one per postcode, each for a different person."""
    suite = web_suite.suite
    await eventually(lambda: read_models_filled(suite.triage_app), timeout=30)
    gp = await suite.bearer("gp-ehr")
    made = []
    async with httpx.AsyncClient(base_url=suite.url, timeout=20) as http:
        for index, postcode in enumerate(postcodes):
            body = referral_body(nhs_number=nhs_number(4765900 + index), postcode=postcode)
            body["person"]["given_name"] = f"Person{index}"
            sent = await http.post(
                "/triage/referrals", json=body, headers={**gp, "Idempotency-Key": f"web-report-{index}"}
            )
            assert sent.status_code == 201, sent.text
            made.append(sent.json())
    return made


async def accept(web_suite: WebSuite, referrals: list[dict[str, Any]]) -> None:
    clinician = await web_suite.suite.bearer("crisis-app")
    async with httpx.AsyncClient(base_url=web_suite.url, timeout=20) as http:
        for referral in referrals:
            decided = await http.post(
                f"/triage/referrals/{referral['id']}/decisions", json={"action": "accept"}, headers=clinician
            )
            assert decided.status_code == 200, decided.text


async def sign_in_from_the_plain_link(browser: Browser, subject: str) -> httpx.Response:
    opened = await browser.get("/reporting/dashboard")
    assert opened.status_code == 303, opened.text[:300]
    assert opened.headers["location"] == "/app/sign-in?next=%2Fapp%2Freporting"
    sign_in_page = await browser.get(opened.headers["location"])
    assert sign_in_page.status_code == 200 and "Sign in" in sign_in_page.text
    next_path = parse_qs(urlsplit(opened.headers["location"]).query)["next"][0]
    return await browser.sign_in(subject, next_path=next_path)


def referrals_table(html: str, by_place: bool = True) -> list[list[str]]:
    found = tables(html)
    return found["Referrals, by place" if by_place else "Referrals"]


async def test_an_analyst_signs_in_from_the_plain_link_and_sees_the_measures_filtered(
    web_suite: WebSuite,
) -> None:
    await web_suite.person(ANALYST, [Role.ICB_ANALYST], organisation="QE1", name="Sam Analyst")
    async with web_suite.browser() as browser:
        landed = await sign_in_from_the_plain_link(browser, ANALYST)
        assert landed.status_code == 303 and landed.headers["location"] == "/app/reporting"
        first = await browser.get("/app/reporting")
        assert first.status_code == 200, first.text[:500]
        assert first.text.count("<h1") == 1 and "Small numbers are hidden" in first.text
        assert 'aria-current="page"' in first.text  # the navigation marks where they are

        # Six referrals in Lancashire (PR1), two in Blackpool (FY1); five of Lancashire's accepted.
        made = await submit_referrals(web_suite, ["PR1 3BQ"] * 6 + ["FY1 1AA"] * 2)
        await accept(web_suite, made[:5])

        async def arrived() -> httpx.Response | None:
            # Every event projected: the received counts and the five accepted referrals' routes
            # (decisions and routes are projected from different events, so one can lead).
            page = await browser.get("/app/reporting?by=place")
            rows = referrals_table(page.text)
            routes = tables(page.text).get("Where referrals were sent, across the ICB", [])
            done = rows[-1][:3] == ["ICB total", "10", "*"] and ["Front door (primary care)", "5"] in routes
            return page if done else None

        page = await eventually(arrived, timeout=30, interval=0.5)
        rows = referrals_table(page.text)
        assert rows[0] == ["Place", "Received", "Awaiting a decision"]
        by_place = {row[0]: row[1:] for row in rows[1:]}
        # 6 received, shown rounded to 5; 2 received, shown as *; 1 and 2 awaiting, both *.
        assert by_place["lancashire"] == ["5", "*"] and by_place["blackpool"] == ["*", "*"]
        assert "Some figures in this table are hidden" in page.text
        assert "counts under 5 are shown as <strong>*</strong>" in page.text
        for measure in ("four-week-waits", "crisis-response", "reaccess", "handovers", "inequalities"):
            assert f'id="{measure}"' in page.text and f"/app/reporting/{measure}.csv?" in page.text
        assert page.text.count("<figure") == 6 and "blackpool</span>: * (hidden)" in page.text
        routes = tables(page.text)["Where referrals were sent, across the ICB"]
        assert ["Front door (primary care)", "5"] in routes and ["Crisis line", "*"] in routes
        assert "style=" not in page.text and "<script>" not in page.text

        # The place filter keeps one place's rows; the ICB total stays.
        one_place = await browser.get("/app/reporting?by=pathway&place=lancashire")
        assert one_place.status_code == 200
        rows = tables(one_place.text)["Referrals, by place and pathway"]
        assert [row[0] for row in rows[1:]] == ["lancashire, adult-mh", "ICB total"], rows

        # Another month: nothing received then, so every count is *.
        old = await browser.get("/app/reporting?period=2020-01")
        assert old.status_code == 200
        assert tables(old.text)["Referrals"][1] == ["ICB total", "*", "*"]
        assert "1 January 2020 to 31 January 2020" in old.text

        # A period the API refuses: the form again, the error linked to its field.
        bad = await browser.get("/app/reporting?period=2026-13")
        assert bad.status_code == 422 and "There is a problem" in bad.text
        assert 'href="#period"' in bad.text and "<title>Error: " in bad.text
        bad_dates = await browser.get("/app/reporting?from=2026-02-30&to=2026-03-01")
        assert bad_dates.status_code == 422 and 'href="#from"' in bad_dates.text

        # The CSV of the table: the same rows, every figure, the ICB total last.
        link = re.search(r'href="(/app/reporting/referrals\.csv\?[^"]+)"', page.text)
        assert link, "no CSV link for referrals"
        download = await browser.get(link.group(1).replace("&amp;", "&"))
        assert download.status_code == 200, download.text[:300]
        assert download.headers["content-type"].startswith("text/csv")
        assert re.fullmatch(
            r'attachment; filename="cmh-referrals-\d{4}-\d{2}-\d{2}-by-place\.csv"',
            download.headers["content-disposition"],
        ), download.headers["content-disposition"]
        records = list(csv.DictReader(io.StringIO(download.text)))
        table_rows = referrals_table(page.text)[1:]
        assert [r["place"] for r in records] == [row[0] for row in table_rows]
        assert [[r["received"], r["awaiting_decision"]] for r in records] == [row[1:] for row in table_rows]
        assert records[0]["route_front_door_primary"] in ("*", "5") and records[-1]["suppressed"] in (
            "yes",
            "no",
        )
        waits = await browser.get("/app/reporting/four-week-waits.csv?period=2020-01")
        assert waits.status_code == 200 and "plan_met_pct" in waits.text.splitlines()[0]
        unknown = await browser.get("/app/reporting/nothing.csv")
        assert unknown.status_code == 404 and "text/html" in unknown.headers["content-type"]


async def test_an_analyst_exports_and_downloads_and_no_one_else_can(web_suite: WebSuite) -> None:
    await web_suite.person(ANALYST, [Role.ICB_ANALYST], organisation="QE1", name="Sam Analyst")
    await web_suite.person(OTHER_ANALYST, [Role.ICB_ANALYST], organisation="RW5", name="Kim Analyst")
    await submit_referrals(web_suite, ["PR1 3BQ"] * 2)
    async with web_suite.browser() as browser:
        await browser.sign_in(ANALYST)
        empty = await browser.get("/app/reporting/exports")
        assert empty.status_code == 200 and "No exports yet" in empty.text

        refused = await browser.submit("/app/reporting/exports", "/app/reporting/exports", {})
        assert refused.status_code == 422 and 'href="#types"' in refused.text

        started = await browser.submit(
            "/app/reporting/exports", "/app/reporting/exports", {"types": ["Referral", "Handover"]}
        )
        assert started.status_code == 303, started.text[:300]
        job_page = started.headers["location"]
        assert re.fullmatch(r"/app/reporting/exports/[0-9a-f-]{36}\?done=started", job_page), job_page
        job_path = job_page.split("?")[0]

        async def ready() -> httpx.Response | None:
            page = await browser.get(job_path)
            assert page.status_code == 200, page.text[:300]
            return page if "Your export is ready" in page.text else None

        done = await eventually(ready, timeout=30, interval=0.3)
        files = tables(done.text)["Files"]
        assert [row[0] for row in files[1:]] == ["Referrals", "Handovers to VCFSE partners"]
        count = int(files[1][1])
        listed = await browser.get("/app/reporting/exports")
        assert job_path in listed.text

        download = await browser.get(f"{job_path}/files/Referral")
        assert download.status_code == 200, download.text[:300]
        assert download.headers["content-type"].startswith("application/fhir+ndjson")
        assert re.fullmatch(
            r'attachment; filename="cmh-export-referral-\d{4}-\d{2}-\d{2}\.ndjson"',
            download.headers["content-disposition"],
        )
        lines = [json.loads(line) for line in download.text.splitlines()]
        assert len(lines) == count >= 2
        assert all(set(line) >= {"referral_key", "person_key", "received_date"} for line in lines)
        assert "9434765919" not in download.text and "Alex" not in download.text

        missing = await browser.get(f"{job_path}/files/Episode")
        assert missing.status_code == 404 and "text/html" in missing.headers["content-type"]

    async with web_suite.browser() as other:
        await other.sign_in(OTHER_ANALYST)
        theirs = await other.get("/app/reporting/exports")
        assert theirs.status_code == 200 and job_path not in theirs.text
        for path in (job_path, f"{job_path}/files/Referral"):
            seen = await other.get(path)
            assert seen.status_code == 404, (path, seen.text[:300])
            assert "text/html" in seen.headers["content-type"] and "Traceback" not in seen.text
        removed = await other.submit("/app/reporting/exports", f"{job_path}/delete", {})
        assert removed.status_code == 404

    async with web_suite.browser() as browser:
        await browser.sign_in(ANALYST)
        page = await browser.get(job_path)
        assert page.status_code == 200 and "Your export is ready" in page.text
        gone = await browser.submit(job_path, f"{job_path}/delete", {})
        assert gone.status_code == 303 and gone.headers["location"] == "/app/reporting/exports?done=removed"
        assert (await browser.get(job_path)).status_code == 404


async def test_a_person_without_the_analyst_role_gets_a_clear_refusal(web_suite: WebSuite) -> None:
    await web_suite.person(
        PARTNER, [Role.VCFSE_STAFF], organisation="1000001", organisation_system="charity", name="Jo Partner"
    )
    async with web_suite.browser() as browser:
        await browser.sign_in(PARTNER)
        home = await browser.get("/app/")
        assert "/app/reporting" not in home.text  # not offered
        for path in ("/app/reporting", "/app/reporting/exports", "/app/reporting/referrals.csv"):
            refused = await browser.get(path)
            assert refused.status_code == 403, (path, refused.text[:300])
            assert refused.headers["content-type"].startswith("text/html")
            assert "ICB analyst" in refused.text and "Jo Partner" in refused.text
            assert "Traceback" not in refused.text and '"status"' not in refused.text
        started = await browser.submit("/app/", "/app/reporting/exports", {"types": ["Referral"]})
        assert started.status_code == 403 and "reporting:export" in started.text
