"""VCFSE partner staff's pages (issue 22): warm handovers offered to charity 1000001 (a triage
decision signposting a person to its service, with consent) are accepted and completed, or
declined with a reason (required); and a partner of another charity (1299001) sees none of
1000001's services, edits or handovers, and gets a "not found" page on their addresses."""

from __future__ import annotations

import re
from typing import Any

import httpx

from gateway.web.demo_people import CHARITY_A, CHARITY_B
from gateway.web.roles import Role
from tests.e2e.conftest import read_models_filled, referral_body
from tests.support import eventually
from tests.web.conftest import WebSuite
from tests.web.test_frontend import _check_page

PARTNER = "priya.peers@darwen-valley-peers.example.org"
OTHER = "jo.haven@fylde-coast-safe-haven.example.org"
DARWEN = "4b8bc2ab-ce0c-5901-b690-ad8358cba3c5"  # the sample directory's service of 1000001
LANTERN = "fadca1cc-d48d-5cf2-a819-db5b39252f7e"  # and of 1299001
HANDOVERS = "/app/partner/handovers"


async def _people(web_suite: WebSuite) -> None:
    await web_suite.person(
        PARTNER, [Role.VCFSE_STAFF], organisation=CHARITY_A, organisation_system="charity", name="Priya Shah"
    )
    await web_suite.person(
        OTHER, [Role.VCFSE_STAFF], organisation=CHARITY_B, organisation_system="charity", name="Jo Fletcher"
    )


async def _signposted(web_suite: WebSuite, http: httpx.AsyncClient, key: str, **person: Any) -> str:
    """A GP's referral for peer support near Darwen, which triage accepts: its signpost to
    1000001's service becomes a warm handover (the person consented to share)."""
    suite = web_suite.suite
    await eventually(lambda: read_models_filled(suite.triage_app), timeout=30)
    body = referral_body(postcode="BB3 1AA", **person)
    body["needs"] = ["peer-support", "loneliness-social-inclusion"]
    referral = await http.post(
        "/triage/referrals", json=body, headers={**await suite.bearer("gp-ehr"), "Idempotency-Key": key}
    )
    assert referral.status_code == 201, referral.text
    assert referral.json()["suggestion"]["route"] == "vcfse_signpost"
    decided = await http.post(
        f"/triage/referrals/{referral.json()['id']}/decisions",
        json={"action": "accept"},
        headers=await suite.bearer("crisis-app"),
    )
    assert decided.status_code == 200 and decided.json()["status"] == "signposted", decided.text
    return str(referral.json()["id"])


def _handover_ids(html: str) -> list[str]:
    return re.findall(rf'href="{HANDOVERS}/([0-9a-f-]{{36}})"', html)


async def test_a_partner_accepts_completes_and_declines_handovers(web_suite: WebSuite) -> None:
    await _people(web_suite)
    async with web_suite.browser() as partner:
        await partner.sign_in(PARTNER)
        empty = await partner.get(HANDOVERS)
        assert empty.status_code == 200 and "No handovers yet" in empty.text

        async with httpx.AsyncClient(base_url=web_suite.url, timeout=10) as http:
            await _signposted(web_suite, http, "peer-1")
            await _signposted(
                web_suite, http, "peer-2", nhs_number="9876543210", given_name="Robin", family_name="Sample"
            )

        async def two_offered() -> list[str]:
            ids = _handover_ids((await partner.get(HANDOVERS)).text)
            return ids if len(ids) == 2 else []

        first, second = await eventually(two_offered, timeout=20)
        listed = await partner.get(HANDOVERS)
        assert "Alex Example" in listed.text and "Robin Sample" in listed.text
        assert "Darwen Peer Support Group" in listed.text and "Offered" in listed.text

        # What the partner may see of the person, and what it can do now.
        page = await partner.get(f"{HANDOVERS}/{first}")
        assert page.status_code == 200
        assert "07700 900456" in page.text and "Peer support" in page.text
        assert "Accept handover" in page.text and "Complete handover" not in page.text
        for html in (page.text, listed.text, empty.text):
            _check_page(html)  # well formed, no inline script or style

        accepted = await partner.submit(f"{HANDOVERS}/{first}", f"{HANDOVERS}/{first}/accept", {})
        assert accepted.status_code == 303 and accepted.headers["location"].endswith("?done=accepted")
        shown = await partner.get(accepted.headers["location"])
        assert "You have accepted this handover" in shown.text and "Complete handover" in shown.text
        completed = await partner.submit(f"{HANDOVERS}/{first}", f"{HANDOVERS}/{first}/complete", {})
        assert completed.status_code == 303
        shown = await partner.get(completed.headers["location"])
        assert "You have completed this handover" in shown.text and "Completed" in shown.text
        assert "Decline handover" not in shown.text
        # Accepting again is refused by the API, and the page says why (not a 500).
        again = await partner.submit(f"{HANDOVERS}/{first}", f"{HANDOVERS}/{first}/accept", {})
        assert again.status_code == 409 and "cannot be accepted" in again.text

        # Declining needs a reason.
        no_reason = await partner.submit(
            f"{HANDOVERS}/{second}", f"{HANDOVERS}/{second}/decline", {"reason": " "}
        )
        assert no_reason.status_code == 422 and 'href="#reason"' in no_reason.text
        assert "Enter why you are declining" in no_reason.text and "<title>Error: " in no_reason.text
        declined = await partner.submit(
            f"{HANDOVERS}/{second}",
            f"{HANDOVERS}/{second}/decline",
            {"reason": "Our group is full until March"},
        )
        assert declined.status_code == 303
        shown = await partner.get(declined.headers["location"])
        assert (
            "You have declined this handover" in shown.text and "Our group is full until March" in shown.text
        )

        # By state.
        only_declined = await partner.get(f"{HANDOVERS}?state=declined")
        assert _handover_ids(only_declined.text) == [second]
        assert _handover_ids((await partner.get(f"{HANDOVERS}?state=completed")).text) == [first]
        none_offered = await partner.get(f"{HANDOVERS}?state=offered")
        assert _handover_ids(none_offered.text) == [] and "No offered handovers yet" in none_offered.text


async def test_another_charity_sees_none_of_its_records(web_suite: WebSuite) -> None:
    await _people(web_suite)
    async with web_suite.browser() as partner, web_suite.browser() as other:
        await partner.sign_in(PARTNER)
        await other.sign_in(OTHER)
        async with httpx.AsyncClient(base_url=web_suite.url, timeout=10) as http:
            await _signposted(web_suite, http, "peer-3")

        async def offered() -> list[str]:
            return _handover_ids((await partner.get(HANDOVERS)).text)

        (handover_id,) = await eventually(offered, timeout=20)
        # 1000001 has an edit waiting for review, so there is an edit id to try.
        form = await partner.get(f"/app/partner/services/{DARWEN}/edit")
        key = re.search(r'name="key" value="([^"]+)"', form.text)
        assert key is not None
        sent = await partner.submit(
            f"/app/partner/services/{DARWEN}/edit",
            f"/app/partner/services/{DARWEN}/edit",
            {"name": "Darwen Peer Support Group", "description": "Peer support in Darwen.", "status": "active",
             "key": key.group(1)},
        )  # fmt: skip
        assert sent.status_code == 303, sent.text[:500]
        service_page = await partner.get(f"/app/partner/services/{DARWEN}")
        edit_id = re.search(r'action="/app/partner/edits/([0-9a-f-]{36})/withdraw"', service_page.text)
        assert edit_id is not None

        # The other charity's lists hold its own service only, and no handover of 1000001's.
        services = await other.get("/app/partner/services")
        assert services.status_code == 200
        assert "Lantern Crisis Café" in services.text and "Darwen" not in services.text
        handovers = await other.get(HANDOVERS)
        assert handovers.status_code == 200 and "No handovers yet" in handovers.text
        assert "Alex Example" not in handovers.text
        lantern = await other.get(f"/app/partner/services/{LANTERN}")
        assert lantern.status_code == 200 and "There is no edit in progress" in lantern.text

        # Every address of 1000001's records is "not found" to them, read or written.
        for path in (
            f"/app/partner/services/{DARWEN}",
            f"/app/partner/services/{DARWEN}/edit",
            f"{HANDOVERS}/{handover_id}",
        ):
            page = await other.get(path)
            assert page.status_code == 404, path
            assert "Darwen" not in page.text and "Alex Example" not in page.text
        for action, data in (
            (f"/app/partner/services/{DARWEN}/edit", {"name": "Taken over", "description": "Mine now"}),
            (f"/app/partner/edits/{edit_id.group(1)}/withdraw", {}),
            (f"{HANDOVERS}/{handover_id}/accept", {}),
            (f"{HANDOVERS}/{handover_id}/complete", {}),
            (f"{HANDOVERS}/{handover_id}/decline", {"reason": "Not ours"}),
        ):
            refused = await other.submit("/app/partner/services", action, data)
            assert refused.status_code == 404, (action, refused.status_code)

        # Nothing they tried changed 1000001's records.
        still = await partner.get(f"/app/partner/services/{DARWEN}")
        assert "Pending review" in still.text
        handover = await partner.get(f"{HANDOVERS}/{handover_id}")
        assert "Accept handover" in handover.text
