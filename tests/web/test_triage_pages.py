"""The triage practitioner's pages against the whole suite: a GP's referral (through the API as
gp-ehr) waits in the list with its suggested route; its page says why (the rules, in words); an
accept opens the episode (careplan's API, as lscft-clinician, says so); an override needs its
reason, a decline its alternative; identity review shows the person as referred beside the
person on file; and nobody of another role sees any of it."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx

from gateway.web.pages.triage import code_words, when
from gateway.web.roles import Role
from tests.e2e.conftest import read_models_filled, referral_body
from tests.support import eventually
from tests.web.conftest import WebSuite
from tests.web.support import Browser

TRIAGE = "tess.triage@lscft.example"


def nhs(stem: str) -> str:
    """A valid NHS number from nine digits (the modulus-11 check digit added)."""
    total = sum(int(d) * (10 - i) for i, d in enumerate(stem))
    check = 11 - total % 11
    check = 0 if check == 11 else check
    assert check != 10, stem
    return f"{stem}{check}"


async def refer(web: WebSuite, key: str, client: str = "gp-ehr", **person: Any) -> dict[str, Any]:
    await eventually(lambda: read_models_filled(web.suite.triage_app), timeout=30)
    async with httpx.AsyncClient(base_url=web.url, timeout=10) as http:
        answer = await http.post(
            "/triage/referrals",
            json=referral_body(**person),
            headers={**await web.suite.bearer(client), "Idempotency-Key": key},
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


async def triage_browser(web: WebSuite, browser: Browser) -> None:
    await web.person(TRIAGE, [Role.TRIAGE_PRACTITIONER], organisation="RW5", name="Tess Triage")
    await browser.sign_in(TRIAGE)


def version_of(page: str) -> str:
    found = re.search(r'name="version" value="(\d+)"', page)
    assert found, "no version on the page"
    return found.group(1)


async def test_a_gp_referral_is_listed_explained_and_accepted_and_its_episode_opens(
    web_suite: WebSuite,
) -> None:
    referral = await refer(web_suite, "accept-1", nhs_number=nhs("943476591"))
    async with web_suite.browser() as browser:
        await triage_browser(web_suite, browser)
        listed = await browser.get("/app/triage")
        assert listed.status_code == 200, listed.text[:300]
        assert f"/app/triage/referrals/{referral['id']}" in listed.text
        assert "Primary care front door" in listed.text and "Low mood" in listed.text
        assert html.escape(when(referral["received_at"])) in listed.text and "GP" in listed.text
        assert "<caption" in listed.text

        page_url = f"/app/triage/referrals/{referral['id']}"
        page = await browser.get(page_url)
        assert page.status_code == 200, page.text[:300]
        assert "Alex Example" in page.text and "943 476 591" in page.text
        for rule in referral["rules"]:
            assert html.escape(rule["text"]) in page.text, rule
        assert page.text.count("<h1") == 1

        accepted = await browser.submit(page_url, f"{page_url}/accept", {"version": version_of(page.text)})
        assert accepted.status_code == 303 and accepted.headers["location"] == "/app/triage?done=accepted"
        after = await browser.get(accepted.headers["location"])
        assert (
            "Decision recorded" in after.text and f"/app/triage/referrals/{referral['id']}" not in after.text
        )

    assert (await api_read(web_suite, referral["id"]))["status"] == "routed"
    clinician = await web_suite.suite.bearer("lscft-clinician")

    async def opened() -> dict[str, Any] | None:
        async with httpx.AsyncClient(base_url=web_suite.url, timeout=10) as http:
            found = await http.get(
                "/careplan/episodes", params={"referral_id": referral["id"]}, headers=clinician
            )
        items = found.json()["items"]
        return items[0] if items else None

    episode = await eventually(opened, timeout=15)
    assert episode["status"] == "open"


async def test_an_override_needs_its_reason_and_is_then_routed(web_suite: WebSuite) -> None:
    referral = await refer(web_suite, "override-1", nhs_number=nhs("987654321"))
    page_url = f"/app/triage/referrals/{referral['id']}"
    async with web_suite.browser() as browser:
        await triage_browser(web_suite, browser)
        page = await browser.get(page_url)
        refused = await browser.submit(
            page_url,
            f"{page_url}/override",
            {"version": version_of(page.text), "route": "focused_support", "reason": "  "},
        )
        assert refused.status_code == 422, refused.text[:300]
        assert "There is a problem" in refused.text and 'href="#override-reason"' in refused.text
        assert "<title>Error: " in refused.text
        assert 'id="override" open' in refused.text  # the form refused is open, its choice kept
        assert '<option value="focused_support" selected>' in refused.text
        assert "</span>None" not in refused.text  # only the field refused has an error
        assert (await api_read(web_suite, referral["id"]))["status"] == "received"  # nothing changed

        done = await browser.submit(
            page_url,
            f"{page_url}/override",
            {
                "version": version_of(page.text),
                "route": "focused_support",
                "reason": "Known to the focused support team; they have capacity this week.",
            },
        )
        assert done.status_code == 303 and done.headers["location"] == "/app/triage?done=overridden"
    decided = await api_read(web_suite, referral["id"])
    assert decided["status"] == "routed" and decided["route"] == "focused_support"


async def test_a_decline_offers_a_partner_service_from_the_directory(web_suite: WebSuite) -> None:
    referral = await refer(web_suite, "decline-1", nhs_number=nhs("401023213"))
    async with httpx.AsyncClient(base_url=web_suite.url, timeout=10) as http:
        services = (await http.get("/directory/services", params={"per_page": 100})).json()["contents"]
    service = services[0]
    page_url = f"/app/triage/referrals/{referral['id']}"
    async with web_suite.browser() as browser:
        await triage_browser(web_suite, browser)
        page = await browser.get(page_url)
        assert html.escape(service["name"]) in page.text  # the directory's services, to offer
        # Neither a route nor a service: triage is not a gate, so the API refuses it.
        bare = await browser.submit(
            page_url, f"{page_url}/decline", {"version": version_of(page.text), "reason": "Not for us"}
        )
        assert bare.status_code == 422 and 'href="#decline-route"' in bare.text
        assert (await api_read(web_suite, referral["id"]))["status"] == "received"
        declined = await browser.submit(
            page_url,
            f"{page_url}/decline",
            {
                "version": version_of(page.text),
                "signposts": service["id"],
                "reason": "Needs peer support, not a clinical team.",
            },
        )
        assert declined.status_code == 303 and declined.headers["location"] == "/app/triage?done=declined"
    assert (await api_read(web_suite, referral["id"]))["status"] == "closed"


async def test_a_decision_on_a_changed_referral_is_refused_and_nothing_changes(web_suite: WebSuite) -> None:
    referral = await refer(web_suite, "stale-1", nhs_number=nhs("401023221"))
    page_url = f"/app/triage/referrals/{referral['id']}"
    async with web_suite.browser() as browser:
        await triage_browser(web_suite, browser)
        stale = await browser.submit(page_url, f"{page_url}/accept", {"version": "999"})
        assert stale.status_code == 412 and "Someone changed this referral" in stale.text
        closed = await browser.submit(page_url, f"{page_url}/close", {"version": "", "reason": ""})
        assert closed.status_code == 422 and 'href="#close-reason"' in closed.text
    assert (await api_read(web_suite, referral["id"]))["status"] == "received"


async def test_identity_review_shows_both_people_and_is_settled_with_a_reason(web_suite: WebSuite) -> None:
    number = nhs("401023237")
    await refer(web_suite, "first", nhs_number=number)
    flagged = await refer(
        web_suite, "second", "other-gp-ehr", nhs_number=number, given_name="Margaret",
        family_name="Thwaite", birth_date="1948-11-23", postcode="LA9 4DL",
    )  # fmt: skip
    assert flagged["identity_review"]["status"] == "open"
    async with web_suite.browser() as browser:
        await triage_browser(web_suite, browser)
        listed = await browser.get("/app/triage/identity")
        assert f"/app/triage/referrals/{flagged['id']}/identity" in listed.text
        page_url = f"/app/triage/referrals/{flagged['id']}/identity"
        page = await browser.get(page_url)
        assert "Margaret Thwaite" in page.text and "Alex Example" in page.text  # side by side
        assert "23 November 1948" in page.text and "14 March 1979" in page.text
        assert "whose date of birth, name and postcode differ" in page.text
        decision_page = await browser.get(f"/app/triage/referrals/{flagged['id']}")
        assert "Check who this is before routing" in decision_page.text

        missing = await browser.submit(page_url, page_url, {"outcome": "different_person", "reason": ""})
        assert missing.status_code == 422 and 'href="#reason"' in missing.text
        assert (await api_read(web_suite, flagged["id"]))["identity_review"]["status"] == "open"
        settled = await browser.submit(
            page_url,
            page_url,
            {"outcome": "different_person", "reason": "Spoke to the practice: another patient."},
        )
        assert (
            settled.status_code == 303 and settled.headers["location"] == "/app/triage/identity?done=identity"
        )
    after = await api_read(web_suite, flagged["id"])
    assert (
        after["identity_review"]["status"] == "different_person"
        and after["person_id"] != flagged["person_id"]
    )


async def test_people_of_other_roles_get_a_403_page_and_none_of_the_referrals(web_suite: WebSuite) -> None:
    referral = await refer(web_suite, "private-1", nhs_number=nhs("401023244"))
    await web_suite.person(
        "val@charity.example", [Role.VCFSE_STAFF], organisation="1000001", organisation_system="charity"
    )
    await web_suite.person("ian@lsc-icb.example", [Role.ICB_ANALYST], organisation="QE1")
    await web_suite.person("cara@lscft.example", [Role.CRISIS_PRACTITIONER], organisation="RW5")
    await web_suite.person(
        "tom@rxn.example", [Role.TEAM_MEMBER], organisation="RXN", team_id="team-elsewhere"
    )
    for subject in ("val@charity.example", "ian@lsc-icb.example", "cara@lscft.example", "tom@rxn.example"):
        async with web_suite.browser() as browser:
            await browser.sign_in(subject)
            home = await browser.get("/app/")
            assert 'href="/app/triage"' not in home.text, subject
            for path in (
                "/app/triage",
                f"/app/triage/referrals/{referral['id']}",
                "/app/triage/identity",
                f"/app/triage/referrals/{referral['id']}/identity",
            ):
                page = await browser.get(path)
                assert page.status_code == 403, (subject, path, page.status_code)
                assert referral["id"] not in page.text and "Alex Example" not in page.text
                assert "triage:decide" in page.text  # the permission it needs, and who has it
            posted = await browser.submit(
                "/app/", f"/app/triage/referrals/{referral['id']}/accept", {"version": "1"}
            )
            assert posted.status_code == 403
    assert (await api_read(web_suite, referral["id"]))["status"] == "received"


def test_codes_read_as_words() -> None:
    assert code_words("eating_difficulties") == "Eating difficulties"
    assert code_words("peer-support") == "Peer support" and code_words("ocd") == "OCD"
    assert when("2026-12-03T14:05:00+00:00") == "3 December 2026, 14:05"
    assert when("2026-07-03T14:05:00+00:00") == "3 July 2026, 15:05"  # UK time
