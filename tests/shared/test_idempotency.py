"""Idempotency-Key parsing and request fingerprints (pure); the API behaviour is proved through
the registry's create in tests/registry/test_idempotency.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import Problem
from shared.idempotency import fingerprint, parse_key

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)


@given(json_objects)
def test_json_bodies_compare_by_value_not_layout(body: dict[str, Any]) -> None:
    compact = json.dumps(body, separators=(",", ":")).encode()
    spaced = json.dumps(dict(reversed(list(body.items()))), indent=2).encode()
    assert fingerprint("POST", "/registry/teams", compact) == fingerprint("post", "/registry/teams", spaced)


@given(json_objects, json_objects)
def test_different_bodies_differ(first: dict[str, Any], second: dict[str, Any]) -> None:
    same = json.loads(json.dumps(first)) == json.loads(json.dumps(second))
    one = fingerprint("POST", "/p", json.dumps(first).encode())
    other = fingerprint("POST", "/p", json.dumps(second).encode())
    assert (one == other) is same


def test_method_path_and_raw_bodies_count() -> None:
    body = b'{"a": 1}'
    assert fingerprint("POST", "/registry/teams", body) != fingerprint("POST", "/registry/places", body)
    assert fingerprint("POST", "/x", body) != fingerprint("PUT", "/x", body)
    assert fingerprint("POST", "/x", b"not json") != fingerprint("POST", "/x", b"not  json")
    # Length-prefixed parts: moving a boundary cannot collide.
    assert fingerprint("POST", "/ab", b"c") != fingerprint("POST", "/a", b"bc")


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("1b4e28ba-2fa1-11d2-883f-0016d3cca427", "1b4e28ba-2fa1-11d2-883f-0016d3cca427"),
        ('"8e03978e-40d5-43e8-bc93-6894a57f9324"', "8e03978e-40d5-43e8-bc93-6894a57f9324"),
        ("  spaced  ", "spaced"),
        (None, None),
    ],
)
def test_keys_accepted(raw: str | None, key: str | None) -> None:
    assert parse_key(raw) == key


@pytest.mark.parametrize("raw", ["", '""', "has space", "x" * 256, "naïve", "tab\there"])
def test_bad_keys_are_400(raw: str) -> None:
    with pytest.raises(Problem) as refused:
        parse_key(raw)
    assert refused.value.status == 400
