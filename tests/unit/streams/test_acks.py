"""InOrderAcks: what faust is told is done is always a prefix of what it delivered."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from streams.acks import InOrderAcks


@dataclass(frozen=True)
class Message:
    partition: int
    offset: int


@dataclass(eq=False)
class Record:
    message: Message


def _records(partition: int, offsets: range) -> list[Record]:
    return [Record(Message(partition, offset)) for offset in offsets]


def test_a_later_record_waits_for_an_earlier_one_still_running() -> None:
    acks: InOrderAcks[Record] = InOrderAcks()
    first, second, third = _records(4, range(3, 6))
    for record in (first, second, third):
        acks.delivered(record)
    assert acks.done(second) == [] and acks.done(third) == []
    assert acks.done(first) == [first, second, third]
    assert acks.outstanding(4) == 0


def test_partitions_are_independent() -> None:
    acks: InOrderAcks[Record] = InOrderAcks()
    [a] = _records(0, range(1))
    [b] = _records(1, range(1))
    acks.delivered(a)
    acks.delivered(b)
    assert acks.done(b) == [b]
    assert acks.outstanding(0) == 1


def test_a_record_from_before_a_revocation_releases_nothing() -> None:
    acks: InOrderAcks[Record] = InOrderAcks()
    stale, later = _records(2, range(7, 9))
    acks.delivered(stale)
    acks.delivered(later)
    acks.forget([2])
    again = Record(Message(2, 7))
    acks.delivered(again)
    assert acks.done(stale) == []
    assert acks.done(later) == []
    assert acks.done(again) == [again]


def test_a_record_done_twice_is_released_once() -> None:
    acks: InOrderAcks[Record] = InOrderAcks()
    [record] = _records(0, range(1))
    acks.delivered(record)
    assert acks.done(record) == [record]
    assert acks.done(record) == []


@given(st.permutations(range(12)), st.integers(0, 11))
def test_released_offsets_are_always_a_prefix_of_the_delivered_ones(order: list[int], held: int) -> None:
    acks: InOrderAcks[Record] = InOrderAcks()
    records = _records(0, range(100, 112))
    for record in records:
        acks.delivered(record)
    released: list[Record] = []
    for index in order:
        if index != held:  # one record never finishes (its run was stopped)
            released += acks.done(records[index])
    assert released == records[:held]
