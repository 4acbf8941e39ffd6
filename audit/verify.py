"""Tamper checks over the log (pure): per-task hash chains and sequences, and sealed day roots.

A task's events as found on the log, in log order (its submission on the requests topic, then the
events topic by offset), must be sequences 0, 1, 2, ... with no gap; each event's ``prev_hash``
must be the digest of the event before it (none for the submission); a copy of an event delivered
twice must be byte-identical. The digest of an event is always recomputed here from the bytes on
the log (``Event.digest`` is the SHA-256 of the Avro body as read, never a stored value), so an
edited payload changes it even when the editor left the chain fields alone.

The first broken link of a task is named by kind:

- ``edited``: the event's content no longer hashes to what its successor recorded as ``prev_hash``
  (the successor's own link to the next event, or an outside attestation, confirms the successor
  was not touched), or an outside record (a checkpoint) attests another digest for it;
- ``chain-break``: the event's ``prev_hash`` is not the previous event's digest (its chain field was
  rewritten, or an event was replaced wholesale);
- ``missing``: a sequence never appears (deleted), or the log ends before a sequence an outside
  record attests;
- ``out-of-order``: a later sequence comes before an earlier one in log order (re-ordered);
- ``duplicate``: one sequence twice with different content.

An edit that also rewrites every later event's chain (a rewrite of the whole topic) leaves a
consistent chain: that is what the sealed day roots (:func:`check_seal`) catch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, computed_field

from audit.merkle import UnknownAlgorithmError, day_root
from schemas.events import AuditSealed, Event

BreakKind = Literal["edited", "missing", "out-of-order", "duplicate", "chain-break"]


@dataclass(frozen=True)
class LoggedEvent:
    """What verification needs of one event found on the log, and where it was found."""

    task_id: str
    org_id: str
    sequence: int
    prev_hash: str | None
    digest: str
    occurred_at: datetime
    position: str = ""
    """``topic:partition:offset`` (for the report)."""

    @classmethod
    def of(cls, event: Event, position: str = "") -> LoggedEvent:
        envelope = event.envelope
        return cls(
            task_id=envelope.task_id,
            org_id=envelope.org_id,
            sequence=envelope.sequence,
            prev_hash=envelope.prev_hash,
            digest=event.digest,
            occurred_at=envelope.occurred_at,
            position=position,
        )


class Break(BaseModel):
    """The first broken link of a task."""

    task_id: str
    sequence: int
    """The sequence of the event that was tampered with (or that is missing)."""
    kind: BreakKind
    expected: str | int | None
    found: str | int | None
    position: str | None = None
    detail: str


class TaskVerdict(BaseModel):
    """One task's chain: how many events were checked and its first broken link, if any."""

    task_id: str
    org_id: str | None
    events: int
    last_sequence: int | None
    first_break: Break | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return self.first_break is None


class SealVerdict(BaseModel):
    """One sealed (org, day): the root it holds and the root the log gives today."""

    org_id: str
    day: str
    algorithm: str
    sealed_events: int
    sealed_root: str
    found_events: int
    found_root: str | None
    """None when the root cannot be recomputed (an unknown algorithm; see ``detail``)."""
    detail: str = ""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return self.found_root == self.sealed_root and self.found_events == self.sealed_events


class VerifyReport(BaseModel):
    tasks: list[TaskVerdict]
    seals: list[SealVerdict] = []
    undecodable_records: int = 0
    """Records on the task topics that did not decode (each is listed on stderr by the CLI)."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tasks) and all(s.ok for s in self.seals)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def broken_tasks(self) -> int:
        return sum(not t.ok for t in self.tasks)


def verify_task(
    task_id: str, logged: Sequence[LoggedEvent], attested: Mapping[int, str] | None = None
) -> TaskVerdict:
    """Check one task's events, given in log order; ``attested`` maps sequences to digests that an
    outside record vouches for (the processor's checkpoints), which covers the last event too."""
    attested = attested or {}
    org = logged[0].org_id if logged else None
    chain: list[LoggedEvent] = []  # the first copy of each sequence, in sequence order once checked
    first_copy: dict[int, LoggedEvent] = {}
    broken: Break | None = None
    for index, event in enumerate(logged):
        seen = first_copy.get(event.sequence)
        if seen is not None:
            if seen.digest != event.digest:
                broken = Break(
                    task_id=task_id,
                    sequence=event.sequence,
                    kind="duplicate",
                    expected=seen.digest,
                    found=event.digest,
                    position=event.position,
                    detail=f"sequence {event.sequence} is on the log twice with different content"
                    f" (first at {seen.position})",
                )
                break
            continue  # a redelivered copy: the same bytes, which every consumer dedupes
        expected = len(chain)
        if event.sequence != expected:
            later = {e.sequence for e in logged[index + 1 :]}
            if event.sequence > expected and expected not in later:
                broken = Break(
                    task_id=task_id,
                    sequence=expected,
                    kind="missing",
                    expected=expected,
                    found=event.sequence,
                    position=event.position,
                    detail=f"sequence {expected} is not on the log; {event.sequence} follows {expected - 1}",
                )
            else:
                broken = Break(
                    task_id=task_id,
                    sequence=expected,
                    kind="out-of-order",
                    expected=expected,
                    found=event.sequence,
                    position=event.position,
                    detail=f"sequence {event.sequence} comes before {expected} in log order",
                )
            break
        previous = chain[-1] if chain else None
        want = previous.digest if previous is not None else None
        if event.prev_hash != want:
            broken = _link_break(task_id, previous, event, logged[index + 1 :], attested)
            break
        first_copy[event.sequence] = event
        chain.append(event)
    if broken is None:
        broken = _attestation_break(task_id, chain, attested)
    return TaskVerdict(
        task_id=task_id,
        org_id=org,
        events=len(chain),
        last_sequence=chain[-1].sequence if chain else None,
        first_break=broken,
    )


def _link_break(
    task_id: str,
    previous: LoggedEvent | None,
    event: LoggedEvent,
    rest: Sequence[LoggedEvent],
    attested: Mapping[int, str],
) -> Break:
    """``event.prev_hash`` is not ``previous``'s digest: was ``previous`` edited, or ``event``'s link?

    Rewriting ``event``'s ``prev_hash`` changes ``event``'s own digest, so its successor's link breaks
    too; if that link holds (or an outside record vouches for ``event``), ``event`` is intact and it is
    ``previous`` whose content changed.
    """
    successor = next((e for e in rest if e.sequence == event.sequence + 1), None)
    event_intact = (successor is not None and successor.prev_hash == event.digest) or attested.get(
        event.sequence
    ) == event.digest
    if previous is not None and event_intact:
        return Break(
            task_id=task_id,
            sequence=previous.sequence,
            kind="edited",
            expected=event.prev_hash,
            found=previous.digest,
            position=previous.position,
            detail=f"the content of sequence {previous.sequence} does not hash to the digest its successor"
            " recorded",
        )
    return Break(
        task_id=task_id,
        sequence=event.sequence,
        kind="chain-break",
        expected=previous.digest if previous is not None else None,
        found=event.prev_hash,
        position=event.position,
        detail=(
            f"prev_hash of sequence {event.sequence} is not the digest of sequence {event.sequence - 1}"
            if previous is not None
            else "the first event of a task has no predecessor, but carries a prev_hash"
        )
        + (
            ""
            if successor is not None or previous is None
            else f" (or sequence {event.sequence - 1} was edited: nothing follows)"
        ),
    )


def _attestation_break(
    task_id: str, chain: Sequence[LoggedEvent], attested: Mapping[int, str]
) -> Break | None:
    """What an intact chain still owes the outside records: the digests they vouch for."""
    for sequence in sorted(attested):
        if sequence >= len(chain):
            last = chain[-1] if chain else None
            return Break(
                task_id=task_id,
                sequence=len(chain),
                kind="missing",
                expected=sequence,
                found=last.sequence if last else None,
                position=last.position if last else None,
                detail=f"the log ends at sequence {len(chain) - 1}, but a checkpoint vouches for sequence"
                f" {sequence}",
            )
        if chain[sequence].digest != attested[sequence]:
            return Break(
                task_id=task_id,
                sequence=sequence,
                kind="edited",
                expected=attested[sequence],
                found=chain[sequence].digest,
                position=chain[sequence].position,
                detail=f"the content of sequence {sequence} does not hash to the digest its checkpoint"
                " recorded",
            )
    return None


def verify_tasks(
    logged: Iterable[LoggedEvent], attested: Mapping[str, Mapping[int, str]] | None = None
) -> list[TaskVerdict]:
    """:func:`verify_task` for every task in ``logged`` (log order kept per task), by task id."""
    by_task: dict[str, list[LoggedEvent]] = {}
    for event in logged:
        by_task.setdefault(event.task_id, []).append(event)
    attested = attested or {}
    return [verify_task(task_id, by_task[task_id], attested.get(task_id)) for task_id in sorted(by_task)]


def day_of(event: LoggedEvent) -> str:
    """The UTC day (``YYYY-MM-DD``) an event belongs to in a seal: its envelope's ``occurred_at``."""
    return event.occurred_at.date().isoformat()


def day_leaves(logged: Iterable[LoggedEvent], org_id: str, day: str) -> list[tuple[str, int, str]]:
    """(task id, sequence, digest) of the org's events of ``day``, first copy of each sequence (as
    every consumer keeps)."""
    leaves: dict[tuple[str, int], str] = {}
    for event in logged:
        if event.org_id == org_id and day_of(event) == day:
            leaves.setdefault((event.task_id, event.sequence), event.digest)
    return [(task, sequence, digest) for (task, sequence), digest in leaves.items()]


def check_seal(seal: AuditSealed, leaves: Sequence[tuple[str, int, str]]) -> SealVerdict:
    """The seal against the root of ``leaves`` (the org's events of the day found on the log now)."""
    try:
        root: str | None = day_root(leaves, algorithm=seal.algorithm, leaf_order=seal.leaf_order)
        detail = "" if root == seal.root else "the events of the day on the log are not the ones sealed"
    except UnknownAlgorithmError as exc:
        root, detail = None, str(exc)
    return SealVerdict(
        org_id=seal.org_id,
        day=seal.day,
        algorithm=seal.algorithm,
        sealed_events=seal.events,
        sealed_root=seal.root,
        found_events=len(leaves),
        found_root=root,
        detail=detail,
    )
