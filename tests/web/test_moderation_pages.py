"""Directory moderation through the pages (issue 22): a partner of charity 1000001 proposes an
edit of its own service on the pages, a directory moderator finds it in the queue with a
readable diff and approves it, and the public directory shows the change; another edit is
rejected with a reason (required) and the partner sees the reason. A partner cannot open the
queue, and a moderator has no partner's pages."""

from __future__ import annotations

import re

import httpx

from gateway.web.demo_people import CHARITY_A, ICB
from gateway.web.roles import Role
from tests.web.conftest import WebSuite
from tests.web.support import Browser
from tests.web.test_frontend import _check_page

PARTNER = "priya.peers@darwen-valley-peers.example.org"
MODERATOR = "morgan.moderator@lsc-icb.example"
DARWEN = "4b8bc2ab-ce0c-5901-b690-ad8358cba3c5"  # the sample directory's service of 1000001
SERVICE_PAGE = f"/app/partner/services/{DARWEN}"
EDIT_PAGE = f"{SERVICE_PAGE}/edit"


async def _people(web_suite: WebSuite) -> None:
    await web_suite.person(
        PARTNER, [Role.VCFSE_STAFF], organisation=CHARITY_A, organisation_system="charity", name="Priya Shah"
    )
    await web_suite.person(MODERATOR, [Role.DIRECTORY_MODERATOR], organisation=ICB, name="Morgan Hale")


def _form_of(html: str) -> dict[str, str]:
    """The edit form's current values (inputs, the selected option and textareas)."""
    values: dict[str, str] = {}
    for tag in re.findall(r'<input class="nhsuk-input[^>]*>', html):
        name = re.search(r' name="([^"]+)"', tag)
        value = re.search(r' value="([^"]*)"', tag)
        assert name is not None
        values[name.group(1)] = value.group(1) if value else ""
    values |= dict(re.findall(r'<textarea[^>]* name="([^"]+)"[^>]*>([^<]*)</textarea>', html))
    values["status"] = "active"
    values["key"] = re.search(r'name="key" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
    return {name: value.replace("&#39;", "'").replace("&amp;", "&") for name, value in values.items()}


async def _propose(browser: Browser, **changes: str) -> httpx.Response:
    form = await browser.get(EDIT_PAGE)
    assert form.status_code == 200, form.text[:300]
    assert "Propose a change" in form.text
    return await browser.submit(EDIT_PAGE, EDIT_PAGE, {**_form_of(form.text), **changes})


async def _queue_edit(browser: Browser) -> str:
    queue = await browser.get("/app/moderation/edits")
    assert queue.status_code == 200, queue.text[:300]
    found = re.findall(r'href="/app/moderation/edits/([0-9a-f-]{36})"', queue.text)
    assert len(found) == 1, queue.text
    return str(found[0])


async def test_an_edit_proposed_on_the_pages_is_reviewed_and_published(web_suite: WebSuite) -> None:
    await _people(web_suite)
    async with web_suite.browser() as partner, web_suite.browser() as moderator:
        await partner.sign_in(PARTNER)
        await moderator.sign_in(MODERATOR)

        # Nothing to review yet: the queue says so.
        empty = await moderator.get("/app/moderation/edits")
        assert empty.status_code == 200 and "No edits to review yet" in empty.text

        # The partner's own service, and its published details.
        listed = await partner.get("/app/partner/services")
        assert listed.status_code == 200 and "Darwen Peer Support Group" in listed.text
        assert f'href="{SERVICE_PAGE}"' in listed.text
        page = await partner.get(SERVICE_PAGE)
        assert page.status_code == 200 and "Published details" in page.text
        assert "There is no edit in progress" in page.text

        # A required field left empty: the error summary links to it, nothing is sent.
        refused = await _propose(partner, name="")
        assert refused.status_code == 422
        assert "There is a problem" in refused.text and 'href="#name"' in refused.text
        assert "Enter the service name" in refused.text and refused.text.count("<title>Error: ") == 1

        sent = await _propose(partner, name="Darwen Peer Support Group (Thursdays)", minimum_age="16")
        assert sent.status_code == 303, sent.text[:500]
        assert sent.headers["location"] == f"{SERVICE_PAGE}?done=sent"
        done = await partner.get(sent.headers["location"])
        assert "Your edit has been sent for review" in done.text and "Pending review" in done.text
        # While it waits, the form says so and offers to withdraw instead.
        waiting = await partner.get(EDIT_PAGE)
        assert "An edit is waiting for review" in waiting.text and "Withdraw this edit" in waiting.text

        # The moderator's queue: the organisation and the service; the diff names what changes.
        edit_id = await _queue_edit(moderator)
        queue = await moderator.get("/app/moderation/edits")
        assert "Darwen Valley Peer Network" in queue.text and "Change to a published service" in queue.text
        review = await moderator.get(f"/app/moderation/edits/{edit_id}")
        assert review.status_code == 200
        for html in (queue.text, review.text, done.text, waiting.text, refused.text):
            _check_page(html)  # well formed, no inline script or style
        diff = review.text.split("What this edit changes", 1)[1].split("Approve and publish", 1)[0]
        assert "Service name" in diff and "Changed" in diff
        assert "Darwen Peer Support Group (Thursdays)" in diff and "Youngest age" in diff
        assert "Description" not in diff and "Locations and opening times" not in diff  # unchanged

        # A rejection needs a reason.
        no_reason = await moderator.submit(
            f"/app/moderation/edits/{edit_id}",
            f"/app/moderation/edits/{edit_id}/reject",
            {"reject_reason": ""},
        )
        assert no_reason.status_code == 422 and 'href="#reject_reason"' in no_reason.text
        assert "Enter why you are rejecting this edit" in no_reason.text

        approved = await moderator.submit(
            f"/app/moderation/edits/{edit_id}",
            f"/app/moderation/edits/{edit_id}/approve",
            {"approve_note": ""},
        )
        assert approved.status_code == 303, approved.text[:500]
        shown = await moderator.get(approved.headers["location"])
        assert "approved and published" in shown.text and "Published" in shown.text

        async with httpx.AsyncClient(base_url=web_suite.url) as http:
            public = (await http.get(f"/directory/services/{DARWEN}")).json()
        assert public["name"] == "Darwen Peer Support Group (Thursdays)" and public["minimum_age"] == 16
        assert public["service_at_locations"]  # what the form did not show is kept as published

        # Another edit, rejected with a reason: the partner sees the reason.
        again = await _propose(partner, description="Peer support for adults, every Thursday evening.")
        assert again.status_code == 303, again.text[:500]
        second = await _queue_edit(moderator)
        assert second != edit_id
        rejected = await moderator.submit(
            f"/app/moderation/edits/{second}",
            f"/app/moderation/edits/{second}/reject",
            {"reject_reason": "Please say which venue the Thursday group meets at"},
        )
        assert rejected.status_code == 303
        assert "No edits to review yet" in (await moderator.get("/app/moderation/edits")).text
        seen = await partner.get(SERVICE_PAGE)
        assert "Rejected" in seen.text and "Please say which venue the Thursday group meets at" in seen.text
        assert "Change and send again" in seen.text
        history = seen.text.split("History", 1)[1]
        assert "Approved and published" in history and "Rejected" in history
        # Revising the rejected edit starts from it and shows the reason.
        revise = await partner.get(EDIT_PAGE)
        assert "Please say which venue" in revise.text and "every Thursday evening" in revise.text

        # Withdrawn, it leaves the service page's edit in progress.
        edit_form = re.search(r'action="/app/partner/edits/([0-9a-f-]{36})/withdraw"', seen.text)
        assert edit_form is not None
        withdrawn = await partner.submit(
            SERVICE_PAGE, f"/app/partner/edits/{edit_form.group(1)}/withdraw", {}
        )
        assert withdrawn.status_code == 303
        after = await partner.get(withdrawn.headers["location"])
        assert "Your edit has been withdrawn" in after.text and "There is no edit in progress" in after.text


async def test_only_moderators_open_the_queue(web_suite: WebSuite) -> None:
    await _people(web_suite)
    async with web_suite.browser() as partner, web_suite.browser() as moderator:
        await partner.sign_in(PARTNER)
        await moderator.sign_in(MODERATOR)
        refused = await partner.get("/app/moderation/edits")
        assert refused.status_code == 403 and "directory:moderate" in refused.text
        assert "You cannot review directory edits" in refused.text
        assert "directory moderator" in refused.text
        home = await partner.get("/app/")
        assert "/app/moderation/edits" not in home.text and "/app/partner/services" in home.text
        posted = await partner.submit(
            "/app/partner/services", "/app/moderation/edits/some-edit/approve", {"approve_note": ""}
        )
        assert posted.status_code == 403

        # A moderator has no partner's pages: the API refuses them, and the page says so.
        assert (await moderator.get("/app/partner/services")).status_code == 403
        assert (await moderator.get("/app/partner/handovers")).status_code == 403
        assert "/app/moderation/edits" in (await moderator.get("/app/")).text
        missing = await moderator.get("/app/moderation/edits/no-such-edit")
        assert missing.status_code == 404
