"""Partners edit only their own entries, every edit goes through moderation, and the published
directory changes only on approval; each step is in the service's history."""

from __future__ import annotations

from typing import Any

import httpx

from tests.directory.support import MODERATOR, TERMS, A, B, Directory, proposal


async def _propose(directory: Directory, headers: dict[str, str] = A, **overrides: Any) -> httpx.Response:
    return await directory.client.post(
        "/directory/partner/services", json=proposal(**overrides), headers=headers
    )


async def _public_names(directory: Directory) -> list[str]:
    body = (await directory.get("/services")).json()
    return [item["name"] for item in body["contents"]]


async def _review(
    directory: Directory, edit_id: str, verdict: str, reason: str = "Checked with the charity"
) -> httpx.Response:
    return await directory.client.post(
        f"/directory/moderation/edits/{edit_id}/{verdict}", json={"reason": reason}, headers=MODERATOR
    )


async def test_draft_review_publish_and_history(directory: Directory) -> None:
    created = await _propose(directory)
    assert created.status_code == 201, created.text
    edit = created.json()
    assert edit["state"] == "draft" and created.headers["etag"] == '"1"'
    service_id = edit["service_id"]
    assert await _public_names(directory) == []

    # Submitting puts it in the moderators' queue; still nothing public.
    submitted = await directory.client.post(f"/directory/partner/edits/{edit['id']}/submit", headers=A)
    assert submitted.json()["state"] == "pending_review"
    queue = (await directory.client.get("/directory/moderation/edits", headers=MODERATOR)).json()
    assert [e["id"] for e in queue] == [edit["id"]]
    assert await _public_names(directory) == []

    # Rejected with a reason, revised (If-Match), resubmitted, approved: now it is public.
    rejected = await _review(directory, edit["id"], "reject", "Please add the hall's accessibility details")
    assert rejected.json()["state"] == "rejected" and rejected.json()["review_reason"].startswith(
        "Please add"
    )
    revise = proposal(locations=[{**proposal()["locations"][0], "accessibility": ["Step-free entrance"]}])
    no_match = await directory.client.put(f"/directory/partner/edits/{edit['id']}", json=revise, headers=A)
    assert no_match.status_code == 428
    stale = await directory.client.put(
        f"/directory/partner/edits/{edit['id']}", json=revise, headers={**A, "If-Match": '"1"'}
    )
    assert stale.status_code == 412
    revised = await directory.client.put(
        f"/directory/partner/edits/{edit['id']}",
        json=revise,
        headers={**A, "If-Match": rejected.headers["etag"]},
    )
    assert revised.status_code == 200 and revised.json()["state"] == "draft"
    await directory.client.post(f"/directory/partner/edits/{edit['id']}/submit", headers=A)
    assert await _public_names(directory) == []
    approved = await _review(directory, edit["id"], "approve")
    assert approved.status_code == 200 and approved.json()["state"] == "published"
    assert await _public_names(directory) == ["Riverside peer support group"]
    public = (await directory.get(f"/services/{service_id}")).json()
    location = public["service_at_locations"][0]["location"]
    assert location["accessibility"][0]["description"] == "Step-free entrance"
    assert location["addresses"][0]["postal_code"] == "BB2 2DH"
    published = await directory.events("cmh.directory.service.published")
    assert len(published) == 1 and published[0]["data"]["needs"][0]["code"] == "peer-support"

    # A change to a published service is an edit too: the public record waits for approval.
    change = await directory.client.post(
        f"/directory/partner/services/{service_id}/edits",
        json=proposal(name="Riverside peer support (Tuesdays)"),
        headers=A,
    )
    assert change.status_code == 201
    again = await directory.client.post(
        f"/directory/partner/services/{service_id}/edits", json=proposal(), headers=A
    )
    assert again.status_code == 409  # one open edit per service
    await directory.client.post(f"/directory/partner/edits/{change.json()['id']}/submit", headers=A)
    assert await _public_names(directory) == ["Riverside peer support group"]
    await _review(directory, change.json()["id"], "approve")
    assert await _public_names(directory) == ["Riverside peer support (Tuesdays)"]
    assert (await directory.get(f"/services/{service_id}")).json()["id"] == service_id  # ids are kept

    history = (
        await directory.client.get(f"/directory/partner/services/{service_id}/history", headers=A)
    ).json()
    assert [h["action"] for h in history] == [
        "created", "submit", "reject", "revised", "submit", "approve", "created", "submit", "approve",
    ]  # fmt: skip
    assert history[2]["reason"].startswith("Please add") and history[2]["actor"] == "moderator"

    # The partner takes the service down at once; it leaves the public directory.
    down = await directory.client.post(
        f"/directory/partner/services/{service_id}/withdraw", json={"reason": "Group has closed"}, headers=A
    )
    assert down.status_code == 200 and await _public_names(directory) == []
    assert (await directory.get(f"/services/{service_id}")).status_code == 404
    assert len(await directory.events("cmh.directory.service.withdrawn")) == 1


async def test_partners_never_see_or_touch_each_others_edits(directory: Directory) -> None:
    mine = (await _propose(directory)).json()
    theirs = await directory.client.get(f"/directory/partner/edits/{mine['id']}", headers=B)
    assert theirs.status_code == 404
    assert (await directory.client.get("/directory/partner/edits", headers=B)).json() == []
    for attempt in (
        directory.client.post(f"/directory/partner/edits/{mine['id']}/submit", headers=B),
        directory.client.post(f"/directory/partner/edits/{mine['id']}/withdraw", headers=B),
        directory.client.put(
            f"/directory/partner/edits/{mine['id']}", json=proposal(), headers={**B, "If-Match": "*"}
        ),
    ):
        assert (await attempt).status_code == 404
    # Published, it is still A's: B cannot propose changes to it or withdraw it.
    await directory.client.post(f"/directory/partner/edits/{mine['id']}/submit", headers=A)
    await _review(directory, mine["id"], "approve")
    service_id = mine["service_id"]
    assert (
        await directory.client.post(
            f"/directory/partner/services/{service_id}/edits", json=proposal(), headers=B
        )
    ).status_code == 404
    assert (
        await directory.client.post(
            f"/directory/partner/services/{service_id}/withdraw", json={"reason": "nope"}, headers=B
        )
    ).status_code == 404
    assert (
        await directory.client.get(f"/directory/partner/services/{service_id}/history", headers=B)
    ).status_code == 404
    # Partners cannot moderate, and moderators do not need a partner's organisation.
    assert (await directory.client.get("/directory/moderation/edits", headers=A)).status_code == 403


async def test_bad_proposals_are_422_and_store_nothing(directory: Directory) -> None:
    location = proposal()["locations"][0]
    cases = {
        "end before start": {"schedules": [{"byday": "MO", "opens_at": "17:00", "closes_at": "09:00"}]},
        "bad day": {"schedules": [{"byday": "XX", "opens_at": "09:00", "closes_at": "17:00"}]},
        "bad latitude": {"locations": [{**location, "latitude": 123.0}]},
        "half coordinates": {"locations": [{**location, "longitude": None}]},
        "bad postcode": {
            "locations": [{**location, "address": {**location["address"], "postal_code": "XYZ"}}]
        },
        "unknown term": {"taxonomy_term_ids": ["00000000-0000-4000-8000-000000000000"]},
        "malformed term": {"taxonomy_term_ids": ["not-a-uuid"]},
        "ages reversed": {"minimum_age": 30, "maximum_age": 18},
        "no organisation on a first service": {"organization": None},
    }
    for label, overrides in cases.items():
        response = await _propose(directory, **overrides)
        assert response.status_code == 422, (label, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    assert (await directory.client.get("/directory/partner/edits", headers=A)).json() == []


async def test_transitions_out_of_order_are_409(directory: Directory) -> None:
    edit = (await _propose(directory)).json()
    assert (await _review(directory, edit["id"], "approve")).status_code == 409  # not submitted
    await directory.client.post(f"/directory/partner/edits/{edit['id']}/withdraw", headers=A)
    assert (
        await directory.client.post(f"/directory/partner/edits/{edit['id']}/submit", headers=A)
    ).status_code == 409
    short = await directory.client.post(
        f"/directory/moderation/edits/{edit['id']}/reject", json={"reason": ""}, headers=MODERATOR
    )
    assert short.status_code == 422


async def test_a_retried_proposal_with_its_idempotency_key_creates_one_edit(directory: Directory) -> None:
    headers = {**A, "Idempotency-Key": "proposal-1"}
    first = await directory.client.post("/directory/partner/services", json=proposal(), headers=headers)
    again = await directory.client.post("/directory/partner/services", json=proposal(), headers=headers)
    assert first.status_code == again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert len((await directory.client.get("/directory/partner/edits", headers=A)).json()) == 1
    assert TERMS  # the taxonomy is loaded
