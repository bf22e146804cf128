"""Issue 18 §6 through the real path (gateway and a service under uvicorn): no input makes a 500.
Header hygiene, body size and read time in every process, no-store/nosniff on every answer, and
bounded integers and path ids."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shared.fhir import MAX_JSON_DEPTH, parse_json_body
from shared.params import INT64_MAX, bounded_int
from tests.security.conftest import Stack


def bearer(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


async def test_non_ascii_header_is_a_400_at_the_gateway_and_the_service(stack: Stack) -> None:
    token = await stack.token("gp-a81001")
    # UTF-8 bytes on the wire; a word no request id (hex digits) can contain by chance.
    odd = {"X-Partner-Note": "zo\u00e9-quince".encode()}
    for http in (stack.client(), stack.service()):
        async with http:
            response = await http.get("/triage/probe/referrals/r-1", headers={**bearer(token), **odd})  # type: ignore[dict-item]
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert "quince" not in response.text  # the value is never echoed
    assert stack.probe.calls == []


async def test_services_limit_bodies_themselves(stack_factory: Any) -> None:
    stack: Stack = await stack_factory(max_body_bytes=4096)
    token = await stack.token("crisis-rw5")

    async def chunks() -> Any:
        for _ in range(10):
            yield b"x" * 1024

    async with stack.service() as http:  # straight to the service, the gateway bypassed
        declared = await http.post("/triage/probe/decisions", headers=bearer(token), content=b"y" * 5000)
        streamed = await http.post("/triage/probe/decisions", headers=bearer(token), content=chunks())
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/problem+json"
    assert stack.probe.calls == []


async def test_a_slow_body_is_a_408_not_a_held_worker(stack_factory: Any) -> None:
    stack: Stack = await stack_factory(body_read_timeout_seconds=0.3)
    token = await stack.token("crisis-rw5")

    async def trickle() -> Any:
        for _ in range(20):
            yield b"x"
            await asyncio.sleep(0.1)

    for http in (stack.client(), stack.service()):
        async with http:
            response = await http.post("/triage/probe/decisions", headers=bearer(token), content=trickle())
        assert response.status_code == 408, response.text
        assert response.headers["content-type"] == "application/problem+json"


async def test_every_answer_is_no_store_and_nosniff_except_public_reads(stack: Stack) -> None:
    token = await stack.token("gp-a81001")
    async with stack.client() as http:
        answers = [
            await http.get("/triage/probe/referrals/r-1", headers=bearer(token)),  # person data
            await http.get("/triage/probe/referrals/r-9", headers=bearer(token)),  # 404
            await http.get("/triage/probe/referrals/r-1"),  # 401
            await http.post("/oauth2/token", data={"grant_type": "client_credentials"}),
        ]
        jwks = await http.get("/.well-known/jwks.json")
    async with stack.service() as http:
        answers.append(await http.get("/triage/probe/referrals/r-1", headers=bearer(token)))
    for response in answers:
        assert response.headers["cache-control"] == "no-store", response.request.url
        assert response.headers["x-content-type-options"] == "nosniff"
    assert jwks.headers["cache-control"] == "public, max-age=30"  # public keys stay cacheable
    assert jwks.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "odd", ["%00", "a%00b", "a" * 5000, "%F0%9F%98%80" * 200, "%E2%80%8F", "%0A"], ids=repr
)
async def test_odd_path_ids_are_a_422_before_any_handler(stack: Stack, odd: str) -> None:
    token = await stack.token("gp-a81001")
    async with stack.service() as http:
        response = await http.get(f"/triage/probe/referrals/{odd}", headers=bearer(token))
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["location"] == ["path", "referral_id"]
    assert stack.probe.calls == []


def test_bounded_integers() -> None:
    assert bounded_int(str(2**70), least=0, most=INT64_MAX) is None
    assert bounded_int(str(INT64_MAX), least=0, most=INT64_MAX) == INT64_MAX
    assert bounded_int("-1", least=0, most=10) is None
    assert bounded_int("\uff17", least=0, most=10) is None  # unicode digits are not accepted
    assert bounded_int(" 7 ", least=0, most=10) == 7


def test_deep_json_is_refused_before_parsing() -> None:
    from shared.errors import Problem

    assert parse_json_body(b'{"a": [1, {"b": "[[[[["}]}') == {"a": [1, {"b": "[[[[["}]}
    for deep in (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), b"[" * 200_000):
        with pytest.raises(Problem) as refused:
            parse_json_body(deep)
        assert refused.value.status == 400
