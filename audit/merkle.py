"""Merkle roots over event digests (pure): what an ``AuditSealed`` record commits a day's events to.

The tree is RFC 6962's (Certificate Transparency): a leaf is ``SHA-256(0x00 || digest)``, an inner
node ``SHA-256(0x01 || left || right)``, and a list of n > 1 leaves splits at the largest power of
two below n, so no leaf is ever duplicated (the second-preimage trick of trees that pad odd levels
by copying the last node does not apply) and a leaf can never pass for a node.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

ALGORITHM = "rfc6962-sha256"
LEAF_ORDER = "task_id,sequence"
"""The leaves of a seal are the events' digests ordered by task id, then sequence (ascending)."""

_LEAF, _NODE = b"\x00", b"\x01"


class UnknownAlgorithmError(ValueError):
    """A seal names a Merkle algorithm or leaf order this version cannot recompute."""


def leaf_hash(digest_hex: str) -> bytes:
    """The leaf of one event: its digest (hex SHA-256 of its Avro body) hashed with the leaf prefix."""
    return hashlib.sha256(_LEAF + bytes.fromhex(digest_hex)).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE + left + right).digest()


def _root(leaves: Sequence[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    split = 1 << ((len(leaves) - 1).bit_length() - 1)  # the largest power of two below len(leaves)
    return _node(_root(leaves[:split]), _root(leaves[split:]))


def merkle_root(digests: Iterable[str]) -> str:
    """Hex root over ``digests`` in the order given (the SHA-256 of nothing for none)."""
    leaves = [leaf_hash(d) for d in digests]
    if not leaves:
        return hashlib.sha256(b"").hexdigest()
    return _root(leaves).hex()


def ordered_digests(events: Iterable[tuple[str, int, str]]) -> list[str]:
    """The digests of (task id, sequence, digest) triples in :data:`LEAF_ORDER`."""
    return [digest for _, _, digest in sorted(events)]


def day_root(
    events: Iterable[tuple[str, int, str]], *, algorithm: str = ALGORITHM, leaf_order: str = LEAF_ORDER
) -> str:
    """The root a seal of these (task id, sequence, digest) events holds; raises for a scheme this
    version does not know (a seal written by a newer version is reported, not silently passed)."""
    if algorithm != ALGORITHM or leaf_order != LEAF_ORDER:
        raise UnknownAlgorithmError(
            f"cannot recompute a {algorithm!r} root over leaves in {leaf_order!r} order"
        )
    return merkle_root(ordered_digests(events))


def inclusion_proof(digests: Sequence[str], index: int) -> list[str]:
    """The audit path (hex sibling hashes, leaf to root) proving ``digests[index]`` is in the root:
    what an auditor hands out to show one event was sealed without disclosing the others."""
    if not 0 <= index < len(digests):
        raise IndexError(f"leaf {index} of {len(digests)}")
    leaves = [leaf_hash(d) for d in digests]

    def path(nodes: Sequence[bytes], at: int) -> list[bytes]:
        if len(nodes) == 1:
            return []
        split = 1 << ((len(nodes) - 1).bit_length() - 1)
        if at < split:
            return [*path(nodes[:split], at), _root(nodes[split:])]
        return [*path(nodes[split:], at - split), _root(nodes[:split])]

    return [node.hex() for node in path(leaves, index)]


def verify_inclusion(digest_hex: str, index: int, size: int, proof: Sequence[str], root_hex: str) -> bool:
    """Whether ``proof`` shows leaf ``index`` of a tree of ``size`` leaves, ``digest_hex``, under ``root_hex``
    (RFC 9162 section 2.1.3.2)."""
    if not 0 <= index < size:
        return False
    node, last = leaf_hash(digest_hex), size - 1
    at = index
    for sibling_hex in proof:
        sibling = bytes.fromhex(sibling_hex)
        if last == 0:
            return False
        if at % 2 == 1 or at == last:
            node = _node(sibling, node)
            if at % 2 == 0:
                while at % 2 == 0 and at != 0:
                    at >>= 1
                    last >>= 1
        else:
            node = _node(node, sibling)
        at >>= 1
        last >>= 1
    return last == 0 and node.hex() == root_hex
