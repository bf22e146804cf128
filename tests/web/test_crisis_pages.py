"""The crisis practitioner's pages against the whole suite: a crisis referral waits in the queue
with the time left in words; the live route relays triage's stream as the person; the first
face-to-face contact is recorded through a form (and refused in the future); nobody of another
role reaches the queue or its stream."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from contracts.timezones import LONDON
from gateway.web.pages.crisis import contact_moment, duration, time_remaining
from gateway.web.roles import Role
from tests.e2e.conftest import read_models_filled, referral_body
from tests.support import eventually
from tests.web.conftest import WebSuite
from tests.web.support import Browser

CRISIS = "cara.crisis@lscft.example"


async def crisis_referral(
    web: WebSuite, key: str, nhs_number: str, received_at: datetime | None = None
) -> dict[str, Any]:
    await eventually(lambda: read_models_filled(web.suite.triage_app), timeout=30)
    body = referral_body(nhs_number=nhs_number, postcode="FY1 1EJ")
    body["risks"] = ["recent_self_harm"]
    if received_at is not None:
        body["received_at"] = received_at.isoformat()
    async with httpx.AsyncClient(base_url=web.url, timeout=10) as http:
        answer = await http.post(
            "/triage/crisis/referrals",
            json=body,
            headers={**await web.suite.bearer("crisis-app"), "Idempotency-Key": key},
        )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


async def api_read(web: WebSuite, referral_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=web.url, timeout=10) as http:
        answer = await http.get(
            f"/triage/referrals/{referral_id}", headers=await web.suite.bearer("crisis-app")
        )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def crisis_browser(web: WebSuite, browser: Browser) -> None:
    await web.person(CRISIS, [Role.CRISIS_PRACTITIONER], organisation="RW5", name="Cara Crisis")
    await browser.sign_in(CRISIS)


async def test_a_crisis_referral_waits_in_the_queue_until_its_first_contact(web_suite: WebSuite) -> None:
    # Received half an hour ago, so a contact "now" (to the minute) is after it.
    received = datetime.now(UTC) - timedelta(minutes=30)
    referral = await crisis_referral(web_suite, "crisis-1", "9876543210", received)
    assert referral["deadline_at"]
    async with web_suite.browser() as browser:
        await crisis_browser(web_suite, browser)
        queue = await browser.get("/app/crisis")
        assert queue.status_code == 200, queue.text[:300]
        assert f"/app/crisis/referrals/{referral['id']}" in queue.text
        assert " left</strong>" in queue.text and "Very urgent" in queue.text
        assert 'href="/app/crisis"' in queue.text  # works without JavaScript: a Refresh link
        assert 'http-equiv="refresh"' not in queue.text
        assert 'src="/app/static/crisis-live.js?v=' in queue.text
        table = await browser.get("/app/crisis/queue-table")  # what the script puts in place
        assert table.status_code == 200 and f"/app/crisis/referrals/{referral['id']}" in table.text
        assert "<html" not in table.text

        page_url = f"/app/crisis/referrals/{referral['id']}"
        page = await browser.get(page_url)
        assert page.status_code == 200 and "Alex Example" in page.text
        # A contact in the future is refused, with the error linked to the date.
        later = (datetime.now(UTC) + timedelta(days=2)).astimezone(LONDON)
        future = await browser.submit(
            page_url,
            f"{page_url}/contact",
            {"day": later.day, "month": later.month, "year": later.year, "time": later.strftime("%H:%M")},
        )
        assert future.status_code == 422 and 'href="#contact-day"' in future.text
        assert "in the future" in future.text
        bad_time = await browser.submit(
            page_url, f"{page_url}/contact", {"day": "1", "month": "1", "year": "2026", "time": "25:00"}
        )
        assert bad_time.status_code == 422 and 'href="#contact-time"' in bad_time.text
        assert (await api_read(web_suite, referral["id"]))["first_contact_at"] is None

        now = datetime.now(UTC).astimezone(LONDON)
        recorded = await browser.submit(
            page_url,
            f"{page_url}/contact",
            {"day": now.day, "month": now.month, "year": now.year, "time": now.strftime("%H:%M")},
        )
        assert recorded.status_code == 303 and recorded.headers["location"] == "/app/crisis?done=contact"
        after = await browser.get(recorded.headers["location"])
        assert (
            "Contact recorded" in after.text and f"/app/crisis/referrals/{referral['id']}" not in after.text
        )
        again = await browser.get(page_url)
        assert "The first face-to-face contact was recorded" in again.text
    assert (await api_read(web_suite, referral["id"]))["first_contact_at"] is not None


async def _next_event(stream: httpx.Response) -> dict[str, str]:
    event: dict[str, str] = {}
    async for line in stream.aiter_lines():
        if line == "" and "data" in event:
            return event
        name, _, value = line.partition(": ")
        if name in ("id", "event", "data"):
            event[name] = value
    raise AssertionError("the stream ended")


async def test_the_live_route_relays_the_crisis_stream_as_the_person(web_suite: WebSuite) -> None:
    async with web_suite.browser() as browser:
        await crisis_browser(web_suite, browser)
        await eventually(lambda: read_models_filled(web_suite.suite.triage_app), timeout=30)
        headers = {
            "Accept": "text/event-stream",
            "Cookie": "; ".join(f"{k}={v}" for k, v in browser.cookies.items()),
        }
        async with browser.http.stream("GET", "/app/crisis/live", headers=headers, timeout=20) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert "content-security-policy" in stream.headers
            waiting = asyncio.create_task(_next_event(stream))
            await asyncio.sleep(0.5)
            referral = await crisis_referral(web_suite, "live-1", "9434765919")
            event = await asyncio.wait_for(waiting, timeout=10)
        assert event["event"] == "changed" and int(event["id"]) > 0
        assert json.loads(event["data"]) == {"referral_id": referral["id"], "change": "new"}
        # Resumable: from the event before, the same change comes again.
        resume = {**headers, "Last-Event-ID": str(int(event["id"]) - 1)}
        async with browser.http.stream("GET", "/app/crisis/live", headers=resume, timeout=20) as stream:
            replayed = await asyncio.wait_for(_next_event(stream), timeout=10)
        assert replayed["id"] == event["id"]


async def test_people_of_other_roles_get_a_403_page_and_none_of_the_queue(web_suite: WebSuite) -> None:
    referral = await crisis_referral(web_suite, "private-crisis", "9876543210")
    await web_suite.person(
        "val@charity.example", [Role.VCFSE_STAFF], organisation="1000001", organisation_system="charity"
    )
    await web_suite.person("ian@lsc-icb.example", [Role.ICB_ANALYST], organisation="QE1")
    await web_suite.person("tess@lscft.example", [Role.TRIAGE_PRACTITIONER], organisation="RW5")
    for subject in ("val@charity.example", "ian@lsc-icb.example", "tess@lscft.example"):
        async with web_suite.browser() as browser:
            await browser.sign_in(subject)
            assert 'href="/app/crisis"' not in (await browser.get("/app/")).text
            for path in (
                "/app/crisis",
                "/app/crisis/queue-table",
                "/app/crisis/live",
                f"/app/crisis/referrals/{referral['id']}",
            ):
                page = await browser.get(path)
                assert page.status_code == 403, (subject, path)
                assert referral["id"] not in page.text and "crisis:respond" in page.text
            posted = await browser.submit(
                "/app/", f"/app/crisis/referrals/{referral['id']}/contact",
                {"day": "1", "month": "1", "year": "2026", "time": "10:00"},
            )  # fmt: skip
            assert posted.status_code == 403
    assert (await api_read(web_suite, referral["id"]))["first_contact_at"] is None


@pytest.mark.parametrize(
    ("minutes", "words"),
    [
        (80, "1 hour 20 minutes left"),
        (60, "1 hour left"),
        (1, "1 minute left"),
        (0, "Less than a minute left"),
        (-5, "Overdue by 5 minutes"),
        (-125, "Overdue by 2 hours 5 minutes"),
        (1500, "1 day 1 hour left"),
        (None, "No deadline"),
    ],
)
def test_the_time_left_reads_as_words(minutes: int | None, words: str) -> None:
    assert time_remaining({"minutes_remaining": minutes})["text"] == words


def test_a_contact_time_is_read_as_uk_time() -> None:
    moment, errors = contact_moment({"day": "3", "month": "7", "year": "2026", "time": "14:05"})
    assert not errors and moment is not None and moment.astimezone(UTC).hour == 13
    assert contact_moment({"day": "31", "month": "2", "year": "2026", "time": "14:05"})[1] == {
        "date": "Enter the date of the contact as a real date, for example 27 3 2026"
    }
    assert "time" in contact_moment({"day": "1", "month": "2", "year": "2026", "time": "2pm"})[1]
    assert duration(0) == "0 minutes"
