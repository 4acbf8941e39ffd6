"""The log's account of its external effects, checked against what the providers saw (pure).

Every LLM call and tool call is recorded as a request under an idempotency key before it is made
(``LlmCallRequested``, ``ToolCallRequested``) and its outcome after (``…Completed`` / ``…Failed``).
A provider that counts the calls it received per ``Idempotency-Key`` (the scripted LLM server and
the counting HTTP server of the tests do) gives the other side of the ledger. :func:`check_effects`
compares the two under the platform's guarantee: an effect whose result is on the log was made
exactly once per recorded attempt, and only an effect in flight when a worker died may have been
made once more, under the same key.

It lives in ``audit/`` rather than beside the read models because it checks the log against the
outside world, as :mod:`audit.verify` checks it against its own hash chain; ``agentlog reconcile``
only runs it together with the projection checks.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel

from schemas.events import (
    Event,
    LlmCallCompleted,
    LlmCallRequested,
    ToolCallAuthorized,
    ToolCallCompleted,
    ToolCallFailed,
    ToolCallRequested,
)

LLM = "llm"
"""The kind of an LLM call; a tool call's kind is its tool's name."""
COUNTED_KINDS: frozenset[str] = frozenset({LLM, "http_fetch"})
"""The effects that reach a provider with their idempotency key as an ``Idempotency-Key`` header
(the LLM gateway's calls and ``http_fetch``). Other tools run inside the platform (the calculator,
the sandbox, the workspace files, the read model): no provider counts them."""

EffectDifferenceKind = Literal["effect_not_made", "effect_repeated", "effect_too_often", "effect_unrequested"]


@dataclass(frozen=True)
class RecordedEffect:
    """One idempotency key as the log records it."""

    key: str
    task_id: str
    kind: str
    """``llm``, or the tool's name."""
    attempts: int
    """Attempts the log started or scheduled; each may reach the provider once."""
    completed: bool
    """Its result is on the log."""
    callless: bool = False
    """Its result came without a provider call: an LLM prompt-cache hit, or the offline model."""

    @property
    def least_calls(self) -> int:
        return 1 if self.completed and not self.callless else 0


@dataclass
class _Seen:
    task_id: str
    kind: str
    llm_attempts: set[int] = field(default_factory=set)
    authorized: bool = False
    retried_tool_attempts: set[int] = field(default_factory=set)
    completed: bool = False
    callless: bool = False


@dataclass
class EffectLedger:
    """Folds task events, in any order and with repeats, into one :class:`RecordedEffect` per key.

    Events are matched by key, and attempts are kept as sets, so a redelivered event, or a fork's
    copy of its source's events (which keep the source's keys), counts once.
    """

    _seen: dict[str, _Seen] = field(default_factory=dict)

    def add(self, event: Event) -> None:
        payload = event.payload
        if isinstance(payload, LlmCallRequested):
            self._entry(payload.idempotency_key, LLM).llm_attempts.add(payload.attempt)
        elif isinstance(payload, LlmCallCompleted):
            entry = self._entry(payload.idempotency_key, LLM)
            entry.completed = True
            entry.callless = payload.cache_hit or payload.offline
        elif isinstance(payload, ToolCallRequested):
            self._entry(payload.idempotency_key, payload.tool)
        elif isinstance(payload, ToolCallAuthorized):
            self._entry(payload.idempotency_key, payload.tool).authorized = True
        elif isinstance(payload, ToolCallFailed):
            if payload.retryable:  # a next attempt is scheduled under the same key
                self._entry(payload.idempotency_key, payload.tool).retried_tool_attempts.add(payload.attempt)
        elif isinstance(payload, ToolCallCompleted):
            self._entry(payload.idempotency_key, payload.tool).completed = True

    def add_all(self, events: Iterable[Event]) -> EffectLedger:
        for event in events:
            self.add(event)
        return self

    def _entry(self, key: str, kind: str) -> _Seen:
        entry = self._seen.get(key)
        if entry is None:
            entry = self._seen[key] = _Seen(task_id=task_of_key(key), kind=kind)
        return entry

    def effects(self) -> dict[str, RecordedEffect]:
        return {
            key: RecordedEffect(
                key=key,
                task_id=seen.task_id,
                kind=seen.kind,
                attempts=(
                    len(seen.llm_attempts)
                    if seen.kind == LLM
                    # A tool call runs only once authorized (a denied or still waiting one never
                    # ran); each retryable failure schedules one more attempt.
                    else (1 + len(seen.retried_tool_attempts) if seen.authorized else 0)
                ),
                completed=seen.completed,
                callless=seen.callless,
            )
            for key, seen in self._seen.items()
        }


def task_of_key(key: str) -> str:
    """The task an idempotency key belongs to: keys are ``task:[agent:]step-n[:tool-id]``."""
    return key.split(":", 1)[0]


class EffectDifference(BaseModel):
    """One way the calls a provider saw under a key differ from what the log allows."""

    key: str
    task_id: str
    effect: str
    """``llm``, a tool's name, or ``unknown`` for a key the log never requested."""
    kind: EffectDifferenceKind
    """effect_not_made: completed on the log, never seen by the provider; effect_repeated: one call
    more than the recorded attempts, and the key was not in flight at a crash; effect_too_often: two
    or more calls more than the recorded attempts (more than twice for a one-attempt call), which no
    crash explains; effect_unrequested: calls under a key the log never requested."""
    allowed: str
    """The calls the log allows under the key: ``n`` or ``least..most``."""
    calls: int


def check_effects(
    recorded: Mapping[str, RecordedEffect],
    calls: Mapping[str, int],
    *,
    in_flight: Collection[str] = frozenset(),
    counted: Collection[str] = COUNTED_KINDS,
    tasks: Collection[str] | None = None,
) -> list[EffectDifference]:
    """Every key whose provider-side call count breaks the guarantee, by key.

    ``calls`` maps idempotency keys to the calls a provider received under each (several providers'
    exports merged); ``in_flight`` are the keys whose call was under way when a worker was killed
    (each may have one call more than its recorded attempts); ``counted`` the effect kinds
    ``calls`` covers (effects of other kinds are not checked); ``tasks``, when given, limits the
    check of unrequested keys to keys of those tasks (the others belong to tasks outside the scope).
    """
    differences: list[EffectDifference] = []
    for key in sorted(recorded.keys() | calls.keys()):
        made = calls.get(key, 0)
        effect = recorded.get(key)
        if effect is None:
            if made > 0 and (tasks is None or task_of_key(key) in tasks):
                differences.append(
                    EffectDifference(
                        key=key,
                        task_id=task_of_key(key),
                        effect="unknown",
                        kind="effect_unrequested",
                        allowed="0",
                        calls=made,
                    )
                )
            continue
        if effect.kind not in counted:
            continue
        least = effect.least_calls
        most = max(effect.attempts, least)
        kind: EffectDifferenceKind | None = None
        if made < least:
            kind = "effect_not_made"
        elif made >= most + 2:
            kind = "effect_too_often"
        elif made == most + 1 and key not in in_flight:
            kind = "effect_repeated"
        if kind is not None:
            differences.append(
                EffectDifference(
                    key=key,
                    task_id=effect.task_id,
                    effect=effect.kind,
                    kind=kind,
                    allowed=str(most) if least == most else f"{least}..{most}",
                    calls=made,
                )
            )
    return differences
