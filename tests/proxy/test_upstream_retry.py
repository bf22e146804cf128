"""The gateway sends a request once more when the service closed the connection before any byte of
an answer (a keep-alive connection closed as the request went out), and only when sending it
twice cannot do the work twice (issue 21 §6): an idempotent method, or an Idempotency-Key."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import pytest

from gateway.proxy import may_send_again
from shared.nats_server import free_port
from shared.settings import Settings
from tests.proxy.test_gateway_proxy import Running, running, start_gateway, token_for

__all__ = ["running"]  # the fixture, used by name


@pytest.fixture
def backend() -> str:
    return "sqlite"


class DroppingUpstream:
    """A service on a raw socket that closes the connection, unanswered, for the first `drops`
    requests it reads, then answers each with 200: what a request on a connection closed by the
    service's idle timeout sees."""

    def __init__(self) -> None:
        self.drops = 0
        self.seen: list[str] = []
        self.port = free_port()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                length = next(
                    (
                        int(line.split(":", 1)[1])
                        for line in lines
                        if line.lower().startswith("content-length:")
                    ),
                    0,
                )
                if length:
                    await reader.readexactly(length)
                self.seen.append(lines[0].split(" ")[0])
                if self.drops:
                    self.drops -= 1
                    return  # closes the connection: no status line, no byte
                body = json.dumps({"answered": len(self.seen)}).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    async def __aenter__(self) -> DroppingUpstream:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *_: object) -> None:
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def dropping() -> AsyncIterator[DroppingUpstream]:
    async with DroppingUpstream() as upstream:
        yield upstream


async def test_a_dropped_request_is_sent_once_more_only_when_that_is_safe(
    running: Running, make_settings: Callable[..., Settings], dropping: DroppingUpstream
) -> None:
    client, settings, _ = await start_gateway(
        running, make_settings, {}, triage_url=f"http://127.0.0.1:{dropping.port}"
    )
    async with client:
        auth = await token_for(client, settings)

        dropping.drops, dropping.seen = 1, []
        read = await client.get("/triage/referrals/x", headers=auth)
        assert read.status_code == 200 and dropping.seen == ["GET", "GET"]

        dropping.drops, dropping.seen = 1, []
        keyed = await client.post(
            "/triage/referrals", json={"a": 1}, headers={**auth, "Idempotency-Key": "retry-1"}
        )
        assert keyed.status_code == 200 and dropping.seen == ["POST", "POST"]

        # Without a key, a POST might have been done: never sent twice, the caller told (502).
        dropping.drops, dropping.seen = 1, []
        unkeyed = await client.post("/triage/referrals", json={"a": 1}, headers=auth)
        assert unkeyed.status_code == 502 and dropping.seen == ["POST"]
        assert unkeyed.json()["type"].endswith("/upstream-unavailable")

        # Once more, not again and again.
        dropping.drops, dropping.seen = 2, []
        twice = await client.get("/triage/referrals/x", headers=auth)
        assert twice.status_code == 502 and dropping.seen == ["GET", "GET"]


@pytest.mark.parametrize(
    ("method", "headers", "content", "again"),
    [
        ("GET", {}, None, True),
        ("PUT", {}, b"{}", True),
        ("DELETE", {}, None, True),
        ("POST", {}, b"{}", False),
        ("PATCH", {}, b"{}", False),
        ("POST", {"Idempotency-Key": "k"}, b"{}", True),
        ("PUT", {}, object(), False),  # a streamed body cannot be read twice
    ],
)
def test_which_requests_may_be_sent_again(
    method: str, headers: dict[str, str], content: object, again: bool
) -> None:
    assert may_send_again(method, headers, content) is again
