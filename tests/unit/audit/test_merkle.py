"""Merkle roots (RFC 6962 hashing) over event digests."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit.merkle import (
    UnknownAlgorithmError,
    day_root,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    ordered_digests,
    verify_inclusion,
)

digests = st.lists(st.binary(min_size=32, max_size=32).map(bytes.hex), min_size=1, max_size=40)


def test_known_roots() -> None:
    d = hashlib.sha256(b"a").hexdigest()
    assert merkle_root([]) == hashlib.sha256(b"").hexdigest()
    assert merkle_root([d]) == hashlib.sha256(b"\x00" + bytes.fromhex(d)).hexdigest()
    two = hashlib.sha256(b"\x01" + leaf_hash(d) + leaf_hash(d)).hexdigest()
    assert merkle_root([d, d]) == two
    # Three leaves split 2 + 1: the odd leaf is promoted, never duplicated.
    three = hashlib.sha256(b"\x01" + bytes.fromhex(two) + leaf_hash(d)).hexdigest()
    assert merkle_root([d, d, d]) == three
    assert merkle_root([d, d, d]) != merkle_root([d, d, d, d])


@given(digests)
def test_any_change_changes_the_root(leaves: list[str]) -> None:
    root = merkle_root(leaves)
    assert merkle_root(leaves[:-1]) != root
    changed = [*leaves[:-1], hashlib.sha256(leaves[-1].encode()).hexdigest()]
    assert merkle_root(changed) != root
    if len(set(leaves)) > 1:
        assert merkle_root(list(reversed(leaves))) != root or leaves == list(reversed(leaves))


@given(digests, st.data())
def test_inclusion_proofs_verify(leaves: list[str], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(leaves) - 1))
    root = merkle_root(leaves)
    proof = inclusion_proof(leaves, index)
    assert verify_inclusion(leaves[index], index, len(leaves), proof, root)
    other = hashlib.sha256(b"x" + leaves[index].encode()).hexdigest()
    assert not verify_inclusion(other, index, len(leaves), proof, root)


def test_leaf_order_is_task_then_sequence() -> None:
    events = [("b", 0, "22" * 32), ("a", 1, "11" * 32), ("a", 0, "00" * 32)]
    assert ordered_digests(events) == ["00" * 32, "11" * 32, "22" * 32]
    assert day_root(events) == merkle_root(["00" * 32, "11" * 32, "22" * 32])
    with pytest.raises(UnknownAlgorithmError):
        day_root(events, algorithm="blake3")
