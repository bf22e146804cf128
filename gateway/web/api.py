"""Every page action is an API call made through the gateway as the signed-in person: a token
for them (their organisation, the client kind and scopes of their roles, `person:<id>` as the
client id) and their id and role as the end user, sent through the gateway's own front door
in process. So organisation binding, scopes, audit and rate limits apply to a person exactly as
to a partner system, and a page can show no more than the API would give them."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import Request

from gateway.state import gateway_state
from gateway.web.people import SignedInPerson
from gateway.web.roles import Role
from shared.auth import END_USER_ID_HEADER, END_USER_ROLE_HEADER
from shared.http import UNKNOWN_ADDRESS, client_address, public_base
from shared.tracing import REQUEST_ID_HEADER, TRACEPARENT_HEADER, current_traceparent

# A token is reused while it has this long left (tokens live CMH_TOKEN_LIFETIME_SECONDS).
TOKEN_REUSE_MARGIN_SECONDS = 60
CALL_TIMEOUT_SECONDS = 30.0
STREAM_TIMEOUT_SECONDS = 60.0  # a file passed on as it comes (an export)


@dataclass(frozen=True)
class ApiAnswer:
    status: int
    body: Any
    headers: httpx.Headers

    @property
    def ok(self) -> bool:
        return self.status < 400

    @property
    def problem(self) -> dict[str, Any]:
        return self.body if isinstance(self.body, dict) else {"title": "Error", "status": self.status}


class PersonApi:
    def __init__(self, request: Request, person: SignedInPerson, role: Role | None = None) -> None:
        self.request = request
        self.person = person
        self.role = role or person.roles[0]

    async def _token(self) -> str:
        state = gateway_state(self.request)
        cache: dict[str, tuple[str, float]] = state._state.setdefault("person_tokens", {})
        held = cache.get(self.person.id)
        if held is not None and held[1] - time.time() > TOKEN_REUSE_MARGIN_SECONDS:
            return held[0]
        token = await state.token_service.sign(
            self.person.client_id,
            organisation=self.person.organisation,
            kind=self.person.kind.value,
            scopes=sorted(self.person.scopes),
        )
        cache[self.person.id] = (token, time.time() + state.settings.token_lifetime_seconds)
        return token

    async def request_headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """What every call as the person carries (their token, end user, request id, trace), with
        `extra`: also for a page that must call the API another way (an event stream it relays)."""
        sent = {
            "Authorization": f"Bearer {await self._token()}",
            END_USER_ID_HEADER: self.person.client_id,
            END_USER_ROLE_HEADER: self.role.value,
            "Accept": "application/json",
            **(extra or {}),
        }
        request_id = self.request.scope.get("state", {}).get("request_id")
        if request_id:
            sent[REQUEST_ID_HEADER] = request_id  # the page's request and its API calls log as one
        traceparent = current_traceparent()
        if traceparent:
            sent[TRACEPARENT_HEADER] = traceparent
        return sent

    def _client(self, timeout: float) -> httpx.AsyncClient:
        """Through the gateway's own front door, in process."""
        base = public_base(gateway_state(self.request).settings, self.request.scope)
        # The person's address as the gateway believes it (shared/http.py: X-Forwarded-For only
        # from a trusted proxy) as the peer, so per-address limits (public reads) are theirs, not
        # one bucket shared by everyone using the pages.
        address = client_address(self.request.scope, gateway_state(self.request).settings)
        peer = address if address != UNKNOWN_ADDRESS else "127.0.0.1"
        transport = httpx.ASGITransport(app=self.request.app, client=(peer, 0))
        return httpx.AsyncClient(transport=transport, base_url=base, timeout=timeout)

    async def stream(
        self, method: str, path: str, *, headers: dict[str, str] | None = None
    ) -> tuple[httpx.Response, Callable[[], Awaitable[None]]]:
        """An answer to pass on as it comes (a file): the response, and how to close it."""
        client = self._client(STREAM_TIMEOUT_SECONDS)
        sent = await self.request_headers(headers)
        try:
            answer = await client.send(client.build_request(method, path, headers=sent), stream=True)
        except BaseException:
            await client.aclose()
            raise

        async def close() -> None:
            await answer.aclose()
            await client.aclose()

        return answer, close

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | list[tuple[str, Any]] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> ApiAnswer:
        sent = await self.request_headers(headers)
        async with self._client(CALL_TIMEOUT_SECONDS) as client:
            answer = await client.request(method, path, params=params, json=json, headers=sent)
        try:
            body: Any = answer.json() if answer.content else None
        except ValueError:
            body = answer.text
        return ApiAnswer(answer.status_code, body, answer.headers)

    async def get(self, path: str, **kwargs: Any) -> ApiAnswer:
        return await self.call("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> ApiAnswer:
        return await self.call("POST", path, **kwargs)
