"""Acknowledgements released to faust in offset order, per partition.

The processor acknowledges a record when its task has moved on, so acknowledgements come out of
order: a long task's submission is still running while later records are done. faust commits the
first run of consecutive acknowledged offsets it holds, and only checks for a hole *before* that
run when it knows a committed offset and the hole is more than one record wide (faust-streaming
0.11, ``Consumer._new_offset``). So after a rebalance (which forgets the committed offset), or
with exactly one record outstanding at the head, it commits past a record that was never
acknowledged; if that record's run is then stopped by a revocation or a crash, it is never
delivered again and its task is lost (tests/faults/test_scale_out.py caught one).

:class:`InOrderAcks` holds each record until every record delivered before it on its partition is
done as well, so the offsets faust sees acknowledged are always a prefix of what it delivered.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Generic, Protocol, TypeVar


class _Message(Protocol):
    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...


class _Record(Protocol):
    @property
    def message(self) -> _Message: ...


R = TypeVar("R", bound=_Record)


class InOrderAcks(Generic[R]):
    """Records delivered per partition, in order; :meth:`done` returns those now safe to ack."""

    def __init__(self) -> None:
        self._delivered: dict[int, deque[R]] = {}
        self._done: dict[int, set[int]] = {}

    def delivered(self, record: R) -> None:
        """Note a record as faust hands it over (in offset order within its partition)."""
        partition = record.message.partition
        self._delivered.setdefault(partition, deque()).append(record)
        self._done.setdefault(partition, set())

    def done(self, record: R) -> list[R]:
        """Mark ``record`` done; the records (it and later ones) whose predecessors are all done.

        A record not delivered in the current assignment (one read before its partition was
        revoked) releases nothing: it is delivered again to the partition's owner.
        """
        partition = record.message.partition
        queue = self._delivered.get(partition)
        if not queue or not any(pending is record for pending in queue):
            return []
        done = self._done[partition]
        done.add(record.message.offset)
        released: list[R] = []
        while queue and queue[0].message.offset in done:
            head = queue.popleft()
            done.discard(head.message.offset)
            released.append(head)
        return released

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop what was delivered on revoked partitions: their records go to the new owner."""
        for partition in partitions:
            self._delivered.pop(partition, None)
            self._done.pop(partition, None)

    def outstanding(self, partition: int) -> int:
        """Records delivered on ``partition`` and not yet released."""
        return len(self._delivered.get(partition, ()))
