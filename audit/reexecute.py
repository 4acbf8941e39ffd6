"""Deterministic re-execution: today's decider over a recorded history (the Temporal replayer idea).

Every event after a task's submission was emitted by one ``decide(command, state)`` call, and the
command's content (the model's answer, the tool's output, the policy's and the ledger's verdicts,
the human decision, the limits and the time) is recorded in the events it caused. Re-execution
walks the history decision by decision: it folds the events before a decision into the state,
rebuilds the command from the decision's recorded events, calls today's :func:`decide` and
compares its payloads with the recorded ones. Nothing is called: no model, no tool, no policy.

Delimiting decisions. A decision's events are consecutive (one ``stamp`` of one ``decide``) and
begin with the event that records the command's result, one type per command:

=========================================  ==========================
first event of a decision                   command rebuilt from it
=========================================  ==========================
TaskAccepted                                StartTask
LlmCallCompleted                            RecordModelResponse
LlmCallFailed                               RecordModelFailure
ToolCallAuthorized / ToolCallDenied         RecordPolicyDecision
  (without ``approval_id``), ApprovalRequested
ApprovalGranted / ApprovalRejected          DecideApproval
ToolCallCompleted / ToolCallFailed          RecordToolResult
TaskCancelled                               CancelTask
BudgetReserved, BudgetExceeded (ORG_DAY)    RecordBudgetVerdict
=========================================  ==========================

Every other event (requests, plans, subtask events, task-ending events, a task budget's
``BudgetExceeded``, the ``ToolCallAuthorized``/``ToolCallDenied`` that carry the ``approval_id``
of the approval decided just before) only ever follows one of these inside a decision.

Comparison. Payload models are compared, type and every field (``model_dump``): they are what the
decider decides. Envelopes are not: event ids derive from (task, sequence), ``occurred_at`` is the
shell's clock, ``prev_hash`` and the digest follow from the bytes, producer names are the shell's.
The order of payloads is compared through their position in the decision.

Not reconstructable exactly (the most faithful reconstruction is used and documented here):

- ``StartTask.now`` is not recorded; the TaskAccepted's ``occurred_at`` (stamped just after) is
  used. Both are at or after ``not_before`` when the start happened, so the delay check agrees.
- ``StartTask.token_budget`` is the TaskAccepted's; when the submission carried its own budget
  the platform default it overrode is not recorded (and does not matter to today's rules).
- A failure recorded as not retryable may have come from a retryable command whose attempts were
  used up. For a model call the TaskFailed that follows says which (``llm_retries_exhausted``);
  its ``retry_at`` is then unrecorded and the failure's ``occurred_at`` stands in. For a tool call
  nothing says which: the command is rebuilt as not retryable.
- ``RecordModelResponse.cost_usd`` of a cached answer is recorded as 0 (the decider zeroes it).
- Commands that caused no event (stale or duplicate results, a late answer after cancellation,
  a delayed start that was too early) are not in the history, so a change that would make them
  decide something is not seen.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from processors.task.commands import (
    CancelTask,
    Command,
    DecideApproval,
    ForkTask,
    RecordBudgetVerdict,
    RecordModelFailure,
    RecordModelResponse,
    RecordPolicyDecision,
    RecordToolResult,
    StartTask,
    ToolCall,
)
from processors.task.decider import RETRY_EXHAUSTED, decide, evolve
from processors.task.state import HistoryError, TaskState
from schemas.events import (
    ApprovalGranted,
    ApprovalRejected,
    ApprovalRequested,
    BudgetExceeded,
    BudgetReserved,
    BudgetScope,
    BudgetThresholdReached,
    Event,
    LlmCallCompleted,
    LlmCallFailed,
    Payload,
    TaskAccepted,
    TaskCancelled,
    TaskFailed,
    TaskForked,
    TaskSubmitted,
    ToolCallAuthorized,
    ToolCallCompleted,
    ToolCallDenied,
    ToolCallFailed,
)

Outcome = Literal["passed", "diverged", "unreplayable"]


class RecordedPayload(BaseModel):
    """A payload as the report shows it: its type and its fields."""

    event_type: str
    fields: dict[str, Any]


class FieldDifference(BaseModel):
    """One field whose recorded value differs from today's (``path`` is dotted, list items by index)."""

    path: str
    recorded: Any = None
    today: Any = None


class Divergence(BaseModel):
    """The first event where today's decider decides differently from the recorded one."""

    sequence: int = Field(description="Sequence of the first divergent event (its recorded position).")
    decision_sequence: int = Field(description="Sequence of the first event of the divergent decision.")
    command_type: str
    command: dict[str, Any] = Field(description="The command rebuilt from the recorded events.")
    recorded: RecordedPayload | None = Field(description="What the history has there (None: nothing).")
    today: RecordedPayload | None = Field(description="What today's decider emits there (None: nothing).")
    differences: list[FieldDifference] = Field(default_factory=list)
    summary: str


class Report(BaseModel):
    """The re-execution of one task's history."""

    task_id: str
    outcome: Outcome
    events: int = Field(description="Events in the history.")
    decisions: int = Field(description="Decisions re-executed (up to and including a divergent one).")
    divergence: Divergence | None = None
    error: str | None = Field(default=None, description="Why the history could not be re-executed.")

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"


class Summary(BaseModel):
    """The re-execution of many histories; ``interrupted`` when stopped before the last."""

    reports: list[Report] = Field(default_factory=list)
    interrupted: bool = False

    @property
    def tasks(self) -> int:
        return len(self.reports)

    @property
    def failed(self) -> list[Report]:
        return [report for report in self.reports if not report.passed]

    @property
    def passed(self) -> bool:
        return not self.failed


# -- delimiting decisions ------------------------------------------------------------------


def starts_decision(payload: Payload) -> bool:
    """Whether ``payload`` is the first event of a decision (see the module's table)."""
    match payload:
        case ToolCallAuthorized() | ToolCallDenied():
            return payload.approval_id is None  # with one: the approval decision's second event
        case BudgetExceeded():
            return payload.scope is BudgetScope.ORG_DAY  # a task budget's is part of a THINK
        case (
            TaskAccepted()
            | LlmCallCompleted()
            | LlmCallFailed()
            | ApprovalRequested()
            | ApprovalGranted()
            | ApprovalRejected()
            | ToolCallCompleted()
            | ToolCallFailed()
            | TaskCancelled()
            | BudgetReserved()
            | TaskForked()
        ):
            return True
    return False


def decision_spans(events: Sequence[Event], first: int = 1) -> list[tuple[int, int]]:
    """``[start, end)`` index ranges of the decisions from index ``first`` on (by default: all after
    the submission).

    Raises :class:`HistoryError` when an event after the submission cannot begin a decision and
    follows none (the history does not start like one this decider writes).
    """
    spans: list[tuple[int, int]] = []
    for index in range(first, len(events)):
        if starts_decision(events[index].payload):
            spans.append((index, index + 1))
        elif not spans:
            raise HistoryError(
                f"event {events[index].sequence} ({events[index].event_type}) is not the result of a command"
            )
        else:
            start, _ = spans[-1]
            spans[-1] = (start, index + 1)
    return spans


# -- rebuilding commands -------------------------------------------------------------------


def _first(payloads: Sequence[Payload], kind: type[Payload]) -> Any:
    return next((payload for payload in payloads if isinstance(payload, kind)), None)


def rebuild_command(decision: Sequence[Event], state: TaskState) -> Command:
    """The command whose decision, in ``state``, recorded the events ``decision``."""
    head = decision[0]
    first = head.payload
    payloads = [event.payload for event in decision]
    match first:
        case TaskForked():
            return ForkTask(
                source_task_id=first.source_task_id,
                prefix_events=first.prefix_events,
                source_last_event_id=first.source_last_event_id,
                forked_by=first.forked_by,
                model=first.model,
                input=first.input,
                overrides=first.overrides,
            )
        case TaskAccepted():
            return StartTask(
                provider=first.provider,
                model=first.model,
                offline=first.offline,
                max_steps=first.max_steps,
                tools=tuple(first.tools),
                now=head.envelope.occurred_at,
                max_attempts=first.max_attempts,
                max_parallel=first.max_parallel,
                token_budget=first.token_budget,
                org_budget_usd=first.org_budget_usd,
            )
        case LlmCallCompleted():
            return RecordModelResponse(
                idempotency_key=first.idempotency_key,
                model=first.model,
                provider=first.provider,
                content=first.content,
                tool_calls=tuple(ToolCall.model_validate(call) for call in json.loads(first.tool_calls_json)),
                finish_reason=first.finish_reason,
                prompt_tokens=first.prompt_tokens,
                completion_tokens=first.completion_tokens,
                cost_usd=first.cost_usd,
                latency_ms=first.latency_ms,
                cache_kind=first.cache_kind,
                attempt=first.attempt,
                response_json=first.response_json,
            )
        case LlmCallFailed():
            failed = _first(payloads, TaskFailed)
            exhausted = failed is not None and failed.reason == RETRY_EXHAUSTED
            retryable = first.retryable or exhausted
            return RecordModelFailure(
                idempotency_key=first.idempotency_key,
                error_type=first.error_type,
                error=first.error,
                latency_ms=first.latency_ms,
                attempt=first.attempt,
                retryable=retryable,
                retry_at=first.next_attempt_at or (head.envelope.occurred_at if retryable else None),
            )
        case ToolCallAuthorized():
            return RecordPolicyDecision(
                idempotency_key=first.idempotency_key, effect="allow", rule=first.rule
            )
        case ToolCallDenied():
            return RecordPolicyDecision(
                idempotency_key=first.idempotency_key, effect="deny", rule=first.rule, reason=first.reason
            )
        case ApprovalRequested():
            return RecordPolicyDecision(
                idempotency_key=first.idempotency_key,
                effect="require_approval",
                rule=first.rule,
                reason=first.reason,
            )
        case ApprovalGranted() | ApprovalRejected():
            return DecideApproval(
                approval_id=first.approval_id,
                approved=isinstance(first, ApprovalGranted),
                decided_by=first.decided_by,
                reason=first.reason,
            )
        case ToolCallCompleted():
            return RecordToolResult(
                idempotency_key=first.idempotency_key,
                output=first.output,
                latency_ms=first.latency_ms,
                truncated=first.truncated,
                quarantined=first.quarantined,
                findings=tuple(first.findings),
                # Not recorded on a completion: the attempt the call was at, which the result answered.
                attempt=_tool_attempt(state, first.idempotency_key),
            )
        case ToolCallFailed():
            return RecordToolResult(
                idempotency_key=first.idempotency_key,
                error_type=first.error_type,
                error=first.error,
                latency_ms=first.latency_ms,
                attempt=first.attempt,
                retryable=first.retryable,
                retry_at=first.next_attempt_at,
            )
        case TaskCancelled():
            return CancelTask(reason=first.reason, cancelled_by=first.cancelled_by)
        case BudgetReserved():
            threshold = _first(payloads, BudgetThresholdReached)
            return RecordBudgetVerdict(
                idempotency_key=first.idempotency_key,
                scope_id=first.scope_id,
                tokens=first.tokens,
                cost_usd=first.cost_usd,
                used_tokens=first.used_tokens,
                used_usd=first.used_usd,
                limit_usd=first.limit_usd,
                exceeded=False,
                threshold_crossed=threshold.threshold if threshold is not None else None,
            )
        case BudgetExceeded():
            failed = _first(payloads, TaskFailed)
            return RecordBudgetVerdict(
                idempotency_key=first.idempotency_key,
                scope_id=first.scope_id,
                tokens=first.requested_tokens,
                cost_usd=first.requested_usd,
                used_tokens=first.used_tokens,
                used_usd=first.used_usd,
                limit_usd=first.limit_usd,
                exceeded=True,
                # The ledger states why it refused; the TaskFailed records exactly that text.
                reason=failed.error if failed is not None else None,
            )
    raise HistoryError(f"event {head.sequence} ({head.event_type}) is not the result of a command")


def _tool_attempt(state: TaskState, key: str) -> int:
    for agent in state.agents.values():
        for call in agent.tools:
            if call.request.idempotency_key == key:
                return call.attempt
    return 1


# -- comparing -----------------------------------------------------------------------------


def shown(payload: Payload) -> RecordedPayload:
    return RecordedPayload(event_type=payload.record_name, fields=payload.model_dump(mode="json"))


def field_differences(recorded: Any, today: Any, path: str = "") -> list[FieldDifference]:
    """The leaves where two JSON values differ, dotted paths (list items by index)."""
    if isinstance(recorded, dict) and isinstance(today, dict):
        found: list[FieldDifference] = []
        for key in [*recorded, *(k for k in today if k not in recorded)]:
            found += field_differences(recorded.get(key), today.get(key), f"{path}.{key}" if path else key)
        return found
    if isinstance(recorded, list) and isinstance(today, list) and len(recorded) == len(today):
        return [
            difference
            for index, (left, right) in enumerate(zip(recorded, today, strict=True))
            for difference in field_differences(left, right, f"{path}[{index}]")
        ]
    if recorded == today and type(recorded) is type(today):
        return []
    return [FieldDifference(path=path or "(payload)", recorded=recorded, today=today)]


def _compare(decision: Sequence[Event], today: Sequence[Payload], command: Command) -> Divergence | None:
    start = decision[0].sequence
    for offset in range(max(len(decision), len(today))):
        recorded = decision[offset].payload if offset < len(decision) else None
        mine = today[offset] if offset < len(today) else None
        if recorded is not None and mine is not None and type(recorded) is type(mine):
            differences = field_differences(recorded.model_dump(mode="json"), mine.model_dump(mode="json"))
            if not differences:
                continue
            summary = f"{recorded.record_name} differs in " + ", ".join(d.path for d in differences)
        elif recorded is not None and mine is not None:
            differences = [
                FieldDifference(path="event_type", recorded=recorded.record_name, today=mine.record_name)
            ]
            summary = f"today's decider emits {mine.record_name} where {recorded.record_name} was recorded"
        elif recorded is not None:
            differences = []
            summary = f"today's decider does not emit the recorded {recorded.record_name}"
        else:
            assert mine is not None
            differences = []
            summary = f"today's decider emits {mine.record_name}, which was not recorded"
        return Divergence(
            sequence=start + offset,
            decision_sequence=start,
            command_type=type(command).__name__,
            command=command.model_dump(mode="json"),
            recorded=shown(recorded) if recorded is not None else None,
            today=shown(mine) if mine is not None else None,
            differences=differences,
            summary=summary,
        )
    return None


# -- re-executing --------------------------------------------------------------------------


def reexecute(events: Sequence[Event]) -> Report:
    """Re-execute one task's history (all of it, from its submission, in sequence order)."""
    task_id = events[0].task_id if events else ""
    report = Report(task_id=task_id, outcome="passed", events=len(events), decisions=0)
    try:
        if not events or not isinstance(events[0].payload, TaskSubmitted) or events[0].sequence != 0:
            raise HistoryError(f"task {task_id or '?'}: the history does not begin with its submission")
        state = evolve(TaskState(), events[0])
        folded = 1
        # A fork's events before its TaskForked are copies of its source's decisions, made under the
        # source's task id and keys: they are re-executed with the source, here only folded.
        forked_at = next((i for i, e in enumerate(events) if isinstance(e.payload, TaskForked)), 1)
        for start, end in decision_spans(events, first=forked_at):
            for event in events[folded:start]:
                state = evolve(state, event)
            folded = start
            decision = events[start:end]
            command = rebuild_command(decision, state)
            report.decisions += 1
            divergence = _compare(decision, decide(command, state), command)
            if divergence is not None:
                report.outcome, report.divergence = "diverged", divergence
                return report
    except (HistoryError, ValueError) as exc:
        report.outcome, report.error = "unreplayable", str(exc)
    return report


def reexecute_all(
    histories: Sequence[Sequence[Event]],
    *,
    progress: Callable[[int], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> Summary:
    """Re-execute several histories; ``progress`` gets each one's event count, ``stop`` ends early."""
    summary = Summary()
    for events in histories:
        if stop is not None and stop():
            summary.interrupted = True
            break
        summary.reports.append(reexecute(events))
        if progress is not None:
            progress(len(events))
    return summary
