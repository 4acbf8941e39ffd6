-- Read models of LLM calls, tool calls, approvals, agents, daily usage per org and sessions.
-- *_sequence columns record which event set a field that later events may also set, so a row
-- comes out the same whatever order its events are applied in.

ALTER TABLE task_executions
    ADD COLUMN cost_usd double precision NOT NULL DEFAULT 0,
    ADD COLUMN token_budget bigint;

-- One row per attempt of an LLM call.
CREATE TABLE llm_calls (
    task_id           text NOT NULL,
    idempotency_key   text NOT NULL,
    attempt           integer NOT NULL,
    org_id            text NOT NULL,
    agent_id          text NOT NULL,
    step              integer NOT NULL,
    provider          text NOT NULL,
    model             text NOT NULL,
    tier              text NOT NULL,
    status            text NOT NULL,
    prompt_tokens     bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    total_tokens      bigint NOT NULL DEFAULT 0,
    cost_usd          double precision NOT NULL DEFAULT 0,
    latency_ms        double precision,
    cache_hit         boolean NOT NULL DEFAULT false,
    cache_kind        text,
    finish_reason     text,
    error_type        text,
    error             text,
    requested_at      timestamptz,
    ended_at          timestamptz,
    PRIMARY KEY (task_id, idempotency_key, attempt)
);
CREATE INDEX llm_calls_org_requested ON llm_calls (org_id, requested_at DESC);
CREATE INDEX llm_calls_org_status ON llm_calls (org_id, status);

-- One row per tool call (its retries update the same row).
CREATE TABLE tool_calls (
    task_id           text NOT NULL,
    idempotency_key   text NOT NULL,
    org_id            text NOT NULL,
    agent_id          text NOT NULL,
    step              integer NOT NULL,
    tool_call_id      text NOT NULL,
    tool              text NOT NULL,
    arguments_json    text,
    rule              text,
    decision          text,
    denial_reason     text,
    approval_id       text,
    status            text NOT NULL,
    status_sequence   bigint NOT NULL,
    output            text,
    truncated         boolean NOT NULL DEFAULT false,
    quarantined       boolean NOT NULL DEFAULT false,
    findings          text[] NOT NULL DEFAULT '{}',
    error_type        text,
    error             text,
    error_attempt     integer NOT NULL DEFAULT 0,
    attempts          integer NOT NULL DEFAULT 0,
    latency_ms        double precision,
    requested_at      timestamptz,
    ended_at          timestamptz,
    PRIMARY KEY (task_id, idempotency_key)
);
CREATE INDEX tool_calls_org_requested ON tool_calls (org_id, requested_at DESC);
CREATE INDEX tool_calls_org_status ON tool_calls (org_id, status);
CREATE INDEX tool_calls_org_tool ON tool_calls (org_id, tool);

CREATE TABLE approvals (
    approval_id       text PRIMARY KEY,
    task_id           text NOT NULL,
    org_id            text NOT NULL,
    agent_id          text,
    idempotency_key   text,
    tool_call_id      text,
    tool              text,
    arguments_json    text,
    rule              text,
    reason            text,
    status            text NOT NULL,
    decided_by        text,
    decision_reason   text,
    requested_at      timestamptz,
    decided_at        timestamptz
);
CREATE INDEX approvals_task ON approvals (task_id);
CREATE INDEX approvals_org_status ON approvals (org_id, status, requested_at DESC);

CREATE TABLE agent_executions (
    task_id           text NOT NULL,
    agent_id          text NOT NULL,
    org_id            text NOT NULL,
    subtask_id        text,
    provider          text,
    model             text,
    model_sequence    bigint NOT NULL,
    status            text NOT NULL,
    status_sequence   bigint NOT NULL,
    error             text,
    llm_calls         integer NOT NULL DEFAULT 0,
    tool_calls        integer NOT NULL DEFAULT 0,
    prompt_tokens     bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    total_tokens      bigint NOT NULL DEFAULT 0,
    cost_usd          double precision NOT NULL DEFAULT 0,
    started_at        timestamptz,
    ended_at          timestamptz,
    PRIMARY KEY (task_id, agent_id)
);
CREATE INDEX agent_executions_org_started ON agent_executions (org_id, started_at DESC);

-- Additive counters: written only from events applied for the first time, so they stay exact.
CREATE TABLE usage_daily (
    org_id            text NOT NULL,
    day               date NOT NULL,
    prompt_tokens     bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    total_tokens      bigint NOT NULL DEFAULT 0,
    cost_usd          double precision NOT NULL DEFAULT 0,
    calls             bigint NOT NULL DEFAULT 0,
    cache_hits        bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, day)
);

CREATE TABLE sessions (
    session_id        text PRIMARY KEY,
    org_id            text NOT NULL,
    token_budget      bigint,
    tokens_used       bigint NOT NULL DEFAULT 0,
    cost_usd          double precision NOT NULL DEFAULT 0,
    task_count        integer NOT NULL DEFAULT 0,
    first_task_at     timestamptz,
    last_task_at      timestamptz
);
CREATE INDEX sessions_org_last ON sessions (org_id, last_task_at DESC);
