"""Read-model tables whose rows are each a pure fold of some of a task's events.

A :class:`RowTable` says which row an event belongs to (``key_of``), how a row starts
(``new_row``) and how an event changes it (``apply``). ``apply`` must give the same row in any
order of the events, each applied once: the writer applies only events it has not seen before, and
a task's submission arrives on another topic than the rest of its events.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from processors.task.history import is_copy
from schemas.events import Event

R = TypeVar("R", bound=BaseModel)
Key = tuple[Any, ...]


@dataclass(frozen=True)
class RowTable(Generic[R]):
    name: str
    # (column, Postgres type) of the primary key, in key order.
    key_columns: tuple[tuple[str, str], ...]
    row_type: type[R]
    key_of: Callable[[Event], Key | None]
    new_row: Callable[[Event], R]
    apply: Callable[[R, Event], R]

    def key_of_row(self, row: R) -> Key:
        return tuple(getattr(row, column) for column, _ in self.key_columns)


def fold_rows(table: RowTable[R], existing: Mapping[Key, R], events: Iterable[Event]) -> list[R]:
    """The rows ``events`` touch, after applying them to ``existing`` (rows keyed by ``key_of_row``)."""
    by_key: dict[Key, list[Event]] = defaultdict(list)
    for event in events:
        key = _key(table, event)
        if key is not None:
            by_key[key].append(event)
    rows: list[R] = []
    for key, keyed in by_key.items():
        row = existing.get(key) or table.new_row(keyed[0])
        for event in sorted(keyed, key=lambda e: e.sequence):
            row = table.apply(row, event)
        rows.append(row)
    return rows


def event_keys(table: RowTable[Any], events: Iterable[Event]) -> list[Key]:
    """The distinct row keys ``events`` touch, sorted (a fixed lock order across writers)."""
    return sorted({key for event in events if (key := _key(table, event)) is not None})


def _key(table: RowTable[Any], event: Event) -> Key | None:
    # A fork's copy of its source's event is not a row of the fork: the call or approval it records
    # happened in the source (and an approval's id, derived from the source's key, is the source's).
    return None if is_copy(event) else table.key_of(event)
