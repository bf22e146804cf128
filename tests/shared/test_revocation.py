"""The revocation list every process holds (shared/revocation.py): pure rules, property-tested."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.revocation import RevocationList, decode_snapshot, encode_snapshot

clients = st.sampled_from(["gp-ehr", "crisis-app", "vcfse-partner"])
seconds = st.floats(min_value=0, max_value=10_000, allow_nan=False)
snapshots = st.dictionaries(clients, seconds, max_size=3)


@given(st.lists(snapshots, min_size=1, max_size=5), clients, seconds)
def test_a_token_is_refused_exactly_when_issued_at_or_before_a_revocation_still_kept(
    sequence: list[dict[str, float]], client: str, issued_at: float
) -> None:
    now, keep = 10_000.0, 600.0
    revocations = RevocationList(keep_seconds=keep)
    for snapshot in sequence:
        revocations.replace(snapshot, now=now)
    # The latest revocation any snapshot named, unless too old to refuse a live token.
    latest = max((s[client] for s in sequence if client in s), default=None)
    expected = latest is not None and latest >= now - keep and issued_at <= latest
    assert revocations.revoked(client, issued_at) == expected


def test_a_later_snapshot_lacking_an_entry_does_not_forget_it() -> None:
    revocations = RevocationList(keep_seconds=600)
    revocations.replace({"gp-ehr": 1000.0}, now=1000.0)
    revocations.replace({}, now=1001.0)  # a replica that has not read it yet
    assert revocations.revoked("gp-ehr", 999.0)
    assert not revocations.revoked("gp-ehr", 1000.5)
    revocations.replace({}, now=1700.0)  # every token it could refuse has expired
    assert revocations.snapshot() == {}


def test_snapshots_round_trip_and_malformed_ones_are_refused() -> None:
    assert decode_snapshot(encode_snapshot({"gp-ehr": 12.5})) == {"gp-ehr": 12.5}
    for raw in (b"[]", b'{"revoked": 3}', b"{}", b"not json"):
        with pytest.raises((ValueError, KeyError)):
            decode_snapshot(raw)
