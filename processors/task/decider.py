"""The task decider: ``decide(command, state) -> payloads`` and ``evolve(state, event) -> state``.

Pure: no I/O, no clock, no randomness. Everything that varies (model answers, tool outputs, policy
and budget verdicts, human decisions, the time, retry schedules) comes in with the command; the
effects to perform are derived from the state by :func:`pending_effects` and performed by the
processor shell, which reports their results as commands. Replaying a task is ``fold(evolve, history)``.

Orchestration. The query's complexity picks the execution mode. SIMPLE: the main agent runs the
loop THINK (LLM call) -> ACT (tool calls, each authorized by policy, some after a human approval)
-> THINK ... -> RESPOND (an answer ends the task). STANDARD / COMPLEX: the main agent's first call
is the planner (JSON-schema answer) -> ``PlanDecided`` (a DAG of subtasks); each subtask whose
dependencies completed is DELEGATEd to a sub-agent (its own loop, at most ``max_parallel`` at
once); when all completed, the main agent merges their results into the answer. Every loop has
a step limit; failed effects are retried durably with backoff; a task can be cancelled at any
point; budgets stop a call before it is made.

``decide`` works through :class:`_Decision`, which applies each payload it emits with the same rules
``evolve`` uses, so a decision always sees its own effects and never emits an event ``evolve``
would reject.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from typing import Any

from processors.task.commands import (
    AuthorizeTool,
    CallModel,
    CancelTask,
    Command,
    DecideApproval,
    Effect,
    ForkTask,
    RecordBudgetVerdict,
    RecordModelFailure,
    RecordModelResponse,
    RecordPolicyDecision,
    RecordToolResult,
    ReserveBudget,
    RunTool,
    StartTask,
    ToolCall,
)
from processors.task.overrides import ForkChangeError, parse_overrides
from processors.task.planning import (
    AGENTS,
    PLAN_SCHEMA_JSON,
    PlanError,
    complexity,
    execution_mode,
    initial_messages,
    merge_message,
    parse_plan,
    planner_messages,
    single_subtask_plan,
    subtask_messages,
)
from processors.task.state import (
    TERMINAL,
    AgentState,
    AgentStatus,
    HistoryError,
    Purpose,
    Status,
    TaskState,
    ToolCallState,
    conversation_json,
)
from processors.tools.injection import quarantine_notice
from schemas.events import (
    MAIN_AGENT,
    AgentStepFinished,
    AgentStepStarted,
    ApprovalGranted,
    ApprovalRejected,
    ApprovalRequested,
    BudgetExceeded,
    BudgetReserved,
    BudgetScope,
    BudgetThresholdReached,
    Event,
    ExecutionMode,
    LlmCallCompleted,
    LlmCallFailed,
    LlmCallRequested,
    ModelTier,
    Payload,
    PlanDecided,
    SubtaskCompleted,
    SubtaskFailed,
    SubtaskStarted,
    TaskAccepted,
    TaskCancelled,
    TaskCompleted,
    TaskFailed,
    TaskForked,
    TaskRejected,
    TaskSubmitted,
    ToolCallAuthorized,
    ToolCallCompleted,
    ToolCallDenied,
    ToolCallFailed,
    ToolCallRequested,
)

__all__ = [
    "TERMINAL",
    "AuthorizeTool",
    "CallModel",
    "CancelTask",
    "Command",
    "DecideApproval",
    "Effect",
    "ForkTask",
    "HistoryError",
    "RecordBudgetVerdict",
    "RecordModelFailure",
    "RecordModelResponse",
    "RecordPolicyDecision",
    "RecordToolResult",
    "ReserveBudget",
    "RunTool",
    "StartTask",
    "Status",
    "TaskState",
    "ToolCall",
    "conversation_json",
    "decide",
    "evolve",
    "fold",
    "idempotency_key",
    "pending_effects",
]

# Fixed namespace for approval ids derived from the waiting call's idempotency key.
APPROVAL_NAMESPACE = uuid.UUID("0b7e6f4e-2a4c-4f0b-9d0a-6a1f3c9e2b57")
# Rough prompt size for budget checks: ~4 characters per token, plus room for the answer.
CHARS_PER_TOKEN = 4
ANSWER_TOKENS = 512
RETRY_EXHAUSTED = "llm_retries_exhausted"


def idempotency_key(
    task_id: str, step: int, tool_call_id: str | None = None, agent_id: str = MAIN_AGENT
) -> str:
    base = f"{task_id}:step-{step}" if agent_id == MAIN_AGENT else f"{task_id}:{agent_id}:step-{step}"
    return f"{base}:tool-{tool_call_id}" if tool_call_id else base


def approval_id_for(idempotency_key: str) -> str:
    return str(uuid.uuid5(APPROVAL_NAMESPACE, idempotency_key))


def estimate_tokens(agent: AgentState) -> int:
    """What the agent's next call may cost in tokens: its prompt plus an answer's allowance."""
    return len(conversation_json(agent)) // CHARS_PER_TOKEN + ANSWER_TOKENS


def _message(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


# -- effects ---------------------------------------------------------------------------------


def pending_effects(state: TaskState) -> list[Effect]:
    """Effects requested and not yet recorded: what the shell must perform (again, after a crash).

    A tool call waiting for a human decision is not an effect: the task waits for a
    :class:`DecideApproval` command (``state.waiting_for_approval``).
    """
    if state.status is not Status.RUNNING:
        return []
    effects: list[Effect] = []
    for agent in state.agents.values():
        request = agent.pending_llm
        if request is not None:
            if state.org_budget_usd is not None and request.idempotency_key not in state.reserved:
                effects.append(
                    ReserveBudget(
                        request=request,
                        estimated_tokens=estimate_tokens(agent),
                        limit_usd=state.org_budget_usd,
                    )
                )
            else:
                effects.append(
                    CallModel(
                        request=request, messages_json=conversation_json(agent), not_before=agent.retry_at
                    )
                )
        for call in agent.tools:
            if call.approval_id is not None:
                continue
            if not call.authorized:
                effects.append(AuthorizeTool(request=call.request, role=state.user_role))
            else:
                effects.append(RunTool(request=call.request, attempt=call.attempt, not_before=call.retry_at))
    return effects


# -- decide ----------------------------------------------------------------------------------


class _Decision:
    """The payloads of one decision, each applied to the state as it is emitted."""

    def __init__(self, state: TaskState) -> None:
        self.state = state
        self.payloads: list[Payload] = []

    def emit(self, *payloads: Payload) -> None:
        for payload in payloads:
            self.state = _apply_payload(self.state, payload)
            self.payloads.append(payload)

    @property
    def running(self) -> bool:
        return self.state.status is Status.RUNNING


def decide(command: Command, state: TaskState) -> list[Payload]:
    """The events that ``command`` causes in ``state``; ``[]`` for a stale or duplicate command."""
    decision = _Decision(state)
    match command:
        case StartTask():
            _start(command, decision)
        case ForkTask():
            _fork(command, decision)
        case CancelTask():
            _cancel(command, decision)
        case DecideApproval():
            _approval(command, decision)
        case _ if state.status is not Status.RUNNING:
            return []  # a late result of a task that ended (e.g. cancelled) is ignored
        case RecordModelResponse():
            _model_response(command, decision)
        case RecordModelFailure():
            _model_failure(command, decision)
        case RecordPolicyDecision():
            _policy(command, decision)
        case RecordToolResult():
            _tool_result(command, decision)
        case RecordBudgetVerdict():
            _budget(command, decision)
        case _:
            raise TypeError(f"unknown command {command!r}")
    return decision.payloads


def _totals(state: TaskState) -> dict[str, Any]:
    """Usage totals of a task-ending event."""
    return {
        "steps": state.steps,
        "llm_calls": state.llm_calls,
        "tool_calls": state.tool_calls,
        "prompt_tokens": state.prompt_tokens,
        "completion_tokens": state.completion_tokens,
        "total_tokens": state.total_tokens,
        "cost_usd": round(state.cost_usd, 9),
    }


def _fail(d: _Decision, reason: str, error: str, agent_id: str = MAIN_AGENT) -> None:
    """End the task without an answer; a sub-agent's failure is recorded as its subtask's first."""
    if agent_id != MAIN_AGENT:
        d.emit(SubtaskFailed(subtask_id=agent_id, agent_id=agent_id, error=f"{reason}: {error}"))
    d.emit(TaskFailed(reason=reason, error=error, **_totals(d.state)))


def _refuse_for_budget(d: _Decision, exceeded: BudgetExceeded, error: str, agent_id: str) -> None:
    """A call a budget does not allow is not made: the refusal is recorded and the task ends."""
    d.emit(exceeded)
    _fail(d, "budget", error, agent_id)


def _start(command: StartTask, d: _Decision) -> None:
    state = d.state
    if state.status is not Status.SUBMITTED:
        return
    if state.not_before is not None and command.now is not None and command.now < state.not_before:
        return  # a delayed task: the shell starts it again at not_before
    score = complexity(state.query)
    mode = execution_mode(score)
    # A fork of a task that was not accepted yet starts with the fork's changes (TaskForked).
    forked = parse_overrides(state.fork_overrides)
    d.emit(
        TaskAccepted(
            execution_mode=mode,
            complexity=score,
            max_steps=forked.get("max_steps", command.max_steps),
            provider=command.provider,
            model=state.model or command.model,
            tier=forked.get("tier", ModelTier.MEDIUM),
            offline=command.offline,
            tools=list(command.tools),
            max_attempts=forked.get("max_attempts", command.max_attempts),
            max_parallel=forked.get("max_parallel", command.max_parallel),
            token_budget=forked.get(
                "token_budget",
                state.token_budget if state.token_budget is not None else command.token_budget,
            ),
            org_budget_usd=command.org_budget_usd,
        )
    )
    if mode is ExecutionMode.SIMPLE:
        _request(d, MAIN_AGENT, initial_messages(state.query), tools=command.tools)
    else:
        _request(
            d, MAIN_AGENT, planner_messages(state.query, mode), tools=(), response_format=PLAN_SCHEMA_JSON
        )


def _fork(command: ForkTask, d: _Decision) -> None:
    """Record the branch point and ask again, under this task's keys, for what the prefix left pending.

    The copied requests carry the source's idempotency keys: answering them here would mix the two
    runs' effects (and their provider-side deduplication), so each is requested anew.
    """
    state = d.state
    if state.forked_from is not None or state.status not in (Status.SUBMITTED, Status.RUNNING):
        return  # a duplicate fork command, or a prefix that already ended the task
    pending = [(agent.agent_id, agent.pending_llm, agent.tools) for agent in state.agents.values()]
    reissued = [
        key
        for _, request, calls in pending
        for key in ([request.idempotency_key] if request else []) + [c.request.idempotency_key for c in calls]
    ]
    d.emit(
        TaskForked(
            source_task_id=command.source_task_id,
            prefix_events=command.prefix_events,
            source_last_event_id=command.source_last_event_id,
            forked_by=command.forked_by,
            model=command.model,
            input=command.input,
            overrides=dict(command.overrides),
            reissued=reissued,
        )
    )
    for agent_id, request, calls in pending:
        if request is not None:
            extra = (
                [{"role": "user", "content": command.input}]
                if command.input is not None and agent_id == MAIN_AGENT
                else []
            )
            _request_again(d, agent_id, request, extra)
        for call in calls:
            d.emit(
                call.request.model_copy(
                    update={
                        "idempotency_key": idempotency_key(
                            state.task_id, call.request.step, call.request.tool_call_id, agent_id
                        )
                    }
                )
            )


def _request_again(
    d: _Decision, agent_id: str, request: LlmCallRequested, extra: list[dict[str, Any]]
) -> None:
    """A pending LLM call of the prefix requested again by this task (its messages are already in the
    agent's conversation; ``extra`` are added), with the task's current model and tier."""
    state = d.state
    agent = state.agents[agent_id]
    added = tuple(_message(m) for m in extra)
    d.emit(
        LlmCallRequested(
            step=request.step,
            agent_id=agent_id,
            idempotency_key=idempotency_key(state.task_id, request.step, agent_id=agent_id),
            provider=request.provider,
            model=state.model,
            tier=state.tier,
            pinned_model=state.pinned_model,
            messages_json=f"[{','.join(added)}]",
            prompt_messages=len(agent.messages) + len(added),
            prompt_sha256=_sha256(f"[{','.join((*agent.messages, *added))}]"),
            tools=list(request.tools),
            response_format_json=request.response_format_json,
        )
    )


def _request(
    d: _Decision,
    agent_id: str,
    new_messages: Iterable[dict[str, Any]] = (),
    *,
    tools: Iterable[str],
    response_format: str | None = None,
) -> None:
    """The agent's next THINK: a recorded LLM request, unless the step limit or budget forbids it."""
    state = d.state
    agent = state.agents.get(agent_id) or AgentState(agent_id=agent_id)
    step = agent.step + 1
    if step > state.max_steps:
        _fail(
            d, "max_steps", f"agent {agent_id} used its {state.max_steps} steps without answering", agent_id
        )
        return
    added = tuple(_message(m) for m in new_messages)
    prompt = f"[{','.join((*agent.messages, *added))}]"
    estimate = len(prompt) // CHARS_PER_TOKEN + ANSWER_TOKENS
    if state.token_budget is not None and state.total_tokens + estimate > state.token_budget:
        exceeded = BudgetExceeded(
            scope=BudgetScope.TASK,
            scope_id=state.task_id,
            idempotency_key=idempotency_key(state.task_id, step, agent_id=agent_id),
            requested_tokens=estimate,
            requested_usd=0.0,
            used_tokens=state.total_tokens,
            used_usd=state.cost_usd,
            limit_tokens=state.token_budget,
            action="fail",
        )
        error = (
            f"the next call needs ~{estimate} tokens and {state.total_tokens} of the task's "
            f"{state.token_budget} are used"
        )
        _refuse_for_budget(d, exceeded, error, agent_id)
        return
    d.emit(
        LlmCallRequested(
            step=step,
            agent_id=agent_id,
            idempotency_key=idempotency_key(state.task_id, step, agent_id=agent_id),
            provider=state.provider,
            model=state.model,
            tier=state.tier,
            pinned_model=state.pinned_model,
            messages_json=f"[{','.join(added)}]",
            prompt_messages=len(agent.messages) + len(added),
            prompt_sha256=_sha256(prompt),
            tools=list(tools),
            response_format_json=response_format,
        )
    )


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _agent_with_llm(state: TaskState, key: str) -> AgentState | None:
    for agent in state.agents.values():
        if agent.pending_llm is not None and agent.pending_llm.idempotency_key == key:
            return agent
    return None


def _agent_with_tool(state: TaskState, key: str) -> tuple[AgentState, ToolCallState] | None:
    for agent in state.agents.values():
        for call in agent.tools:
            if call.request.idempotency_key == key:
                return agent, call
    return None


def _model_response(command: RecordModelResponse, d: _Decision) -> None:
    agent = _agent_with_llm(d.state, command.idempotency_key)
    if agent is None or agent.pending_llm is None or agent.pending_llm.attempt != command.attempt:
        return
    pending = agent.pending_llm
    d.emit(
        LlmCallCompleted(
            step=pending.step,
            agent_id=agent.agent_id,
            idempotency_key=pending.idempotency_key,
            provider=command.provider or pending.provider,
            model=command.model,
            tier=pending.tier,
            content=command.content,
            tool_calls_json=json.dumps([c.model_dump() for c in command.tool_calls], separators=(",", ":")),
            finish_reason=command.finish_reason,
            prompt_tokens=command.prompt_tokens,
            completion_tokens=command.completion_tokens,
            total_tokens=command.prompt_tokens + command.completion_tokens,
            cost_usd=0.0 if command.cache_kind else command.cost_usd,
            latency_ms=command.latency_ms,
            cache_hit=command.cache_kind is not None,
            cache_kind=command.cache_kind,
            attempt=command.attempt,
            offline=d.state.offline,
            response_json=command.response_json,
        )
    )
    if command.tool_calls and agent.purpose is Purpose.ANSWER:
        d.emit(
            *(
                ToolCallRequested(
                    step=pending.step,
                    agent_id=agent.agent_id,
                    idempotency_key=idempotency_key(d.state.task_id, pending.step, call.id, agent.agent_id),
                    tool_call_id=call.id,
                    tool=call.name,
                    arguments_json=call.arguments_json,
                )
                for call in command.tool_calls
            )
        )
        return
    content = command.content or ""
    if agent.agent_id != MAIN_AGENT:
        d.emit(SubtaskCompleted(subtask_id=agent.agent_id, agent_id=agent.agent_id, result=content))
        _advance_plan(d)
    elif agent.purpose is Purpose.PLAN:
        _plan(content, pending.idempotency_key, d)
    else:
        d.emit(TaskCompleted(result=content, **_totals(d.state)))


def _plan(content: str, planner_key: str, d: _Decision) -> None:
    state = d.state
    _, most = AGENTS[state.mode]
    try:
        subtasks, rationale = parse_plan(content, state.mode, state.tier)
    except PlanError as exc:
        subtasks = single_subtask_plan(state.query, state.tier)
        rationale = f"the planner's answer was not a usable plan ({exc}); the task runs as one subtask"
    d.emit(
        PlanDecided(
            execution_mode=state.mode,
            subtasks=subtasks,
            max_parallel=min(most, state.max_parallel),
            planner_idempotency_key=planner_key,
            rationale=rationale,
        )
    )
    _advance_plan(d)


def _advance_plan(d: _Decision) -> None:
    """DELEGATE every ready subtask a free slot allows; once all completed, ask main to merge."""
    state = d.state
    agents = state.agents
    done = {
        s.subtask_id for s in state.plan if (a := agents.get(s.subtask_id)) and a.status is AgentStatus.DONE
    }
    if len(done) == len(state.plan):
        results = [(s, agents[s.subtask_id].result or "") for s in state.plan]
        _request(d, MAIN_AGENT, [merge_message(state.query, results)], tools=())
        return
    running = sum(
        1 for s in state.plan if (a := agents.get(s.subtask_id)) and a.status is AgentStatus.RUNNING
    )
    ready = [s for s in state.plan if s.subtask_id not in agents and set(s.depends_on) <= done]
    for subtask in ready[: max(state.max_parallel - running, 0)]:
        if not d.running:
            return
        inputs = [
            (s, agents[s.subtask_id].result or "") for s in state.plan if s.subtask_id in subtask.depends_on
        ]
        d.emit(SubtaskStarted(subtask_id=subtask.subtask_id, agent_id=subtask.subtask_id))
        _request(d, subtask.subtask_id, subtask_messages(subtask, inputs), tools=state.tools)


def _model_failure(command: RecordModelFailure, d: _Decision) -> None:
    agent = _agent_with_llm(d.state, command.idempotency_key)
    if agent is None or agent.pending_llm is None or agent.pending_llm.attempt != command.attempt:
        return
    pending = agent.pending_llm
    retry = command.retryable and command.retry_at is not None and pending.attempt < d.state.max_attempts
    d.emit(
        LlmCallFailed(
            step=pending.step,
            agent_id=agent.agent_id,
            idempotency_key=pending.idempotency_key,
            provider=pending.provider,
            model=pending.model,
            tier=pending.tier,
            error_type=command.error_type,
            error=command.error,
            latency_ms=command.latency_ms,
            attempt=pending.attempt,
            retryable=retry,
            next_attempt_at=command.retry_at if retry else None,
        )
    )
    if retry:
        # The same effect again (same key), after the backoff: no message is added.
        d.emit(pending.model_copy(update={"messages_json": "[]", "attempt": pending.attempt + 1}))
        return
    reason = RETRY_EXHAUSTED if command.retryable else "llm_error"
    _fail(d, reason, f"{command.error_type}: {command.error} (attempt {pending.attempt})", agent.agent_id)


def _call_fields(request: ToolCallRequested) -> dict[str, Any]:
    """The fields every event about a tool call repeats from its request: which call of which step."""
    return {
        "step": request.step,
        "agent_id": request.agent_id,
        "idempotency_key": request.idempotency_key,
        "tool_call_id": request.tool_call_id,
        "tool": request.tool,
    }


def _policy(command: RecordPolicyDecision, d: _Decision) -> None:
    found = _agent_with_tool(d.state, command.idempotency_key)
    if found is None:
        return
    agent, call = found
    if call.authorized or call.approval_id is not None:
        return
    request = call.request
    common = _call_fields(request)
    if command.effect == "allow":
        d.emit(ToolCallAuthorized(**common, rule=command.rule))
    elif command.effect == "deny":
        d.emit(ToolCallDenied(**common, rule=command.rule, reason=command.reason or "denied by policy"))
        _after_tool(d, agent.agent_id)
    else:
        d.emit(
            ApprovalRequested(
                approval_id=approval_id_for(request.idempotency_key),
                **common,
                arguments_json=request.arguments_json,
                rule=command.rule,
                reason=command.reason or "the policy asks for a human decision",
            )
        )


def _approval(command: DecideApproval, d: _Decision) -> None:
    if d.state.status is not Status.RUNNING:
        return
    for agent in d.state.agents.values():
        for call in agent.tools:
            if call.approval_id == command.approval_id:
                request = call.request
                common = _call_fields(request) | {"approval_id": command.approval_id}
                if command.approved:
                    d.emit(
                        ApprovalGranted(
                            approval_id=command.approval_id,
                            decided_by=command.decided_by,
                            reason=command.reason,
                        ),
                        ToolCallAuthorized(**common, rule="approval-granted"),
                    )
                else:
                    d.emit(
                        ApprovalRejected(
                            approval_id=command.approval_id,
                            decided_by=command.decided_by,
                            reason=command.reason,
                        ),
                        ToolCallDenied(
                            **common,
                            rule="approval-rejected",
                            reason=f"rejected by {command.decided_by}: {command.reason}",
                        ),
                    )
                    _after_tool(d, agent.agent_id)
                return


def _tool_result(command: RecordToolResult, d: _Decision) -> None:
    found = _agent_with_tool(d.state, command.idempotency_key)
    if found is None:
        return
    agent, call = found
    if not call.authorized or call.attempt != command.attempt:
        return  # never authorized, or a late result of an earlier attempt
    request = call.request
    common = _call_fields(request) | {"latency_ms": command.latency_ms}
    if command.error_type is None:
        d.emit(
            ToolCallCompleted(
                **common,
                output=command.output,
                truncated=command.truncated,
                quarantined=command.quarantined,
                findings=list(command.findings),
            )
        )
    else:
        retry = command.retryable and command.retry_at is not None and call.attempt < d.state.max_attempts
        d.emit(
            ToolCallFailed(
                **common,
                error_type=command.error_type,
                error=command.error or "",
                attempt=call.attempt,
                retryable=retry,
                next_attempt_at=command.retry_at if retry else None,
            )
        )
        if retry:
            return
    _after_tool(d, agent.agent_id)


def _after_tool(d: _Decision, agent_id: str) -> None:
    """Once the last tool call of the agent's step finished, its results go to the model (THINK)."""
    agent = d.state.agents[agent_id]
    if d.running and not agent.tools:
        _request(d, agent_id, tools=d.state.tools)


def _cancel(command: CancelTask, d: _Decision) -> None:
    state = d.state
    if state.status not in (Status.SUBMITTED, Status.RUNNING):
        return
    abandoned = [
        key
        for agent in state.agents.values()
        for key in ([agent.pending_llm.idempotency_key] if agent.pending_llm else [])
        + [call.request.idempotency_key for call in agent.tools]
    ]
    d.emit(
        TaskCancelled(
            reason=command.reason, cancelled_by=command.cancelled_by, abandoned=abandoned, **_totals(state)
        )
    )


def _budget(command: RecordBudgetVerdict, d: _Decision) -> None:
    state = d.state
    agent = _agent_with_llm(state, command.idempotency_key)
    if agent is None or command.idempotency_key in state.reserved:
        return
    scope: dict[str, Any] = {
        "scope": BudgetScope.ORG_DAY,
        "scope_id": command.scope_id,
        "used_tokens": command.used_tokens,
        "used_usd": command.used_usd,
        "limit_usd": command.limit_usd,
    }
    if command.exceeded:
        exceeded = BudgetExceeded(
            **scope,
            idempotency_key=command.idempotency_key,
            requested_tokens=command.tokens,
            requested_usd=command.cost_usd,
            action="fail",
        )
        error = command.reason or (
            f"the org's daily budget of {command.limit_usd} USD is spent ({command.used_usd:.6f} used, "
            f"the call needs ~{command.cost_usd:.6f})"
        )
        _refuse_for_budget(d, exceeded, error, agent.agent_id)
        return
    d.emit(
        BudgetReserved(
            **scope, idempotency_key=command.idempotency_key, tokens=command.tokens, cost_usd=command.cost_usd
        )
    )
    if command.threshold_crossed is not None:
        d.emit(BudgetThresholdReached(**scope, threshold=command.threshold_crossed))


# -- evolve ----------------------------------------------------------------------------------

# Facts this version of the decider records for the audit trail without changing the loop state:
# the step markers, approval decisions (the ToolCallAuthorized / ToolCallDenied that follow one
# changes the call), and budget alerts and refusals (the TaskFailed that follows one ends the task).
RECORDED_ONLY: frozenset[type[Payload]] = frozenset(
    {
        AgentStepStarted,
        AgentStepFinished,
        ApprovalGranted,
        ApprovalRejected,
        BudgetThresholdReached,
        BudgetExceeded,
    }
)


def evolve(state: TaskState, event: Event) -> TaskState:
    """The state after ``event``. Already-applied events (at-least-once delivery) leave it unchanged.

    Raises :class:`HistoryError` for an event of another task, a gap in the sequence, a
    ``prev_hash`` that does not match the previous event's digest, or an event that refers to
    an effect the task never requested.
    """
    envelope = event.envelope
    if state.task_id and envelope.task_id != state.task_id:
        raise HistoryError(
            f"event {envelope.event_id} belongs to task {envelope.task_id}, not {state.task_id}"
        )
    if envelope.sequence <= state.sequence:
        return state
    if envelope.sequence != state.sequence + 1:
        raise HistoryError(
            f"task {envelope.task_id}: expected sequence {state.sequence + 1}, got {envelope.sequence}"
        )
    if envelope.prev_hash != state.last_digest:
        raise HistoryError(
            f"task {envelope.task_id}: event {envelope.sequence} has prev_hash {envelope.prev_hash!r}, "
            f"expected {state.last_digest!r}"
        )
    if isinstance(event.payload, TaskSubmitted):
        state = state.model_copy(
            update={
                "task_id": envelope.task_id,
                "org_id": envelope.org_id,
                "user_id": envelope.user_id,
                "correlation_id": envelope.correlation_id,
            }
        )
    state = _apply_payload(state, event.payload)
    return state.model_copy(
        update={
            "sequence": envelope.sequence,
            "last_event_id": str(envelope.event_id),
            "last_digest": event.digest,
        }
    )


def _with_agent(state: TaskState, agent: AgentState) -> TaskState:
    return state.model_copy(update={"agents": {**state.agents, agent.agent_id: agent}})


def _agent(state: TaskState, agent_id: str, payload: Payload) -> AgentState:
    agent = state.agents.get(agent_id)
    if agent is None:
        raise HistoryError(
            f"{payload.record_name} for agent {agent_id!r}, which task {state.task_id} does not have"
        )
    return agent


def _tool_call(
    state: TaskState,
    payload: ToolCallAuthorized | ToolCallDenied | ToolCallCompleted | ToolCallFailed | ApprovalRequested,
) -> tuple[AgentState, ToolCallState]:
    agent = _agent(state, payload.agent_id, payload)
    for call in agent.tools:
        if call.request.idempotency_key == payload.idempotency_key:
            return agent, call
    raise HistoryError(f"{payload.record_name} for tool call {payload.idempotency_key}, which is not pending")


def _replace_call(
    agent: AgentState, key: str, call: ToolCallState | None, message: str | None = None
) -> AgentState:
    """The agent with the call ``key`` replaced (or, with None, finished and its message added)."""
    tools = tuple(
        replacement
        for existing in agent.tools
        for replacement in (
            [existing] if existing.request.idempotency_key != key else ([call] if call else [])
        )
    )
    messages = (*agent.messages, message) if message is not None else agent.messages
    return agent.model_copy(update={"tools": tools, "messages": messages})


def _tool_message(tool_call_id: str, content: str) -> str:
    return _message({"role": "tool", "tool_call_id": tool_call_id, "content": content})


def _main_purpose(state: TaskState) -> Purpose:
    if state.mode is ExecutionMode.SIMPLE:
        return Purpose.ANSWER
    return Purpose.MERGE if state.plan else Purpose.PLAN


def _apply_payload(state: TaskState, payload: Payload) -> TaskState:
    match payload:
        case TaskSubmitted():
            return state.model_copy(
                update={
                    "status": Status.SUBMITTED,
                    "query": payload.query,
                    "priority": payload.priority,
                    "not_before": payload.not_before,
                    "token_budget": payload.token_budget,
                    "user_role": payload.user_role,
                }
            )
        case TaskAccepted():
            return state.model_copy(
                update={
                    "status": Status.RUNNING,
                    "mode": payload.execution_mode,
                    "complexity": payload.complexity,
                    "max_steps": payload.max_steps,
                    "provider": payload.provider,
                    "model": payload.model,
                    "tier": payload.tier,
                    "offline": payload.offline,
                    "tools": tuple(payload.tools),
                    "max_attempts": payload.max_attempts,
                    "max_parallel": payload.max_parallel,
                    "token_budget": payload.token_budget,
                    "org_budget_usd": payload.org_budget_usd,
                }
            )
        case PlanDecided():
            return state.model_copy(
                update={"plan": tuple(payload.subtasks), "max_parallel": payload.max_parallel}
            )
        case SubtaskStarted():
            roles = {s.subtask_id: s.agent for s in state.plan}
            if payload.subtask_id not in roles:
                raise HistoryError(f"SubtaskStarted for {payload.subtask_id!r}, which is not in the plan")
            return _with_agent(state, AgentState(agent_id=payload.agent_id, role=roles[payload.subtask_id]))
        case SubtaskCompleted():
            agent = _agent(state, payload.agent_id, payload)
            return _with_agent(
                state, agent.model_copy(update={"status": AgentStatus.DONE, "result": payload.result})
            )
        case SubtaskFailed():
            agent = _agent(state, payload.agent_id, payload)
            return _with_agent(state, agent.model_copy(update={"status": AgentStatus.FAILED}))
        case LlmCallRequested():
            agent = state.agents.get(payload.agent_id) or AgentState(agent_id=payload.agent_id)
            added = tuple(_message(m) for m in json.loads(payload.messages_json))
            purpose = _main_purpose(state) if payload.agent_id == MAIN_AGENT else Purpose.ANSWER
            agent = agent.model_copy(
                update={
                    "pending_llm": payload,
                    "step": payload.step,
                    "messages": (*agent.messages, *added),
                    "purpose": purpose,
                }
            )
            return _with_agent(state, agent)
        case LlmCallCompleted():
            agent = _agent(state, payload.agent_id, payload)
            assistant: dict[str, Any] = {"role": "assistant", "content": payload.content}
            calls = json.loads(payload.tool_calls_json)
            if calls:
                assistant["tool_calls"] = [
                    {
                        "id": c["id"],
                        "type": "function",
                        "function": {"name": c["name"], "arguments": c["arguments_json"]},
                    }
                    for c in calls
                ]
            agent = agent.model_copy(
                update={
                    "pending_llm": None,
                    "retry_at": None,
                    "messages": (*agent.messages, _message(assistant)),
                }
            )
            return _with_agent(state, agent).model_copy(
                update={
                    "llm_calls": state.llm_calls + 1,
                    "prompt_tokens": state.prompt_tokens + payload.prompt_tokens,
                    "completion_tokens": state.completion_tokens + payload.completion_tokens,
                    "cost_usd": state.cost_usd + payload.cost_usd,
                }
            )
        case LlmCallFailed():
            agent = _agent(state, payload.agent_id, payload)
            if payload.retryable:
                agent = agent.model_copy(update={"retry_at": payload.next_attempt_at})
            else:
                agent = agent.model_copy(update={"pending_llm": None, "retry_at": None})
            return _with_agent(state, agent).model_copy(update={"llm_calls": state.llm_calls + 1})
        case ToolCallRequested():
            agent = _agent(state, payload.agent_id, payload)
            return _with_agent(
                state, agent.model_copy(update={"tools": (*agent.tools, ToolCallState(request=payload))})
            )
        case ApprovalRequested():
            agent, call = _tool_call(state, payload)
            call = call.model_copy(update={"approval_id": payload.approval_id})
            return _with_agent(state, _replace_call(agent, payload.idempotency_key, call))
        case ToolCallAuthorized():
            agent, call = _tool_call(state, payload)
            call = call.model_copy(update={"authorized": True, "approval_id": None})
            return _with_agent(state, _replace_call(agent, payload.idempotency_key, call))
        case ToolCallDenied():
            agent, _ = _tool_call(state, payload)
            message = _tool_message(payload.tool_call_id, f"denied: {payload.reason}")
            return _with_agent(state, _replace_call(agent, payload.idempotency_key, None, message))
        case ToolCallCompleted():
            agent, _ = _tool_call(state, payload)
            content = quarantine_notice(payload.findings) if payload.quarantined else payload.output
            agent = _replace_call(
                agent, payload.idempotency_key, None, _tool_message(payload.tool_call_id, content)
            )
            return _with_agent(state, agent).model_copy(update={"tool_calls": state.tool_calls + 1})
        case ToolCallFailed():
            agent, call = _tool_call(state, payload)
            if payload.retryable:
                call = call.model_copy(
                    update={"attempt": call.attempt + 1, "retry_at": payload.next_attempt_at}
                )
                agent = _replace_call(agent, payload.idempotency_key, call)
            else:
                message = _tool_message(payload.tool_call_id, f"error: {payload.error}")
                agent = _replace_call(agent, payload.idempotency_key, None, message)
            return _with_agent(state, agent).model_copy(update={"tool_calls": state.tool_calls + 1})
        case BudgetReserved():
            return state.model_copy(update={"reserved": (*state.reserved, payload.idempotency_key)})
        case TaskForked():
            return _forked(state, payload)
        case TaskCompleted():
            return state.model_copy(update={"status": Status.COMPLETED, "result": payload.result})
        case TaskFailed() | TaskRejected():
            status = Status.FAILED if isinstance(payload, TaskFailed) else Status.REJECTED
            return state.model_copy(
                update={"status": status, "error": payload.error, "failure_reason": payload.reason}
            )
        case TaskCancelled():
            return state.model_copy(
                update={
                    "status": Status.CANCELLED,
                    "error": f"cancelled by {payload.cancelled_by}: {payload.reason}",
                }
            )
    if type(payload) in RECORDED_ONLY:
        return state
    raise HistoryError(f"no evolve rule for {type(payload).__name__}")


def _forked(state: TaskState, payload: TaskForked) -> TaskState:
    """The branch point: the changes apply, and the effects the prefix left pending are dropped (the
    fork requests them again under its own keys, in the same decision)."""
    try:
        updates: dict[str, Any] = parse_overrides(payload.overrides)
    except ForkChangeError as exc:
        raise HistoryError(f"TaskForked of task {state.task_id}: {exc}") from exc
    if state.status is Status.SUBMITTED:
        updates = {}  # TaskAccepted takes them (fork_overrides); it would overwrite them here
    if payload.model:
        # Pinned: the gateway must route the fork's calls to this model, not by tier.
        updates |= {"model": payload.model, "pinned_model": payload.model}
    if payload.input is not None and not state.main.messages:
        updates["query"] = payload.input  # forked before the first call: the task runs on the new input
    agents = {
        agent_id: agent.model_copy(update={"pending_llm": None, "retry_at": None, "tools": ()})
        for agent_id, agent in state.agents.items()
    }
    return state.model_copy(
        update={
            **updates,
            "agents": agents,
            "forked_from": payload.source_task_id,
            "forked_at": payload.prefix_events,
            "fork_overrides": dict(payload.overrides),
        }
    )


def fold(events: Iterable[Event], state: TaskState | None = None) -> TaskState:
    """Replay: the state after applying ``events`` in order to ``state`` (the initial state by default)."""
    current = state or TaskState()
    for event in events:
        current = evolve(current, event)
    return current
